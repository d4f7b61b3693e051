"""
Supervised prefork workers on the real twistd with 2 and 3 workers:
killed, stopped, and unable to fork (in a pids cgroup the test makes).
"""

from __future__ import annotations

import os
import signal
import socket
import time

import psutil
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests._clients import echoOnce, exchange, readUntilClosed
from tests._tools import selfSignedCertificate
from tests._twistd import (
    LOOPBACK,
    WAIT,
    Server,
    ServerTestCase,
    command,
    waitServing,
    workerProcesses,
)
from tests.system.test_transports import ask, freePort
from tests.test_metrics import scrape


def _scrapeUntilLive(
    test: SynchronousTestCase, metricsPort: int, live: int
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Scrape, boundedly, until C{echotwist_workers} says C{live}; the last
    scrape.
    """
    deadline = time.monotonic() + WAIT
    while True:
        found = scrape(metricsPort)
        if found[("echotwist_workers", ())] == live:
            return found
        test.assertLess(time.monotonic(), deadline, found)
        time.sleep(0.1)  # a polling interval, not a synchronisation


def _pidsCgroup(test: SynchronousTestCase) -> str:
    """
    A fresh C{pids} cgroup (v1 or v2, whichever this machine has), removed
    by C{test}'s cleanup after every process in it is moved back out.

    @raise SkipTest: naming what is missing, without root or a pids
        controller.
    """
    if os.geteuid() != 0:
        raise SkipTest("a pids cgroup needs root")
    v1 = "/sys/fs/cgroup/pids"
    if os.path.exists(os.path.join(v1, "pids.max")) or os.path.exists(
        os.path.join(v1, "cgroup.procs")
    ):
        parent = v1
    else:
        parent = "/sys/fs/cgroup"
        try:
            with open(os.path.join(parent, "cgroup.controllers")) as f:
                controllers = f.read().split()
        except OSError:
            controllers = []
        if "pids" not in controllers:
            raise SkipTest("no pids cgroup controller (v1 or v2) on this machine")
        # cgroup v2: a child gets the controller only if its parent hands
        # it down; handed down here, it is taken back afterwards.
        subtree = os.path.join(parent, "cgroup.subtree_control")
        with open(subtree) as f:
            handedDown = "pids" in f.read().split()
        if not handedDown:
            with open(subtree, "w") as f:
                f.write("+pids")

            def takeBack() -> None:
                with open(subtree, "w") as f:
                    f.write("-pids")

            test.addCleanup(takeBack)
    path = os.path.join(parent, f"echotwist-test-{os.urandom(4).hex()}")
    os.mkdir(path)

    def remove() -> None:
        with open(os.path.join(path, "cgroup.procs")) as f:
            left = f.read().split()
        for pid in left:
            try:
                with open(os.path.join(parent, "cgroup.procs"), "w") as f:
                    f.write(pid)
            except OSError:
                pass  # exited meanwhile
        os.rmdir(path)

    test.addCleanup(remove)
    return path


def _limit(cgroup: str, value: str) -> None:
    with open(os.path.join(cgroup, "pids.max"), "w") as f:
        f.write(value)


class WorkerTests(ServerTestCase):
    def startWorkers(self, count: int, *more: str) -> Server:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            str(count),
            "--max-per-source",
            "0",
            *more,
        )
        waitServing(server, count)
        return server

    def test_twoWorkersServe200Clients(self) -> None:
        server = self.startWorkers(2)
        workers = workerProcesses(server, 2)
        # Some in bulk, which each worker echoes through its own pipe.
        payloads = [os.urandom(4096 if n % 20 else 1 << 20) for n in range(200)]
        for payload, (received, _) in zip(
            payloads, exchange((LOOPBACK, server.port), payloads), strict=True
        ):
            self.assertEqual(received, payload)
        # Workers took every connection; the supervisor none.
        deadline = time.monotonic() + WAIT
        while True:
            opened = [
                line
                for line in server.output.splitlines()
                if line.endswith(" connected")
            ]
            if len(opened) >= 200:
                break
            self.assertLess(
                time.monotonic(), deadline, f"{len(opened)} connections logged"
            )
            server.waitFor(r" connected$")
        self.assertTrue(all(" worker " in line for line in opened))
        self.assertEqual(
            {w.pid for w in workers}, {w.pid for w in workerProcesses(server, 2)}
        )

    def test_killedWorkerIsReplaced(self) -> None:
        server = self.startWorkers(3)
        workers = workerProcesses(server, 3)
        victim = workers[0]
        victim.kill()
        server.waitFor(rf"\(pid {victim.pid}\) exited after .*: signal 9")
        waitServing(server, 4)
        replaced = workerProcesses(server, 3)
        self.assertNotIn(victim.pid, [w.pid for w in replaced])
        self.assertFalse(psutil.pid_exists(victim.pid), "a zombie is left")
        for _ in range(20):
            self.assertEqual(echoOnce((LOOPBACK, server.port), b"still"), b"still")

    def test_sigtermDrainsWorkersAndExits(self) -> None:
        server = self.startWorkers(2, "--shutdown-timeout", "5")
        workers = workerProcesses(server, 2)
        clients = [
            socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
            for _ in range(10)
        ]
        for client in clients:
            self.addCleanup(client.close)
            client.sendall(b"before the signal")
        for client in clients:
            self.assertEqual(client.recv(100), b"before the signal")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        for client in clients:
            self.assertEqual(readUntilClosed(client), (b"", "eof"))
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertLess(time.monotonic() - started, 15)
        for worker in workers:
            self.assertFalse(psutil.pid_exists(worker.pid), "an orphan is left")

    def test_workersOutliveNoKilledSupervisor(self) -> None:
        """
        kill -9 of the supervisor: its workers see their control pipe close,
        drain, and exit; none is left behind.
        """
        server = self.startWorkers(2)
        workers = workerProcesses(server, 2)
        server.process.kill()
        server.wait()
        for worker in workers:
            try:
                worker.wait(WAIT)
            except psutil.NoSuchProcess:
                pass
            self.assertFalse(worker.is_running(), f"worker {worker.pid} orphaned")

    def test_ttinAndTtou(self) -> None:
        server = self.startWorkers(2)
        workerProcesses(server, 2)
        server.signal(signal.SIGTTIN)
        waitServing(server, 3)
        workerProcesses(server, 3)
        server.signal(signal.SIGTTOU)
        server.waitFor(r"SIGTTOU: now 2 workers")
        server.waitFor(r"Worker 3 \(pid \d+\) exited")
        workerProcesses(server, 2)

    def test_underTwist(self) -> None:
        server = self.start(
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
            runner=[command("twist"), "--log-format", "text"],
        )
        waitServing(server, 2)
        workers = workerProcesses(server, 2)
        payloads = [os.urandom(1000) for _ in range(20)]
        for payload, (received, _) in zip(
            payloads, exchange((LOOPBACK, server.port), payloads), strict=True
        ):
            self.assertEqual(received, payload)
        # SIGHUP's rolling restart works under twist as under twistd.
        server.signal(signal.SIGHUP)
        server.waitFor(r"SIGHUP: 2 of 2 worker\(s\) replaced", WAIT * 2)
        fresh = workerProcesses(server, 2)
        self.assertFalse({w.pid for w in workers} & {w.pid for w in fresh})
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"new"), b"new")
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertFalse(any(psutil.pid_exists(w.pid) for w in workers + fresh))

    def test_everyListenerKind(self) -> None:
        key, certificate = selfSignedCertificate(self.directory)
        unixPath = os.path.join(self.directory, "echo.sock")
        udp = freePort(socket.SOCK_DGRAM)
        server = self.start(
            "--workers",
            "2",
            "--listen",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={certificate}",
            "--listen",
            f"unix:{unixPath}",
            "--listen",
            f"haproxy:tcp:0:interface={LOOPBACK}",
            "--udp",
            f"udp:{udp}:interface={LOOPBACK}",
        )
        waitServing(server, 2)
        ports = server.listening()
        import ssl

        context = ssl.create_default_context(cafile=certificate)
        context.check_hostname = False
        with context.wrap_socket(
            socket.create_connection((LOOPBACK, ports[0]), timeout=WAIT)
        ) as tls:
            tls.sendall(b"tls")
            self.assertEqual(tls.recv(10), b"tls")
        self.assertEqual(echoOnce(unixPath, b"unix"), b"unix")
        with socket.create_connection((LOOPBACK, ports[1]), timeout=WAIT) as proxied:
            proxied.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 7\r\nproxy")
            self.assertEqual(proxied.recv(10), b"proxy")
        server.waitFor(r"203\.0\.113\.7:40000 connected")
        self.assertEqual(ask(b"udp", udp), b"udp")

    def test_proxyFromHoldsInEachWorker(self) -> None:
        """
        --proxy-from reaches the workers: a peer outside it is refused its
        PROXY header, whichever worker accepts the connection.
        """
        server = self.start(
            "--workers",
            "2",
            "--listen",
            f"haproxy:tcp:0:interface={LOOPBACK}",
            "--proxy-from",
            "10.0.0.0/8",
        )
        waitServing(server, 2)
        port = server.listening()[0]
        for _ in range(6):
            with socket.create_connection((LOOPBACK, port), timeout=WAIT) as client:
                client.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 7\r\nproxy")
                try:
                    answer = client.recv(10)
                except ConnectionResetError:
                    answer = b""
                self.assertEqual(answer, b"")
        server.waitFor(r"not allowed to send PROXY headers")

    def test_metricsSumTheWorkers(self) -> None:
        server = self.startWorkers(2, "--metrics", f"tcp:0:interface={LOOPBACK}")
        metricsPort = int(server.waitFor(r"Serving metrics on \S+:(\d+)").group(1))
        for _ in range(20):
            payload = os.urandom(1000)
            self.assertEqual(echoOnce((LOOPBACK, server.port), payload), payload)
        deadline = time.monotonic() + WAIT
        while True:
            found = scrape(metricsPort)
            if found[("echotwist_connections_closed_total", ())] == 20:
                break
            self.assertLess(time.monotonic(), deadline, found)
        self.assertEqual(found[("echotwist_connections_accepted_total", ())], 20)
        self.assertEqual(
            found[("echotwist_received_bytes_total", (("transport", "stream"),))], 20000
        )
        self.assertEqual(found[("echotwist_workers", ())], 2)

    def test_settingsNotOnTheCommandLine(self) -> None:
        """
        Issue 28: a worker's settings reach it down a pipe, not on its
        command line, where ps shows them to every user; it serves with
        them all the same (here: --idle-timeout 1 closes an idle client,
        where the default would hold it 300 s).
        """
        server = self.startWorkers(2, "--idle-timeout", "1", "--udp-rate", "12345")
        for worker in workerProcesses(server, 2):
            with open(f"/proc/{worker.pid}/cmdline", "rb") as f:
                cmdline = f.read()
            self.assertEqual(cmdline.split(b"\0")[1:3], [b"-m", b"echotwist.worker"])
            for leak in (b"{", b"settings", b"12345", b"idleTimeout"):
                self.assertNotIn(leak, cmdline)
        for _ in range(4):
            with socket.create_connection((LOOPBACK, server.port), timeout=WAIT) as c:
                c.sendall(b"idle next")
                self.assertEqual(c.recv(100), b"idle next")
                self.assertEqual(readUntilClosed(c), (b"", "eof"))

    def test_tooManyWorkersRefused(self) -> None:
        from echotwist.settings import maxWorkers

        for value, said in (
            ("1000000", "--workers: 1000000 workers is more than 4 per CPU"),
            (str(maxWorkers() + 1), "is more than 4 per CPU"),
            ("-3", "--workers: '-3' is not a whole number of workers (1 or more)"),
        ):
            output = self.failedStart("--workers", value)
            self.assertIn(said, output.splitlines()[-1])
            self.assertNotIn("Worker 1 started", output)

    def test_stoppedWorkerIsReplaced(self) -> None:
        """
        kill -STOP of one of 2 workers: the gauge soon counts 1 live; within
        --worker-timeout it is killed and replaced, logged and counted;
        every scrape meanwhile answers without waiting on it; the port
        echoes through the new worker.
        """
        server = self.startWorkers(
            2, "--worker-timeout", "6", "--metrics", f"tcp:0:interface={LOOPBACK}"
        )
        metricsPort = int(server.waitFor(r"Serving metrics on \S+:(\d+)").group(1))
        victim = workerProcesses(server, 2)[0]

        def unstop() -> None:
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                pass

        # A stopped process would outlive a failed test: nothing but
        # SIGKILL (or SIGCONT) ends it.
        self.addCleanup(unstop)
        victim.suspend()
        found = _scrapeUntilLive(self, metricsPort, 1)
        self.assertEqual(found[("echotwist_workers_hung_total", ())], 0)
        match = server.waitFor(
            rf"Worker (\d) \(pid {victim.pid}\) silent for [\d.]+s"
            r" \(--worker-timeout\): killing it"
        )
        server.waitFor(rf"\(pid {victim.pid}\) exited after .*: signal 9")
        waitServing(server, 3)
        replaced = workerProcesses(server, 2)
        self.assertNotIn(victim.pid, [w.pid for w in replaced])
        for _ in range(20):
            self.assertEqual(echoOnce((LOOPBACK, server.port), b"again"), b"again")
        found = _scrapeUntilLive(self, metricsPort, 2)
        self.assertEqual(found[("echotwist_workers_hung_total", ())], 1)
        self.assertEqual(
            server.output.count(f"Worker {match.group(1)} started (pid"), 2
        )


class ForkFailureTests(ServerTestCase):
    """
    The real twistd in a C{pids} cgroup that lets it fork fewer workers than
    asked, at start-up and when one is replaced.
    """

    def failures(self, metricsPort: int) -> float:
        return scrape(metricsPort)[("echotwist_worker_spawn_failures_total", ())]

    def waitFailures(self, metricsPort: int, count: float) -> None:
        deadline = time.monotonic() + WAIT
        while self.failures(metricsPort) < count:
            self.assertLess(time.monotonic(), deadline, "fork never retried")
            time.sleep(0.2)

    def test_workersComeBackWhenTheLimitIsLifted(self) -> None:
        cgroup = _pidsCgroup(self)
        # The supervisor and one worker; the second worker's fork fails.
        _limit(cgroup, "2")

        def join() -> None:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
            "--metrics",
            f"tcp:0:interface={LOOPBACK}",
            preexec=join,
        )
        server.waitFor(r"Cannot start worker \d: .*Resource temporarily unavailable")
        metricsPort = int(server.waitFor(r"Serving metrics on \S+:(\d+)").group(1))
        # It serves with the worker it has, and keeps trying for the other.
        waitServing(server, 1)
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"one"), b"one")
        self.waitFailures(metricsPort, 3)
        self.assertEqual(server.output.count("Cannot start worker"), 1)
        self.assertNotIn("Traceback", server.output)
        _limit(cgroup, "max")
        server.waitFor(r"started after \d+ failed attempt\(s\)")
        waitServing(server, 2)
        survivor, victim = workerProcesses(server, 2)
        scrape(metricsPort)
        failedAtStart = self.failures(metricsPort)

        # At run time: a worker dies while no fork is possible.
        _limit(cgroup, "2")
        victim.kill()
        server.waitFor(rf"\(pid {victim.pid}\) exited after")
        self.waitFailures(metricsPort, failedAtStart + 2)
        self.assertEqual(server.output.count("Cannot start worker"), 2)
        for _ in range(10):
            self.assertEqual(echoOnce((LOOPBACK, server.port), b"still"), b"still")
        _limit(cgroup, "max")
        waitServing(server, 3)
        self.assertNotIn(victim.pid, [w.pid for w in workerProcesses(server, 2)])
        self.assertEqual(server.output.count("failed attempt(s)"), 2)
        self.assertNotIn("Traceback", server.output)


def _burst(port: int, count: int) -> list[socket.socket]:
    """
    C{count} connections to C{port}, all opened before any is used.
    """
    clients = []
    for _ in range(count):
        client = socket.create_connection((LOOPBACK, port), timeout=WAIT)
        clients.append(client)
    return clients


def _answered(client: socket.socket) -> bool:
    """
    Whether C{client}'s connection echoes a byte (not closed unanswered, as
    a limit closes it).
    """
    try:
        client.sendall(b"x")
        return readExactly(client, 1) == b"x"
    except (ConnectionResetError, BrokenPipeError):
        return False


def readExactly(client: socket.socket, size: int) -> bytes:
    """
    Up to C{size} bytes from C{client}: fewer only if it closed first.
    """
    client.settimeout(WAIT)
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


class FullWorkerTests(ServerTestCase):
    """
    C{--max-connections} holds for each worker, so two workers of 20 hold
    40: a burst of connects that two workers have room for is served,
    however the kernel hands it out; a worker that is full leaves new
    connections to a sibling with room, and refuses (or evicts for) only
    what no sibling took.
    """

    def startWorkers(self, *more: str) -> Server:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
            "--max-per-source",
            "0",
            *more,
        )
        waitServing(server, 2)
        return server

    def test_aBurstTwoWorkersHaveRoomForIsServed(self) -> None:
        """
        Three bursts of 36 connects at two workers of 20: every connection
        echoes, and none is refused.  (Each worker took a burst in a few
        accepts of up to 100 and refused what was over its own 20: 10 to
        18 of 36 here.)
        """
        server = self.startWorkers("--max-connections", "20", "--evict-idle-after", "0")
        for round in range(3):
            clients = _burst(server.port, 36)
            try:
                answered = [_answered(client) for client in clients]
            finally:
                for client in clients:
                    client.close()
            self.assertEqual(answered.count(False), 0, server.output)
            server.waitForCount(r" disconnected after ", 36 * (round + 1))
        self.assertNotIn("too many connections", server.output)

    def test_whatNoWorkerHasRoomForIsRefused(self) -> None:
        """
        Two workers of 5, full: one more connection is refused, unanswered,
        by one of them, and logged; the 10 are untouched.
        """
        server = self.startWorkers("--max-connections", "5", "--evict-idle-after", "0")
        clients = _burst(server.port, 10)
        self.addCleanup(lambda: [client.close() for client in clients])
        self.assertTrue(all(_answered(client) for client in clients))
        with socket.create_connection((LOOPBACK, server.port), timeout=WAIT) as late:
            self.assertEqual(readUntilClosed(late)[0], b"")
        server.waitFor(r"Refused connection from \S+: too many connections$")
        self.assertTrue(all(_answered(client) for client in clients))

    def test_whatNoWorkerHasRoomForEvicts(self) -> None:
        """
        Two workers of 5, full of idle connections: a newcomer is admitted
        by evicting one of them, as one process would.
        """
        server = self.startWorkers("--max-connections", "5", "--evict-idle-after", "1")
        clients = _burst(server.port, 10)
        self.addCleanup(lambda: [client.close() for client in clients])
        self.assertTrue(all(_answered(client) for client in clients))
        # Eviction's second step takes a connection idle a second or more,
        # as of the last idle sweep: a newcomer before that is refused.
        deadline = time.monotonic() + WAIT
        while True:
            with socket.create_connection(
                (LOOPBACK, server.port), timeout=WAIT
            ) as late:
                if _answered(late):
                    break
            self.assertLess(time.monotonic(), deadline, server.output)
            time.sleep(0.25)  # the idle time to pass, not a synchronisation
        server.waitFor(r"to admit a new client: the server is full")
