"""
The fast path's UDP port (L{echotwist._fast.udp.EchoPassPort}): the
datagram echo's own pass of reads on a real loopback socket, what it
answers in its loop, and that every guard holds there.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import select
import socket
import sys
import weakref
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from echotwist._fast.mmsg import available
from echotwist._fast.udp import ASK_UP_TO, EchoPassPort
from echotwist.datagram import (
    DATAGRAMS_PER_READ,
    LOOP_KEY_BYTES,
    LOOP_TOLERANCE,
    LOOP_WINDOW,
    DatagramEcho,
    DatagramPolicy,
    DatagramPort,
    formatSource,
)
from tests._tools import requireRoot
from tests.test_datagram import _Collect


class _BatchPassPort(EchoPassPort):
    """
    The fast path's port reading by batches every pass, even after a pass
    of one datagram (see L{EchoPassPort.onePasses}).
    """

    onePasses = 0


class _OneAtATimePort(EchoPassPort):
    """
    The fast path's port that, once a pass by batches has read one
    datagram, reads one datagram a pass from then on.

    @cvar made: how many passes of one datagram ports of this class made.
    """

    onePasses = sys.maxsize
    made = 0

    def readPass(self) -> bool:
        if self._onesLeft:
            _OneAtATimePort.made += 1
        return super().readPass()


class _OnesPort(_OneAtATimePort):
    """
    The fast path's port that reads one datagram a pass after any pass by
    batches that left none queued, whatever it read: nearly every datagram
    after the first takes the passes of one datagram, for the tests that
    compare them with the protocol's own path over any traffic (a pass by
    batches reads exactly one datagram in few scripts).  Not after a pass
    that read its bound: what is left is the next pass's, as for a port
    that reads every queued datagram up to the bound (see L{_passOf}).
    """

    def _batchPass(self, echo: DatagramEcho, batches: Any) -> bool:
        clean = super()._batchPass(echo, batches)
        if not self._onesLeft and not _queued(self):
            self._ones(echo)
        return clean


def _queued(port: DatagramPort) -> bool:
    """
    Whether a datagram is queued at C{port}'s socket.
    """
    return bool(select.select([port.fileno()], [], [], 0)[0])


def _passOf(port: DatagramPort, reads: int) -> bool:
    """
    One pass of C{port}'s reads, as a port that reads every queued
    datagram up to C{reads} a pass makes it: for a port reading one
    datagram a pass (see L{EchoPassPort.onePasses}), as many passes as
    there are datagrams queued, up to C{reads}, at the same time.

    A port of the datagram echo's own (L{DatagramPort}) makes its pass.

    @return: whether every datagram of those passes was answered in them.
    """
    if not isinstance(port, EchoPassPort):
        port.doRead()
        return False
    clean = port.readPass()
    passes = 1
    while passes < reads and getattr(port, "_onesLeft", 0) and _queued(port):
        clean = port.readPass() and clean
        passes += 1
    return bool(clean)


def _writeRaisesFor(port: DatagramPort, datagram: bytes) -> None:
    """
    Make C{port}'s write raise, for C{datagram}, what a bug in answering it
    would raise; other datagrams it writes as before.
    """
    write = port.write

    def raising(data: bytes, addr: Any) -> Any:
        if data == datagram:
            raise RuntimeError("a bug in answering")
        return write(data, addr)

    port.write = raising  # type: ignore[method-assign]


class _PassTests:
    """
    The datagram echo's own pass of reads (L{EchoPassPort.readPass}, the
    fast path's UDP port), on a real loopback socket: what it answers in
    its loop, and that every guard holds there, each refusal counted and
    logged as the protocol would.  Run for the pass by batches
    (C{recvmmsg}/C{sendmmsg}), for the passes of one datagram each that
    follow a pass by batches of one, and for the pass by
    C{recvfrom}/C{sendto}.
    """

    portType: type[DatagramPort] = EchoPassPort
    #: Whether the port reads by batches (see echotwist._fast.mmsg).
    batches = True

    # SynchronousTestCase's, for the type checker.
    addCleanup: Any
    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
    assertIn: Any
    assertLessEqual: Any
    assertIsNotNone: Any
    flushLoggedErrors: Any

    def setUp(self) -> None:
        self.clock = Clock()
        self.listen(rate=0)
        self.client = self.clientSocket(0)

    def listen(self, rate: float) -> None:
        self.policy = DatagramPolicy(rate=rate, clock=self.clock)
        self.port = self.portType(
            0, DatagramEcho(self.policy), "127.0.0.1", 65536, MemoryReactorClock()
        )
        self.port.startListening()
        self.addCleanup(self.port.socket.close)
        if self.batches:
            self.assertIsNotNone(self.port._batches)
        else:
            self.port._batches = None  # type: ignore[attr-defined]

    def aPass(self) -> bool:
        """
        A pass of the port's, as a port reading by batches makes it (see
        L{_passOf}).
        """
        return _passOf(self.port, self.port.maxDatagramsPerRead)

    def clientSocket(self, port: int, host: str = "127.0.0.1") -> socket.socket:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind((host, port))
        return client

    def send(self, datagrams: list[bytes], client: socket.socket | None = None) -> None:
        # Linux queues a loopback datagram at the receiver within sendto.
        for datagram in datagrams:
            (client or self.client).sendto(
                datagram, ("127.0.0.1", self.port.getHost().port)
            )

    def answers(self, client: socket.socket | None = None) -> list[bytes]:
        """
        Every answer queued at C{client}.
        """
        found = []
        while True:
            try:
                found.append((client or self.client).recv(65536, socket.MSG_DONTWAIT))
            except BlockingIOError:
                return found

    def judged(self) -> None:
        """
        A first datagram from the client, which the protocol judges.
        """
        self.send([b"hello"])
        self.assertFalse(self.aPass())
        self.assertEqual(self.answers(), [b"hello"])

    def test_answersInItsLoop(self) -> None:
        """
        Once the client's address is judged, a pass answers every datagram
        itself, of any size, and counts them and their bytes.
        """
        self.judged()
        sizes = [0, 1, 1024, 8193, 65507]
        self.send([bytes([n]) * size for n, size in enumerate(sizes)])
        self.assertTrue(self.aPass())
        self.assertEqual(
            self.answers(), [bytes([n]) * size for n, size in enumerate(sizes)]
        )
        self.assertEqual(self.policy.counts, {"answered": 6})
        total = 5 + sum(sizes)
        self.assertEqual(self.policy.bytes, {"received": total, "sent": total})

    def test_overTheRate(self) -> None:
        """
        A datagram past its source's rate is refused in the pass, counted
        and logged; the rest of the pass goes on.
        """
        self.listen(rate=10)
        self.judged()  # the bucket's one token
        self.clock.advance(0.1)  # one more
        with capturedLogs() as events:
            self.send([b"a", b"b", b"c"])
            self.assertFalse(self.aPass())
        self.assertEqual(self.answers(), [b"a"])
        self.assertEqual(self.policy.counts, {"answered": 2, "over the rate limit": 2})
        self.assertEqual(self.policy.bytes, {"received": 8, "sent": 6})
        refused = [e for e in events if e.get("log_namespace") == "echotwist.datagram"]
        self.assertEqual(refused[0]["reason"], "over the rate limit")
        self.assertEqual(refused[0]["peer"], "127.0.0.1")

    def test_addressesTakeTurns(self) -> None:
        """
        Datagrams from two addresses in turn in one pass are each counted
        against their own source's rate: the pass does not take one
        address's verdict, nor its source, for the other's.
        """
        self.listen(rate=10)
        other = self.clientSocket(0, "127.0.0.2")
        self.judged()
        self.send([b"hi"], other)
        self.assertFalse(self.aPass())  # judged: each bucket is empty
        self.clock.advance(0.1)  # one more token each
        with capturedLogs():
            for datagram in (b"a", b"b"):
                self.send([datagram])
                self.send([datagram], other)
            self.assertFalse(self.aPass())
        self.assertEqual(self.answers(), [b"a"])
        self.assertEqual(self.answers(other), [b"hi", b"a"])
        self.assertEqual(self.policy.counts, {"answered": 4, "over the rate limit": 2})

    def test_fromAPrivilegedPort(self) -> None:
        """
        A datagram from a port below 1024 is refused, even from an address
        already judged fit.
        """
        requireRoot("binding a source port below 1024")
        self.judged()
        low = self.lowPortClient()
        self.send([b"storm"], low)
        self.send([b"fine"])
        with capturedLogs() as events:
            self.assertFalse(self.aPass())
        self.assertEqual(self.answers(low), [])
        self.assertEqual(self.answers(), [b"fine"])
        self.assertEqual(
            self.policy.counts, {"answered": 2, "privileged source port": 1}
        )
        self.assertIn("privileged source port", [e.get("reason") for e in events])

    def test_fromAPrivilegedPortOfAnAddressItAnswered(self) -> None:
        """
        A datagram from a port below 1024 is refused even right after the
        pass answered its address from another port: the verdict the pass
        keeps for the last address it answered is the address's, not the
        port's.
        """
        requireRoot("binding a source port below 1024")
        self.judged()
        low = self.lowPortClient()
        self.send([b"fine"])
        self.send([b"storm"], low)
        self.send([b"fine again"])
        with capturedLogs() as events:
            self.assertFalse(self.aPass())
        self.assertEqual(self.answers(low), [])
        self.assertEqual(self.answers(), [b"fine", b"fine again"])
        self.assertEqual(
            self.policy.counts, {"answered": 3, "privileged source port": 1}
        )
        self.assertIn("privileged source port", [e.get("reason") for e in events])

    def lowPortClient(self) -> socket.socket:
        for port in range(1023, 900, -1):
            try:
                return self.clientSocket(port)
            except OSError:
                continue
        raise AssertionError("no free port between 901 and 1023")

    def test_echoLoop(self) -> None:
        """
        The same bytes back from the same peer within the window: answered
        L{LOOP_TOLERANCE} more times, then refused as an echo loop, in the
        pass.
        """
        self.judged()
        self.send([b"ping"] * (LOOP_TOLERANCE + 3))
        with capturedLogs() as events:
            self.assertFalse(self.aPass())
        self.assertEqual(self.answers(), [b"ping"] * (LOOP_TOLERANCE + 1))
        self.assertEqual(
            self.policy.counts, {"answered": LOOP_TOLERANCE + 2, "echo loop": 2}
        )
        self.assertIn("echo loop", [e.get("reason") for e in events])

    def test_echoLoopOfLongDatagrams(self) -> None:
        """
        Long datagrams (past the loop guard's key bytes) coming back are
        refused in the pass as short ones are, after L{LOOP_TOLERANCE}
        more answers; other long ones that begin alike are answered.
        """
        self.judged()
        loop = b"L" * 1024
        self.send([loop] * (LOOP_TOLERANCE + 3))
        with capturedLogs():
            self.assertFalse(self.aPass())
        self.assertEqual(self.answers(), [loop] * (LOOP_TOLERANCE + 1))
        self.assertEqual(
            self.policy.counts, {"answered": LOOP_TOLERANCE + 2, "echo loop": 2}
        )
        self.clock.advance(LOOP_WINDOW * 3)
        others = [b"%04d" % n + b"L" * 1020 for n in range(DATAGRAMS_PER_READ)]
        self.send(others)
        self.assertTrue(self.aPass())
        self.assertEqual(self.answers(), others)

    def test_loopGuardStaysBounded(self) -> None:
        """
        A pass remembers at most as many answers as the loop guard holds
        when every datagram is checked by its call: when the pass's answers
        could fill its newer table, the pass calls it for each, and it
        turns its tables; a loop is caught then too.
        """
        self.judged()
        loops = self.policy.loops
        loops.maxEntries = 8
        for start in range(0, 3 * DATAGRAMS_PER_READ, DATAGRAMS_PER_READ):
            self.send([b"%d" % n for n in range(start, start + DATAGRAMS_PER_READ)])
            self.assertTrue(self.aPass())
            self.assertLessEqual(len(loops), loops.maxEntries)
        self.send([b"again"] * (LOOP_TOLERANCE + 2))
        with capturedLogs():
            self.aPass()
        self.assertEqual(
            len(self.answers()), 3 * DATAGRAMS_PER_READ + LOOP_TOLERANCE + 1
        )

    def test_aPassReadsAtMostTheBound(self) -> None:
        """
        A pass answers at most L{DATAGRAMS_PER_READ} datagrams; the rest
        wait for the next.
        """
        self.judged()
        self.send([b"%d" % n for n in range(DATAGRAMS_PER_READ + 10)])
        self.assertTrue(self.aPass())
        self.assertEqual(self.answers(), [b"%d" % n for n in range(DATAGRAMS_PER_READ)])
        self.assertTrue(self.aPass())
        self.assertEqual(
            self.answers(),
            [b"%d" % n for n in range(DATAGRAMS_PER_READ, DATAGRAMS_PER_READ + 10)],
        )

    def test_sendFailed(self) -> None:
        """
        An answer C{sendto} cannot send goes through the transport's write,
        and fails as the protocol counts it: not answered, forgotten by the
        loop guard.
        """
        self.judged()
        self.send([b"x"])
        real = self.port.socket
        self.port.socket = _FailingSend(real)  # type: ignore[assignment]
        self.addCleanup(setattr, self.port, "socket", real)
        if self.batches:
            self.port._batches.sendmmsg = _failing(errno.ENOBUFS)  # type: ignore[attr-defined]
        with capturedLogs():
            self.assertFalse(self.aPass())
        self.assertEqual(self.policy.counts, {"answered": 1, "send failed": 1})
        self.assertEqual(len(self.policy.loops), 1)  # "hello" only

    def test_otherProtocols(self) -> None:
        """
        A port of any other protocol hands each datagram to it.
        """
        protocol = _Collect()
        self.port.protocol = protocol
        self.send([b"a", b"b"])
        self.assertFalse(self.aPass())
        self.assertEqual([d for d, _ in protocol.received], [b"a", b"b"])
        self.assertEqual(self.answers(), [])


class RecvfromPassTests(_PassTests, SynchronousTestCase):
    """
    L{_PassTests} for the pass by C{recvfrom} and C{sendto} (where the C
    library has no C{recvmmsg}, and over IPv6), and how it ends.
    """

    batches = False

    def counted(self) -> _CountingReads:
        """
        Count the port's reads from now on.
        """
        real = self.port.socket
        counting = _CountingReads(real)
        self.port.socket = counting  # type: ignore[assignment]
        self.addCleanup(setattr, self.port, "socket", real)
        return counting

    def test_afterAShortPassItAsksFirst(self) -> None:
        """
        After a pass of L{ASK_UP_TO} datagrams or fewer, the next pass asks
        the kernel whether a datagram is queued before each read after its
        first, and does not read into EAGAIN; after a longer one, the next
        pass reads until EAGAIN.
        """
        self.judged()  # one datagram: the next pass asks
        reads = self.counted()
        self.send([b"%d" % n for n in range(ASK_UP_TO + 1)])
        self.assertTrue(self.port.readPass())
        self.assertEqual(reads.calls, ASK_UP_TO + 1)
        self.send([b"x"])
        self.assertTrue(self.port.readPass())
        self.assertEqual(reads.calls, ASK_UP_TO + 1 + 2)  # and its EAGAIN
        self.assertEqual(len(self.answers()), ASK_UP_TO + 2)

    def test_anAskingPassReadsEmptyDatagrams(self) -> None:
        """
        An empty datagram is a queued datagram to an asking pass (C{FIONREAD}
        would say 0 for it, as for none): the pass reads and answers it and
        the ones behind it, and then asks once more.
        """
        self.judged()
        reads = self.counted()
        self.send([b"a", b"", b"b"])
        self.assertTrue(self.port.readPass())
        self.assertEqual(self.answers(), [b"a", b"", b"b"])
        self.assertEqual(reads.calls, 3)


class BatchPassTests(_PassTests, SynchronousTestCase):
    """
    L{_PassTests} for the pass by batches (L{echotwist._fast.mmsg}), and
    what only it does: one system call each way a pass, and a C{sendmmsg}
    that sends in part, is interrupted, or fails for one answer.  Every
    pass is by batches here (see L{OnePassTests} for what follows a pass
    of one datagram).
    """

    portType = _BatchPassPort

    if not available():
        skip = "no recvmmsg/sendmmsg here"

    def batchCalls(self) -> list[str]:
        """
        Record the batches' system calls from now on.
        """
        batches = self.port._batches  # type: ignore[attr-defined]
        calls: list[str] = []
        for name in ("recvmmsg", "sendmmsg"):
            real = getattr(batches, name)

            def call(*args: Any, real: Any = real, name: str = name) -> int:
                calls.append(name)
                return int(real(*args))

            setattr(batches, name, call)
        return calls

    def test_oneCallEachWay(self) -> None:
        """
        A pass reads every queued datagram with one C{recvmmsg} and sends
        the answers with one C{sendmmsg}.
        """
        self.judged()
        calls = self.batchCalls()
        self.send([b"%d" % n for n in range(5)])
        self.assertTrue(self.port.readPass())
        self.assertEqual(calls, ["recvmmsg", "sendmmsg"])
        self.assertEqual(self.answers(), [b"%d" % n for n in range(5)])
        self.assertEqual(self.policy.counts, {"answered": 6})

    def test_nothingQueued(self) -> None:
        """
        A pass with nothing queued reads nothing, sends nothing, and says
        so quietly; so does one whose read an earlier answer's ICMP error
        or a signal ends.
        """
        self.judged()
        self.assertTrue(self.port.readPass())
        batches = self.port._batches  # type: ignore[attr-defined]
        for error in (errno.ECONNREFUSED, errno.EINTR):
            batches.recvmmsg = _failing(error)
            self.assertTrue(self.port.readPass())
        self.assertEqual(self.policy.counts, {"answered": 1})

    def test_readFails(self) -> None:
        """
        Any other error of the read is raised, as the pass by C{recvfrom}
        raises it, for the reactor to log.
        """
        self.port._batches.recvmmsg = _failing(errno.EBADF)  # type: ignore[attr-defined]
        error = self.assertRaises(OSError, self.port.readPass)
        self.assertEqual(error.errno, errno.EBADF)

    def test_sentInPart(self) -> None:
        """
        A C{sendmmsg} that sends fewer answers than asked is called again
        for the rest: every answer leaves once, in order.
        """
        self.judged()
        batches = self.port._batches  # type: ignore[attr-defined]
        real = batches.sendmmsg
        batches.sendmmsg = lambda at, count, flags: real(at, 1, flags)
        self.send([b"%d" % n for n in range(7)])
        self.assertTrue(self.port.readPass())
        self.assertEqual(self.answers(), [b"%d" % n for n in range(7)])
        self.assertEqual(self.policy.counts, {"answered": 8})

    def test_interrupted(self) -> None:
        """
        A C{sendmmsg} a signal interrupts is called again.
        """
        self.judged()
        batches = self.port._batches  # type: ignore[attr-defined]
        real, interrupted = batches.sendmmsg, _failing(errno.EINTR)
        calls = []

        def once(*args: Any) -> int:
            calls.append(args)
            return int((interrupted if len(calls) == 1 else real)(*args))

        batches.sendmmsg = once
        self.send([b"a", b"b"])
        self.assertTrue(self.port.readPass())
        self.assertEqual(len(calls), 2)
        self.assertEqual(self.answers(), [b"a", b"b"])
        self.assertEqual(self.policy.counts, {"answered": 3})

    def test_oneAnswerFails(self) -> None:
        """
        An answer C{sendmmsg} cannot send goes through the transport's
        write, as one C{sendto} cannot send does; the answers after it
        are sent on by C{sendmmsg}.
        """
        self.judged()
        batches = self.port._batches  # type: ignore[attr-defined]
        real, fails = batches.sendmmsg, _failing(errno.ENOBUFS)
        third = batches.answersAt[2]

        def failsTheThird(at: Any, count: int, flags: int) -> int:
            # Two answers a call at most, and the third fails (the kernel
            # reports a message's error only when it is a call's first).
            if at is third:
                return int(fails(at, count, flags))
            return int(real(at, min(count, 2), flags))

        batches.sendmmsg = failsTheThird
        self.send([b"%d" % n for n in range(5)])
        self.assertFalse(self.port.readPass())
        self.assertEqual(self.answers(), [b"0", b"1", b"3", b"4", b"2"])
        self.assertEqual(self.policy.counts, {"answered": 6})
        self.assertEqual(self.policy.bytes, {"received": 10, "sent": 10})

    def failFirstSend(self) -> None:
        """
        Make the port's C{sendmmsg} fail (ENOBUFS) for the pass's first
        answer, and the transport's write raise an unexpected error for
        it: what a bug in answering it would raise.
        """
        batches = self.port._batches  # type: ignore[attr-defined]
        real, fails = batches.sendmmsg, _failing(errno.ENOBUFS)
        first = batches.answersAt[0]
        batches.sendmmsg = lambda at, count, flags: int(
            (fails if at is first else real)(at, count, flags)
        )
        _writeRaisesFor(self.port, b"a")

    def test_answerRaisesMidPass(self) -> None:
        """
        An unexpected error in answering one datagram that C{sendmmsg}
        could not send is logged, and the answers sent with it are not
        sent again when the pass goes on past a datagram for the protocol.
        """
        self.judged()
        other = self.clientSocket(0)
        self.failFirstSend()
        self.send([b"a", b"b"])
        self.send([b"new"], other)
        self.send([b"c"])
        self.assertFalse(self.port.readPass())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.answers(), [b"b", b"c"])
        self.assertEqual(self.answers(other), [b"new"])
        self.assertEqual(self.policy.counts, {"answered": 4})

    def test_answerRaisesAtTheEnd(self) -> None:
        """
        The same error in the pass's last run of answers is logged too:
        the pass returns, and the reactor keeps the port.
        """
        self.judged()
        self.failFirstSend()
        self.send([b"a", b"b"])
        self.assertFalse(self.port.readPass())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.answers(), [b"b"])
        self.assertEqual(self.policy.counts, {"answered": 2})

    def test_listensAgain(self) -> None:
        """
        A port that stops listening lets go of its batches (the buffers
        and the descriptor they read) with its socket; listening again
        reads its new socket, not a socket that took the old descriptor.
        """
        self.judged()
        old = weakref.ref(self.port._batches)  # type: ignore[attr-defined]
        fd = self.port.socket.fileno()
        self.port.stopListening()
        self.port.reactor.advance(0)  # type: ignore[attr-defined]
        gc.collect()
        self.assertIsNone(old())
        squatter = self.clientSocket(0)
        self.assertEqual(squatter.fileno(), fd)
        self.client.sendto(b"not yours", squatter.getsockname())
        self.port.startListening()
        self.addCleanup(self.port.socket.close)
        self.send([b"again"])
        self.assertTrue(self.port.readPass())  # the policy judged it before
        self.assertEqual(self.answers(), [b"again"])
        self.assertEqual(squatter.recv(100, socket.MSG_DONTWAIT), b"not yours")

    def test_answersAroundTheProtocol(self) -> None:
        """
        The answers the pass has gathered are sent before a datagram goes
        to the protocol, so each peer's answers leave in order.
        """
        self.judged()
        other = self.clientSocket(0, "127.0.0.2")
        calls = self.batchCalls()
        self.send([b"a"])
        self.send([b"new"], other)
        self.send([b"b"])
        self.assertFalse(self.port.readPass())
        self.assertEqual(calls, ["recvmmsg", "sendmmsg", "sendmmsg"])
        self.assertEqual(self.answers(), [b"a", b"b"])
        self.assertEqual(self.answers(other), [b"new"])

    def test_answersAfterTheProtocolInOneCall(self) -> None:
        """
        After a datagram went to the protocol, the pass calls the loop
        guard for each datagram, and still gathers the answers of other
        bytes into one C{sendmmsg}; answers of the same bytes are sent
        before the guard judges the next of them (see
        L{AsTheProtocolAnyTrafficTests.test_repeatsWhoseAnswersFail}).
        """
        self.judged()
        other = self.clientSocket(0, "127.0.0.2")
        calls = self.batchCalls()
        self.send([b"a"])
        self.send([b"new"], other)
        self.send([b"b", b"c", b"d", b"d", b"e"])
        self.assertFalse(self.port.readPass())
        self.assertEqual(calls, ["recvmmsg"] + ["sendmmsg"] * 3)
        self.assertEqual(self.answers(), [b"a", b"b", b"c", b"d", b"d", b"e"])
        self.assertEqual(self.answers(other), [b"new"])

    def test_manyPeers(self) -> None:
        """
        Past L{Batches.peerCache} peers the cache of peers' addresses
        starts again: memory stays bounded, and each answer still goes to
        its own peer.
        """
        batches = self.port._batches  # type: ignore[attr-defined]
        batches.peerCache = 2
        clients = [self.clientSocket(0) for _ in range(5)]
        for round in range(2):
            for n, client in enumerate(clients):
                self.send([b"%d-%d" % (round, n)], client)
            self.port.readPass()
            for n, client in enumerate(clients):
                self.assertEqual(self.answers(client), [b"%d-%d" % (round, n)])
            self.assertLessEqual(len(batches.known), 2)


class _Calls:
    """
    A port's socket, recording its calls of C{recvfrom} and C{sendto},
    and those of its batches' C{recvmmsg} and C{sendmmsg}, in C{calls};
    its C{recvfrom} fails with C{readError} while that is set, and its
    C{sendto} with C{sendError}.
    """

    readError = sendError = 0

    def __init__(self, port: EchoPassPort) -> None:
        self.calls: list[str] = []
        self.real = port.socket
        port.socket = self  # type: ignore[assignment]
        batches = port._batches
        assert batches is not None
        for name in ("recvmmsg", "sendmmsg"):
            real = getattr(batches, name)

            def call(*args: Any, real: Any = real, name: str = name) -> int:
                self.calls.append(name)
                return int(real(*args))

            setattr(batches, name, call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        self.calls.append("recvfrom")
        if self.readError:
            raise OSError(self.readError, os.strerror(self.readError))
        return self.real.recvfrom(size)  # type: ignore[no-any-return]

    def sendto(self, data: bytes, addr: Any) -> int:
        self.calls.append("sendto")
        if self.sendError:
            raise OSError(self.sendError, os.strerror(self.sendError))
        return self.real.sendto(data, addr)


class OnePassTests(_PassTests, SynchronousTestCase):
    """
    L{_PassTests} for the passes that read one datagram each, by
    C{recvfrom} and C{sendto}, after a pass by batches that read one
    (L{EchoPassPort.onePasses}); and when the port reads so.
    """

    if not available():
        skip = "no recvmmsg/sendmmsg here"

    portType = _OneAtATimePort

    def listen(self, rate: float) -> None:
        super().listen(rate)
        self.recorded = _Calls(self.port)  # type: ignore[arg-type]
        self.addCleanup(setattr, self.port, "socket", self.recorded.real)

    def judged(self) -> None:
        """
        The first datagram, read by batches and answered by the protocol:
        one datagram, so the port reads one a pass from then on.
        """
        super().judged()
        self.assertEqual(self.recorded.calls, ["recvmmsg", "sendto"])
        self.assertTrue(self.port._onesLeft)  # type: ignore[attr-defined]

    def aPass(self) -> bool:
        """
        L{_PassTests.aPass}, and not a call through C{ctypes} in it once the
        port reads one datagram a pass.
        """
        ones = self.port._onesLeft  # type: ignore[attr-defined]
        before = len(self.recorded.calls)
        clean = super().aPass()
        if ones:
            calls = self.recorded.calls[before:]
            self.assertNotIn("recvmmsg", calls)
            self.assertNotIn("sendmmsg", calls)
        return clean

    def test_oneAtATime(self) -> None:
        """
        After a pass by batches of one datagram, each of the next
        L{EchoPassPort.onePasses} passes reads one datagram with
        C{recvfrom} and answers it with C{sendto}, though more are queued
        (they wait for the next pass); then a pass by batches reads what
        is queued.
        """
        self.listen(0)
        self.port.onePasses = 3  # type: ignore[attr-defined]
        self.client = self.clientSocket(0)
        self.judged()
        calls = self.recorded.calls
        self.send([b"a", b"b"])
        self.assertTrue(self.port.readPass())
        self.assertEqual(calls[2:], ["recvfrom", "sendto"])
        self.assertEqual(self.answers(), [b"a"])
        self.assertTrue(self.port.readPass())
        self.assertEqual(self.answers(), [b"b"])
        self.send([b"c", b"d", b"e"])
        self.assertTrue(self.port.readPass())
        self.assertEqual(self.answers(), [b"c"])
        self.assertEqual(calls[2:], ["recvfrom", "sendto"] * 3)
        self.assertTrue(self.port.readPass())
        self.assertEqual(calls[8:], ["recvmmsg", "sendmmsg"])
        self.assertEqual(self.answers(), [b"d", b"e"])
        self.assertEqual(self.policy.counts, {"answered": 6})
        self.assertEqual(self.policy.bytes, {"received": 10, "sent": 10})

    def test_severalKeepTheBatches(self) -> None:
        """
        After a pass by batches of several datagrams, the next pass reads
        by batches too, and after that one, if it read one datagram, the
        passes read one each.
        """
        self.listen(0)
        self.client = self.clientSocket(0)
        self.send([b"hello", b"hi"])  # the protocol's, then the pass's
        self.assertFalse(self.port.readPass())
        self.send([b"a", b"b"])
        self.assertTrue(self.port.readPass())
        self.send([b"c"])
        self.assertFalse(self.port._onesLeft)  # type: ignore[attr-defined]
        self.assertTrue(self.port.readPass())
        self.assertEqual(
            self.recorded.calls,
            ["recvmmsg", "sendto", "sendmmsg"] + ["recvmmsg", "sendmmsg"] * 2,
        )
        self.assertEqual(self.answers(), [b"hello", b"hi", b"a", b"b", b"c"])
        self.assertEqual(self.port._onesLeft, self.port.onePasses)  # type: ignore[attr-defined]

    def test_nothingQueued(self) -> None:
        """
        A pass of one datagram that finds none, or whose read an earlier
        answer's ICMP error or a signal ends, says so quietly; any other
        error of the read is raised, for the reactor to log.
        """
        self.judged()
        self.assertTrue(self.port.readPass())
        for error in (errno.ECONNREFUSED, errno.EINTR):
            self.recorded.readError = error
            self.assertTrue(self.port.readPass())
        self.recorded.readError = errno.EBADF
        raised = self.assertRaises(OSError, self.port.readPass)
        self.assertEqual(raised.errno, errno.EBADF)
        self.assertEqual(self.recorded.calls[2:], ["recvfrom"] * 4)
        self.assertEqual(self.policy.counts, {"answered": 1})

    def test_answerRaises(self) -> None:
        """
        An unexpected error in answering the pass's datagram is logged,
        and the next pass answers the next.
        """
        self.judged()
        _writeRaisesFor(self.port, b"a")
        self.recorded.sendError = errno.ENOBUFS  # so the port's write is called
        self.send([b"a"])
        self.assertFalse(self.port.readPass())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.recorded.sendError = 0
        self.send([b"b"])
        self.assertTrue(self.port.readPass())
        self.assertEqual(self.answers(), [b"b"])
        self.assertEqual(self.policy.counts, {"answered": 2})

    def test_listensAgain(self) -> None:
        """
        A port that stops listening while it reads one datagram a pass,
        and listens again, reads by batches first, as a port that starts
        does: its new socket's datagrams may come several at a time.
        """
        self.judged()
        self.port.stopListening()
        self.port.reactor.advance(0)  # type: ignore[attr-defined]
        self.port.startListening()
        self.addCleanup(self.port.socket.close)
        again = _Calls(self.port)  # type: ignore[arg-type]
        self.send([b"again"])
        self.assertTrue(self.port.readPass())  # the policy judged it before
        self.assertEqual(again.calls, ["recvmmsg", "sendmmsg"])
        self.assertEqual(self.answers(), [b"again"])
        # And after that pass of one, one a pass again.
        self.send([b"more"])
        self.assertTrue(self.port.readPass())
        self.assertEqual(again.calls[2:], ["recvfrom", "sendto"])
        self.assertEqual(self.answers(), [b"more"])


class _CountingReads:
    """
    A socket that counts the calls of its recvfrom.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        self.calls += 1
        return self._sock.recvfrom(size)


def _failing(error: int) -> Any:
    """
    A stand-in for C{recvmmsg} or C{sendmmsg} that fails with C{error},
    as the C call does: -1, and C{errno} set (ctypes' copy of it).
    """

    def fail(*args: Any) -> int:
        ctypes.set_errno(error)
        return -1

    return fail


class _FailingSend:
    """
    A socket whose sendto fails with ENOBUFS.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendto(self, data: bytes, addr: Any) -> int:
        raise OSError(errno.ENOBUFS, "No buffer space available")


class _RecvfromPassPort(EchoPassPort):
    """
    The fast path's port reading by C{recvfrom} even where it could read by
    batches.
    """

    def startListening(self) -> None:
        super().startListening()
        self._batches = None


class AsTheProtocolCountsTests(SynchronousTestCase):
    """
    The same traffic through the fast path's port (its pass of reads) and
    through the datagram echo's own port (every datagram to the protocol):
    the same answers, and the same counts of answers, refusals and bytes.
    """

    def traffic(
        self, portType: type[DatagramPort], rate: float
    ) -> tuple[dict[str, int], dict[str, int], list[tuple[int, bytes]], int]:
        """
        Run a script of traffic through a port of C{portType}: the policy's
        counts and bytes, the answers (by client) and the loop guard's size.
        """
        clock = Clock()
        policy = DatagramPolicy(rate=rate, clock=clock)
        port = portType(
            0, DatagramEcho(policy), "127.0.0.1", 65536, MemoryReactorClock()
        )
        port.startListening()
        self.addCleanup(port.socket.close)
        # Two ports of one address, and another address (its own source).
        clients = one, two, other = [
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in "123"
        ]
        for client, host in zip(
            clients, ["127.0.0.1"] * 2 + ["127.0.0.2"], strict=True
        ):
            self.addCleanup(client.close)
            client.bind((host, 0))
        to = ("127.0.0.1", port.getHost().port)
        long = b"L" * 1024
        key = b"K" * LOOP_KEY_BYTES
        # Addresses in turn within one pass, each past its source's burst,
        # with datagrams of the loop guard's key bytes and one more.
        datagrams = [key, key + b"!", key, key] + [b"%d" % n for n in range(8)]
        turns = [(other, b"hi"), (one, b"hi")] + [
            (client, datagram) for datagram in datagrams for client in (one, other)
        ]
        script: list[
            tuple[socket.socket, list[bytes]]
            | list[tuple[socket.socket, bytes]]
            | float
        ] = [
            (one, [b"hello"]),
            (one, [b"ping"] * (LOOP_TOLERANCE + 3)),
            (two, [b"ping"] * 2 + [b""] * 3),
            (
                one,
                [long] * (LOOP_TOLERANCE + 2) + [b"%04d" % n + long for n in range(9)],
            ),
            LOOP_WINDOW * 3,
            (one, [b"ping", b"x" * 65507, b"ping"]),
            (two, [b"%d" % n for n in range(DATAGRAMS_PER_READ)]),
            1.0,
            (one, [b"ping"] * (LOOP_TOLERANCE + 3)),
            LOOP_WINDOW * 3,
            turns[: DATAGRAMS_PER_READ // 2],
            turns[DATAGRAMS_PER_READ // 2 :],
        ]
        answers: list[tuple[int, bytes]] = []
        with capturedLogs():
            for step in script:
                if isinstance(step, float):
                    clock.advance(step)
                    continue
                if isinstance(step, list):
                    sends = step
                else:
                    sends = [(step[0], datagram) for datagram in step[1]]
                for client, datagram in sends:
                    client.sendto(datagram, to)
                _passOf(port, port.maxDatagramsPerRead)
                for which, client in enumerate(clients):
                    while True:
                        try:
                            answer = client.recv(65536, socket.MSG_DONTWAIT)
                        except BlockingIOError:
                            break
                        answers.append((which, answer))
        return policy.counts, policy.bytes, answers, len(policy.loops)

    def test_noRateLimit(self) -> None:
        fast = self.traffic(_BatchPassPort, 0)
        self.assertEqual(fast, self.traffic(DatagramPort, 0))
        self.assertIn("echo loop", fast[0])

    def test_noRateLimitOneAtATime(self) -> None:
        made = _OneAtATimePort.made
        fast = self.traffic(_OneAtATimePort, 0)
        self.assertGreater(_OneAtATimePort.made, made)
        self.assertEqual(fast, self.traffic(DatagramPort, 0))
        self.assertIn("echo loop", fast[0])

    def test_noRateLimitByRecvfrom(self) -> None:
        fast = self.traffic(_RecvfromPassPort, 0)
        self.assertEqual(fast, self.traffic(DatagramPort, 0))

    def test_rateLimitByRecvfrom(self) -> None:
        fast = self.traffic(_RecvfromPassPort, 100)
        self.assertEqual(fast, self.traffic(DatagramPort, 100))

    def test_rateLimit(self) -> None:
        fast = self.traffic(_BatchPassPort, 100)
        self.assertEqual(fast, self.traffic(DatagramPort, 100))
        self.assertIn("over the rate limit", fast[0])
        self.assertIn("echo loop", fast[0])

    def test_rateLimitOneAtATime(self) -> None:
        made = _OneAtATimePort.made
        fast = self.traffic(_OneAtATimePort, 100)
        self.assertGreater(_OneAtATimePort.made, made)
        self.assertEqual(fast, self.traffic(DatagramPort, 100))
        self.assertIn("over the rate limit", fast[0])
        self.assertIn("echo loop", fast[0])


#: What L{AsTheProtocolAnyTrafficTests}' clients send: empty, short,
#: exactly the loop guard's key bytes and one more, long, long ones that
#: begin alike, and one whose answer never leaves (see _SendsFail).
_DATAGRAMS = [
    b"",
    b"a",
    b"ping",
    b"K" * LOOP_KEY_BYTES,
    b"K" * LOOP_KEY_BYTES + b"!",
    b"L" * 1024,
    b"0001" + b"L" * 1020,
    b"F",
]
#: Their clients' addresses: two ports of one address, two other
#: addresses, and (as root) a privileged port of the first.
_HOSTS = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]
_PRIVILEGED = 4


class _SendsFail:
    """
    A port's socket, and its batches' C{sendmmsg}, failing with ENOBUFS to
    send an answer starting with C{F}, every answer while C{on}, and the
    next answer once C{once} is set (its C{sendto}, the protocol's one
    try, or its C{sendmmsg} and then its C{sendto}, the batch pass's two).
    """

    on = once = False

    def __init__(self, port: DatagramPort) -> None:
        self.real = port.socket
        port.socket = self  # type: ignore[assignment]
        batches = getattr(port, "_batches", None)
        if batches is not None:
            self.batches = batches
            self.answersAt = {id(at): i for i, at in enumerate(batches.answersAt)}
            self.sendmmsg = batches.sendmmsg
            batches.sendmmsg = self.failingSendmmsg

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def fails(self, datagram: bytes) -> bool:
        return self.on or datagram.startswith(b"F")

    def sendto(self, datagram: bytes, addr: Any) -> int:
        once, self.once = self.once, False
        if once or self.fails(datagram):
            raise OSError(errno.ENOBUFS, "No buffer space available")
        return int(self.real.sendto(datagram, addr))

    def failingSendmmsg(self, at: Any, count: int, flags: int) -> int:
        # As the kernel's: the answers up to the first that fails are sent,
        # and that one's error is reported only when it is the first.
        batches, first = self.batches, self.answersAt[id(at)]
        if self.once:
            return int(_failing(errno.ENOBUFS)())
        sent = 0
        for i in range(first, first + count):
            o = i * batches.size
            if self.fails(batches.memory[o : o + batches.sendLengths[i]]):
                break
            sent += 1
        if not sent:
            return int(_failing(errno.ENOBUFS)())
        return int(self.sendmmsg(at, sent, flags))


_SEND = st.tuples(
    st.just("send"),
    st.integers(0, len(_HOSTS) - 1),
    st.integers(0, len(_DATAGRAMS) - 1),
    st.integers(1, LOOP_TOLERANCE + 2),
)
# Sends weigh most: a pass's datagrams from several clients in turn.
_STEPS = st.one_of(
    _SEND,
    _SEND,
    _SEND,
    _SEND,
    st.just(("pass",)),
    st.tuples(st.just("advance"), st.sampled_from([0.01, LOOP_WINDOW, 0.5])),
    st.tuples(st.just("fail"), st.booleans()),
    st.just(("failOnce",)),
)


class AsTheProtocolAnyTrafficTests(SynchronousTestCase):
    """
    Any traffic through the fast path's port, by batches or by
    C{recvfrom}, and through the datagram echo's own port (every datagram
    to the protocol): the same answers to each client in the same order,
    the same counts of answers, refusals and bytes, the same refusals and
    failed sends logged in the same order, and a loop guard of the same
    size.  The policy and the port
    are made small, so that a few datagrams churn the verdicts, the rate
    limiter's sources, the batches' peers and the loop guard's tables,
    and split a burst over passes; and answers fail to be sent, some
    always, all for a while.
    """

    def traffic(
        self, portType: type[DatagramPort], script: list[Any], rate: float, reads: int
    ) -> tuple[Any, ...]:
        clock = Clock()
        policy = DatagramPolicy(rate=rate, clock=clock, maxSources=2)
        policy.loops.maxEntries = 24
        port = portType(
            0, DatagramEcho(policy), "127.0.0.1", 65536, MemoryReactorClock()
        )
        port.maxDatagramsPerRead = reads
        port.startListening()
        # Closed as each run ends: an example is a run, and there are
        # only so many ports below 1024.
        closing = [port.socket]
        try:
            return self.play(port, policy, clock, closing, script, reads)
        finally:
            for each in closing:
                each.close()

    def play(
        self,
        port: DatagramPort,
        policy: DatagramPolicy,
        clock: Clock,
        closing: list[socket.socket],
        script: list[Any],
        reads: int,
    ) -> tuple[Any, ...]:
        batches = getattr(port, "_batches", None)
        if batches is not None:
            batches.peerCache = 2
        sends = _SendsFail(port)
        to = ("127.0.0.1", port.getHost().port)
        clients = []
        for n, host in enumerate(_HOSTS):
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            closing.append(client)
            clients.append(client)
            if n != _PRIVILEGED:
                client.bind((host, 0))
            elif os.geteuid() == 0:
                _bindBelow1024(client, host)
        names = {
            formatSource(*client.getsockname()): f"client {n}"
            for n, client in enumerate(clients)
        }
        answers = []
        with capturedLogs() as events:
            # The bound on a pass leaves datagrams queued: passes to end.
            for step in script + [("pass",)] * (len(script) * 4 // reads + 1):
                if step[0] == "send":
                    _, n, datagram, times = step
                    for _ in range(times):
                        clients[n].sendto(_DATAGRAMS[datagram], to)
                elif step[0] == "advance":
                    clock.advance(step[1])
                elif step[0] == "fail":
                    sends.on = step[1]
                elif step[0] == "failOnce":
                    sends.once = True
                else:
                    _passOf(port, reads)
                    for n, client in enumerate(clients):
                        while True:
                            try:
                                answer = client.recv(65536, socket.MSG_DONTWAIT)
                            except OSError:  # nothing queued, or unbound
                                break
                            answers.append((n, answer))
        logged = [
            (e["log_format"], names.get(str(e.get("peer")), str(e.get("peer"))))
            for e in events
            if e.get("log_namespace") == "echotwist.datagram"
        ]
        return policy.counts, policy.bytes, answers, len(policy.loops), logged

    def assertAsTheProtocol(
        self, portType: type[DatagramPort], script: list[Any], rate: float, reads: int
    ) -> None:
        self.assertEqual(
            self.traffic(portType, script, rate, reads),
            self.traffic(DatagramPort, script, rate, reads),
        )

    @settings(max_examples=300, deadline=None)
    @given(
        # At most 16 x 4 datagrams of 1 KiB queued: within the kernel's
        # default receive buffer, so none is dropped.
        st.lists(_STEPS, max_size=16),
        st.sampled_from([0, 10, 100]),
        st.sampled_from([4, DATAGRAMS_PER_READ]),
        st.sampled_from([_BatchPassPort, _OneAtATimePort, _RecvfromPassPort]),
    )
    def test_anyTraffic(
        self,
        script: list[Any],
        rate: float,
        reads: int,
        portType: type[EchoPassPort],
    ) -> None:
        """
        Any script of sends (bursts from any client), passes, time and
        failing sends: the fast path's port does as the protocol's, reading
        by batches every pass, by batches and then (after a pass that read
        one datagram) one datagram a pass, or by C{recvfrom}.
        """
        if portType is not _RecvfromPassPort and not available():
            raise self.skipTest("no recvmmsg/sendmmsg here")
        if portType is not _BatchPassPort:
            # The passes by recvfrom try a failed answer twice (see
            # test_repeatAfterAnAnswerThatFailedOnce).
            script = [step for step in script if step[0] != "failOnce"]
        self.assertAsTheProtocol(portType, script, rate, reads)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(_STEPS, max_size=16),
        st.sampled_from([0, 10, 100]),
        st.sampled_from([4, DATAGRAMS_PER_READ]),
    )
    def test_anyTrafficOneAtATime(
        self, script: list[Any], rate: float, reads: int
    ) -> None:
        """
        L{test_anyTraffic} for a port that reads one datagram a pass after
        every pass by batches that left none queued (L{_OnesPort}): there,
        a pass by batches reads exactly one datagram in few scripts, so few
        of its datagrams would take the passes of one datagram, and their
        checks.
        """
        if not available():
            raise self.skipTest("no recvmmsg/sendmmsg here")
        # They try a failed answer twice (see test_anyTraffic).
        script = [step for step in script if step[0] != "failOnce"]
        self.assertAsTheProtocol(_OnesPort, script, rate, reads)

    def test_repeatsWhoseAnswersFail(self) -> None:
        """
        Datagrams answered before another with the same bytes, whose
        answers could not be sent, are no answers for the loop guard: the
        pass by batches sends its gathered answers before it asks the loop
        guard of a datagram whose digest it holds.
        """
        for portType in (
            _BatchPassPort,
            _OneAtATimePort,
            _OnesPort,
            _RecvfromPassPort,
        ):
            for script in [
                # Always failing; failing for a while.
                [("send", 0, 1, 1), ("pass",), ("send", 0, 7, 4), ("pass",)],
                [("send", 0, 1, 1), ("pass",), ("fail", True), ("send", 0, 2, 3)]
                + [("fail", False), ("send", 0, 2, 1), ("pass",)],
            ]:
                self.assertAsTheProtocol(portType, script, 0, DATAGRAMS_PER_READ)

    def test_repeatAfterAnAnswerThatFailedOnce(self) -> None:
        """
        A datagram whose answer, gathered without the loop guard's call,
        fails to be sent once, and the same bytes after it: the pass by
        batches sends the first answer before the guard judges the second,
        which is then no echo of it.  (Not for the pass by C{recvfrom},
        which tries a failed answer twice, and sends it the second time.)
        """
        script = [("send", 0, 1, 1), ("pass",), ("failOnce",), ("send", 0, 2, 2)]
        self.assertAsTheProtocol(_BatchPassPort, script + [("pass",)], 0, 32)
        # And a loop of those bytes is caught as soon.
        script += [("pass",), ("send", 0, 2, LOOP_TOLERANCE + 1), ("pass",)]
        self.assertAsTheProtocol(_BatchPassPort, script, 0, 32)


def _bindBelow1024(client: socket.socket, host: str) -> None:
    for port in range(1023, 900, -1):
        try:
            return client.bind((host, port))
        except OSError:
            continue
    raise AssertionError("no free port between 901 and 1023")
