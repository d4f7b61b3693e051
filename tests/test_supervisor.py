"""
Supervised prefork workers: the supervision policy on a Clock with
pretend processes (spawn, replace, back-off, rolling restart, the bound on
workers, heartbeats).  (The real twistd with 2 and 3 workers, killed,
stopped and unable to fork: tests.system.test_workers.)
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import signal
from functools import partial
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echotwist.listeners import Listener
from echotwist.logs import LogFiles
from echotwist.service import EchoService
from echotwist.settings import Settings
from echotwist.supervisor import STABLE_AFTER, SupervisorService


class _Process:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []
        #: What the supervisor wrote to the child's control pipe (fd 0).
        self.written = b""

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)

    def writeToChild(self, fd: int, data: bytes) -> None:
        if fd == 0:
            self.written += data


@implementer(IListeningPort)
class _HandedPort:
    """
    A listening port whose socket a supervisor hands to its workers.
    """

    def __init__(self, fileno: int) -> None:
        self.descriptor = fileno
        self.reading = True

    def startListening(self) -> None:
        pass

    def stopReading(self) -> None:
        self.reading = False

    def fileno(self) -> int:
        return self.descriptor

    def stopListening(self) -> Deferred[None]:
        return succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 5000)


@implementer(IStreamServerEndpoint)
class _PortEndpoint:
    def __init__(self, port: _HandedPort) -> None:
        self.port = port

    def listen(self, factory: object) -> Deferred[IListeningPort]:
        return succeed(self.port)


def supervised(
    *args: Any,
    spawn: Any = None,
    backoff: Any = None,
    **kwargs: Any,
) -> tuple[EchoService, SupervisorService]:
    """
    An L{EchoService} whose listeners workers serve, and its supervisor.
    """
    service = EchoService(
        *args,
        supervise=partial(SupervisorService, spawn=spawn, backoff=backoff),
        **kwargs,
    )
    assert service.supervisor is not None
    return service, service.supervisor


class SupervisionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.spawned: list[tuple[object, list[str], dict[int, object]]] = []
        self.nextPid = 1000
        self.service, self.supervisor = supervised(
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
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        args = self.spawned[0][1]
        self.assertEqual(args[1:3], ["-m", "echotwist.worker"])

    def test_readyOnceAWorkerServes(self) -> None:
        """
        A supervisor is not ready until a worker says it serves, and is
        not ready again from the start of its stop until its workers have
        exited.
        """
        self.service.startService()
        self.assertEqual(self.service.notReady(), ["no worker serving"])
        self.worker(2).serving.callback(None)
        self.assertEqual(self.service.notReady(), [])
        workers = [self.worker(1), self.worker(2)]
        stopped = self.service.stopService()
        self.assertEqual(self.service.notReady(), ["draining"])
        self.assertEqual([w.transport.signals for w in workers], [[signal.SIGTERM]] * 2)
        for worker in workers:
            worker.processEnded(Failure(ProcessTerminated(signal=signal.SIGTERM)))
        self.successResultOf(stopped)

    def test_workersServeOnlyTheEcho(self) -> None:
        """
        The workers are handed the echo's listeners, and those stop
        accepting in the supervisor; the identity line's listener and the
        health site stay the supervisor's own, accepting there.
        """
        echo, identify, health = _HandedPort(40), _HandedPort(41), _HandedPort(42)
        service, supervisor = supervised(
            [Listener("tcp:5000", _PortEndpoint(echo))],
            identify=Listener("tcp:5001", _PortEndpoint(identify)),
            health=Listener("tcp:5002", _PortEndpoint(health)),
            workers=1,
            reactor=self.clock,
            spawn=self.spawn,
            logFiles=LogFiles(twistd=False),
        )
        service.startService()
        self.addCleanup(service.stopService)
        protocol, _, childFDs = self.spawned[0]
        config = json.loads(protocol.transport.written.partition(b"\n")[0])
        self.assertEqual(
            config["listeners"], [{"description": "tcp:5000", "fileno": 10}]
        )
        self.assertEqual(config["udp"], [])
        self.assertEqual(childFDs[10], 40)
        self.assertNotIn(41, childFDs.values())
        self.assertNotIn(42, childFDs.values())
        self.assertEqual(
            [echo.reading, identify.reading, health.reading], [False, True, True]
        )
        self.assertEqual(
            [child.name for child in service],
            ["listeners", "datagrams", "identify", "workers", "pages"],
        )

    def test_pagesStopAfterTheWorkers(self) -> None:
        """
        On stop, the workers are told to drain while the health site still
        answers (C{/readyz}: 503); it stops once every worker has exited.
        """
        health = _HandedPort(42)
        stopped: list[str] = []
        health.stopListening = lambda: stopped.append("health") or succeed(None)  # type: ignore[method-assign]
        service, supervisor = supervised(
            [],
            health=Listener("tcp:5002", _PortEndpoint(health)),
            workers=1,
            reactor=self.clock,
            spawn=self.spawn,
            logFiles=LogFiles(twistd=False),
        )
        service.startService()
        worker = supervisor.workers[1]
        done = service.stopService()
        self.assertEqual(worker.transport.signals, [signal.SIGTERM])
        self.assertEqual(stopped, [])
        self.assertNoResult(done)
        worker.processEnded(Failure(ProcessTerminated(signal=signal.SIGTERM)))
        self.successResultOf(done)
        self.assertEqual(stopped, ["health"])

    def test_workersGetTheSettings(self) -> None:
        """
        Each worker is handed the supervisor's settings whole: every knob,
        none left at its default on the way.
        """
        service, supervisor = supervised(
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
                workerTimeout=12,
                logConnections=False,
                proxyFrom=("10.0.0.0/8", "2001:db8::7"),
                instanceName="echo-1",
                keepalive=(30, 5, 3),
                tlsHandshakesPerSource=2,
                tlsHandshakeRate=7,
            ),
        )
        service.startService()
        self.addCleanup(service.stopService)
        protocol, args, _ = self.spawned[0]
        # Down the control pipe, as its first line; nothing on the command
        # line, which ps shows to anyone.
        self.assertEqual(args[1:], ["-m", "echotwist.worker"])
        line, newline, _ = protocol.transport.written.partition(b"\n")
        self.assertEqual(newline, b"\n")
        config = json.loads(line)
        self.assertEqual(config["worker"], 1)
        handed = Settings.fromJSON(config["settings"])
        self.assertEqual(handed, service.settings)
        defaults = Settings()
        for f in dataclasses.fields(Settings):
            if f.name != "workers":
                self.assertNotEqual(
                    getattr(handed, f.name), getattr(defaults, f.name), f.name
                )

    def test_healthyWorkerIsReplacedAtOnce(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.clock.advance(STABLE_AFTER + 1)
        with capturedLogs() as events:
            self.worker(1).processEnded(Failure(ProcessTerminated(signal=9)))
        self.assertEqual([e["event"] for e in events], ["worker.exited"])
        self.assertEqual(events[0]["signal"], 9)
        self.clock.advance(0)
        self.assertEqual(len(self.spawned), 3)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])

    def test_crashLoopBacksOff(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)
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
        self.service.startService()
        self.addCleanup(self.service.stopService)
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

    def test_ttinStopsAtTheBound(self) -> None:
        from echotwist.settings import maxWorkers

        self.service.startService()
        self.addCleanup(self.service.stopService)
        with capturedLogs() as events:
            for _ in range(maxWorkers() + 5):
                self.supervisor.addWorker()
        self.assertEqual(len(self.supervisor.workers), maxWorkers())
        self.assertEqual(self.supervisor.wanted, maxWorkers())
        self.assertIn("worker.add_refused", [e.get("event") for e in events])

    def test_stopTermsThenKills(self) -> None:
        self.service.startService()
        first, second = self.worker(1), self.worker(2)
        stopped = self.service.stopService()
        self.assertEqual(first.transport.signals, [signal.SIGTERM])
        first.processEnded(Failure(ProcessTerminated(signal=15)))
        self.assertNoResult(stopped)
        self.clock.advance(3 + 5)
        self.assertEqual(second.transport.signals, [signal.SIGTERM, signal.SIGKILL])
        second.processEnded(Failure(ProcessTerminated(signal=9)))
        self.successResultOf(stopped)
        self.clock.advance(100)
        self.assertEqual(len(self.spawned), 2, "nothing restarted while stopping")

        # That a scrape does not wait for the stopped worker is asserted
        # without a clock on the wall (a loaded CI would make it flaky):
        # HeartbeatTests.test_scrapeAsksOnlyTheLive.


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
        self.service.startService()
        self.addCleanup(self.service.stopService)
        first, second = self.worker(1), self.worker(2)
        self.service.reload()
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
        (reloaded,) = [e for e in events if e.get("event") == "workers.reloaded"]
        self.assertEqual((reloaded["replaced"], reloaded["count"]), (2, 2))
        self.clock.advance(100)
        self.assertEqual(len(self.spawned), 4, "nothing else started")
        self.assertEqual([self.worker(1), self.worker(2)], [newFirst, newSecond])

    def test_sighupDuringARollQueuesAnotherRound(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.service.reload()
        self.service.reload()
        for _ in range(4):
            old = [w for w in self.supervisor._retiring][0]
            self.serve(self.worker(old.number))
            old.processEnded(Failure(ProcessTerminated(signal=15)))
        self.assertEqual(len(self.spawned), 6, "two rounds of two")
        self.assertIsNone(self.supervisor._rolling)

    def test_replacementThatDiesKeepsTheOld(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)
        first = self.worker(1)
        self.service.reload()
        broken = self.worker(1)
        with capturedLogs() as events:
            broken.processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertIn("workers.reload_failed", [e.get("event") for e in events])
        self.assertIs(self.worker(1), first)
        self.assertEqual(first.transport.signals, [])
        self.clock.advance(100)
        self.assertIs(self.worker(1), first, "no restart in its place")

    def test_theEndOfARoundCountsWhatWasReplaced(self) -> None:
        """
        A round whose first replacement dies says it replaced one worker of
        two, not two: the operator deploying new code learns it did not
        start everywhere.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        first, second = self.worker(1), self.worker(2)
        self.service.reload()
        self.worker(1).processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertIs(self.worker(1), first)
        self.serve(self.worker(2))
        with capturedLogs() as events:
            second.processEnded(Failure(ProcessTerminated(signal=15)))
        (reloaded,) = [e for e in events if e.get("event") == "workers.reloaded"]
        self.assertEqual((reloaded["replaced"], reloaded["count"]), (1, 2))
        self.assertEqual(formatEvent(reloaded), "SIGHUP: 1 of 2 worker(s) replaced")

    def test_failedRoundSaysNoneReplaced(self) -> None:
        """
        When no replacement serves (a broken upgrade), the round ends
        saying none was replaced, where it said "2 worker(s) replaced"; and
        a replacement's exit is no worker dying: no back-off is logged
        ("keeps dying: restarting it"), and the old worker stays alone.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        first, second = self.worker(1), self.worker(2)
        self.service.reload()
        with capturedLogs() as events:
            self.worker(1).processEnded(Failure(ProcessTerminated(exitCode=1)))
            self.worker(2).processEnded(Failure(ProcessTerminated(exitCode=1)))
        names = [e.get("event") for e in events]
        self.assertNotIn("worker.backoff", names)
        self.assertEqual(names.count("workers.reload_failed"), 2)
        (reloaded,) = [e for e in events if e.get("event") == "workers.reloaded"]
        self.assertEqual((reloaded["replaced"], reloaded["count"]), (0, 2))
        self.clock.advance(100)
        self.assertEqual([self.worker(1), self.worker(2)], [first, second])
        self.assertEqual(len(self.spawned), 4, "no restart in their place")

    def test_replacementDiesAfterTheOldOne(self) -> None:
        """
        The old worker dies (killed) while its replacement starts, then the
        replacement exits before serving: the place is empty, so a worker
        is started in it after the back-off, as for any quick death.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        first = self.worker(1)
        self.service.reload()
        broken = self.worker(1)
        first.processEnded(Failure(ProcessTerminated(signal=9)))
        with capturedLogs() as events:
            broken.processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertIn("worker.backoff", [e.get("event") for e in events])
        self.clock.advance(100)
        self.assertNotIn(self.worker(1), (first, broken))
        # Two at start, the broken replacement, the restart in its place,
        # and the round's next replacement, for worker 2.
        self.assertEqual(len(self.spawned), 5)

    def test_ttouDuringARoll(self) -> None:
        """
        SIGTTOU takes away the worker being replaced: neither the old one
        nor a replacement is left running in its place.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        first, second = self.worker(1), self.worker(2)
        self.serve(first)
        self.serve(second)
        self.service.reload()
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

        self.service.startService()
        self.addCleanup(self.service.stopService)
        first = self.worker(1)
        self.service.reload()
        stuck = self.worker(1)
        self.clock.advance(START_TIMEOUT)
        self.assertEqual(stuck.transport.signals, [signal.SIGKILL])
        stuck.processEnded(Failure(ProcessTerminated(signal=9)))
        self.assertIs(self.worker(1), first)

    def test_workerLogLinesBecomeEvents(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)
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


def _heartbeat(worker, **counts: object) -> None:  # type: ignore[no-untyped-def]
    """
    One heartbeat on a pretend worker's control pipe, as
    echotwist.worker sends it.
    """
    worker.childDataReceived(3, json.dumps({"heartbeat": counts}).encode() + b"\n")


class SpawnFailureTests(SynchronousTestCase):
    """
    A worker that cannot be started (fork fails) is tried again, after the
    back-off, until it starts: at start-up, on replacement, on SIGTTIN and
    on SIGHUP.
    """

    setUp = SupervisionTests.setUp
    worker = SupervisionTests.worker

    def spawn(self, protocol, executable, args, env, childFDs):  # type: ignore[no-untyped-def]
        self.attempts += 1
        if self.failing:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        SupervisionTests.spawn(self, protocol, executable, args, env, childFDs)

    attempts = 0
    failing = False

    def failuresCounted(self) -> float:
        snapshot, _, _ = self.supervisor.metricsSource()
        return float(snapshot()["workerSpawnFailures"])

    def test_startUpServesWithTheWorkersItHas(self) -> None:
        """
        At start-up a failed fork is no traceback: the supervisor serves
        with the workers that started, logs the failure once however often
        it retries, counts every attempt, and starts the missing worker as
        soon as it can.
        """
        calls = 0

        def spawnOnce(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            # The first worker starts; then the process limit is reached.
            self.failing = calls > 1
            return self.spawn(*args, **kwargs)

        self.supervisor._spawn = spawnOnce
        with capturedLogs() as events:
            self.service.startService()
            self.addCleanup(self.service.stopService)
            self.assertEqual(sorted(self.supervisor.workers), [1])
            for _ in range(20):
                self.clock.advance(60)
        self.assertGreater(self.attempts, 20)
        self.assertEqual(sorted(self.supervisor.workers), [1])
        failed = [e for e in events if e.get("event") == "worker.spawn_failed"]
        self.assertEqual(len(failed), 1, "logged once per streak")
        self.assertEqual(failed[0]["worker"], 2)
        self.assertIn("Resource temporarily unavailable", failed[0]["error"])
        self.assertEqual(self.failuresCounted(), self.attempts - 1)
        failures = self.attempts - 1
        self.failing = False
        self.supervisor._spawn = self.spawn
        with capturedLogs() as events:
            self.clock.advance(60)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        self.assertEqual(
            [
                e["failures"]
                for e in events
                if e.get("event") == "worker.spawn_recovered"
            ],
            [failures],
        )

    def test_noWorkerAtAllAtFirst(self) -> None:
        self.failing = True
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(self.supervisor.workers, {})
        self.clock.advance(60)
        self.failing = False
        for _ in range(3):
            self.clock.advance(60)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])

    def test_replacementIsRetriedWithTheBackOff(self) -> None:
        """
        A worker that exits while fork fails is not lost: it is tried again
        after the back-off (2, 4, ... seconds here) until it starts; then
        a new streak of failures is logged again, once.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.clock.advance(STABLE_AFTER + 1)
        self.failing = True
        with capturedLogs() as events:
            self.worker(1).processEnded(Failure(ProcessTerminated(signal=9)))
            self.clock.advance(0)
            self.assertEqual(self.attempts, 3)
            times = []
            for _ in range(200):
                before = self.attempts
                self.clock.advance(1)
                if self.attempts > before:
                    times.append(self.clock.seconds())
        gaps = [b - a for a, b in itertools.pairwise(times)]
        self.assertEqual(gaps[:4], [4.0, 8.0, 16.0, 32.0])
        self.assertEqual(max(gaps), 60.0, "capped")
        self.assertNotIn(1, self.supervisor.workers)
        self.assertEqual(
            [e.get("event") for e in events].count("worker.spawn_failed"), 1
        )
        self.failing = False
        self.clock.advance(60)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        # A new streak is a new line.
        self.clock.advance(STABLE_AFTER + 1)
        self.failing = True
        with capturedLogs() as events:
            self.worker(2).processEnded(Failure(ProcessTerminated(signal=9)))
            self.clock.advance(0)
        self.assertEqual(
            [e.get("event") for e in events].count("worker.spawn_failed"), 1
        )

    def test_ttinRetriesToo(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.failing = True
        self.supervisor.addWorker()
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        self.failing = False
        self.clock.advance(60)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2, 3])

    def test_sighupKeepsTheOldWorkers(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)
        first, second = self.worker(1), self.worker(2)
        self.failing = True
        with capturedLogs() as events:
            self.service.reload()
        self.assertEqual(
            [e.get("event") for e in events].count("workers.reload_failed"), 2
        )
        self.assertEqual([self.worker(1), self.worker(2)], [first, second])
        self.assertEqual(first.transport.signals + second.transport.signals, [])
        self.assertIsNone(self.supervisor._rolling)
        self.assertEqual(self.supervisor._retiring, [])

    def test_stoppingCancelsTheRetries(self) -> None:
        self.failing = True
        self.service.startService()
        self.successResultOf(self.service.stopService())
        restarts = [
            call
            for call in self.clock.getDelayedCalls()
            if call.func == self.supervisor._restart
        ]
        self.assertEqual(restarts, [])
        self.clock.advance(3600)
        self.assertEqual(self.supervisor.workers, {})


