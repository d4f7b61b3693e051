"""
The TLS echo in the reactor's own loop (L{echotwist._fast.tlsloop}): a read that
is one whole record of application data is echoed without Twisted's TLS
protocol; anything else is handed back to it.

A real EchoService with an C{ssl:} listener on a private reactor that the
test iterates, and a pyOpenSSL client on memory BIOs over a real loopback
socket, so that each test decides exactly which bytes go on the wire and
where a read ends.  Each hand-back scenario runs twice, on Twisted's own
epoll reactor (no loop echo: Twisted's TLS protocol takes every read) and
on echotwist's, and what the client sees must be the same; on echotwist's,
the loop must have echoed or handed back at least once, so the test is
about the fast path.  Every wait is bounded by WAIT.
"""

from __future__ import annotations

import socket
import time
import unittest
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SynchronousTestCase

from echotwist import Echo
from echotwist.connections import EchoFactory
from echotwist.reactor import EchotwistEPollReactor
from tests._tools import requireTLS, scratchDirectory, selfSignedCertificate
from tests._twistd import WAIT
from tests.test__fast_tcp import Loopback, pattern

try:
    from OpenSSL import SSL

    from echotwist._fast import tlsloop
except ImportError:  # TLS is an extra; setUp skips (or, in CI, fails)
    pass


def records(sizes: list[int]) -> bytes:
    """
    TLS-shaped records (a header and that many bytes of body each).
    """
    out = b""
    for n, size in enumerate(sizes):
        out += bytes([23, 3, 3, size >> 8, size & 0xFF]) + bytes([n % 256]) * size
    return out


class RecordFollowingTests(SynchronousTestCase):
    """
    L{tlsloop.EchoTLSProtocol.followRecords}: where the records end,
    however the stream is cut into reads.
    """

    def setUp(self) -> None:
        requireTLS()

    @given(
        st.lists(st.integers(0, 2000), min_size=1, max_size=6),
        st.lists(st.integers(1, 3000), min_size=1, max_size=20),
    )
    def test_boundariesWhereverReadsEnd(
        self, sizes: list[int], cuts: list[int]
    ) -> None:
        """
        After each read the protocol is at a record boundary exactly when
        the bytes received so far end where a record ends.
        """
        stream = records(sizes)
        ends = set()
        at = 0
        for size in sizes:
            at += 5 + size
            ends.add(at)
        protocol = tlsloop.EchoTLSProtocol.__new__(tlsloop.EchoTLSProtocol)
        received = 0
        n = 0
        while received < len(stream):
            read = stream[received : received + cuts[n % len(cuts)]]
            n += 1
            protocol.followRecords(read)
            received += len(read)
            self.assertEqual(protocol.atRecordBoundary, received in ends, received)


