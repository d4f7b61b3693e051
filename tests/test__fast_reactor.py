"""
echotwist's fast reactor (L{echotwist._fast.reactor}): it polls like
Twisted's epoll reactor and survives an exception from an event; a UDP
port's pass of reads is called directly; and the plain echo of C{twistd
--reactor echotwist}: its loop reads, counts and
sends a small read itself, without calling the transport or the protocol
(L{echotwist._fast.tcp.plainEcho} says which connections qualify).  A real
EchoService on a private L{EchotwistEPollReactor} that the test iterates,
real loopback sockets as clients; every loop is bounded by WAIT.

What must hold: every byte comes back once and in order, whatever the
kernel does to a send; a connection leaves the plain echo whenever its
protocol has something to do (a short send, bulk, pause, close) and comes
back once it is plain again; a descriptor number used again never reaches
the connection that had it before.
"""

from __future__ import annotations

import errno
import gc
import os
import random
import select
import signal
import socket
import struct
import threading
import time
from select import EPOLLIN
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.abstract import FileDescriptor
from twisted.internet.task import Clock, LoopingCall
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from echotwist import Echo
from echotwist._fast import alarm as alarmModule
from echotwist._fast import reactor as reactorModule
from echotwist._fast.alarm import Alarm, makeAlarm
from echotwist._fast.tcp import SplicingServer
from echotwist._fast.udp import EchoPassPort
from echotwist._twisted import EPollParts, closeEpoll, epollParts
from echotwist.datagram import LOOP_TOLERANCE, DatagramEcho, DatagramPolicy
from echotwist.reactor import EchotwistEPollReactor
from echotwist.stream import DIRECT_READ_SIZE, SPLICE_FROM
from tests._twistd import WAIT
from tests.test__fast_tcp import Loopback, pattern


def _replaced(parts: EPollParts, **changed: Any) -> EPollParts:
    """
    C{parts} with some of them changed (a test's scripted poll, or a
    register that refuses).
    """
    kept = {name: getattr(parts, name) for name in EPollParts.__slots__}
    return EPollParts(**{**kept, **changed})


