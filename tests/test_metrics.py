"""
Prometheus metrics in memory: the collector's samples and the metrics
site, what it answers and what it refuses.  (Scrapes, abuse and structured
logs from the real twistd and twist: tests.system.test_metrics.)
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http

from echotwist.connections import EchoFactory
from echotwist.datagram import DatagramEcho, DatagramPolicy
from echotwist.guard import GuardedConnection
from echotwist.metrics import (
    METRICS_CONNECTION_LIFETIME,
    EchoCollector,
    MetricsGuard,
    metricsSite,
    registryFor,
)
from echotwist.stats import Stats, stats
from tests._twistd import LOOPBACK, WAIT
from tests.test_stream import connect


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of a Prometheus text exposition, by name and labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class CollectorTests(SynchronousTestCase):
    def test_countsMatchTheBooks(self) -> None:
        clock = Clock()
        factory = EchoFactory(clock, maxConnections=2)
        policy = DatagramPolicy(rate=0, clock=clock)
        first, second = connect(factory), connect(factory)
        connect(factory)  # refused: over the limit
        first.dataReceived(b"a" * 700)
        second.dataReceived(b"b" * 300)
        first.connectionLost(Failure(ConnectionDone()))

        class Transport:
            def write(self, datagram: bytes, addr: object) -> None:
                pass

        echo = DatagramEcho(policy)
        echo.transport = Transport()  # type: ignore[assignment]
        echo.datagramReceived(b"d" * 50, ("192.0.2.1", 40000))
        echo.datagramReceived(b"d" * 50, ("192.0.2.1", 7))
        # The same bytes back at once, a third time in a row: an echo loop.
        for _ in range(4):
            echo.datagramReceived(b"e", ("192.0.2.9", 40000))

        collector = EchoCollector(lambda: stats(factory, policy), lambda: 1)
        found = samples(generate_latest(registryFor(collector)).decode())
        expected = {
            ("echotwist_connections_accepted_total", ()): 2,
            ("echotwist_connections_closed_total", ()): 1,
            ("echotwist_connections_open", ()): 1,
            (
                "echotwist_connections_refused_total",
                (("reason", "too many connections"),),
            ): 1,
            ("echotwist_received_bytes_total", (("transport", "stream"),)): 1000,
            ("echotwist_sent_bytes_total", (("transport", "stream"),)): 1000,
            ("echotwist_received_bytes_total", (("transport", "udp"),)): 104,
            ("echotwist_sent_bytes_total", (("transport", "udp"),)): 53,
            ("echotwist_datagrams_answered_total", ()): 4,
            (
                "echotwist_datagrams_refused_total",
                (("reason", "privileged source port"),),
            ): 1,
            ("echotwist_datagrams_refused_total", (("reason", "echo loop"),)): 1,
            ("echotwist_workers", ()): 1,
        }
        for key, value in expected.items():
            self.assertEqual(found[key], value, key)
        self.assertIn(("process_resident_memory_bytes", ()), found)

    def test_evictionsHeaderlessAndSources(self) -> None:
        from twisted.internet.address import IPv6Address
        from twisted.internet.testing import MemoryReactorClock, StringTransport

        from echotwist.proxy import ProxyWrappingFactory

        clock = MemoryReactorClock()
        factory = EchoFactory(clock, maxConnections=3, evictIdleAfter=1)
        policy = DatagramPolicy(rate=0, clock=clock)
        for n in (1, 2):
            protocol = factory.buildProtocol(None)
            assert protocol is not None
            protocol.makeConnection(
                StringTransport(peerAddress=IPv6Address("TCP", f"2001:db8::{n}", 1))
            )
        proxied = ProxyWrappingFactory(factory, clock).buildProtocol(None)
        assert proxied is not None
        proxied.makeConnection(StringTransport())  # no header yet
        collector = EchoCollector(lambda: stats(factory, policy), lambda: 1)
        found = samples(generate_latest(registryFor(collector)).decode())
        self.assertEqual(found[("echotwist_connections_awaiting_header", ())], 1)
        self.assertEqual(found[("echotwist_sources_open", ())], 2)  # /64, proxy
        self.assertEqual(found[("echotwist_connections_evicted_total", ())], 0)
        for _ in range(20):
            clock.advance(0.25)
        connect(factory)  # full: evicts the one idle longest
        found = samples(generate_latest(registryFor(collector)).decode())
        self.assertEqual(found[("echotwist_connections_evicted_total", ())], 1)
        self.assertEqual(
            found[("echotwist_connections_open", ())]
            + found[("echotwist_connections_awaiting_header", ())],
            3,
        )

    def test_buildInfo(self) -> None:
        """
        C{echotwist_build_info} is 1, labelled with echotwist's version,
        Twisted's, Python's and the reactor's class.
        """
        import platform

        import twisted

        from echotwist import __version__

        clock = Clock()
        collector = EchoCollector(
            lambda: stats(EchoFactory(clock), DatagramPolicy(rate=0, clock=clock)),
            lambda: 1,
            clock,
        )
        found = samples(generate_latest(registryFor(collector)).decode())
        labels = (
            ("python", platform.python_version()),
            ("reactor", "twisted.internet.task.Clock"),
            ("twisted", twisted.__version__),
            ("version", __version__),
        )
        self.assertEqual(found[("echotwist_build_info", labels)], 1)


def _boom(*args: object, **kwargs: object) -> object:
    raise AssertionError("a request body went to a temporary file")


class SiteTests(SynchronousTestCase):
    """
    The metrics site in memory: what it answers, what it refuses, and the
    guard around it, with time from a Clock.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.collected = 0

        def snapshot() -> Stats:
            self.collected += 1
            return stats(EchoFactory(self.clock), DatagramPolicy(0, self.clock))

        self.registry = registryFor(EchoCollector(snapshot, lambda: 1))
        # A body must never reach a temporary file, whatever the test sends.
        self.patch(http.tempfile, "TemporaryFile", _boom)

    def guard(self, refresh: Any = None, **kwargs: Any) -> MetricsGuard:
        guard = metricsSite(self.registry, refresh, self.clock)
        for name, value in kwargs.items():
            setattr(guard, name, value)
        guard.doStart()
        self.addCleanup(guard.doStop)
        return guard

    def connect(self, guard: MetricsGuard) -> tuple[Any, StringTransport]:
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = guard.buildProtocol(peer)
        assert protocol is not None
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def ask(self, request: bytes, guard: MetricsGuard | None = None) -> bytes:
        protocol, transport = self.connect(guard or self.guard())
        protocol.dataReceived(request)
        return bytes(transport.value())

    def test_get(self) -> None:
        with capturedLogs() as events:
            answer = self.ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertIn(b"echotwist_connections_open 0.0", answer)
        self.assertEqual(self.collected, 1)
        # No access log, nor any other line.
        self.assertEqual(list(events), [])

    def test_headHasNoBody(self) -> None:
        with capturedLogs() as events:
            answer = self.ask(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertRegex(head, rb"(?i)content-length: [1-9]")
        self.assertEqual(body, b"")
        self.assertEqual(list(events), [])

    def test_postRefusedUnread(self) -> None:
        """
        A POST with a body bigger than twisted.web keeps in memory gets 405
        as soon as its headers are in; the body is dropped, never spooled.
        """
        protocol, transport = self.connect(self.guard())
        protocol.dataReceived(
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n"
        )
        answer = bytes(transport.value())
        self.assertTrue(answer.startswith(b"HTTP/1.1 405 "), answer)
        self.assertIn(b"Allow: GET, HEAD\r\n", answer)
        self.assertTrue(transport.disconnecting)
        # What is already on its way is dropped, and asks for nothing more.
        protocol.dataReceived(b"x" * 300000)
        self.assertEqual(bytes(transport.value()), answer)
        self.assertEqual(self.collected, 0)

    def test_chunkedBodyRefused(self) -> None:
        answer = self.ask(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertEqual(self.collected, 0)

    def test_getWithABodyRefused(self) -> None:
        answer = self.ask(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertEqual(self.collected, 0)

    def test_otherMethodsRefused(self) -> None:
        for method in (b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH", b"X"):
            answer = self.ask(method + b" /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 405 "), (method, answer))
        self.assertEqual(self.collected, 0)

    def test_capClosesTheExtra(self) -> None:
        guard = self.guard(maxConnections=3)
        held = [self.connect(guard) for _ in range(3)]
        peer = IPv4Address("TCP", "127.0.0.1", 40001)
        with capturedLogs() as events:
            for _ in range(100):
                refused = guard.buildProtocol(peer)
                self.assertNotIsInstance(refused, GuardedConnection)
                assert refused is not None
                transport = StringTransport(peerAddress=peer)
                refused.makeConnection(transport)
                self.assertTrue(transport.disconnecting)
                self.assertEqual(transport.value(), b"")
        self.assertEqual(guard.refused, 100)
        # Logged once, not once per refusal.
        self.assertEqual([e["event"] for e in events], ["metrics.refused"])
        protocol, transport = held[0]
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsInstance(guard.buildProtocol(peer), GuardedConnection)

    def test_slowClientTimedOut(self) -> None:
        """
        A client that sends its request a byte at a time is cut off at the
        connection's lifetime, though it never goes quiet.
        """
        guard = self.guard()
        protocol, transport = self.connect(guard)
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"z" * 100
        for byte in request[:49]:
            protocol.dataReceived(bytes([byte]))
            self.clock.advance(METRICS_CONNECTION_LIFETIME / 50)
        self.assertFalse(transport.disconnected)
        protocol.dataReceived(request[49:50])
        # (A hair over: fifty fiftieths of the lifetime in floating point may
        # add up to a hair under.)
        self.clock.advance(METRICS_CONNECTION_LIFETIME / 50 + 1e-6)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(guard.protocols, {})

    def test_closedConnectionCancelsItsTimer(self) -> None:
        guard = self.guard()
        protocol, transport = self.connect(guard)
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        lifetimes = [
            call
            for call in self.clock.getDelayedCalls()
            if getattr(call.func, "__name__", "") == "_expire"
        ]
        self.assertEqual(len(lifetimes), 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(lifetimes[0].active())

    def test_scraperGoneBeforeTheWorkersAnswer(self) -> None:
        """
        With workers, a scrape waits for their counts; a scraper that
        leaves meanwhile must not make finishing the request fail.
        """
        asked: list[Deferred[None]] = []

        def refresh() -> Deferred[None]:
            asked.append(Deferred())
            return asked[-1]

        protocol, transport = self.connect(self.guard(refresh))
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionLost()))
        asked[0].callback(None)
        self.successResultOf(asked[0])
        self.assertEqual(self.collected, 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_workersAnswerThenTheScrape(self) -> None:
        asked: list[Deferred[None]] = []

        def refresh() -> Deferred[None]:
            asked.append(Deferred())
            return asked[-1]

        protocol, transport = self.connect(self.guard(refresh))
        protocol.dataReceived(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        asked[0].callback(None)
        head, _, body = bytes(transport.value()).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertRegex(head, rb"(?i)content-length: [1-9]")
        self.assertEqual(body, b"")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://{LOOPBACK}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return samples(response.read().decode())


GET = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def answerOf(sock: socket.socket) -> bytes:
    """
    Read one HTTP response's head and body (by Content-Length) from
    C{sock}; what came, if the connection closed first.
    """
    sock.settimeout(WAIT)
    data = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        head, found, body = data.partition(b"\r\n\r\n")
        if found:
            length = re.search(rb"(?i)content-length: (\d+)", head)
            if length and len(body) >= int(length.group(1)):
                return data
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"no whole answer within {WAIT}s: {data[:200]!r}")
