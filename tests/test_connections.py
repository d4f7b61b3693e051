"""
Unit tests of the books on stream connections (L{echotwist.connections}):
limits, sources, the idle sweep and eviction.  No reactor, no sockets, time
from a Clock.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import INegotiated
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echotwist import Echo, EchoFactory
from tests.test_stream import _TCPTransport, _UNIXTransport, connect


def connectFrom(factory: EchoFactory, host: str, port: int = 40000) -> Echo:
    return connect(factory, _TCPTransport(peerAddress=IPv4Address("TCP", host, port)))


class LogNamespaceTests(SynchronousTestCase):
    def test_connectionEventsKeepTheirNamespace(self) -> None:
        """
        The books log stream connection events (opened, closed, refused,
        evicted) under C{echotwist.stream}, as before they had a module of
        their own: operators filter on it, and README's log volume counts
        its length.
        """
        clock = MemoryReactorClock()
        factory = EchoFactory(clock, maxConnections=1)
        with capturedLogs() as events:
            first = connectFrom(factory, "192.0.2.1")
            refused = connectFrom(factory, "192.0.2.2")
            refused.connectionLost(Failure(ConnectionDone()))
            first.connectionLost(Failure(ConnectionDone()))
        seen = {
            e["event"]: e["log_namespace"]
            for e in events
            if e.get("event", "").startswith("connection.")
        }
        self.assertEqual(
            seen,
            {
                "connection.opened": "echotwist.stream",
                "connection.refused": "echotwist.stream",
                "connection.closed": "echotwist.stream",
            },
        )


class LimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()

    def test_maxConnections(self) -> None:
        factory = EchoFactory(self.clock, maxConnections=2)
        first, second = (
            connectFrom(factory, "192.0.2.1"),
            connectFrom(factory, "192.0.2.2"),
        )
        with capturedLogs() as events:
            third = connectFrom(factory, "192.0.2.3")
            third.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(third.transport.disconnecting)
        self.assertIsNone(third.transport.producer)
        self.assertEqual(factory.connections, {first, second})
        self.assertEqual(factory.refused, {"too many connections": 1})
        self.assertEqual(
            [(e["event"], e["peer"]) for e in events],
            [("connection.refused", "192.0.2.3:40000")],
        )
        first.dataReceived(b"untouched")
        self.assertEqual(first.transport.value(), b"untouched")
        self.assertFalse(first.transport.disconnecting)

        first.connectionLost(Failure(ConnectionDone()))
        fourth = connectFrom(factory, "192.0.2.4")
        self.assertIn(fourth, factory.connections)

    def test_maxPerSource(self) -> None:
        factory = EchoFactory(self.clock, maxPerSource=2)
        kept = [connectFrom(factory, "192.0.2.1", port) for port in (1, 2)]
        refused = connectFrom(factory, "192.0.2.1", 3)
        other = connectFrom(factory, "192.0.2.9")
        self.assertTrue(refused.transport.disconnecting)
        self.assertEqual(factory.connections, {*kept, other})
        self.assertEqual(factory.perSource, {"192.0.2.1": 2, "192.0.2.9": 1})
        self.assertEqual(factory.refused, {"too many connections from this source": 1})

    def test_unixPeersHaveNoSource(self) -> None:
        factory = EchoFactory(self.clock, maxPerSource=1)
        peers = [
            connect(factory, _UNIXTransport(peerAddress=UNIXAddress(None)))
            for _ in range(3)
        ]
        self.assertEqual(factory.connections, set(peers))
        self.assertEqual(factory.perSource, {})

    def test_booksReturnToZero(self) -> None:
        factory = EchoFactory(self.clock, maxConnections=3, maxPerSource=2)
        peers = [connectFrom(factory, f"192.0.2.{n % 2}", n) for n in range(5)]
        for peer in peers:
            peer.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(factory.connections, set())
        self.assertEqual(factory.perSource, {})


class IdleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = EchoFactory(self.clock, idleTimeout=1)

    def test_idleConnectionIsClosed(self) -> None:
        protocol = connect(self.factory)
        self.clock.advance(0.95)
        self.assertFalse(protocol.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(protocol.transport.disconnecting)
        self.assertFalse(protocol.transport.disconnected)  # closed, not aborted
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(events[0]["reason"], "idle timeout")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_busyConnectionStays(self) -> None:
        protocol = connect(self.factory)
        for _ in range(100):
            protocol.dataReceived(b"ping")
            self.clock.advance(0.5)
        self.assertFalse(protocol.transport.disconnecting)

    def test_drainingBacklogIsActivity(self) -> None:
        """
        Reading is paused while a slow reader takes its echo; each drained
        backlog counts as activity.
        """
        protocol = connect(self.factory)
        for _ in range(20):
            protocol.pauseProducing()
            self.clock.advance(0.5)
            protocol.resumeProducing()
        self.assertFalse(protocol.transport.disconnecting)

    def test_closeThatCannotFlushIsAborted(self) -> None:
        protocol = connect(self.factory)
        protocol.pauseProducing()  # the peer stopped reading
        self.clock.advance(1.1)
        self.assertTrue(protocol.transport.disconnecting)
        self.assertFalse(protocol.transport.disconnected)
        self.clock.advance(1.0)
        self.assertTrue(protocol.transport.disconnected)  # aborted
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(events[0]["reason"], "idle timeout; could not flush")

    def test_halfClosedNonReaderIsAborted(self) -> None:
        protocol = connect(self.factory)
        protocol.dataReceived(b"x" * 1000)
        protocol.readConnectionLost()
        self.assertTrue(protocol.transport.disconnecting)
        for _ in range(10):
            self.clock.advance(0.25)
        self.assertTrue(protocol.transport.disconnected)

    def test_neverWithZero(self) -> None:
        factory = EchoFactory(self.clock, idleTimeout=0)
        protocol = connect(factory)
        self.clock.advance(1e6)
        self.assertFalse(protocol.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sweepInterval(self) -> None:
        self.assertEqual(EchoFactory(self.clock, idleTimeout=300).sweepInterval, 10)
        self.assertEqual(EchoFactory(self.clock, idleTimeout=1).sweepInterval, 0.1)
        self.assertEqual(EchoFactory(self.clock, idleTimeout=0.1).sweepInterval, 0.05)


def connectFrom6(factory: EchoFactory, host: str, port: int = 40000) -> Echo:
    return connect(factory, _TCPTransport(peerAddress=IPv6Address("TCP", host, port)))


class ConnectionSourceGroupTests(SynchronousTestCase):
    """
    The per-source limit counts an IPv6 client's network, not its address.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()

    def test_oneSlash64IsOneSource(self) -> None:
        factory = EchoFactory(self.clock, maxPerSource=5)
        peers = [connectFrom6(factory, f"2001:db8:1:2::{n:x}") for n in range(1, 13)]
        admitted = [p for p in peers if p in factory.connections]
        self.assertEqual(len(admitted), 5)
        self.assertEqual(factory.perSource, {"2001:db8:1:2::/64": 5})
        self.assertEqual(factory.refused, {"too many connections from this source": 7})
        # Another /64 of the same /48 is another source.
        other = connectFrom6(factory, "2001:db8:1:3::1")
        self.assertIn(other, factory.connections)

    def test_linkLocalPerInterface(self) -> None:
        """
        A host on link A at its limit does not lock out a host on link B,
        though both use fe80::/64 (even the same address).
        """
        factory = EchoFactory(self.clock, maxPerSource=2)
        onA = [connectFrom6(factory, f"fe80::{n}%vethA") for n in range(1, 5)]
        self.assertEqual(sum(p in factory.connections for p in onA), 2)
        onB = [connectFrom6(factory, f"fe80::{n}%vethB") for n in (1, 2)]
        self.assertTrue(all(p in factory.connections for p in onB))
        self.assertEqual(
            factory.perSource, {"fe80::%vethA/64": 2, "fe80::%vethB/64": 2}
        )

    def test_refusalNamesTheSource(self) -> None:
        factory = EchoFactory(self.clock, maxPerSource=1)
        connectFrom6(factory, "2001:db8:1:2::1")
        with capturedLogs() as events:
            connectFrom6(factory, "2001:db8:1:2::9")
        (event,) = events
        self.assertEqual(event["source"], "2001:db8:1:2::/64")
        self.assertEqual(
            formatEvent(event),
            "Refused connection from 2001:db8:1:2::/64:"
            " too many connections from this source",
        )

    def test_prefixIsConfigurable(self) -> None:
        factory = EchoFactory(self.clock, maxPerSource=1, ipv6Prefix=48)
        connectFrom6(factory, "2001:db8:1:2::1")
        refused = connectFrom6(factory, "2001:db8:1:ffff::1")
        self.assertTrue(refused.transport.disconnecting)
        self.assertEqual(factory.perSource, {"2001:db8:1::/48": 1})
        whole = EchoFactory(self.clock, maxPerSource=1, ipv6Prefix=128)
        for n in range(1, 4):
            connectFrom6(whole, f"2001:db8::{n}")
        self.assertEqual(len(whole.connections), 3)

    def test_ipv4MappedIsItsIPv4Address(self) -> None:
        factory = EchoFactory(self.clock, maxPerSource=1)
        connectFrom(factory, "192.0.2.1")
        refused = connectFrom6(factory, "::ffff:192.0.2.1")
        self.assertTrue(refused.transport.disconnecting)
        self.assertEqual(factory.perSource, {"192.0.2.1": 1})

    def test_booksReturnToZero(self) -> None:
        factory = EchoFactory(self.clock, maxPerSource=2)
        peers = [connectFrom6(factory, f"2001:db8::{n}") for n in range(1, 6)]
        for peer in peers:
            peer.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.connections, set())
        self.assertEqual(factory.perSource, {})


