"""
echotwist's reactor (L{echotwist.reactor}) in the real twistd: it serves
the command as typed (C{twistd -n echo}, C{twist echo}, their workers),
unless the user names another reactor, and then the echo is Twisted's own.
Its loop is tested in memory in C{tests.test__fast_reactor}.
"""

from __future__ import annotations

import os
import random
import resource
import selectors
import signal
import socket
import struct
import subprocess
import time
from typing import Any

from tests._clients import echoOnce, exchange
from tests._tools import openedBy
from tests._twistd import (
    LOOPBACK,
    SERVING_ON_ECHOTWIST,
    SERVING_ON_EPOLL,
    WAIT,
    Server,
    ServerTestCase,
    command,
)
from tests.test_metrics import scrape


def _pipes(pid: int) -> int:
    """
    How many of process C{pid}'s descriptors are pipes.
    """
    return sum(1 for target in openedBy(pid) if target.startswith("pipe:"))


class RunTests(ServerTestCase):
    def test_listedByTwistd(self) -> None:
        output = subprocess.run(
            [command("twistd"), "--help-reactors"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=self.directory,
        ).stdout
        self.assertRegex(output, r"echotwist\s+epoll without a logging context")

    def test_servesAsTyped(self) -> None:
        """
        C{twistd -n echo} with no reactor named serves on echotwist's
        reactor, and says so; large transfers and half-close work on it.
        """
        server = self.start()
        server.waitFor(r"reactor class: echotwist\.reactor\.EchotwistEPollReactor")
        server.waitFor(SERVING_ON_ECHOTWIST)
        self.assertBulkEchoes(server, 20)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def assertBulkEchoes(self, server: Server, connections: int) -> None:
        """
        C{connections} clients at once each send C{server} 200,000 bytes
        and half-close; each gets them all back, then the server's close.
        """
        payloads = [os.urandom(200_000) for _ in range(connections)]
        for payload, (received, eof) in zip(
            payloads,
            exchange((LOOPBACK, server.port), payloads, halfClose=True),
            strict=True,
        ):
            self.assertEqual((received, eof), (payload, True))

    def test_smallMessagesRoundTrip(self) -> None:
        """
        Request and response, small messages, ten connections taking turns:
        the reactor's plain echo answers each exactly, and the metrics
        count every byte while the connections are still open.
        """
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--metrics",
            f"tcp:0:interface={LOOPBACK}",
        )
        server.waitFor(SERVING_ON_ECHOTWIST)
        metricsPort = int(server.waitFor(r"Serving metrics on \S+:(\d+)").group(1))
        clients = []
        for _ in range(10):
            client = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
            self.addCleanup(client.close)
            clients.append(client)
        rng = random.Random(7)
        total = 0
        deadline = time.monotonic() + WAIT
        for turn in range(100):
            for client in clients:
                message = rng.randbytes(rng.randint(1, 3000))
                client.sendall(message)
                received = b""
                while len(received) < len(message):
                    self.assertLess(time.monotonic(), deadline, f"turn {turn}")
                    chunk = client.recv(65536)
                    self.assertTrue(chunk, "closed early")
                    received += chunk
                self.assertEqual(received, message)
                total += len(message)
        counted = scrape(metricsPort)
        self.assertEqual(
            counted[("echotwist_received_bytes_total", (("transport", "stream"),))],
            total,
        )
        for client in clients:
            client.shutdown(socket.SHUT_WR)
            self.assertEqual(client.recv(1), b"")

    def test_concurrentClientsTheirOwnBytes(self) -> None:
        """
        Forty clients at once, each sending random messages of sizes that
        change from one to the next (small ones the reactor's plain echo
        answers from one shared buffer, and around SPLICE_FROM, where reads
        leave it), each waiting for its echo before the next; after a few
        messages a client closes (FIN or reset) and a new one takes its
        place at once, so that the server gives out descriptor numbers
        again.  Every echo is its own connection's bytes exactly.
        """
        server = self.start()
        server.waitFor(SERVING_ON_ECHOTWIST)
        seed = int.from_bytes(os.urandom(4), "big")
        rng = random.Random(seed)
        sizes = (1, 7, 100, 1024, 1500, 4096, 16383, 16384, 16385, 65536, 131072)
        selector = selectors.DefaultSelector()
        self.addCleanup(selector.close)

        def connect() -> None:
            sock = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
            sock.setblocking(False)
            state = {
                "sock": sock,
                "left": rng.randint(1, 6),
                "message": b"",
                "sent": 0,
                "received": bytearray(),
            }
            nextMessage(state)
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, state)

        def nextMessage(state: dict[str, Any]) -> None:
            state["message"] = rng.randbytes(rng.choice(sizes))
            state["sent"] = 0
            state["received"] = bytearray()

        def close(state: dict[str, Any]) -> None:
            sock = state["sock"]
            selector.unregister(sock)
            if rng.random() < 0.5:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            sock.close()

        for _ in range(40):
            connect()
        echoed = opened = 0
        deadline = time.monotonic() + WAIT
        while echoed < 1000:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, f"{echoed} echoes only (seed {seed})")
            for key, events in selector.select(left):
                state = key.data
                sock, message = state["sock"], state["message"]
                if events & selectors.EVENT_WRITE and state["sent"] < len(message):
                    try:
                        state["sent"] += sock.send(message[state["sent"] :])
                    except BlockingIOError:
                        pass
                    if state["sent"] == len(message):
                        selector.modify(sock, selectors.EVENT_READ, state)
                if not events & selectors.EVENT_READ:
                    continue
                try:
                    chunk = sock.recv(262144)
                except BlockingIOError:
                    continue
                self.assertTrue(chunk, f"closed by the server (seed {seed})")
                state["received"] += chunk
                received = state["received"]
                self.assertTrue(
                    received[: len(message)] == message[: len(received)],
                    f"a {len(message)}-byte echo differs (seed {seed})",
                )
                self.assertLessEqual(len(received), len(message), f"seed {seed}")
                if len(received) < len(message):
                    continue
                echoed += 1
                state["left"] -= 1
                if state["left"]:
                    nextMessage(state)
                    selector.modify(
                        sock, selectors.EVENT_READ | selectors.EVENT_WRITE, state
                    )
                else:
                    close(state)
                    connect()
                    opened += 1
        self.assertGreater(opened, 100)
        for key in list(selector.get_map().values()):
            close(key.data)
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"after"), b"after")
        self.assertNotIn("Traceback", server.output)
        self.assertNotIn("Unhandled", server.output)

    def test_sigtermWhileEveryEventIsAPlainEcho(self) -> None:
        """
        Ten clients keep the server's loop busy with small echoes, so that
        it repeats its polls of plain echoes without returning to Twisted's
        main loop; SIGTERM still starts the drain, which aborts them (they
        never go quiet) at the shutdown deadline, and the process exits by
        the signal.  Every echo up to the end is exact.
        """
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--shutdown-timeout",
            "1",
        )
        server.waitFor(SERVING_ON_ECHOTWIST)
        selector = selectors.DefaultSelector()
        self.addCleanup(selector.close)
        for n in range(10):
            sock = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
            self.addCleanup(sock.close)
            sock.setblocking(False)
            message = bytes([n]) * (64 + n)
            sock.sendall(message)
            selector.register(sock, selectors.EVENT_READ, [message, bytearray()])
        echoed = 0
        signalled = False
        deadline = time.monotonic() + 2 * WAIT
        while selector.get_map():
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, f"still open after {echoed} echoes")
            for key, _ in selector.select(left):
                sock = key.fileobj
                message, received = key.data
                try:
                    chunk = sock.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.assertTrue(signalled, "closed before SIGTERM")
                    selector.unregister(sock)
                    continue
                received += chunk
                self.assertEqual(received, message[: len(received)])
                if len(received) == len(message):
                    echoed += 1
                    del received[:]
                    try:
                        sock.send(message)  # type: ignore[union-attr]
                    except OSError:
                        selector.unregister(sock)
                        continue
                if echoed == 2000 and not signalled:
                    server.signal(signal.SIGTERM)
                    signalled = True
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertIn("Draining 10 connection(s)", server.output)
        self.assertIn("Shutdown deadline passed: aborting", server.output)
        self.assertNotIn("Traceback", server.output)

    def assertServesOn(self, server: Server, serving: str, workers: int = 0) -> None:
        """
        C{server} says it serves on the reactor C{serving} matches (and so
        does each of its C{workers}), and echoes.
        """
        server.waitFor(serving)
        for number in range(1, workers + 1):
            server.waitFor(rf"worker {number}\] {serving}")
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"which"), b"which")
        self.assertNotIn("Traceback", server.output)

    def test_namedReactorWinsUnderTwistd(self) -> None:
        server = self.start(reactorArgs=("--reactor", "epoll"))
        self.assertServesOn(server, SERVING_ON_EPOLL)
        self.assertNotIn("EchotwistEPollReactor", server.output)

    def test_epollIsAPlainTwistedEcho(self) -> None:
        """
        Under C{--reactor epoll} the fast path is off: bulk echoes come
        back whole through Twisted's own transport, and nothing is
        spliced (the process never opens the pipe that echotwist's reactor
        splices through, as it does for the same exchange).
        """
        for reactorArgs, serving, spliced in [
            (("--reactor", "epoll"), SERVING_ON_EPOLL, False),
            ((), SERVING_ON_ECHOTWIST, True),
        ]:
            server = self.start(reactorArgs=reactorArgs)
            server.waitFor(serving)
            # A first echo, not spliced: whatever the running reactor opens
            # is open before the count.
            self.assertEqual(echoOnce((LOOPBACK, server.port), b"first"), b"first")
            before = _pipes(server.process.pid)
            self.assertBulkEchoes(server, 5)
            # The shared pipe is two descriptors, and outlives the exchange.
            self.assertEqual(
                _pipes(server.process.pid) - before, 2 if spliced else 0, serving
            )
            server.signal(signal.SIGTERM)
            self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_namedEchotwistUnderTwistd(self) -> None:
        server = self.start(reactorArgs=("--reactor", "echotwist"))
        self.assertServesOn(server, SERVING_ON_ECHOTWIST)

    def test_twistAsTyped(self) -> None:
        """
        Under C{twist} the tap installs echotwist's reactor and hands it to
        twist's options, which then run it instead of installing their own
        (ReactorAlreadyInstalledError, otherwise).
        """
        server = self.start(
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[command("twist"), "--log-format", "text"],
        )
        self.assertServesOn(server, SERVING_ON_ECHOTWIST)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_namedReactorWinsUnderTwist(self) -> None:
        server = self.start(
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[command("twist"), "--log-format", "text", "--reactor", "epoll"],
        )
        self.assertServesOn(server, SERVING_ON_EPOLL)

    def test_workersAsTyped(self) -> None:
        server = self.start("--port", f"tcp:0:interface={LOOPBACK}", "--workers", "2")
        self.assertServesOn(server, SERVING_ON_ECHOTWIST, workers=2)

    def test_workersOnTheNamedReactor(self) -> None:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
            reactorArgs=("--reactor", "epoll"),
        )
        self.assertServesOn(server, SERVING_ON_EPOLL, workers=2)
        self.assertNotIn("EchotwistEPollReactor", server.output)

    def test_tacKeepsItsReactor(self) -> None:
        """
        A C{.tac} that uses echotwist serves on whatever reactor twistd
        installs for it (Twisted's default, or the one named): only the tap
        chooses.
        """
        tac = os.path.join(self.directory, "echo.tac")
        with open(tac, "w") as f:
            f.write(
                "from twisted.application import service\n"
                "from echotwist import EchoService\n"
                "application = service.Application('echo')\n"
                f"EchoService(['tcp:0:interface={LOOPBACK}'])"
                ".setServiceParent(application)\n"
            )
        server = self.start(runner=[command("twistd"), "-n", "--pidfile=", "-y", tac])
        self.assertServesOn(server, SERVING_ON_EPOLL)
        # Naming it gets echotwist's, as docs/performance.rst says.
        named = self.start(
            runner=[
                command("twistd"),
                "-n",
                "--pidfile=",
                "--reactor",
                "echotwist",
                "-y",
                tac,
            ]
        )
        self.assertServesOn(named, SERVING_ON_ECHOTWIST)


