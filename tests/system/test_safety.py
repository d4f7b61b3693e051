"""
Safe on a public address, against the real twistd: limits, the idle
timeout, the drain on SIGTERM, descriptor exhaustion, and churn that must
leak nothing.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import socket
import struct
import threading
import time

from tests._clients import echoOnce, readUntilClosed
from tests._twistd import (
    LOOPBACK,
    WAIT,
    Server,
    ServerTestCase,
    TwistedReactorMixin,
)
from tests.system.test_signals import waitUntil

MiB = 1024 * 1024
SOAK_SECONDS = float(os.environ.get("ECHOTWIST_SOAK_SECONDS", "30"))
SOAK_WARMUP_SECONDS = 5.0

#: The sitecustomize module test_soak puts first on the server's PYTHONPATH:
#: on SIGUSR2, a full collection, then the number of objects the garbage
#: collector tracks, written beside the module (replaced whole, so the test
#: never reads half of it).
OBJECT_COUNT_HOOK = """\
import gc
import os
import signal

def _count(signum, frame):
    gc.collect()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "objects.count")
    with open(path + ".new", "w") as count:
        count.write(str(len(gc.get_objects())))
    os.replace(path + ".new", path)

signal.signal(signal.SIGUSR2, _count)
"""


def descriptors(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def cpuSeconds(server: Server) -> float:
    with open(f"/proc/{server.process.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset(sock: socket.socket) -> None:
    """
    Close with an RST instead of a FIN.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def served(sock: socket.socket, payload: bytes = b"ping") -> bool:
    """
    Whether the server echoes on C{sock}; False once it has closed it.
    """
    try:
        sock.sendall(payload)
        sock.settimeout(WAIT)
        return sock.recv(len(payload)) == payload
    except OSError:
        return False


class TwistdLimitTests(ServerTestCase):
    def test_maxConnections(self) -> None:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--max-connections",
            "50",
            "--max-per-source",
            "0",
        )
        address = (LOOPBACK, server.port)
        clients = [socket.create_connection(address, timeout=WAIT) for _ in range(50)]
        for client in clients:
            self.addCleanup(client.close)
            self.assertTrue(served(client))

        extra = socket.create_connection(address, timeout=WAIT)
        self.addCleanup(extra.close)
        self.assertEqual(readUntilClosed(extra), (b"", "eof"))
        server.waitFor(
            r"Refused connection from 127\.0\.0\.1:\d+: too many connections"
        )

        self.assertTrue(all(served(client, b"still here") for client in clients))
        clients.pop().close()
        server.waitFor(r"disconnected after .*: client finished sending")
        self.assertEqual(echoOnce(address, b"room again"), b"room again")

    def test_maxPerSource(self) -> None:
        server = self.start(
            "--port", f"tcp:0:interface={LOOPBACK}", "--max-per-source", "3"
        )
        address = (LOOPBACK, server.port)
        mine = [socket.create_connection(address, timeout=WAIT) for _ in range(3)]
        for client in mine:
            self.addCleanup(client.close)
            self.assertTrue(served(client))
        extra = socket.create_connection(address, timeout=WAIT)
        self.addCleanup(extra.close)
        self.assertEqual(readUntilClosed(extra), (b"", "eof"))
        # Another source (all of 127/8 is this host's) is not held back.
        other = socket.socket()
        self.addCleanup(other.close)
        other.bind(("127.0.0.2", 0))
        other.settimeout(WAIT)
        other.connect(address)
        self.assertTrue(served(other))
        # The source, as the limit counts it: no port (for IPv6, a network).
        server.waitFor(
            r"Refused connection from 127\.0\.0\.1: too many connections from this source"
        )

    def test_idleTimeout(self) -> None:
        server = self.start(
            "--port", f"tcp:0:interface={LOOPBACK}", "--idle-timeout", "1"
        )
        address = (LOOPBACK, server.port)
        idle = socket.create_connection(address, timeout=WAIT)
        busy = socket.create_connection(address, timeout=WAIT)
        self.addCleanup(idle.close)
        self.addCleanup(busy.close)
        opened = time.monotonic()

        closedAfter: list[float] = []

        def watchIdle() -> None:
            readUntilClosed(idle)
            closedAfter.append(time.monotonic() - opened)

        watcher = threading.Thread(target=watchIdle)
        watcher.start()
        # The busy client talks every 0.2 s for three seconds.
        for n in range(15):
            self.assertTrue(served(busy, b"tick %d" % n))
            watcher.join(0.2)
        watcher.join(WAIT)
        self.assertEqual(len(closedAfter), 1)
        self.assertGreaterEqual(closedAfter[0], 0.9)
        self.assertTrue(served(busy, b"still busy"))
        server.waitFor(r"disconnected after .*: idle timeout")