class EvictionTests(SynchronousTestCase):
    """
    A full server admits a new client by closing the connection idle
    longest, once it has been idle C{evictIdleAfter} seconds.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = EchoFactory(
            self.clock, maxConnections=3, evictIdleAfter=2, idleTimeout=300
        )

    def fill(self) -> list[Echo]:
        return [connectFrom(self.factory, f"192.0.2.{n}") for n in range(1, 4)]

    def advance(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def test_sweepsOftenEnough(self) -> None:
        self.assertEqual(self.factory.sweepInterval, 0.5)
        self.assertEqual(EchoFactory(self.clock, idleTimeout=300).sweepInterval, 10)
        self.assertEqual(
            EchoFactory(self.clock, maxConnections=1, evictIdleAfter=10).sweepInterval,
            2.5,
        )

    def test_noEvictionBeforeTheMinimum(self) -> None:
        peers = self.fill()
        self.advance(1.5)
        newcomer = connectFrom(self.factory, "198.51.100.1")
        self.assertTrue(newcomer.transport.disconnecting)
        self.assertEqual(self.factory.connections, set(peers))
        self.assertEqual(self.factory.refused, {"too many connections": 1})
        self.assertEqual(self.factory.evicted, 0)

    def test_idleLongestIsEvicted(self) -> None:
        first, second, third = self.fill()
        self.advance(1)
        first.dataReceived(b"still here")
        self.advance(3)
        with capturedLogs() as events:
            newcomer = connectFrom(self.factory, "198.51.100.1")
        self.assertIn(newcomer, self.factory.connections)
        self.assertFalse(newcomer.transport.disconnecting)
        # second and third went idle together, before first: one of them.
        (victim,) = {second, third} - self.factory.connections
        self.assertTrue(victim.transport.disconnecting)
        self.assertIn(first, self.factory.connections)
        self.assertEqual(self.factory.evicted, 1)
        self.assertEqual(self.factory.closed, 1)
        evicted = [e for e in events if e["event"] == "connection.evicted"]
        self.assertEqual(len(evicted), 1)
        self.assertGreaterEqual(evicted[0]["idle"], 2)
        # Its transport reports the loss later: counted once.
        victim.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.factory.closed, 1)
        self.assertEqual(len(self.factory.connections), 3)
        self.assertEqual(sum(self.factory.perSource.values()), 3)

    def test_activeConnectionIsNotEvicted(self) -> None:
        """
        Activity since the last sweep disqualifies a candidate at once.
        """
        peers = self.fill()
        self.advance(3)
        for peer in peers:
            peer.dataReceived(b"x")
        newcomer = connectFrom(self.factory, "198.51.100.1")
        self.assertTrue(newcomer.transport.disconnecting)
        self.assertEqual(self.factory.connections, set(peers))

    def test_tricklerIsIdleInBetween(self) -> None:
        """
        A byte every 3 s keeps a connection from the idle timeout's reach
        only if the timeout is longer; between bytes it is idle, and at
        evictIdleAfter 2 it can be evicted.
        """
        trickler, *others = self.fill()
        for peer in others:
            peer.dataReceived(b"x")
        for _ in range(3):
            trickler.dataReceived(b".")
            self.advance(3)
            for peer in others:
                peer.dataReceived(b"x")
        self.advance(0.5)
        connectFrom(self.factory, "198.51.100.1")
        self.assertNotIn(trickler, self.factory.connections)
        self.assertTrue(trickler.transport.disconnecting)

    def test_perSourceLimitStillRefuses(self) -> None:
        factory = EchoFactory(
            self.clock, maxConnections=2, maxPerSource=1, evictIdleAfter=1
        )
        first = connectFrom(factory, "192.0.2.1")
        connectFrom(factory, "192.0.2.2")
        self.advance(5)
        again = connectFrom(factory, "192.0.2.1", 2)
        self.assertTrue(again.transport.disconnecting)
        self.assertIn(first, factory.connections)
        self.assertEqual(factory.evicted, 0)
        self.assertEqual(factory.refused, {"too many connections from this source": 1})

    def test_nonReaderIsAborted(self) -> None:
        peers = self.fill()
        peers[0].pauseProducing()  # its client stopped reading
        for peer in peers[1:]:
            peer.dataReceived(b"x")
        self.advance(3)
        for peer in peers[1:]:
            peer.dataReceived(b"x")
        connectFrom(self.factory, "198.51.100.1")
        self.assertTrue(peers[0].transport.disconnected)  # aborted

    def test_evictionsAreThrottled(self) -> None:
        factory = EchoFactory(self.clock, maxConnections=20, evictIdleAfter=1)
        for n in range(20):
            connectFrom(factory, f"192.0.2.{n}")
        self.advance(2)
        with capturedLogs() as events:
            for n in range(15):
                connectFrom(factory, f"198.51.100.{n}")
        self.assertEqual(factory.evicted, 15)
        self.assertEqual(
            [e["event"] for e in events if e["log_level"].name == "warn"],
            ["connection.evicted"],
        )
        self.assertEqual(len(factory.connections), 20)

    def test_zeroNeverEvicts(self) -> None:
        factory = EchoFactory(self.clock, maxConnections=1, evictIdleAfter=0)
        first = connectFrom(factory, "192.0.2.1")
        self.clock.advance(1e6)
        connectFrom(factory, "192.0.2.2")
        self.assertEqual(factory.connections, {first})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sweepStopsWhenEmpty(self) -> None:
        peers = self.fill()
        for peer in peers:
            peer.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.factory.perSource, {})


class FairShareEvictionTests(SynchronousTestCase):
    """
    A full server held by a few sources gives their slots up, one by one,
    to clients from other sources, however busy those few keep their
    connections: the idlest connection of the source holding the most goes,
    when that holds two or more than the newcomer's source.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = EchoFactory(
            self.clock,
            maxConnections=20,
            maxPerSource=10,
            evictIdleAfter=10,
            idleTimeout=300,
        )

    def advance(self, seconds: float, step: float = 0.5) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def trickle(self, peers: list[Echo], seconds: float, every: float) -> None:
        """
        Each of C{peers} sends a byte every C{every} seconds (under
        C{evictIdleAfter}), for C{seconds}.
        """
        for _ in range(round(seconds / every)):
            for peer in peers:
                if peer in self.factory.connections:
                    peer.dataReceived(b".")
            self.advance(every)

    def attack(self) -> list[Echo]:
        """
        Two addresses fill the server, 10 connections each.
        """
        return [
            connectFrom(self.factory, f"192.0.2.{n % 2 + 1}", 40000 + n)
            for n in range(20)
        ]

    def test_tricklersCannotHoldAFullServer(self) -> None:
        """
        The attack of issue 23, scaled down: 20 connections from 2 addresses
        each send a byte every 9 s, just under C{evictIdleAfter}.  A client
        from a new address is admitted, each time it knocks, and the
        attackers lose a slot each time.
        """
        attackers = self.attack()
        self.trickle(attackers, 60, 9)
        with capturedLogs() as events:
            for n in range(1, 7):
                newcomer = connectFrom(self.factory, f"198.51.100.{n}")
                self.assertIn(newcomer, self.factory.connections)
                self.assertFalse(newcomer.transport.disconnecting)
                self.trickle(attackers, 9, 9)
        self.assertEqual(self.factory.refused, {})
        self.assertEqual(self.factory.evicted, 6)
        self.assertEqual(self.factory.evictedForShare, 6)
        # Taken in turn from whichever of the two held the most.
        self.assertEqual(self.factory.perSource["192.0.2.1"], 7)
        self.assertEqual(self.factory.perSource["192.0.2.2"], 7)
        evicted = [e for e in events if e["event"] == "connection.evicted"]
        self.assertEqual(evicted[0]["held"], 10)
        self.assertIn(evicted[0]["source"], ("192.0.2.1", "192.0.2.2"))
        self.assertIn("held 10 connections, the most of any", formatEvent(evicted[0]))

    def test_theIdlestOfTheSourceGoes(self) -> None:
        """
        Of the source holding the most, the connection quiet longest (as
        the idle sweeps, every 2.5 s here, saw it) goes.
        """
        attackers = self.attack()
        ofOne = [p for p in attackers if p.source == "192.0.2.1"]
        ofTwo = [p for p in attackers if p.source == "192.0.2.2"]
        ofTwo[0].connectionLost(Failure(ConnectionDone()))
        for peer in attackers:
            peer.dataReceived(b"x")
        self.advance(3)
        quiet = ofOne[3]
        for peer in attackers:
            if peer is not quiet:
                peer.dataReceived(b"x")
        self.advance(3)
        connectFrom(self.factory, "198.51.100.1")
        connectFrom(self.factory, "198.51.100.2")
        self.assertNotIn(quiet, self.factory.connections)
        self.assertTrue(quiet.transport.disconnecting)
        self.assertEqual(self.factory.perSource["192.0.2.1"], 9)
        self.assertEqual(self.factory.perSource["192.0.2.2"], 9)
        self.assertEqual(self.factory.evictedForShare, 1)

    def test_busySourceStillGivesWay(self) -> None:
        """
        Every connection of the source holding the most was active since
        the last sweep (a byte a second each, say): one of them goes all the
        same.
        """
        attackers = self.attack()
        self.advance(3)
        for peer in attackers:
            peer.dataReceived(b"x")
        newcomer = connectFrom(self.factory, "198.51.100.1")
        self.assertFalse(newcomer.transport.disconnecting)
        self.assertEqual(self.factory.evictedForShare, 1)
        self.assertEqual(sorted(self.factory.perSource.values()), [1, 9, 10])

    def test_costIsTheHeadOfTheSourcesList(self) -> None:
        """
        The victim is found at the head of its source's idle list: a source
        holding 1000 connections costs no more looks than one holding 10.
        """
        factory = EchoFactory(self.clock, maxConnections=1000, evictIdleAfter=10)
        peers = [connectFrom(factory, "192.0.2.1", n) for n in range(1000)]
        self.advance(3)
        looked = []
        original = factory._idleSince

        def counting(protocol: Echo) -> float | None:
            looked.append(protocol)
            return original(protocol)

        factory._idleSince = counting  # type: ignore[method-assign]
        for n in range(1, 11):
            connectFrom(factory, f"198.51.100.{n}")
        self.assertEqual(factory.evictedForShare, 10)
        self.assertLessEqual(len(looked), 20)
        self.assertEqual(len(set(peers) - factory.connections), 10)

    def test_evenSharesFallBackToIdleness(self) -> None:
        """
        Where every source holds one connection, none holds more than its
        share: a newcomer gets in only by the idle rule.
        """
        factory = EchoFactory(self.clock, maxConnections=3, evictIdleAfter=10)
        peers = [connectFrom(factory, f"192.0.2.{n}") for n in range(1, 4)]
        for peer in peers:
            peer.dataReceived(b"x")
        self.advance(5)
        refused = connectFrom(factory, "198.51.100.1")
        self.assertTrue(refused.transport.disconnecting)
        self.assertEqual(factory.refused, {"too many connections": 1})
        self.assertEqual(set(peers), factory.connections)
        self.advance(10)
        connectFrom(factory, "198.51.100.2")
        self.assertEqual(factory.evicted, 1)
        self.assertEqual(factory.evictedForShare, 0)

    def test_oneMoreIsNoReason(self) -> None:
        """
        A source holding one more than the newcomer's does not give way:
        after the swap the two would hold as many, and swap back.
        """
        factory = EchoFactory(self.clock, maxConnections=3, evictIdleAfter=10)
        connectFrom(factory, "192.0.2.1", 1)
        connectFrom(factory, "192.0.2.1", 2)
        connectFrom(factory, "192.0.2.2", 1)
        again = connectFrom(factory, "192.0.2.2", 2)
        self.assertTrue(again.transport.disconnecting)
        self.assertEqual(factory.evicted, 0)
        newcomer = connectFrom(factory, "198.51.100.1")
        self.assertFalse(newcomer.transport.disconnecting)
        self.assertEqual(factory.evictedForShare, 1)
        self.assertEqual(factory.perSource["192.0.2.1"], 1)

    def test_zeroNeverEvicts(self) -> None:
        factory = EchoFactory(self.clock, maxConnections=4, evictIdleAfter=0)
        held = [connectFrom(factory, "192.0.2.1", n) for n in range(4)]
        refused = connectFrom(factory, "198.51.100.1")
        self.assertTrue(refused.transport.disconnecting)
        self.assertEqual(factory.connections, set(held))

    def test_booksFollowEveryChange(self) -> None:
        """
        The sources by count, and the largest count, agree with
        C{perSource} through connects, closes and evictions.
        """
        factory = self.factory
        peers = self.attack()

        def check() -> None:
            holding: dict[int, set[str]] = {}
            for source, count in factory.perSource.items():
                holding.setdefault(count, set()).add(source)
                self.assertEqual(len(factory.admission.members[source]), count)
            self.assertEqual(factory.admission.holding, holding)
            self.assertEqual(factory.admission.most, max(holding, default=0))

        check()
        for n in range(1, 6):
            connectFrom(factory, f"198.51.100.{n}")
            check()
        for peer in peers[:12]:
            peer.connectionLost(Failure(ConnectionDone()))
            check()
        for peer in list(factory.connections):
            peer.connectionLost(Failure(ConnectionDone()))
            check()
        self.assertEqual(
            (
                factory.admission.members,
                factory.admission.holding,
                factory.admission.most,
            ),
            ({}, {}, 0),
        )