class PlainEchoTests(SynchronousTestCase):
    reactorType = EchotwistEPollReactor

    def setUp(self) -> None:
        self.loop = Loopback(self)
        self.calls = 0
        original = Echo.dataReceived

        def counting(protocol: Echo, data: bytes) -> None:
            self.calls += 1
            original(protocol, data)

        self.patch(Echo, "dataReceived", counting)

    @property
    def plain(self) -> dict[int, Echo]:
        """
        The reactor's plain echoes, by descriptor, now.
        """
        return self.loop.reactor.plainEchoes()

    def fd(self, protocol: Echo) -> int:
        return int(protocol.transport.fileno())

    def closed(self, protocol: Echo) -> bool:
        return protocol not in self.loop.service.factory.connections

    def test_smallReadsSkipTheProtocol(self) -> None:
        """
        The first read goes through the protocol; after it the connection
        is a plain echo, and the reactor echoes the rest itself, counting
        every byte.
        """
        client, protocol = self.loop.connect()
        total = 0
        for n in range(50):
            message = pattern(1 + n * 97, n)
            self.assertEqual(self.loop.echo(client, message), message)
            total += len(message)
        self.assertEqual(self.calls, 1)
        self.assertIs(self.plain[self.fd(protocol)], protocol)
        self.assertEqual(protocol.bytesEchoed, total)

    def test_readsShareOneBuffer(self) -> None:
        """
        The reactor reads every plain echo into one buffer: each connection
        gets back exactly its own bytes, whether the read before was longer,
        shorter or as long, on it or on another connection in the same poll.
        """
        first, firstProtocol = self.loop.connect()
        second, secondProtocol = self.loop.connect()
        for client in (first, second):
            self.assertEqual(self.loop.echo(client, b"warm"), b"warm")
        sizes = [300, 40, 40, 1000, 1, 40, 40]
        for n, size in enumerate(sizes):
            sent = {first: pattern(size, n), second: pattern(sizes[-1 - n], 50 + n)}
            got = {first: bytearray(), second: bytearray()}
            # Both before the reactor looks: one poll, two reads.
            for client, message in sent.items():
                client.sendall(message)

            def arrived(
                got: dict[socket.socket, bytearray] = got,
                sent: dict[socket.socket, bytes] = sent,
            ) -> bool:
                for client, received in got.items():
                    try:
                        received += client.recv(65536)
                    except BlockingIOError:
                        pass
                return all(len(got[c]) >= len(sent[c]) for c in got)

            self.loop.until(arrived, "both echoes")
            self.assertEqual(got, sent)
        self.assertEqual(self.calls, 2, "only the first reads reach Echo")
        for protocol in (firstProtocol, secondProtocol):
            self.assertIs(self.plain[self.fd(protocol)], protocol)

    def test_bulkReadsSkipTheTransport(self) -> None:
        """
        Once a connection is in bulk and the shared pipe exists, the
        reactor splices its reads in and out itself: the transport's doRead
        is not called for each (an 8 MiB echo takes at least 64 reads of
        at most 128 KiB), and every byte is counted.
        """
        reads = []
        original = SplicingServer.doRead

        def counting(transport: SplicingServer) -> Any:
            reads.append(transport)
            return original(transport)

        self.patch(SplicingServer, "doRead", counting)
        client, protocol = self.loop.connect()
        payload = pattern(8 << 20, 5)
        self.assertEqual(self.loop.echo(client, payload), payload)
        self.assertTrue(protocol._bulk)
        self.assertIs(self.loop.reactor._bulkEchoes[self.fd(protocol)][1], protocol)
        self.assertLess(len(reads), 16, "reads that went through the transport")
        self.assertEqual(protocol.bytesEchoed, len(payload))

    def test_bulkLeavesAndSmallReturns(self) -> None:
        client, protocol = self.loop.connect()
        small = pattern(500, 1)
        self.assertEqual(self.loop.echo(client, small), small)
        bulk = pattern(2 << 20, 2)
        self.assertEqual(self.loop.echo(client, bulk), bulk)
        self.assertTrue(protocol._bulk)
        self.assertNotIn(self.fd(protocol), self.plain)
        for _ in range(3):
            self.assertEqual(self.loop.echo(client, small), small)
        self.assertFalse(protocol._bulk)
        self.assertIn(self.fd(protocol), self.plain)
        self.assertNotIn(self.fd(protocol), self.loop.reactor._bulkEchoes)
        self.assertEqual(protocol.bytesEchoed, len(bulk) + 4 * len(small))

    def test_shortSendsPauseAndComeBack(self) -> None:
        """
        A client that reads only when it cannot send, through small
        buffers: the reactor's sends are cut short, the protocol queues the
        rest and pauses reading (the connection leaves the plain echo), the
        transport drains and resumes it, and the next small read makes it
        plain again.  Every byte in order.
        """
        client, protocol = self.loop.connect(buffers=4096)
        payload = pattern(3 << 20, 3)
        self.assertEqual(
            self.loop.echo(client, payload, chunks=[700], lazy=True), payload
        )
        self.assertGreater(protocol._resumes, 0)
        self.assertEqual(protocol.bytesEchoed, len(payload))
        self.assertEqual(self.loop.echo(client, b"x"), b"x")
        self.assertIn(self.fd(protocol), self.plain)

    def injectSend(self, protocol: Echo, send: Any) -> None:
        """
        Have the reactor send this connection's next echo with C{send},
        called as it calls C{os.write}: with the descriptor and the bytes
        (a view of the loop's buffer, good for the call only).  Once:
        every C{send} here leaves the plain echo at its first call, as the
        loop's own write does when it fails or sends short.
        """
        self.assertIn(self.fd(protocol), self.plain)
        reactor = self.loop.reactor

        def once(fd: int, data: memoryview) -> Any:
            reactor._plainWrite = os.write
            return send(fd, data)

        reactor._plainWrite = once

    def test_sendWouldBlock(self) -> None:
        """
        send() raising EAGAIN: the read is queued whole, reading pauses,
        and it all arrives once the transport sends it.
        """
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, b"warm"), b"warm")
        failed = []

        def wouldBlock(fd: int, data: bytes) -> int:
            failed.append(bytes(data))
            raise BlockingIOError(errno.EAGAIN, "try again")

        self.injectSend(protocol, wouldBlock)
        message = pattern(3000, 4)
        self.assertEqual(self.loop.echo(client, message), message)
        self.assertEqual(failed, [message])
        self.assertEqual(protocol._resumes, 1)
        self.assertEqual(protocol.bytesEchoed, 4 + len(message))

    def test_sendTakesPart(self) -> None:
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, b"warm"), b"warm")
        sock = protocol.transport.socket

        def partly(fd: int, data: bytes) -> int:
            return int(sock.send(data[:7]))

        self.injectSend(protocol, partly)
        message = pattern(5000, 5)
        self.assertEqual(self.loop.echo(client, message), message)
        self.assertEqual(protocol.bytesEchoed, 4 + len(message))

    def test_protocolErrorLosesTheConnection(self) -> None:
        """
        An unexpected error in the protocol while it finishes a read the
        reactor began is logged once and loses the connection, as
        Twisted's own read path has it.
        """
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, b"warm"), b"warm")

        def broken(direct: Any, data: bytes, sent: Any) -> None:
            raise RuntimeError("injected")

        self.patch(protocol, "sendRest", broken)
        self.injectSend(protocol, lambda fd, data: 1)
        client.sendall(b"more")
        self.loop.until(lambda: self.closed(protocol), "the loss")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_sendFails(self) -> None:
        """
        send() failing for good (the client is gone): the connection is
        lost, reported by the transport as for any lost write.
        """
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, b"warm"), b"warm")
        sock = protocol.transport.socket

        def broken(fd: int, data: bytes) -> int:
            # Gone for real, so that the transport's own attempt fails too.
            sock.shutdown(socket.SHUT_WR)
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        self.injectSend(protocol, broken)
        client.sendall(b"more")
        self.loop.until(lambda: self.closed(protocol), "the loss")
        self.assertEqual(self.loop.service.factory.closed, 1)

    def test_recvFails(self) -> None:
        """
        The read failing (a reset): the connection is lost, as Twisted's
        own doRead would have it.
        """
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, b"warm"), b"warm")

        def reset(buffer: bytearray) -> int:
            raise ConnectionResetError(errno.ECONNRESET, "reset")

        protocol.loopRead = reset
        client.sendall(b"more")
        self.loop.until(lambda: self.closed(protocol), "the loss")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_halfClose(self) -> None:
        """
        After small reads echoed by the reactor, the client's FIN: the echo
        is complete, then the server closes too.
        """
        client, protocol = self.loop.connect()
        fd = self.fd(protocol)
        payload = pattern(60000, 6)
        self.assertEqual(
            self.loop.echo(client, payload, chunks=[100, 3000], halfClose=True),
            payload,
        )
        self.loop.until(lambda: self.closed(protocol), "close")
        self.assertNotIn(fd, self.plain)

    def test_resetByTheClient(self) -> None:
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, b"warm"), b"warm")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        self.loop.until(lambda: self.closed(protocol), "the reset")
        self.assertEqual(self.plain, {})

    def test_descriptorUsedAgain(self) -> None:
        """
        A connection closes and the next one gets its descriptor number:
        the next one's bytes are echoed to it alone, by its own entry.
        """
        first, firstProtocol = self.loop.connect()
        self.assertEqual(self.loop.echo(first, b"first"), b"first")
        fd = self.fd(firstProtocol)
        first.close()
        self.loop.until(lambda: self.closed(firstProtocol), "close")
        second, secondProtocol = self.loop.connect()
        self.assertEqual(self.fd(secondProtocol), fd, "the kernel reused it")
        for n in range(5):
            message = pattern(200, n)
            self.assertEqual(self.loop.echo(second, message), message)
        self.assertIs(self.plain[fd], secondProtocol)
        self.assertEqual(firstProtocol.bytesEchoed, 5)

    def test_idleConnectionsHaveNoFile(self) -> None:
        """
        A connection that has sent nothing gets neither a plain entry nor
        the C{FileIO} the plain echo reads it through (about 340 bytes
        with its read method): only a connection that echoes pays for one
        (see the benchmark's bytes per idle connection).
        """
        idle = [self.loop.connect()[1] for _ in range(3)]
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, b"warm"), b"warm")
        for _ in range(5):
            self.loop.iterate()
        for transport in (p.transport for p in idle):
            self.assertIsNone(transport._rawFile)
            self.assertNotIn(transport.fileno(), self.plain)
        self.assertIsNotNone(protocol.transport._rawFile)
        self.assertIn(self.fd(protocol), self.plain)

    def test_rawFileIsSmall(self) -> None:
        """
        The file the plain echo reads a connection through costs under 128
        bytes (a plain C{FileIO} kept its name in a dictionary of its own:
        about 270).
        """
        import tracemalloc

        from echotwist._fast.tcp import _RawSocket

        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        files = [_RawSocket(a.fileno(), "r", closefd=False) for _ in range(100)]
        per = (tracemalloc.get_traced_memory()[0] - before) / len(files)
        self.assertLess(per, 128)
        b.sendall(b"ping")
        buffer = bytearray(16)
        self.assertEqual(files[0].readinto(buffer), 4)
        self.assertEqual(buffer[:4], b"ping")

    def test_entryIsTheEcho(self) -> None:
        """
        A plain echo's entry in the loop is its Echo, holding what the loop
        reads it with (the C{readinto} of the connection's file): no tuple
        beside it, and no look at the transport per message.  At a
        thousand connections every object a message touches is out of the
        CPU's caches by the connection's next message (see
        docs/performance.rst).
        """
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, b"warm"), b"warm")
        self.assertIs(self.plain[self.fd(protocol)], protocol)
        self.assertIs(protocol.loopRead.__self__, protocol.transport._rawFile)
        read = protocol.loopRead
        self.assertEqual(self.loop.echo(client, b"again"), b"again")
        self.assertIs(self.plain[self.fd(protocol)], protocol)
        self.assertIs(protocol.loopRead, read, "one bound read a connection")
        self.assertEqual(protocol.bytesEchoed, 9)

    def test_closedBeforeRemoved(self) -> None:
        """
        A reader removed once its socket is closed (its fileno() is -1
        then) leaves the plain echo too: the next connection to get its
        descriptor number is not read through its entry.
        """
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, b"warm"), b"warm")
        fd = self.fd(protocol)
        self.assertIn(fd, self.plain)
        transport = protocol.transport
        self.patch(transport, "fileno", lambda: -1)
        self.loop.reactor.removeReader(transport)
        self.assertNotIn(fd, self.plain)
        self.assertNotIn(transport, self.loop.reactor.getReaders())

    def test_subclassesAreNotBypassed(self) -> None:
        """
        Only Echo itself is echoed by the reactor: a subclass sees every
        read.
        """
        seen = []

        class Recording(Echo):
            def dataReceived(self, data: bytes) -> None:
                seen.append(data)
                super().dataReceived(data)

        self.loop.service.factory.protocol = Recording
        client, protocol = self.loop.connect()
        for n in range(10):
            self.assertEqual(self.loop.echo(client, b"%d" % n), b"%d" % n)
        self.assertEqual(b"".join(seen), b"0123456789")
        self.assertEqual(self.plain, {})

    def test_proxyWrappedConnectionsAreNotBypassed(self) -> None:
        loop = Loopback(self, listen="haproxy:tcp:0:interface=127.0.0.1")
        client, protocol = loop.connectProxied()
        for n in range(5):
            message = pattern(300, n)
            self.assertEqual(loop.echo(client, message), message)
        self.assertEqual(loop.reactor.plainEchoes(), {})
        self.assertEqual(protocol.bytesEchoed, 1500)

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        st.lists(
            st.sampled_from([1, 7, 100, 1500, 16383, 16384, 40000]),
            min_size=1,
            max_size=10,
        ),
        st.integers(1, 5),
        st.booleans(),
        st.booleans(),
    )
    def test_anyChunking(
        self, chunks: list[int], repeats: int, lazy: bool, halfClose: bool
    ) -> None:
        """
        Any sequence of send sizes, small and bulk, read eagerly or lazily
        through small buffers, with or without a half-close: exact.
        """
        size = sum(chunks) * repeats
        client, protocol = self.loop.connect(buffers=8192)
        fd = self.fd(protocol)
        payload = pattern(size, size)
        try:
            self.assertEqual(
                self.loop.echo(
                    client,
                    payload,
                    chunks=chunks,
                    lazy=lazy,
                    halfClose=halfClose,
                    within=5,
                ),
                payload,
            )
            self.assertEqual(protocol.bytesEchoed, size)
        finally:
            client.close()
            self.loop.until(lambda: self.closed(protocol), "close")
        self.assertNotIn(fd, self.plain)


