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

And, since a port list cannot know where other echo servers listen, a
datagram that is an echo of our own answer: the same bytes, from the very
address and port we sent them to, back within L{LOOP_WINDOW} seconds, for
the L{LOOP_TOLERANCE}+1st time in a row (see L{EchoLoopGuard}).
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from errno import EAGAIN, ECONNREFUSED, EINTR, EWOULDBLOCK
from typing import Any

from twisted.internet import udp
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echotwist._address import DEFAULT_IPV6_PREFIX, escape, groupOf, parseHost
from echotwist.limits import SourceRateLimiter, ThrottledLog

__all__ = [
    "DATAGRAMS_PER_READ",
    "DATAGRAM_REFUSALS",
    "DatagramEcho",
    "DatagramPort",
    "DatagramPolicy",
    "EchoLoopGuard",
    "LOOP_TOLERANCE",
    "LOOP_WINDOW",
    "MAX_DATAGRAM",
    "burstFor",
]

log = Logger()

#: Read buffer for each datagram: larger than any UDP payload (65507 bytes
#: over IPv4, 65527 over IPv6), so nothing is ever truncated.  Twisted's
#: default of 8192 would cut larger datagrams silently.
MAX_DATAGRAM = 65536

#: Datagrams one UDP port reads per pass of the reactor loop.  Twisted
#: reads up to 256 KiB a pass, which is 4096 small datagrams: 30-40 ms
#: during which no TCP connection is served.  32 keeps a pass under a
#: millisecond, and costs a flood little: the next pass reads on.
DATAGRAMS_PER_READ = 32

# What ends a pass of reads quietly: nothing more to read, a signal, or
# the ICMP error of an earlier answer (an unconnected port has no one to
# tell).  As Twisted's UDP port has it.
_READ_DONE = frozenset({EAGAIN, EWOULDBLOCK, EINTR, ECONNREFUSED})

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
    "echo loop",
)

#: How soon after our answer to a peer the same bytes from that peer count
#: as an echo of it: above a 100 ms round trip with a margin for the
#: other server's own delay, below the 200 ms between two datagrams of a
#: client that repeats itself five times a second.
LOOP_WINDOW = 0.15

#: How many echoes of our answers in a row one peer still gets answered:
#: a client that re-sends because an answer was lost, or sends a few
#: identical probes at once, is served; the next echo ends the loop.
LOOP_TOLERANCE = 2


class EchoLoopGuard:
    """
    Recognise another echo server answering us: a datagram holding the
    bytes we answered to the same address and port less than C{window}
    seconds ago.  The first C{tolerance} such echoes in a row are
    answered; the next is a loop.

    What is remembered is a digest (Python's keyed, per-process hash) of
    each answer with its peer and time, in one table kept in the order of
    sending: entries older than C{window} are dropped as new ones come,
    and at most C{maxEntries} are kept, the oldest going first, so a flood
    of spoofed sources costs bounded memory.  Every answer in flight is
    remembered, not only the last one per peer, so several datagrams
    looping at once are each caught.

    @ivar window: seconds after an answer during which its bytes coming
        back from its peer are an echo of it.
    @ivar tolerance: echoes in a row from one peer still answered.
    """

    def __init__(
        self,
        clock: IReactorTime,
        window: float = LOOP_WINDOW,
        tolerance: int = LOOP_TOLERANCE,
        maxEntries: int = 16384,
    ) -> None:
        self.window = window
        self.tolerance = tolerance
        self.maxEntries = maxEntries
        self._clock = clock
        # (host, port, digest) -> (when answered, echoes in a row before),
        # oldest answer first.
        self._answers: OrderedDict[tuple[str, int, int], tuple[float, int]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._answers)

    def isLoop(self, host: str, port: int, datagram: bytes) -> bool:
        """
        Whether answering C{datagram} from C{(host, port)} would keep an
        echo loop going; if not, it is remembered as answered now.
        """
        now = self._clock.seconds()
        answers = self._answers
        horizon = now - self.window
        # Forget answers past the window: each is looked at once, so this
        # is amortised constant time.
        while answers:
            oldest = next(iter(answers.values()))
            if oldest[0] >= horizon:
                break
            answers.popitem(last=False)
        key = (host, port, hash(datagram))
        entry = answers.get(key)
        if entry is None:
            echoes = 0
        else:
            echoes = entry[1] + 1
            if echoes > self.tolerance:
                # Unanswered, so the loop ends here; while the window
                # lasts, more of the same from that peer are echoes still.
                answers[key] = (entry[0], echoes)
                return True
            del answers[key]
        if len(answers) >= self.maxEntries:
            answers.popitem(last=False)
        answers[key] = (now, echoes)
        return False

    def unsent(self, host: str, port: int, datagram: bytes) -> None:
        """
        Forget the answer L{isLoop} remembered: it could not be sent, so it
        cannot come back.
        """
        self._answers.pop((host, port, hash(datagram)), None)


