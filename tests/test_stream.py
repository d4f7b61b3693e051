"""
Unit tests of the stream echo protocol (L{echotwist.stream}), and of the
drain: no reactor, no sockets, time from a Clock.  The books are
tests.test_connections'.
"""

from __future__ import annotations

import random
import subprocess
import sys

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist import Echo, EchoFactory
from echotwist.stream import NOTHING_SENT, SPLICE_FROM, passesThrough, sendsDirectly
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
            for lost in (ConnectionDone(), ConnectionLost("Connection reset by peer")):
                protocol = connect(self.factory)
                protocol.dataReceived(b"x")
                protocol.connectionLost(Failure(lost))
        reasons = [e["reason"] for e in events if e.get("event") == "connection.closed"]
        self.assertEqual(reasons[0], "client closed the connection")
        self.assertIn("reset by peer", reasons[1])

    def test_nothingSentIsAQuietClose(self) -> None:
        """
        A client that closes before sending anything (a health check), by
        FIN or by RST, is logged as such, not as a lost connection.
        """
        with capturedLogs() as events:
            for lost in (ConnectionDone(), ConnectionLost("Connection reset by peer")):
                connect(self.factory).connectionLost(Failure(lost))
            halfClosed = connect(self.factory)
            halfClosed.readConnectionLost()
            halfClosed.connectionLost(Failure(ConnectionDone()))
        reasons = [e["reason"] for e in events if e.get("event") == "connection.closed"]
        self.assertEqual(reasons, [NOTHING_SENT] * 3)


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
        protocol.dataReceived(b"x")
        protocol.readConnectionLost()
        drained = self.factory.drain(10)
        self.wait(self.quiet * 1.5)
        with capturedLogs() as events:
            self.lose(protocol)
        self.successResultOf(drained)
        closed = [e for e in events if e.get("event") == "connection.closed"]
        self.assertEqual(closed[0]["reason"], "client finished sending")


