"""
/healthz, /readyz and /info: in memory, and on the real twistd through a
drain (readiness fails at SIGTERM while an open client still echoes, the
health listener answers until the drain ends, then exit 143).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import urllib.error
import urllib.request
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.health import Health
from echotwist.identity import Identity
from echotwist.listeners import Listener
from echotwist.metrics import MetricsGuard, metricsSite
from echotwist.service import EchoService
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase
from tests.test_service import _Endpoint
from tests.test_workers import waitServing

#: The health listener, written unlike the echo's so that the log tells
#: their stops apart.
HEALTH = f"tcp:port=0:interface={LOOPBACK}"

IDENTITY = Identity(hostname="host-1", instance="echo-0", version="9.9")


def get(port: int, path: str) -> tuple[int, bytes]:
    """
    GET C{path}; the status and the body, whatever the status.
    """
    url = f"http://{LOOPBACK}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class PagesTests(SynchronousTestCase):
    """
    The health pages on the guarded site, in memory.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.reasons: list[str] = []

    def ask(self, request: bytes, metrics: Any = None) -> bytes:
        pages = Health(lambda: list(self.reasons), IDENTITY).pages()
        guard: MetricsGuard = metricsSite(metrics, None, self.clock, pages)
        guard.doStart()
        self.addCleanup(guard.doStop)
        peer = IPv4Address("TCP", "192.0.2.7", 40000)
        protocol = guard.buildProtocol(peer)
        assert protocol is not None
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(request)
        return bytes(transport.value())

    def test_ready(self) -> None:
        answer = self.ask(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\nready\n"), answer)

    def test_notReady(self) -> None:
        """
        Not ready: 503 and every reason, on GET and on HEAD (no body).
        """
        self.reasons[:] = ["draining"]
        answer = self.ask(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
        self.assertTrue(answer.endswith(b"not ready: draining\n"), answer)
        head = self.ask(b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
        self.assertTrue(head.endswith(b"\r\n\r\n"), head)

    def test_liveWhileDraining(self) -> None:
        """
        /healthz stays 200 through a drain: a liveness probe failing then
        would kill the drain.
        """
        self.reasons[:] = ["draining"]
        answer = self.ask(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertTrue(answer.endswith(b"ok\n"), answer)

    def test_info(self) -> None:
        """
        /info: the identity and the client's address, as JSON.
        """
        answer = self.ask(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"Content-Type: application/json", answer)
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(
            body,
            {
                "hostname": "host-1",
                "instance": "echo-0",
                "version": "9.9",
                "client": "192.0.2.7:40000",
                "clientHost": "192.0.2.7",
                "clientPort": 40000,
            },
        )

    def test_noMetricsOnHealth(self) -> None:
        """
        The --health site has no /metrics.
        """
        answer = self.ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 404 "), answer)

    def test_noBody(self) -> None:
        """
        The health pages take no request bodies either.
        """
        answer = self.ask(
            b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 405 "), answer)


class ReadinessTests(SynchronousTestCase):
    """
    L{EchoService.notReady}.
    """

    def test_notListeningYet(self) -> None:
        """
        Before its listeners listen, a server is not ready, and says which.
        """
        service = EchoService(
            ["tcp:0:interface=127.0.0.1"],
            health="tcp:0:interface=127.0.0.1",
            reactor=MemoryReactorClock(),
        )
        self.assertEqual(
            service.notReady(), ["not listening on tcp:0:interface=127.0.0.1"]
        )

    def test_draining(self) -> None:
        """
        From the start of the stop: draining.
        """
        reactor = MemoryReactorClock()
        service = EchoService(
            ["tcp:0:interface=127.0.0.1"],
            health="tcp:0:interface=127.0.0.1",
            reactor=reactor,
        )
        service.startService()
        self.assertEqual(service.notReady(), [])
        service.stopService()
        self.assertEqual(service.notReady(), ["draining"])


class StopOrderTests(SynchronousTestCase):
    """
    The health listener outlives the drain, in memory.
    """

    def test_healthStopsAfterTheDrain(self) -> None:
        reactor = MemoryReactorClock()
        echoJournal: list[str] = []
        healthJournal: list[str] = []
        service = EchoService(
            [Listener("tcp:5000", _Endpoint(echoJournal))],
            health=Listener("tcp:8080", _Endpoint(healthJournal)),
            reactor=reactor,
            shutdownTimeout=30,
            drainQuiet=0,
        )
        service.startService()
        self.assertEqual(service.notReady(), [])
        protocol = service.factory.buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(StringTransport())

        stopped = service.stopService()
        self.assertEqual(echoJournal, ["listening", "stopped listening"])
        self.assertEqual(healthJournal, ["listening"])
        self.assertEqual(service.notReady(), ["draining"])
        reactor.advance(29)
        self.assertEqual(healthJournal, ["listening"])
        self.assertNoResult(stopped)

        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(healthJournal, ["listening", "stopped listening"])
        self.successResultOf(stopped)


class HealthDuringDrainTests(ServerTestCase):
    """
    The real twistd: readiness through a drain.
    """

    def drainWith(self, *args: str, flag: str = "--health") -> None:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            flag,
            HEALTH,
            # Each connection is kept until its client closes.
            "--drain-quiet",
            "0",
            "--shutdown-timeout",
            "60",
            *args,
        )
        health = int(
            server.waitFor(r"Serving (?:health|metrics) on \S+:(\d+)").group(1)
        )
        self.drain(server, server.port, health, server.process.pid)

    def drain(self, server: Server, port: int, health: int, pid: int) -> None:
        self.assertEqual(get(health, "/readyz"), (200, b"ready\n"))
        client = socket.create_connection((LOOPBACK, port), timeout=WAIT)
        self.addCleanup(client.close)
        client.sendall(b"before\n")
        self.assertEqual(client.recv(100), b"before\n")
        os.kill(pid, signal.SIGTERM)
        server.waitFor(r"Draining 1 connection")
        self.assertEqual(get(health, "/readyz"), (503, b"not ready: draining\n"))
        self.assertEqual(get(health, "/healthz"), (200, b"ok\n"))
        payload = os.urandom(256 * 1024)
        client.sendall(payload)
        received = bytearray()
        while len(received) < len(payload):
            chunk = client.recv(65536)
            self.assertTrue(chunk, "closed before every byte came back")
            received += chunk
        self.assertEqual(bytes(received), payload)
        # Still draining, still answering: the client has not closed.
        self.assertEqual(get(health, "/readyz")[0], 503)
        client.close()
        # Killed by SIGTERM (143 to a shell) after the drain.
        self.assertEqual(server.wait(), -signal.SIGTERM, server.output)
        # The echo listener stopped at once, the health listener only after
        # the drain.
        output = server.output
        echoStopped = output.index(f"Stopped listening on tcp:0:interface={LOOPBACK}")
        drained = re.search(r"Drain finished|All workers have exited", output)
        assert drained is not None, output
        healthStopped = output.index(f"Stopped listening on {HEALTH}")
        self.assertLess(echoStopped, drained.start())
        self.assertLess(drained.start(), healthStopped)

    def test_health(self) -> None:
        """
        --health: /readyz 503 from SIGTERM on, the client's bytes still
        echo, the listener answers until the drain ends, then death by
        SIGTERM (status 143).
        """
        self.drainWith()

    def test_metrics(self) -> None:
        """
        The same on the --metrics endpoint.
        """
        self.drainWith(flag="--metrics")

    def test_workers(self) -> None:
        """
        With workers: not ready until one serves, and 503 from SIGTERM
        until they have drained.
        """
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--health",
            HEALTH,
            "--workers",
            "2",
            "--drain-quiet",
            "0",
            "--shutdown-timeout",
            "60",
        )
        health = int(server.waitFor(r"Serving health on \S+:(\d+)").group(1))
        waitServing(server, 2)
        self.drain(server, server.port, health, server.process.pid)
