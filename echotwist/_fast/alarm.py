# -*- test-case-name: tests.test__fast_alarm,tests.test__fast_reactor -*-
"""
A C{timerfd} the fast loop's polls wait on for the reactor's next timed
call, so that each poll itself waits with no timeout.

Why not the poll's timeout, as Twisted's epoll reactor does: an
C{epoll_wait} with a finite timeout arms a high-resolution timer in the
kernel every time it sleeps and cancels it when woken, and that costs
(measured in this project's VM, docs/performance.rst) about a microsecond
of kernel time per sleep, 3-5% of a 64-byte echo on a connection with one
message in flight, where every message is a sleep.  echotwist always has
a timed call pending (the idle sweep, every 10 s at most), so without this
every poll paid it.  A C{timerfd} is armed once for the next timed call,
and again only when an earlier one is scheduled: a system call per new
deadline instead of a timer per poll.

Python has C{os.timerfd_create} from 3.13; before that the C library's
calls are reached through C{ctypes}.  Where neither is there (not Linux,
or a sandbox that refuses C{timerfd_create}), L{makeAlarm} returns None and
the loop polls with timeouts as before.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
import weakref
from collections.abc import Callable
from errno import EMFILE, ENFILE, ENOMEM, ENOSPC
from functools import cache
from typing import Any

__all__ = ["Alarm", "SHORT_OF", "makeAlarm"]

#: What an alarm's deadline may be later than a newly wanted one without
#: arming it again: the reactor's timed calls may run that late (Twisted's
#: own poll rounds its timeout up to whole milliseconds).  It keeps one
#: deadline, computed again from the same timed call (a few microseconds
#: later each time), from arming the timer at every pass of the loop.
SLACK = 0.001

#: The longest an alarm is armed for: past it the alarm goes off early, the
#: main loop finds nothing due and arms it again (a timer of years would
#: overflow the kernel's nanoseconds).
LONGEST = 86400.0

#: The errors of making an alarm, or adding it to an epoll object, that
#: mean "not now" rather than "never": out of descriptors (a flood of
#: connections at the descriptor limit), of kernel memory, or of epoll
#: watches.  A later poll tries again.
SHORT_OF = frozenset({EMFILE, ENFILE, ENOMEM, ENOSPC})

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _TimeSpec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("interval", _TimeSpec), ("value", _TimeSpec)]


@cache
def _libcCalls() -> tuple[Callable[[], int], Callable[[int, int], None]] | None:
    """
    C{timerfd_create} and C{timerfd_settime} of the C library, through
    C{ctypes} (looked up once), or None where it has none.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    create.restype = ctypes.c_int
    settime.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_ITimerSpec),
        ctypes.c_void_p,
    ]
    settime.restype = ctypes.c_int

    def timerfdCreate() -> int:
        fd: int = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd

    def timerfdSet(fd: int, nanoseconds: int) -> None:
        spec = _ITimerSpec()
        spec.value.sec, spec.value.nsec = divmod(nanoseconds, 1_000_000_000)
        if settime(fd, 0, ctypes.byref(spec), None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return timerfdCreate, timerfdSet


def _osCalls() -> tuple[Callable[[], int], Callable[[int, int], None]] | None:
    """
    C{os.timerfd_create} and C{os.timerfd_settime_ns} (Python 3.13 and
    later, on Linux), or None.
    """
    create: Any = getattr(os, "timerfd_create", None)
    settime: Any = getattr(os, "timerfd_settime_ns", None)
    if create is None or settime is None:
        return None
    flags = os.TFD_NONBLOCK | os.TFD_CLOEXEC  # type: ignore[attr-defined, unused-ignore]

    def timerfdCreate() -> int:
        fd: int = create(time.CLOCK_MONOTONIC, flags=flags)
        return fd

    def timerfdSet(fd: int, nanoseconds: int) -> None:
        settime(fd, initial=nanoseconds)

    return timerfdCreate, timerfdSet


class Alarm:
    """
    A non-blocking C{timerfd} that becomes readable when the deadline it
    was last armed for has passed.

    @ivar fd: its descriptor, for the loop's epoll object.
    @ivar deadline: when it is armed to go off, on its own clock (the
        timer's, C{CLOCK_MONOTONIC}), or infinity when it is not armed
        (never armed, gone off, or cleared).
    """

    def __init__(
        self,
        fd: int,
        setTimer: Callable[[int, int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param clock: the clock the timer counts on; tests give another.
        """
        self.fd = fd
        self._setTimer = setTimer
        self._clock = clock
        self.deadline = float("inf")
        # Its descriptor is closed with it: a reactor that never shuts
        # down (crash() ends a run without the shutdown that calls close)
        # would otherwise leave it open for the life of the process, where
        # its epoll object is closed when collected.
        self._closer = weakref.finalize(self, os.close, fd)

    def wake(self, timeout: float) -> None:
        """
        Go off C{timeout} seconds from now, unless already armed for then
        or earlier (within L{SLACK}).  Armed for later, it is armed again;
        armed for sooner, it goes off then, early, and the main loop finds
        nothing due and asks again.

        Deadlines are compared on the timer's monotonic clock, not the
        reactor's (C{time.time}, which an operator or NTP can step): a
        deadline kept in wall-clock time and compared after a step forward
        would look later than the one the timer is armed for, leave it
        armed, and the new timed call would wait for the old one.
        """
        now = self._clock()
        deadline = now + timeout
        if deadline >= self.deadline - SLACK:
            return
        if timeout > LONGEST:
            # From now, not from the deadline: now + timeout - timeout is
            # not now once timeout dwarfs it (1e30 s, say).
            timeout, deadline = LONGEST, now + LONGEST
        # At least a nanosecond: zero would disarm it, and the loop would
        # wait for the timed call forever.
        self._setTimer(self.fd, max(1, int(timeout * 1e9)))
        self.deadline = deadline

    def clear(self) -> None:
        """
        It went off: read its count of expiries, so that it is no longer
        readable, and note that it is not armed.
        """
        self.deadline = float("inf")
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            # Armed again between going off and this read: not readable
            # until the new deadline.
            pass

    def abandon(self) -> None:
        """
        Let its descriptor go without closing it: it was closed under the
        alarm, and the number may be another's now.
        """
        self._closer.detach()
        self.fd = -1
        self.deadline = float("inf")

    def close(self) -> None:
        """
        Close its descriptor (which takes it out of any epoll object).
        """
        if self.fd >= 0:
            self._closer()
            self.fd = -1
        self.deadline = float("inf")


def makeAlarm(
    calls: tuple[Callable[[], int], Callable[[int, int], None]] | None = None,
) -> Alarm | None:
    """
    A new L{Alarm}, or None where this system has no C{timerfd} (or
    refuses one).

    @param calls: the C{timerfd_create} and C{timerfd_settime} to use (a
        create taking no argument, a set taking the descriptor and
        nanoseconds from now); by default Python's own where it has them,
        else the C library's.
    @raise OSError: when it is short of descriptors or memory for one now
        (an errno of L{SHORT_OF}), not for good.
    """
    if calls is None:
        calls = _osCalls() or _libcCalls()
        if calls is None:
            return None
    create, setTimer = calls
    try:
        fd = create()
    except OSError as e:
        if e.errno in SHORT_OF:
            raise
        return None
    return Alarm(fd, setTimer)
