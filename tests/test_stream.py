"""
Unit tests of the stream echo: no reactor, no sockets, time from a Clock.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist import Echo, EchoFactory
from tests._memory import MemoryPeer


class _TCPTransport(StringTransport):
    """
    A StringTransport that remembers the TCP_NODELAY it was given.
    """

    noDelay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled


class _UNIXTransport(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:
        raise OSError(95, "Operation not supported")


def connect(factory: EchoFactory, transport: StringTransport | None = None) -> Echo:
    protocol = factory.buildProtocol(None)
    assert isinstance(protocol, Echo)
    protocol.makeConnection(transport or _TCPTransport())
    return protocol


class EchoTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = EchoFactory(self.clock)

    def test_echoesEveryByteInOrder(self) -> None:
        protocol = connect(self.factory)
        chunks = [b"hello", b"\x00\xff" * 300, b"", bytes(range(256)), b"\r\n"]
        for chunk in chunks:
            protocol.dataReceived(chunk)
        self.assertEqual(protocol.transport.value(), b"".join(chunks))
        self.assertEqual(protocol.bytesEchoed, len(b"".join(chunks)))

    def test_noDelay(self) -> None:
        transport = _TCPTransport()
        connect(self.factory, transport)
        self.assertIs(transport.noDelay, True)

    def test_noDelayRefused(self) -> None:
        """
        A transport without TCP (a UNIX socket) refuses TCP_NODELAY; the
        connection echoes all the same.
        """
        protocol = connect(self.factory, _UNIXTransport())
        protocol.dataReceived(b"x")
        self.assertEqual(protocol.transport.value(), b"x")

    def test_registersAsStreamingProducer(self) -> None:
        protocol = connect(self.factory)
        self.assertIs(protocol.transport.producer, protocol)
        self.assertTrue(protocol.transport.streaming)
        protocol.pauseProducing()
        self.assertEqual(protocol.transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(protocol.transport.producerState, "producing")

    def test_backpressureWithRealBuffering(self) -> None:
        """
        With Twisted's own write buffer: once more than the buffer size is
        waiting for a peer that does not read, reading stops, so the server
        holds at most about two buffers; reading resumes once it drains.
        """
        transport = MemoryPeer(self.clock)
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(transport)
        transport.startReading()
        chunk = b"z" * 65536
        sent = 0
        while transport.reading and sent < 100 * len(chunk):
            protocol.dataReceived(chunk)
            sent += len(chunk)
        self.assertFalse(transport.reading)
        self.assertLessEqual(sent, 2 * len(chunk))
        self.assertLessEqual(transport.held, 2 * 65536)

        transport.accepting = sent
        transport.doWrite()
        self.assertTrue(transport.reading)
        self.assertEqual(transport.delivered, chunk * (sent // len(chunk)))

    def test_halfCloseFlushesThenCloses(self) -> None:
        """
        When the client stops sending, everything received is still echoed,
        then the server closes (not aborts) its side, and the producer is
        gone so the transport can finish closing.
        """
        protocol = connect(self.factory)
        protocol.dataReceived(b"last words")
        protocol.readConnectionLost()
        transport = protocol.transport
        self.assertEqual(transport.value(), b"last words")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)  # StringTransport: aborted
        self.assertIsNone(transport.producer)

    def test_booksAndLogs(self) -> None:
        with capturedLogs() as events:
            protocol = connect(self.factory)
            self.assertEqual(self.factory.connections, {protocol})
            self.clock.advance(2.5)
            protocol.dataReceived(b"abc")
            protocol.readConnectionLost()
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.factory.connections, set())
        opened, closed = (
            e for e in events if e.get("event", "").startswith("connection.")
        )
        self.assertEqual(opened["event"], "connection.opened")
        self.assertEqual(closed["event"], "connection.closed")
        self.assertEqual((closed["bytesIn"], closed["bytesOut"]), (3, 3))
        self.assertEqual(closed["duration"], 2.5)
        self.assertEqual(closed["reason"], "client finished sending")
        self.assertEqual(closed["peer"], opened["peer"])

    def test_closeReasonFromTheClient(self) -> None:
        with capturedLogs() as events:
            connect(self.factory).connectionLost(Failure(ConnectionDone()))
            connect(self.factory).connectionLost(
                Failure(ConnectionLost("Connection reset by peer"))
            )
        reasons = [e["reason"] for e in events if e.get("event") == "connection.closed"]
        self.assertEqual(reasons[0], "client closed the connection")
        self.assertIn("reset by peer", reasons[1])


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = EchoFactory(self.clock)
        self.quiet = self.factory.drainQuiet

    def lose(self, protocol: Echo) -> None:
        protocol.connectionLost(Failure(ConnectionDone()))

    def wait(self, seconds: float, step: float = 0.01) -> None:
        """
        Let C{seconds} pass in small steps, as a running reactor would: a
        call scheduled during a step is due from that step on.
        """
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def test_defaultQuietPeriod(self) -> None:
        """
        Long enough for a client that pauses between writes: at least a
        second.
        """
        self.assertGreaterEqual(EchoFactory(self.clock).drainQuiet, 1.0)

    def test_nothingOpen(self) -> None:
        self.successResultOf(self.factory.drain(10))

    def test_quietConnectionsCloseAfterTheQuietPeriod(self) -> None:
        first, second = connect(self.factory), connect(self.factory)
        drained = self.factory.drain(10)
        self.wait(self.quiet * 0.99)
        self.assertFalse(first.transport.disconnecting)
        self.wait(self.quiet * 0.05)
        self.assertTrue(first.transport.disconnecting)
        self.assertTrue(second.transport.disconnecting)
        self.lose(first)
        self.assertNoResult(drained)
        self.lose(second)
        self.successResultOf(drained)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pausingClientIsKept(self) -> None:
        """
        A client that sends every 200 ms (64 KiB writes paced by a slow
        link, say) is never cut during the drain, however long it goes on
        within the deadline; once it stops, it is closed after between one
        quiet period and a quarter more.
        """
        protocol = connect(self.factory)
        drained = self.factory.drain(30)
        for n in range(100):
            protocol.dataReceived(b"%d," % n)
            self.wait(0.2)
            self.assertFalse(protocol.transport.disconnecting, n)
        self.wait(self.quiet - 0.2 - 0.01)
        self.assertFalse(protocol.transport.disconnecting)
        self.wait(self.quiet / 4 + 0.05)
        self.assertTrue(protocol.transport.disconnecting)
        self.assertEqual(
            protocol.transport.value(), b"".join(b"%d," % n for n in range(100))
        )
        self.lose(protocol)
        self.successResultOf(drained)

    def test_pauseLongerThanTheQuietPeriodIsCut(self) -> None:
        """
        The other side of the trade-off: a pause past the quiet period ends
        the stream.
        """
        protocol = connect(self.factory)
        self.factory.drain(30)
        protocol.dataReceived(b"x")
        self.wait(self.quiet * 1.3)
        self.assertTrue(protocol.transport.disconnecting)

    def test_busyConnectionKeepsEchoing(self) -> None:
        """
        Bytes that arrive during the drain are echoed; the connection closes
        only after a quiet period that brought nothing.
        """
        protocol = connect(self.factory)
        drained = self.factory.drain(10)
        for n in range(3):
            protocol.dataReceived(b"more %d" % n)
            self.wait(self.quiet * 0.9)
            self.assertFalse(protocol.transport.disconnecting)
        self.wait(self.quiet * 1.3)
        self.assertTrue(protocol.transport.disconnecting)
        self.assertEqual(protocol.transport.value(), b"more 0more 1more 2")
        self.lose(protocol)
        self.successResultOf(drained)

    def test_otherQuietPeriod(self) -> None:
        factory = EchoFactory(self.clock, drainQuiet=0.05)
        protocol = connect(factory)
        factory.drain(10)
        self.wait(0.049, 0.001)
        self.assertFalse(protocol.transport.disconnecting)
        # Each check runs at the first step after it is due: four checks
        # may come up to four steps late.
        self.wait(0.006, 0.001)
        self.assertTrue(protocol.transport.disconnecting)

    def test_zeroWaitsForTheClient(self) -> None:
        """
        With a quiet period of 0 a connection is left open, however quiet,
        until the client closes it; no quiet check is scheduled at all.
        """
        factory = EchoFactory(self.clock, drainQuiet=0)
        protocol = connect(factory)
        drained = factory.drain(10)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the deadline
        self.wait(9.9, 0.1)
        self.assertFalse(protocol.transport.disconnecting)
        protocol.dataReceived(b"late")
        protocol.readConnectionLost()
        self.assertTrue(protocol.transport.disconnecting)
        self.lose(protocol)
        self.successResultOf(drained)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drainSaysWhatItWaitsFor(self) -> None:
        connect(self.factory)
        with capturedLogs() as events:
            self.factory.drain(10)
        (started,) = [e for e in events if e.get("event") == "drain.started"]
        self.assertEqual((started["quiet"], started["timeout"]), (self.quiet, 10))
        self.assertIn("once quiet for 2.0s", formatEvent(started))
        factory = EchoFactory(self.clock, drainQuiet=0)
        connect(factory)
        with capturedLogs() as events:
            factory.drain(10)
        self.assertIn("when its client closes", formatEvent(events[0]))

    def test_zeroStillHasTheDeadline(self) -> None:
        factory = EchoFactory(self.clock, drainQuiet=0)
        protocol = connect(factory)
        drained = factory.drain(10)
        self.clock.advance(10)
        self.assertTrue(protocol.transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(drained)

    def test_backedUpConnectionWaitsForItsReader(self) -> None:
        protocol = connect(self.factory)
        protocol.pauseProducing()
        drained = self.factory.drain(10)
        self.clock.advance(5)
        self.assertFalse(protocol.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 10)
        protocol.resumeProducing()
        # The backlog drained just now: the quiet period starts over.
        self.wait(self.quiet * 0.99)
        self.assertFalse(protocol.transport.disconnecting)
        self.wait(self.quiet * 0.05)
        self.assertTrue(protocol.transport.disconnecting)
        self.lose(protocol)
        self.successResultOf(drained)

    def test_deadlineAborts(self) -> None:
        protocol = connect(self.factory)
        protocol.pauseProducing()
        with capturedLogs() as events:
            drained = self.factory.drain(3)
            self.clock.advance(2.9)
            self.assertFalse(protocol.transport.disconnecting)
            self.clock.advance(0.1)
            self.assertTrue(protocol.transport.disconnecting)
            self.assertTrue(protocol.transport.disconnected)
            self.assertNoResult(drained)
            protocol.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(drained)
        closed = [e for e in events if e.get("event") == "connection.closed"]
        self.assertEqual(closed[0]["reason"], "shutdown deadline passed")

    def test_connectionDuringDrainIsDrainedToo(self) -> None:
        first = connect(self.factory)
        drained = self.factory.drain(10)
        late = connect(self.factory)
        self.wait(self.quiet * 1.05)
        self.assertTrue(late.transport.disconnecting)
        self.lose(first)
        self.lose(late)
        self.successResultOf(drained)

    def test_halfClosedConnectionIsLeftToFinish(self) -> None:
        protocol = connect(self.factory)
        protocol.readConnectionLost()
        drained = self.factory.drain(10)
        self.wait(self.quiet * 1.5)
        with capturedLogs() as events:
            self.lose(protocol)
        self.successResultOf(drained)
        closed = [e for e in events if e.get("event") == "connection.closed"]
        self.assertEqual(closed[0]["reason"], "client finished sending")


def connectFrom(factory: EchoFactory, host: str, port: int = 40000) -> Echo:
    return connect(factory, _TCPTransport(peerAddress=IPv4Address("TCP", host, port)))


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


class SourceGroupTests(SynchronousTestCase):
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