@implementer(INegotiated)
class _TLSTransport(_TCPTransport):
    """
    A TCP transport under TLS, before its handshake: what Twisted's TLS
    wrapper looks like to L{Echo} when the connection is made.
    """

    aborted = False
    negotiatedProtocol = None

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def connectTLS(factory: EchoFactory, host: str, port: int = 40000) -> Echo | None:
    """
    A TLS connection from C{host}, as a TLS port behind a L{HandshakeGate}
    makes it: None if the handshake budget refused it (the port closes it).
    """
    if not factory.admitHandshake(host):
        return None
    return connect(factory, _TLSTransport(peerAddress=IPv4Address("TCP", host, port)))


class HandshakeBudgetTests(SynchronousTestCase):
    """
    TLS handshakes per source: so many in progress at once, so many new
    ones a second.  A connection over budget is aborted as it is made,
    before any TLS state is made for it.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()

    def test_inProgressPerSource(self) -> None:
        factory = EchoFactory(self.clock, tlsHandshakesPerSource=3)
        started = [connectTLS(factory, "192.0.2.1", n) for n in range(3)]
        assert None not in started
        first, second, _ = cast(list[Echo], started)
        with capturedLogs() as events:
            self.assertIsNone(connectTLS(factory, "192.0.2.1", 3))
        self.assertEqual(
            factory.refused,
            {"too many TLS handshakes in progress from this source": 1},
        )
        (refusal,) = [e for e in events if e["event"] == "connection.refused"]
        self.assertEqual(refusal["source"], "192.0.2.1")
        # Another source has a budget of its own; plain TCP has none.
        self.assertTrue(admitted(connectTLS(factory, "192.0.2.2")))
        self.assertFalse(connectFrom(factory, "192.0.2.1", 9).transport.disconnecting)
        # A handshake that finishes, or a connection that closes, frees its
        # place.
        first.handshakeCompleted()
        self.assertTrue(admitted(connectTLS(factory, "192.0.2.1", 4)))
        second.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(admitted(connectTLS(factory, "192.0.2.1", 5)))
        self.assertEqual(factory.handshaking, {"192.0.2.1": 3, "192.0.2.2": 1})
        first.connectionLost(Failure(ConnectionDone()))  # done already
        self.assertEqual(factory.handshaking, {"192.0.2.1": 3, "192.0.2.2": 1})

    def test_ratePerSource(self) -> None:
        """
        At 5 a second, a burst of 5, then one every 200 ms.
        """
        factory = EchoFactory(self.clock, tlsHandshakeRate=5)
        made = []
        for n in range(20):
            protocol = connectTLS(factory, "192.0.2.1", n)
            if protocol is not None:
                made.append(protocol)
                protocol.handshakeCompleted()
        self.assertEqual(len(made), 5)
        self.assertEqual(
            factory.refused, {"TLS handshakes from this source over the rate": 15}
        )
        self.assertTrue(admitted(connectTLS(factory, "192.0.2.2")))
        self.clock.advance(0.2)
        self.assertTrue(admitted(connectTLS(factory, "192.0.2.1", 99)))
        self.assertIsNone(connectTLS(factory, "192.0.2.1", 98))

    def test_overBudgetEvictsNobody(self) -> None:
        """
        A handshake over budget is refused before the connection limit is
        looked at: it cannot cost an idle connection its place.
        """
        factory = EchoFactory(
            self.clock, maxConnections=2, evictIdleAfter=1, tlsHandshakesPerSource=1
        )
        held = {
            connectTLS(factory, "192.0.2.1", 1),
            connectFrom(factory, "192.0.2.1", 2),
        }
        self.clock.advance(5)
        self.assertIsNone(connectTLS(factory, "192.0.2.1", 3))
        self.assertEqual(factory.connections, held)
        self.assertEqual(factory.evicted, 0)

    def test_noLimitsByDefault(self) -> None:
        factory = EchoFactory(self.clock)
        for n in range(100):
            self.assertTrue(admitted(connectTLS(factory, "192.0.2.1", n)))

    def test_refusedByTheBooksIsAborted(self) -> None:
        """
        A TLS connection within its handshake budget but over a connection
        limit is aborted: a TLS close would answer its client's hello.
        """
        factory = EchoFactory(self.clock, maxConnections=1, tlsHandshakesPerSource=5)
        connectTLS(factory, "192.0.2.1", 1)
        over = connectTLS(factory, "192.0.2.2", 2)
        assert over is not None
        self.assertTrue(over.transport.aborted)
        self.assertEqual(factory.handshaking, {"192.0.2.1": 1})


def admitted(protocol: Echo | None) -> bool:
    """
    Whether a connection was made and admitted into the books.
    """
    return protocol is not None and not protocol.transport.disconnecting
