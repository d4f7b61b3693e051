# -*- test-case-name: tests.test_process -*-
"""
What the C{twistd echo} process needs besides its service, which a library
must not do to its host: the reactor it serves on, start-up errors in one
line, twistd's pidfile and log file checked before it writes them and its
log checked to go somewhere, a Python stack on a segfault, its exit status
as PID 1, a usage error's exit status on an older twistd, and a daemon's
report of a failed start to the foreground.
"""

from __future__ import annotations

import errno
import faulthandler
import os
import re
import select
import socket
import stat
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from twisted.application.service import IService, MultiService

from echotwist._address import escape
from echotwist._files import whyCannotChangeTo, whyCannotCreateIn, whyCannotWrite
from echotwist._twisted import FOREGROUND_REPORT, handReactorToTwist, reportFailedStart
from echotwist.listening import CannotListen

__all__ = [
    "JSON_OBSERVER",
    "ReportsToForeground",
    "checkLogDestination",
    "checkRunnerFiles",
    "installDefaultReactor",
    "prepareProcess",
    "reactorName",
    "twistdLeavesStatus0",
    "watchExitStatus",
]


def installDefaultReactor(
    parent: MutableMapping[str, Any] | None = None,
    modules: Mapping[str, object] = sys.modules,
    install: Callable[[], object] | None = None,
) -> bool:
    """
    Install echotwist's reactor (L{echotwist.reactor}) as the one to serve
    on, unless a reactor is installed already: the user named one
    (C{twistd --reactor NAME} and C{twist --reactor NAME} install it while
    parsing their own options, before this runs), or a C{.tac} or program
    chose one.  Only where epoll exists; elsewhere Twisted's default stays.

    Under C{twist}, the reactor is handed to C{twist}'s own options
    (C{parent}), which otherwise install their default one after this and
    fail because one is installed.

    Must run before anything imports C{twisted.internet.reactor}, which
    installs the default: so before the listeners are parsed.

    @param parent: the options this is a sub-command of (C{twistd}'s or
        C{twist}'s), or None.
    @param modules: where to look for an installed reactor (for tests).
    @param install: installs echotwist's reactor and returns it (for tests).
    @return: whether it installed echotwist's reactor.
    """
    if "twisted.internet.reactor" in modules or not hasattr(select, "epoll"):
        return False
    if install is None:
        from echotwist.reactor import install as installEchotwist

        install = installEchotwist
    handReactorToTwist(parent, install(), "echotwist")
    return True


def twistdLeavesStatus0(parent: object) -> bool:
    """
    Whether C{parent} is a twistd that would print a usage error and exit
    with status 0: twistd's C{app.run} exits with status 1 only from
    Twisted 26 on.  (twist exits with EX_USAGE on any version.)
    """
    import twisted
    from twisted.application.app import ServerOptions

    major = twisted.version.major  # type: ignore[attr-defined]
    return isinstance(parent, ServerOptions) and isinstance(major, int) and major < 26


#: What to do instead, for the files twistd writes unless told otherwise.
_DEFAULT_FILES = [
    (
        "--pidfile",
        "twistd.pid",
        "twistd's default: --pidfile=PATH for another, --pidfile= for none",
    ),
    (
        "--logfile",
        "twistd.log",
        "twistd's default when it daemonizes: --logfile=PATH for another,"
        " -n for standard output",
    ),
]


def checkRunnerFiles(runner: Mapping[str, Any] | None) -> None:
    """
    End start-up with one line, exit status 1, if twistd could not write its
    pidfile (C{--pidfile}, C{twistd.pid} unless given) or its log file
    (C{--logfile}, C{twistd.log} when it daemonizes without one): twistd
    opens them after the service is made, and a failure there is a
    traceback.  As the user twistd runs as; it opens both before any
    C{--uid} takes effect.  Not under C{twist} (which has no pidfile and
    reports its own C{--log-file} in one line), nor for a log file a
    C{--logger} or C{--syslog} replaces.

    A C{--rundir} that is not a directory, or not this user's to enter, is
    named too: twistd changes to it after the service is made, and that
    was a traceback.  (The paths
    are the directory twistd was started in's: twistd makes the pidfile's
    absolute before it changes directory, and opens its log file before
    that.)

    Under C{--chroot} only the log file is checked: twistd opens it before
    it changes root, but writes the pidfile and changes to C{--rundir}
    after, at paths that are the chroot's.

    @param runner: twistd's or twist's options, or None.
    @raise SystemExit: naming the option, the path and what is wrong.
    """
    if runner is None or "pidfile" not in runner:
        return
    chroot = runner.get("chroot")
    rundir = os.path.abspath(runner.get("rundir") or ".")
    wrong = None if chroot else whyCannotChangeTo(rundir)
    if wrong is not None:
        raise SystemExit(
            escape(f"echotwist: --rundir: cannot change to {rundir}: {wrong}")
        )
    wanted = []
    if runner["pidfile"] and not chroot:
        wanted.append(("--pidfile", runner["pidfile"]))
    logfile = runner.get("logfile")
    if not (runner.get("logger") or runner.get("syslog") or logfile == "-"):
        if logfile:
            wanted.append(("--logfile", logfile))
        elif not runner.get("nodaemon"):
            wanted.append(("--logfile", "twistd.log"))
    for option, path in wanted:
        path = os.path.abspath(path)
        # twistd reads a pidfile that is there (for a running process's
        # pid), and its LogFile opens a log file that is there to read and
        # write.
        why = whyCannotWrite(path, alsoRead=True)
        if why is None or (option == "--pidfile" and _replacedAsStale(path)):
            continue
        for defaultOption, default, hint in _DEFAULT_FILES:
            if option == defaultOption and path == os.path.abspath(default):
                why = f"{why} ({hint})"
        # Escaped: the path is the user's, but a terminal need not show its
        # control characters raw.
        raise SystemExit(escape(f"echotwist: {option}: cannot write {path}: {why}"))


