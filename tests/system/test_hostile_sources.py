"""
Hostile sources against the real twistd: many addresses of one IPv6 /64
(in a network namespace made for the test), PROXY connections that never
send a header, forged and untrusted PROXY headers, and idle or trickling
connections that fill the server.  Each attack is bounded in count and
time, goes to loopback or to the test's own namespace, and asserts the
figure issue 13 names.
"""

from __future__ import annotations

import os
import re
import select
import selectors
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

from tests._clients import readUntilClosed
from tests._tools import openedBy, requireRoot, requireTool
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase, command
from tests.system.test_transports import freePort
from tests.test_metrics import scrape

#: The /64 the namespace test gives its loopback, and how many of its
#: addresses attack.
PREFIX = "2001:db8:1:2::"
ATTACKERS = 12


def _socketDescriptors(pid: int) -> int:
    """
    How many sockets process C{pid} holds open.
    """
    return sum(1 for target in openedBy(pid) if target.startswith("socket:"))


def _connect(port: int, source: str | None = None) -> socket.socket:
    """
    Connect to C{port} on loopback, from the loopback address C{source} if
    given (any of 127.0.0.0/8 is this host's).
    """
    sock = socket.create_connection(
        (LOOPBACK, port),
        timeout=WAIT,
        source_address=None if source is None else (source, 0),
    )
    return sock


def _served(port: int, timeout: float = 2.0, source: str | None = None) -> bool:
    """
    Whether a new client gets its echo: connect, send, and see whether the
    bytes come back or the server closes the connection unanswered.
    """
    payload = b"let me in"
    with socket.create_connection(
        (LOOPBACK, port),
        timeout=timeout,
        source_address=None if source is None else (source, 0),
    ) as sock:
        sock.sendall(payload)
        received = b""
        try:
            while len(received) < len(payload):
                chunk = sock.recv(1024)
                if not chunk:
                    return False
                received += chunk
        except (TimeoutError, ConnectionResetError):
            return False
        return received == payload


def _closedBy(sock: socket.socket) -> bool:
    """
    Whether the server has closed C{sock} (without waiting).
    """
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


# --- one IPv6 /64 ----------------------------------------------------------

_ATTACK = r"""
import socket, sys, time
port, prefix, count, udpPort = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
server = prefix + "1"
socks = []
for n in range(2, 2 + count):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((prefix + format(n, "x"), 0))
    sock.connect((server, port))
    socks.append(sock)
admitted = 0
for sock in socks:
    sock.sendall(b"ping")
    try:
        admitted += sock.recv(16) == b"ping"
    except ConnectionResetError:
        pass
print("admitted", admitted, flush=True)
answered = 0
for n in range(2, 2 + count):
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind((prefix + format(n, "x"), 0))
    udp.sendto(b"dgram", (server, udpPort))
    udp.settimeout(0.5)
    try:
        answered += udp.recv(16) == b"dgram"
    except socket.timeout:
        pass
print("answered", answered, flush=True)
"""


