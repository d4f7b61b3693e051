"""
Run the real twistd (or twist) as a subprocess and read its log, with every
wait bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence

import psutil
from twisted.trial.unittest import SynchronousTestCase

#: Upper bound for any single wait on the server; generous for a loaded CI.
WAIT = 20.0

LOOPBACK = "127.0.0.1"

_BIN = os.path.dirname(sys.executable)


def command(name: str) -> str:
    """
    The twistd/twist installed next to the running Python: the tests drive
    the same installation they import.
    """
    path = os.path.join(_BIN, name)
    if not os.path.exists(path):
        raise RuntimeError(
            f"{path} is missing: install echotwist into this environment"
        )
    return path


def _defaultSignals() -> None:
    # A child started from a non-interactive shell inherits SIGINT ignored,
    # and Twisted then installs no handler for it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Server:
    """
    One twistd process.  Its output (log and stderr) is read by a thread into
    C{self.lines}.
    """

    def __init__(
        self,
        echoArgs: Sequence[str] = ("--port", "tcp:0:interface=127.0.0.1"),
        *,
        cwd: str,
        runner: Sequence[str] | None = None,
        preexec: object = None,
        passFDs: Sequence[int] = (),
        reactorArgs: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
    ) -> None:
        if runner is None:
            argv = [
                command("twistd"),
                "-n",
                "--pidfile=",
                *reactorArgs,
                "echo",
                *echoArgs,
            ]
        else:
            argv = [*runner, *echoArgs]
        self.argv = argv
        self.lines: list[str] = []
        self._changed = threading.Condition()

        def setup() -> None:
            _defaultSignals()
            if callable(preexec):
                preexec()

        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=setup,
            pass_fds=passFDs,
            # env adds to this process's environment; None removes a name.
            env=None
            if env is None
            else {
                name: value
                for name, value in {**os.environ, **env}.items()
                if value is not None
            },
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def waitFor(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """
        Wait until a line of output matches C{pattern}; fail at C{timeout}
        or when the process ends first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(
                        f"no line matching {pattern!r} within {timeout}s;"
                        f" output so far:\n{self.output_locked()}"
                    )
                self._changed.wait(left)

    def waitForCount(self, pattern: str, count: int, timeout: float = WAIT) -> None:
        """
        Wait until C{count} lines of output match C{pattern}; fail at
        C{timeout} or when the process ends first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = found = 0
        with self._changed:
            while True:
                found += sum(1 for line in self.lines[seen:] if regex.search(line))
                seen = len(self.lines)
                if found >= count:
                    return
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(
                        f"{found} of {count} lines matching {pattern!r} within"
                        f" {timeout}s; output so far:\n{self.output_locked()}"
                    )
                self._changed.wait(left)

    def output_locked(self) -> str:
        return "\n".join(self.lines)

    def listening(self, timeout: float = WAIT) -> list[int]:
        """
        The TCP ports of every listener, once all have logged that they
        are listening.
        """
        self.waitFor(r"Listening on ", timeout)
        return [
            int(m.group(1))
            for m in re.finditer(r"Listening on \S+:(\d+) \(", self.output)
        ]

    @property
    def port(self) -> int:
        return self.listening()[0]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        returncode = self.process.wait(timeout)
        self._reader.join(timeout)
        return returncode

    def rss(self) -> int:
        """
        Resident memory of the server process, in bytes.
        """
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)
        self._reader.join(WAIT)


class ServerTestCase(SynchronousTestCase):
    """
    Tests that run servers in a scratch directory, and always stop them.

    @cvar reactorArgs: twistd's options before C{echo} when the test names
        no runner: none, as users type it (echotwist's reactor serves).
    """

    reactorArgs: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="echotwist-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def start(self, *echoArgs: str, **kwargs: object) -> Server:
        if not echoArgs and "runner" not in kwargs:
            echoArgs = ("--port", f"tcp:0:interface={LOOPBACK}")
        kwargs.setdefault("reactorArgs", self.reactorArgs)
        server = Server(echoArgs, cwd=self.directory, **kwargs)  # type: ignore[arg-type]
        self.addCleanup(server.kill)
        return server

    def failedStart(self, *echoArgs: str, **kwargs: object) -> str:
        """
        Run a server that must refuse to start; its output.
        """
        server = self.start(*echoArgs, **kwargs)
        self.assertEqual(server.wait(), 1, server.output)
        self.assertNotIn("Traceback", server.output)
        return server.output


#: The start log line naming each reactor (see EchoService.startService).
SERVING_ON_ECHOTWIST = (
    r"Serving on the echotwist\.reactor\.EchotwistEPollReactor reactor"
)
SERVING_ON_EPOLL = (
    r"Serving on the twisted\.internet\.epollreactor\.EPollReactor reactor"
)


class TwistedReactorMixin:
    """
    Mixed into a L{ServerTestCase}: its servers run on Twisted's epoll
    reactor, named as a user names it (C{twistd --reactor epoll}), and each
    test checks that this reactor is the one serving.  So the tests that
    run as typed (on echotwist's reactor) also cover Twisted's own path.
    """

    reactorArgs = ("--reactor", "epoll")

    def start(self, *echoArgs: str, **kwargs: object) -> Server:
        server: Server = super().start(*echoArgs, **kwargs)  # type: ignore[misc]
        if "runner" not in kwargs:
            server.waitFor(SERVING_ON_EPOLL)
        return server


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