def _replacedAsStale(pidfile: str) -> bool:
    """
    Whether twistd would remove C{pidfile} as stale and write a new one in
    its place, as its C{checkPID} does before anything starts: it names no
    running process, and this user may remove it and create a file in its
    directory.  Then a pidfile this user may not write (left by root, say)
    is no reason to refuse.
    """
    try:
        with open(pidfile) as f:
            pid = int(f.read())
        os.kill(pid, 0)
    except ProcessLookupError:
        pass  # stale
    except (OSError, ValueError):
        return False  # unreadable, not a pid, or another user's live process
    else:
        return False  # a running process: twistd refuses to start beside it
    directory = os.path.dirname(pidfile)
    if whyCannotCreateIn(directory) is not None:
        return False
    owners = (os.stat(directory).st_uid, os.lstat(pidfile).st_uid)
    # In a sticky directory (/tmp) only the file's or the directory's owner
    # may remove a file.
    sticky = os.stat(directory).st_mode & stat.S_ISVTX
    return not sticky or os.geteuid() in (0, *owners)


#: The observer twistd's C{--logger} names for echotwist's JSON lines.
JSON_OBSERVER = "echotwist.logs.jsonObserver"


def checkLogDestination(
    runner: Mapping[str, Any] | None, devLog: str = "/dev/log"
) -> None:
    """
    End start-up with one line, exit status 1, where twistd's log would go
    nowhere, without a word:

      - through echotwist's JSON observer (C{--logger} L{JSON_OBSERVER}),
        which writes to standard output, daemonizing (twistd points standard
        output at /dev/null) or with C{--logfile} (which twistd ignores
        once C{--logger} is given);
      - to syslog (C{--syslog}, unless a C{--logger} replaces it) on a
        Linux host where nothing listens at C{devLog}, as in most
        containers: the C library drops each line.

    @param runner: twistd's or twist's options, or None.
    @param devLog: where the C library sends syslog lines on Linux.
    @raise SystemExit: saying what to do instead.
    """
    if runner is None or "pidfile" not in runner:
        return  # not twistd: twist has --log-format json, and no syslog
    from echotwist.logs import jsonObserver

    # A name until twistd's own postOptions, after ours, imports it.
    if runner.get("logger") in (JSON_OBSERVER, jsonObserver):
        logfile = runner.get("logfile")
        if logfile and logfile != "-":
            raise SystemExit(
                f"echotwist: --logger {JSON_OBSERVER} writes to standard output,"
                " and twistd ignores --logfile with --logger: drop --logfile and"
                " redirect standard output (with -n)"
            )
        if not (runner.get("nodaemon") or runner.get("debug")):
            raise SystemExit(
                f"echotwist: --logger {JSON_OBSERVER} writes to standard output,"
                " which a daemonizing twistd points at /dev/null: add -n"
            )
    elif (
        runner.get("syslog")
        # twistd logs to a --logger's observer, and ignores --syslog then.
        and not runner.get("logger")
        and sys.platform.startswith("linux")
    ):
        if not _takesLines(devLog):
            raise SystemExit(
                f"echotwist: --syslog: no syslog daemon listens at {devLog} here,"
                " and every line would be lost; log to a file (--logfile) or"
                " to standard output (-n)"
            )