class SharedBufferTests(SynchronousTestCase):
    """
    The plain echo's one buffer and reused view (see
    L{echotwist._fast.reactor.FastEPollReactor._poll}) against many real
    loopback connections at once: each sends random bytes of its own, of
    sizes that change from message to message (around L{SPLICE_FROM}, up
    to a whole read, some through small buffers so that sends are cut
    short), all before the reactor looks, so one poll reads several of
    them; connections are closed every way (by the client: FIN, reset,
    half-close; by the server: loseConnection, abortConnection) and
    replaced at once, so that new connections get old descriptor numbers.
    Every echo must be its own connection's bytes, whole and in order,
    counted on its own protocol, and every plain entry must belong to the
    connection open on its descriptor.
    """

    reactorType = EchotwistEPollReactor

    SIZES = (
        1,
        2,
        7,
        100,
        1024,
        1500,
        4096,
        SPLICE_FROM - 1,
        SPLICE_FROM,
        SPLICE_FROM + 1,
        65536,
        DIRECT_READ_SIZE,
    )

    def setUp(self) -> None:
        self.loop = Loopback(self)
        self.reactor = self.loop.reactor
        seed = int.from_bytes(os.urandom(4), "big")
        self.random = random.Random(seed)
        self.seed = seed

    def checkEntries(self) -> None:
        """
        Every plain entry is the open connection's on its descriptor: what
        the loop trusts instead of looking the selectable up per read.
        """
        selectables = epollParts(self.reactor).selectables
        for fd, echo in self.reactor.plainEchoes().items():
            transport = echo.transport
            self.assertIs(selectables.get(fd), transport, f"stale entry on {fd}")
            self.assertTrue(transport.connected, f"entry of a lost connection {fd}")
            self.assertEqual(transport.fileno(), fd)
            self.assertIs(transport.protocol, echo)

    def exchange(self, clients: dict[socket.socket, Echo]) -> None:
        """
        Each client sends one message of a random size and reads its echo;
        the reactor iterates only once every client has begun to send.
        """
        sent = {
            c: self.random.randbytes(self.random.choice(self.SIZES)) for c in clients
        }
        before = {c: clients[c].bytesEchoed for c in clients}
        offset = dict.fromkeys(clients, 0)
        got = {c: bytearray() for c in clients}
        deadline = time.monotonic() + WAIT
        while any(len(got[c]) < len(sent[c]) for c in clients):
            if time.monotonic() > deadline:
                echoed = [len(got[c]) for c in clients]
                wanted = [len(sent[c]) for c in clients]
                self.fail(f"echoed {echoed} of {wanted} (seed {self.seed})")
            for client in clients:
                if offset[client] < len(sent[client]):
                    try:
                        offset[client] += client.send(sent[client][offset[client] :])
                    except BlockingIOError:
                        pass
            self.loop.iterate()
            self.checkEntries()
            for client in clients:
                try:
                    got[client] += client.recv(1 << 20)
                except BlockingIOError:
                    pass
        for client, protocol in clients.items():
            self.assertTrue(
                got[client] == sent[client],
                f"a {len(sent[client])}-byte echo differs (seed {self.seed})",
            )
            self.assertEqual(protocol.bytesEchoed - before[client], len(sent[client]))

    def close(self, client: socket.socket, protocol: Echo, how: int) -> None:
        """
        End a connection one of five ways.
        """
        if how == 0:
            client.close()
        elif how == 1:
            client.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            client.close()
        elif how == 2:
            client.shutdown(socket.SHUT_WR)
        elif how == 3:
            protocol.transport.loseConnection()
        else:
            protocol.transport.abortConnection()
        closed = self.loop.service.factory.connections

        def gone() -> bool:
            self.checkEntries()
            return protocol not in closed

        self.loop.until(gone, "the close")
        client.close()

    def test_manyConnectionsTheirOwnBytes(self) -> None:
        """
        Many connections, random sizes, one buffer: no echo ever holds
        another connection's bytes or an earlier message's, and a
        descriptor number used again serves only its new connection.
        """
        clients: dict[socket.socket, Echo] = {}
        seen: set[int] = set()
        reused = plainReads = 0
        for _ in range(12):
            while len(clients) < 12:
                small = self.random.random() < 0.25
                client, protocol = self.loop.connect(buffers=8192 if small else 0)
                fd = int(protocol.transport.fileno())
                reused += fd in seen
                seen.add(fd)
                clients[client] = protocol
            for _ in range(3):
                self.exchange(clients)
                plainReads += len(self.reactor.plainEchoes())
            for client in self.random.sample(list(clients), 4):
                self.close(client, clients.pop(client), self.random.randrange(5))
        self.assertGreater(reused, 0, "no descriptor was used again")
        self.assertGreater(plainReads, 0, "nothing was echoed plainly")


