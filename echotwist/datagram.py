# -*- test-case-name: tests.test_datagram -*-
"""
The datagram echo (RFC 862 over UDP): each datagram is answered by one
holding the same bytes, unless answering would feed a loop or a flood.

Refused, as BSD inetd refuses them:
  - datagrams from privileged source ports (below 1024, as OpenBSD's inetd
    does; it covers echo 7, discard 9, daytime 13, chargen 19 and time 37):
    a spoofed datagram "from" another host's chargen or echo port would
    otherwise start a packet storm between the two services, and services on
    privileged ports are exactly the reflectors an attacker would aim us at;
  - datagrams from broadcast, multicast or unspecified addresses, which no
    real client has;
  - datagrams past a source's rate (a token bucket per source: an IPv4
    address, or an IPv6 network of --ipv6-prefix bits, since one host can
    own a whole /64 and send from any address in it).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echotwist._address import DEFAULT_IPV6_PREFIX, escape, groupOf
from echotwist.limits import SourceRateLimiter, ThrottledLog

__all__ = [
    "DATAGRAM_REFUSALS",
    "DatagramEcho",
    "DatagramPolicy",
    "MAX_DATAGRAM",
    "burstFor",
]

log = Logger()

#: Read buffer for each datagram: larger than any UDP payload (65507 bytes
#: over IPv4, 65527 over IPv6), so nothing is ever truncated.  Twisted's
#: default of 8192 would cut larger datagrams silently.
MAX_DATAGRAM = 65536

#: Source ports below this are refused (see the module docstring).
FIRST_UNPRIVILEGED_PORT = 1024

#: Why a datagram can go unanswered, as logged and counted.
DATAGRAM_REFUSALS = (
    "privileged source port",
    "broadcast source",
    "multicast source",
    "unspecified source",
    "bad source address",
    "over the rate limit",
)


def burstFor(rate: float) -> float:
    """
    The bucket size for a rate: a tenth of a second's worth, at least one
    datagram, so a flood gets about C{rate} answers a second and a client
    that sends a few probes at once is not refused.
    """
    return max(1.0, rate / 10)


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _unanswerableSource(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> str | None:
    """
    Why a datagram from C{address} (IPv4 mapped in IPv6 already unmapped)
    must not be answered, or None.
    """
    if address.is_multicast:
        return "multicast source"
    if address.is_unspecified:
        return "unspecified source"
    if address == _BROADCAST:
        return "broadcast source"
    return None


class DatagramPolicy:
    """
    What every UDP port of a server shares: the per-source rate limit, the
    throttled refusal log, and the counts.

    @ivar counts: how many datagrams were answered, and refused by reason.
    @ivar bytes: bytes received in datagrams, and sent in answers.
    """

    def __init__(
        self,
        rate: float,
        clock: IReactorTime,
        maxSources: int = 16384,
        ipv6Prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        """
        @param rate: datagrams a second each source may get answered; 0 for
            no limit.  A source is an IPv4 address, or an IPv6 network of
            C{ipv6Prefix} bits (see L{echotwist._address.sourceGroup}).
        @param maxSources: how many sources the rate limiter remembers at
            most.
        """
        self.rate = rate
        self.ipv6Prefix = ipv6Prefix
        self.limiter = (
            SourceRateLimiter(rate, burstFor(rate), clock, maxSources) if rate else None
        )
        self.refusals = ThrottledLog(log, clock)
        self.counts: dict[str, int] = {}
        self.bytes = {"received": 0, "sent": 0}

    def count(self, what: str) -> None:
        """
        Count one more datagram as C{what}: answered, send failed, or a
        refusal's reason.
        """
        self.counts[what] = self.counts.get(what, 0) + 1

    def refusal(self, host: str, port: int) -> tuple[str | None, str]:
        """
        Whether a datagram from C{(host, port)} may be answered (then it
        used up one of its source's tokens).

        @return: why not, or None; and the source it was counted as, for
            logs (the address and port, or for the rate limit the source:
            an IPv4 address or an IPv6 network).
        """
        if port < FIRST_UNPRIVILEGED_PORT:
            return "privileged source port", _formatSource(host, port)
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = (
                ipaddress.ip_address(host.split("%", 1)[0])
            )
        except ValueError:
            return "bad source address", escape(_formatSource(host, port))
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        why = _unanswerableSource(address)
        if why is not None:
            return why, _formatSource(host, port)
        if self.limiter is not None:
            source = groupOf(address, self.ipv6Prefix)
            if not self.limiter.allow(source):
                return "over the rate limit", source
        return None, ""


class DatagramEcho(DatagramProtocol):
    """
    Answer each datagram on one UDP port with the same bytes.
    """

    noisy = False

    def __init__(self, policy: DatagramPolicy) -> None:
        self.policy = policy

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """
        Answer C{datagram} with the same bytes, unless the policy refuses
        its source (then count and log the refusal, throttled).
        """
        host, port = addr[0], addr[1]
        policy = self.policy
        policy.bytes["received"] += len(datagram)
        why, source = policy.refusal(host, port)
        if why is not None:
            policy.count(why)
            policy.refusals.warn(
                why,
                "Refused UDP datagram from {peer}: {reason}",
                event="datagram.refused",
                peer=source,
                reason=why,
            )
            return
        try:
            self.transport.write(datagram, addr)  # type: ignore[union-attr]
        except (OSError, MessageLengthError) as e:
            # EAGAIN (send buffer full), EMSGSIZE, ENOBUFS, an unreachable
            # network...: that one answer is lost, the listener carries on.
            policy.count("send failed")
            policy.refusals.warn(
                "send failed",
                "Could not answer UDP datagram from {peer}: {error}",
                event="datagram.send_failed",
                peer=_formatSource(host, port),
                error=str(e),
            )
            return
        policy.bytes["sent"] += len(datagram)
        policy.count("answered")


def _formatSource(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