def _takesLines(path: str) -> bool:
    """
    Whether a syslog daemon takes lines at C{path}: a socket that accepts
    a connection as syslog(3) makes one, a datagram one, or a stream one
    where the daemon listens on a stream socket (syslog-ng can).  A socket
    file left by a daemon that has gone takes none.
    """
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        try:
            # socket() fails too where UNIX sockets are not allowed
            # (systemd's RestrictAddressFamilies=), as syslog(3) would.
            with socket.socket(socket.AF_UNIX, kind) as probe:
                # A stream daemon whose backlog is full would hold a
                # blocking connect (the start would hang); without
                # blocking, the connect says EAGAIN: a daemon that is
                # there, only busy.
                probe.setblocking(False)
                probe.connect(path)
        except BlockingIOError:
            return True
        except OSError as e:
            if e.errno == errno.EPROTOTYPE:
                continue  # the other kind, as syslog(3) tries it
            return False
        return True
    return False


def reactorName() -> str | None:
    """
    The short name of the installed reactor, for the workers to install.
    """
    from twisted.application.reactors import getReactorTypes
    from twisted.internet import reactor

    module = type(reactor).__module__
    for installer in getReactorTypes():
        if getattr(installer, "moduleName", None) == module:
            return str(installer.shortName)
    return None


def _oneLineHook(previous: Callable[..., object]) -> Callable[..., object]:
    def hook(kind: type[BaseException], value: BaseException, tb: object) -> None:
        if isinstance(value, CannotListen):
            print(value, file=sys.stderr)
        else:
            previous(kind, value, tb)

    hook.echotwist = True  # type: ignore[attr-defined]
    return hook


def prepareProcess() -> None:
    """
    What the process running C{twistd echo} gets, which a library must not
    do to its host: a listener that cannot listen ends start-up with one
    line, not a traceback, and a real segfault leaves a Python stack.
    """
    if not getattr(sys.excepthook, "echotwist", False):
        sys.excepthook = _oneLineHook(sys.excepthook)
    # No Python code can clean up after a real segfault; the most it can do
    # is say where it happened.  twistd replaces sys.stderr with a log file
    # object, hence the original.
    if sys.__stderr__ is not None and not faulthandler.is_enabled():
        faulthandler.enable(sys.__stderr__, all_threads=True)
    # Once the reactor runs, its own handlers are there to wrap.
    from twisted.internet.interfaces import IReactorCore

    from echotwist._twisted import orGlobalReactor

    reactor: IReactorCore | None = None
    orGlobalReactor(reactor).callWhenRunning(watchExitStatus)


def watchExitStatus(getpid: Callable[[], int] = os.getpid) -> bool:
    """
    As PID 1 (a container without C{--init}), where the signal twistd
    re-sends itself after the drain cannot kill it, have the process end
    with 128 + its number all the same (L{echotwist.exitstatus}).  Called
    once the reactor runs, after twistd has daemonized if it does: a
    process's id does not change while it runs, so anywhere else there is
    nothing to watch, and L{echotwist.exitstatus} is not even imported
    (docs/performance.rst).

    @param getpid: this process's id (for tests).
    @return: whether it watches.
    """
    if getpid() != 1:
        return False
    from echotwist.exitstatus import ExitStatus

    ExitStatus(getpid=getpid).watch()
    return True


def _briefly(message: str, limit: int = FOREGROUND_REPORT) -> str:
    """
    C{message} in at most C{limit} ASCII bytes: its parenthesis dropped if
    that is enough, else cut after a whole word, with an ellipsis.
    """
    message = message.encode("ascii", "backslashreplace").decode("ascii")
    message = message.removeprefix("echotwist: ")
    if len(message) > limit:
        message = re.sub(r" \([^()]*\)$", "", message)
    if len(message) > limit:
        message = message[: limit - 3].rsplit(" ", 1)[0] + "..."
    return message


class ReportsToForeground(MultiService):
    """
    Under a daemonizing twistd, the service it runs: a listener that cannot
    listen is told to the process waiting in the foreground in words that
    fit what it reads, not as twistd's cut traceback line
    (C{echotwist.listening.CannotListen: echotwist: cannot listen on
    tcp:5000: Addre}).  The whole line is in the log file.

    @param runner: twistd's options, where it keeps the pipe to the
        foreground once it has daemonized (see
        L{echotwist._twisted.reportFailedStart}).
    """

    def __init__(self, service: IService, runner: MutableMapping[str, Any]) -> None:
        super().__init__()
        self._runner = runner
        service.setServiceParent(self)

    def _report(self, start: Callable[[], object]) -> None:
        try:
            start()
        except CannotListen as e:
            reportFailedStart(self._runner, _briefly(str(e)).encode("ascii"))
            raise

    def privilegedStartService(self) -> None:
        """
        Start listening (the privileged part), reporting a listener that
        cannot listen.
        """
        self._report(super().privilegedStartService)

    def startService(self) -> None:
        """
        Start the service, reporting a listener that cannot listen.
        """
        self._report(super().startService)