class IPv6PrefixTests(ServerTestCase):
    """
    Twelve addresses of one /64 are one source, in a network namespace the
    test makes (root and iproute2 needed; CI has both).
    """

    def setUp(self) -> None:
        requireRoot("creates a network namespace for IPv6 addresses")
        self.ip = requireTool("ip", "iproute2")
        super().setUp()
        self.namespace = f"echotwist-sources-{uuid.uuid4().hex[:8]}"
        self.command(self.ip, "netns", "add", self.namespace)
        self.addCleanup(self.command, self.ip, "netns", "delete", self.namespace)
        self.inside(self.ip, "link", "set", "lo", "up")
        for n in range(1, 2 + ATTACKERS):
            self.inside(
                self.ip, "-6", "addr", "add", f"{PREFIX}{n:x}/64", "dev", "lo", "nodad"
            )

    def command(self, *argv: str) -> str:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=WAIT, check=False
        )
        self.assertEqual(done.returncode, 0, f"{argv}: {done.stderr}")
        return done.stdout

    def inside(self, *argv: str) -> str:
        return self.command(self.ip, "netns", "exec", self.namespace, *argv)

    def test_oneSlash64IsOneSource(self) -> None:
        port = 7007  # the namespace is the test's own: any port is free
        udpPort = 7008
        escaped = PREFIX.replace(":", "\\:") + "1"
        server = self.start(
            "--port",
            f"tcp6:{port}:interface={escaped}",
            "--udp",
            f"udp:{udpPort}:interface={escaped}",
            "--udp-rate",
            "0.01",
            "--max-per-source",
            "5",
            runner=[self.ip, "netns", "exec", self.namespace]
            + [command("twistd"), "-n", "--pidfile=", "echo"],
        )
        server.waitFor(r"Listening on \[2001:db8:1:2::1\]:7007")
        server.waitFor(r"Listening on \[2001:db8:1:2::1\]:7008")
        out = self.inside(
            sys.executable,
            "-c",
            _ATTACK,
            str(port),
            PREFIX,
            str(ATTACKERS),
            str(udpPort),
        )
        self.assertIn("admitted 5\n", out)
        # A burst of one, refilled every 100 s: the first datagram of the
        # /64 is answered, the rest of the network shares its empty bucket.
        self.assertIn("answered 1\n", out)
        server.waitFor(
            r"Refused connection from 2001:db8:1:2::/64: too many connections"
            r" from this source"
        )
        server.waitFor(
            r"Refused UDP datagram from 2001:db8:1:2::/64: over the rate limit"
        )


# --- PROXY ------------------------------------------------------------------


class HeaderlessTests(ServerTestCase):
    def test_headerlessConnectionsHoldNoMoreThanTheLimit(self) -> None:
        """
        300 connections to a haproxy: listener that never send a header,
        at --max-connections 20: the server holds 20 descriptors for them,
        and closes the other 280 at once.
        """
        metrics = freePort()
        server = self.start(
            "--metrics",
            f"tcp:{metrics}:interface={LOOPBACK}",
            # A backlog for 300 connects in a row: the figure is about what
            # the server holds, not about SYNs the kernel drops and retries.
            "--port",
            f"haproxy:tcp:0:interface={LOOPBACK}:backlog=1024",
            "--max-connections",
            "20",
            "--max-per-source",
            "0",
            # Refusals only: a slow machine must not turn some into
            # evictions of header-less connections past 10 s.
            "--evict-idle-after",
            "0",
            "--no-connection-logs",
        )
        port = server.port
        server.waitFor(r"Serving metrics on ")
        baseline = _socketDescriptors(server.process.pid)
        clients = []
        try:
            for _ in range(300):
                clients.append(_connect(port))
            deadline = time.monotonic() + WAIT
            while True:
                held = _socketDescriptors(server.process.pid) - baseline
                closed = sum(_closedBy(sock) for sock in clients)
                if held <= 20 and closed >= 280:
                    break
                self.assertLess(
                    time.monotonic(),
                    deadline,
                    f"{held} descriptors held, {closed} of 300 closed",
                )
                time.sleep(0.05)
            # Refused at accept, not closed later by the header deadline.
            refused = scrape(metrics)[
                (
                    "echotwist_connections_refused_total",
                    (("reason", "too many connections"),),
                )
            ]
            self.assertEqual(refused, 280)
            server.waitFor(r"Refused connection from 127\.0\.0\.1:\d+: too many")
        finally:
            for sock in clients:
                sock.close()


FORGED = b"PROXY TCP4 1.2.3.4\x1b[2J\x00\tFORGED 5.6.7.8 1 2\r\n"


