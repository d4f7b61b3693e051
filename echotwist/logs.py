# -*- test-case-name: tests.test_logs -*-
"""
Log observers for C{twistd --logger}, and the log file SIGHUP reopens.

C{twistd --logger echotwist.logs.jsonObserver -n echo} writes every event
as one JSON object a line (JSON lines: no record separator, so C{jq},
C{json.loads} line by line and log shippers read it as it is), with
echotwist's C{event} names and fields intact.  C{twist --log-format json
echo} writes the same events in Twisted's own JSON format, an RFC 7464 JSON
text sequence (an ASCII record separator before each record: C{jq --seq}).
"""

from __future__ import annotations

import gc
import os
import stat
import sys
from typing import IO, Any, Protocol

from twisted.logger import ILogObserver, Logger, jsonFileLogObserver
from twisted.python.logfile import BaseLogFile, LogFile

__all__ = ["LogFiles", "jsonLinesObserver", "jsonObserver"]

# The SIGHUP lines keep the namespace they had in echotwist.service:
# operators filter on it.
log = Logger(namespace="echotwist.service")


def jsonObserver() -> ILogObserver:
    """
    A log observer writing one JSON object a line to standard output.
    """
    # twistd calls this before it points sys.stdout at the log itself.
    stream = sys.__stdout__
    assert stream is not None
    return jsonLinesObserver(stream)


def jsonLinesObserver(stream: IO[Any]) -> ILogObserver:
    """
    A log observer writing each event to C{stream} as one JSON object on a
    line of its own.  Twisted's default for L{jsonFileLogObserver} puts an
    ASCII record separator (C{\\x1e}) before each record (RFC 7464), which
    line-oriented readers (C{jq} without C{--seq}, Vector, Fluent Bit,
    promtail) take for part of the JSON and refuse.
    """
    return jsonFileLogObserver(stream, recordSeparator="")


class _Reopenable(Protocol):
    path: str

    def reopen(self) -> None: ...


def _modeOf(path: str) -> int:
    """
    The permission bits of the file at C{path}, or 0644 if it cannot be
    read.
    """
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o644


def _openKeepingMode(path: str, mode: int) -> int:
    """
    Open C{path} to append, creating it with C{mode} if it is not there.

    The mode is set after the file is created: a daemonised twistd runs
    under umask 077, which would make the new log 0600 where the one
    logrotate moved away was, say, 0644.  A file someone else created
    there first (logrotate's C{create}) keeps its own.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return os.open(path, os.O_WRONLY | os.O_APPEND)
    os.fchmod(fd, mode)
    return fd


class _TwistdLog:
    """
    twistd's C{--logfile}: a L{LogFile}, which has the very method an
    external rotator needs.
    """

    def __init__(self, logFile: BaseLogFile) -> None:
        self._logFile = logFile
        self.path = logFile.path
        self._mode = _modeOf(self.path)
        if isinstance(logFile, LogFile):
            # twistd rotates at 1 MB into FILE.1, FILE.2 ... and deletes none
            # of them, so its rotation bounds nothing; with logrotate next to
            # it the two would fight over the numbered names.  One file at the
            # path, rotated by logrotate (SIGHUP) or on demand (SIGUSR1).
            logFile.rotateLength = 0

    def reopen(self) -> None:
        # LogFile.reopen closes the old file before it opens the new one: a
        # path that cannot be opened would leave no log at all.  Try first.
        os.close(_openKeepingMode(self.path, self._mode))
        self._logFile.reopen()


class _OpenedLog:
    """
    twist's C{--log-file}: a plain file object, which twist's observer
    keeps.  The path is opened anew onto the same descriptor, so whatever
    holds the object writes to the new file.
    """

    def __init__(self, file: IO[Any]) -> None:
        self._file = file
        self.path = os.path.abspath(file.name)
        self._mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)

    def reopen(self) -> None:
        self._file.flush()
        fresh = _openKeepingMode(self.path, self._mode)
        try:
            os.dup2(fresh, self._file.fileno())
        finally:
            os.close(fresh)


class LogFiles:
    """
    The log files this process writes, as the runner opened them, so that
    SIGHUP can reopen them at their paths after logrotate moved them.

    @param runnerFile: the file twist's C{--log-file} opened (its options'
        C{logFile}); standard output or error, or None, mean none.
    @param twistd: whether to look for twistd's C{--logfile} (also for a
        C{.tac}), which is found without being given.
    """

    def __init__(self, runnerFile: object = None, *, twistd: bool = True) -> None:
        self._runnerFile = runnerFile
        self._twistd = twistd
        self._files: list[_Reopenable] | None = None

    def _find(self) -> list[_Reopenable]:
        found: list[_Reopenable] = []
        runnerFile = self._runnerFile
        if (
            runnerFile is not None
            and runnerFile
            not in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
            and isinstance(getattr(runnerFile, "name", None), str)
            and hasattr(runnerFile, "fileno")
        ):
            found.append(_OpenedLog(runnerFile))  # type: ignore[arg-type]
        # twistd keeps its LogFile in a closure of its log observer and its
        # SIGUSR1 handler, with no public way to reach it: look it up among
        # live objects, once.
        if self._twistd:
            found.extend(
                _TwistdLog(thing)
                for thing in gc.get_objects()
                if isinstance(thing, BaseLogFile)
            )
        return found

    def start(self) -> None:
        """
        Find the log files, now that the runner has opened them.
        """
        if self._files is None:
            self._files = self._find()

    @property
    def paths(self) -> list[str]:
        """
        The paths of the log files, found first if they were not yet (see
        L{start}).
        """
        self.start()
        assert self._files is not None
        return [f.path for f in self._files]

    def reopen(self) -> list[tuple[str, OSError | None]]:
        """
        Reopen every log file at its path.  One that cannot be opened (its
        directory gone, no permission) stays open where it was.

        @return: each path, and why it could not be reopened (or None).
        """
        self.start()
        assert self._files is not None
        results: list[tuple[str, OSError | None]] = []
        for logFile in self._files:
            try:
                logFile.reopen()
            except OSError as e:
                results.append((logFile.path, e))
            else:
                results.append((logFile.path, None))
        return results

    def reopenLogged(self) -> None:
        """
        SIGHUP: L{reopen} every log file, and log it: a line into the old
        file saying where the log went, one into the new saying it was
        reopened (or an error, if it could not be).
        """
        if not self.paths:
            log.info(
                "SIGHUP: no log file to reopen (logging to standard output,"
                " syslog or an observer of its own)",
                event="log.reopened",
                path=None,
            )
            return
        for path in self.paths:
            # Into the old file: the last line there says where the log went.
            log.info(
                "SIGHUP: reopening the log file {path}",
                event="log.reopening",
                path=path,
            )
        for path, error in self.reopen():
            if error is None:
                log.info(
                    "SIGHUP: reopened the log file {path}",
                    event="log.reopened",
                    path=path,
                )
            else:
                log.error(
                    "SIGHUP: cannot reopen the log file {path} ({error});"
                    " still writing to the file it was",
                    event="log.reopen_failed",
                    path=path,
                    error=error.strerror or str(error),
                )
