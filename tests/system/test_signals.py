"""
Signals an operator sends, to the real twistd and twist: SIGHUP reopens a
moved log file and, with workers, replaces every worker without a failed
exchange; worker logs reach the server's log file, daemonized or not; a
storm of worker kills leaves a server that serves again.  (The log files'
reopening in memory: tests.test_logs.)
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable

import psutil
from twisted.logger import eventFromJSON
from twisted.trial.unittest import SynchronousTestCase

from tests._clients import echoOnce, exchange
from tests._tools import readText
from tests._twistd import (
    LOOPBACK,
    WAIT,
    Server,
    ServerTestCase,
    command,
    waitServing,
    workerProcesses,
)


def waitUntil(
    test: SynchronousTestCase,
    condition: Callable[[], object],
    what: Callable[[], str],
    timeout: float = WAIT,
) -> None:
    """
    Poll C{condition} (a file's contents, a process table) until it holds;
    fail after C{timeout} seconds, saying C{what()}.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            test.fail(f"not within {timeout}s: {what()}")
        time.sleep(0.02)


def waitInFile(
    test: SynchronousTestCase, path: str, pattern: str, count: int = 1
) -> str:
    """
    Wait until C{path} holds C{count} lines matching C{pattern}; its text.
    """
    regex = re.compile(pattern, re.MULTILINE)
    waitUntil(
        test,
        lambda: len(regex.findall(readText(path))) >= count,
        lambda: f"{count} x {pattern!r} in {path}:\n{readText(path)}",
    )
    return readText(path)


def waitForCount(
    test: SynchronousTestCase, server: Server, pattern: str, count: int
) -> None:
    """
    Wait until C{count} lines of C{server}'s output match C{pattern}.
    """
    regex = re.compile(pattern)
    waitUntil(
        test,
        lambda: sum(1 for line in list(server.lines) if regex.search(line)) >= count,
        lambda: f"{count} x {pattern!r} in:\n{server.output}",
        WAIT * 2,
    )


def logPort(text: str) -> int:
    match = re.search(r"Listening on \S+:(\d+) \(", text)
    assert match, text
    return int(match.group(1))


class SighupTests(ServerTestCase):
    def movedLogFile(self, runner: Callable[[str], list[str]]) -> None:
        """
        logrotate's way: move the log file, then SIGHUP.  The moved file
        ends with the server saying it reopens; the new file at the path
        gets every line after; the server never stops serving.
        """
        path = os.path.join(self.directory, "echo.log")
        server = self.start(
            "--port", f"tcp:0:interface={LOOPBACK}", runner=runner(path)
        )
        port = logPort(waitInFile(self, path, r"Listening on "))
        self.assertEqual(echoOnce((LOOPBACK, port), b"before"), b"before")
        waitInFile(self, path, r"6 bytes echoed")
        os.rename(path, path + ".1")
        server.signal(signal.SIGHUP)
        waitInFile(self, path, r"SIGHUP: reopened the log file " + re.escape(path))
        self.assertEqual(echoOnce((LOOPBACK, port), b"after!!"), b"after!!")
        new = waitInFile(self, path, r"7 bytes echoed")
        old = readText(path + ".1")
        self.assertIn("6 bytes echoed", old)
        self.assertIn("SIGHUP: reopening the log file", old)
        self.assertNotIn("7 bytes echoed", old)
        self.assertNotIn("6 bytes echoed", new)
        # And again: a second rotation works the same.
        os.rename(path, path + ".2")
        server.signal(signal.SIGHUP)
        waitInFile(self, path, r"SIGHUP: reopened the log file")
        self.assertIsNone(server.process.poll())
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertIn("Main loop terminated", readText(path))
        self.assertEqual(server.output, "", "nothing on standard output")

    def test_twistdMovedLogFile(self) -> None:
        self.movedLogFile(
            lambda path: [
                command("twistd"),
                "-n",
                "--pidfile=",
                f"--logfile={path}",
                "echo",
            ]
        )

    def test_twistMovedLogFile(self) -> None:
        self.movedLogFile(
            lambda path: [
                command("twist"),
                "--log-format",
                "text",
                "--log-file",
                path,
                "echo",
            ]
        )

    def test_sigusr1KeepsTwistdsMeaning(self) -> None:
        """
        SIGUSR1 to twistd with a log file: twistd's own rotation, FILE to
        FILE.1, still happens.
        """
        path = os.path.join(self.directory, "echo.log")
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[command("twistd"), "-n", "--pidfile=", f"--logfile={path}", "echo"],
        )
        port = logPort(waitInFile(self, path, r"Listening on "))
        server.signal(signal.SIGUSR1)
        waitUntil(self, lambda: os.path.exists(path + ".1"), lambda: "no echo.log.1")
        self.assertIn("Listening on ", readText(path + ".1"))
        self.assertEqual(echoOnce((LOOPBACK, port), b"rotated"), b"rotated")
        waitInFile(self, path, r"7 bytes echoed")
        self.assertNotIn("SIGUSR1: no twistd log file", readText(path))
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_standardOutputSurvivesSighup(self) -> None:
        """
        twistd -n logging to standard output: nothing to reopen, and it
        says so; the server goes on serving.
        """
        server = self.start()
        port = server.port
        server.signal(signal.SIGHUP)
        server.waitFor(r"SIGHUP: no log file to reopen")
        self.assertEqual(echoOnce((LOOPBACK, port), b"still"), b"still")
        # twistd installs no SIGUSR1 handler without a log file: not fatal.
        server.signal(signal.SIGUSR1)
        server.waitFor(r"SIGUSR1: no twistd log file to rotate")
        server.signal(signal.SIGHUP)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertNotIn("Traceback", server.output)