class RealDrainTests(ServerTestCase):
    def test_bytesSentBeforeSIGTERMComeBack(self) -> None:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--idle-timeout",
            "1",
            "--shutdown-timeout",
            "5",
        )
        client = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
        self.addCleanup(client.close)
        payload = os.urandom(2 * MiB)
        received: list[tuple[bytes, str]] = []
        reader = threading.Thread(
            target=lambda: received.append(readUntilClosed(client))
        )
        reader.start()
        client.sendall(payload)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        reader.join(WAIT)
        self.assertEqual(received, [(payload, "eof")])
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertLess(time.monotonic() - signalled, 5 + 2)

    def test_nonReaderIsAbortedAtTheDeadline(self) -> None:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--shutdown-timeout",
            "1",
            "--idle-timeout",
            "0",
        )
        hog = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
        self.addCleanup(hog.close)
        hog.setblocking(False)
        chunk = b"x" * MiB
        sent = 0
        # Until the server stops reading (its buffers and ours are full):
        # at most 256 MiB, the socket unwritable for a second ends it.
        while sent < 256 * MiB and select.select([], [hog], [], 1.0)[1]:
            try:
                sent += hog.send(chunk)
            except BlockingIOError:
                pass
        self.assertLess(sent, 256 * MiB, "the server never stopped reading")
        server.waitFor(r" connected$")
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertIn(
            "Shutdown deadline passed: aborting 1 connection(s)", server.output
        )


class TwistedReactorDrainTests(TwistedReactorMixin, RealDrainTests):
    """
    The same, on Twisted's epoll reactor (C{twistd --reactor epoll}).
    """