class BoundTests(SynchronousTestCase):
    """
    --workers and SIGTTIN stop at 4 workers per usable CPU.
    """

    def test_workersAboveTheBoundRefused(self) -> None:
        from twisted.python.usage import UsageError

        from echotwist.settings import maxWorkers
        from echotwist.tap import Options

        def refused(value: str) -> str:
            message = str(
                self.assertRaises(
                    UsageError, Options().parseOptions, ["--workers", value]
                )
            )
            self.assertNotIn("\n", message)
            self.assertTrue(message.startswith("--workers: "), message)
            return message

        self.assertIn("more than 4 per CPU", refused("1000000"))
        self.assertIn("more than 4 per CPU", refused(str(maxWorkers() + 1)))
        options = Options()
        options.parseOptions(["--workers", str(maxWorkers())])
        self.assertEqual(options["workers"], maxWorkers())
        # Issue 28: never "0 or more" where 0 is refused.
        for bad in ("-3", "0", "two", "\u0663"):
            message = refused(bad)
            self.assertIn("(1 or more)", message)
            self.assertNotIn("0 or more", message)

    def test_workerTimeoutRefused(self) -> None:
        from twisted.python.usage import UsageError

        from echotwist.tap import Options

        for bad, why in (("0.5", "too short"), ("-1", "0 or more"), ("x", "number")):
            message = str(
                self.assertRaises(
                    UsageError, Options().parseOptions, ["--worker-timeout", bad]
                )
            )
            self.assertTrue(message.startswith("--worker-timeout: "), message)
            self.assertIn(why, message)


