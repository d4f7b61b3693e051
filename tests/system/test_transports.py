"""
Every transport against the real twistd: UDP, TLS, UNIX sockets, IPv6,
systemd socket activation, and the PROXY protocol with a real HAProxy.
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

from tests._clients import echoOnce, exchange
from tests._tools import (
    requireRoot,
    requireTool,
    selfSignedCertificate,
    startHAProxy,
    withoutTLS,
)
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase, command

KiB = 1024


def _ephemeralRange() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return low, high


def freePort(kind: int = socket.SOCK_STREAM) -> int:
    """
    A loopback port nothing listens on now, for tools that must be told a
    port (systemd-socket-activate, HAProxy, a UDP listener) rather than
    pick one.

    Taken at random below the kernel's ephemeral range: a port the kernel
    hands out (bind to 0) may be handed out again, to a client's outgoing
    connection, before the server the test starts binds it; one below the
    range never is, and a random pick makes two tests at once (trial -j)
    unlikely to pick the same.
    """
    low, _ = _ephemeralRange()
    for _ in range(200):
        port = random.randrange(10000, low) if low > 10000 else 0
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free loopback port below the ephemeral range")


def ask(
    datagram: bytes,
    port: int,
    *,
    source: tuple[str, int] = (LOOPBACK, 0),
    timeout: float = WAIT,
) -> bytes | None:
    """
    Send one datagram; the answer, or None if none came within C{timeout}.
    """
    family = socket.AF_INET6 if ":" in source[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(source)
        s.sendto(datagram, (source[0], port))
        if not select.select([s], [], [], timeout)[0]:
            return None
        return s.recv(70000)


class DatagramTests(ServerTestCase):
    def startUDP(self, *args: str) -> tuple[int, object]:
        port = freePort(kind=socket.SOCK_DGRAM)
        server = self.start("--udp", f"udp:{port}:interface={LOOPBACK}", *args)
        server.waitFor(r"Listening on .*\(udp:")
        return port, server

    def test_everySizeComesBackWhole(self) -> None:
        port, _ = self.startUDP()
        for size in (1, 1400, 8193, 65507):
            datagram = os.urandom(size)
            self.assertEqual(ask(datagram, port), datagram, size)

    def test_ipv6(self) -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
        server = self.start("--udp", f"udp:{port}:interface=\\:\\:1")
        server.waitFor(r"Listening on \[::1\]")
        datagram = os.urandom(60000)
        self.assertEqual(ask(datagram, port, source=("::1", 0)), datagram)

    def test_cyclingServicePortsGetNoAnswer(self) -> None:
        requireRoot("a client must send from ports 7 and 19")
        port, server = self.startUDP()
        for sourcePort in (7, 19):
            self.assertIsNone(
                ask(b"loop?", port, source=(LOOPBACK, sourcePort), timeout=1)
            )
        self.assertEqual(ask(b"fine", port), b"fine")
        server.waitFor(
            r"Refused UDP datagram from 127\.0\.0\.1:7: privileged source port"
        )  # type: ignore[attr-defined]

    def test_floodGetsAboutTheRate(self) -> None:
        """
        One source floods 3000 datagrams over about a second; with
        --udp-rate 100 it gets about a hundred answers (the rate, plus a
        burst of ten), and the server answers others all along.
        """
        port, server = self.startUDP("--udp-rate", "100")
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(flooder.close)
        flooder.bind(("127.0.0.2", 0))
        flooder.setblocking(False)
        answers = 0

        def collect(until: float) -> None:
            nonlocal answers
            while (left := until - time.monotonic()) > 0:
                if select.select([flooder], [], [], left)[0]:
                    try:
                        while flooder.recv(100):
                            answers += 1
                    except BlockingIOError:
                        pass

        start = time.monotonic()
        for n in range(3000):
            flooder.sendto(b"flood %d" % n, (LOOPBACK, port))
            if n % 100 == 99:
                # Pace the flood over a second: 100 datagrams each 1/30 s.
                collect(start + (n + 1) / 3000)
        collect(time.monotonic() + 0.5)
        self.assertTrue(60 <= answers <= 250, answers)
        self.assertEqual(ask(b"still here", port), b"still here")
        # The rate limit counts the source, so the log names it, not a port.
        server.waitFor(r"from 127\.0\.0\.2: over the rate limit")  # type: ignore[attr-defined]


class TLSTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.key, self.certificate = selfSignedCertificate(self.directory)
        server = self.start(
            "--listen",
            f"ssl:0:interface={LOOPBACK}:privateKey={self.key}:certKey={self.certificate}",
        )
        self.port = server.port

    def test_pythonClient(self) -> None:
        """
        1 MiB through Python's TLS, sending and reading at once from one
        thread: an SSLSocket is not safe to use from two.
        """
        context = ssl.create_default_context(cafile=self.certificate)
        context.check_hostname = False
        payload = os.urandom(1024 * KiB)
        received = bytearray()
        with context.wrap_socket(
            socket.create_connection((LOOPBACK, self.port), timeout=WAIT)
        ) as tls:
            tls.setblocking(False)
            sent = 0
            deadline = time.monotonic() + WAIT
            while len(received) < len(payload):
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, f"{len(received)} bytes back in time")
                if not tls.pending():
                    writing = [tls] if sent < len(payload) else []
                    select.select([tls], writing, [], left)
                if sent < len(payload):
                    try:
                        sent += tls.send(payload[sent : sent + 65536])
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                try:
                    chunk = tls.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                if not chunk:
                    break
                received.extend(chunk)
        self.assertEqual(bytes(received), payload)

    def test_opensslClient(self) -> None:
        openssl = requireTool("openssl", "openssl")
        payload = os.urandom(64 * KiB).hex().encode()  # text: s_client relays lines
        client = subprocess.Popen(
            [openssl, "s_client", "-connect", f"{LOOPBACK}:{self.port}", "-quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(client.kill)
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(payload + b"\n")
        client.stdin.flush()
        received = bytearray()
        deadline = time.monotonic() + WAIT
        while len(received) < len(payload) + 1 and time.monotonic() < deadline:
            if select.select([client.stdout], [], [], 1)[0]:
                chunk = os.read(client.stdout.fileno(), 65536)
                if not chunk:
                    break
                received.extend(chunk)
        self.assertEqual(bytes(received), payload + b"\n")

    def test_unreadableKeyIsOneLine(self) -> None:
        garbage = os.path.join(self.directory, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("not a key\n")
        output = self.failedStart(
            "--listen", f"ssl:0:privateKey={garbage}:certKey={self.certificate}"
        )
        self.assertIn("--listen: 'ssl:0:privateKey=", output.splitlines()[-1])


class WithoutTLSTests(ServerTestCase):
    """
    The default install has no TLS (it is the C{tls} extra): the server
    runs without it, and a TLS listener asks for the extra in one line.
    """

    def test_servesWithoutTLS(self) -> None:
        server = self.start(env=withoutTLS(self.directory))
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"no tls"), b"no tls")
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertNotIn("Traceback", server.output)

    def assertAsksForTheExtra(self, runner: list[str] | None, *args: str) -> None:
        kwargs: dict[str, object] = {"env": withoutTLS(self.directory)}
        if runner is not None:
            kwargs["runner"] = [*runner, "echo"]
        output = self.failedStart(*args, **kwargs)
        self.assertEqual(
            output.splitlines(),
            [
                f"echotwist: {args[1]!r} needs TLS support, which is not"
                " installed: install echotwist with its tls extra"
                " (pip install '.[tls]' from a checkout)"
            ],
        )

    def test_sslListenerUnderTwistd(self) -> None:
        self.assertAsksForTheExtra(
            None, "--listen", "ssl:0:privateKey=key.pem:certKey=cert.pem"
        )

    def test_sslPortBehindTheProxyProtocol(self) -> None:
        self.assertAsksForTheExtra(
            None, "--port", "haproxy:ssl:0:privateKey=key.pem:certKey=cert.pem"
        )

    def test_sslMetricsUnderTwist(self) -> None:
        self.assertAsksForTheExtra(
            [command("twist")], "--metrics", "ssl:0:privateKey=key.pem"
        )


class UNIXTests(ServerTestCase):
    def test_echoAndHalfClose(self) -> None:
        path = os.path.join(self.directory, "echo.sock")
        server = self.start("--listen", f"unix:{path}")
        server.waitFor(r"Listening on unix:")
        payload = os.urandom(1024 * KiB)
        self.assertEqual(exchange(path, [payload], halfClose=True), [(payload, True)])

    def test_staleSocketAfterACrash(self) -> None:
        path = os.path.join(self.directory, "echo.sock")
        crashed = self.start("--listen", f"unix:{path}")
        crashed.waitFor(r"Listening on unix:")
        crashed.signal(signal.SIGKILL)
        crashed.wait()
        self.assertTrue(os.path.exists(path))
        again = self.start("--listen", f"unix:{path}")
        again.waitFor(r"Listening on unix:")
        self.assertEqual(echoOnce(path, b"after a crash"), b"after a crash")


class IPv6Tests(ServerTestCase):
    def test_tcp6(self) -> None:
        server = self.start("--listen", "tcp6:0:interface=\\:\\:1")
        server.waitFor(r"Listening on \[::1\]:")
        with socket.create_connection(("::1", server.port), timeout=WAIT) as client:
            client.sendall(b"over six")
            self.assertEqual(client.recv(100), b"over six")
        server.waitFor(r"\[::1\]:\d+ connected")


class SystemdSocketTests(ServerTestCase):
    def activated(self, description: str, address: str, *activate: str) -> Server:
        """
        twistd echo with C{--listen description}, started by
        systemd-socket-activate listening on C{address} (with its options
        C{activate}), as a systemd socket unit would.
        """
        tool = requireTool("systemd-socket-activate", "systemd")
        return self.start(
            "echo",
            "--listen",
            description,
            runner=[
                tool,
                *activate,
                "--listen",
                address,
                command("twistd"),
                "-n",
                "--pidfile=",
            ],
        )

    def test_socketActivation(self) -> None:
        port = freePort()
        # --fdname: Twisted adopts a socket only when LISTEN_FDNAMES names
        # it, as systemd 227 and later always do.
        server = self.activated(
            "systemd:domain=INET:name=echo", f"{LOOPBACK}:{port}", "--fdname=echo"
        )
        server.waitFor(r"Listening on ")
        payload = os.urandom(256 * KiB)
        self.assertEqual(echoOnce((LOOPBACK, port), payload), payload)
        server.waitFor(rf"Listening on 127\.0\.0\.1:{port} \(systemd:")

    def test_socketActivationWithoutNames(self) -> None:
        """
        systemd-socket-activate without --fdname passes LISTEN_FDS and
        LISTEN_PID but no LISTEN_FDNAMES, as sd_listen_fds(3) allows:
        index=0 still adopts the socket.
        """
        port = freePort()
        server = self.activated("systemd:domain=INET:index=0", f"{LOOPBACK}:{port}")
        server.waitFor(r"Listening on ")
        payload = os.urandom(256 * KiB)
        self.assertEqual(echoOnce((LOOPBACK, port), payload), payload)
        server.waitFor(
            rf"Listening on 127\.0\.0\.1:{port} \(systemd:domain=INET:index=0\)"
        )
        self.assertNotIn("Traceback", server.output)

    def test_socketActivationInItsOwnFamily(self) -> None:
        """
        The issue's own command line: an IPv6 socket (as -l PORT binds
        [::]; here [::1]) with domain=INET is adopted as IPv6, so the log
        shows real addresses, with a warning that the domain is wrong.
        """
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
        server = self.activated("systemd:domain=INET:index=0", f"[::1]:{port}")
        server.waitFor(r"Listening on ")
        self.assertEqual(echoOnce(("::1", port), b"six"), b"six")
        server.waitFor(rf"Listening on \[::1\]:{port} \(systemd:domain=INET:index=0\)")
        server.waitFor(r"the socket passed is INET6, not INET")
        server.waitFor(r"\[::1\]:\d+ connected")


def sendThenRead(client: socket.socket, payload: bytes) -> bytes:
    """
    Send C{payload} while reading the echo, shut down the sending side,
    and read until EOF.
    """
    received = bytearray()

    def read() -> None:
        while chunk := client.recv(65536):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    client.sendall(payload)
    client.shutdown(socket.SHUT_WR)
    reader.join(WAIT)
    assert not reader.is_alive(), "no EOF from the server"
    return bytes(received)


def proxyV2(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    body = (
        socket.inet_aton(source[0])
        + socket.inet_aton(destination[0])
        + struct.pack("!HH", source[1], destination[1])
    )
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack("!H", len(body)) + body


class TwistdProxyTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.server = self.start("--listen", f"haproxy:tcp:0:interface={LOOPBACK}")
        self.port = self.server.port

    def rawExchange(self, header: bytes, payload: bytes) -> bytes:
        with socket.create_connection((LOOPBACK, self.port), timeout=WAIT) as client:
            client.sendall(header)
            return sendThenRead(client, payload)

    def test_rawV1(self) -> None:
        payload = os.urandom(100 * KiB)
        header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 %d\r\n" % self.port
        self.assertEqual(self.rawExchange(header, payload), payload)
        self.server.waitFor(
            r"203\.0\.113\.7:40000 disconnected .*: client finished sending"
        )

    def test_rawV2(self) -> None:
        payload = os.urandom(100 * KiB)
        header = proxyV2(("198.51.100.9", 41000), (LOOPBACK, self.port))
        self.assertEqual(self.rawExchange(header, payload), payload)
        self.server.waitFor(
            r"198\.51\.100\.9:41000 disconnected .*: client finished sending"
        )

    def test_malformedHeaderIsLoggedAndClosed(self) -> None:
        with socket.create_connection((LOOPBACK, self.port), timeout=WAIT) as client:
            client.sendall(b"PROXY TCP4 nonsense\r\n")
            try:
                self.assertEqual(client.recv(100), b"")
            except ConnectionResetError:
                pass
        self.server.waitFor(
            r"Refused connection from 127\.0\.0\.1:\d+: malformed PROXY header"
        )

    def test_realHAProxy(self) -> None:
        for version, option in (("v1", "send-proxy"), ("v2", "send-proxy-v2")):
            frontend = freePort()
            config = os.path.join(self.directory, f"haproxy-{version}.cfg")
            with open(config, "w") as f:
                f.write(
                    "defaults\n"
                    "    mode tcp\n"
                    "    timeout connect 5s\n"
                    "    timeout client 30s\n"
                    "    timeout server 30s\n"
                    "frontend echo\n"
                    f"    bind {LOOPBACK}:{frontend}\n"
                    "    default_backend echotwist\n"
                    "backend echotwist\n"
                    f"    server one {LOOPBACK}:{self.port} {option}\n"
                )
            startHAProxy(self, config, frontend)

            # The client comes from 127.0.0.2, so the address the header
            # carries differs from HAProxy's own 127.0.0.1.
            client = socket.socket()
            client.settimeout(WAIT)
            client.bind(("127.0.0.2", 0))
            client.connect((LOOPBACK, frontend))
            clientPort = client.getsockname()[1]
            payload = os.urandom(512 * KiB)
            with client:
                received = sendThenRead(client, payload)
            self.assertEqual(received, payload, version)
            self.server.waitFor(rf"127\.0\.0\.2:{clientPort} disconnected after")
