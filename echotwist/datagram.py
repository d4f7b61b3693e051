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
    "LOOP_KEY_BYTES",
    "LOOP_TOLERANCE",
    "LOOP_WINDOW",
    "MAX_DATAGRAM",
    "burstFor",
    "endOfReads",
    "formatSource",
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


def endOfReads(error: OSError) -> None:
    """
    Return if C{error} (from a read of a UDP port) ends a pass of reads
    quietly (nothing more to read, a signal, an earlier answer's ICMP
    error), as Twisted's UDP port has it; raise it otherwise.
    """
    if error.errno not in _READ_DONE:
        raise error


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


#: How many bytes of a datagram the loop guard's key holds (with its
#: peer).  A datagram shorter than that is compared whole by its key; one
#: as long or longer is hashed whole only when its key matches an
#: answer's (see L{EchoLoopGuard}), not every time: hashing costs about
#: three instructions a byte, a seventh of what answering 1 KiB cost.
#: The key holds no length: a shorter datagram's bytes are never a
#: longer one's first L{LOOP_KEY_BYTES}, and the pass of reads saves a
#: C{len} call and an item to hash.
LOOP_KEY_BYTES = 64


class EchoLoopGuard:
    """
    Recognise another echo server answering us: a datagram holding the
    bytes we answered to the same address and port less than C{window}
    seconds ago.  The first C{tolerance} such echoes in a row are
    answered; the next is a loop.

    What is remembered of each answer is a digest (Python's keyed,
    per-process hash) of its peer and its first L{LOOP_KEY_BYTES} bytes,
    with its time.  A datagram shorter than that is an echo if its digest
    is an answer's.  One as long or longer whose digest is an answer's is
    then hashed whole, and remembered by that too: it is an echo of an
    answer with the same whole bytes if there is one; if not, it may hold
    the bytes of the answer whose start it matched (those were not hashed
    whole), and it counts as that answer's echo.  So the same bytes coming
    back are counted at least as often as if every datagram were compared
    whole, and a client sending other bytes that begin alike is counted
    one echo early at most.

    Answers are kept in two tables, the newer and the older: when the
    newer one is C{window} seconds old or holds half of C{maxEntries}, it
    becomes the older one and the older one is dropped, so forgetting costs
    nothing per datagram, a flood of spoofed sources costs bounded memory
    (C{maxEntries} entries at most), and the newest C{maxEntries} / 2
    answers at least are remembered.  Every answer in flight is
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
        maxEntries: int = 32768,
    ) -> None:
        self.window = window
        self.tolerance = tolerance
        self.maxEntries = maxEntries
        self._clock = clock
        # digest -> (when answered, echoes in a row before); the newer
        # answers, since _since, and the older ones.
        self._newer: dict[int, tuple[float, int]] = {}
        self._older: dict[int, tuple[float, int]] = {}
        self._since = clock.seconds()

    def __len__(self) -> int:
        """
        How many digests are remembered within the window (one an answer,
        two for a long one that matched another's start).
        """
        horizon = self._clock.seconds() - self.window
        return len(
            {
                key
                for table in (self._older, self._newer)
                for key, entry in table.items()
                if entry[0] >= horizon
            }
        )

    def isLoop(self, host: str, port: int, datagram: bytes) -> bool:
        """
        Whether answering C{datagram} from C{(host, port)} would keep an
        echo loop going; if not, it is remembered as answered now.
        """
        return self.isLoopAt(host, port, datagram, self._clock.seconds())

    def isLoopAt(self, host: str, port: int, datagram: bytes, now: float) -> bool:
        """
        L{isLoop} at C{now}, for a caller that has the time already.
        """
        newer = self._newer
        if now - self._since >= self.window or len(newer) >= self.maxEntries // 2:
            newer = self._turn(now)
        key = hash((host, port, datagram[:LOOP_KEY_BYTES]))
        # Nearly every datagram is no answer's echo: asking with "in"
        # costs less than two calls of the tables' get.
        if key in newer:
            entry = newer[key]
        else:
            older = self._older
            if key not in older:
                newer[key] = (now, 0)
                return False
            entry = older[key]
        if entry[0] < now - self.window:
            newer[key] = (now, 0)
            return False
        if len(datagram) >= LOOP_KEY_BYTES:
            return self._isLongLoop(key, entry, host, port, datagram, now)
        echoes = entry[1] + 1
        if echoes > self.tolerance:
            # Unanswered, so the loop ends here; while the window lasts
            # (from the last answer), more of the same are echoes still.
            newer[key] = (entry[0], echoes)
            return True
        newer[key] = (now, echoes)
        return False

    def tablesFor(
        self, now: float, checks: int
    ) -> tuple[dict[int, tuple[float, int]], dict[int, tuple[float, int]]] | None:
        """
        The newer and the older table as L{isLoopAt} at C{now} finds them
        (turned first if due), for a caller about to check up to C{checks}
        datagrams at C{now} that would skip the call for a datagram whose
        digest neither table holds: L{isLoopAt} would answer that it is no
        loop, and remember it in the newer table as C{(now, 0)}, which the
        caller does instead.  The digest of a datagram C{d} from C{(host,
        port)} is C{hash((host, port, d[:LOOP_KEY_BYTES]))}.

        The tables hold while nothing else checks a datagram at another
        time (which may turn them) and these checks cannot fill the newer
        one (L{isLoopAt} would turn it; each check adds two entries at most).

        @return: the newer and the older table, or None if C{checks}
            checks could fill the newer one: then call L{isLoopAt} for each.
        """
        newer = self._newer
        half = self.maxEntries // 2
        if now - self._since >= self.window or len(newer) >= half:
            newer = self._turn(now)
        if len(newer) + 2 * checks >= half:
            return None
        return newer, self._older

    def _isLongLoop(
        self,
        key: int,
        start: tuple[float, int],
        host: str,
        port: int,
        datagram: bytes,
        now: float,
    ) -> bool:
        """
        L{isLoopAt} for a datagram of L{LOOP_KEY_BYTES} or more whose key
        C{key} is that of an answer within the window, C{start}.
        """
        newer = self._newer
        # Not the key's order: a datagram of LOOP_KEY_BYTES has both.
        whole = hash((datagram, host, port))
        entry = newer.get(whole) or self._older.get(whole)
        if entry is None or entry[0] < now - self.window:
            entry = start
        echoes = entry[1] + 1
        if echoes > self.tolerance:
            newer[whole] = (entry[0], echoes)
            return True
        newer[whole] = (now, echoes)
        # The start's entry stays what it is, an answer of its own (so
        # other bytes that begin alike are not echoes of each other), and
        # stays as long as the answers that begin so.
        newer[key] = (now, start[1])
        return False

    def _turn(self, now: float) -> dict[int, tuple[float, int]]:
        """
        Start a newer table; the newer one becomes the older, unless all of
        it is past the window.

        @return: the newer table.
        """
        # Each call turns the tables once the newer is a window old, so
        # what it holds was answered within a window of _since.
        self._older = self._newer if now - self._since < 2 * self.window else {}
        newer: dict[int, tuple[float, int]] = {}
        self._newer = newer
        self._since = now
        return newer

    def unsent(self, host: str, port: int, datagram: bytes) -> None:
        """
        Forget the answer L{isLoop} remembered: it could not be sent, so it
        cannot come back.
        """
        if len(datagram) >= LOOP_KEY_BYTES:
            # Only the whole: the start's entry may stand for other answers.
            key = hash((datagram, host, port))
        else:
            key = hash((host, port, datagram))
        self._newer.pop(key, None)
        self._older.pop(key, None)


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
    @ivar verdicts: by source address (a host as the socket gives it), the
        policy's verdict once it has judged one: the reason it refuses the
        address (None if it answers it) and the source group it counts it
        in; at most C{maxSources} addresses.  A verdict is judged from the
        address alone, so it never changes once given; only L{refusal}
        adds one, or forgets them all at the bound.  The fast path's pass
        (see L{echotwist._fast.udp}) answers an address it finds here, and
        hands any other datagram to L{DatagramEcho}; until it hands one
        on, it may take the verdict of the last address it answered
        without looking it up again.
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
        self.clock = clock
        self.ipv6Prefix = ipv6Prefix
        self.maxSources = maxSources
        # host -> what _judgeAddress said: parsing an address costs more
        # than everything else a refused datagram costs together.
        self.verdicts: dict[str, tuple[str | None, str]] = {}
        self.limiter = (
            SourceRateLimiter(rate, burstFor(rate), clock, maxSources) if rate else None
        )
        self.loops = EchoLoopGuard(clock)
        self.refusals = ThrottledLog(log, clock)
        self.counts: dict[str, int] = {}
        self.bytes = {"received": 0, "sent": 0}

    def countAnswers(self, received: int, sent: int, answered: int) -> None:
        """
        Count what a pass of reads answered itself (see
        L{echotwist._fast.udp.EchoPassPort.readPass}): the bytes of the
        datagrams it answered, the bytes it sent, and its answers.
        """
        counted = self.bytes
        counted["received"] += received
        counted["sent"] += sent
        if answered:
            self.counts["answered"] = self.counts.get("answered", 0) + answered

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
            return "privileged source port", formatSource(host, port)
        judged = self.verdicts.get(host)
        if judged is None:
            judged = self._judgeAddress(host)
            # Bounded: a flood from spoofed addresses starts it afresh.
            if len(self.verdicts) >= self.maxSources:
                self.verdicts.clear()
            self.verdicts[host] = judged
        why, source = judged
        if why is not None:
            return why, escape(formatSource(host, port))
        if self.limiter is not None and not self.limiter.allow(source):
            return "over the rate limit", source
        if self.loops.isLoop(host, port, datagram):
            return "echo loop", escape(formatSource(host, port))
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
                peer=formatSource(host, port),
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
                endOfReads(e)
                return
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


def formatSource(host: str, port: int) -> str:
    """
    How a datagram's source reads in a log: C{192.0.2.1:5000},
    C{[2001:db8::1]:5000} (not escaped: see L{echotwist._address.escape}).
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
