"""
Hostile and unusual peers against the real twistd (issue 23): two echo
servers made to echo each other by one spoofed datagram, straight and
through a relay that makes the round trip long; and HAProxy's bare
C{PROXY UNKNOWN}.  Every wait is bounded, and all traffic stays on
loopback.
"""

from __future__ import annotations

import heapq
import os
import select
import socket
import struct
import threading
import time

from tests._clients import readUntilClosed
from tests._tools import requireRoot, startHAProxy
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase
from tests.test_metrics import scrape
from tests.test_transports import freePort

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


class EchoLoopTests(ServerTestCase):
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

    def assertLoopDies(
        self, servers: list[tuple[Server, int, int]], source: tuple[str, int]
    ) -> dict[str, float]:
        (a, aPort, aMetrics), (b, _, bMetrics) = servers
        spoof(b"loop me" * 1000, source, (LOOPBACK, aPort))
        deadline = time.monotonic() + WAIT
        while True:
            counts = [scrape(m) for m in (aMetrics, bMetrics)]
            if sum(c.get(LOOPS, 0) for c in counts) >= 1:
                break
            answered = sum(c[ANSWERED] for c in counts)
            self.assertLess(
                time.monotonic(),
                deadline,
                f"the loop is still going: {answered:.0f} answers\n{a.output}",
            )
            time.sleep(0.05)  # a polling interval, not a synchronisation
        first = sum(c[ANSWERED] for c in counts)
        # Dead, not slowed: a second later, no answer more.
        time.sleep(1.0)
        counts = [scrape(m) for m in (aMetrics, bMetrics)]
        later = sum(c[ANSWERED] for c in counts)
        self.assertEqual(later, first)
        # A answers the spoof, then each side answers two echoes.
        self.assertLessEqual(later, 6)
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

    def throughRelay(self, roundTrip: float) -> None:
        # At the default --udp-rate 100, which stops a loop only when its
        # round trip is under 10 ms.
        a, b = self.server(), self.server()
        relay = Relay((LOOPBACK, a[1]), (LOOPBACK, b[1]), roundTrip / 2)
        self.addCleanup(relay.stop)
        self.assertLoopDies([a, b], relay.frontAddress)
        self.assertLessEqual(relay.relayed, 6)

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