class _Readable(FileDescriptor):
    def __init__(
        self, reactor: EchotwistEPollReactor, sock: socket.socket, fail: bool
    ) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.fail = fail
        self.reads = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        self.reads += 1
        self.sock.recv(100)
        if self.fail:
            raise RuntimeError("a bug in a protocol")

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)  # type: ignore[arg-type]
        if self.fail:
            raise RuntimeError("and a bug in its connectionLost")


class PollTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = EchotwistEPollReactor()
        self.addCleanup(closeEpoll, self.reactor)
        self.addCleanup(self.reactor.closeAlarm)

    def readable(self, fail: bool) -> _Readable:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        theirs.sendall(b"x")
        selectable = _Readable(self.reactor, ours, fail)
        self.reactor.addReader(selectable)
        self.addCleanup(
            lambda: epollParts(self.reactor).selectables.pop(ours.fileno(), None)
        )
        return selectable

    def test_readsAndSurvivesAnError(self) -> None:
        """
        Twisted's _doReadOrWrite logs an error from doRead and disconnects
        the selectable; an error from that disconnection reaches doPoll,
        which logs it too and goes on to the next event.
        """
        failing, fine = self.readable(True), self.readable(False)
        with capturedLogs() as events:
            self.reactor.doPoll(1)
        self.assertEqual((failing.reads, fine.reads), (1, 1))
        ours = [e for e in events if e.get("log_namespace") == "echotwist.reactor"]
        self.assertEqual(len(ours), 1)
        # Named, though its disconnection took it out of the reactor.
        self.assertIs(ours[0]["selectable"], failing)
        self.assertEqual(
            len(self.flushLoggedErrors(RuntimeError)), 2, "both errors logged"
        )


class _PastTheEnd(list[Any]):
    """
    The reactor's list of plain echoes, counting the look-ups past its end
    (each raises C{IndexError}).
    """

    pastTheEnd = 0

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and index >= len(self):
            self.pastTheEnd += 1
        return super().__getitem__(index)


