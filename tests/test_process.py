"""
The process around C{twistd echo}'s service (L{echotwist.process}): the
reactor it serves on, the files twistd will write.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.logs import jsonObserver
from echotwist.process import (
    JSON_OBSERVER,
    _replacedAsStale,
    checkLogDestination,
    checkRunnerFiles,
    installDefaultReactor,
    watchExitStatus,
)


class DefaultReactorTests(SynchronousTestCase):
    """
    What the tap installs when the user names no reactor.  (The real
    thing, under twistd, twist and workers, is in tests.system.test_reactor.)
    """

    def setUp(self) -> None:
        self.installed: list[object] = []

    def install(self) -> object:
        reactor = object()
        self.installed.append(reactor)
        return reactor

    def test_installsWhenNoneIsInstalled(self) -> None:
        self.assertTrue(installDefaultReactor(None, {}, self.install))
        self.assertEqual(len(self.installed), 1)

    def test_namedReactorWins(self) -> None:
        """
        twistd --reactor NAME and twist --reactor NAME have installed theirs
        before the tap's options are parsed: it is left alone.
        """
        modules = {"twisted.internet.reactor": object()}
        parent = {
            "reactorName": "epoll",
            "reactor": modules["twisted.internet.reactor"],
        }
        self.assertFalse(installDefaultReactor(parent, modules, self.install))
        self.assertEqual(self.installed, [])
        self.assertEqual(parent["reactorName"], "epoll")

    def test_handedToTwist(self) -> None:
        """
        twist's options (which have a reactorName and, until they install
        one, no reactor) get the reactor installed, so they run it rather
        than install their default over it.
        """
        parent: dict[str, object] = {"reactorName": "default"}
        self.assertTrue(installDefaultReactor(parent, {}, self.install))
        self.assertEqual(
            parent, {"reactorName": "echotwist", "reactor": self.installed[0]}
        )

    def test_twistdOptionsUntouched(self) -> None:
        parent: dict[str, object] = {"nodaemon": True}
        self.assertTrue(installDefaultReactor(parent, {}, self.install))
        self.assertEqual(parent, {"nodaemon": True})

    def test_onlyWithEpoll(self) -> None:
        import select

        self.patch(select, "epoll", None)
        del select.epoll  # type: ignore[attr-defined]
        self.assertFalse(installDefaultReactor(None, {}, self.install))
        self.assertEqual(self.installed, [])


class WatchExitStatusTests(SynchronousTestCase):
    """
    L{watchExitStatus} watches the stopping signals as PID 1 only.  (As
    PID 1 for real, in a PID namespace: tests.system.test_exitstatus.)
    """

    def test_notPidOne(self) -> None:
        """
        Anywhere but PID 1 the signal twistd re-sends itself kills the
        process: the reactor's handlers are left as they are.
        """

        def handler(signum: int, frame: object) -> None:
            pass

        for signum in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
            signal.signal(signum, handler)
        self.assertFalse(watchExitStatus(lambda: 4242))
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.assertIs(signal.getsignal(signum), handler)


class CheckRunnerFilesTests(SynchronousTestCase):
    """
    Which of twistd's files L{checkRunnerFiles} looks at, from twistd's
    options as parsed.  (Unwritable and read-only paths given to the real
    twistd are in tests.system.test_integration.RefusalTests.)
    """

    def setUp(self) -> None:
        self.missing = os.path.abspath(self.mktemp())

    def runner(self, **options: object) -> dict[str, object]:
        """
        twistd's options, with a writable pidfile and no log file (C{-n}),
        then C{options}.
        """
        return {
            "pidfile": os.path.abspath(self.mktemp()),
            "logfile": None,
            "nodaemon": True,
            **options,
        }

    def refusal(self, runner: dict[str, object]) -> str:
        with self.assertRaises(SystemExit) as e:
            checkRunnerFiles(runner)
        return str(e.exception.code)

    def test_writable(self) -> None:
        checkRunnerFiles(self.runner())

    def test_pidfile(self) -> None:
        path = os.path.join(self.missing, "p.pid")
        self.assertEqual(
            self.refusal(self.runner(pidfile=path)),
            f"echotwist: --pidfile: cannot write {path}: its directory"
            f" {self.missing} does not exist",
        )

    def test_noPidfile(self) -> None:
        checkRunnerFiles(self.runner(pidfile=""))

    def test_rundirMissing(self) -> None:
        """
        A C{--rundir} that does not exist, or is a file, is named in one
        line: twistd's C{chdir} there was a traceback.
        """
        self.assertEqual(
            self.refusal(self.runner(rundir=self.missing)),
            f"echotwist: --rundir: cannot change to {self.missing}: it does not exist",
        )
        with open(self.missing, "w"):
            pass
        self.assertEqual(
            self.refusal(self.runner(rundir=self.missing)),
            f"echotwist: --rundir: cannot change to {self.missing}: it is not a"
            " directory",
        )

    def test_rundirGiven(self) -> None:
        """
        A C{--rundir} that is a directory is taken; the pidfile is checked
        where twistd started, which twistd makes its path relative to.
        """
        rundir = os.path.abspath(self.mktemp())
        os.makedirs(rundir)
        checkRunnerFiles(self.runner(rundir=rundir))

    def test_logfile(self) -> None:
        path = os.path.join(self.missing, "echo.log")
        self.assertIn(
            "echotwist: --logfile: cannot write",
            self.refusal(self.runner(logfile=path)),
        )

    def test_daemonDefaultLogfile(self) -> None:
        """
        Daemonizing without C{--logfile}, twistd writes C{twistd.log} in its
        directory; with C{-n}, standard output.
        """
        os.mkdir(self.missing)
        os.mkdir(os.path.join(self.missing, "twistd.log"))
        cwd = os.getcwd()
        os.chdir(self.missing)
        self.addCleanup(os.chdir, cwd)
        self.assertIn(
            "twistd.log: it is a directory (twistd's default when it daemonizes",
            self.refusal(self.runner(nodaemon=False)),
        )
        checkRunnerFiles(self.runner())

    def test_logfileReplaced(self) -> None:
        """
        Standard output, C{--syslog} or a C{--logger}: no log file of
        twistd's to check.
        """
        path = os.path.join(self.missing, "echo.log")
        for replaced in (
            {"logfile": "-"},
            {"syslog": True, "logfile": path},
            {"logger": "x.y", "logfile": path},
        ):
            checkRunnerFiles(self.runner(nodaemon=False, **replaced))

    def test_chroot(self) -> None:
        """
        Under C{--chroot} the pidfile and C{--rundir} are the chroot's: not
        checked here.  The log file is checked: twistd opens it before it
        changes root (it was a FileNotFoundError traceback).
        """
        path = os.path.join(self.missing, "p.pid")
        checkRunnerFiles(
            self.runner(pidfile=path, rundir="/var/echo", chroot="/srv/jail")
        )
        logfile = os.path.join(self.missing, "echo.log")
        self.assertEqual(
            self.refusal(self.runner(logfile=logfile, chroot="/srv/jail")),
            f"echotwist: --logfile: cannot write {logfile}: its directory"
            f" {self.missing} does not exist",
        )

    def test_notTwistd(self) -> None:
        """
        twist's options have no pidfile, and twist reports its own log
        file; without a parent, nothing to look at.
        """
        checkRunnerFiles({"logFile": None})
        checkRunnerFiles(None)

    def test_escaped(self) -> None:
        path = os.path.join(self.missing, "a\x1b[2J.pid")
        self.assertIn("a\\x1b[2J.pid", self.refusal(self.runner(pidfile=path)))


class ReplacedAsStaleTests(SynchronousTestCase):
    """
    L{_replacedAsStale}: whether twistd removes a pidfile as stale and
    writes its own.  (Refused or not by the real twistd:
    tests.system.test_integration.RefusalTests.test_stalePidfileNotOurs.)
    """

    def pidfile(self, text: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        path = os.path.join(directory, "echo.pid")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_stale(self) -> None:
        with open("/proc/sys/kernel/pid_max") as f:
            self.assertTrue(_replacedAsStale(self.pidfile(str(int(f.read()) + 1))))

    def test_notStale(self) -> None:
        """
        A running process's pid, or no pid at all: twistd does not remove
        it.
        """
        self.assertFalse(_replacedAsStale(self.pidfile(str(os.getpid()))))
        self.assertFalse(_replacedAsStale(self.pidfile("x")))

    def test_stickyDirectory(self) -> None:
        """
        In a sticky directory (/tmp) a file only its owner or the
        directory's may remove stays, and twistd's removal would fail.
        """
        if os.geteuid() != 0:
            raise SkipTest("giving the files to another user takes root")
        with open("/proc/sys/kernel/pid_max") as f:
            path = self.pidfile(str(int(f.read()) + 1))
        directory = os.path.dirname(path)
        os.chmod(directory, 0o1777)
        os.chown(directory, 1, 1)
        os.chown(path, 2, 2)
        self.patch(os, "geteuid", lambda: 3)
        self.assertFalse(_replacedAsStale(path))
        self.patch(os, "geteuid", lambda: 2)
        self.assertTrue(_replacedAsStale(path))


class CheckLogDestinationTests(SynchronousTestCase):
    """
    L{checkLogDestination} refuses only where twistd's log would go to
    nowhere: echotwist's JSON observer daemonizing or beside C{--logfile},
    C{--syslog} with no syslog socket.  (The real twistd:
    tests.system.test_integration.)
    """

    def runner(self, **options: object) -> dict[str, object]:
        return {
            "pidfile": "",
            "logfile": None,
            "nodaemon": True,
            "logger": JSON_OBSERVER,
            **options,
        }

    def refusal(self, runner: dict[str, object]) -> str:
        with self.assertRaises(SystemExit) as e:
            checkLogDestination(runner)
        return str(e.exception.code)

    def test_toStandardOutput(self) -> None:
        checkLogDestination(self.runner())
        checkLogDestination(self.runner(logfile="-"))
        checkLogDestination(self.runner(logger=jsonObserver))
        # -b runs in the foreground whatever -n says.
        checkLogDestination(self.runner(nodaemon=False, debug=True))

    def test_daemonizing(self) -> None:
        for logger in (JSON_OBSERVER, jsonObserver):
            self.assertIn(
                "which a daemonizing twistd points at /dev/null: add -n",
                self.refusal(self.runner(nodaemon=False, logger=logger)),
            )

    def test_logfileIgnored(self) -> None:
        self.assertIn(
            "twistd ignores --logfile with --logger",
            self.refusal(self.runner(logfile="/var/log/echo.log")),
        )

    def test_otherLoggers(self) -> None:
        checkLogDestination(self.runner(logger=None, nodaemon=False))
        checkLogDestination(self.runner(logger="my.observer", logfile="x.log"))

    def test_notTwistd(self) -> None:
        checkLogDestination({"logFile": None, "logger": JSON_OBSERVER})
        checkLogDestination(None)

    def test_syslogWithoutADaemon(self) -> None:
        """
        C{--syslog} where nothing listens at /dev/log (a container, say):
        the C library drops every line without a word.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("where syslog(3) sends its lines is Linux's /dev/log")
        missing = os.path.abspath(self.mktemp())
        runner = self.runner(logger=None, syslog=True, nodaemon=False)
        with self.assertRaises(SystemExit) as e:
            checkLogDestination(runner, devLog=missing)
        self.assertEqual(
            e.exception.code,
            f"echotwist: --syslog: no syslog daemon listens at {missing} here,"
            " and every line would be lost; log to a file (--logfile) or to"
            " standard output (-n)",
        )
        # A plain file is not a syslog daemon either.
        with open(missing, "w"):
            pass
        self.assertRaises(SystemExit, checkLogDestination, runner, devLog=missing)

    def test_syslogBesideALogger(self) -> None:
        """
        twistd logs to a C{--logger}'s observer and ignores C{--syslog}
        beside it: no syslog daemon is needed then.
        """
        missing = os.path.abspath(self.mktemp())
        checkLogDestination(
            self.runner(logger="my.observer", syslog=True, nodaemon=False),
            devLog=missing,
        )

    def test_syslogDaemonGone(self) -> None:
        """
        A socket file left at /dev/log by a syslog daemon that has gone
        takes no line: it was taken for a daemon, being a socket.
        """
        directory = tempfile.mkdtemp(prefix="echotwist-")
        self.addCleanup(shutil.rmtree, directory, True)
        left = os.path.join(directory, "log")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(left)
        self.assertRaises(
            SystemExit,
            checkLogDestination,
            self.runner(logger=None, syslog=True, nodaemon=False),
            devLog=left,
        )

    def test_syslogDaemonOnAStreamSocket(self) -> None:
        """
        A daemon listening on a stream socket (syslog-ng can) takes lines:
        syslog(3) connects with a stream socket there.
        """
        directory = tempfile.mkdtemp(prefix="echotwist-")
        self.addCleanup(shutil.rmtree, directory, True)
        listening = os.path.join(directory, "log")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(listening)
            s.listen(1)
            checkLogDestination(
                self.runner(logger=None, syslog=True, nodaemon=False),
                devLog=listening,
            )

    def test_syslogDaemonBusy(self) -> None:
        """
        A stream daemon whose backlog is full holds a blocking connect: the
        check does not block, and takes the daemon for there (it is, only
        busy) rather than hang the start.
        """
        directory = tempfile.mkdtemp(prefix="echotwist-")
        self.addCleanup(shutil.rmtree, directory, True)
        listening = os.path.join(directory, "log")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(listening)
            s.listen(0)
            waiting = []
            self.addCleanup(lambda: [c.close() for c in waiting])
            # Fill the backlog: connects that are not accepted, until one
            # would block.
            for _ in range(64):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.setblocking(False)
                waiting.append(c)
                try:
                    c.connect(listening)
                except BlockingIOError:
                    break
            else:
                self.fail("the backlog never filled")
            checkLogDestination(
                self.runner(logger=None, syslog=True, nodaemon=False),
                devLog=listening,
            )

    def test_syslogWithoutUnixSockets(self) -> None:
        """
        Where this process may not make a UNIX socket (systemd's
        C{RestrictAddressFamilies=}), syslog(3) cannot either: refused in
        one line, not a traceback from the check's own socket.
        """

        def refused(*args: object) -> object:
            raise PermissionError(1, "Operation not permitted")

        self.patch(socket, "socket", refused)
        self.assertRaises(
            SystemExit,
            checkLogDestination,
            self.runner(logger=None, syslog=True, nodaemon=False),
            devLog="/dev/log",
        )

    def test_syslogWithADaemon(self) -> None:
        # A short path: a UNIX socket's must fit in 108 bytes.
        directory = tempfile.mkdtemp(prefix="echotwist-")
        self.addCleanup(shutil.rmtree, directory, True)
        listening = os.path.join(directory, "log")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(listening)
            checkLogDestination(
                self.runner(logger=None, syslog=True, nodaemon=False),
                devLog=listening,
            )