class _SystemOpenSSL:
    """
    The few calls of pyOpenSSL's C{Connection} that L{_Client} makes, on
    the system's libssl through ctypes, plus C{keyUpdate}: TLS 1.3's
    KeyUpdate, which pyOpenSSL does not offer.
    """

    _WANT_READ, _ZERO_RETURN = 2, 6

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("ssl")
        if name is None:
            raise unittest.SkipTest("no system libssl for a KeyUpdate")
        lib = ctypes.CDLL(name)
        pointer = ctypes.c_void_p
        for function, arguments, result in [
            ("TLS_client_method", [], pointer),
            ("SSL_CTX_new", [pointer], pointer),
            ("SSL_CTX_free", [pointer], None),
            ("SSL_new", [pointer], pointer),
            ("SSL_free", [pointer], None),
            ("BIO_s_mem", [], pointer),
            ("BIO_new", [pointer], pointer),
            ("SSL_set_bio", [pointer, pointer, pointer], None),
            ("SSL_set_connect_state", [pointer], None),
            ("SSL_do_handshake", [pointer], ctypes.c_int),
            ("SSL_read", [pointer, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
            ("SSL_write", [pointer, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
            ("SSL_get_error", [pointer, ctypes.c_int], ctypes.c_int),
            ("SSL_key_update", [pointer, ctypes.c_int], ctypes.c_int),
            ("BIO_read", [pointer, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
            ("BIO_write", [pointer, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
        ]:
            getattr(lib, function).argtypes = arguments
            getattr(lib, function).restype = result
        self.lib = lib
        self.buffer = ctypes.create_string_buffer(65536)
        self.context = lib.SSL_CTX_new(lib.TLS_client_method())
        self.ssl = lib.SSL_new(self.context)
        self.incoming = lib.BIO_new(lib.BIO_s_mem())
        self.outgoing = lib.BIO_new(lib.BIO_s_mem())
        lib.SSL_set_bio(self.ssl, self.incoming, self.outgoing)
        lib.SSL_set_connect_state(self.ssl)

    def close(self) -> None:
        self.lib.SSL_free(self.ssl)
        self.lib.SSL_CTX_free(self.context)

    def _check(self, result: int) -> int:
        if result > 0:
            return result
        error = self.lib.SSL_get_error(self.ssl, result)
        if error == self._WANT_READ:
            raise SSL.WantReadError()
        if error == self._ZERO_RETURN:
            raise SSL.ZeroReturnError()
        raise SSL.Error(f"SSL_get_error {error}")

    def do_handshake(self) -> None:
        self._check(self.lib.SSL_do_handshake(self.ssl))

    def send(self, data: bytes) -> int:
        return self._check(self.lib.SSL_write(self.ssl, data, len(data)))

    def recv(self, size: int) -> bytes:
        n = self._check(self.lib.SSL_read(self.ssl, self.buffer, size))
        return self.buffer.raw[:n]

    def bio_read(self, size: int) -> bytes:
        n = self.lib.BIO_read(self.outgoing, self.buffer, size)
        if n <= 0:
            raise SSL.WantReadError()
        return self.buffer.raw[:n]

    def bio_write(self, data: bytes) -> int:
        return int(self.lib.BIO_write(self.incoming, data, len(data)))

    def keyUpdate(self) -> None:
        """
        Send a KeyUpdate that asks the server to update its keys too.
        """
        if self.lib.SSL_key_update(self.ssl, 1) != 1:  # SSL_KEY_UPDATE_REQUESTED
            raise SSL.Error("SSL_key_update")
        # OpenSSL sends it with the next write or handshake call.
        self._check(self.lib.SSL_do_handshake(self.ssl))


class _Client:
    """
    A TLS client on memory BIOs over a non-blocking loopback socket to the
    loop's listener.
    """

    def __init__(
        self,
        loop: Loopback,
        tls12: bool = False,
        buffers: int = 0,
        system: bool = False,
    ) -> None:
        self.loop = loop
        case = loop.case
        known = set(loop.service.factory.connections)
        self.socket = socket.socket()
        if buffers:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
        self.socket.connect(("127.0.0.1", loop.port.getHost().port))
        self.socket.setblocking(False)
        case.addCleanup(self.socket.close)
        self.tls: Any
        if system:
            self.tls = _SystemOpenSSL()
            case.addCleanup(self.tls.close)
        else:
            context = SSL.Context(SSL.TLS_CLIENT_METHOD)
            if tls12:
                context.set_max_proto_version(SSL.TLS1_2_VERSION)
            self.tls = SSL.Connection(context, None)
            self.tls.set_connect_state()
        self.received = bytearray()
        #: The server's close_notify arrived.
        self.closeNotify = False
        #: The socket reached end of file (or was reset).
        self.eof = False
        #: The TLS error the client saw, if any.
        self.error: str | None = None
        self.reading = True
        loop.until(lambda: len(loop.service.factory.connections) > len(known), "accept")
        [self.protocol] = set(loop.service.factory.connections) - known
        if buffers:
            server = self.protocol.transport.socket
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)

    def wire(self) -> bytes:
        """
        What the client's TLS has to send, taken out of it (not sent).
        """
        out = b""
        while True:
            try:
                out += self.tls.bio_read(65536)
            except SSL.WantReadError:
                return out

    def put(self, data: bytes) -> None:
        """
        Send C{data} on the socket, iterating the server while it is full.
        """
        deadline = time.monotonic() + WAIT
        while data:
            if time.monotonic() > deadline:
                self.loop.case.fail("the server never took what was sent")
            try:
                data = data[self.socket.send(data) :]
            except BlockingIOError:
                self.pump()

    def pump(self) -> None:
        """
        Let the server run once, then take in what it sent.
        """
        self.loop.iterate()
        if not self.reading:
            return
        while not self.eof:
            try:
                chunk = self.socket.recv(65536)
            except BlockingIOError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self.tls.bio_write(chunk)
        while self.error is None and not self.closeNotify:
            try:
                self.received += self.tls.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.closeNotify = True
            except SSL.Error as e:
                self.error = str(e)
        # A renegotiation or a KeyUpdate may have something to answer.
        self.put(self.wire())

    def until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            if time.monotonic() > deadline:
                self.loop.case.fail(f"gave up waiting for {what}")
            self.pump()

    def handshake(self) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.tls.do_handshake()
                return
            except SSL.WantReadError:
                pass
            if time.monotonic() > deadline:
                self.loop.case.fail("no handshake")
            self.put(self.wire())
            self.pump()

    def record(self, data: bytes) -> bytes:
        """
        C{data} as the client's TLS would send it (one record up to 16
        KiB), not sent.
        """
        self.tls.send(data)
        return self.wire()

    def echo(self, data: bytes) -> None:
        """
        Send C{data} as a record and wait for its echo.
        """
        expected = len(self.received) + len(data)
        self.put(self.record(data))
        self.until(lambda: len(self.received) >= expected, "the echo")


class _LoopTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        requireTLS()
        directory = scratchDirectory(self)
        self.key, self.certificate = selfSignedCertificate(directory)
        self.reasons: list[str] = []
        original = EchoFactory.connectionClosed

        def closed(factory: EchoFactory, protocol: Echo, reason: str) -> None:
            self.reasons.append(reason)
            original(factory, protocol, reason)

        self.patch(EchoFactory, "connectionClosed", closed)
        self.fast: list[object] = []
        self.midRecord: list[bool] = []
        echoRead = tlsloop.echoRead

        def counting(fd: int, entry: tuple[Any, ...]) -> bool | BaseException:
            result = echoRead(fd, entry)
            self.fast.append(result)
            return result

        self.patch(tlsloop, "echoRead", counting)

    def inLoop(self, client: _Client) -> bool:
        """
        Whether the reactor's loop echoes C{client}'s next read itself.
        """
        echoes = getattr(client.loop.reactor, "_loopEchoes", {})
        return client.protocol.transport.transport.fileno() in echoes

    def loop(self, reactorType: type) -> Loopback:
        return Loopback(
            self,
            reactorType,
            f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.certificate}",
        )

    def both(
        self, scenario: Callable[[_Client], object], **client: Any
    ) -> tuple[object, list[object]]:
        """
        Run C{scenario} with a fresh client on Twisted's epoll reactor and
        on echotwist's; they must see the same.  Returns what it returned
        and what the loop's echo returned (on echotwist's reactor).
        """
        seen = []
        for reactorType in (EPollReactor, EchotwistEPollReactor):
            del self.fast[:], self.reasons[:]
            loop = self.loop(reactorType)
            tlsClient = _Client(loop, **client)
            tlsClient.handshake()
            seen.append((scenario(tlsClient), list(self.reasons)))
        self.assertEqual(seen[0], seen[1])
        return seen[1][0], list(self.fast)


class LoopEchoTests(_LoopTestCase):
    """
    Whole records are echoed in the loop; everything else is handed to
    Twisted's TLS protocol at the right point.
    """

    def test_wholeRecordsSkipTwistedsTLS(self) -> None:
        """
        After the handshake, whole records are echoed by the loop: Twisted's
        TLS protocol's dataReceived is not called for them, and every byte
        is counted.
        """
        calls = []
        original = tlsloop.EchoTLSProtocol.dataReceived

        def counting(protocol: Any, data: bytes) -> None:
            calls.append(len(data))
            original(protocol, data)

        self.patch(tlsloop.EchoTLSProtocol, "dataReceived", counting)
        loop = self.loop(EchotwistEPollReactor)
        client = _Client(loop)
        client.handshake()
        client.echo(b"first")
        before = len(calls)
        total = 5
        for n in range(30):
            message = pattern(1 + n * 331, n)
            client.echo(message)
            total += len(message)
        self.assertEqual(
            bytes(client.received[5:]),
            b"".join(pattern(1 + n * 331, n) for n in range(30)),
        )
        self.assertEqual(len(calls), before)
        # The first echo too: the read that finished the handshake put the
        # connection in the loop.
        self.assertEqual(self.fast, [True] * 31)
        self.assertEqual(client.protocol.bytesEchoed, total)

    def test_withoutPyOpenSSLsParts(self) -> None:
        """
        Where the door to pyOpenSSL's private names finds them missing (a
        pyOpenSSL that changed), no connection enters the loop's echo, and
        Twisted's path echoes every read.
        """
        self.patch(tlsloop, "connectionParts", lambda connection: None)
        loop = self.loop(EchotwistEPollReactor)
        client = _Client(loop)
        client.handshake()
        for n in range(3):
            client.echo(pattern(700, n))
        self.assertEqual(
            bytes(client.received), b"".join(pattern(700, n) for n in range(3))
        )
        self.assertFalse(self.inLoop(client))
        self.assertEqual(self.fast, [])

    def test_notBeforeTheHandshake(self) -> None:
        """
        A connection enters the loop's echo only once its handshake is
        done: not while the client's hello is half sent, nor after it.
        """
        loop = self.loop(EchotwistEPollReactor)
        client = _Client(loop)
        try:
            client.tls.do_handshake()
        except SSL.WantReadError:
            pass
        hello = client.wire()
        client.put(hello[:20])
        client.pump()
        self.assertFalse(self.inLoop(client))
        client.put(hello[20:])
        client.pump()
        self.assertFalse(self.inLoop(client))
        client.handshake()
        client.echo(b"S")
        self.assertTrue(self.inLoop(client))
        self.assertEqual(self.fast, [True])

    def test_notOnceClosing(self) -> None:
        """
        Once the server decided to close (its close_notify sent, the
        client's awaited), what the client still sends is not echoed: the
        loop hands such a read to Twisted's TLS protocol, which drops it,
        and the connection ends when the client's close_notify comes.
        """

        def scenario(client: _Client) -> object:
            client.echo(b"T")
            client.protocol.closeWhenFlushed("test closes")
            client.until(lambda: client.closeNotify, "the server's close_notify")
            client.put(client.record(b"U" * 10))
            for _ in range(5):
                client.pump()
            client.tls.shutdown()
            client.put(client.wire())
            client.until(lambda: client.eof, "the close")
            return bytes(client.received)

        seen, fast = self.both(scenario)
        self.assertEqual(seen, b"T")
        self.assertEqual(self.reasons, ["test closes"])
        self.assertEqual(fast[:2], [True, False])

    def test_halfARecord(self) -> None:
        """
        A client that sends half a record and the rest later: the first
        half goes to Twisted's TLS protocol (the loop does not take a read
        that is not a whole record), so does the rest (OpenSSL holds part
        of a record until then), and the echo is whole; after it the loop
        echoes whole records again.
        """

        def scenario(client: _Client) -> object:
            wire = client.record(b"A" * 1000)
            client.put(wire[:400])
            for _ in range(5):
                client.pump()
            partial = bytes(client.received)
            self.midRecord.append(self.inLoop(client))
            client.put(wire[400:])
            client.until(lambda: len(client.received) >= 1000, "the echo")
            client.echo(b"B" * 100)
            return partial, bytes(client.received)

        seen, fast = self.both(scenario)
        self.assertEqual(seen, (b"", b"A" * 1000 + b"B" * 100))
        # The first half, handed back; the rest not even tried (OpenSSL
        # held part of a record); then a whole record again.
        self.assertEqual(fast, [False, True])
        self.assertEqual(self.midRecord, [False, False])

    def test_headerSplit(self) -> None:
        """
        A read that ends inside a record's header is handed back too, and
        the next one after it.
        """

        def scenario(client: _Client) -> object:
            wire = client.record(b"C" * 300)
            client.put(wire[:3])
            for _ in range(5):
                client.pump()
            self.midRecord.append(self.inLoop(client))
            client.put(wire[3:])
            client.until(lambda: len(client.received) >= 300, "the echo")
            client.echo(b"D")
            return bytes(client.received)

        seen, fast = self.both(scenario)
        self.assertEqual(seen, b"C" * 300 + b"D")
        self.assertEqual(fast, [False, True])
        self.assertEqual(self.midRecord, [False, False])

    def test_severalRecordsInOneRead(self) -> None:
        """
        Several records in one read go to Twisted's TLS protocol, which
        echoes them all.
        """

        def scenario(client: _Client) -> object:
            client.echo(b"0")
            wire = client.record(b"E" * 20) + client.record(b"F" * 30)
            client.put(wire)
            client.until(lambda: len(client.received) >= 51, "the echoes")
            client.echo(b"G")
            return bytes(client.received)

        seen, fast = self.both(scenario)
        self.assertEqual(seen, b"0" + b"E" * 20 + b"F" * 30 + b"G")
        self.assertEqual(fast, [True, False, True])

    def test_closeNotifyMidEcho(self) -> None:
        """
        A close_notify alone (in TLS 1.3 an encrypted record, like
        application data) after echoes: the loop takes the record, finds no
        data in it, and Twisted's TLS protocol answers with its own
        close_notify and closes.
        """

        def scenario(client: _Client) -> object:
            client.echo(b"H" * 1024)
            client.tls.shutdown()
            client.put(client.wire())
            client.until(lambda: client.eof, "the close")
            return bytes(client.received), client.closeNotify, client.error

        seen, fast = self.both(scenario)
        self.assertEqual(seen, (b"H" * 1024, True, None))
        self.assertEqual(fast[:2], [True, False])
        self.assertEqual(self.reasons, ["client closed the connection"])

    def test_closeNotifyWithData(self) -> None:
        """
        A last record and the close_notify in one read: the data is echoed,
        then the connection closed.
        """

        def scenario(client: _Client) -> object:
            client.echo(b"I")
            client.tls.send(b"J" * 500)
            client.tls.shutdown()
            client.put(client.wire())
            client.until(lambda: client.eof, "the close")
            return bytes(client.received), client.closeNotify

        seen, fast = self.both(scenario)
        self.assertEqual(seen, (b"I" + b"J" * 500, True))
        self.assertEqual(fast[:2], [True, False])

    def test_endOfFileWithoutCloseNotify(self) -> None:
        """
        A client that shuts its socket's sending side without a
        close_notify, after echoes in the loop: the loop's read finds end of
        file and the reactor ends the connection as the transport's own
        read would have.
        """

        def scenario(client: _Client) -> object:
            client.echo(b"R" * 200)
            client.socket.shutdown(socket.SHUT_WR)
            client.until(lambda: client.eof, "the close")
            return bytes(client.received), client.closeNotify

        seen, fast = self.both(scenario)
        self.assertEqual(seen[0], b"R" * 200)  # type: ignore[index]
        # Over TLS, the end of the stream without a close_notify is a loss.
        [reason] = self.reasons
        self.assertIn("non-clean", reason)
        self.assertEqual(fast[0], True)
        self.assertIsInstance(fast[1], ConnectionDone)

    def test_badRecord(self) -> None:
        """
        A whole record of application data that does not decrypt: OpenSSL
        fails it, and Twisted's TLS protocol ends the connection with that
        error, sending its alert, as it does on its own path.
        """

        def scenario(client: _Client) -> object:
            client.echo(b"K")
            wire = bytearray(client.record(b"L" * 200))
            wire[-1] ^= 0xFF
            client.put(bytes(wire))
            client.until(lambda: client.eof, "the close")
            return bytes(client.received), client.error is not None

        seen, fast = self.both(scenario)
        self.assertEqual(seen, (b"K", True))
        self.assertEqual(fast[:2], [True, False])
        [reason] = self.reasons
        self.assertIn("bad record mac", reason.lower())

    def test_sslWriteFails(self) -> None:
        """
        An echo whose SSL_write fails (here: OpenSSL's side of the TLS
        connection shut down behind the TLS protocol's back) goes to the TLS
        protocol's write(), which fails it the same way and ends the
        connection with OpenSSL's error, as on Twisted's path.
        """

        def scenario(client: _Client) -> object:
            client.echo(b"V")
            client.protocol.transport.getHandle().shutdown()
            client.put(client.record(b"W" * 10))
            client.until(lambda: client.eof, "the close")
            return bytes(client.received)

        seen, fast = self.both(scenario)
        self.assertEqual(seen, b"V")
        self.assertEqual(fast[:2], [True, False])
        [reason] = self.reasons
        self.assertIn("shutdown", reason.lower())

    def test_renegotiationAttempt(self) -> None:
        """
        Over TLS 1.2, a client that asks to renegotiate: its hello is a
        handshake record, which the loop hands to Twisted's TLS protocol
        untouched; what follows is what Twisted's path does with it.
        """

        def scenario(client: _Client) -> object:
            client.echo(b"M" * 64)
            client.tls.renegotiate()
            try:
                client.tls.do_handshake()
            except SSL.WantReadError:
                pass
            client.put(client.wire())
            for _ in range(20):
                client.pump()
            # Then an echo, if the connection is still there.
            if not client.eof and client.error is None:
                try:
                    client.echo(b"N" * 64)
                except SSL.Error as e:
                    client.error = str(e)
            return bytes(client.received), client.eof, client.error is not None

        seen, fast = self.both(scenario, tls12=True)
        # Refused (a handshake failure), on either path alike.
        self.assertEqual(seen, (b"M" * 64, True, True))
        self.assertEqual(fast[:2], [True, False])

    def test_keyUpdate(self) -> None:
        """
        A TLS 1.3 KeyUpdate that asks the server to update its keys too:
        an encrypted record like application data, which the loop takes
        and finds no data in; Twisted's TLS protocol goes on, OpenSSL sends
        the server's KeyUpdate with the next echo, and the echoes after it
        (new keys both ways) come back whole.
        """

        def scenario(client: _Client) -> object:
            client.echo(b"Q" * 100)
            client.tls.keyUpdate()
            client.put(client.wire())
            for _ in range(5):
                client.pump()
            for n in range(3):
                client.echo(pattern(500, n))
            return bytes(client.received), client.eof, client.error

        seen, fast = self.both(scenario, system=True)
        self.assertEqual(
            seen,
            (b"Q" * 100 + b"".join(pattern(500, n) for n in range(3)), False, None),
        )
        self.assertEqual(fast, [True, False, True, True, True])

    def test_peerThatNeverReads(self) -> None:
        """
        A client that sends and never reads: the kernel refuses part of an
        echo, the rest is queued and reading pauses, so the server holds at
        most what one read produces besides its socket buffer; once the
        client reads, every byte comes back in order, and whole records go
        through the loop again.
        """
        loop = self.loop(EchotwistEPollReactor)
        client = _Client(loop, buffers=4096)
        client.handshake()
        client.echo(b"O")
        client.reading = False
        sent = bytearray()
        message = pattern(1024, 7)
        deadline = time.monotonic() + WAIT
        while not client.protocol.paused:
            self.assertLess(time.monotonic(), deadline, "never paused")
            wire = client.record(message)
            try:
                client.socket.send(wire)
            except BlockingIOError:
                break
            sent += message
            client.pump()
        self.assertTrue(client.protocol.paused)
        self.assertIn(False, self.fast)
        transport = client.protocol.transport.transport
        self.assertLessEqual(
            len(transport.dataBuffer) + transport._tempDataLen, 64 * 1024
        )
        self.assertNotIn(transport.fileno(), loop.reactor._loopEchoes)
        client.reading = True
        client.until(lambda: len(client.received) >= 1 + len(sent), "the echo")
        self.assertEqual(bytes(client.received), b"O" + bytes(sent))
        del self.fast[:]
        client.echo(b"P" * 10)
        self.assertEqual(self.fast[-1:], [True])