class DatagramPollTests(SynchronousTestCase):
    """
    The loop calls a UDP port of the datagram echo's pass of reads itself
    (L{EchoPassPort.readPass}); a poll in which it answered every datagram
    counts as a plain echo, one with a refusal does not.
    """

    def setUp(self) -> None:
        self.reactor = EchotwistEPollReactor()
        self.addCleanup(closeEpoll, self.reactor)
        self.addCleanup(self.reactor.closeAlarm)
        self.policy = DatagramPolicy(rate=0, clock=Clock())
        self.port = EchoPassPort(
            0, DatagramEcho(self.policy), "127.0.0.1", 65536, self.reactor
        )
        # Every pass reads what is queued, whatever the last one read, so
        # that one poll answers a burst (see test_oneAtATime for the
        # passes of one datagram each).
        self.port.onePasses = 0
        self.port.startListening()
        self.addCleanup(self.port.socket.close)
        self.addCleanup(self.reactor.removeReader, self.port)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.client.close)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(WAIT)

    def exchange(self, datagrams: list[bytes]) -> bool:
        """
        Send C{datagrams}, poll once: whether every event was an echo.
        """
        for datagram in datagrams:
            self.client.sendto(datagram, ("127.0.0.1", self.port.getHost().port))
        return self.reactor._poll(WAIT, False)

    def test_answeredInTheLoop(self) -> None:
        # The first datagram from an address is judged by the protocol.
        self.assertFalse(self.exchange([b"hello"]))
        self.assertEqual(self.client.recv(100), b"hello")
        self.assertTrue(self.exchange([b"a", b"b"]))
        self.assertEqual([self.client.recv(100) for _ in range(2)], [b"a", b"b"])
        self.assertEqual(self.policy.counts, {"answered": 3})

    def test_noPlainEchoRaisesOnce(self) -> None:
        """
        Where no plain TCP echo has a descriptor above the port's (a
        UDP-only server has none), the loop's look-up of a plain echo for
        the port's events goes past the end of its list, which raises
        C{IndexError}, once: the list then reaches the port's descriptor,
        and later datagrams raise nothing on the way to their pass.
        """
        entries = _PastTheEnd(self.reactor._plainEchoes)
        self.reactor._plainEchoes = entries
        self.assertFalse(self.exchange([b"hello"]))  # judged by the protocol
        self.assertEqual(self.client.recv(100), b"hello")
        for n in range(5):
            self.assertTrue(self.exchange([b"%d" % n]))
            self.assertEqual(self.client.recv(100), b"%d" % n)
        self.assertEqual(entries.pastTheEnd, 1)
        self.assertEqual(self.reactor.plainEchoes(), {})
        self.assertEqual(self.policy.counts, {"answered": 6})

    def test_oneAtATime(self) -> None:
        """
        A port reading one datagram a pass after a pass that read one (see
        L{EchoPassPort.onePasses}) leaves the rest of a burst queued, and
        each next poll finds the port readable at once and answers the
        next, in the loop.
        """
        self.port.onePasses = 16
        self.assertFalse(self.exchange([b"hello"]))
        self.assertEqual(self.client.recv(100), b"hello")
        self.assertTrue(self.exchange([b"a", b"b", b"c"]))
        self.assertEqual(self.client.recv(100), b"a")
        self.assertEqual(self.policy.counts, {"answered": 2})
        for answer in (b"b", b"c"):
            self.assertTrue(self.reactor._poll(WAIT, False))
            self.assertEqual(self.client.recv(100), answer)
        self.assertEqual(self.policy.counts, {"answered": 4})

    def test_laterPassesDirectly(self) -> None:
        """
        After its first event, the loop calls a port's pass itself, not
        through L{FastEPollReactor._event}; once the port stops reading,
        no more.
        """
        self.exchange([b"hello"])
        self.client.recv(100)
        events: list[int] = []
        self.patch(self.reactor, "_event", lambda fd, event: events.append(fd))
        self.assertTrue(self.exchange([b"a"]))
        self.assertEqual((self.client.recv(100), events), (b"a", []))
        self.reactor.removeReader(self.port)
        self.assertEqual(self.reactor._passes, {})

    def test_aPassThatRaises(self) -> None:
        """
        A pass called directly that raises is logged and its port lost, as
        Twisted's loop loses a selectable whose doRead raised.
        """
        self.exchange([b"hello"])
        self.client.recv(100)

        def raising(port: EchoPassPort) -> bool:
            raise RuntimeError("boom")

        [fd] = self.reactor._passes
        self.reactor._passes[fd] = (self.port, raising)
        with capturedLogs() as events:
            self.assertFalse(self.exchange([b"a"]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        ours = [e for e in events if e["log_namespace"] == "echotwist.reactor"]
        self.assertEqual(len(ours), 1)
        self.assertNotIn(fd, epollParts(self.reactor).selectables)
        self.assertEqual(self.reactor._passes, {})

    def test_aNewPortOnTheSameDescriptor(self) -> None:
        """
        A port stopped and another listening on its descriptor: the new
        port's datagrams are its own, answered and counted by its protocol,
        even if an entry of the old port's were left behind.
        """
        self.exchange([b"hello"])
        self.client.recv(100)
        [fd] = self.reactor._passes
        old = self.port
        self.reactor.removeReader(old)
        old.socket.close()
        policy = DatagramPolicy(rate=0, clock=Clock())
        new = EchoPassPort(0, DatagramEcho(policy), "127.0.0.1", 65536, self.reactor)
        new.startListening()
        self.addCleanup(new.socket.close)
        self.addCleanup(self.reactor.removeReader, new)
        self.assertEqual(new.fileno(), fd)
        self.port = new
        stale: list[object] = []
        self.reactor._passes[fd] = (old, lambda port: stale.append(port) or True)
        self.assertFalse(self.exchange([b"new"]))  # the new port judges it
        self.assertEqual(self.client.recv(100), b"new")
        self.assertTrue(self.exchange([b"again"]))
        self.assertEqual(self.client.recv(100), b"again")
        self.assertEqual(stale, [])
        self.assertIs(self.reactor._passes[fd][0], new)
        self.assertEqual(policy.counts, {"answered": 2})
        self.assertEqual(self.policy.counts, {"answered": 1})

    def test_aRefusalIsNotAPlainEcho(self) -> None:
        self.exchange([b"hello"])
        self.client.recv(100)
        with capturedLogs():
            self.assertFalse(self.exchange([b"x"] * (LOOP_TOLERANCE + 2)))
        self.assertEqual(self.policy.counts["echo loop"], 1)


class _ScriptedPoller:
    """
    Stands in for the reactor's epoll object: each poll() returns the next
    list of (fd, event) from a script, and records its timeout.
    """

    def __init__(
        self, reactor: EchotwistEPollReactor, script: list[list[tuple[int, int]]]
    ) -> None:
        self.reactor = reactor
        self.script = script
        self.timeouts: list[float] = []
        self.onPoll: list[object] = []

    def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        if self.onPoll:
            action = self.onPoll.pop(0)
            if callable(action):
                action()
        return self.script.pop(0) if self.script else []


class _PlainEcho:
    """
    What the reactor's plain echo needs of an Echo and its socket (a
    count, and its C{loopRead}, called as C{FileIO.readinto} is), and a
    write for the reactor to send with (called as C{os.write} is): they
    hand over C{message} each time.
    """

    bytesEchoed = 0

    def __init__(self, message: bytes = b"ping") -> None:
        self.loopRead = self.readinto
        self.message = message
        self.sent: list[bytes] = []

    def readinto(self, buffer: bytearray) -> int:
        buffer[: len(self.message)] = self.message
        return len(self.message)

    def write(self, fd: int, data: memoryview) -> int:
        self.sent.append(bytes(data))
        return len(data)


class PlainPollTests(SynchronousTestCase):
    """
    A poll whose events are all plain echoes polls again at once, without
    a pass of the main loop; anything else, a due timed call, a stop or a
    call from a thread returns to the main loop.
    """

    def setUp(self) -> None:
        self.reactor = EchotwistEPollReactor()
        self.addCleanup(closeEpoll, self.reactor)
        self.addCleanup(self.reactor.closeAlarm)
        self.echo = _PlainEcho()
        self.transport = object()
        # fd 1000: a plain echo; fd 1001: anything else (counts its reads).
        epollParts(self.reactor).selectables[1000] = self.transport
        self.reactor._setPlain(1000, self.echo)  # type: ignore[arg-type]
        self.reactor._plainWrite = self.echo.write
        self.otherReads: list[int] = []
        epollParts(self.reactor).selectables[1001] = _Counting(self.otherReads)
        self.addCleanup(epollParts(self.reactor).selectables.clear)

    def script(self, *polls: list[tuple[int, int]]) -> _ScriptedPoller:
        poller = _ScriptedPoller(self.reactor, list(polls))
        parts = self.reactor._parts
        self.reactor._parts = _replaced(parts, poll=poller.poll)
        self.addCleanup(setattr, self.reactor, "_parts", parts)
        return poller

    def test_plainEchoesPollAgain(self) -> None:
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain, plain, [(1001, EPOLLIN)], plain)
        self.reactor.doPoll(None)
        # Three plain polls and the one with another event, in one call;
        # the fifth waits for the next.
        self.assertEqual(len(poller.timeouts), 4)
        self.assertEqual(poller.timeouts, [-1, -1, -1, -1])
        self.assertEqual(self.echo.sent, [b"ping"] * 3)
        self.assertEqual(self.echo.bytesEchoed, 12)
        self.assertEqual(self.otherReads, [1])

    def test_returnsWhenNothingHappened(self) -> None:
        """
        Where there is no alarm (no timerfd), a poll that timed out (no
        events) returns: a timed call is due.
        """
        self.reactor._alarm = False
        poller = self.script([])
        self.reactor.doPoll(0.5)
        self.assertEqual(poller.timeouts, [0.5])

    def test_timeoutShrinksToTheDeadline(self) -> None:
        """
        Where there is no alarm (no timerfd), with a timed call due in
        C{timeout} seconds, each further poll waits only what is left, and
        once it has passed the main loop gets the call on time.
        """
        self.reactor._alarm = False
        now = [100.0]
        self.patch(self.reactor, "seconds", lambda: now[0])
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain, plain)

        def later(seconds: float) -> object:
            return lambda: now.__setitem__(0, now[0] + seconds)

        poller.onPoll = [later(0.25), later(0.5), later(0.5)]
        self.reactor.doPoll(1.0)
        self.assertEqual(poller.timeouts, [1.0, 0.75, 0.25])
        self.assertEqual(len(self.echo.sent), 3)

    def test_nonBlockingPollOnce(self) -> None:
        """
        A poll with timeout 0 (something is due now) is not repeated.
        """
        poller = self.script([(1000, EPOLLIN)], [(1000, EPOLLIN)])
        self.reactor.doPoll(0)
        self.assertEqual(poller.timeouts, [0])

    def test_stopReturns(self) -> None:
        """
        A signal handler that stops the reactor between polls ends the
        repeat.
        """
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain, plain)
        poller.onPoll = [None, self.reactor.stop]
        # Started by its public step (stop() refuses a reactor that never
        # started), without signal handlers; its main loop never runs here.
        self.reactor.startRunning(installSignalHandlers=False)
        self.reactor.doPoll(None)
        self.assertTrue(epollParts(self.reactor).justStopped(self.reactor))
        self.assertEqual(len(poller.timeouts), 2)

    def test_crashReturns(self) -> None:
        """
        A signal handler that crashes the reactor between polls ends the
        repeat too.
        """
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain, plain)
        poller.onPoll = [None, self.reactor.crash]
        self.reactor.doPoll(None)
        self.assertEqual(len(poller.timeouts), 2)

    def test_stoppedBeforeThePoll(self) -> None:
        """
        Stopped before the poll began (by a timed call of the same pass
        of the main loop, say): one poll, no repeat.
        """
        poller = self.script([(1000, EPOLLIN)], [(1000, EPOLLIN)])
        self.reactor.startRunning(installSignalHandlers=False)
        self.reactor.stop()
        self.reactor.doPoll(None)
        self.assertEqual(len(poller.timeouts), 1)

    def test_callFromThreadReturns(self) -> None:
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain, plain)
        poller.onPoll = [lambda: self.reactor.threadCallQueue.append((print, (), {}))]
        self.addCleanup(self.reactor.threadCallQueue.clear)
        self.reactor.doPoll(None)
        self.assertEqual(len(poller.timeouts), 1)


