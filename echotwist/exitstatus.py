# -*- test-case-name: tests.test_exitstatus -*-
"""
The exit status after SIGTERM or SIGINT, the same as PID 1 as anywhere else.

twistd and twist stop on SIGTERM (SIGINT), run the shutdown (the drain),
then send themselves the signal again with its default action so that the
process dies by it and its parent sees 143 (130).  A process that is the
init of a PID namespace (a container without C{--init}, C{unshare --pid})
is not killed by a signal it has no handler for: the kernel drops it
(pid_namespaces(7)), twistd returns, and the process exits with status 0,
which an orchestrator reads as "ended by itself", not "stopped".

So, as PID 1 only, the signal that stopped the reactor is noted when it
arrives, and the process ends with 128 + its number once twistd (or
twist) has returned, from an C{atexit} handler.  Anywhere else nothing
changes: the re-sent signal kills the process as Twisted means it to.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["ExitStatus", "STOP_SIGNALS"]

#: The signals on which twistd and twist drain and stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitStatus:
    """
    Notes the signal that stopped the server; as PID 1, exits with
    128 + its number at the end.

    @ivar signum: the signal that arrived first, or None.
    """

    def __init__(
        self,
        getpid: Callable[[], int] = os.getpid,
        exit: Callable[[int], object] = os._exit,
        register: Callable[[Callable[[], None]], object] = atexit.register,
    ) -> None:
        """
        @param getpid: this process's id (for tests).
        @param exit: ends the process at once with a status (for tests).
        @param register: runs a function when the interpreter exits (for
            tests).
        """
        self.signum: int | None = None
        self._getpid = getpid
        self._exit = exit
        self._register = register
        self._registered = False

    def watch(self) -> None:
        """
        Note SIGTERM and SIGINT before the reactor's own handlers (installed
        by the time it runs) see them.  A signal left at its default or
        ignored is not the reactor's: it is left alone.
        """
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if callable(previous):
                signal.signal(signum, self._noting(previous))
        if not self._registered:
            self._registered = True
            self._register(self.finish)

    def _noting(self, previous: Callable[..., Any]) -> Callable[..., Any]:
        def handler(signum: int, frame: Any) -> Any:
            if self.signum is None:
                self.signum = signum
            return previous(signum, frame)

        return handler

    def finish(self) -> None:
        """
        As PID 1, stopped by a signal: flush what is written and end the
        process with 128 + the signal's number.  Otherwise nothing.

        It runs after the exit handlers registered later than it (during
        the run) and ends the process before those registered earlier (at
        import): nothing of echotwist's or twistd's is among them.
        """
        if self.signum is None or self._getpid() != 1:
            return
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass  # closed, or a broken pipe: nothing more to say there
        self._exit(128 + self.signum)
