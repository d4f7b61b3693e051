"""
A stateful property test of the stream echo against a model of a TCP peer.

Echo runs over Twisted's real FileDescriptor write buffering and producer
logic; the "kernel" between it and the client is modelled: bytes the client
sent wait until the server reads them (only while it is reading), and echo
leaves the server's buffer only as fast as the client reads.  Hypothesis
interleaves sends, reads on both sides, pauses, half-close, resets and clock
advances, and checks after every step that the client got a prefix of what
it sent (no byte reordered, dropped or duplicated), that the server never
held more than two reads' worth, and at the end that everything came back.
"""

from __future__ import annotations

import random

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
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist import Echo, EchoFactory
from tests._memory import MemoryPeer

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


EchoModel.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)


class DirectEchoModel(EchoModel):
    direct = True


DirectEchoModel.TestCase.settings = EchoModel.TestCase.settings


class EchoModelTests(SynchronousTestCase):
    def test_model(self) -> None:
        EchoModel.TestCase("runTest").runTest()

    def test_directSendModel(self) -> None:
        DirectEchoModel.TestCase("runTest").runTest()