class AlarmPollTests(SynchronousTestCase):
    """
    With a timed call due, the loop's polls wait with no timeout and its
    alarm (L{echotwist._fast.alarm}) waits for the call instead: armed once
    per deadline, and again only for a sooner one; its going off ends the
    repeat of polls.
    """

    def setUp(self) -> None:
        self.reactor = EchotwistEPollReactor()
        self.addCleanup(closeEpoll, self.reactor)
        self.addCleanup(self.reactor.closeAlarm)
        # The reactor's clock (wall-clock time, as time.time) and the
        # alarm's (monotonic, as the timerfd counts), each the test's.
        self.now = [100.0]
        self.patch(self.reactor, "seconds", lambda: self.now[0])
        self.ticks = [5000.0]

        def clocked() -> Any:
            alarm = makeAlarm()
            if alarm is not None:
                alarm._clock = lambda: self.ticks[0]
            return alarm

        self.patch(reactorModule, "makeAlarm", clocked)
        self.echo = _PlainEcho()
        transport = object()
        epollParts(self.reactor).selectables[1000] = transport
        self.reactor._setPlain(1000, self.echo)  # type: ignore[arg-type]
        self.reactor._plainWrite = self.echo.write
        self.addCleanup(epollParts(self.reactor).selectables.clear)

    def script(self, *polls: list[tuple[int, int]]) -> _ScriptedPoller:
        return PlainPollTests.script(self, *polls)  # type: ignore[arg-type]

    def alarm(self) -> Any:
        alarm = self.reactor._makeAlarm()
        self.assertTrue(alarm, "no timerfd on this system")
        return alarm

    def test_pollsWaitWithoutTimeout(self) -> None:
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain)
        self.reactor.doPoll(1.0)
        self.assertEqual(poller.timeouts, [-1, -1, -1])
        self.assertEqual(len(self.echo.sent), 2)
        self.assertEqual(self.reactor._alarm.deadline, 5001.0)

    def test_goingOffReturns(self) -> None:
        """
        The alarm's event ends the repeat (the timed call is due) and
        clears it, though the poll had a plain echo too.
        """
        alarm = self.alarm()
        alarm.wake(0.0)
        self.assertTrue(select.select([alarm.fd], [], [], WAIT)[0])
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, [(alarm.fd, EPOLLIN), (1000, EPOLLIN)], plain)
        self.reactor.doPoll(0.5)
        self.assertEqual(len(poller.timeouts), 2)
        self.assertEqual(len(self.echo.sent), 2)
        self.assertFalse(select.select([alarm.fd], [], [], 0)[0])
        # Not armed: the next pass arms it for what is due then.
        self.reactor.doPoll(0.25)
        self.assertEqual(alarm.deadline, 5000.25)

    def test_armedOncePerDeadline(self) -> None:
        """
        The same timed call asked for again (each pass of the main loop)
        sets no timer; a later one neither (the alarm goes off early); a
        sooner one does.
        """
        alarm = self.alarm()
        armed: list[int] = []
        self.patch(alarm, "_setTimer", lambda fd, ns: armed.append(ns))
        self.script()
        self.reactor.doPoll(1.0)
        self.now[0] += 0.5
        self.ticks[0] += 0.5
        self.reactor.doPoll(0.5)
        self.reactor.doPoll(4.0)
        self.reactor.doPoll(0.25)
        self.assertEqual(armed, [1_000_000_000, 250_000_000])

    def test_wallClockSteppedForward(self) -> None:
        """
        The reactor's clock (C{time.time}) stepped an hour forward (NTP, an
        operator, a resumed VM) while the alarm waits for a call 8 s away:
        a call then due in 0.2 s arms it for 0.2 s.  A deadline kept on the
        reactor's clock would look an hour later than the one the timer is
        armed for and leave the call to wait for the old one.
        """
        alarm = self.alarm()
        armed: list[int] = []
        self.patch(alarm, "_setTimer", lambda fd, ns: armed.append(ns))
        self.script()
        self.reactor.doPoll(8.0)
        self.now[0] += 3600.0
        self.reactor.doPoll(0.2)
        self.assertEqual(armed, [8_000_000_000, 200_000_000])

    def test_wallClockSteppedBack(self) -> None:
        """
        Stepped an hour back, the call 8 s away is an hour and 8 s away on
        the reactor's clock: the alarm, armed for 8 s, goes off early, and
        the main loop asks again for what is left, as Twisted's own
        timeouts would.
        """
        alarm = self.alarm()
        armed: list[int] = []
        self.patch(alarm, "_setTimer", lambda fd, ns: armed.append(ns))
        self.script()
        self.reactor.doPoll(8.0)
        self.now[0] -= 3600.0
        self.reactor.doPoll(3608.0)
        self.assertEqual(armed, [8_000_000_000])
        alarm.deadline = float("inf")
        self.ticks[0] += 8.0
        self.reactor.doPoll(3600.0)
        self.assertEqual(armed, [8_000_000_000, 3600_000_000_000])

    def test_dueNowPollsOnce(self) -> None:
        """
        Something due now (timeout 0) is one poll that does not wait, as
        before: nothing to arm.
        """
        poller = self.script([(1000, EPOLLIN)], [(1000, EPOLLIN)])
        self.reactor.doPoll(0)
        self.assertEqual(poller.timeouts, [0])
        self.assertIsNone(self.reactor._alarm)

    def test_noTimerfd(self) -> None:
        """
        Where there is no timerfd, the polls wait with timeouts, and no
        alarm is asked for again.
        """
        made: list[bool] = []

        def none() -> None:
            made.append(True)

        self.patch(reactorModule, "makeAlarm", none)
        poller = self.script([], [])
        self.reactor.doPoll(0.5)
        self.reactor.doPoll(0.5)
        self.assertEqual(poller.timeouts, [0.5, 0.5])
        self.assertEqual(made, [True])
        self.assertIs(self.reactor._alarm, False)

    def test_registerRefused(self) -> None:
        """
        An epoll object that refuses the alarm's descriptor for good: the
        alarm is closed, the polls wait with timeouts, and no other alarm
        is made.
        """
        made: list[Any] = []

        def recording() -> Any:
            alarm = makeAlarm()
            made.append(alarm)
            return alarm

        def refuse(fd: int, mask: int) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        self.patch(reactorModule, "makeAlarm", recording)
        parts = self.reactor._parts
        self.reactor._parts = _replaced(parts, register=refuse)
        self.addCleanup(setattr, self.reactor, "_parts", parts)
        poller = self.script([], [])
        self.reactor.doPoll(0.5)
        self.reactor.doPoll(0.5)
        self.assertEqual(poller.timeouts, [0.5, 0.5])
        self.assertEqual(len(made), 1)
        self.assertEqual(made[0].fd, -1)

    def test_registerShortOfWatches(self) -> None:
        """
        An epoll object out of watches (or memory) for now: the alarm is
        closed and this poll waits with a timeout; the next tries again.
        """
        made: list[Any] = []

        def recording() -> Any:
            alarm = makeAlarm()
            made.append(alarm)
            return alarm

        parts = self.reactor._parts
        refusals = [OSError(errno.ENOSPC, "No space left on device")]

        def register(fd: int, mask: int) -> None:
            if refusals:
                raise refusals.pop()
            parts.register(fd, mask)

        self.patch(reactorModule, "makeAlarm", recording)
        self.reactor._parts = _replaced(parts, register=register)
        self.addCleanup(setattr, self.reactor, "_parts", parts)
        poller = self.script([], [])
        self.reactor.doPoll(0.5)
        self.reactor.doPoll(0.5)
        self.assertEqual(poller.timeouts, [0.5, -1])
        self.assertEqual(made[0].fd, -1)
        self.assertIs(self.reactor._alarm, made[1])

    def test_shortOfDescriptors(self) -> None:
        """
        Out of descriptors when the first timed call comes (a flood of
        connections at RLIMIT_NOFILE): that poll waits with a timeout, and
        a later one, descriptors freed, makes the alarm.  The loop does not
        go without it for the rest of its life.
        """
        calls = alarmModule._osCalls() or alarmModule._libcCalls()
        assert calls is not None
        create, setTimer = calls
        refusals = [OSError(errno.EMFILE, "Too many open files")]

        def flooded() -> int:
            if refusals:
                raise refusals.pop()
            return create()

        self.patch(alarmModule, "_osCalls", lambda: (flooded, setTimer))
        poller = self.script([], [])
        self.reactor.doPoll(0.5)
        self.assertIsNone(self.reactor._alarm)
        self.reactor.doPoll(0.5)
        self.assertEqual(poller.timeouts, [0.5, -1])
        self.assertIsInstance(self.reactor._alarm, Alarm)

    def armingFails(self, number: int) -> tuple[Any, int, list[Any]]:
        """
        Make the alarm, whose timer then refuses to be set with C{number},
        and poll twice with a timed call due in 0.5 s.

        @return: the alarm, its descriptor, the events logged.
        """
        alarm = self.alarm()
        fd = alarm.fd

        def refuse(fd: int, ns: int) -> None:
            raise OSError(number, os.strerror(number))

        self.patch(alarm, "_setTimer", refuse)
        poller = self.script([], [])
        with capturedLogs() as events:
            self.reactor.doPoll(0.5)
            self.reactor.doPoll(0.5)
        self.assertEqual(poller.timeouts, [0.5, 0.5])
        self.assertIs(self.reactor._alarm, False)
        self.assertEqual(
            [e["log_format"] for e in events if e["log_level"].name == "error"],
            [
                "The loop's alarm failed ({error}): its polls wait with"
                " timeouts from now on"
            ],
        )
        return alarm, fd, events

    def test_armingFailsClosedUnder(self) -> None:
        """
        The alarm's descriptor closed under the loop (EBADF when it is
        armed): one line logged, and the polls wait with timeouts from then
        on, rather than the error ending every pass of the main loop before
        its poll.
        """
        alarm, fd, events = self.armingFails(errno.EBADF)
        self.addCleanup(os.close, fd)
        self.assertEqual(alarm.fd, -1)

    def test_armingFailsNumberTaken(self) -> None:
        """
        The alarm's number taken by another descriptor after it was closed
        under the loop (EINVAL: not a timerfd): the same, and the
        descriptor, another's, is not closed.
        """
        alarm, fd, events = self.armingFails(errno.EINVAL)
        self.addCleanup(os.close, fd)
        self.assertEqual(alarm.fd, -1)
        os.fstat(fd)


