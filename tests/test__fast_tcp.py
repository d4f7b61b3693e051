"""
The kernel echo path (L{echotwist._fast.tcp.SplicingServer}): a real
EchoService on a private epoll reactor that the test iterates itself, and
real loopback sockets as clients.  Every loop is bounded by WAIT.

What must hold: bulk reads are spliced and small ones are not; every byte
comes back once and in order, through partial sends, backpressure and
half-close; the shared pipe is empty after every event, and whatever goes
wrong on the way, no byte ever reaches another connection.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import termios
import time
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from echotwist import Echo, EchoService, stream
from echotwist._fast import tcp as fastpath
from echotwist._twisted import closeEpoll
from echotwist.listening import ListenerFactory
from echotwist.reactor import EchotwistEPollReactor
from tests._tools import scratchDirectory, selfSignedCertificate
from tests._twistd import WAIT

PAYLOAD = bytes((i * 131 + 17) & 0xFF for i in range(1 << 20))


def pattern(size: int, seed: int = 0) -> bytes:
    start = seed % len(PAYLOAD)
    data = (PAYLOAD[start:] + PAYLOAD[:start]) * (size // len(PAYLOAD) + 1)
    return data[:size]


def pipeHolds() -> int:
    """
    Bytes in the shared pipe right now (0 when there is no pipe).
    """
    fds = fastpath._SharedPipe.fds
    if fds is None:
        return 0
    buf = bytearray(4)
    fcntl.ioctl(fds[0], termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


class Spy:
    """
    Stands in for os.splice: counts what goes in and out of the pipe, and
    can be told to fail.
    """

    def __init__(self) -> None:
        self.reads = 0  # socket -> pipe
        self.writes = 0  # pipe -> socket
        self.partial = 0  # pipe -> socket that moved less than asked
        self.failRead: BaseException | None = None
        self.failWrite: BaseException | None = None

    def __call__(
        self, src: int, dst: int, count: int, *args: Any, **kwargs: Any
    ) -> int:
        fromPipe = (
            fastpath._SharedPipe.fds is not None and src == fastpath._SharedPipe.fds[0]
        )
        failure = self.failWrite if fromPipe else self.failRead
        if failure is not None:
            raise failure
        moved = os.splice(src, dst, count, *args, **kwargs)
        if fromPipe:
            self.writes += 1
            self.partial += moved < count
        else:
            self.reads += 1
        return moved


class Loopback:
    """
    An EchoService on 127.0.0.1, on a reactor of its own that only runs
    when the test iterates it.
    """

    def __init__(
        self,
        case: SynchronousTestCase,
        reactorType: type | None = None,
        listen: str = "tcp:0:interface=127.0.0.1",
    ) -> None:
        self.case = case
        if reactorType is None:
            reactorType = getattr(case, "reactorType", EPollReactor)
        self.reactor = reactorType()
        self.service = EchoService(
            [listen],
            maxConnections=0,
            maxPerSource=0,
            idleTimeout=0,
            logConnections=False,
            reactor=self.reactor,
        )
        self.service.privilegedStartService()
        self.service.startService()
        case.addCleanup(self.close)
        [listener] = list(self.service.listeners)
        self.port = listener.port  # type: ignore[attr-defined]

    def close(self) -> None:
        reactor = self.reactor
        for reader in list(getattr(reactor, "_internalReaders", ())):
            reactor.removeReader(reader)
            reader.connectionLost(None)
        reactor.disconnectAll()
        for call in reactor.getDelayedCalls():
            call.cancel()
        closeEpoll(reactor)
        # echotwist's reactor's alarm, if a poll made one (a run that ends
        # in a crash never shuts down, which closes it).
        closeAlarm = getattr(reactor, "closeAlarm", None)
        if closeAlarm is not None:
            closeAlarm()

    def iterate(self) -> None:
        self.reactor.iterate(0)
        self.case.assertEqual(pipeHolds(), 0, "bytes left in the shared pipe")

    def until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            if time.monotonic() > deadline:
                self.case.fail(f"gave up waiting for {what}")
            self.iterate()

    def connect(self, buffers: int = 0) -> tuple[socket.socket, Echo]:
        """
        Connect a client; with C{buffers}, the client's receive buffer and
        the server's send buffer for it are that small, so that the
        server's sends are cut short often.
        """
        known = set(self.service.factory.connections)
        client = socket.socket()
        if buffers:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
        client.connect(("127.0.0.1", self.port.getHost().port))
        client.setblocking(False)
        self.case.addCleanup(client.close)
        self.until(lambda: len(self.service.factory.connections) > len(known), "accept")
        [protocol] = set(self.service.factory.connections) - known
        if buffers:
            server = protocol.transport.socket
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
        return client, protocol

    def connectProxied(self) -> tuple[socket.socket, Echo]:
        """
        Connect a client to a C{haproxy:} listener, as a proxy would for
        192.0.2.7, and wait for the header to be read.
        """
        known = set(self.service.factory.connections)
        client = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        self.case.addCleanup(client.close)
        client.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 7\r\n")
        client.setblocking(False)
        self.until(lambda: len(self.service.factory.connections) > len(known), "start")
        [protocol] = set(self.service.factory.connections) - known
        return client, protocol

    def echo(
        self,
        client: socket.socket,
        payload: bytes,
        *,
        chunks: Sequence[int] = (65536,),
        lazy: bool = False,
        halfClose: bool = False,
        within: float = WAIT,
    ) -> bytes:
        """
        Send C{payload}, C{chunks[i % len(chunks)]} bytes at the i-th send,
        and read until as many bytes came back (or, with C{halfClose}, until
        EOF).  A C{lazy} client reads only while it cannot send, so the
        server's sends back to it are cut short again and again.  Fails
        after C{within} seconds.
        """
        sent = sends = 0
        received = bytearray()
        eof = shut = False
        deadline = time.monotonic() + within
        while not eof and (halfClose or len(received) < len(payload)):
            if time.monotonic() > deadline:
                self.case.fail(f"echoed {len(received)} of {len(payload)} bytes")
            blocked = True
            if sent < len(payload):
                size = chunks[sends % len(chunks)]
                try:
                    sent += client.send(payload[sent : sent + size])
                    sends += 1
                    blocked = False
                except BlockingIOError:
                    pass
            elif halfClose and not shut:
                client.shutdown(socket.SHUT_WR)
                shut = True
            self.iterate()
            if lazy and not blocked:
                continue
            try:
                data = client.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                eof = True
            received += data
        return bytes(received)


class _FastTransportsOnly(EPollReactor):
    """
    Twisted's epoll reactor with the fast path's transports on its
    listeners (see L{echotwist._fast.fastPathOn}) but Twisted's loop: so the
    transport's own splice (L{SplicingServer.doRead}) does every read.
    """

    echoFastPath = True


class SpliceTests(SynchronousTestCase):
    reactorType: type = _FastTransportsOnly

    def setUp(self) -> None:
        if not fastpath._SharedPipe.usable:
            self.skipTest("this kernel cannot splice from a TCP socket")
        self.spy = Spy()
        self.patch(fastpath, "splice", self.spy)
        self.loop = Loopback(self)

    def test_plainTCPListenersSplice(self) -> None:
        self.assertIs(self.loop.port.transport, fastpath.SplicingServer)

    def test_smallMessagesAreNotSpliced(self) -> None:
        client, protocol = self.loop.connect()
        for n in range(20):
            message = pattern(1024, n)
            self.assertEqual(self.loop.echo(client, message), message)
        self.assertEqual(self.spy.reads, 0)
        self.assertFalse(protocol._bulk)

    def test_bulkIsSplicedAndExact(self) -> None:
        client, protocol = self.loop.connect()
        payload = pattern(8 << 20)
        self.assertEqual(self.loop.echo(client, payload), payload)
        self.assertGreater(self.spy.reads, 0)
        self.assertEqual(self.spy.writes, self.spy.reads)
        self.assertEqual(protocol.bytesEchoed, len(payload))

    def test_smallAfterBulkGoesBackToPlain(self) -> None:
        client, protocol = self.loop.connect()
        bulk = pattern(1 << 20)
        self.assertEqual(self.loop.echo(client, bulk), bulk)
        self.assertTrue(protocol._bulk)
        small = pattern(100, 7)
        self.assertEqual(self.loop.echo(client, small), small)
        self.assertFalse(protocol._bulk)
        reads = self.spy.reads
        self.assertEqual(self.loop.echo(client, small), small)
        self.assertEqual(self.spy.reads, reads)

    def test_partialSendsQueueTheRestInOrder(self) -> None:
        """
        A client that reads only when it cannot send: the server's splices
        back to it are cut short, the rest goes through the transport's
        buffer, reading pauses, and it all comes back in order.
        """
        client, protocol = self.loop.connect()
        transport = protocol.transport
        queued: list[int] = []
        iterate = self.loop.iterate

        def iterateAndLook() -> None:
            iterate()
            queued.append(
                len(transport.dataBuffer) - transport.offset + transport._tempDataLen
            )

        self.loop.iterate = iterateAndLook  # type: ignore[method-assign]
        payload = pattern(16 << 20)
        self.assertEqual(self.loop.echo(client, payload, lazy=True), payload)
        self.assertGreater(self.spy.partial, 0)
        self.assertGreater(protocol._resumes, 0)
        # Reading paused while anything was queued: never more than one
        # read's worth waited in the transport.
        self.assertGreater(max(queued), 0)
        self.assertLessEqual(max(queued), stream.DIRECT_READ_SIZE)

    def test_halfClose(self) -> None:
        client, protocol = self.loop.connect()
        payload = pattern(3 << 20)
        self.assertEqual(self.loop.echo(client, payload, halfClose=True), payload)
        self.assertGreater(self.spy.reads, 0)
        self.loop.until(lambda: not self.loop.service.factory.connections, "close")

    def test_brokenSpliceNeverLeaksBytesToTheNextConnection(self) -> None:
        """
        An unexpected error between splicing in and splicing out loses that
        connection and throws the pipe away; the next connection gets its
        own bytes only.
        """
        first, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(first, pattern(1 << 20)), pattern(1 << 20))
        oldPipe = fastpath._SharedPipe.fds
        assert oldPipe is not None
        # The pipe, by inode: its descriptor numbers are free for reuse
        # once it is thrown away, by the new pipe as much as anything.
        oldInode = os.fstat(oldPipe[0]).st_ino
        self.spy.failWrite = RuntimeError("injected")
        first.sendall(pattern(200000, 3))
        self.loop.until(
            lambda: protocol not in self.loop.service.factory.connections, "loss"
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(fastpath._SharedPipe.fds)

        self.spy.failWrite = None
        second, _ = self.loop.connect()
        payload = pattern(2 << 20, 11)
        self.assertEqual(self.loop.echo(second, payload), payload)
        newPipe = fastpath._SharedPipe.fds
        assert newPipe is not None
        self.assertNotEqual(os.fstat(newPipe[0]).st_ino, oldInode)

    def test_clientGoneWhileSplicing(self) -> None:
        """
        The splice back fails because the client reset: the connection is
        lost, and what was in the pipe is dropped with it.
        """
        client, protocol = self.loop.connect()
        self.assertEqual(self.loop.echo(client, pattern(1 << 20)), pattern(1 << 20))
        self.spy.failWrite = ConnectionResetError(errno.ECONNRESET, "reset")
        client.sendall(pattern(100000))
        self.loop.until(
            lambda: protocol not in self.loop.service.factory.connections, "loss"
        )
        self.assertEqual(pipeHolds(), 0)
        self.assertIsNotNone(fastpath._SharedPipe.fds)

    def test_urgentDataDoesNotStallTheEcho(self) -> None:
        """
        A client in bulk sends a byte of TCP urgent data (MSG_OOB) and then
        more: splice(2) stops at the urgent mark and would say "try again"
        for ever while epoll keeps reporting the socket readable, a busy
        loop and a stalled echo.  The read there is a plain recv(), which
        steps over the urgent byte (it is out of band: not echoed, as
        Twisted's own reads have it), and the rest comes back in order.
        """
        client, protocol = self.loop.connect()
        first, second = pattern(1 << 20, 1), pattern(1 << 20, 2)
        self.assertEqual(self.loop.echo(client, first), first)
        self.assertTrue(protocol._bulk)
        client.send(b"!", socket.MSG_OOB)
        self.assertEqual(self.loop.echo(client, second), second)
        self.assertEqual(protocol.bytesEchoed, len(first) + len(second))

    def test_kernelThatCannotSplice(self) -> None:
        """
        EINVAL from splicing a socket turns splicing off for the process;
        the read it happened on, and every one after, is a plain one.
        """
        self.addCleanup(setattr, fastpath._SharedPipe, "usable", True)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client, protocol = self.loop.connect()
        self.spy.failRead = OSError(errno.EINVAL, "Invalid argument")
        payload = pattern(4 << 20)
        self.assertEqual(self.loop.echo(client, payload), payload)
        self.assertFalse(fastpath._SharedPipe.usable)
        self.assertEqual(self.spy.reads, 0)
        [warning] = [e for e in events if e.get("event") == "splice.unavailable"]
        self.assertEqual(warning["error"], os.strerror(errno.EINVAL))

    def test_underTheProxyWrapper(self) -> None:
        """
        Past the PROXY header, a bulk client is spliced too, and the echo
        is the client's bytes only, not the header.
        """
        loop = Loopback(self, listen="haproxy:tcp:0:interface=127.0.0.1")
        self.assertIs(loop.port.transport, fastpath.SplicingServer)
        client, protocol = loop.connectProxied()
        self.assertEqual(protocol.source, "192.0.2.7")
        payload = pattern(4 << 20, 9)
        self.assertEqual(loop.echo(client, payload), payload)
        self.assertGreater(self.spy.reads, 0)
        self.assertEqual(protocol.bytesEchoed, len(payload))

    def test_onTheEchotwistReactor(self) -> None:
        loop = Loopback(self, EchotwistEPollReactor)
        client, _ = loop.connect()
        payload = pattern(4 << 20, 5)
        self.assertEqual(loop.echo(client, payload, chunks=[200000]), payload)
        self.assertGreater(self.spy.reads, 0)

    @settings(
        max_examples=30,
        deadline=None,
        # Run for each reactor (a subclass below): examples are shared.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        st.lists(
            st.sampled_from([1, 100, 16383, 16384, 65536, 131072, 131073, 500000]),
            min_size=1,
            max_size=8,
        ),
        st.integers(1, 6),
        st.booleans(),
    )
    def test_anyChunking(self, chunks: list[int], repeats: int, lazy: bool) -> None:
        """
        A stream sent as any sequence of chunk sizes, a few times over, read
        eagerly or lazily, through small socket buffers: it comes back
        exact.
        """
        size = sum(chunks) * repeats
        client, protocol = self.loop.connect(buffers=8192)
        payload = pattern(size, size)
        try:
            self.assertEqual(
                self.loop.echo(client, payload, chunks=chunks, lazy=lazy, within=5),
                payload,
            )
            self.assertEqual(protocol.bytesEchoed, size)
        finally:
            client.close()
            self.loop.until(
                lambda: protocol not in self.loop.service.factory.connections, "close"
            )


class SpliceOnTheEchotwistReactorTests(SpliceTests):
    """
    The same, under C{twistd --reactor echotwist}, whose loop echoes small
    reads itself: connections go from its plain echo to splicing and back.
    """

    reactorType = EchotwistEPollReactor


class NotSplicedTests(SynchronousTestCase):
    """
    Only plain TCP straight to Echo splices.
    """

    def test_notOnTwistedsReactor(self) -> None:
        """
        On Twisted's own epoll reactor (C{--reactor epoll}) the fast path
        is off: a TCP listener, plain or under the PROXY wrapper, keeps
        Twisted's C{tcp.Server}, nothing is spliced, and the echo goes
        through the transport's C{write()}.
        """
        from twisted.internet import tcp

        spy = Spy()
        self.patch(fastpath, "splice", spy)
        for listen in [
            "tcp:0:interface=127.0.0.1",
            "haproxy:tcp:0:interface=127.0.0.1",
        ]:
            loop = Loopback(self, EPollReactor, listen=listen)
            self.assertIs(loop.port.transport, tcp.Server)
            if listen.startswith("haproxy:"):
                client, protocol = loop.connectProxied()
                transport = protocol.transport.transport
            else:
                client, protocol = loop.connect()
                transport = protocol.transport
            self.assertIs(type(transport), tcp.Server)
            self.assertFalse(protocol.sendsDirectlyTo(transport))
            payload = pattern(1 << 20, 11)
            self.assertEqual(loop.echo(client, payload), payload)
            self.assertEqual(protocol.bytesEchoed, len(payload))
        self.assertEqual((spy.reads, spy.writes), (0, 0))

    def test_tlsAndUNIXListenersDoNot(self) -> None:
        reactor = EchotwistEPollReactor()
        directory = scratchDirectory(self)
        key, certificate = selfSignedCertificate(directory)
        service = EchoService(
            [
                f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
                f"unix:{os.path.join(directory, 'echo.sock')}",
            ],
            reactor=reactor,
            logConnections=False,
        )
        service.privilegedStartService()
        self.addCleanup(closeEpoll, reactor)
        self.addCleanup(reactor.disconnectAll)
        ports = [listener.port for listener in service.listeners]  # type: ignore[attr-defined]
        self.assertEqual(len(ports), 2)
        for port in ports:
            self.assertIsNot(port.transport, fastpath.SplicingServer)
        # TLS has a transport of its own (echotwist._fast.tls), which never
        # splices.  Imported here: TLS is an extra (selfSignedCertificate
        # skipped this test without it).
        from echotwist._fast.tls import DirectTLSServer

        self.assertIs(ports[0].transport, DirectTLSServer)
        self.assertFalse(issubclass(DirectTLSServer, fastpath.SplicingServer))
        self.assertNotIsInstance(ports[0].factory, ListenerFactory)
