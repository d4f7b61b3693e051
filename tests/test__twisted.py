"""
echotwist's one door to Twisted's private names (L{echotwist._twisted}):
one test per access, each against the installed Twisted, each failing with
a sentence that names what a Twisted release removed or changed.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import socket
import sys
import tempfile
import types
from collections.abc import Callable
from select import EPOLLIN
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.tcp import Port as TCPPort
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.udp import Port as UDPPort
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel, Request

from echotwist._twisted import (
    FOREGROUND_REPORT,
    closeEpoll,
    datagramPortFromDescriptor,
    epollParts,
    exitSignal,
    handReactorToTwist,
    nothingQueued,
    orGlobalReactor,
    reportFailedStart,
    requestMethod,
    setAcceptLogObserver,
    tlsReceived,
    tlsReceiveFailed,
    tlsSettled,
    twistdMayOpenLogFile,
    writeShutDown,
)
from echotwist._twisted.haproxy import (
    PROXY_V2_SIGNATURE,
    proxyV1Parser,
    proxyV2Parser,
)
from tests._tools import requireTLS, scratchDirectory, selfSignedCertificate


class _DoorTestCase(SynchronousTestCase):
    def relies(self, ok: object, what: str) -> None:
        """
        Fail, if not C{ok}, with a sentence naming the private Twisted
        behaviour C{what} that echotwist relies on.
        """
        if not ok:
            self.fail(
                f"echotwist relies on {what}, which this Twisted "
                "release removed or changed: update echotwist._twisted"
            )

    def call(self, f: Callable[[], Any], what: str) -> Any:
        try:
            return f()
        except (AttributeError, ImportError, TypeError, KeyError) as e:
            self.fail(
                f"echotwist relies on {what}, which this Twisted release "
                f"removed or changed ({e!r}): update echotwist._twisted"
            )


class ProxyParserTests(_DoorTestCase):
    """
    The private PROXY header parsers of L{twisted.protocols.haproxy}.
    """

    def test_v1(self) -> None:
        parser = self.call(proxyV1Parser, "haproxy._v1parser.V1Parser")
        info, rest = self.call(
            lambda: parser.feed(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7\r\nab"),
            "V1Parser.feed returning (info, rest)",
        )
        self.relies(
            info is not None and info.source.host == "203.0.113.7",
            "V1Parser.feed returning the source address",
        )
        self.assertEqual(rest, b"ab")

    def test_v1BareUnknown(self) -> None:
        """
        C{PROXY UNKNOWN} with nothing after it is taken: the door's
        subclass hooks Twisted's C{V1Parser.parse}.
        """
        info, rest = self.call(
            lambda: proxyV1Parser().feed(b"PROXY UNKNOWN\r\n"),
            "V1Parser.feed calling the classmethod parse(line)",
        )
        self.relies(info is not None, "V1Parser.feed calling parse(line)")
        self.assertIsNone(info.source)

    def test_v2(self) -> None:
        body = socket.inet_aton("203.0.113.7") + socket.inet_aton("192.0.2.1")
        header = PROXY_V2_SIGNATURE + b"\x21\x11\x00\x0c" + body + b"\x9c\x40\x00\x07"
        info, rest = self.call(
            lambda: proxyV2Parser().feed(header + b"ab"),
            "haproxy._v2parser.V2Parser.feed",
        )
        self.relies(
            info is not None and info.source.host == "203.0.113.7",
            "V2Parser.feed returning the source address",
        )
        self.assertEqual(rest, b"ab")

    def test_v2Signature(self) -> None:
        self.relies(
            PROXY_V2_SIGNATURE == b"\r\n\r\n\x00\r\nQUIT\n",
            "V2Parser.PREFIX being the v2 signature",
        )


class TransportTests(_DoorTestCase):
    """
    The private write state of L{FileDescriptor}.
    """

    def test_nothingQueued(self) -> None:
        transport = FileDescriptor(MemoryReactorClock())
        self.relies(
            self.call(lambda: nothingQueued(transport), "FileDescriptor._tempDataLen"),
            "a new FileDescriptor's _tempDataLen being 0",
        )
        transport.connected = True
        transport.write(b"x")
        self.relies(
            not nothingQueued(transport),
            "FileDescriptor.write() counting in _tempDataLen",
        )

    def test_writeShutDown(self) -> None:
        class _Sending(FileDescriptor):
            def writeSomeData(self, data: bytes) -> int:
                return len(data)

        transport = _Sending(MemoryReactorClock())
        transport.connected = True
        self.assertFalse(
            self.call(
                lambda: writeShutDown(transport), "FileDescriptor._writeDisconnected"
            )
        )
        transport.loseWriteConnection()
        transport.doWrite()
        self.relies(
            writeShutDown(transport),
            "FileDescriptor.doWrite() setting _writeDisconnected once the"
            " write side is shut down",
        )


class _RefusingSocket:
    def __init__(self, real: socket.socket) -> None:
        self.real = real

    def accept(self) -> object:
        raise OSError(errno.ENOBUFS, "No buffer space available")

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


class PortTests(_DoorTestCase):
    """
    The private logger of L{twisted.internet.tcp.Port} and the private
    adoption of a datagram socket into a L{twisted.internet.udp.Port}.
    """

    def test_acceptLogObserver(self) -> None:
        reactor = MemoryReactorClock()
        port = TCPPort(
            0, Factory.forProtocol(Protocol), interface="127.0.0.1", reactor=reactor
        )
        port.startListening()
        self.addCleanup(port.socket.close)
        events: list[dict[str, Any]] = []
        self.call(
            lambda: setAcceptLogObserver(port, events.append),  # type: ignore[arg-type]
            "tcp.Port._logger",
        )
        real = port.socket
        port.socket = _RefusingSocket(real)
        try:
            port.doRead()
        finally:
            port.socket = real
        self.relies(
            any(
                e.get("log_failure") is not None or "accept" in str(e.get("log_format"))
                for e in events
            ),
            "tcp.Port.doRead() logging an accept error through _logger",
        )

    def test_datagramPortFromDescriptor(self) -> None:
        reactor = MemoryReactorClock()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)

        class _Port(UDPPort):
            pass

        port = self.call(
            lambda: datagramPortFromDescriptor(
                _Port, reactor, sock.fileno(), socket.AF_INET, DatagramProtocol(), 65535
            ),
            "udp.Port._fromListeningDescriptor",
        )
        self.assertIsInstance(port, _Port)
        port.startListening()
        self.addCleanup(port.connectionLost)
        self.relies(
            port.getHost().port == sock.getsockname()[1]
            and port.maxPacketSize == 65535,
            "udp.Port._fromListeningDescriptor adopting the socket given",
        )


class RequestMethodTests(_DoorTestCase):
    """
    The private C{_command} of L{HTTPChannel}.
    """

    def test_methodBeforeTheBody(self) -> None:
        seen: list[bytes | None] = []

        class _Seeing(Request):
            def gotLength(self, length: int | None) -> None:
                seen.append(requestMethod(self.channel))
                super().gotLength(length)

        channel = HTTPChannel()
        channel.requestFactory = _Seeing  # type: ignore[assignment]
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"POST /metrics HTTP/1.1\r\nContent-Length: 1\r\n\r\n")
        self.relies(
            seen == [b"POST"],
            "HTTPChannel._command holding the method when Request.gotLength runs",
        )


class _Received(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.reasons: list[Any] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.reasons.append(reason)


class TLSProtocolPartsTests(_DoorTestCase):
    """
    The private state and methods of
    L{twisted.protocols.tls.TLSMemoryBIOProtocol} that the loop's TLS echo
    (L{echotwist._fast.tlsloop}) relies on; a real TLS server protocol on a
    L{StringTransport} and a pyOpenSSL client on memory BIOs.
    """

    def setUp(self) -> None:
        requireTLS()
        from OpenSSL import SSL
        from twisted.internet.ssl import PrivateCertificate
        from twisted.protocols.tls import TLSMemoryBIOFactory

        self.SSL = SSL
        directory = scratchDirectory(self)
        key, certificate = selfSignedCertificate(directory)
        with open(key) as k, open(certificate) as c:
            pem = k.read() + c.read()
        options = PrivateCertificate.loadPEM(pem).options()
        self.received = _Received()
        factory = TLSMemoryBIOFactory(
            options, False, Factory.forProtocol(lambda: self.received)
        )
        self.server = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        self.client.set_connect_state()

    def fromClient(self) -> bytes:
        out = b""
        while True:
            try:
                out += self.client.bio_read(65536)
            except self.SSL.WantReadError:
                return out

    def toClient(self) -> None:
        data = self.transport.value()
        self.transport.clear()
        if data:
            self.client.bio_write(data)

    def handshake(self) -> None:
        for _ in range(10):
            try:
                self.client.do_handshake()
                self.server.dataReceived(self.fromClient())
                self.toClient()
                return
            except self.SSL.WantReadError:
                self.server.dataReceived(self.fromClient())
                self.toClient()
        self.fail("no handshake")

    def test_tlsSettled(self) -> None:
        settled = self.call(
            lambda: tlsSettled(self.server),
            "TLSMemoryBIOProtocol's _handshakeDone, _appSendBuffer,"
            " _lostTLSConnection and _aborted",
        )
        self.relies(not settled, "_handshakeDone false before the handshake")
        self.handshake()
        self.relies(tlsSettled(self.server), "_handshakeDone once it is done")
        self.server.write(b"held")
        self.relies(tlsSettled(self.server), "nothing buffered after a write")
        self.server.abortConnection()
        self.relies(not tlsSettled(self.server), "_aborted after abortConnection")

    def test_tlsReceived(self) -> None:
        self.handshake()
        self.client.send(b"hello")
        self.server.getHandle().bio_write(self.fromClient())
        self.call(
            lambda: tlsReceived(self.server), "TLSMemoryBIOProtocol._flushReceiveBIO"
        )
        self.relies(
            self.received.data == b"hello",
            "_flushReceiveBIO delivering what OpenSSL decrypts",
        )
        # A close_notify: the loop answers with one and closes.
        self.client.shutdown()
        self.server.getHandle().bio_write(self.fromClient())
        tlsReceived(self.server)
        self.toClient()
        self.relies(
            self.transport.disconnecting,
            "_flushReceiveBIO closing on a close_notify",
        )
        with self.assertRaises(self.SSL.ZeroReturnError):
            self.client.recv(100)

    def test_tlsReceiveFailed(self) -> None:
        self.handshake()
        self.client.send(b"x" * 100)
        record = bytearray(self.fromClient())
        record[-1] ^= 0xFF
        handle = self.server.getHandle()
        handle.bio_write(bytes(record))
        try:
            handle.recv(65536)
        except self.SSL.Error:
            self.call(
                lambda: tlsReceiveFailed(self.server),
                "TLSMemoryBIOProtocol._tlsShutdownFinished and _flushSendBIO",
            )
        else:
            self.fail("a corrupt record decrypted")
        self.relies(
            self.transport.disconnecting and self.transport.value(),
            "_tlsShutdownFinished closing after sending an alert",
        )
        self.server.connectionLost(Failure(ConnectionDone()))
        [reason] = self.received.reasons
        self.relies(
            reason.check(self.SSL.Error),
            "_tlsShutdownFinished keeping the failure for connectionLost",
        )


class OpenSSLTests(_DoorTestCase):
    """
    The private names of pyOpenSSL's C{Connection} that the loop's TLS
    echo relies on (L{echotwist._twisted.openssl}): a memory-BIO server and
    client talking through them and through pyOpenSSL's own methods.
    """

    def setUp(self) -> None:
        requireTLS()
        from OpenSSL import SSL
        from twisted.internet.ssl import PrivateCertificate

        from echotwist._twisted import openssl

        self.SSL = SSL
        self.openssl = openssl
        directory = scratchDirectory(self)
        key, certificate = selfSignedCertificate(directory)
        with open(key) as k, open(certificate) as c:
            pem = k.read() + c.read()
        context = PrivateCertificate.loadPEM(pem).options().getContext()
        self.server = SSL.Connection(context, None)
        self.server.set_accept_state()
        self.client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        self.client.set_connect_state()
        for _ in range(10):
            done = 0
            for end in (self.client, self.server):
                try:
                    end.do_handshake()
                    done += 1
                except SSL.WantReadError:
                    pass
            self.carry(self.client, self.server)
            self.carry(self.server, self.client)
            if done == 2:
                break

    def carry(self, source: Any, to: Any) -> None:
        while True:
            try:
                to.bio_write(source.bio_read(65536))
            except self.SSL.WantReadError:
                return

    def test_connectionParts(self) -> None:
        parts = self.call(
            lambda: self.openssl.connectionParts(self.server),
            "pyOpenSSL Connection's _ssl, _into_ssl, _from_ssl",
        )
        self.relies(parts is not None, "a memory-BIO Connection's _ssl and BIOs")
        ssl, into, out = parts
        lib, ffi = self.openssl.lib, self.openssl.ffi
        self.client.send(b"through the parts")
        record = self.client.bio_read(65536)
        self.relies(
            lib.BIO_write(into, record, len(record)) == len(record),
            "_into_ssl being the BIO OpenSSL reads from",
        )
        buffer = ffi.new("char[]", 100)
        n = lib.SSL_read(ssl, buffer, 100)
        self.relies(
            ffi.buffer(buffer, n)[:] == b"through the parts",
            "_ssl being the connection's SSL object",
        )
        self.relies(lib.SSL_write(ssl, buffer, n) == n, "SSL_write on _ssl")
        buffer = ffi.new("char[]", 65536)
        k = lib.BIO_read(out, buffer, 65536)
        self.relies(k > 0, "_from_ssl being the BIO OpenSSL writes to")
        self.client.bio_write(ffi.buffer(buffer, k)[:])
        self.assertEqual(self.client.recv(100), b"through the parts")
        # A Connection on a socket has no memory BIOs.
        plain = socket.socket()
        self.addCleanup(plain.close)
        onSocket = self.SSL.Connection(self.SSL.Context(self.SSL.TLS_METHOD), plain)
        self.assertIsNone(self.openssl.connectionParts(onSocket))

    def test_connectionPartsNeedTheCalls(self) -> None:
        """
        Where C{cryptography}'s C{lib} lacks one of the functions the echo
        calls, L{connectionParts} says None: Twisted's path serves, rather
        than every echo failing on an AttributeError.
        """
        self.assertIsNotNone(self.openssl.connectionParts(self.server))
        lib = self.openssl.lib
        for missing in self.openssl.CALLS:
            self.relies(hasattr(lib, missing), f"cryptography's lib.{missing}")
            trimmed = types.SimpleNamespace(
                **{name: getattr(lib, name) for name in self.openssl.CALLS}
            )
            delattr(trimmed, missing)
            self.patch(self.openssl, "lib", trimmed)
            self.assertIsNone(self.openssl.connectionParts(self.server), missing)

    def test_raiseSSLError(self) -> None:
        ssl, _, _ = self.openssl.connectionParts(self.server)
        buffer = self.openssl.ffi.new("char[]", 100)
        result = self.openssl.lib.SSL_read(ssl, buffer, 100)
        with self.assertRaises(self.SSL.WantReadError):
            self.call(
                lambda: self.openssl.raiseSSLError(self.server, result),
                "pyOpenSSL Connection._raise_ssl_error",
            )
        self.client.shutdown()
        self.carry(self.client, self.server)
        result = self.openssl.lib.SSL_read(ssl, buffer, 100)
        with self.assertRaises(self.SSL.ZeroReturnError):
            self.openssl.raiseSSLError(self.server, result)


class ReactorTests(_DoorTestCase):
    """
    The private internals of L{EPollReactor} and
    L{twisted.internet.base.ReactorBase}.
    """

    def test_epollParts(self) -> None:
        reactor = EPollReactor()
        parts = self.call(
            lambda: epollParts(reactor),
            "EPollReactor's _poller (its poll and register),"
            " _selectables, _doReadOrWrite, _disconnectSelectable",
        )
        self.addCleanup(parts.poll.__self__.close)
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reads: list[int] = []
        lost: list[object] = []

        class _Readable(FileDescriptor):
            def fileno(self) -> int:
                return ours.fileno()

            def doRead(self) -> None:
                reads.append(1)

            def connectionLost(self, reason: object) -> None:
                lost.append(reason)

        readable = _Readable(reactor)
        reactor.addReader(readable)
        self.relies(
            parts.selectables.get(ours.fileno()) is readable,
            "EPollReactor._selectables holding a reader by descriptor",
        )
        theirs.sendall(b"x")
        events = parts.poll(5, len(parts.selectables))
        self.relies((ours.fileno(), EPOLLIN) in events, "EPollReactor._poller.poll")
        # A descriptor of the loop's own, not a selectable: the same epoll
        # object reports it.
        own, other = socket.socketpair()
        self.addCleanup(own.close)
        self.addCleanup(other.close)
        parts.register(own.fileno(), EPOLLIN)
        other.sendall(b"y")
        events = parts.poll(5, 2)
        self.relies(
            (own.fileno(), EPOLLIN) in events,
            "EPollReactor._poller.register adding to the epoll object it polls",
        )
        parts.doReadOrWrite(readable, ours.fileno(), EPOLLIN)
        self.relies(reads == [1], "EPollReactor._doReadOrWrite calling doRead")
        parts.disconnectSelectable(readable, ConnectionDone(), True)
        self.relies(
            len(lost) == 1 and ours.fileno() not in parts.selectables,
            "_disconnectSelectable removing the reader and losing it",
        )

    def test_closeEpoll(self) -> None:
        reactor = EPollReactor()
        epoll = epollParts(reactor).poll.__self__
        self.call(lambda: closeEpoll(reactor), "EPollReactor._poller")
        self.relies(epoll.closed, "EPollReactor._poller being its epoll object")

    def test_justStopped(self) -> None:
        reactor = EPollReactor()
        self.addCleanup(closeEpoll, reactor)
        seen: list[bool] = []

        justStopped = epollParts(reactor).justStopped

        def stop() -> None:
            reactor.stop()
            seen.append(
                self.call(lambda: justStopped(reactor), "ReactorBase._justStopped")
            )

        reactor.callWhenRunning(stop)
        reactor.run(installSignalHandlers=False)
        self.relies(seen == [True], "ReactorBase.stop() setting _justStopped")
        self.assertFalse(justStopped(reactor))

    def test_exitSignal(self) -> None:
        reactor = EPollReactor()
        self.addCleanup(closeEpoll, reactor)
        self.assertIsNone(exitSignal(reactor))
        reactor.sigTerm(signal.SIGTERM)
        self.relies(
            exitSignal(reactor) == signal.SIGTERM,
            "ReactorBase.sigTerm() keeping the signal in _exitSignal",
        )


class TwistdTests(_DoorTestCase):
    """
    twistd's and twist's private behaviour: the daemon's status pipe, the
    choice of a log file, twist's reactor options.
    """

    def test_reportFailedStart(self) -> None:
        from twisted.scripts._twistd_unix import UnixApplicationRunner
        from twisted.scripts.twistd import ServerOptions

        r, w = os.pipe()
        self.addCleanup(os.close, r)
        runner: dict[str, Any] = {"statusPipe": w}
        self.assertTrue(reportFailedStart(runner, b"x" * 200))
        self.assertIsNone(runner["statusPipe"])
        err = io.StringIO()
        self.patch(sys, "__stderr__", err)
        status = self.call(
            lambda: UnixApplicationRunner(ServerOptions())._waitForStart(r),
            "_twistd_unix.UnixApplicationRunner._waitForStart",
        )
        self.relies(status == 1, "_waitForStart taking b'1 ...' as a failure")
        self.relies(
            repr(b"x" * FOREGROUND_REPORT) in err.getvalue(),
            "_waitForStart reading 100 bytes: a status, a space, a message",
        )
        self.assertFalse(reportFailedStart({}, b"no pipe"))

    def test_twistdMayOpenLogFile(self) -> None:
        from twisted.scripts._twistd_unix import UnixAppLogger
        from twisted.scripts.twistd import ServerOptions

        # Under the system's temporary directory: pytest runs this too, in
        # the checkout.
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        # twistd's logger rotates its log file on SIGUSR1.
        self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        for logfile, nodaemon in [
            ("a.log", True),
            ("b.log", False),
            ("-", True),
            ("", True),
        ]:
            options = ServerOptions()
            options["nodaemon"] = nodaemon
            path = (
                os.path.join(directory, logfile)
                if logfile not in ("", "-")
                else logfile
            )
            options["logfile"] = path
            observer = self.call(
                lambda options=options: UnixAppLogger(options)._getLogObserver(),
                "_twistd_unix.UnixAppLogger._getLogObserver",
            )
            opened = bool(path) and path != "-" and os.path.exists(path)
            self.relies(
                twistdMayOpenLogFile(options) == opened,
                f"UnixAppLogger's choice of a log file (--logfile={logfile!r},"
                f" nodaemon={nodaemon})",
            )
            del observer
        self.assertTrue(twistdMayOpenLogFile(None))

    def test_handReactorToTwist(self) -> None:
        from twisted.application.twist._options import TwistOptions

        options = TwistOptions()
        reactor = object()
        self.relies(
            self.call(
                lambda: handReactorToTwist(options, reactor, "echotwist"),
                "TwistOptions' reactor and reactorName",
            ),
            "TwistOptions holding reactorName and no reactor until parsed",
        )
        self.assertIs(options["reactor"], reactor)
        self.assertEqual(options["reactorName"], "echotwist")
        self.assertFalse(handReactorToTwist({"logfile": ""}, reactor, "echotwist"))
        self.assertFalse(handReactorToTwist(None, reactor, "echotwist"))


class GlobalReactorTests(SynchronousTestCase):
    """
    L{orGlobalReactor}: the reactor given, or the global one.
    """

    def test_givenOrGlobal(self) -> None:
        from twisted.internet import reactor

        clock = MemoryReactorClock()
        self.assertIs(orGlobalReactor(clock), clock)
        self.assertIs(orGlobalReactor(None), reactor)