class ForgedHeaderTests(ServerTestCase):
    def test_forgedAddressIsRefusedAndNothingRawIsLogged(self) -> None:
        socketPath = os.path.join(self.directory, "echo.sock")
        server = self.start(
            "--port",
            f"haproxy:tcp:0:interface={LOOPBACK}",
            "--listen",
            f"unix:{socketPath}",
        )
        port = int(
            server.waitFor(r"Listening on 127\.0\.0\.1:(\d+) \(haproxy").group(1)
        )
        server.waitFor(r"Listening on unix:")
        with _connect(port) as sock:
            sock.sendall(FORGED + b"hello")
            data, how = readUntilClosed(sock)
        self.assertEqual(data, b"")
        server.waitFor(
            r"Refused connection from 127\.0\.0\.1:\d+: PROXY header address is"
            r" not an IPv4 address"
        )
        # A UNIX client names its own socket: control bytes and a newline.
        with tempfile.TemporaryDirectory(dir=self.directory) as scratch:
            evil = os.path.join(scratch, "\x1b[2Jevil\nFORGED line")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
                unix.bind(evil)
                unix.connect(socketPath)
                unix.sendall(b"ping")
                self.assertEqual(unix.recv(16), b"ping")
            server.waitFor(r"\\x1b\[2Jevil\\x0aFORGED line connected")
        output = server.output
        self.assertNotIn("\x1b", output)
        self.assertNotIn("\x00", output)
        self.assertFalse(
            [line for line in server.lines if line.startswith("FORGED")], output
        )
        self.assertEqual(
            [c for c in output if ord(c) < 0x20 and c not in "\n"], [], output
        )


class ProxyTrustTests(ServerTestCase):
    HEADER = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7\r\n"

    def test_untrustedPeerIsRefused(self) -> None:
        server = self.start(
            "--port",
            f"haproxy:tcp:0:interface={LOOPBACK}",
            "--proxy-from",
            "10.0.0.0/8",
        )
        with _connect(server.port) as sock:
            sock.sendall(self.HEADER + b"hello")
            data, _ = readUntilClosed(sock)
        self.assertEqual(data, b"")
        server.waitFor(
            r"Refused connection from 127\.0\.0\.1:\d+: peer is not allowed to"
            r" send PROXY headers"
        )
        self.assertNotIn("can claim any client address", server.output)

    def test_trustedPeerIsServed(self) -> None:
        server = self.start(
            "--port",
            f"haproxy:tcp:0:interface={LOOPBACK}",
            "--proxy-from",
            "127.0.0.0/8",
        )
        with _connect(server.port) as sock:
            sock.sendall(self.HEADER + b"hello")
            self.assertEqual(sock.recv(16), b"hello")
        server.waitFor(r"203\.0\.113\.7:40000 connected")

    def test_withoutTheOptionTheServerSaysSoOnce(self) -> None:
        server = self.start(
            "--port",
            f"haproxy:tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
        )
        server.waitFor(r"Worker 2 serving")
        server.waitFor(r"can claim any client address")
        self.assertEqual(server.output.count("can claim any client address"), 1)


class ProxyBurstTests(ServerTestCase):
    """
    A real proxy's burst: each connection sends its header at once, every
    one naming another client.
    """

    def test_aBurstFromOneProxyIsServed(self) -> None:
        """
        300 connections from one trusted proxy, at the default
        --max-per-source (100), each with its header sent at once, while
        the server is held for a moment (a pause, a busy loop): every one
        is served.  The server accepts its queue 100 and more at a time
        before it reads any header, and counted each as the proxy's
        against --max-per-source: 120 of 300 were refused as "too many
        connections from this source", and 11 to 50 of 300 in bursts
        without the pause.
        """
        server = self.start(
            "--port",
            f"haproxy:tcp:0:interface={LOOPBACK}",
            "--proxy-from",
            "127.0.0.0/8",
            "--no-connection-logs",
        )
        port = server.port
        clients: list[socket.socket] = []
        self.addCleanup(lambda: [client.close() for client in clients])
        held = psutil.Process(server.process.pid)
        held.suspend()
        try:
            for n in range(300):
                client = _connect(port)
                client.sendall(
                    f"PROXY TCP4 198.51.{n // 200}.{n % 200 + 1} 192.0.2.1"
                    f" 40000 7\r\n".encode()
                )
                clients.append(client)
        finally:
            held.resume()
        refused = 0
        for client in clients:
            client.settimeout(WAIT)
            try:
                client.sendall(b"x")
                refused += client.recv(1) != b"x"
            except (ConnectionResetError, BrokenPipeError):
                refused += 1
        self.assertEqual(refused, 0, server.output)
        self.assertNotIn("too many connections", server.output)