class AlarmTests(ServerTestCase):
    """
    The loop's alarm (L{echotwist._fast.alarm}) in the real twistd.
    """

    def test_alarmAfterDescriptorExhaustion(self) -> None:
        """
        A hundred connections queued while the server is stopped (SIGSTOP)
        and let in at once (SIGCONT) take every descriptor it may have
        (RLIMIT_NOFILE 64) in one pass of accepts, before its first timed
        call (the idle sweep) asks for the loop's alarm.  Once they are
        closed, the loop makes its alarm after all (a timerfd among its
        descriptors) instead of polling with timeouts for the rest of its
        life.
        """

        def lowLimit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}:backlog=200",
            "--idle-timeout",
            "3",
            "--max-connections",
            "0",
            "--max-per-source",
            "0",
            "--no-connection-logs",
            preexec=lowLimit,
        )
        address = (LOOPBACK, server.port)
        pid = server.process.pid
        self.assertNotIn("anon_inode:[timerfd]", openedBy(pid))
        server.signal(signal.SIGSTOP)
        self.addCleanup(server.signal, signal.SIGCONT)
        selector = selectors.DefaultSelector()
        self.addCleanup(selector.close)
        flood = []
        for _ in range(100):
            client = socket.socket()
            self.addCleanup(client.close)
            client.setblocking(False)
            client.connect_ex(address)
            selector.register(client, selectors.EVENT_WRITE)
            flood.append(client)
        # Every handshake done by the kernel, the server still stopped.
        deadline = time.monotonic() + WAIT
        while selector.get_map():
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "connections never established")
            for key, _ in selector.select(left):
                selector.unregister(key.fileobj)
        server.signal(signal.SIGCONT)
        server.waitFor(r"EMFILE|Could not accept")
        for client in flood:
            client.close()
        # A connection at a time, for a timed call (its idle sweep) for the
        # loop to wait on, until the alarm is there.
        deadline = time.monotonic() + WAIT
        while "anon_inode:[timerfd]" not in openedBy(pid):
            self.assertLess(time.monotonic(), deadline, "the loop has no alarm")
            try:
                self.assertEqual(echoOnce(address, b"again"), b"again")
            except (OSError, AssertionError):
                # Still out of descriptors: the flood's not all closed yet.
                pass
        self.assertNotIn("Traceback", server.output)