class ClientLoop:
    """
    Echo exchanges in a loop on a thread, each on a new connection, every
    outcome counted; at most C{limit} exchanges, and it stops by itself
    after C{WAIT} * 3 seconds.
    """

    def __init__(self, port: int, limit: int = 100_000) -> None:
        self.port = port
        self.limit = limit
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + WAIT * 3
        for n in range(self.limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            payload = b"exchange %d" % n
            try:
                received = echoOnce((LOOPBACK, self.port), payload)
            except (OSError, AssertionError) as e:
                outcome = f"{type(e).__name__}: {e}"
            else:
                outcome = "ok" if received == payload else f"wrong: {received!r}"
            with self._changed:
                if outcome == "ok":
                    self.ok += 1
                else:
                    self.failures.append(outcome)
                self._changed.notify_all()

    def waitForMore(self, count: int) -> None:
        with self._changed:
            target = self.ok + count
            if not self._changed.wait_for(
                lambda: self.ok >= target or not self._thread.is_alive(), WAIT
            ):
                raise AssertionError(f"only {self.ok} exchanges, {self.failures[:5]}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)


class TwistdRollingRestartTests(ServerTestCase):
    def test_sighupReplacesEveryWorkerWithoutAFailedExchange(self) -> None:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
            "--max-per-source",
            "0",
        )
        waitServing(server, 2)
        before = {w.pid for w in workerProcesses(server, 2)}
        clients = ClientLoop(server.port)
        self.addCleanup(clients.stop)
        clients.waitForMore(50)
        for round in (1, 2):
            server.signal(signal.SIGHUP)
            atSignal = clients.ok
            waitForCount(self, server, r"SIGHUP: 2 of 2 worker\(s\) replaced", round)
            # Exchanges went on while the workers were being replaced.
            self.assertGreater(clients.ok, atSignal)
            clients.waitForMore(50)
        clients.stop()
        after = {w.pid for w in workerProcesses(server, 2)}
        self.assertFalse(before & after, "every worker is a new process")
        self.assertEqual(clients.failures, [])
        self.assertGreater(clients.ok, 150)
        self.assertIsNone(server.process.poll())
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)