def runWatched(reactor: EchotwistEPollReactor) -> list[bool]:
    """
    Run C{reactor} until it stops, with a watchdog thread that crashes it
    (through callFromThread) after WAIT seconds, so that a loop that never
    ends fails the test instead of hanging it.

    @return: C{[True]} if the watchdog had to crash it, else C{[]}.
    """
    fired: list[bool] = []

    def bark() -> None:
        # Noted in its own thread: a crashed reactor may never run it.
        fired.append(True)
        reactor.callFromThread(reactor.crash)

    watchdog = threading.Timer(WAIT, bark)
    watchdog.daemon = True
    watchdog.start()
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        watchdog.cancel()
    return fired


class AlarmRunTests(SynchronousTestCase):
    """
    The real reactor, its alarm a real timerfd on the real clocks: timed
    calls run on time while the polls wait with no timeout.
    """

    def test_soonerCallOnTime(self) -> None:
        """
        On the real reactor: a call scheduled sooner than the one the
        alarm is armed for runs at its time, not the other's.  A watchdog
        thread crashes the reactor after WAIT seconds, so a sooner call
        left to the later deadline fails the test instead of hanging it.
        """
        reactor = EchotwistEPollReactor()
        self.addCleanup(closeEpoll, reactor)
        ran: list[str] = []
        later = reactor.callLater(10 * WAIT, ran.append, "later")
        armedFor: list[float] = []

        def schedule() -> None:
            # From a thread, through the waker, while the loop waits with
            # its alarm armed for "later", the one call pending: how long
            # each has left, on the alarm's clock and the reactor's.
            armedFor.append(reactor._alarm.deadline - time.monotonic())
            armedFor.append(later.getTime() - reactor.seconds())
            reactor.callLater(0.05, sooner)

        def sooner() -> None:
            ran.append("sooner")
            later.cancel()
            reactor.stop()

        reactor.callWhenRunning(
            threading.Timer(0.05, reactor.callFromThread, (schedule,)).start
        )
        fired = runWatched(reactor)
        self.assertLess(abs(armedFor[0] - armedFor[1]), 1.0)
        self.assertEqual((ran, fired), (["sooner"], []))
        # Closed at shutdown.
        self.assertIsNone(reactor._alarm)

    def test_crashedAndLetGo(self) -> None:
        """
        A reactor whose run ended in crash() never shuts down, so never
        closes its alarm: let go, it takes its alarm's descriptor with it,
        as it does its epoll object's.
        """
        reactor = EchotwistEPollReactor()
        reactor.callLater(0.01, reactor.crash)
        reactor.run(installSignalHandlers=False)
        path = f"/proc/self/fd/{reactor._alarm.fd}"
        self.assertEqual(os.readlink(path), "anon_inode:[timerfd]")
        del reactor
        gc.collect()
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            target = None
        self.assertNotEqual(target, "anon_inode:[timerfd]")

    def test_descriptorClosedUnderTheLoop(self) -> None:
        """
        On the real reactor, with a timed call always pending (as the idle
        sweep is): something closes the alarm's descriptor under the loop.
        The loop goes on serving I/O, polling with timeouts, and its timed
        calls run, with one line logged, not one per pass of a spinning
        main loop.  A watchdog thread crashes the reactor after WAIT
        seconds.
        """
        reactor = EchotwistEPollReactor()
        self.addCleanup(closeEpoll, reactor)
        self.addCleanup(reactor.closeAlarm)
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        readable = _Readable(reactor, ours, False)
        ticks: list[bool] = []
        sweep = LoopingCall(ticks.append, True)
        sweep.clock = reactor

        def closeUnder() -> None:
            os.close(reactor._alarm.fd)
            # What the loop must still see: a read, and ticks after it.
            theirs.sendall(b"x")
            reactor.callLater(0.05, check)

        def check() -> None:
            if readable.reads and len(ticks) > 5:
                reactor.stop()
            else:
                reactor.callLater(0.05, check)

        reactor.callWhenRunning(sweep.start, 0.01)
        reactor.callWhenRunning(reactor.addReader, readable)
        reactor.callLater(0.05, closeUnder)
        with capturedLogs() as events:
            try:
                fired = runWatched(reactor)
            finally:
                sweep.stop()
        self.assertEqual((readable.reads, fired), (1, []))
        self.assertEqual(
            len([e for e in events if e["log_level"].name in ("error", "critical")]),
            1,
        )

    def test_soonerCallOnTimeAfterWallClockStep(self) -> None:
        """
        On the real reactor: while the alarm waits for a call 10 x WAIT
        seconds away, the reactor's clock steps an hour forward (its
        C{seconds} reads C{time.time} plus an offset a thread sets, as NTP
        or an operator steps the wall clock).  The call stepped over is
        due and runs; a call then scheduled 0.05 s ahead runs at its time,
        not at the alarm's old deadline.  A watchdog thread crashes the
        reactor after WAIT seconds, so the late call fails the test
        instead of hanging it.
        """
        reactor = EchotwistEPollReactor()
        self.addCleanup(closeEpoll, reactor)
        self.addCleanup(reactor.closeAlarm)
        offset = [0.0]
        self.patch(reactor, "seconds", lambda: time.time() + offset[0])
        ran: list[str] = []
        reactor.callLater(10 * WAIT, ran.append, "stepped over")

        def step() -> None:
            offset[0] = 3600.0
            reactor.callLater(0.05, sooner)

        def sooner() -> None:
            ran.append("sooner")
            reactor.stop()

        reactor.callWhenRunning(
            threading.Timer(0.05, reactor.callFromThread, (step,)).start
        )
        fired = runWatched(reactor)
        self.assertEqual((ran, fired), (["stepped over", "sooner"], []))


