"""
/healthz, /readyz and /info in memory: what each page answers, readiness
through a stop, and the order in which a stop closes them.  (On the real
twistd through a drain: tests.system.test_health.)
"""

from __future__ import annotations

import json
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
from tests.test_service import _Endpoint

IDENTITY = Identity(hostname="host-1", instance="echo-0", version="9.9")


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
