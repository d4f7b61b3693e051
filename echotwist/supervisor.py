# -*- test-case-name: tests.test_workers -*-
"""
Supervised prefork workers (C{--workers N}): the C++ original's
fork-per-client, done right.

The supervisor opens every listener once, through the same endpoints a
single process uses (so TCP, TCP6, UNIX, TLS, PROXY-wrapped, systemd-passed
and UDP listeners all bind exactly as they would), stops reading from them
itself, and starts N workers (L{echotwist.worker}) that inherit the
listening descriptors and serve them.  All workers accept from the same
kernel sockets: this works for every kind of listener (SO_REUSEPORT has no
equivalent for UNIX or systemd-passed sockets) and nothing queued on a
socket is lost when a worker dies.

Every worker that exits is reaped (Twisted's SIGCHLD handling), logged
with its status and replaced; one that keeps dying soon after it starts is
restarted after a growing delay (Twisted's C{backoffPolicy}), so a crash
loop cannot fork-bomb the host.  SIGTTIN adds a worker and SIGTTOU removes
one, as gunicorn's arbiter does.  On SIGTERM or SIGINT the supervisor stops
listening, passes SIGTERM to every worker, waits for them to drain (up to
the shutdown timeout and a margin) and kills what is left.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import error
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from echotwist.service import EchoService
from echotwist.stats import addStats

__all__ = ["SupervisorService"]

log = Logger()

#: A worker that ran this long before it exited was healthy: replace it at
#: once.  One that died sooner counts towards the back-off.
STABLE_AFTER = 10.0
#: How long, beyond the shutdown timeout, workers get to exit before they
#: are killed.
KILL_MARGIN = 5.0
#: How long a scrape waits for a worker's counts.
STATS_TIMEOUT = 2.0

#: The child descriptors: control in (stdin), log out (stdout, stderr, the
#: supervisor's own), control out, and the listeners from here on.
_CONTROL_OUT = 3
_FIRST_LISTENER = 10


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: SupervisorService, number: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.startedAt = 0.0
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None
        self._buffer = b""
        self._waiting: list[Deferred[dict[str, Any]]] = []
        self.lastStats: dict[str, Any] = {}

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.startedAt = self.supervisor.reactor.seconds()
        log.info(
            "Worker {worker} started (pid {pid})",
            event="worker.started",
            worker=self.number,
            pid=self.pid,
        )

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != _CONTROL_OUT:
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                self.lastStats = json.loads(line)
            except ValueError:
                continue
            if self._waiting:
                self._waiting.pop(0).callback(self.lastStats)

    def askStats(self) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self._waiting.append(d)
        assert self.transport is not None
        self.transport.writeToChild(0, b"stats\n")
        return d

    def signal(self, signum: int) -> None:
        try:
            self.transport.signalProcess(signum)  # type: ignore[union-attr]
        except error.ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        for waiting in self._waiting:
            waiting.callback(self.lastStats)
        self._waiting = []
        value = reason.value
        status = getattr(value, "exitCode", None)
        signum = getattr(value, "signal", None)
        self.supervisor._workerEnded(self, status, signum)
        self.ended.callback(None)


class SupervisorService(EchoService):
    """
    An L{EchoService} whose listeners are served by worker processes.

    Options that shape each worker's echo (limits, timeouts, logging) are
    given to every worker and apply per worker.
    """

    def __init__(
        self,
        *args: Any,
        workers: int,
        reactorName: str | None = None,
        spawn: Callable[..., Any] | None = None,
        backoff: Callable[[int], float] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        @param workers: how many worker processes to keep running.
        @param reactorName: the C{twistd --reactor} name workers install.
        @param spawn: C{IReactorProcess.spawnProcess} (for tests).
        @param backoff: seconds to wait before restarting a worker that has
            died soon after starting, by how many times in a row it has.
        """
        super().__init__(*args, **kwargs)
        self.wanted = workers
        self.reactorName = reactorName
        self.workers: dict[int, _Worker] = {}
        self._spawn = spawn or self.reactor.spawnProcess
        self._stopping = False
        self._quickDeaths = 0
        self._delay = backoff or backoffPolicy(
            initialDelay=1.0, maxDelay=60.0, factor=2.0
        )
        self._pendingRestarts: list[Any] = []
        self._retired: dict[str, Any] = {}
        self._childFDs: dict[int, int] = {}
        self._config: dict[str, Any] = {}
        self._oldHandlers: dict[int, Any] = {}

    # --- the listeners, handed over --------------------------------------

    def startService(self) -> None:
        super().startService()
        listeners: list[dict[str, Any]] = []
        datagrams: list[dict[str, Any]] = []
        fileno = _FIRST_LISTENER
        for child in self:
            port = child.port
            if port is None or child.kind == "metrics":
                continue
            # The workers accept; the supervisor keeps the socket open only.
            port.stopReading()
            self._childFDs[fileno] = port.fileno()
            entry = {"description": child.description, "fileno": fileno}
            (datagrams if child.kind == "udp" else listeners).append(entry)
            fileno += 1
        factory = self.factory
        self._config = {
            "reactor": self.reactorName,
            "listeners": listeners,
            "udp": datagrams,
            "udpRate": self.datagramPolicy.rate,
            "maxConnections": factory.maxConnections,
            "maxPerSource": factory.maxPerSource,
            "idleTimeout": factory.idleTimeout,
            "ipv6Prefix": factory.ipv6Prefix,
            "evictIdleAfter": factory.evictIdleAfter,
            "proxyFrom": None
            if self.proxyFrom is None
            else [str(network) for network in self.proxyFrom],
            "shutdownTimeout": self.shutdownTimeout,
            "drainQuiet": factory.drainQuiet,
            "logConnections": factory.logConnections,
            "socketBuffer": self.socketBuffer,
            "controlFileno": _CONTROL_OUT,
        }
        for number in range(1, self.wanted + 1):
            self._start(number)
        for signum, handler in (
            (signal.SIGTTIN, self.addWorker),
            (signal.SIGTTOU, self.removeWorker),
        ):
            self._oldHandlers[signum] = signal.signal(
                signum, lambda *_, h=handler: self.reactor.callFromThread(h)
            )

    def _start(self, number: int) -> None:
        worker = _Worker(self, number)
        config = dict(self._config, worker=number)
        childFDs: dict[int, Any] = {0: "w", 1: 1, 2: 2, _CONTROL_OUT: "r"}
        childFDs.update(self._childFDs)
        self.workers[number] = worker
        self._spawn(
            worker,
            sys.executable,
            [sys.executable, "-m", "echotwist.worker", json.dumps(config)],
            env=os.environ.copy(),
            childFDs=childFDs,
        )

    # --- supervision -----------------------------------------------------

    def _workerEnded(
        self, worker: _Worker, status: int | None, signum: int | None
    ) -> None:
        if self.workers.get(worker.number) is worker:
            del self.workers[worker.number]
        self._retired = addStats(self._retired, worker.lastStats)
        lived = self.reactor.seconds() - worker.startedAt
        log.info(
            "Worker {worker} (pid {pid}) exited after {lived:.1f}s: {how}",
            event="worker.exited",
            worker=worker.number,
            pid=worker.pid,
            status=status,
            signal=signum,
            lived=lived,
            how=f"signal {signum}" if signum else f"status {status}",
        )
        if self._stopping or worker.number > self.wanted:
            return
        if lived >= STABLE_AFTER:
            self._quickDeaths = 0
            delay = 0.0
        else:
            self._quickDeaths += 1
            delay = self._delay(self._quickDeaths)
        if delay:
            log.warn(
                "Worker {worker} keeps dying: restarting it in {delay:.1f}s",
                event="worker.backoff",
                worker=worker.number,
                delay=delay,
            )
        self._pendingRestarts.append(
            self.reactor.callLater(delay, self._restart, worker.number)
        )

    def _restart(self, number: int) -> None:
        self._pendingRestarts = [c for c in self._pendingRestarts if c.active()]
        if not self._stopping and number not in self.workers and number <= self.wanted:
            self._start(number)

    def addWorker(self) -> None:
        """
        One more worker (SIGTTIN).
        """
        if self._stopping:
            return
        self.wanted += 1
        log.info(
            "SIGTTIN: now {count} workers", event="worker.added", count=self.wanted
        )
        self._start(self.wanted)

    def removeWorker(self) -> None:
        """
        One worker fewer, never fewer than one (SIGTTOU); it drains first.
        """
        if self._stopping or self.wanted <= 1:
            return
        worker = self.workers.get(self.wanted)
        self.wanted -= 1
        log.info(
            "SIGTTOU: now {count} workers", event="worker.removed", count=self.wanted
        )
        if worker is not None:
            worker.signal(signal.SIGTERM)

    # --- metrics ---------------------------------------------------------

    def _metricsSource(self) -> tuple[Any, Any, Any]:
        def snapshot() -> dict[str, Any]:
            total = self._retired
            for worker in self.workers.values():
                total = addStats(total, worker.lastStats)
            return total

        def refresh() -> Deferred[None]:
            asked = [
                worker.askStats().addTimeout(STATS_TIMEOUT, self.reactor)
                for worker in list(self.workers.values())
            ]
            return DeferredList(asked, consumeErrors=True).addCallback(lambda _: None)

        return snapshot, lambda: len(self.workers), refresh

    # --- stopping --------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        self._stopping = True
        for signum, handler in self._oldHandlers.items():
            signal.signal(signum, handler)
        for call in self._pendingRestarts:
            if call.active():
                call.cancel()
        listening = super().stopService()
        workers = list(self.workers.values())
        for worker in workers:
            worker.signal(signal.SIGTERM)
        if not workers:
            return listening
        log.info(
            "Waiting for {count} worker(s) to drain",
            event="drain.started",
            count=len(workers),
            timeout=self.shutdownTimeout,
        )
        killer = self.reactor.callLater(
            self.shutdownTimeout + KILL_MARGIN, self._killAll, workers
        )
        ended = DeferredList([w.ended for w in workers] + [listening])

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()
            log.info("All workers have exited", event="drain.finished")

        return ended.addCallback(done)

    def _killAll(self, workers: list[_Worker]) -> None:
        for worker in workers:
            if not worker.ended.called:
                log.warn(
                    "Worker {worker} (pid {pid}) still running: killing it",
                    event="worker.killed",
                    worker=worker.number,
                    pid=worker.pid,
                )
                worker.signal(signal.SIGKILL)