class StopWhileEchoingTests(SynchronousTestCase):
    """
    The real reactor runs while a client thread echoes small messages
    without pause, so that the loop repeats its polls of plain echoes (see
    L{echotwist._fast.reactor.FastEPollReactor._poll}); a stop or crash
    from a timed call, a thread, a signal handler or an event handler must
    end C{run()}.  A watchdog thread crashes the reactor after WAIT seconds
    through callFromThread, so a loop that does not end fails the test
    instead of hanging it.
    """

    reactorType = EchotwistEPollReactor

    def setUp(self) -> None:
        self.loop = Loopback(self)
        self.reactor = self.loop.reactor
        self.done = threading.Event()
        self.echoed = 0
        self.errors: list[BaseException] = []
        self.sock: socket.socket | None = None
        self.addCleanup(self.done.set)

    def client(self) -> None:
        """
        Echo 100-byte messages until told to stop, the server closes, or
        twice WAIT seconds pass (after the watchdog: a client that gave up
        first would end a loop that does not end by itself); each echo is
        checked.
        """
        deadline = time.monotonic() + 2 * WAIT
        try:
            with socket.create_connection(
                ("127.0.0.1", self.loop.port.getHost().port), timeout=WAIT
            ) as sock:
                self.sock = sock
                n = 0
                while not self.done.is_set() and time.monotonic() < deadline:
                    message = pattern(100, n)
                    sock.sendall(message)
                    got = b""
                    while len(got) < len(message):
                        data = sock.recv(len(message) - len(got))
                        if not data:
                            return
                        got += data
                    if got != message:
                        raise AssertionError(f"echo {n} differs")
                    n += 1
                    self.echoed = n
        except OSError:
            # The reactor's shutdown closes the connection under it.
            pass
        except BaseException as e:
            self.errors.append(e)

    def runUntil(self, trigger: Any) -> None:
        """
        Run the reactor with the client echoing; once the client has
        echoed plainly for a while, C{trigger()} (called from the reactor
        thread by a timed call) is to stop the reactor in its own way.
        """
        reactor = self.reactor
        thread = threading.Thread(target=self.client, daemon=True)

        def started() -> None:
            thread.start()
            reactor.callLater(0, waiting)

        def waiting() -> None:
            if self.echoed >= 200 and reactor.plainEchoes():
                trigger()
            else:
                reactor.callLater(0.01, waiting)

        reactor.callWhenRunning(started)
        fired: list[bool] = []
        try:
            fired = runWatched(reactor)
        finally:
            self.done.set()
            # A crash leaves the connection open: the client may wait for
            # an echo that will not come.
            if self.sock is not None:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    # Closed already: the client ended on its own.
                    pass
            thread.join(WAIT)
        self.assertEqual(fired, [], "the loop went on: the watchdog crashed it")
        self.assertEqual(self.errors, [])
        self.assertGreaterEqual(self.echoed, 200)

    def stopAfter(self, how: Any) -> None:
        """
        Trigger with C{how} (once), which is to end C{run()} before the
        watchdog does.
        """
        called: list[bool] = []

        def trigger() -> None:
            called.append(True)
            how()

        self.runUntil(trigger)
        self.assertEqual(called, [True])

    def test_timedStop(self) -> None:
        reactor = self.reactor
        self.stopAfter(lambda: reactor.callLater(0.05, reactor.stop))

    def test_timedCrash(self) -> None:
        reactor = self.reactor
        self.stopAfter(lambda: reactor.callLater(0.05, reactor.crash))

    def test_stopFromAThread(self) -> None:
        reactor = self.reactor

        def fromThread() -> None:
            threading.Timer(0.05, reactor.callFromThread, (reactor.stop,)).start()

        self.stopAfter(fromThread)

    def signalled(self, handler: Any) -> None:
        """
        A Python signal handler of the process's own calls C{handler}
        directly (not through callFromThread): it runs between two
        bytecodes of the loop.
        """
        signum = signal.SIGUSR2
        previous = signal.signal(signum, lambda *_: handler())
        self.addCleanup(signal.signal, signum, previous)
        pid = os.getpid()

        def send() -> None:
            threading.Timer(0.05, os.kill, (pid, signum)).start()

        self.stopAfter(send)

    def test_stopFromASignalHandler(self) -> None:
        self.signalled(self.reactor.stop)

    def test_crashFromASignalHandler(self) -> None:
        self.signalled(self.reactor.crash)

    def test_stopFromAnEvent(self) -> None:
        """
        The protocol's own code (a read that leaves the plain path: a
        message of SPLICE_FROM bytes, here on a second connection) stops
        the reactor.
        """
        reactor = self.reactor
        original = Echo.dataReceived

        def stopping(protocol: Echo, data: bytes) -> None:
            original(protocol, data)
            if len(data) >= SPLICE_FROM and reactor.running:
                reactor.stop()

        self.patch(Echo, "dataReceived", stopping)
        other = socket.create_connection(
            ("127.0.0.1", self.loop.port.getHost().port), timeout=WAIT
        )
        self.addCleanup(other.close)

        def send() -> None:
            # From a thread: a send that blocked here would block the loop.
            threading.Thread(
                target=other.sendall, args=(pattern(SPLICE_FROM),), daemon=True
            ).start()

        self.stopAfter(send)


class _Counting:
    """
    A selectable that is not a plain echo: it counts its reads.
    """

    def __init__(self, reads: list[int]) -> None:
        self.reads = reads

    def doRead(self) -> None:
        self.reads.append(1)

    def fileno(self) -> int:
        return 1001
