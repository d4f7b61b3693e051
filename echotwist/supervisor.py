# -*- test-case-name: tests.test_supervisor -*-
"""
Supervised prefork workers (C{--workers N}): the C++ original's
fork-per-client, done right.

The supervising process is the same L{EchoService
<echotwist.service.EchoService>} as one process, with a L{SupervisorService}
as its C{workers} child: it opens every listener once, through the same
endpoints (so TCP, TCP6, UNIX, TLS, PROXY-wrapped, systemd-passed and UDP
listeners all bind exactly as they would), stops reading from them
itself, and starts N workers (L{echotwist.worker}) that inherit the
listening descriptors and serve them.  All workers accept from the same
kernel sockets: this works for every kind of listener (SO_REUSEPORT has no
equivalent for UNIX or systemd-passed sockets) and nothing queued on a
socket is lost when a worker dies.

Every worker that exits is reaped (Twisted's SIGCHLD handling), logged
with its status and replaced; one that keeps dying soon after it starts is
restarted after a growing delay (Twisted's C{backoffPolicy}, at most
L{MAX_BACKOFF} seconds), so a crash loop cannot fork-bomb the host.  A
worker that cannot be started at all (C{fork} fails: a process-count
limit, no memory) is tried again after the same capped delay, for as long
as it takes, at start-up as later: the supervisor serves with the workers
it has meanwhile.  Each worker sends a heartbeat on its control pipe; one
silent for C{--worker-timeout} seconds (hung, or stopped) is killed and
replaced, as gunicorn's arbiter does with its C{--timeout}.  SIGTTIN adds a
worker and SIGTTOU removes one, as gunicorn's arbiter does.  SIGHUP
reopens the log files and replaces every worker with a fresh process, one
at a time: the new one serving before the old one drains.  On SIGTERM or
SIGINT the supervisor stops listening, passes SIGTERM to every worker,
waits for them to drain (up to the shutdown timeout and a margin) and kills
what is left.

Workers log into a pipe, as Twisted's JSON log events; the supervisor
emits each as one of its own, so they go wherever its log goes (twistd's
C{--logfile}, daemonized or not; standard output; JSON or text), tagged
with the worker's number.  A worker's standard error (a traceback before
its logging began, a faulthandler report) is logged line by line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.application.service import MultiService, Service
from twisted.internet import error
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON
from twisted.python.failure import Failure

from echotwist.settings import Settings, maxWorkers
from echotwist.signals import SignalHandlers
from echotwist.stats import addStats
from echotwist.worker import heartbeatInterval

__all__ = ["SupervisorService"]

log = Logger()

#: A worker that ran this long before it exited was healthy: replace it at
#: once.  One that died sooner counts towards the back-off.
STABLE_AFTER = 10.0
#: How long, beyond the shutdown timeout, workers get to exit before they
#: are killed.
KILL_MARGIN = 5.0
#: How long a scrape waits for a live worker's counts before it takes the
#: ones its last heartbeat carried (a second old at most).  A worker that
#: is not live is not asked at all.
STATS_TIMEOUT = 0.5
#: A worker is live while its last heartbeat is at most this many
#: heartbeat intervals old: the C{echotwist_workers} gauge counts those.
LIVE_BEATS = 3
#: The longest wait before restarting a worker that keeps dying.  Short
#: enough that after a storm of kills the server serves again within
#: seconds; long enough that a crash loop costs the host next to nothing.
MAX_BACKOFF = 4.0
#: How long a fresh worker gets to start serving, in a rolling restart,
#: before it is given up and the old one kept; and how long any new worker
#: has for its first heartbeat, if that is longer than C{--worker-timeout}
#: (starting Python and Twisted on a loaded host takes seconds).
START_TIMEOUT = 30.0
#: A log line from a worker longer than this is cut there.
MAX_LOG_LINE = 1 << 20

#: The child descriptors: control in (stdin), log out (stdout: JSON events),
#: standard error, control out, and the listeners from here on.
_LOG_OUT = 1
_STDERR = 2
_CONTROL_OUT = 3
_FIRST_LISTENER = 10


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: SupervisorService, number: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.startedAt = 0.0
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None
        #: Fires once the worker says it is serving.
        self.serving: Deferred[None] = Deferred()
        #: Being replaced (SIGHUP): not to be restarted when it exits.
        self.retiring = False
        #: The worker this one replaces (SIGHUP), if any: until this one
        #: serves, its exit leaves that one in its place, if alive, and is
        #: no reason to start another.
        self.replacing: _Worker | None = None
        self._buffers: dict[int, bytes] = {}
        self._waiting: list[Deferred[dict[str, Any]]] = []
        self.lastStats: dict[str, Any] = {}
        #: When it last said anything on its control pipe; None before it
        #: has.
        self.lastHeard: float | None = None
        #: Killed (SIGKILL sent): not live, whatever it said last.
        self.killed = False
        self._watchdog: IDelayedCall | None = None

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
        timeout = self.supervisor.settings.workerTimeout
        if timeout:
            self._watchdog = self.supervisor.reactor.callLater(
                max(timeout, START_TIMEOUT), self._silent
            )

    def _heard(self) -> None:
        self.lastHeard = self.supervisor.reactor.seconds()
        if self._watchdog is not None and self._watchdog.active():
            # Whether the deadline or the last call (L{_silent}) was
            # pending: silence starts again from now.
            self._watchdog.cancel()
            self._watchdog = self.supervisor.reactor.callLater(
                self.supervisor.settings.workerTimeout, self._silent
            )

    def _silent(self) -> None:
        # The deadline can pass while the supervisor itself was not running
        # (the whole process group stopped: Ctrl-Z, SIGSTOP, a paused
        # container, a suspended VM) or when the clock steps forward: then
        # every deadline passes at once, before the reactor has read what
        # the workers said.  The workers, stopped too, speak as soon as they
        # run again; a last call of a few heartbeats tells them from a
        # worker that is hung.
        self._watchdog = self.supervisor.reactor.callLater(
            self.supervisor.liveWithin, self._hung
        )

    def _hung(self) -> None:
        self._watchdog = None
        self.supervisor._workerHung(self)

    def live(self) -> bool:
        """
        Whether this worker has sent a heartbeat lately (and was not
        killed): serving, as far as the supervisor can tell.
        """
        if self.killed or self.lastHeard is None:
            return False
        silent: float = self.supervisor.reactor.seconds() - self.lastHeard
        return silent <= self.supervisor.liveWithin

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._buffers.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > MAX_LOG_LINE:
            lines.append(rest)
            rest = b""
        self._buffers[childFD] = rest
        for line in lines:
            self._lineReceived(childFD, line)

    def _lineReceived(self, childFD: int, line: bytes) -> None:
        if childFD == _CONTROL_OUT:
            try:
                message = json.loads(line)
            except ValueError:
                return
            if not isinstance(message, dict):
                return
            self._heard()
            if "heartbeat" in message:
                if isinstance(message["heartbeat"], dict):
                    self.lastStats = message["heartbeat"]
                return
            self.lastStats = message
            if self._waiting:
                self._waiting.pop(0).callback(self.lastStats)
        elif childFD == _LOG_OUT:
            self._logEvent(line)
        elif childFD == _STDERR and line.strip():
            self._logText(line)

    def _logEvent(self, line: bytes) -> None:
        # One JSON event a line (echotwist.logs.jsonLinesObserver); a record
        # separator before it (Twisted's default JSON format) is tolerated.
        text = line.lstrip(b"\x1e").decode("utf-8", "replace")
        try:
            event = eventFromJSON(text)
        except ValueError:
            event = None
        if not isinstance(event, dict) or "log_time" not in event:
            self._logText(line)
            return
        text = event.pop("log_text", None)
        if isinstance(text, str):
            # The worker's own sentence, as it formatted it, for text logs.
            event["log_format"] = text.replace("{", "{{").replace("}", "}}")
            event.pop("log_flattened", None)
        system = event.get("log_system") or event.get("log_namespace", "-")
        if "worker" not in event:
            event["log_system"] = f"{system} worker {self.number}"
            event["worker"] = self.number
        log.observer(event)
        if event.get("event") == "worker.serving" and not self.serving.called:
            self.serving.callback(None)

    def _logText(self, line: bytes) -> None:
        log.warn(
            "Worker {worker} (pid {pid}) wrote: {line}",
            event="worker.output",
            worker=self.number,
            pid=self.pid,
            # repr's escapes: a worker's raw output may hold anything.
            line=repr(line.decode("utf-8", "replace"))[1:-1],
        )

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

    def kill(self) -> None:
        """
        SIGKILL, once: a stopped or hung process cannot drain, and SIGTERM
        would wait for it to.
        """
        if not self.killed:
            self.killed = True
            self.signal(signal.SIGKILL)

    def processEnded(self, reason: Failure) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        for childFD, rest in self._buffers.items():
            if rest:
                self._lineReceived(childFD, rest)
        self._buffers = {}
        for waiting in self._waiting:
            waiting.callback(self.lastStats)
        self._waiting = []
        value = reason.value
        status = getattr(value, "exitCode", None)
        signum = getattr(value, "signal", None)
        self.supervisor._workerEnded(self, status, signum)
        self.ended.callback(None)


class SupervisorService(Service):
    """
    The child of an L{EchoService <echotwist.service.EchoService>}
    (named C{"workers"}) that serves its echo listeners in worker processes:
    it hands their sockets to the workers, keeps C{settings.workers} of them
    running, drains them on stop, and sums their counts for the metrics.

    Options that shape each worker's echo (limits, timeouts, logging) are
    given to every worker and apply per worker.
    """

    name = "workers"

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        listeners: MultiService,
        datagrams: MultiService,
        signals: SignalHandlers,
        *,
        reactorName: str | None = None,
        spawn: Callable[..., Any] | None = None,
        backoff: Callable[[int], float] | None = None,
    ) -> None:
        """
        @param settings: what every worker is given; C{settings.workers} is
            how many worker processes to keep running.
        @param reactor: the reactor to spawn and time the workers with.
        @param listeners: the echo's stream listeners, whose sockets the
            workers accept on once they listen.
        @param datagrams: the echo's UDP listeners, whose sockets the
            workers read.
        @param signals: where SIGTTIN and SIGTTOU are taken.
        @param reactorName: the C{twistd --reactor} name workers install.
        @param spawn: C{IReactorProcess.spawnProcess} (for tests).
        @param backoff: seconds to wait before restarting a worker that has
            died soon after starting, by how many times in a row it has.
        """
        self.settings = settings
        self.reactor = reactor
        self.listeners = listeners
        self.datagrams = datagrams
        self.signals = signals
        self.shutdownTimeout = settings.shutdownTimeout
        self.wanted = settings.workers
        self.reactorName = reactorName
        self.workers: dict[int, _Worker] = {}
        self._spawn = spawn or reactor.spawnProcess
        self._stopping = False
        self._quickDeaths = 0
        #: Failed attempts to start a worker: in all, and in a row now.
        self.spawnFailures = 0
        self._failingSince = 0
        #: Workers killed for missing --worker-timeout.
        self.hungWorkers = 0
        self.liveWithin = LIVE_BEATS * heartbeatInterval(settings)
        self._delay = backoff or backoffPolicy(
            initialDelay=1.0, maxDelay=MAX_BACKOFF, factor=2.0
        )
        self._pendingRestarts: list[Any] = []
        self._retired: dict[str, Any] = {}
        self._childFDs: dict[int, int] = {}
        self._config: dict[str, Any] = {}
        #: Workers being replaced by a rolling restart, until they exit.
        self._retiring: list[_Worker] = []
        #: A rolling restart under way (None when there is none).
        self._rolling: Deferred[None] | None = None
        self._rollAgain = False

    # --- the listeners, handed over --------------------------------------

    def startService(self) -> None:
        """
        Stop accepting on the listeners (started before this service), and
        start the workers, which inherit the listening sockets and accept
        on them; take SIGTTIN and SIGTTOU to add and remove workers.
        """
        super().startService()
        listeners = self._handOver(self.listeners, _FIRST_LISTENER)
        datagrams = self._handOver(self.datagrams, _FIRST_LISTENER + len(listeners))
        self._config = {
            "reactor": self.reactorName,
            "listeners": listeners,
            "udp": datagrams,
            "settings": self.settings.toJSON(),
            "controlFileno": _CONTROL_OUT,
        }
        for number in range(1, self.wanted + 1):
            self._start(number)
        self.signals.handle(signal.SIGTTIN, self.addWorker)
        self.signals.handle(signal.SIGTTOU, self.removeWorker)

    def _handOver(self, listeners: MultiService, fileno: int) -> list[dict[str, Any]]:
        """
        Stop reading from each listening socket of C{listeners}, and name it
        to the workers' descriptors from C{fileno} on.
        """
        entries: list[dict[str, Any]] = []
        for child in listeners:
            port = child.port
            if port is None:
                continue
            # The workers accept; the supervisor keeps the socket open only.
            port.stopReading()
            self._childFDs[fileno] = port.fileno()
            entries.append({"description": child.description, "fileno": fileno})
            fileno += 1
        return entries

    def _start(self, number: int, retry: bool = True) -> _Worker | None:
        """
        Start worker C{number}.

        @param retry: if it cannot be started, try again after the back-off.
        @return: the worker, or None if it could not be started.
        """
        worker = _Worker(self, number)
        config = dict(self._config, worker=number)
        childFDs: dict[int, Any] = {
            0: "w",
            _LOG_OUT: "r",
            _STDERR: "r",
            _CONTROL_OUT: "r",
        }
        childFDs.update(self._childFDs)
        self.workers[number] = worker
        try:
            self._spawn(
                worker,
                sys.executable,
                # The configuration goes down the control pipe, not here:
                # a command line is anyone's to read (ps, /proc).
                [sys.executable, "-m", "echotwist.worker"],
                env=os.environ.copy(),
                childFDs=childFDs,
            )
        except (OSError, MemoryError) as e:
            # fork or posix_spawn failed (EAGAIN at a process-count limit,
            # ENOMEM); Twisted has closed the pipes it opened for the child.
            if self.workers.get(number) is worker:
                del self.workers[number]
            self._spawnFailed(number, e, retry)
            return None
        if self._failingSince:
            log.info(
                "Worker {worker} started after {failures} failed attempt(s)"
                " to start workers",
                event="worker.spawn_recovered",
                worker=number,
                failures=self._failingSince,
            )
            self._failingSince = 0
        assert worker.transport is not None
        worker.transport.writeToChild(0, json.dumps(config).encode() + b"\n")
        return worker

    def _spawnFailed(self, number: int, reason: BaseException, retry: bool) -> None:
        self.spawnFailures += 1
        self._failingSince += 1
        if self._failingSince == 1:
            # Once per streak: a limit that holds for an hour must not
            # write a line every few seconds.
            log.error(
                "Cannot start worker {worker}: {error}; trying again every"
                " {most:.0f}s at most until it starts",
                event="worker.spawn_failed",
                worker=number,
                error=str(reason),
                most=MAX_BACKOFF,
            )
        if retry:
            self._pendingRestarts.append(
                self.reactor.callLater(
                    self._delay(self._failingSince), self._restart, number
                )
            )

    def _workerHung(self, worker: _Worker) -> None:
        if worker.ended.called or worker.killed:
            return
        self.hungWorkers += 1
        silentSince = (
            worker.lastHeard if worker.lastHeard is not None else worker.startedAt
        )
        log.error(
            "Worker {worker} (pid {pid}) silent for {silent:.1f}s"
            " (--worker-timeout): killing it",
            event="worker.hung",
            worker=worker.number,
            pid=worker.pid,
            silent=self.reactor.seconds() - silentSince,
        )
        worker.kill()

    # --- supervision -----------------------------------------------------

    def _workerEnded(
        self, worker: _Worker, status: int | None, signum: int | None
    ) -> None:
        if self.workers.get(worker.number) is worker:
            del self.workers[worker.number]
        if worker in self._retiring:
            self._retiring.remove(worker)
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
        if self._stopping or worker.retiring or worker.number > self.wanted:
            return
        old = worker.replacing
        if old is not None and not worker.serving.called and not old.ended.called:
            return  # the rolling restart keeps the old worker (_notReplaced)
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
        if self.wanted >= maxWorkers():
            log.warn(
                "SIGTTIN: already {count} workers, the most --workers allows",
                event="worker.add_refused",
                count=self.wanted,
            )
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

    # --- SIGHUP: a rolling restart -----------------------------------------

    def reload(self) -> None:
        """
        SIGHUP, once the log files are reopened: replace every worker with a
        fresh process (new code, say), one at a time: the new one serving
        before the old one is told to drain.  Every worker shares the
        listening sockets, so no connection is refused on the way.  A
        replacement that does not start serving is given up, and the old
        worker kept.
        """
        if self._stopping:
            return
        if self._rolling is not None:
            # The round under way may have started some workers with the
            # old code already: go round once more after it.
            self._rollAgain = True
            log.info(
                "SIGHUP: a rolling restart is under way; another follows it",
                event="workers.reload_queued",
            )
            return
        log.info(
            "SIGHUP: replacing {count} worker(s), one at a time",
            event="workers.reloading",
            count=len(self.workers),
        )
        rolling = self._roll(sorted(self.workers))
        # A round can end at once (no replacement could be started).
        if not rolling.called:
            self._rolling = rolling

    def _roll(self, numbers: list[int]) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        replaced = 0

        def step(wasReplaced: bool = False) -> None:
            nonlocal replaced
            replaced += wasReplaced
            while numbers:
                number = numbers.pop(0)
                old = self.workers.get(number)
                # SIGTTOU may have taken workers away since the round began.
                if old is not None and number <= self.wanted and not self._stopping:
                    self._replace(old).addCallback(step)
                    return
            finish()

        def finish() -> None:
            self._rolling = None
            if self._stopping:
                done.callback(None)
                return
            log.info(
                "SIGHUP: {replaced} of {count} worker(s) replaced",
                event="workers.reloaded",
                replaced=replaced,
                count=len(self.workers),
            )
            done.callback(None)
            if self._rollAgain:
                self._rollAgain = False
                self.reload()

        step()
        return done

    def _replace(self, old: _Worker) -> Deferred[bool]:
        """
        Start a worker in C{old}'s place; once it serves, drain C{old}.

        @return: fires with True once C{old} has exited, or False if the
            replacement failed and C{old} serves on.
        """
        old.retiring = True
        self._retiring.append(old)
        new = self._start(old.number, retry=False)
        if new is None:
            self._unretire(old)
            self._keepServing(old, "cannot start worker {worker}'s replacement")
            return succeed(False)
        new.replacing = old
        result: Deferred[bool] = Deferred()
        giveUp = self.reactor.callLater(START_TIMEOUT, new.kill)

        def served(_: object) -> None:
            new.replacing = None  # a worker like any other from now on
            self._replaced(old, result, giveUp)

        new.serving.addCallback(served)
        new.ended.addCallback(lambda _: self._notReplaced(old, new, result, giveUp))
        return result

    def _replaced(self, old: _Worker, result: Deferred[bool], giveUp: Any) -> None:
        """
        C{old}'s replacement serves: drain C{old}, and fire C{result} once
        it has exited (killed if it outlives the shutdown timeout).
        """
        if result.called:
            return
        if giveUp.active():
            giveUp.cancel()
        old.signal(signal.SIGTERM)
        killer = self.reactor.callLater(
            self.shutdownTimeout + KILL_MARGIN, self._killAll, [old]
        )

        def oldEnded(_: object) -> None:
            if killer.active():
                killer.cancel()
            result.callback(True)

        old.ended.addCallback(oldEnded)

    def _notReplaced(
        self, old: _Worker, new: _Worker, result: Deferred[bool], giveUp: Any
    ) -> None:
        """
        C{old}'s replacement exited before it served: the new code does not
        start, so C{old} keeps serving (unless it is gone or unwanted).
        """
        new.replacing = None
        if result.called or new.serving.called:
            return
        if giveUp.active():
            giveUp.cancel()
        self._unretire(old)
        if old.ended.called or self._stopping:
            result.callback(False)
            return
        if old.number > self.wanted:
            # SIGTTOU took this worker's place away meanwhile.
            old.signal(signal.SIGTERM)
            result.callback(False)
            return
        self._keepServing(old, "worker {worker}'s replacement exited before serving")
        result.callback(False)

    def _unretire(self, old: _Worker) -> None:
        """
        C{old} is not to be replaced after all.
        """
        old.retiring = False
        if old in self._retiring:
            self._retiring.remove(old)

    def _keepServing(self, old: _Worker, what: str) -> None:
        """
        Keep C{old} as its number's worker, and log C{what} went wrong (a
        log format with C{{worker}}) with its replacement.
        """
        self.workers[old.number] = old
        log.error(
            "SIGHUP: " + what + "; keeping the old worker (pid {pid})",
            event="workers.reload_failed",
            worker=old.number,
            pid=old.pid,
        )

    # --- metrics ---------------------------------------------------------

    def _everyWorker(self) -> list[_Worker]:
        return list(self.workers.values()) + list(self._retiring)

    def metricsSource(self) -> tuple[Any, Any, Any]:
        """
        What metrics read: the workers' counts summed (with those of the
        workers gone), the number of live workers, and what to do before
        each scrape (ask every live worker for its counts).
        """

        def snapshot() -> dict[str, Any]:
            total = self._retired
            for worker in self._everyWorker():
                total = addStats(total, worker.lastStats)
            return dict(
                total,
                workerSpawnFailures=self.spawnFailures,
                workersHung=self.hungWorkers,
            )

        def refresh() -> Deferred[None]:
            # Only live workers are asked: a stopped one would hold every
            # scrape to the timeout; its last heartbeat's counts stand in.
            asked = [
                worker.askStats().addTimeout(STATS_TIMEOUT, self.reactor)
                for worker in self._everyWorker()
                if worker.live()
            ]
            return DeferredList(asked, consumeErrors=True).addCallback(lambda _: None)

        def live() -> int:
            return sum(1 for worker in self.workers.values() if worker.live())

        return snapshot, live, refresh

    # --- stopping --------------------------------------------------------

    def stopService(self) -> None:
        """
        Stop supervising: no worker that exits from now on is replaced.
        The workers are stopped by L{drain}, once the listeners have.
        """
        super().stopService()
        self._stopping = True
        for call in self._pendingRestarts:
            if call.active():
                call.cancel()

    def notReady(self) -> list[str]:
        """
        Not ready while no worker serves.
        """
        if any(w.serving.called for w in self.workers.values()):
            return []
        return ["no worker serving"]

    def drain(self) -> Deferred[None] | None:
        """
        Once the listeners have stopped: send every worker SIGTERM, and
        wait for them to drain and exit (any still running
        C{shutdownTimeout} plus a margin later are killed).

        @return: a L{Deferred} that fires once every worker has exited;
            None if there is no worker.
        """
        workers = self._everyWorker()
        for worker in workers:
            worker.signal(signal.SIGTERM)
        if not workers:
            return None
        log.info(
            "Waiting for {count} worker(s) to drain",
            event="drain.started",
            count=len(workers),
            timeout=self.shutdownTimeout,
        )
        killer = self.reactor.callLater(
            self.shutdownTimeout + KILL_MARGIN, self._killAll, workers
        )
        ended = DeferredList([w.ended for w in workers])

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