def burstFor(rate: float) -> float:
    """
    The bucket size for a rate: a tenth of a second's worth, at least one
    datagram, so a flood gets about C{rate} answers a second and a client
    that sends a few probes at once is not refused.
    """
    return max(1.0, rate / 10)


#: Log lines that say more than the reason.
_REFUSED = {
    "echo loop": "Refused UDP datagram from {peer}: echo loop (the bytes we"
    f" answered it, back within {LOOP_WINDOW * 1000:.0f} ms,"
    f" {LOOP_TOLERANCE + 1} times in a row: another echo server answering?)",
}

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
            most, and how many addresses the policy remembers the checks
            of.
        """
        self.rate = rate
        self.ipv6Prefix = ipv6Prefix
        self.maxSources = maxSources
        # host -> what _judgeAddress said: parsing an address costs more
        # than everything else a refused datagram costs together.
        self._addresses: dict[str, tuple[str | None, str]] = {}
        self.limiter = (
            SourceRateLimiter(rate, burstFor(rate), clock, maxSources) if rate else None
        )
        self.loops = EchoLoopGuard(clock)
        self.refusals = ThrottledLog(log, clock)
        self.counts: dict[str, int] = {}
        self.bytes = {"received": 0, "sent": 0}

    def count(self, what: str) -> None:
        """
        Count one more datagram as C{what}: answered, send failed, or a
        refusal's reason.
        """
        self.counts[what] = self.counts.get(what, 0) + 1

    def refusal(self, host: str, port: int, datagram: bytes) -> tuple[str | None, str]:
        """
        Whether C{datagram} from C{(host, port)} may be answered (then it
        used up one of its source's tokens, and the loop guard remembers
        it as answered).

        @return: why not, or None; and the source it was counted as, for
            logs (the address and port, or for the rate limit the source:
            an IPv4 address or an IPv6 network).
        """
        if port < FIRST_UNPRIVILEGED_PORT:
            return "privileged source port", _formatSource(host, port)
        judged = self._addresses.get(host)
        if judged is None:
            judged = self._judgeAddress(host)
            # Bounded: a flood from spoofed addresses starts it afresh.
            if len(self._addresses) >= self.maxSources:
                self._addresses.clear()
            self._addresses[host] = judged
        why, source = judged
        if why is not None:
            return why, escape(_formatSource(host, port))
        if self.limiter is not None and not self.limiter.allow(source):
            return "over the rate limit", source
        if self.loops.isLoop(host, port, datagram):
            return "echo loop", escape(_formatSource(host, port))
        return None, ""

    def _judgeAddress(self, host: str) -> tuple[str | None, str]:
        """
        Why no datagram from C{host} may be answered, or None; and the
        source its datagrams count as for the rate limit.
        """
        try:
            address = parseHost(host)
        except ValueError:
            return "bad source address", ""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        why = _unanswerableSource(address)
        if why is not None:
            return why, ""
        return None, groupOf(address, self.ipv6Prefix)


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
        why, source = policy.refusal(host, port, datagram)
        if why is not None:
            self.refused(why, source)
            return
        self.answer(datagram, addr, host, port)

    def refused(self, why: str, source: str) -> None:
        """
        Count a datagram refused for C{why}, and log it (throttled).

        @param source: who sent it, escaped, as L{DatagramPolicy.refusal}
            names it.
        """
        self.policy.count(why)
        self.policy.refusals.warn(
            why,
            _REFUSED.get(why, "Refused UDP datagram from {peer}: {reason}"),
            event="datagram.refused",
            peer=source,
            reason=why,
        )

    def answer(self, datagram: bytes, addr: Any, host: str, port: int) -> None:
        """
        Send C{datagram} back to C{addr}, which the policy allowed, and
        count it; a send that fails is counted and logged, and forgotten
        by the loop guard.
        """
        policy = self.policy
        try:
            self.transport.write(datagram, addr)  # type: ignore[union-attr]
        except (OSError, MessageLengthError) as e:
            # EAGAIN (send buffer full), EMSGSIZE, ENOBUFS, an unreachable
            # network...: that one answer is lost, the listener carries on.
            policy.loops.unsent(host, port, datagram)
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


class DatagramPort(udp.Port):
    """
    Twisted's UDP port, reading at most C{maxDatagramsPerRead} datagrams a
    pass of the reactor loop, and keeping an IPv6 peer's scope.

    Twisted's port reads until C{maxThroughput} bytes (256 KiB) a pass: a
    flood of small datagrams holds the reactor for thousands of them, and
    empty ones never reach the bound at all.  This one counts datagrams.

    Twisted also drops the scope of an IPv6 peer's address (C{fe80::1}
    from C{eth0} and from C{eth1} look alike), so an answer to a
    link-local peer left by whichever interface the routing table named
    first, and limits could not tell links apart.  This one gives the
    protocol a scoped address whole, C{(host, port, flowinfo, scope)},
    with the host as Twisted's TCP transports write it (C{fe80::1%eth0});
    an answer written to that address leaves by its interface.

    Both hold on any reactor.  On echotwist's, the fast path's port
    (L{echotwist._fast.udp.EchoPassPort}) serves instead: this one, whose
    pass also answers the datagram echo itself.

    @ivar maxDatagramsPerRead: datagrams read per pass at most.
    """

    maxDatagramsPerRead = DATAGRAMS_PER_READ

    def doRead(self) -> None:
        """
        Read and hand on up to C{maxDatagramsPerRead} datagrams; the rest
        wait for the next pass of the reactor loop.
        """
        self._protocolPass()

    def _protocolPass(self) -> None:
        """
        A pass of reads: each datagram handed to the protocol's
        C{datagramReceived}.
        """
        recvfrom = self.socket.recvfrom
        size = self.maxPacketSize
        protocol = self.protocol
        scoped = self.addressFamily == socket.AF_INET6
        for _ in range(self.maxDatagramsPerRead):
            try:
                data, addr = recvfrom(size)
            except OSError as e:
                if e.errno in _READ_DONE:
                    return
                raise
            if scoped:
                addr = _withScope(addr)
            try:
                protocol.datagramReceived(data, addr)
            except Exception:
                log.failure("Unhandled error in {protocol!r}", protocol=protocol)


def _withScope(
    addr: tuple[str, int, int, int],
) -> tuple[str, int] | tuple[str, int, int, int]:
    """
    An IPv6 socket address as Twisted gives it, C{(host, port)}; if it has
    a scope, the host carries it (C{fe80::1%eth0}) and the whole socket
    address is kept, since Python's C{sendto} takes the scope from its
    fourth item, not from the host.
    """
    host, port, flow, scope = addr
    if not scope:
        return host, port
    host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
    return host, port, flow, scope


def _formatSource(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
