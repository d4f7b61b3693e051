"""
Prometheus metrics and structured logs from the real twistd and twist:
scrapes during traffic, abuse of the metrics listener, and the JSON log
lines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from typing import Any

from echotwist.metrics import (
    MAX_METRICS_CONNECTIONS,
    MAX_METRICS_CONNECTIONS_PER_SOURCE,
    METRICS_CONNECTION_LIFETIME,
)
from tests._clients import echoOnce, readUntilClosed
from tests._tools import (
    openedBy,
    requireTool,
    selfSignedCertificate,
    withoutModule,
)
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase, command
from tests.system.test_transports import ask, freePort
from tests.test_metrics import GET, answerOf, scrape


def settle(server: Server, closed: int) -> None:
    """
    Wait, boundedly, until the server has logged C{closed}
    connections closed.
    """
    server.waitForCount(r" disconnected after ", closed)


def askEach(clients: list[socket.socket]) -> list[bytes]:
    """
    Send each client's request and read its answer: empty for one the
    server closed unanswered.
    """
    answers = []
    for client in clients:
        try:
            client.sendall(GET)
        except OSError:
            pass  # already closed by the server
        answers.append(answerOf(client))
    return answers


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


class MetricsTestCase(ServerTestCase):
    """
    A real twistd with an echo port and a metrics listener.
    """

    def startMetrics(self, *extra: str, **kwargs: Any) -> tuple[Server, int]:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--metrics",
            f"tcp:0:interface={LOOPBACK}",
            *extra,
            **kwargs,
        )
        port = int(server.waitFor(r"Serving metrics on \S+:(\d+)").group(1))
        if "--workers" in extra:
            # Both: workers start in either order, and a late one's start
            # lines would land among the lines a test expects none in.
            server.waitForCount(r"Worker \d serving", 2)
        return server, port


class ScrapeTests(MetricsTestCase):
    def test_countsMatchTheTraffic(self) -> None:
        udp = freePort(socket.SOCK_DGRAM)
        server, metricsPort = self.startMetrics(
            "--udp", f"udp:{udp}:interface={LOOPBACK}"
        )
        echoPort = server.port
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

    def test_buildInfo(self) -> None:
        """
        A scrape of the real server says which echotwist, Twisted, Python
        and reactor it runs.
        """
        import platform

        import twisted

        from echotwist import __version__

        server, metricsPort = self.startMetrics()
        reactor = server.waitFor(r"Serving on the (\S+) reactor").group(1)
        info = {
            labels: value
            for (name, labels), value in scrape(metricsPort).items()
            if name == "echotwist_build_info"
        }
        labels = (
            ("python", platform.python_version()),
            ("reactor", reactor),
            ("twisted", twisted.__version__),
            ("version", __version__),
        )
        self.assertEqual(info, {labels: 1})

    def test_metricsWithoutItsExtra(self) -> None:
        """
        Without prometheus_client (the C{metrics} extra), C{--metrics}
        ends start-up with one line naming the option and the extra.
        """
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--metrics",
            f"tcp:0:interface={LOOPBACK}",
            env=withoutModule(self.directory, "prometheus_client"),
        )
        self.assertEqual(server.wait(), 1, server.output)
        self.assertEqual(
            server.output.splitlines(),
            [
                "echotwist: --metrics needs prometheus_client, which is not"
                " installed: install echotwist with its metrics extra"
                " (pip install '.[metrics]' from a checkout)"
            ],
        )

    def test_healthWithoutTheMetricsExtra(self) -> None:
        """
        C{--health} needs only Twisted: without prometheus_client the health
        pages are served (the container image installs no metrics extra).
        """
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--health",
            f"tcp:0:interface={LOOPBACK}",
            env=withoutModule(self.directory, "prometheus_client"),
        )
        health = int(server.waitFor(r"Serving health on \S+:(\d+)").group(1))
        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{health}/healthz", timeout=WAIT
        ) as response:
            self.assertEqual(response.status, 200)

    def test_refusalsAreCounted(self) -> None:
        server, metricsPort = self.startMetrics("--max-connections", "1")
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


class AbuseTests(MetricsTestCase):
    """
    The metrics listener of the real twistd against scrapers that leave
    early, crowd in, dawdle or post.
    """

    def earlyClosedScrapes(self, *extra: str) -> None:
        """
        200 scrapers send their request and leave at once (half of them
        with a reset); the server logs no traceback, and serves the next
        scrape.  Then 20 whole scrapes leave no line in the log.
        """
        server, port = self.startMetrics(*extra)
        for n in range(200):
            with socket.create_connection((LOOPBACK, port), timeout=WAIT) as s:
                if n % 2:
                    s.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                s.sendall(GET)
        deadline = time.monotonic() + WAIT
        while True:
            # The server may still be closing the 200: a refused connection
            # is closed unanswered.
            with socket.create_connection((LOOPBACK, port), timeout=WAIT) as s:
                s.sendall(GET)
                answer = answerOf(s)
            if answer:
                break
            self.assertLess(time.monotonic(), deadline, "metrics never served again")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:200])
        lines = len(server.lines)
        for _ in range(20):
            scrape(port)
        # (A refusal of the retries above may be logged and read late.)
        self.assertEqual(
            [x for x in server.lines[lines:] if "Refused metrics connection" not in x],
            [],
        )
        server.signal(signal.SIGTERM)
        server.wait()
        self.assertNotIn("Traceback", server.output)
        self.assertNotIn("Unhandled", server.output)
        self.assertNotIn("GET /metrics", server.output)

    def test_earlyClosedScrapes(self) -> None:
        self.earlyClosedScrapes()

    def test_earlyClosedScrapesWithWorkers(self) -> None:
        self.earlyClosedScrapes("--workers", "2")

    def test_capHolds(self) -> None:
        """
        Of MAX_METRICS_CONNECTIONS + 4 connections open at once, the first
        MAX_METRICS_CONNECTIONS are served and the 4 others closed
        unanswered; once one closes, a new one is served.
        """
        server, port = self.startMetrics()
        clients = []
        for n in range(MAX_METRICS_CONNECTIONS + 4):
            # From as many sources as the per-source cap needs.
            source = f"127.0.1.{n // MAX_METRICS_CONNECTIONS_PER_SOURCE + 1}"
            client = socket.create_connection(
                (LOOPBACK, port), timeout=WAIT, source_address=(source, 0)
            )
            self.addCleanup(client.close)
            clients.append(client)
        answers = askEach(clients)
        served = [a for a in answers if a.startswith(b"HTTP/1.1 200 ")]
        self.assertEqual(len(served), MAX_METRICS_CONNECTIONS)
        self.assertEqual(answers[MAX_METRICS_CONNECTIONS:], [b""] * 4)
        server.waitFor(
            r"Refused metrics connection from 127\.0\.1\.\d+:\d+: 16 already"
        )
        clients[0].close()
        deadline = time.monotonic() + WAIT
        while True:
            with socket.create_connection((LOOPBACK, port), timeout=WAIT) as s:
                s.sendall(GET)
                if answerOf(s).startswith(b"HTTP/1.1 200 "):
                    break
            self.assertLess(time.monotonic(), deadline, "no slot came free")

    def test_perSourceCapHolds(self) -> None:
        """
        One client holding connections open cannot take the health probes'
        place: of MAX_METRICS_CONNECTIONS_PER_SOURCE + 2 from one address,
        the last 2 are closed unanswered, and another address is served.
        """
        server, port = self.startMetrics()
        clients = []
        for _ in range(MAX_METRICS_CONNECTIONS_PER_SOURCE + 2):
            client = socket.create_connection(
                (LOOPBACK, port), timeout=WAIT, source_address=("127.0.2.1", 0)
            )
            self.addCleanup(client.close)
            clients.append(client)
        # All held open, then a probe from elsewhere.
        with socket.create_connection(
            (LOOPBACK, port), timeout=WAIT, source_address=("127.0.2.2", 0)
        ) as probe:
            probe.sendall(GET)
            self.assertTrue(answerOf(probe).startswith(b"HTTP/1.1 200 "))
        answers = askEach(clients)
        served = [a for a in answers if a.startswith(b"HTTP/1.1 200 ")]
        self.assertEqual(len(served), MAX_METRICS_CONNECTIONS_PER_SOURCE)
        self.assertEqual(answers[MAX_METRICS_CONNECTIONS_PER_SOURCE:], [b""] * 2)
        server.waitFor(
            r"Refused metrics connection from 127\.0\.2\.1:\d+: \d+ already open"
            r" \(4 from its source\)"
        )

    def test_capHoldsOverTLS(self) -> None:
        """
        --health over TLS: a connection over the per-source cap is closed
        as it is accepted, as over plain TCP.  Refused by building no
        protocol, it was held open for good: Twisted's TLS factory wraps
        whatever the factory under it builds, None too, so clients that
        never send a handshake took descriptors past every cap.
        """
        key, certificate = selfSignedCertificate(self.directory)
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--health",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={certificate}",
        )
        port = int(server.waitFor(r"Serving health on \S+:(\d+) \(ssl").group(1))
        clients = []
        for _ in range(MAX_METRICS_CONNECTIONS_PER_SOURCE + 2):
            client = socket.create_connection(
                (LOOPBACK, port), timeout=WAIT, source_address=("127.0.2.3", 0)
            )
            self.addCleanup(client.close)
            clients.append(client)
        # Those over the cap end at once; those within it, silent, at their
        # lifetime (METRICS_CONNECTION_LIFETIME, well within WAIT).
        self.assertGreater(WAIT, METRICS_CONNECTION_LIFETIME * 2)
        for client in clients[MAX_METRICS_CONNECTIONS_PER_SOURCE:]:
            self.assertEqual(readUntilClosed(client, WAIT)[0], b"")
        for client in clients[:MAX_METRICS_CONNECTIONS_PER_SOURCE]:
            self.assertEqual(readUntilClosed(client, WAIT)[0], b"")
        server.waitFor(r"Refused metrics connection from 127\.0\.2\.3:\d+")

    def test_headerlessConnectionsGiveTheirPlaceBack(self) -> None:
        """
        --health behind haproxy:: connections refused before their PROXY
        header is in (here: a request with no header) give their place
        back.  They kept it for good: after 4 from the proxy's address,
        every later connection through it was refused until a restart.
        """
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--health",
            f"haproxy:tcp:0:interface={LOOPBACK}",
        )
        port = int(server.waitFor(r"Serving health on \S+:(\d+)").group(1))
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        for _ in range(MAX_METRICS_CONNECTIONS_PER_SOURCE * 2):
            with socket.create_connection((LOOPBACK, port), timeout=WAIT) as client:
                client.sendall(request)
                # The server closes it (no PROXY header): its socket is
                # closed where its place is given back, so the next
                # connection finds it given back.
                self.assertEqual(readUntilClosed(client, WAIT)[0], b"")
        server.waitFor(r"Refused connection from 127\.0\.0\.1:\d+: no PROXY")
        header = f"PROXY TCP4 203.0.113.7 {LOOPBACK} 40000 {port}\r\n"
        with socket.create_connection((LOOPBACK, port), timeout=WAIT) as client:
            client.sendall(header.encode() + request)
            answer = readUntilClosed(client, WAIT)[0]
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:200])

    def churnLeavesNoCount(self, proxied: bool, unix: bool = False) -> None:
        """
        Connections to --health that end at every odd moment (closed or
        reset before, during and after a PROXY header or a request; one
        answered) leave nothing counted: afterwards one client holds
        exactly MAX_METRICS_CONNECTIONS_PER_SOURCE, and all of them
        MAX_METRICS_CONNECTIONS.

        @param proxied: behind haproxy:, each client named by its header
            (one of them the proxy's own address); else each from its own
            loopback address.
        @param unix: on a UNIX socket (whose clients, unless a header names
            them, are no source: MAX_METRICS_CONNECTIONS from any).
        """
        path = os.path.join(self.directory, "health.sock")
        listener = f"unix:{path}" if unix else f"tcp:0:interface={LOOPBACK}"
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--health",
            f"haproxy:{listener}" if proxied else listener,
        )
        served = server.waitFor(r"Serving health on (?:unix:\S+|\S+:(\d+)) \(")
        port = int(served.group(1) or 7)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

        def connect(n: int) -> tuple[socket.socket, bytes]:
            # Client n: the socket, and what it sends before its request.
            # Client 1 is the proxy's own address: its source full, others
            # still get through it.
            client = LOOPBACK if n == 1 else f"127.0.3.{n + 1}"
            header = f"PROXY TCP4 {client} {LOOPBACK} 40000 {port}\r\n"
            before = header.encode() if proxied else b""
            if unix:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(WAIT)
                sock.connect(path)
                return sock, before
            if proxied:
                sock = socket.create_connection((LOOPBACK, port), timeout=WAIT)
                return sock, before
            sock = socket.create_connection(
                (LOOPBACK, port), timeout=WAIT, source_address=(client, 0)
            )
            return sock, b""

        def reset(sock: socket.socket) -> None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            sock.close()

        for n in range(MAX_METRICS_CONNECTIONS):
            for cut in (0, 9, None, -5, -1):
                for end in (socket.socket.close, reset):
                    sock, before = connect(n % 4)
                    # Nothing; part of the header; the header; part of the
                    # request; all of it but its last byte.
                    sock.sendall(
                        (before + request)[:cut] if cut is not None else before
                    )
                    end(sock)
            sock, before = connect(n % 4)
            with sock:
                # Answered, or refused while the churn before it is still
                # counted: either way it ends.
                sock.sendall(before + request)
                answerOf(sock)

        def hold(n: int) -> socket.socket | None:
            # Client n's connection, answered and held open (HTTP/1.1);
            # None if it was closed unanswered.
            sock, before = connect(n)
            self.addCleanup(sock.close)
            sock.sendall(before + request)
            if answerOf(sock).startswith(b"HTTP/1.1 200 "):
                return sock
            sock.close()
            return None

        # The server sees the churn's ends in its own time: until it has,
        # fewer are held (boundedly retried).
        sources = proxied or not unix
        first = (
            MAX_METRICS_CONNECTIONS_PER_SOURCE if sources else MAX_METRICS_CONNECTIONS
        )
        deadline = time.monotonic() + WAIT
        while True:
            held = [hold(0) for _ in range(first)]
            if all(held):
                break
            for sock in held:
                if sock is not None:
                    sock.close()
            self.assertLess(time.monotonic(), deadline, "places still counted")
        # Exactly as many from one client, and from all of them.
        if sources:
            self.assertIsNone(hold(0))
            for n in range(
                1, MAX_METRICS_CONNECTIONS // MAX_METRICS_CONNECTIONS_PER_SOURCE
            ):
                for _ in range(MAX_METRICS_CONNECTIONS_PER_SOURCE):
                    self.assertIsNotNone(hold(n), n)
        self.assertIsNone(hold(9))
        # Logged (the first of them: the log is throttled).
        server.waitFor(r"Refused metrics connection from \S+: \d+ already open")
        self.assertFalse("Traceback" in server.output, "a traceback was logged")

    def test_churnLeavesNoCount(self) -> None:
        self.churnLeavesNoCount(proxied=False)

    def test_churnBehindProxyLeavesNoCount(self) -> None:
        self.churnLeavesNoCount(proxied=True)

    def test_churnOverUNIXLeavesNoCount(self) -> None:
        self.churnLeavesNoCount(proxied=False, unix=True)

    def test_churnBehindProxyOverUNIXLeavesNoCount(self) -> None:
        self.churnLeavesNoCount(proxied=True, unix=True)

    def test_slowClientIsCut(self) -> None:
        server, port = self.startMetrics()
        client = socket.create_connection((LOOPBACK, port), timeout=WAIT)
        self.addCleanup(client.close)
        started = time.monotonic()
        client.sendall(b"GET /metr")
        data, how = readUntilClosed(client, WAIT)
        took = time.monotonic() - started
        self.assertEqual(data, b"")
        # Generous bounds: the lifetime, give or take a loaded machine.
        self.assertGreater(took, METRICS_CONNECTION_LIFETIME - 1)
        self.assertLess(took, METRICS_CONNECTION_LIFETIME + 10)

    def test_postRefusedAndNothingSpooled(self) -> None:
        """
        A POST announcing 10 MB gets 405 once its headers are in, its
        connection is closed, and no temporary file is opened for it.
        """
        spool = os.path.join(self.directory, "tmp")
        os.mkdir(spool)
        server, port = self.startMetrics(preexec=lambda: os.putenv("TMPDIR", spool))
        client = socket.create_connection((LOOPBACK, port), timeout=WAIT)
        self.addCleanup(client.close)
        client.sendall(
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
        )
        try:
            client.sendall(b"x" * 500_000)
        except OSError:
            pass  # the server closed already
        data, how = readUntilClosed(client, WAIT)
        self.assertTrue(data.startswith(b"HTTP/1.1 405 "), data[:200])
        self.assertIn(b"Allow: GET, HEAD", data)
        opened = openedBy(server.process.pid)
        self.assertEqual([p for p in opened if p.startswith(spool)], [])
        self.assertEqual(os.listdir(spool), [])
        # And GET still works.
        self.assertIn(("echotwist_workers", ()), scrape(port))

    def test_head(self) -> None:
        server, port = self.startMetrics()
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{port}/metrics", method="HEAD"
        )
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            self.assertEqual(response.status, 200)
            self.assertGreater(int(response.headers["Content-Length"]), 0)
            self.assertEqual(response.read(), b"")


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
        server = self.startJSONObserver()
        self.checkConnectionEvents(self.exerciseAndCollect(server))

    def startJSONObserver(self) -> Server:
        """
        twistd with C{--logger echotwist.logs.jsonObserver}, the docs' route
        to JSON.
        """
        return self.start(
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

    def jsonObserverOutput(self) -> str:
        """
        The whole output of a twistd serving one echo exchange with
        C{--logger echotwist.logs.jsonObserver}, the docs' route to JSON.
        """
        server = self.startJSONObserver()
        self.exerciseAndCollect(server)
        return server.output

    def test_jsonObserverWritesJSONLines(self) -> None:
        """
        Every line twistd writes with echotwist's JSON observer is one JSON
        object as it stands: no record separator, nothing to strip.
        """
        lines = self.jsonObserverOutput().splitlines()
        self.assertGreater(len(lines), 5)
        events = [json.loads(line) for line in lines]
        self.assertTrue(all(isinstance(e, dict) for e in events), events)
        self.checkConnectionEvents(events)

    def test_jsonObserverReadByJq(self) -> None:
        """
        jq reads the JSON observer's output line by line, as log shippers
        do: each raw line (C{-R}) parsed on its own (C{fromjson}).  (jq's
        default reader would skip a record separator; a line reader does
        not.)
        """
        jq = requireTool("jq", "jq")
        output = self.jsonObserverOutput()
        result = subprocess.run(
            [jq, "-R", "-r", "fromjson | .event // empty"],
            input=output.encode(),
            capture_output=True,
            timeout=WAIT,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, b"")
        names = result.stdout.decode().split()
        for name in ("listener.started", "connection.opened", "connection.closed"):
            self.assertIn(name, names)

    def test_jsonObserverWithWorkers(self) -> None:
        """
        With workers, every line is still one JSON object: the workers'
        events, relayed by the supervisor, included.
        """
        server = self.start(
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
            runner=[
                command("twistd"),
                "-n",
                "--pidfile=",
                "--logger",
                "echotwist.logs.jsonObserver",
            ],
        )
        server.waitForCount(r'"event": "worker\.serving"', 2)
        (started,) = [
            e
            for e in jsonEvents(server.output)
            if e.get("event") == "listener.started" and "worker" not in e
        ]
        port = int(str(started["address"]).rsplit(":", 1)[1])
        self.assertEqual(echoOnce((LOOPBACK, port), b"w" * 10), b"w" * 10)
        server.waitFor(r'"event": "connection\.closed"')
        server.signal(signal.SIGTERM)
        server.wait()
        events = [json.loads(line) for line in server.output.splitlines()]
        (closed,) = [e for e in events if e.get("event") == "connection.closed"]
        self.assertIn(closed["worker"], (1, 2))

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
