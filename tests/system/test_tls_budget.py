"""
TLS handshakes are a budget per source, against the real twistd: a flood of
handshakes from one loopback address is refused beyond the budget, while a
client from another address completes its handshake and is echoed.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time

from tests._tools import selfSignedCertificate
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase
from tests.system.test_transports import freePort
from tests.test_metrics import scrape

FLOODER = "127.0.3.1"
BYSTANDER = "127.0.3.2"

IN_PROGRESS = "too many TLS handshakes in progress from this source"
OVER_RATE = "TLS handshakes from this source over the rate"


class TwistdHandshakeBudgetTests(ServerTestCase):
    def startTLS(self, *args: str) -> tuple[Server, int, int]:
        key, self.certificate = selfSignedCertificate(self.directory)
        metrics = freePort()
        server = self.start(
            "--port",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={self.certificate}",
            "--metrics",
            f"tcp:{metrics}:interface={LOOPBACK}",
            *args,
        )
        port = server.port
        server.waitFor(r"Serving metrics on ")
        return server, port, metrics

    def handshake(self, port: int, source: str) -> bytes | None:
        """
        A TLS handshake and an echo from C{source}: the echo, or None if
        the server cut the connection.
        """
        context = ssl.create_default_context(cafile=self.certificate)
        context.check_hostname = False
        raw = socket.create_connection(
            (LOOPBACK, port), timeout=WAIT, source_address=(source, 0)
        )
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"over TLS")
                return tls.recv(16)
        except OSError:  # ssl.SSLError is one
            return None
        finally:
            raw.close()

    def refused(self, metrics: int, reason: str) -> float:
        return scrape(metrics)[
            ("echotwist_connections_refused_total", (("reason", reason),))
        ]

    def test_handshakesInProgress(self) -> None:
        """
        30 connections from one address that never send their hello, at
        --tls-handshakes-per-source 3: three are held, 27 are closed at
        once, and a real handshake from that address is refused too; one
        from another address succeeds meanwhile.
        """
        server, port, metrics = self.startTLS(
            "--tls-handshakes-per-source", "3", "--tls-handshake-rate", "0"
        )
        selector, _ = self.flood(port, 30)
        closed = self.closedUnanswered(selector, 27)
        self.assertEqual(closed, 27)
        self.assertIsNone(self.handshake(port, FLOODER))
        self.assertEqual(self.handshake(port, BYSTANDER), b"over TLS")
        # The three held ones were not cut meanwhile.
        self.assertEqual(len(selector.get_map()), 3)
        self.assertEqual(self.refused(metrics, IN_PROGRESS), 28)
        server.waitFor(
            rf"Refused connection from {FLOODER.replace('.', '[.]')}: {IN_PROGRESS}"
        )

    def closedUnanswered(self, selector: selectors.BaseSelector, most: int) -> int:
        """
        Wait, boundedly, until C{most} of the flood's connections are
        closed by the server; each must close without a byte from it.
        """
        closed = 0
        deadline = time.monotonic() + WAIT
        while closed < most and time.monotonic() < deadline:
            for key, _ in selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(1)
                except ConnectionResetError:
                    data = b""
                self.assertEqual(data, b"", "the server spoke first")
                selector.unregister(sock)
                closed += 1
        return closed

    def flood(
        self, port: int, count: int
    ) -> tuple[selectors.BaseSelector, list[socket.socket]]:
        """
        C{count} connections from L{FLOODER} that never send their hello;
        a selector waiting to read from each, and the sockets.
        """
        flood = [
            socket.create_connection(
                (LOOPBACK, port), timeout=WAIT, source_address=(FLOODER, 0)
            )
            for _ in range(count)
        ]
        selector = selectors.DefaultSelector()
        self.addCleanup(selector.close)
        for sock in flood:
            self.addCleanup(sock.close)
            selector.register(sock, selectors.EVENT_READ)
        return selector, flood

    def test_budgetHoldsInEachWorker(self) -> None:
        """
        With --workers 2, each worker keeps the budget for the connections
        it accepts: of 10 hello-less connections from one address, at most
        one per worker is held.
        """
        from tests._twistd import waitServing

        server, port, _ = self.startTLS(
            "--workers",
            "2",
            "--tls-handshakes-per-source",
            "1",
            "--tls-handshake-rate",
            "0",
        )
        waitServing(server, 2)
        selector, flood = self.flood(port, 10)
        closed = self.closedUnanswered(selector, 8)
        self.assertGreaterEqual(closed, 8)
        self.assertEqual(self.handshake(port, BYSTANDER), b"over TLS")

    def test_handshakeRate(self) -> None:
        """
        At --tls-handshake-rate 0.1 (a burst of one, then one every 10 s),
        the first of five quick handshakes from one address succeeds and the
        next are refused, while another address's succeeds.
        """
        server, port, metrics = self.startTLS("--tls-handshake-rate", "0.1")
        results = [self.handshake(port, FLOODER) for _ in range(5)]
        self.assertEqual(results[0], b"over TLS")
        self.assertIn(None, results[1:])
        self.assertEqual(self.handshake(port, BYSTANDER), b"over TLS")
        self.assertEqual(self.refused(metrics, OVER_RATE), results.count(None))
        server.waitFor(
            rf"Refused connection from {FLOODER.replace('.', '[.]')}: {OVER_RATE}"
        )
