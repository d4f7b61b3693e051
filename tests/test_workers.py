"""
Supervised prefork workers: the supervision policy on a Clock, and the
real twistd with 2 and 3 workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import time

import psutil
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.logs import LogFiles
from echotwist.settings import Settings
from echotwist.supervisor import STABLE_AFTER, SupervisorService
from tests._clients import echoOnce, exchange, readUntilClosed
from tests._tools import selfSignedCertificate
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase, command
from tests.test_metrics import scrape
from tests.test_transports import ask, freePort


class _Process:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)

    def writeToChild(self, fd: int, data: bytes) -> None:
        pass


class SupervisionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.spawned: list[tuple[object, list[str], dict[int, object]]] = []
        self.nextPid = 1000
        self.supervisor = SupervisorService(
            [],
            workers=2,
            reactor=self.clock,
            spawn=self.spawn,
            backoff=lambda attempt: min(60.0, 2.0**attempt),
            shutdownTimeout=3,
            logFiles=LogFiles(twistd=False),
        )

    def spawn(self, protocol, executable, args, env, childFDs):  # type: ignore[no-untyped-def]
        self.nextPid += 1
        self.spawned.append((protocol, args, childFDs))
        protocol.makeConnection(_Process(self.nextPid))

    def worker(self, number: int):  # type: ignore[no-untyped-def]
        return self.supervisor.workers[number]

    def test_startsTheWorkers(self) -> None:
        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        args = self.spawned[0][1]
        self.assertEqual(args[1:3], ["-m", "echotwist.worker"])

    def test_workersGetTheSettings(self) -> None:
        """
        Each worker is handed the supervisor's settings whole: every knob,
        none left at its default on the way.
        """
        supervisor = SupervisorService(
            [],
            workers=1,
            reactor=self.clock,
            spawn=self.spawn,
            settings=Settings(
                maxConnections=7,
                maxPerSource=3,
                ipv6Prefix=56,
                evictIdleAfter=4,
                idleTimeout=9,
                socketBuffer=32768,
                shutdownTimeout=30,
                drainQuiet=0,
                udpRate=5,
                logConnections=False,
                proxyFrom=("10.0.0.0/8", "2001:db8::7"),
                keepalive=(30, 5, 3),
                tlsHandshakesPerSource=2,
                tlsHandshakeRate=7,
            ),
        )
        supervisor.startService()
        self.addCleanup(supervisor.stopService)
        config = json.loads(self.spawned[0][1][-1])
        handed = Settings.fromJSON(config["settings"])
        self.assertEqual(handed, supervisor.settings)
        defaults = Settings()
        for f in dataclasses.fields(Settings):
            if f.name != "workers":
                self.assertNotEqual(
                    getattr(handed, f.name), getattr(defaults, f.name), f.name
                )

    def test_healthyWorkerIsReplacedAtOnce(self) -> None:
        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        self.clock.advance(STABLE_AFTER + 1)
        with capturedLogs() as events:
            self.worker(1).processEnded(Failure(ProcessTerminated(signal=9)))
        self.assertEqual([e["event"] for e in events], ["worker.exited"])
        self.assertEqual(events[0]["signal"], 9)
        self.clock.advance(0)
        self.assertEqual(len(self.spawned), 3)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])

    def test_crashLoopBacksOff(self) -> None:
        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        delays = []
        for _ in range(8):
            spawnedBefore = len(self.spawned)
            self.worker(1).processEnded(Failure(ProcessTerminated(exitCode=1)))
            waited = 0.0
            while len(self.spawned) == spawnedBefore:
                self.clock.advance(0.5)
                waited += 0.5
                self.assertLess(waited, 120, "never restarted")
            delays.append(waited)
        self.assertEqual(delays, [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0])
        # A worker that then stays up resets the count.
        self.clock.advance(STABLE_AFTER + 1)
        self.worker(1).processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.clock.advance(0)
        self.assertIn(1, self.supervisor.workers)

    def test_ttinAndTtou(self) -> None:
        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        self.supervisor.addWorker()
        self.assertEqual(sorted(self.supervisor.workers), [1, 2, 3])
        third = self.worker(3)
        self.supervisor.removeWorker()
        self.assertEqual(third.transport.signals, [signal.SIGTERM])
        third.processEnded(Failure(ProcessDone(0)))
        self.clock.advance(100)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        self.supervisor.removeWorker()
        self.supervisor.removeWorker()  # never below one
        self.assertEqual(self.supervisor.wanted, 1)

    def test_stopTermsThenKills(self) -> None:
        self.supervisor.startService()
        first, second = self.worker(1), self.worker(2)
        stopped = self.supervisor.stopService()
        self.assertEqual(first.transport.signals, [signal.SIGTERM])
        first.processEnded(Failure(ProcessTerminated(signal=15)))
        self.assertNoResult(stopped)
        self.clock.advance(3 + 5)
        self.assertEqual(second.transport.signals, [signal.SIGTERM, signal.SIGKILL])
        second.processEnded(Failure(ProcessTerminated(signal=9)))
        self.successResultOf(stopped)
        self.clock.advance(100)
        self.assertEqual(len(self.spawned), 2, "nothing restarted while stopping")


def workerProcesses(server: Server, count: int) -> list[psutil.Process]:
    """
    The supervisor's worker processes, once there are C{count} of them
    serving.
    """
    deadline = time.monotonic() + WAIT
    while True:
        children = [
            child
            for child in psutil.Process(server.process.pid).children()
            if "echotwist.worker" in " ".join(child.cmdline())
        ]
        serving = server.output.count("event=worker.serving") + server.output.count(
            "serving"
        )
        if len(children) == count and serving:
            return children
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(children)} workers, not {count}:\n{server.output}"
            )
        time.sleep(0.05)


def waitServing(server: Server, total: int) -> None:
    deadline = time.monotonic() + WAIT
    while server.output.count(" serving") < total:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"fewer than {total} workers serving:\n{server.output}"
            )
        server.waitFor(r" serving")
        time.sleep(0.02)


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
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertFalse(any(psutil.pid_exists(w.pid) for w in workers))

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


def _logLine(worker: int, format: str, **fields: object) -> bytes:
    """
    One line of a worker's log pipe, as echotwist.worker writes it.
    """
    from twisted.logger import LogLevel, eventAsJSON, formatEvent

    event = {
        "log_time": 1e9,
        "log_level": LogLevel.info,
        "log_namespace": "echotwist.stream",
        "log_format": format,
        "log_system": f"echotwist.stream worker {worker}",
        "worker": worker,
        **fields,
    }
    event["log_text"] = formatEvent(event)
    return b"\x1e" + eventAsJSON(event).encode() + b"\n"


class RollingRestartTests(SynchronousTestCase):
    """
    SIGHUP's rolling restart, on a Clock with pretend processes.
    """

    setUp = SupervisionTests.setUp
    spawn = SupervisionTests.spawn
    worker = SupervisionTests.worker

    def serve(self, worker) -> None:  # type: ignore[no-untyped-def]
        worker.childDataReceived(
            1,
            _logLine(worker.number, "Worker {worker} serving", event="worker.serving"),
        )

    def test_oneAtATimeNewServingBeforeOldDrains(self) -> None:
        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        first, second = self.worker(1), self.worker(2)
        self.supervisor.reload()
        newFirst = self.worker(1)
        self.assertIsNot(newFirst, first)
        self.assertEqual(len(self.spawned), 3, "one replacement at a time")
        self.assertEqual(first.transport.signals, [], "old serves until new does")
        self.serve(newFirst)
        self.assertEqual(first.transport.signals, [signal.SIGTERM])
        self.assertEqual(len(self.spawned), 3, "the next waits for the old to exit")
        with capturedLogs() as events:
            first.processEnded(Failure(ProcessTerminated(signal=15)))
        self.assertNotIn("worker.backoff", [e.get("event") for e in events])
        self.assertEqual(len(self.spawned), 4)
        newSecond = self.worker(2)
        self.assertEqual(second.transport.signals, [])
        self.serve(newSecond)
        self.assertEqual(second.transport.signals, [signal.SIGTERM])
        with capturedLogs() as events:
            second.processEnded(Failure(ProcessTerminated(signal=15)))
        self.assertIn("workers.reloaded", [e.get("event") for e in events])
        self.clock.advance(100)
        self.assertEqual(len(self.spawned), 4, "nothing else started")
        self.assertEqual([self.worker(1), self.worker(2)], [newFirst, newSecond])

    def test_sighupDuringARollQueuesAnotherRound(self) -> None:
        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        self.supervisor.reload()
        self.supervisor.reload()
        for _ in range(4):
            old = [w for w in self.supervisor._retiring][0]
            self.serve(self.worker(old.number))
            old.processEnded(Failure(ProcessTerminated(signal=15)))
        self.assertEqual(len(self.spawned), 6, "two rounds of two")
        self.assertIsNone(self.supervisor._rolling)

    def test_replacementThatDiesKeepsTheOld(self) -> None:
        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        first = self.worker(1)
        self.supervisor.reload()
        broken = self.worker(1)
        with capturedLogs() as events:
            broken.processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertIn("workers.reload_failed", [e.get("event") for e in events])
        self.assertIs(self.worker(1), first)
        self.assertEqual(first.transport.signals, [])
        self.clock.advance(100)
        self.assertIs(self.worker(1), first, "no restart in its place")

    def test_ttouDuringARoll(self) -> None:
        """
        SIGTTOU takes away the worker being replaced: neither the old one
        nor a replacement is left running in its place.
        """
        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        first, second = self.worker(1), self.worker(2)
        self.serve(first)
        self.serve(second)
        self.supervisor.reload()
        self.serve(self.worker(1))
        first.processEnded(Failure(ProcessTerminated(signal=15)))
        newSecond = self.worker(2)
        self.supervisor.removeWorker()
        self.assertEqual(newSecond.transport.signals, [signal.SIGTERM])
        newSecond.processEnded(Failure(ProcessTerminated(signal=15)))
        self.assertEqual(second.transport.signals, [signal.SIGTERM])
        second.processEnded(Failure(ProcessTerminated(signal=15)))
        self.clock.advance(100)
        self.assertEqual(sorted(self.supervisor.workers), [1])
        self.assertEqual(len(self.spawned), 4)
        self.assertIsNone(self.supervisor._rolling)

    def test_replacementThatNeverServesIsKilled(self) -> None:
        from echotwist.supervisor import START_TIMEOUT

        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        first = self.worker(1)
        self.supervisor.reload()
        stuck = self.worker(1)
        self.clock.advance(START_TIMEOUT)
        self.assertEqual(stuck.transport.signals, [signal.SIGKILL])
        stuck.processEnded(Failure(ProcessTerminated(signal=9)))
        self.assertIs(self.worker(1), first)

    def test_workerLogLinesBecomeEvents(self) -> None:
        self.supervisor.startService()
        self.addCleanup(self.supervisor.stopService)
        line = _logLine(
            2,
            "{peer} disconnected after {duration:.3f}s",
            peer="[::1]:7",
            duration=0.1234,
        )
        with capturedLogs() as events:
            # Split anywhere: the pipe gives no line boundaries.
            self.worker(2).childDataReceived(1, line[:10])
            self.worker(2).childDataReceived(1, line[10:] + b"not json\x1b[2J\n")
            self.worker(2).childDataReceived(2, b"Traceback (most recent")
            self.worker(2).processEnded(Failure(ProcessTerminated(exitCode=1)))
        from twisted.logger import formatEvent

        texts = [formatEvent(e) for e in events]
        self.assertEqual(texts[0], "[::1]:7 disconnected after 0.123s")
        self.assertEqual(events[0]["worker"], 2)
        self.assertEqual(events[0]["log_system"], "echotwist.stream worker 2")
        self.assertIn("wrote: not json\\x1b[2J", texts[1])
        self.assertIn("wrote: Traceback (most recent", texts[2])
        self.assertEqual(events[3]["event"], "worker.exited")