# --- a full server ------------------------------------------------------------


class FullServerTests(ServerTestCase):
    def fill(self, *extra: str) -> tuple[Server, int, list[socket.socket]]:
        metrics = freePort()
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--max-connections",
            "10",
            "--max-per-source",
            "0",
            "--metrics",
            f"tcp:{metrics}:interface={LOOPBACK}",
            *extra,
        )
        port = server.listening()[0]
        server.waitFor(r"Serving metrics on ")
        held = []
        for _ in range(10):
            sock = _connect(port)
            sock.sendall(b"x")
            self.assertEqual(sock.recv(1), b"x")
            held.append(sock)
        for sock in held:
            self.addCleanup(sock.close)
        return server, metrics, held

    def waitServed(self, port: int, bound: float) -> float:
        """
        Knock every 100 ms until served; how long it took from now.
        """
        started = time.monotonic()
        while not _served(port):
            self.assertLess(time.monotonic() - started, bound, "never served")
            time.sleep(0.1)
        return time.monotonic() - started

    def test_fullOfIdleConnectionsTakesANewClient(self) -> None:
        """
        At --evict-idle-after 1, a full server of idle connections serves a
        new client within that second, a sweep (0.25 s) and a knock.
        """
        server, metrics, held = self.fill("--evict-idle-after", "1")
        port = server.listening()[0]
        waited = self.waitServed(port, 5.0)
        self.assertLess(waited, 5.0)
        server.waitFor(r"Closed 127\.0\.0\.1:\d+, idle \d+\.\ds or more, to admit")
        # The line is logged before the FIN reaches the client: wait for it.
        closing, _, _ = select.select(held, [], [], WAIT)
        evicted = [sock for sock in closing if _closedBy(sock)]
        self.assertGreaterEqual(len(evicted), 1)
        samples = scrape(metrics)
        self.assertGreaterEqual(samples[("echotwist_connections_evicted_total", ())], 1)
        self.assertLessEqual(samples[("echotwist_connections_open", ())], 10)

    def test_noEvictionAtZero(self) -> None:
        server, _, held = self.fill("--evict-idle-after", "0")
        port = server.listening()[0]
        # Twice the time eviction would have needed at 1 s.
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            self.assertFalse(_served(port))
            time.sleep(0.2)
        self.assertFalse([sock for sock in held if _closedBy(sock)])
        server.waitFor(
            r"Refused connection from 127\.0\.0\.1:\d+: too many connections"
        )

    def test_tricklingConnectionsAreEvictable(self) -> None:
        """
        Every held connection sends a byte every 2 s; at --evict-idle-after
        1 each is idle long enough in between, and a newcomer gets in.
        """
        server, _, held = self.fill("--evict-idle-after", "1")
        port = server.listening()[0]
        selector = selectors.DefaultSelector()
        for sock in held:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        started = time.monotonic()
        nextTrickle = started
        try:
            while True:
                now = time.monotonic()
                self.assertLess(now - started, 10.0, "no newcomer got in")
                if now >= nextTrickle:
                    for sock in held:
                        try:
                            sock.send(b".")
                        except OSError:
                            pass  # evicted
                    nextTrickle = now + 2.0
                for key, _ in selector.select(0.1):
                    try:
                        key.fileobj.recv(16)  # type: ignore[union-attr]
                    except OSError:
                        pass
                if _served(port, timeout=1.0):
                    break
        finally:
            selector.close()
        server.waitFor(r"to admit a new client")
        self.assertTrue(
            re.search(r"Closed 127\.0\.0\.1:\d+, idle", server.output), server.output
        )


