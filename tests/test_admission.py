"""
Tests for L{echotwist.admission}: the limits, the per-source books and the
TLS handshake budget, in memory on a Clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echotwist import Echo
from echotwist.admission import HANDSHAKE_RATE, TOO_MANY_HANDSHAKES, Admission


def admission(clock: Clock | None = None, **limits: float) -> Admission:
    settings: dict[str, float] = dict(
        maxConnections=0,
        maxPerSource=0,
        ipv6Prefix=64,
        tlsHandshakesPerSource=0,
        tlsHandshakeRate=0,
    )
    settings.update(limits)
    return Admission(clock or Clock(), **settings)  # type: ignore[arg-type]


def echo(source: str | None, tls: bool = False) -> Echo:
    protocol = Echo()
    protocol.source = source
    protocol.tls = tls
    return protocol


class AdmissionTests(SynchronousTestCase):
    def test_sourceFullAtItsLimit(self) -> None:
        """
        A source is full once it holds C{maxPerSource} connections, and
        has room again as soon as one goes.
        """
        books = admission(maxPerSource=2)
        first, second = echo("192.0.2.1"), echo("192.0.2.1")
        books.count(first)
        self.assertFalse(books.sourceFull("192.0.2.1"))
        books.count(second)
        self.assertTrue(books.sourceFull("192.0.2.1"))
        self.assertFalse(books.sourceFull("192.0.2.2"))
        books.uncount(first)
        self.assertFalse(books.sourceFull("192.0.2.1"))
        self.assertEqual(books.perSource, {"192.0.2.1": 1})

    def test_noLimits(self) -> None:
        """
        At 0 nothing is ever full; a connection without a source (UNIX) is
        not counted.
        """
        books = admission()
        for _ in range(100):
            books.count(echo("192.0.2.1"))
        books.count(echo(None))
        self.assertFalse(books.sourceFull("192.0.2.1"))
        self.assertFalse(books.full(10**6))
        self.assertEqual(books.perSource, {"192.0.2.1": 100})

    def test_full(self) -> None:
        books = admission(maxConnections=3)
        self.assertEqual(
            [books.full(n) for n in (0, 2, 3, 4)], [False, False, True, True]
        )

    def test_ipv6AddressesOfOnePrefixAreOneSource(self) -> None:
        """
        Addresses that differ past the prefix cannot pass as new sources.
        """
        books = admission(ipv6Prefix=64)
        self.assertEqual(
            {books.sourceOf(f"2001:db8:1:2::{n:x}") for n in range(50)},
            {"2001:db8:1:2::/64"},
        )
        self.assertIsNone(books.sourceOf(None))

    def test_mostFollowsTheCounts(self) -> None:
        books = admission()
        many = [echo("192.0.2.1") for _ in range(3)]
        for protocol in many:
            books.count(protocol)
        books.count(echo("192.0.2.2"))
        self.assertEqual(books.most, 3)
        self.assertEqual(books.holding, {3: {"192.0.2.1"}, 1: {"192.0.2.2"}})
        for protocol in many:
            books.uncount(protocol)
        self.assertEqual(books.most, 1)
        self.assertEqual(books.members.keys(), {"192.0.2.2"})

    def test_handshakesInProgress(self) -> None:
        """
        A source may have C{tlsHandshakesPerSource} handshakes in progress;
        one more is refused until one ends, and ending one twice frees
        one place only.
        """
        books = admission(tlsHandshakesPerSource=2)
        first, second = echo("192.0.2.1", tls=True), echo("192.0.2.1", tls=True)
        books.handshakeStarted(first)
        self.assertIsNone(books.handshakeRefusal("192.0.2.1"))
        books.handshakeStarted(second)
        self.assertEqual(books.handshakeRefusal("192.0.2.1"), TOO_MANY_HANDSHAKES)
        self.assertIsNone(books.handshakeRefusal("192.0.2.2"))
        books.handshakeEnded(first)
        books.handshakeEnded(first)
        self.assertEqual(books.handshaking, {"192.0.2.1": 1})
        books.handshakeEnded(second)
        self.assertEqual(books.handshaking, {})

    def test_handshakeRate(self) -> None:
        """
        New handshakes from a source faster than C{tlsHandshakeRate} a
        second are refused; a second later there is room again.
        """
        clock = Clock()
        books = admission(clock, tlsHandshakeRate=2)
        self.assertEqual(
            [books.handshakeRefusal("192.0.2.1") for _ in range(3)],
            [None, None, HANDSHAKE_RATE],
        )
        clock.advance(1)
        self.assertIsNone(books.handshakeRefusal("192.0.2.1"))