class HeartbeatTests(SynchronousTestCase):
    """
    Workers send heartbeats; one silent for --worker-timeout is killed and
    replaced; the gauge counts the live; a scrape asks only the live.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.spawned: list[tuple[object, list[str], dict[int, object]]] = []
        self.nextPid = 1000
        self.service, self.supervisor = supervised(
            [],
            settings=Settings(workers=2, workerTimeout=5),
            reactor=self.clock,
            spawn=self.spawn,
            backoff=lambda attempt: min(60.0, 2.0**attempt),
            logFiles=LogFiles(twistd=False),
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    spawn = SupervisionTests.spawn
    worker = SupervisionTests.worker

    def live(self) -> int:
        _, live, _ = self.supervisor.metricsSource()
        return int(live())

    def test_silentWorkerIsKilledAndReplaced(self) -> None:
        first, second = self.worker(1), self.worker(2)
        _heartbeat(first, accepted=1)
        _heartbeat(second, accepted=2)
        self.assertEqual(self.live(), 2)
        with capturedLogs() as events:
            for _ in range(4):
                self.clock.advance(1)
                _heartbeat(first, accepted=1)
            self.assertEqual(second.transport.signals, [])
            # Silent 4 s: not live any more (3 heartbeats missed), not yet
            # killed.
            self.assertEqual(self.live(), 1)
            self.clock.advance(1)
            # At the deadline, a last call of three heartbeats.
            self.assertEqual(second.transport.signals, [])
            for _ in range(3):
                self.clock.advance(1)
                _heartbeat(first, accepted=1)
        self.assertEqual(second.transport.signals, [signal.SIGKILL])
        self.assertEqual(first.transport.signals, [])
        hung = [e for e in events if e.get("event") == "worker.hung"]
        self.assertEqual(len(hung), 1)
        self.assertEqual((hung[0]["worker"], hung[0]["silent"]), (2, 8.0))
        self.assertEqual(self.supervisor.hungWorkers, 1)
        snapshot, _, _ = self.supervisor.metricsSource()
        self.assertEqual(snapshot()["workersHung"], 1)
        # Its last counts stay in the sums.
        self.assertEqual(snapshot()["accepted"], 3)
        second.processEnded(Failure(ProcessTerminated(signal=9)))
        # It lived 5 s: a quick death, replaced after the back-off (2 s).
        for _ in range(2):
            self.clock.advance(1)
            _heartbeat(first)
        self.assertIsNot(self.worker(2), second)
        _heartbeat(self.worker(2))
        self.assertEqual(self.live(), 2)

    def test_startGetsLonger(self) -> None:
        """
        Before its first heartbeat a worker has START_TIMEOUT (starting
        Python can take longer than a short --worker-timeout), then it is
        killed if it still has said nothing.
        """
        from echotwist.supervisor import START_TIMEOUT

        first, second = self.worker(1), self.worker(2)
        self.clock.advance(START_TIMEOUT - 1)
        _heartbeat(first)
        self.clock.advance(1)
        # At the deadline, a last call of three heartbeats.
        self.assertEqual(second.transport.signals, [])
        self.clock.advance(self.supervisor.liveWithin)
        self.assertEqual(first.transport.signals, [])
        self.assertEqual(second.transport.signals, [signal.SIGKILL])

    def test_wholeGroupStopped(self) -> None:
        """
        The supervisor and its workers stopped together for longer than
        --worker-timeout (Ctrl-Z, a paused container, a suspended VM; or
        the clock stepped forward): every deadline passes at once, and the
        workers, which speak as soon as they run again, are not killed.
        """
        first, second = self.worker(1), self.worker(2)
        _heartbeat(first)
        _heartbeat(second)
        with capturedLogs() as events:
            self.clock.advance(35)
            _heartbeat(first)
            _heartbeat(second)
            for _ in range(10):
                self.clock.advance(1)
                _heartbeat(first)
                _heartbeat(second)
        self.assertEqual(first.transport.signals, [])
        self.assertEqual(second.transport.signals, [])
        self.assertEqual([e for e in events if e.get("event") == "worker.hung"], [])
        self.assertEqual(self.live(), 2)

    def test_anyControlLineIsASignOfLife(self) -> None:
        first = self.worker(1)
        for _ in range(20):
            first.childDataReceived(3, b'{"accepted": 1}\n')
            self.clock.advance(4)
        self.assertEqual(first.transport.signals, [])

    def test_timeoutZeroNeverKills(self) -> None:
        service, supervisor = supervised(
            [],
            settings=Settings(workers=1, workerTimeout=0),
            reactor=self.clock,
            spawn=self.spawn,
            logFiles=LogFiles(twistd=False),
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.clock.advance(3600)
        self.assertEqual(supervisor.workers[1].transport.signals, [])

    def test_scrapeAsksOnlyTheLive(self) -> None:
        """
        A scrape asks the live workers and answers as soon as they have;
        a silent one is not waited for (its last heartbeat's counts are
        summed instead).
        """
        first, second = self.worker(1), self.worker(2)
        _heartbeat(first, accepted=1)
        _heartbeat(second, accepted=2)
        for _ in range(4):
            self.clock.advance(1)
            _heartbeat(first, accepted=1)
        snapshot, _, refresh = self.supervisor.metricsSource()
        first.transport.written = second.transport.written = b""
        scraped = refresh()
        self.assertEqual(first.transport.written, b"stats\n")
        self.assertEqual(second.transport.written, b"")
        first.childDataReceived(3, b'{"accepted": 5}\n')
        self.successResultOf(scraped)
        self.assertEqual(snapshot()["accepted"], 7)

    def test_slowLiveWorkerHoldsAScrapeBriefly(self) -> None:
        from echotwist.supervisor import STATS_TIMEOUT

        first, second = self.worker(1), self.worker(2)
        _heartbeat(first, accepted=1)
        _heartbeat(second, accepted=2)
        _, _, refresh = self.supervisor.metricsSource()
        scraped = refresh()
        first.childDataReceived(3, b'{"accepted": 5}\n')
        self.assertNoResult(scraped)
        self.clock.advance(STATS_TIMEOUT)
        self.successResultOf(scraped)
        self.assertLessEqual(STATS_TIMEOUT, 0.5)