def startDaemon(
    test: ServerTestCase, *echoArgs: str
) -> tuple[str, str, str, psutil.Process]:
    """
    Start twistd daemonized (no -n), as a user would under logrotate, with
    a log file and a pidfile in the test's directory; always killed (with
    its workers) at the end of the test.

    @return: the log file's path, the pidfile's path, the file its original
        standard output and error went to, and the daemon.
    """
    logPath = os.path.join(test.directory, "echo.log")
    pidPath = os.path.join(test.directory, "echo.pid")
    outPath = os.path.join(test.directory, "original-output")
    with open(outPath, "wb") as out:
        subprocess.run(
            [
                command("twistd"),
                f"--pidfile={pidPath}",
                f"--logfile={logPath}",
                "echo",
                *echoArgs,
            ],
            cwd=test.directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            timeout=WAIT,
            check=True,
        )
    waitUntil(test, lambda: readText(pidPath).strip(), lambda: "no pidfile")
    daemon = psutil.Process(int(readText(pidPath)))

    def cleanup() -> None:
        try:
            family = [daemon, *daemon.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, WAIT)

    test.addCleanup(cleanup)
    return logPath, pidPath, outPath, daemon


class ReopenedModeTests(ServerTestCase):
    def test_daemonKeepsTheLogFilesMode(self) -> None:
        """
        A daemonised twistd (umask 077) reopens its log file after
        logrotate moved it with the mode the old one had (0644), not 0600.
        """
        previous = os.umask(0o022)
        try:
            logPath, _, _, daemon = startDaemon(
                self, "--port", f"tcp:0:interface={LOOPBACK}"
            )
        finally:
            os.umask(previous)
        waitInFile(self, logPath, r"Listening on ")
        self.assertEqual(stat.S_IMODE(os.stat(logPath).st_mode), 0o644)
        for n in (1, 2):
            os.rename(logPath, f"{logPath}.{n}")
            daemon.send_signal(signal.SIGHUP)
            waitInFile(self, logPath, r"SIGHUP: reopened the log file")
            self.assertEqual(stat.S_IMODE(os.stat(logPath).st_mode), 0o644)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(WAIT)


class WorkerLogTests(ServerTestCase):
    def test_daemonizedWorkersLogEveryConnectionToTheFile(self) -> None:
        logPath, _, outPath, daemon = startDaemon(
            self, "--port", f"tcp:0:interface={LOOPBACK}", "--workers", "2"
        )
        port = logPort(waitInFile(self, logPath, r" Worker \d serving$", 2))
        count = 30
        for n in range(count):
            payload = b"connection %d" % n
            self.assertEqual(echoOnce((LOOPBACK, port), payload), payload)
        text = waitInFile(self, logPath, r"disconnected after .* echoed", count)
        opened = re.findall(r"^.*\[[^]]* worker (\d)\] \S+ connected$", text, re.M)
        closed = re.findall(
            r"^.*\[[^]]* worker (\d)\] \S+ disconnected after", text, re.M
        )
        self.assertEqual((len(opened), len(closed)), (count, count), text)
        self.assertLessEqual(set(opened) | set(closed), {"1", "2"})
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(WAIT)
        text = readText(logPath)
        self.assertIn("All workers have exited", text)
        self.assertIn("Server Shut Down", text)
        self.assertEqual(readText(outPath), "", "nothing on the original output")

    def test_jsonLogFileUnderTwist(self) -> None:
        """
        twist with a JSON log file: the workers' events are in it as JSON
        events of their own, fields intact, with the worker's number.
        """
        logPath = os.path.join(self.directory, "echo.json")
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
            runner=[
                command("twist"),
                "--log-format",
                "json",
                "--log-file",
                logPath,
                "echo",
            ],
        )
        waitInFile(self, logPath, r'"worker\.serving"', 2)
        (address,) = [
            str(e["address"])
            for e in self.events(logPath)
            if e.get("event") == "listener.started" and "worker" not in e
        ]
        port = int(address.rsplit(":", 1)[1])
        for n in range(10):
            self.assertEqual(echoOnce((LOOPBACK, port), b"%d" % n), b"%d" % n)
        waitInFile(self, logPath, r'"connection\.closed"', 10)
        closed = [
            e for e in self.events(logPath) if e.get("event") == "connection.closed"
        ]
        self.assertEqual(len(closed), 10)
        self.assertTrue(all(e["worker"] in (1, 2) for e in closed), closed)
        self.assertEqual(sum(e["bytesIn"] for e in closed), 10)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertEqual(server.output, "")

    def events(self, path: str) -> list[dict[str, object]]:
        return [
            eventFromJSON(record)
            for record in readText(path).split("\x1e")
            if record.strip()
        ]