class TricklingAttackTests(ServerTestCase):
    """
    Issue 23's trickle lockout against the real server, scaled to
    C{--max-connections 40}: four addresses hold every slot and keep each
    connection alive with a byte every 2 s, well under C{--evict-idle-after}
    (10 s, the default).  Clients from new addresses must still get in.
    """

    ATTACKERS = [f"127.0.1.{n}" for n in range(1, 5)]
    NEWCOMERS = [f"127.0.2.{n}" for n in range(1, 4)]

    def test_tricklersCannotLockOutANewAddress(self) -> None:
        metrics = freePort()
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--max-connections",
            "40",
            "--no-connection-logs",
            "--metrics",
            f"tcp:{metrics}:interface={LOOPBACK}",
        )
        port = server.listening()[0]
        server.waitFor(r"Serving metrics on ")
        held: list[socket.socket] = []
        for source in self.ATTACKERS:
            for _ in range(10):
                sock = _connect(port, source)
                self.addCleanup(sock.close)
                sock.sendall(b"x")
                self.assertEqual(sock.recv(1), b"x")
                held.append(sock)
        self.assertEqual(scrape(metrics)[("echotwist_connections_open", ())], 40)

        selector = selectors.DefaultSelector()
        self.addCleanup(selector.close)
        for sock in held:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        closed: set[socket.socket] = set()
        admitted: list[str] = []
        started = time.monotonic()
        nextTrickle = started
        # The bound is issue 23's promise: in within 15 s at the defaults.
        while len(admitted) < len(self.NEWCOMERS):
            now = time.monotonic()
            self.assertLess(
                now - started, 15.0, f"admitted only {admitted}:\n{server.output}"
            )
            if now >= nextTrickle:
                for sock in held:
                    if sock not in closed:
                        try:
                            sock.send(b".")
                        except OSError:
                            closed.add(sock)
                nextTrickle = now + 2.0
            for key, _ in selector.select(0.1):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    if not sock.recv(16):
                        closed.add(sock)
                        selector.unregister(sock)
                except OSError:
                    closed.add(sock)
                    selector.unregister(sock)
            # A newcomer that gets in stays, as a client would: the next
            # one finds the server full again.
            newcomer = _connect(port, self.NEWCOMERS[len(admitted)])
            self.addCleanup(newcomer.close)
            newcomer.settimeout(1.0)
            newcomer.sendall(b"let me in")
            answer = b""
            try:
                while len(answer) < len(b"let me in"):
                    chunk = newcomer.recv(16)
                    if not chunk:
                        break  # refused: closed unanswered
                    answer += chunk
            except (TimeoutError, ConnectionResetError):
                pass
            if answer == b"let me in":
                admitted.append(self.NEWCOMERS[len(admitted)])
            else:
                newcomer.close()
        server.waitFor(
            r"Closed 127\.0\.1\.\d:\d+, idle \d+\.\ds, to admit a new client: the"
            r" server is full and its source 127\.0\.1\.\d held 10 connections,"
            r" the most of any"
        )
        # Each newcomer cost the attackers one slot, and nothing else.
        deadline = time.monotonic() + WAIT
        while len(closed) < len(self.NEWCOMERS) and time.monotonic() < deadline:
            for key, _ in selector.select(0.2):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(16)
                except OSError:
                    data = b""
                if not data:
                    closed.add(sock)
                    selector.unregister(sock)
        self.assertEqual(len(closed), len(self.NEWCOMERS))
        samples = scrape(metrics)
        self.assertEqual(
            samples[("echotwist_connections_evicted_total", ())], len(self.NEWCOMERS)
        )
