"""
Hostile and unusual peers against the real twistd (issue 23): two echo
servers made to echo each other by one spoofed datagram, straight and
through a relay that makes the round trip long; HAProxy's bare
C{PROXY UNKNOWN}; link-local clients on two links; and bursts from
several peers at once, each answer to its own peer once.  Every wait is
bounded, and all traffic stays on loopback or in network namespaces the
test makes.
"""

from __future__ import annotations

import heapq
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

from tests._clients import readUntilClosed
from tests._tools import requireRoot, requireTool, startHAProxy
from tests._twistd import (
    LOOPBACK,
    SERVING_ON_ECHOTWIST,
    WAIT,
    Server,
    ServerTestCase,
    command,
)
from tests.system.test_transports import freePort
from tests.test_metrics import scrape

ANSWERED = ("echotwist_datagrams_answered_total", ())
LOOPS = ("echotwist_datagrams_refused_total", (("reason", "echo loop"),))


def spoof(
    payload: bytes, source: tuple[str, int], destination: tuple[str, int]
) -> None:
    """
    Send one UDP datagram over IPv4 with a forged source, through a raw
    socket (root only); on loopback the kernel delivers it.
    """
    length = 8 + len(payload)
    # Checksum 0: none, which IPv4 allows for UDP.
    udp = struct.pack("!HHHH", source[1], destination[1], length, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + length,
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,  # the kernel fills in the header checksum
        socket.inet_aton(source[0]),
        socket.inet_aton(destination[0]),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(ip + udp + payload, (destination[0], 0))


class Relay:
    """
    A user-space UDP relay that holds each datagram C{delay} seconds each
    way (this kernel has no netem): what server A sends to C{front} goes to
    server B from C{back}, and back again.  It runs in a thread until
    stopped, and relays at most C{limit} datagrams.
    """

    def __init__(self, a: tuple[str, int], b: tuple[str, int], delay: float) -> None:
        self.a, self.b, self.delay = a, b, delay
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((LOOPBACK, 0))
        self.back.bind((LOOPBACK, 0))
        self.relayed = 0
        self.limit = 10_000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def frontAddress(self) -> tuple[str, int]:
        return self.front.getsockname()  # type: ignore[no-any-return]

    def _run(self) -> None:
        due: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        order = 0
        while not self._stop.is_set() and self.relayed < self.limit:
            timeout = 0.1 if not due else max(0.0, due[0][0] - time.monotonic())
            readable, _, _ = select.select([self.front, self.back], [], [], timeout)
            for sock in readable:
                data = sock.recv(70000)
                out, to = (
                    (self.back, self.b) if sock is self.front else (self.front, self.a)
                )
                order += 1
                heapq.heappush(
                    due, (time.monotonic() + self.delay, order, out, data, to)
                )
            while due and due[0][0] <= time.monotonic():
                _, _, out, data, to = heapq.heappop(due)
                out.sendto(data, to)
                self.relayed += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self.front.close()
        self.back.close()


class EchoLoopPeerTests(ServerTestCase):
    """
    Two real echo servers and one datagram sent to A with a forged source:
    B's address, or a relay's in front of B.  The loop it starts dies
    within a few exchanges, counted by the servers' own metrics.
    """

    def setUp(self) -> None:
        requireRoot("forges a datagram's source with a raw socket")
        super().setUp()

    def server(self, *options: str) -> tuple[Server, int, int]:
        udp, metrics = freePort(socket.SOCK_DGRAM), freePort()
        server = self.start(
            "--udp",
            f"udp:{udp}:interface={LOOPBACK}",
            "--metrics",
            f"tcp:{metrics}:interface={LOOPBACK}",
            *options,
        )
        server.waitFor(r"Listening on .*\(udp:")
        server.waitFor(r"Serving metrics on ")
        return server, udp, metrics

    def waitForDeadLoops(
        self, metrics: tuple[int, int], loops: int, server: Server
    ) -> tuple[list[dict[str, float]], float]:
        """
        Wait until the two servers' metrics count C{loops} refused as echo
        loops and their answers stop growing (dead, not slowed: the count
        holds a second apart; with workers a scrape may sum a busy worker's
        last heartbeat's counts, up to a second old, so the count settles
        rather than being final at once, and a live loop, at 10 answers a
        second or more, never settles).  Fail past the bound, with
        C{server}'s output.

        @return: the last scrapes and the answers they sum.
        """
        deadline = time.monotonic() + WAIT
        while True:
            counts = [scrape(m) for m in metrics]
            dead = sum(c.get(LOOPS, 0) for c in counts)
            if dead >= loops:
                break
            answered = sum(c[ANSWERED] for c in counts)
            self.assertLess(
                time.monotonic(),
                deadline,
                f"{dead:.0f} loops dead of {loops}, {answered:.0f} answers"
                f"\n{server.output}",
            )
            time.sleep(0.05)  # a polling interval, not a synchronisation
        later = sum(c[ANSWERED] for c in counts)
        while True:
            time.sleep(1.0)  # the interval the count must hold over
            counts = [scrape(m) for m in metrics]
            first, later = later, sum(c[ANSWERED] for c in counts)
            if later == first:
                return counts, later
            self.assertLess(
                time.monotonic(),
                deadline + WAIT,
                f"the loop is still going: {later:.0f} answers\n{server.output}",
            )

    def assertLoopDies(
        self,
        servers: list[tuple[Server, int, int]],
        source: tuple[str, int],
        most: int = 6,
    ) -> dict[str, float]:
        (a, aPort, aMetrics), (b, _, bMetrics) = servers
        spoof(b"loop me" * 1000, source, (LOOPBACK, aPort))
        counts, later = self.waitForDeadLoops((aMetrics, bMetrics), 1, a)
        # A answers the spoof, then each side answers two echoes (each
        # worker, with workers).
        self.assertLessEqual(later, most)
        self.assertEqual(sum(c.get(LOOPS, 0) for c in counts), 1)
        # The side that broke the loop says so, once, naming its peer.
        breaker, other = (a, b) if counts[0].get(LOOPS, 0) else (b, a)
        breaker.waitFor(
            r"Refused UDP datagram from 127\.0\.0\.1:\d+: echo loop \(the bytes"
        )
        self.assertEqual(breaker.output.count("echo loop"), 1)
        self.assertNotIn("echo loop", other.output)
        return {"answers": later}

    def test_twoServersNoRateLimit(self) -> None:
        """
        Loopback, --udp-rate 0: before the guard, ~10k exchanges a second
        forever.
        """
        a = self.server("--udp-rate", "0")
        b = self.server("--udp-rate", "0")
        self.assertLoopDies([a, b], (LOOPBACK, b[1]))

    def test_twoServersWithWorkers(self) -> None:
        """
        With --workers 2 each worker remembers its own answers, and the
        echoes of one may reach the other: on loopback every echo still
        comes within the window, so each worker stops after its own two.
        """
        servers = []
        for _ in range(2):
            server = self.server("--udp-rate", "0", "--workers", "2")
            server[0].waitFor(r"Worker 2 serving")
            servers.append(server)
        self.assertLoopDies(servers, (LOOPBACK, servers[1][1]), most=12)

    def test_loopsOfDatagramsThatBeginAlike(self) -> None:
        """
        Four loops at once between two servers, of datagrams that begin
        alike: 63 bytes, exactly the loop guard's 64 key bytes, 65 and
        7,000 (its digest holds a datagram's first 64 bytes and not its
        length).  Each dies, refused as an echo loop once, within a few
        exchanges.
        """
        a = self.server("--udp-rate", "0")
        b = self.server("--udp-rate", "0")
        start = b"loop me " * 8
        datagrams = [start[:63], start, start + b"!", start + b"?" * 6936]
        for datagram in datagrams:
            spoof(datagram, (LOOPBACK, b[1]), (LOOPBACK, a[1]))
        counts, later = self.waitForDeadLoops((a[2], b[2]), len(datagrams), a[0])
        # Each loop: A answers the spoof, then each side two echoes at most.
        self.assertLessEqual(later, 6 * len(datagrams))
        self.assertEqual(sum(c.get(LOOPS, 0) for c in counts), len(datagrams))

    def throughRelay(self, roundTrip: float) -> None:
        # At the default --udp-rate 100, which stops a loop only when its
        # round trip is under 10 ms.
        a, b = self.server(), self.server()
        relay = Relay((LOOPBACK, a[1]), (LOOPBACK, b[1]), roundTrip / 2)
        self.addCleanup(relay.stop)
        # Six answers when every echo comes back within the window; a
        # loaded machine that delays one past it starts the count again,
        # so a few more are allowed: a loop that lived on would not stop.
        self.assertLoopDies([a, b], relay.frontAddress, most=18)
        self.assertLessEqual(relay.relayed, 18)

    def test_throughARelay50ms(self) -> None:
        self.throughRelay(0.05)

    def test_throughARelay100ms(self) -> None:
        self.throughRelay(0.1)


class ProxyUnknownTests(ServerTestCase):
    """
    C{PROXY UNKNOWN\\r\\n}, nothing after UNKNOWN, as HAProxy 2.6 sends it
    for a client of a UNIX-socket frontend: served, with the proxy's own
    address in the log.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server = self.start("--port", f"haproxy:tcp:0:interface={LOOPBACK}")
        self.port = self.server.port

    def test_theExactBytes(self) -> None:
        with socket.create_connection((LOOPBACK, self.port), timeout=WAIT) as sock:
            clientPort = sock.getsockname()[1]
            sock.sendall(b"PROXY UNKNOWN\r\nhello")
            self.assertEqual(sock.recv(16), b"hello")
            sock.shutdown(socket.SHUT_WR)
            data, _ = readUntilClosed(sock)
        self.assertEqual(data, b"")
        self.server.waitFor(rf"127\.0\.0\.1:{clientPort} disconnected after")
        self.assertNotIn("malformed", self.server.output)

    def test_realHAProxyUnixFrontend(self) -> None:
        frontend = freePort()
        path = os.path.join(self.directory, "front.sock")
        config = os.path.join(self.directory, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 5s\n"
                "    timeout client 30s\n"
                "    timeout server 30s\n"
                "frontend echo\n"
                # The TCP bind only tells the test HAProxy is up.
                f"    bind {LOOPBACK}:{frontend}\n"
                f"    bind unix@{path}\n"
                "    default_backend echotwist\n"
                "backend echotwist\n"
                f"    server one {LOOPBACK}:{self.port} send-proxy\n"
            )
        startHAProxy(self, config, frontend)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(WAIT)
            sock.connect(path)
            payload = os.urandom(4096)
            sock.sendall(payload)
            received = b""
            while len(received) < len(payload):
                chunk = sock.recv(65536)
                self.assertTrue(chunk, "closed before the echo came back")
                received += chunk
        self.assertEqual(received, payload)
        # HAProxy's own address: what the header did not replace.
        self.server.waitFor(r"127\.0\.0\.1:\d+ disconnected after")
        self.assertNotIn("Refused", self.server.output)


# --- IPv6 link-local clients on two links --------------------------------------

_LINK_CLIENT = r"""
import select, socket, sys
server, port, udpPort, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
host, scope = server.split("%")
index = socket.if_nametoindex(scope)
socks, admitted = [], 0
for _ in range(count):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((host, port, 0, index))
    sock.sendall(b"ping")
    try:
        admitted += sock.recv(16) == b"ping"
    except (ConnectionResetError, socket.timeout):
        pass
    socks.append(sock)
answered = 0
for n in range(count):
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.sendto(b"dgram %d" % n, (host, udpPort, 0, index))
    udp.settimeout(1)
    try:
        answered += udp.recv(16) == b"dgram %d" % n
    except socket.timeout:
        pass
print("admitted", admitted, "answered", answered, flush=True)
# Hold the connections until told to go (or for 30 s at most).
select.select([sys.stdin], [], [], 30)
"""


class LinkLocalTests(ServerTestCase):
    """
    A server on two links (veth pairs to two namespaces the test makes),
    and a client on each with the very same link-local address: the one on
    link A at its --max-per-source and --udp-rate limits does not lock out
    the one on link B.
    """

    def setUp(self) -> None:
        requireRoot("creates network namespaces and veth pairs")
        self.ip = requireTool("ip", "iproute2")
        super().setUp()
        suffix = uuid.uuid4().hex[:6]
        self.namespaces = {
            name: f"echotwist-{name}-{suffix}" for name in ("server", "a", "b")
        }
        for namespace in self.namespaces.values():
            self.command(self.ip, "netns", "add", namespace)
            # Deleting a namespace deletes the veth ends inside it.
            self.addCleanup(self.command, self.ip, "netns", "delete", namespace)
        self.links = {}
        for name in ("a", "b"):
            here, there = f"v{name}{suffix}", f"p{name}{suffix}"
            self.command(
                self.ip, "link", "add", here,
                "netns", self.namespaces["server"],
                "type", "veth", "peer", "name", there,
                "netns", self.namespaces[name],
            )  # fmt: skip
            self.inside("server", "addr", "add", "fe80::1/64", "dev", here, "nodad")
            self.inside(name, "addr", "add", "fe80::a/64", "dev", there, "nodad")
            self.inside("server", "link", "set", here, "up")
            self.inside(name, "link", "set", there, "up")
            self.links[name] = there

    def command(self, *argv: str) -> str:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=WAIT, check=False
        )
        self.assertEqual(done.returncode, 0, f"{argv}: {done.stderr}")
        return done.stdout

    def inside(self, name: str, *argv: str) -> str:
        return self.command(self.ip, "-n", self.namespaces[name], *argv)

    def client(self, name: str, count: int) -> subprocess.Popen[str]:
        client = subprocess.Popen(
            [
                self.ip, "netns", "exec", self.namespaces[name],
                sys.executable, "-c", _LINK_CLIENT,
                f"fe80::1%{self.links[name]}", "7007", "7008", str(count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.addCleanup(client.wait, WAIT)
        self.addCleanup(client.kill)
        return client

    def test_aHostOnLinkAAtItsLimitDoesNotLockOutLinkB(self) -> None:
        server = self.start(
            "--port", "tcp6:7007:interface=\\:\\:",
            "--udp", "udp:7008:interface=\\:\\:",
            "--max-per-source", "2",
            "--udp-rate", "0.01",
            runner=[self.ip, "netns", "exec", self.namespaces["server"]]
            + [command("twistd"), "-n", "--pidfile=", "echo"],
        )  # fmt: skip
        server.waitFor(r"Listening on \[::\]:7007")
        server.waitFor(r"Listening on \[::\]:7008")
        a = self.client("a", 4)
        assert a.stdout is not None
        # Two connections and one datagram a source: the rest refused.
        self.assertEqual(a.stdout.readline(), "admitted 2 answered 1\n")
        b = self.client("b", 1)
        assert b.stdout is not None
        self.assertEqual(b.stdout.readline(), "admitted 1 answered 1\n", server.output)
        for client in (a, b):
            assert client.stdin is not None
            client.stdin.close()
        # The server's own end of each link names the source.
        linkA, linkB = (f"v{name}{self.links[name][2:]}" for name in ("a", "b"))
        server.waitFor(rf"Refused connection from fe80::%{linkA}/64: too many")
        server.waitFor(rf"Refused UDP datagram from fe80::%{linkA}/64: over the rate")
        self.assertNotIn(f"fe80::%{linkB}/64", server.output.replace("\n", " "))


class BurstsFromManyPeersTests(ServerTestCase):
    """
    The real twistd, on echotwist's reactor, whose UDP echo over IPv4 reads
    and answers by batches (C{recvmmsg} and C{sendmmsg}): bursts from
    several peers at once (two ports of one address among them), more in
    flight than a pass reads, each datagram naming its peer and number.
    """

    def test_eachAnswerToItsPeerOnce(self) -> None:
        """
        Every answer goes to the peer that sent its datagram, once, with
        its bytes, in the order sent; the server counts each once.
        """
        udp, metrics = freePort(socket.SOCK_DGRAM), freePort()
        server = self.start(
            "--udp",
            f"udp:{udp}:interface={LOOPBACK}",
            "--udp-rate",
            "0",
            "--metrics",
            f"tcp:{metrics}:interface={LOOPBACK}",
        )
        server.waitFor(SERVING_ON_ECHOTWIST)
        server.waitFor(r"Serving metrics on ")
        peers = []
        for host in ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]:
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(peer.close)
            peer.bind((host, 0))
            peers.append(peer)
        rounds, burst = 5, 8
        for round in range(rounds):
            sent = []
            for n, peer in enumerate(peers):
                # Under 1 KiB each: 40 in flight fit the kernel's default
                # receive buffer, so none is dropped.
                datagrams = [
                    b"%d:%d:%d|" % (n, round, k) + b"x" * (k * 100)
                    for k in range(burst)
                ]
                if round == 0:
                    # Once: the same bytes again and again from one peer
                    # are an echo loop's (see echotwist.datagram).
                    datagrams[3] = b""
                for datagram in datagrams:
                    peer.sendto(datagram, (LOOPBACK, udp))
                sent.append(datagrams)
            for peer, datagrams in zip(peers, sent, strict=True):
                self.assertEqual(_answers(peer, len(datagrams)), datagrams)
        for peer in peers:
            # Nothing more: no answer twice, none to another peer.
            peer.settimeout(0.2)
            self.assertRaises(TimeoutError, peer.recv, 65536)
        self.assertEqual(scrape(metrics)[ANSWERED], rounds * burst * len(peers))


def _answers(peer: socket.socket, count: int) -> list[bytes]:
    """
    The next C{count} datagrams C{peer} receives, within L{WAIT} seconds.
    """
    deadline = time.monotonic() + WAIT
    found = []
    while len(found) < count:
        peer.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            found.append(peer.recv(65536))
        except TimeoutError:
            break
    return found