class WorkerCrashTests(ServerTestCase):
    def test_segfaultReportReachesTheLog(self) -> None:
        """
        A worker's faulthandler report (its standard error) is in the
        supervisor's log, escaped, and the worker is replaced.
        """
        server = self.start("--port", f"tcp:0:interface={LOOPBACK}", "--workers", "2")
        waitServing(server, 2)
        victim = workerProcesses(server, 2)[0]
        victim.send_signal(signal.SIGSEGV)
        server.waitFor(rf"\(pid {victim.pid}\) exited after .*: signal 11")
        server.waitFor(rf"\(pid {victim.pid}\) wrote: Fatal Python error: Segmentation")
        waitServing(server, 3)
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"alive"), b"alive")


class KillStormTests(ServerTestCase):
    def test_serverServesAgainAfterAStormOfKills(self) -> None:
        """
        kill -9 of every worker as soon as it appears, for 10 seconds: once
        the storm ends the server serves again within 10 seconds (the
        back-off between restarts is capped well below that).
        """
        server = self.start("--port", f"tcp:0:interface={LOOPBACK}", "--workers", "2")
        waitServing(server, 2)
        port = server.port
        supervisor = psutil.Process(server.process.pid)
        killed: set[int] = set()
        stormEnds = time.monotonic() + 10
        while time.monotonic() < stormEnds:
            for child in supervisor.children():
                if child.pid not in killed:
                    try:
                        child.kill()
                    except psutil.NoSuchProcess:
                        pass
                    killed.add(child.pid)
            time.sleep(0.01)
        self.assertGreater(len(killed), 3, "the storm killed few workers")
        self.assertIsNone(server.process.poll(), "the supervisor survives")
        # One exchange, waiting in the listening socket's backlog until a
        # worker takes it: served within 10 seconds, or not at all.
        ((received, _),) = exchange((LOOPBACK, port), [b"back"], timeout=10)
        self.assertEqual(received, b"back", server.output)
        # No restart was put off for longer than the cap allows (4 s and up
        # to 1 s of jitter): the bound that makes the 10 s above hold.
        delays = [
            float(d)
            for d in re.findall(
                r"keeps dying: restarting it in ([\d.]+)s", server.output
            )
        ]
        self.assertTrue(delays, server.output)
        self.assertLessEqual(max(delays), 5.0, delays)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)


class LogVolumeTests(ServerTestCase):
    def test_connectionLinesAreAsSmallAsDocsSay(self) -> None:
        """
        The log volume docs/deployment.rst states (209 bytes a connection in twistd's text log,
        1.8 GB a day at 100 connections a second) holds: 100 connections
        add no more than 230 bytes each, opened and closed lines together.
        """
        path = os.path.join(self.directory, "echo.log")
        self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[command("twistd"), "-n", "--pidfile=", f"--logfile={path}", "echo"],
        )
        port = logPort(waitInFile(self, path, r"Listening on "))
        before = len(readText(path).encode())
        count = 100
        for n in range(count):
            payload = b"%100d" % n
            self.assertEqual(echoOnce((LOOPBACK, port), payload), payload)
        text = waitInFile(self, path, r" disconnected after ", count)
        lines = text.encode()[before:].splitlines(keepends=True)
        connectionLines = [
            line
            for line in lines
            if line.endswith(
                (b" connected\n", b"closed the connection\n", b"finished sending\n")
            )
        ]
        self.assertEqual(len(connectionLines), 2 * count, text)
        perConnection = sum(map(len, connectionLines)) / count
        self.assertLessEqual(perConnection, 230)
        self.assertGreater(perConnection, 150, "docs/deployment.rst would overstate it")
