"""
/healthz, /readyz and /info on the real twistd through a drain: readiness
fails at SIGTERM while an open client still echoes, the health listener
answers until the drain ends, then exit 143.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.error
import urllib.request

from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase, waitServing

#: The health listener, written unlike the echo's so that the log tells
#: their stops apart.
HEALTH = f"tcp:port=0:interface={LOOPBACK}"


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