class ExhaustionTests(ServerTestCase):
    def test_descriptorExhaustion(self) -> None:
        """
        With RLIMIT_NOFILE at 64, a flood of 100 connections: the server
        serves those it has descriptors for, sheds the rest without
        spinning, and accepts again once descriptors are free.  Twisted's
        listener logs up to three lines for each connection it has to drop;
        the server lets one line per reason through every 10 seconds.
        """

        def lowLimit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--max-connections",
            "0",
            "--max-per-source",
            "0",
            "--no-connection-logs",
            preexec=lowLimit,
        )
        address = (LOOPBACK, server.port)
        began = time.monotonic()
        flood = [socket.create_connection(address, timeout=WAIT) for _ in range(100)]
        for client in flood:
            self.addCleanup(client.close)
        kept = [client for client in flood if served(client)]
        self.assertGreater(len(kept), 20)
        self.assertLess(len(kept), 64)
        elapsed = time.monotonic() - began
        lines = [
            line
            for line in server.lines
            if "EMFILE" in line or "Could not accept" in line
        ]
        # At most one line per reason (Twisted has four) per 10 s begun.
        self.assertGreaterEqual(len(lines), 1)
        self.assertLessEqual(
            len(lines),
            4 * (1 + int(elapsed // 10)),
            f"{len(lines)} lines in {elapsed:.1f}s, first: {lines[:6]}",
        )

        before = cpuSeconds(server)
        waited = threading.Event()
        waited.wait(1.0)  # a window to measure CPU over, not a synchronisation
        self.assertLess(cpuSeconds(server) - before, 0.5, "the server spins")

        self.assertTrue(all(served(client, b"kept") for client in kept))
        for client in flood:
            client.close()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.assertEqual(echoOnce(address, b"again"), b"again")
                break
            except (OSError, AssertionError):
                self.assertLess(time.monotonic(), deadline, "never accepted again")


class ChurnTests(ServerTestCase):
    def churn(
        self, address: tuple[str, int], rounds: int, settle: Server | None = None
    ) -> None:
        """
        Every way a client can come and go, six connections a round.  With
        C{settle}, wait after each round until that server has closed them
        all (a per-source limit would refuse the next round's otherwise).
        """
        payload = os.urandom(256 * 1024)
        for _ in range(rounds):
            # A clean exchange, small and in bulk (the bulk one makes the
            # server open the pipe it splices through, which it keeps).
            self.assertEqual(echoOnce(address, b"clean"), b"clean")
            self.assertEqual(echoOnce(address, payload * 4), payload * 4)
            # Connect and close at once.
            socket.create_connection(address, timeout=WAIT).close()
            # A reset in the middle of a transfer.
            sock = socket.create_connection(address, timeout=WAIT)
            sock.sendall(payload[:100_000])
            reset(sock)
            # A reset after a half-close, with echo still on its way.
            sock = socket.create_connection(address, timeout=WAIT)
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            reset(sock)
            # A client that vanishes without reading its echo.
            sock = socket.create_connection(address, timeout=WAIT)
            sock.sendall(payload[:1000])
            sock.close()
            with self.lock:
                self.made += 6
            if settle is not None:
                self.settle(settle)

    def setUp(self) -> None:
        super().setUp()
        self.made = 0
        self.lock = threading.Lock()

    def settle(self, server: Server) -> None:
        """
        Wait until the server has logged every connection made so far
        closed.
        """
        server.waitForCount(r" disconnected after ", self.made)

    def test_nothingLeaks(self) -> None:
        server = self.start(
            "--port", f"tcp:0:interface={LOOPBACK}", "--max-per-source", "6"
        )
        address = (LOOPBACK, server.port)
        self.churn(address, 2, settle=server)
        baseline = descriptors(server)
        self.churn(address, 40, settle=server)
        self.assertEqual(descriptors(server), baseline)
        # The per-source books are back to zero: six at once are admitted.
        six = [socket.create_connection(address, timeout=WAIT) for _ in range(6)]
        self.assertTrue(all(served(client) for client in six))
        for client in six:
            client.close()
        self.made += 6
        self.settle(server)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
        # Nothing was open to drain: the factory's books were at zero.
        self.assertNotIn("Draining", server.output)

    def soak(self, address: tuple[str, int], seconds: float) -> None:
        """
        Churn from four threads for C{seconds}.
        """
        finished: list[threading.Thread] = []
        stop = time.monotonic() + seconds

        def work() -> None:
            while time.monotonic() < stop:
                self.churn(address, 1)
            finished.append(threading.current_thread())

        workers = [threading.Thread(target=work) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(seconds + 10 * WAIT)
        self.assertEqual(len(finished), 4)

    def objects(self, server: Server, hook: str) -> int:
        """
        How many objects the server's garbage collector tracks once it has
        collected: the hook L{test_soak} installs in the directory C{hook}
        writes the figure there on SIGUSR2.
        """
        counted = os.path.join(hook, "objects.count")
        if os.path.exists(counted):
            os.remove(counted)
        server.signal(signal.SIGUSR2)
        waitUntil(
            self,
            lambda: os.path.exists(counted),
            lambda: "the server wrote no object count",
        )
        with open(counted) as count:
            return int(count.read())

    def test_soak(self) -> None:
        """
        Churn from four threads for ECHOTWIST_SOAK_SECONDS (default 30):
        descriptors come back to where they started and nothing is kept
        per connection.

        What is kept is counted as objects: the server's Python counts the
        objects its garbage collector tracks (every instance, dict, list
        and tuple; a connection's protocol and transport are dozens) after
        a full collection, on SIGUSR2, through a sitecustomize module the
        test puts on its PYTHONPATH.  Before, this test asserted on RSS,
        which measures a leak only when freed memory leaves it: on Python
        3.13 the idle RSS after the same churn swings between 50 and 76
        MiB with nothing kept (pymalloc's arenas and glibc's heap stay as
        the busiest moment left them, and cyclic garbage waits for the
        oldest generation's collection), and a second soak fell in those
        swings (CI, 2026-12-05: +8.6 MiB, then +5.4 MiB, no leak).  RSS
        still bounds a leak outside Python's objects (a buffer of the C
        library's, say) at 64 MiB over the soak, far above those swings
        and far below a kilobyte a connection.
        """
        hook = os.path.join(self.directory, "objects")
        os.mkdir(hook)
        with open(os.path.join(hook, "sitecustomize.py"), "w") as module:
            module.write(OBJECT_COUNT_HOOK)
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--max-per-source",
            "0",
            # The hook first, then whatever path the server had.
            env={
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [hook, os.environ.get("PYTHONPATH")])
                )
            },
        )
        address = (LOOPBACK, server.port)
        self.soak(address, SOAK_WARMUP_SECONDS)
        self.settle(server)
        baseline, rssBefore = descriptors(server), server.rss()
        objectsBefore, madeBefore = self.objects(server, hook), self.made
        self.soak(address, SOAK_SECONDS)
        self.settle(server)
        self.assertEqual(descriptors(server), baseline)
        made = self.made - madeBefore
        kept = self.objects(server, hook) - objectsBefore
        # One object kept for every hundred connections is a leak already.
        self.assertLess(
            kept, made // 100, f"{kept} more objects after {made} connections"
        )
        grown = server.rss() - rssBefore
        self.assertLess(
            grown, 64 * MiB, f"RSS grew {grown} bytes over {made} connections"
        )
