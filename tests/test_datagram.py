"""
The datagram echo: what it answers, what it refuses (echo loops among
them), and send errors.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import udp
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from echotwist.datagram import (
    DATAGRAMS_PER_READ,
    LOOP_KEY_BYTES,
    LOOP_TOLERANCE,
    LOOP_WINDOW,
    DatagramEcho,
    DatagramPolicy,
    DatagramPort,
    EchoLoopGuard,
    _withScope,
    burstFor,
)


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.error: Exception | None = None

    def write(self, datagram: bytes, addr: Any) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append((datagram, addr))


class DatagramEchoTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.policy = DatagramPolicy(rate=100, clock=self.clock)
        self.transport = _Transport()
        self.echo = DatagramEcho(self.policy)
        self.echo.transport = self.transport  # type: ignore[assignment]

    def test_answersWithTheSameBytes(self) -> None:
        for size in (0, 1, 1400, 8193, 65507):
            self.echo.datagramReceived(b"d" * size, ("192.0.2.1", 40000))
        self.assertEqual(
            self.transport.sent,
            [(b"d" * size, ("192.0.2.1", 40000)) for size in (0, 1, 1400, 8193, 65507)],
        )
        self.assertEqual(self.policy.counts, {"answered": 5})

    def test_ipv6(self) -> None:
        self.echo.datagramReceived(b"six", ("2001:db8::1", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), 1)

    def refused(self, host: str, port: int) -> str:
        with capturedLogs() as events:
            self.echo.datagramReceived(b"x", (host, port))
        self.assertEqual(self.transport.sent, [])
        (event,) = events
        self.assertEqual(event["event"], "datagram.refused")
        return str(event["reason"])

    def test_cyclingServicePorts(self) -> None:
        for port in (7, 9, 13, 19, 37):
            self.setUp()
            self.assertEqual(self.refused("192.0.2.1", port), "privileged source port")

    def test_everyPrivilegedPort(self) -> None:
        self.assertEqual(self.refused("192.0.2.1", 1023), "privileged source port")
        self.setUp()
        self.assertEqual(self.refused("192.0.2.2", 0), "privileged source port")

    def test_broadcastMulticastUnspecified(self) -> None:
        cases = {
            "255.255.255.255": "broadcast source",
            "224.0.0.1": "multicast source",
            "239.1.2.3": "multicast source",
            "ff02::1": "multicast source",
            "::ffff:224.0.0.1": "multicast source",
            "0.0.0.0": "unspecified source",
            "::": "unspecified source",
        }
        for host, reason in cases.items():
            self.setUp()
            self.assertEqual(self.refused(host, 40000), reason, host)

    def test_rateLimit(self) -> None:
        for n in range(50):
            self.echo.datagramReceived(b"%d" % n, ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), burstFor(100))
        self.assertEqual(self.policy.counts["over the rate limit"], 40)
        self.clock.advance(1)
        self.echo.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), burstFor(100) + 1)

    def test_noLimit(self) -> None:
        echo = DatagramEcho(DatagramPolicy(rate=0, clock=self.clock))
        echo.transport = self.transport  # type: ignore[assignment]
        for n in range(1000):
            echo.datagramReceived(b"%d" % n, ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), 1000)

    def test_rateIsSharedAcrossPorts(self) -> None:
        other = DatagramEcho(self.policy)
        other.transport = self.transport  # type: ignore[assignment]
        for n in range(10):
            self.echo.datagramReceived(b"a%d" % n, ("192.0.2.1", 40000))
            other.datagramReceived(b"b%d" % n, ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), burstFor(100))

    def test_sendErrorsAreCountedNotRaised(self) -> None:
        errors = [
            OSError(errno.EAGAIN, "Resource temporarily unavailable"),
            OSError(errno.ENOBUFS, "No buffer space available"),
            MessageLengthError("message too long"),
        ]
        with capturedLogs() as events:
            for error in errors:
                self.transport.error = error
                self.echo.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(self.policy.counts, {"send failed": 3})
        self.assertEqual(len(events), 1)  # throttled
        self.transport.error = None
        self.echo.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), 1)

    def test_rateIsPerIPv6Prefix(self) -> None:
        """
        Every address of one /64 draws on one bucket; the log names the
        network, not the address that happened to be refused.
        """
        with capturedLogs() as events:
            for n in range(1, 51):
                self.echo.datagramReceived(b"x", (f"2001:db8:1:2::{n:x}", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), burstFor(100))
        self.assertEqual(self.policy.counts["over the rate limit"], 40)
        (event,) = events
        self.assertEqual(event["peer"], "2001:db8:1:2::/64")
        self.echo.datagramReceived(b"x", ("2001:db8:1:3::1", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), burstFor(100) + 1)

    def test_rateIsPerLinkLocalInterface(self) -> None:
        """
        Link-local sources on two interfaces have a bucket each.
        """
        with capturedLogs() as events:
            for n in range(1, 51):
                self.echo.datagramReceived(b"%d" % n, (f"fe80::{n:x}%eth0", 40000))
        self.assertEqual(len(self.transport.sent), burstFor(100))
        self.assertEqual(events[0]["peer"], "fe80::%eth0/64")
        self.echo.datagramReceived(b"other link", ("fe80::1%eth1", 40000))
        self.assertEqual(len(self.transport.sent), burstFor(100) + 1)

    def test_addressChecksAreRememberedBoundedly(self) -> None:
        """
        What an address is (refusable, which source) is worked out once,
        and remembered for at most C{maxSources} addresses.
        """
        policy = DatagramPolicy(rate=0, clock=self.clock, maxSources=100)
        echo = DatagramEcho(policy)
        echo.transport = self.transport  # type: ignore[assignment]
        with capturedLogs():
            for n in range(1000):
                echo.datagramReceived(b"m", ("224.0.0.1", 40000 + n))
                echo.datagramReceived(b"%d" % n, (f"10.0.{n >> 8}.{n & 255}", 40000))
        self.assertEqual(policy.counts, {"multicast source": 1000, "answered": 1000})
        self.assertLessEqual(len(policy.verdicts), 100)

    def test_prefixIsConfigurable(self) -> None:
        policy = DatagramPolicy(rate=100, clock=self.clock, ipv6Prefix=128)
        echo = DatagramEcho(policy)
        echo.transport = self.transport  # type: ignore[assignment]
        for n in range(1, 51):
            echo.datagramReceived(b"x", (f"2001:db8:1:2::{n:x}", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), 50)

    def test_ipv4MappedIsItsIPv4Address(self) -> None:
        for n in range(10):
            self.echo.datagramReceived(b"a%d" % n, ("192.0.2.1", 40000))
            self.echo.datagramReceived(b"b%d" % n, ("::ffff:192.0.2.1", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), burstFor(100))


class _Wire:
    """
    Two echo servers' UDP ports on a simulated network: whatever one sends
    reaches the peer it names half a round trip later, on the clock.
    """

    def __init__(self, clock: Clock, roundTrip: float) -> None:
        self.clock = clock
        self.delay = roundTrip / 2
        self.ports: dict[tuple[str, int], DatagramEcho] = {}
        self.delivered = 0

    def attach(self, echo: DatagramEcho, address: tuple[str, int]) -> None:
        wire = self

        class Transport:
            def write(self, datagram: bytes, addr: Any) -> None:
                wire.clock.callLater(
                    wire.delay, wire.deliver, datagram, address, tuple(addr)
                )

        echo.transport = Transport()  # type: ignore[assignment]
        self.ports[address] = echo

    def deliver(
        self, datagram: bytes, source: tuple[str, int], destination: tuple[str, int]
    ) -> None:
        self.delivered += 1
        self.ports[destination].datagramReceived(datagram, source)


class EchoLoopTests(SynchronousTestCase):
    """
    Two echo servers, one datagram sent to A with B's address as its
    source: the loop they start dies within a few exchanges, whatever the
    rate limit and round trip.
    """

    A = ("192.0.2.1", 5000)
    B = ("198.51.100.2", 40007)

    def servers(
        self, rate: float, roundTrip: float
    ) -> tuple[_Wire, DatagramPolicy, DatagramPolicy]:
        self.clock = Clock()
        wire = _Wire(self.clock, roundTrip)
        policies = []
        for address in (self.A, self.B):
            policy = DatagramPolicy(rate=rate, clock=self.clock)
            wire.attach(DatagramEcho(policy), address)
            policies.append(policy)
        return wire, policies[0], policies[1]

    def spoof(self, wire: _Wire, *datagrams: bytes) -> None:
        """
        Datagrams "from" B reach A, and let 10 s of the network run (each
        step a tenth of the round trip), bounded in exchanges too.
        """
        for datagram in datagrams:
            wire.ports[self.A].datagramReceived(datagram, self.B)
        step = max(wire.delay / 5, 1e-5)
        while self.clock.seconds() < 10 and wire.delivered < 100_000:
            self.clock.advance(step)

    def test_loopDiesAtAnyRateAndRoundTrip(self) -> None:
        for rate in (0, 10, 100, 1000):
            for roundTrip in (0.00005, 0.001, 0.02, 0.05, 0.1, 0.14):
                wire, a, b = self.servers(rate, roundTrip)
                with capturedLogs():
                    self.spoof(wire, b"loop me" * 100)
                case = f"--udp-rate {rate}, round trip {roundTrip * 1000} ms"
                answered = a.counts.get("answered", 0) + b.counts.get("answered", 0)
                # A answers the spoof, then each side answers two echoes.
                self.assertLessEqual(answered, 6, case)
                self.assertLessEqual(wire.delivered, 6, case)
                # Cut once: by the guard, or (a round trip shorter than
                # the rate allows) by the rate limit first.
                cuts = {
                    reason: a.counts.get(reason, 0) + b.counts.get(reason, 0)
                    for reason in ("echo loop", "over the rate limit")
                }
                self.assertEqual(sum(cuts.values()), 1, case)
                if rate == 0 or roundTrip > 1 / rate:
                    self.assertEqual(cuts["echo loop"], 1, case)

    def test_severalDatagramsLoopingAtOnceAllDie(self) -> None:
        wire, a, b = self.servers(0, 0.02)
        with capturedLogs():
            self.spoof(wire, *(b"%d" % n * 60000 for n in range(3)))
        self.assertEqual(a.counts["echo loop"] + b.counts.get("echo loop", 0), 3)
        self.assertLessEqual(wire.delivered, 3 * 6)

    def test_oneThrottledLineNamesThePeer(self) -> None:
        wire, a, b = self.servers(0, 0.001)
        with capturedLogs() as events:
            self.spoof(wire, *(b"%d" % n for n in range(20)))
        loops = [e for e in events if e.get("reason") == "echo loop"]
        self.assertEqual(len(loops), 1)  # twenty loops broken, one line
        self.assertEqual(loops[0]["event"], "datagram.refused")
        self.assertIn(loops[0]["peer"], ("192.0.2.1:5000", "198.51.100.2:40007"))
        self.assertEqual(a.counts["echo loop"] + b.counts.get("echo loop", 0), 20)

    def test_ipv6PeerIsEscapedInTheLine(self) -> None:
        """
        The peer goes into the line escaped, as everything a peer chose.
        """
        clock = Clock()
        policy = DatagramPolicy(rate=0, clock=clock)
        echo = DatagramEcho(policy)
        echo.transport = _Transport()  # type: ignore[assignment]
        peer = ("fe80::1%eth\x1b0", 40000, 0, 0)
        with capturedLogs() as events:
            for _ in range(4):
                echo.datagramReceived(b"same", peer)
        (event,) = events
        self.assertEqual(event["peer"], "[fe80::1%eth\\x1b0]:40000")

    def test_loopWithItself(self) -> None:
        """
        A datagram forged to come from the server's own address and port:
        the server answers itself, and stops after two echoes of its own.
        """
        self.clock = Clock()
        wire = _Wire(self.clock, 0.00005)
        policy = DatagramPolicy(rate=0, clock=self.clock)
        wire.attach(DatagramEcho(policy), self.A)
        with capturedLogs():
            wire.ports[self.A].datagramReceived(b"me", self.A)
            for _ in range(1000):
                self.clock.advance(0.00001)
        self.assertEqual(policy.counts, {"answered": 3, "echo loop": 1})

    def test_unchecked(self) -> None:
        """
        Without the guard (a tolerance no loop reaches), the same spoof
        loops for the whole 10 s: the test above would see it.
        """
        wire, a, b = self.servers(0, 0.02)
        a.loops.tolerance = b.loops.tolerance = 10**9
        self.spoof(wire, b"loop me")
        self.assertGreater(wire.delivered, 400)


class RepeatingClientTests(SynchronousTestCase):
    """
    Where the line is drawn: a client that repeats the same bytes is
    answered unless it does so within 150 ms of each answer, more than
    twice in a row.
    """

    peer = ("192.0.2.7", 41000)

    def setUp(self) -> None:
        self.clock = Clock()
        self.policy = DatagramPolicy(rate=100, clock=self.clock)
        self.transport = _Transport()
        self.echo = DatagramEcho(self.policy)
        self.echo.transport = self.transport  # type: ignore[assignment]

    def test_pingFiveTimesASecond(self) -> None:
        ping = b"\x08" * 64
        for _ in range(300):  # a minute
            self.echo.datagramReceived(ping, self.peer)
            self.clock.advance(0.2)
        self.assertEqual(len(self.transport.sent), 300)

    def test_retriesAndSmallBurstsAreAnswered(self) -> None:
        with capturedLogs():
            for _ in range(3):
                self.echo.datagramReceived(b"probe", self.peer)
            self.assertEqual(len(self.transport.sent), 3)
            self.echo.datagramReceived(b"probe", self.peer)
            self.assertEqual(len(self.transport.sent), 3)
            self.assertEqual(self.policy.counts["echo loop"], 1)
            # Other bytes, and the same bytes to another port, are answered.
            self.echo.datagramReceived(b"other", self.peer)
            self.echo.datagramReceived(b"probe", ("192.0.2.7", 41001))
            self.assertEqual(len(self.transport.sent), 5)
            # Within the window of the last answer, still a loop; past it,
            # the same bytes are a new request.
            self.clock.advance(0.1)
            self.echo.datagramReceived(b"probe", self.peer)
            self.assertEqual(len(self.transport.sent), 5)
            self.clock.advance(0.06)
            self.echo.datagramReceived(b"probe", self.peer)
            self.assertEqual(len(self.transport.sent), 6)

    def test_pingTenTimesASecondLosesEveryFourth(self) -> None:
        with capturedLogs():
            for _ in range(100):
                self.echo.datagramReceived(b"\x08" * 64, self.peer)
                self.clock.advance(0.1)
        self.assertEqual(len(self.transport.sent), 75)

    def test_failedSendIsNotAnAnswer(self) -> None:
        self.transport.error = OSError(errno.ENOBUFS, "No buffer space available")
        with capturedLogs():
            for _ in range(5):
                self.echo.datagramReceived(b"retry", self.peer)
        self.transport.error = None
        self.echo.datagramReceived(b"retry", self.peer)
        self.assertEqual(len(self.transport.sent), 1)


class EchoLoopGuardTests(SynchronousTestCase):
    def test_memoryIsBounded(self) -> None:
        """
        A flood of spoofed sources fills the table up to its cap, and not
        past it; the oldest answers go first.
        """
        clock = Clock()
        guard = EchoLoopGuard(clock, maxEntries=1000)
        for n in range(100_000):
            self.assertFalse(
                guard.isLoop(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 9999, b"x")
            )
        self.assertEqual(len(guard), 1000)
        # The newest are remembered, the oldest forgotten.
        self.assertFalse(guard.isLoop("10.0.0.0", 9999, b"x"))
        for _ in range(2):
            guard.isLoop("10.1.134.159", 9999, b"x")
        self.assertTrue(guard.isLoop("10.1.134.159", 9999, b"x"))

    def test_answersPastTheWindowAreForgotten(self) -> None:
        clock = Clock()
        guard = EchoLoopGuard(clock)
        for n in range(500):
            guard.isLoop("192.0.2.1", 40000 + n, b"x")
        clock.advance(LOOP_WINDOW * 1.01)
        guard.isLoop("192.0.2.2", 40000, b"x")
        self.assertEqual(len(guard), 1)

    def test_longDatagramsThatBeginAlike(self) -> None:
        """
        Datagrams longer than the key's bytes that begin alike but differ
        further on (a fixed header, a sequence number at the end) are not
        echoes of each other, however fast they come; the same long bytes
        coming back are.
        """
        guard = EchoLoopGuard(Clock())
        start = b"h" * LOOP_KEY_BYTES
        for n in range(100):
            self.assertFalse(guard.isLoop("192.0.2.1", 40000, start + b"%06d" % n))
        again = start + b"%06d" % 7
        # Counted one echo early (see test_oneEchoEarlyAtMost).
        verdicts = [guard.isLoop("192.0.2.1", 40000, again) for _ in range(3)]
        self.assertEqual(verdicts, [False, True, True])

    def test_theKeysBytesAndALongerDatagramThatBeginsWithThem(self) -> None:
        """
        A datagram of L{LOOP_KEY_BYTES} answered up to the tolerance does
        not make a longer one that begins with its bytes an echo: the key
        holds no length, and the longer one is compared whole.
        """
        guard = EchoLoopGuard(Clock())
        start = b"k" * LOOP_KEY_BYTES
        verdicts = [guard.isLoop("192.0.2.1", 40000, start) for _ in range(3)]
        self.assertEqual(verdicts, [False] * (LOOP_TOLERANCE + 1))
        self.assertFalse(guard.isLoop("192.0.2.1", 40000, start + b"tail"))
        self.assertFalse(guard.isLoop("192.0.2.1", 40000, start[:-1]))

    def test_anUnsentLongAnswerIsForgotten(self) -> None:
        """
        A long answer that could not be sent is forgotten whole: its echoes
        are counted from the next one sent.
        """
        guard = EchoLoopGuard(Clock())
        long = b"u" * (LOOP_KEY_BYTES + 1)
        self.assertFalse(guard.isLoop("192.0.2.1", 40000, long))
        self.assertFalse(guard.isLoop("192.0.2.1", 40000, long))
        guard.unsent("192.0.2.1", 40000, long)
        verdicts = [guard.isLoop("192.0.2.1", 40000, long) for _ in range(3)]
        self.assertEqual(verdicts, [False] * LOOP_TOLERANCE + [True])

    def test_aLoopOfLongDatagramsDies(self) -> None:
        """
        Long bytes coming back are refused at the same echo as short ones:
        the first match of a key is counted though not compared whole.
        """
        for size in (LOOP_KEY_BYTES, LOOP_KEY_BYTES + 1, 65507):
            guard = EchoLoopGuard(Clock())
            verdicts = [guard.isLoop("192.0.2.1", 40000, b"L" * size) for _ in range(5)]
            self.assertEqual(verdicts, [False] * (LOOP_TOLERANCE + 1) + [True] * 2)

    def test_loopsOfDatagramsThatBeginAlikeDie(self) -> None:
        """
        Two loops at once from one peer of datagrams that begin alike, as
        long (two spoofed datagrams an attacker chose so), whose echoes come
        in turn: each dies as if it were alone, however they interleave.
        """
        b = b"s" * LOOP_KEY_BYTES + b"B"
        c = b"s" * LOOP_KEY_BYTES + b"C"
        guard = EchoLoopGuard(Clock())
        answered = [d for d in [b, c] * 20 if not guard.isLoop("192.0.2.1", 7, d)]
        self.assertLessEqual(len(answered), 2 * (LOOP_TOLERANCE + 1))
        guard = EchoLoopGuard(Clock())
        answered = [d for d in [b, b, c] * 20 if not guard.isLoop("192.0.2.1", 7, d)]
        self.assertLessEqual(len(answered), 2 * (LOOP_TOLERANCE + 1))

    def assertOneEchoEarly(self, other: bytes) -> None:
        """
        After a datagram of C{LOOP_KEY_BYTES} + 1 bytes, C{other}, which
        begins alike, is counted as its echo and, repeated, refused one
        echo earlier than if compared whole; the first datagram's own
        echoes are counted as they come.
        """
        guard = EchoLoopGuard(Clock())
        first = b"a" * LOOP_KEY_BYTES + b"1"
        self.assertFalse(guard.isLoop("192.0.2.1", 40000, first))
        verdicts = [guard.isLoop("192.0.2.1", 40000, other) for _ in range(3)]
        self.assertEqual(verdicts, [False, False, True])
        verdicts = [guard.isLoop("192.0.2.1", 40000, first) for _ in range(3)]
        self.assertEqual(verdicts, [False, False, True])

    def test_oneEchoEarlyAtMost(self) -> None:
        """
        The price of not hashing every datagram whole: after a datagram,
        one that begins alike, as long, is counted as its echo, and if it is
        then repeated it is refused one echo earlier than if compared whole;
        the first datagram's own echoes are counted as they come.
        """
        self.assertOneEchoEarly(b"a" * LOOP_KEY_BYTES + b"2")

    def test_otherLengthsThatBeginAlikeAreOneEchoEarly(self) -> None:
        """
        The price of a digest without the length: after a long datagram,
        a longer one that begins alike is counted as its echo, as one as
        long is (see test_oneEchoEarlyAtMost), and if repeated is refused
        one echo earlier than if compared whole; the first datagram's own
        echoes are counted as they come.
        """
        self.assertOneEchoEarly(b"a" * LOOP_KEY_BYTES + b"22")

    def test_isLoopAtTakesTheTimeGiven(self) -> None:
        """
        L{EchoLoopGuard.isLoopAt} judges at the time it is given (a pass of
        reads looks at the clock once), not the clock's.
        """
        guard = EchoLoopGuard(Clock())
        for _ in range(LOOP_TOLERANCE + 1):
            self.assertFalse(guard.isLoopAt("192.0.2.1", 40000, b"x", 100.0))
        self.assertTrue(guard.isLoopAt("192.0.2.1", 40000, b"x", 100.0))
        self.assertFalse(
            guard.isLoopAt("192.0.2.1", 40000, b"x", 100.0 + LOOP_WINDOW * 1.01)
        )

    def test_tablesForSkippingTheCall(self) -> None:
        """
        L{EchoLoopGuard.tablesFor} gives the tables in which a caller that
        finds no digest remembers a datagram as L{EchoLoopGuard.isLoopAt}
        would: its echoes are then counted from the first, short or long.
        """
        for datagram in (b"x", b"L" * (LOOP_KEY_BYTES + 1)):
            guard = EchoLoopGuard(Clock())
            tables = guard.tablesFor(100.0, 1)
            assert tables is not None
            newer, older = tables
            key = hash(("192.0.2.1", 40000, datagram[:LOOP_KEY_BYTES]))
            self.assertNotIn(key, newer)
            self.assertNotIn(key, older)
            newer[key] = (100.0, 0)
            verdicts = [
                guard.isLoopAt("192.0.2.1", 40000, datagram, 100.0) for _ in range(3)
            ]
            self.assertEqual(verdicts, [False] * LOOP_TOLERANCE + [True])

    def test_tablesForTurnsAsIsLoopAtWould(self) -> None:
        """
        L{EchoLoopGuard.tablesFor} turns the tables when L{isLoopAt} would
        at that time: an answer a window old is found in the older table,
        and forgotten a window later.
        """
        guard = EchoLoopGuard(Clock())
        guard.isLoopAt("192.0.2.1", 40000, b"x", 0.0)
        tables = guard.tablesFor(LOOP_WINDOW, 1)
        assert tables is not None
        self.assertEqual((len(tables[0]), len(tables[1])), (0, 1))
        tables = guard.tablesFor(3 * LOOP_WINDOW, 1)
        assert tables is not None
        self.assertEqual((len(tables[0]), len(tables[1])), (0, 0))

    def test_tablesForNotWhenTheChecksCouldFillIt(self) -> None:
        """
        No tables when the checks to come could fill the newer one (each
        adds two entries at most): L{isLoopAt} turns it then, and the
        caller calls it for each.
        """
        guard = EchoLoopGuard(Clock(), maxEntries=100)
        for n in range(40):
            guard.isLoopAt("192.0.2.1", 40000 + n, b"x", 0.0)
        self.assertIsNotNone(guard.tablesFor(0.0, 4))
        self.assertIsNone(guard.tablesFor(0.0, 5))


class _Collect(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))


class DatagramPortTests(SynchronousTestCase):
    """
    The UDP port reads a bounded number of datagrams a pass, on a real
    loopback socket (the reactor is a memory one: passes are called by
    hand).
    """

    def listen(self, portType: type[udp.Port]) -> tuple[udp.Port, _Collect]:
        protocol = _Collect()
        port = portType(0, protocol, "127.0.0.1", 65536, MemoryReactorClock())
        port.startListening()
        self.addCleanup(port.socket.close)
        return port, protocol

    def test_aPassReadsAtMostTheBound(self) -> None:
        port, protocol = self.listen(DatagramPort)
        # Empty datagrams too: Twisted's byte budget never counts them.
        self.send(port, [b""] * 50 + [b"x"] * 50)
        port.doRead()
        self.assertEqual(len(protocol.received), DATAGRAMS_PER_READ)
        port.doRead()
        self.assertEqual(len(protocol.received), 2 * DATAGRAMS_PER_READ)
        for _ in range(10):
            port.doRead()
        self.assertEqual(len(protocol.received), 100)

    def test_twistedsPortReadsThemAll(self) -> None:
        """
        What the bound is for: Twisted's own port reads every small
        datagram queued in one pass.
        """
        port, protocol = self.listen(udp.Port)
        self.send(port, [b""] * 50 + [b"x"] * 50)
        port.doRead()
        self.assertEqual(len(protocol.received), 100)

    def send(self, port: udp.Port, datagrams: list[bytes]) -> None:
        # Linux delivers a loopback datagram to the receiving socket's
        # queue within the sender's sendto: all are queued on return.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for datagram in datagrams:
                client.sendto(datagram, ("127.0.0.1", port.getHost().port))

    def test_scopeIsKept(self) -> None:
        self.assertEqual(
            _withScope(("fe80::a", 5, 0, socket.if_nametoindex("lo"))),
            ("fe80::a%lo", 5, 0, socket.if_nametoindex("lo")),
        )
        self.assertEqual(_withScope(("2001:db8::1", 5, 0, 0)), ("2001:db8::1", 5))


class DatagramPlainPassTests(SynchronousTestCase):
    """
    Off the fast path (any reactor but echotwist's), echotwist's UDP port
    (L{DatagramPort}) keeps its bound of datagrams per pass, and hands
    every datagram to the protocol, as Twisted's port does: the echo
    answers each through its transport.
    """

    def test_everyDatagramToTheProtocol(self) -> None:
        policy = DatagramPolicy(rate=0, clock=Clock())
        echo = DatagramEcho(policy)
        handed: list[bytes] = []
        answer = echo.datagramReceived

        def recording(datagram: bytes, addr: Any) -> None:
            handed.append(datagram)
            answer(datagram, addr)

        echo.datagramReceived = recording  # type: ignore[method-assign]
        port = DatagramPort(0, echo, "127.0.0.1", 65536, MemoryReactorClock())
        port.startListening()
        self.addCleanup(port.socket.close)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind(("127.0.0.1", 0))
        sent = [b"%d" % n for n in range(DATAGRAMS_PER_READ + 3)]
        # Linux queues a loopback datagram at the receiver within sendto.
        for datagram in sent:
            client.sendto(datagram, ("127.0.0.1", port.getHost().port))
        port.doRead()
        self.assertEqual(handed, sent[:DATAGRAMS_PER_READ])
        port.doRead()
        self.assertEqual(handed, sent)
        answers = [client.recv(100, socket.MSG_DONTWAIT) for _ in sent]
        self.assertEqual(answers, sent)
        self.assertEqual(policy.counts, {"answered": len(sent)})