class FastPathInterfaceTests(SynchronousTestCase):
    """
    How a transport or a wrapper tells L{Echo} it may send directly or see
    through (L{echotwist.stream.sendsDirectly},
    L{echotwist.stream.passesThrough}), and that no module changes
    L{echotwist.stream} as it is imported.
    """

    def test_sendsDirectly(self) -> None:
        from twisted.internet import tcp, unix

        from echotwist._fast.tcp import SplicingServer

        class _Undeclared(tcp.Server):
            pass

        self.assertTrue(sendsDirectly(object.__new__(SplicingServer)))
        # Twisted's own TCP transport (the fast path off) gets write().
        self.assertFalse(sendsDirectly(object.__new__(tcp.Server)))
        # A transport it does not know is left to Twisted, subclass or not.
        self.assertFalse(sendsDirectly(object.__new__(_Undeclared)))
        self.assertFalse(sendsDirectly(object.__new__(unix.Server)))
        self.assertFalse(sendsDirectly(StringTransport()))

    def test_passesThrough(self) -> None:
        from twisted.protocols.policies import ProtocolWrapper

        from echotwist.proxy import ProxyHeaderWrapper

        self.assertTrue(passesThrough(object.__new__(ProxyHeaderWrapper)))
        self.assertFalse(passesThrough(object.__new__(ProtocolWrapper)))
        self.assertFalse(passesThrough(Echo()))

    def test_importChangesNoOtherModule(self) -> None:
        """
        Importing every module of the package (the PROXY wrapper, the kernel
        paths, the reactor, ...) changes no other module's data: each
        module's constants are what its own source makes them.  In a fresh
        interpreter, where each source runs again into a module of its own.
        """
        result = subprocess.run(
            [sys.executable, "-c", _FRESH_MODULES],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.assertEqual(result.stdout.strip(), "[]")


# For test_importChangesNoOtherModule: the names of data (numbers, strings,
# tuples, ...) whose value differs from what the module's source alone
# makes, once every module is imported.
_FRESH_MODULES = """
import importlib, pkgutil, sys, types
import echotwist
# Every module, those of the subpackages (the fast path's, the door's) too;
# not a command (__main__), nor a module whose extra (TLS, metrics) is not
# installed.
names = []
for module in pkgutil.walk_packages(echotwist.__path__, "echotwist."):
    if module.name.endswith(".__main__"):
        continue  # a command, not a module to import
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as e:
        if e.name.partition(".")[0] not in {"OpenSSL", "prometheus_client"}:
            raise
    else:
        names.append(module.name)
data = (tuple, frozenset, int, float, str, bytes, bool, type(None))
changed = []
for name in names:
    live = sys.modules[name]
    fresh = types.ModuleType(name + "_fresh")
    fresh.__file__ = live.__file__
    sys.modules[fresh.__name__] = fresh
    with open(live.__file__) as f:
        exec(compile(f.read(), live.__file__, "exec"), fresh.__dict__)
    changed += [
        f"{name}.{key}" for key, value in vars(fresh).items()
        if not key.startswith("__") and isinstance(value, data)
        and getattr(live, key, None) != value
    ]
print(sorted(changed))
"""


class _DirectPeer(MemoryPeer):
    echoSendsDirectly = True


class FastPathViewTests(SynchronousTestCase):
    """
    What L{Echo} offers the kernel fast paths: whether it sends directly,
    is in bulk, is undisturbed, and the two things they tell it.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.peer = _DirectPeer(self.clock)
        self.protocol = connect(EchoFactory(self.clock), self.peer)  # type: ignore[arg-type]
        self.peer.startReading()

    def test_sendsDirectlyTo(self) -> None:
        self.assertTrue(self.protocol.sendsDirectlyTo(self.peer))
        self.assertFalse(self.protocol.sendsDirectlyTo(MemoryPeer(self.clock)))
        self.assertFalse(connect(EchoFactory(self.clock)).sendsDirectlyTo(self.peer))

    def test_bulk(self) -> None:
        self.peer.accepting = 10**6
        self.assertFalse(self.protocol.inBulk)
        self.protocol.dataReceived(b"x" * SPLICE_FROM)
        self.assertTrue(self.protocol.inBulk)
        self.protocol.splicedEcho(SPLICE_FROM)
        self.assertTrue(self.protocol.inBulk)
        self.protocol.splicedEcho(SPLICE_FROM - 1)
        self.assertFalse(self.protocol.inBulk)
        self.assertEqual(self.protocol.bytesEchoed, 3 * SPLICE_FROM - 1)

    def test_undisturbed(self) -> None:
        self.assertTrue(self.protocol.undisturbed)
        self.protocol.pauseProducing()
        self.assertFalse(self.protocol.undisturbed)
        self.protocol.resumeProducing()
        self.assertTrue(self.protocol.undisturbed)
        self.protocol.closeWhenFlushed("test")
        self.assertFalse(self.protocol.undisturbed)

    def test_partlySent(self) -> None:
        """
        The rest of a read the fast path sent in part is queued, behind
        nothing, and reading stops until it is sent.
        """
        self.protocol.partlySent(b"abcdef", 2)
        self.assertEqual(self.protocol.bytesEchoed, 6)
        self.assertEqual(self.peer.held, 4)
        self.assertFalse(self.peer.reading)
        self.assertFalse(self.protocol.undisturbed)
        self.peer.accepting = 4
        self.peer.doWrite()
        self.assertEqual(bytes(self.peer.delivered), b"cdef")
        self.assertTrue(self.peer.reading)


# The stateful property test of the stream echo against a model of a TCP peer.
#
# Echo runs over Twisted's real FileDescriptor write buffering and producer
# logic; the "kernel" between it and the client is modelled: bytes the client
# sent wait until the server reads them (only while it is reading), and echo
# leaves the server's buffer only as fast as the client reads.  Hypothesis
# interleaves sends, reads on both sides, pauses, half-close, resets and clock
# advances, and checks after every step that the client got a prefix of what
# it sent (no byte reordered, dropped or duplicated), that the server never
# held more than two reads' worth, and at the end that everything came back.
READ_SIZE = 65536  # what tcp.Connection reads at most per doRead


BUFFER = FileDescriptor.bufferSize


# Small sizes, and the sizes around the buffer and read limits.
SEND_SIZES = st.one_of(
    st.integers(1, 512),
    st.sampled_from(
        [4096, BUFFER - 1, BUFFER, BUFFER + 1, 2 * READ_SIZE, 3 * READ_SIZE]
    ),
)


class EchoModel(RuleBasedStateMachine):
    #: Let Echo send to the model's transport directly, as it does to TCP.
    direct = False

    def __init__(self) -> None:
        super().__init__()
        original = MemoryPeer.echoSendsDirectly
        MemoryPeer.echoSendsDirectly = self.direct
        self.clock = MemoryReactorClock()
        self.factory = EchoFactory(self.clock, idleTimeout=30)
        self.transport = MemoryPeer(self.clock)
        self.protocol = self.factory.buildProtocol(None)
        assert isinstance(self.protocol, Echo)
        try:
            self.protocol.makeConnection(self.transport)
        finally:
            MemoryPeer.echoSendsDirectly = original
        self.transport.startReading()
        self.sent = bytearray()  # everything the client sent
        self.unread = bytearray()  # sent, not yet read by the server
        self.clientFinished = False  # the client shut down its sending side
        self.eofSeen = False
        self.lost = False
        self.reset = False

    @property
    def reading(self) -> bool:
        return self.transport.reading

    @property
    def writing(self) -> bool:
        return self.transport.writing

    def _lose(self, reason: Failure) -> None:
        self.lost = True
        self.transport.connectionLost(reason)
        self.protocol.connectionLost(reason)

    @precondition(lambda self: not self.clientFinished and not self.lost)
    @rule(size=SEND_SIZES)
    def clientSends(self, size: int) -> None:
        # Content depends on the offset in the stream, so a byte reordered,
        # dropped or repeated cannot look right.
        data = random.Random(len(self.sent)).randbytes(size)
        self.sent += data
        self.unread += data

    @precondition(lambda self: not self.lost)
    @rule()
    def serverReads(self) -> None:
        # As recv() does: whatever has arrived, up to one read's worth.
        if not self.reading:
            return
        if self.unread:
            size = self.transport.bufferSize
            chunk = bytes(self.unread[:size])
            del self.unread[:size]
            self.protocol.dataReceived(chunk)
        elif self.clientFinished and not self.eofSeen:
            self.eofSeen = True
            self.transport.stopReading()
            self.protocol.readConnectionLost()

    @precondition(lambda self: not self.lost)
    @rule(size=st.integers(0, 4 * READ_SIZE))
    def clientReads(self, size: int) -> None:
        if not self.writing:
            return
        self.transport.accepting += size
        if self.transport.doWrite() is not None:
            self._lose(Failure(ConnectionDone()))

    @precondition(lambda self: not self.clientFinished and not self.lost)
    @rule()
    def clientHalfCloses(self) -> None:
        self.clientFinished = True

    @precondition(lambda self: not self.lost)
    @rule()
    def clientResets(self) -> None:
        self.reset = True
        self._lose(Failure(ConnectionLost("Connection reset by peer")))

    @rule(seconds=st.sampled_from([0.01, 0.5, 3.0, 31.0]))
    def timePasses(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if not self.lost and self.transport.aborted:
            # Aborted (idle): the model's reactor delivers the loss.
            self._lose(Failure(ConnectionLost()))

    @invariant()
    def echoIsAPrefixOfWhatWasSent(self) -> None:
        delivered = self.transport.delivered
        assert self.sent[: len(delivered)] == delivered

    @invariant()
    def serverHoldsAtMost128KiB(self) -> None:
        # Twisted's own path: pause past 64 KiB, plus one 64 KiB read.  The
        # direct path: pause at any backlog, which is one 128 KiB read.
        assert self.transport.held <= 128 * 1024, self.transport.held

    @invariant()
    def readingStopsOnlyForABacklogOrAClose(self) -> None:
        if not self.lost and not self.reading and not self.eofSeen:
            assert self.protocol._paused or self.transport.disconnecting

    @invariant()
    def booksMatch(self) -> None:
        assert (self.protocol in self.factory.connections) == (not self.lost)

    def teardown(self) -> None:
        if self.lost:
            assert self.factory.connections == set()
            assert self.clock.getDelayedCalls() == []
            return
        # The client finishes sending and reads everything: every byte it
        # sent comes back, then the server closes.
        self.clientFinished = True
        for _ in range(10_000):
            if self.lost:
                break
            self.serverReads()
            self.clientReads(4 * READ_SIZE)
        assert self.lost
        if not self.protocol._closeReason or "idle" not in self.protocol._closeReason:
            assert self.transport.delivered == self.sent
        assert self.factory.connections == set()
        assert self.clock.getDelayedCalls() == []


class DirectEchoModel(EchoModel):
    direct = True


class EchoModelTests(SynchronousTestCase):
    def test_model(self) -> None:
        EchoModel.TestCase("runTest").runTest()

    def test_directSendModel(self) -> None:
        DirectEchoModel.TestCase("runTest").runTest()


EchoModel.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
DirectEchoModel.TestCase.settings = EchoModel.TestCase.settings
