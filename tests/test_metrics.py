"""
Prometheus metrics and structured logs: in memory, and from the real twistd
and twist.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.datagram import DatagramEcho, DatagramPolicy
from echotwist.metrics import EchoCollector, registryFor
from echotwist.stats import addStats, stats
from echotwist.stream import EchoFactory
from tests._clients import echoOnce
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase, command
from tests.test_stream import connect
from tests.test_transports import ask, freePort


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
            ("echotwist_received_bytes_total", (("transport", "udp"),)): 100,
            ("echotwist_sent_bytes_total", (("transport", "udp"),)): 50,
            ("echotwist_datagrams_answered_total", ()): 1,
            (
                "echotwist_datagrams_refused_total",
                (("reason", "privileged source port"),),
            ): 1,
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


class AddStatsTests(SynchronousTestCase):
    def test_sumsNestedCounts(self) -> None:
        self.assertEqual(
            addStats(
                {"accepted": 2, "refused": {"a": 1}},
                {"accepted": 3, "refused": {"a": 1, "b": 4}, "open": 1},
            ),
            {"accepted": 5, "refused": {"a": 2, "b": 4}, "open": 1},
        )


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://{LOOPBACK}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return samples(response.read().decode())


def settle(server: Server, closed: int) -> None:
    server.waitFor(r"disconnected after")
    while server.output.count(" disconnected after ") < closed:
        server.waitFor(r"disconnected after")


class ScrapeTests(ServerTestCase):
    def test_countsMatchTheTraffic(self) -> None:
        udp = freePort(socket.SOCK_DGRAM)
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--udp",
            f"udp:{udp}:interface={LOOPBACK}",
            "--metrics",
            f"tcp:0:interface={LOOPBACK}",
        )
        echoPort = server.port
        metricsPort = int(server.waitFor(r"Serving metrics on \S+:(\d+)").group(1))
        for _ in range(20):
            payload = os.urandom(1000)
            self.assertEqual(echoOnce((LOOPBACK, echoPort), payload), payload)
        for _ in range(3):
            self.assertEqual(ask(b"u" * 10, udp), b"u" * 10)
        settle(server, 20)
        found = scrape(metricsPort)
        self.assertEqual(found[("echotwist_connections_accepted_total", ())], 20)
        self.assertEqual(found[("echotwist_connections_closed_total", ())], 20)
        self.assertEqual(found[("echotwist_connections_open", ())], 0)
        self.assertEqual(
            found[("echotwist_received_bytes_total", (("transport", "stream"),))], 20000
        )
        self.assertEqual(
            found[("echotwist_sent_bytes_total", (("transport", "stream"),))], 20000
        )
        self.assertEqual(found[("echotwist_datagrams_answered_total", ())], 3)
        self.assertEqual(
            found[("echotwist_received_bytes_total", (("transport", "udp"),))], 30
        )
        # The scrapes themselves are not echo connections.
        self.assertEqual(
            scrape(metricsPort)[("echotwist_connections_accepted_total", ())], 20
        )

    def test_refusalsAreCounted(self) -> None:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--max-connections",
            "1",
            "--metrics",
            f"tcp:0:interface={LOOPBACK}",
        )
        metricsPort = int(server.waitFor(r"Serving metrics on \S+:(\d+)").group(1))
        held = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
        self.addCleanup(held.close)
        server.waitFor(r" connected$")
        for _ in range(3):
            with socket.create_connection(
                (LOOPBACK, server.port), timeout=WAIT
            ) as extra:
                self.assertEqual(extra.recv(10), b"")
        found = scrape(metricsPort)
        self.assertEqual(
            found[
                (
                    "echotwist_connections_refused_total",
                    (("reason", "too many connections"),),
                )
            ],
            3,
        )
        self.assertEqual(found[("echotwist_connections_open", ())], 1)


def jsonEvents(output: str) -> list[dict[str, object]]:
    """
    The events of Twisted's JSON log format (one record a line, each
    preceded by an ASCII record separator).
    """
    events = []
    for line in output.splitlines():
        line = line.lstrip("\x1e").strip()
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


class LogTests(ServerTestCase):
    def exerciseAndCollect(self, server: Server) -> list[dict[str, object]]:
        server.waitFor(r'"event": "listener.started"')
        (started,) = [
            e for e in jsonEvents(server.output) if e.get("event") == "listener.started"
        ]
        port = int(str(started["address"]).rsplit(":", 1)[1])
        self.assertEqual(echoOnce((LOOPBACK, port), b"x" * 123), b"x" * 123)
        server.waitFor(r'"event": "connection.closed"')
        server.signal(signal.SIGTERM)
        server.wait()
        return jsonEvents(server.output)

    def checkConnectionEvents(self, events: list[dict[str, object]]) -> None:
        (opened,) = [e for e in events if e.get("event") == "connection.opened"]
        (closed,) = [e for e in events if e.get("event") == "connection.closed"]
        self.assertEqual(opened["listener"], f"tcp:0:interface={LOOPBACK}")
        self.assertEqual(closed["peer"], opened["peer"])
        self.assertEqual((closed["bytesIn"], closed["bytesOut"]), (123, 123))
        self.assertEqual(closed["reason"], "client finished sending")
        self.assertIsInstance(closed["duration"], float)
        stopped = [e for e in events if e.get("event") == "listener.stopped"]
        self.assertEqual(len(stopped), 1)

    def test_twistJSON(self) -> None:
        server = self.start(
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[command("twist"), "--log-format", "json"],
        )
        self.checkConnectionEvents(self.exerciseAndCollect(server))

    def test_twistdJSONObserver(self) -> None:
        server = self.start(
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[
                command("twistd"),
                "-n",
                "--pidfile=",
                "--logger",
                "echotwist.logs.jsonObserver",
            ],
        )
        self.checkConnectionEvents(self.exerciseAndCollect(server))

    def test_noConnectionLogs(self) -> None:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--no-connection-logs",
            "--max-connections",
            "1",
        )
        held = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
        self.addCleanup(held.close)
        self.assertEqual(echoOnce((LOOPBACK, server.port), b""), b"")  # refused
        server.waitFor(r"Refused connection from")
        held.close()
        # Nothing is logged for the close to wait on: try until admitted.
        deadline = time.monotonic() + WAIT
        while echoOnce((LOOPBACK, server.port), b"quiet") != b"quiet":
            self.assertLess(time.monotonic(), deadline, "never admitted again")
        server.signal(signal.SIGTERM)
        server.wait()
        self.assertNotIn(" connected", server.output)
        self.assertNotIn("disconnected after", server.output)
