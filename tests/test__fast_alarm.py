"""
L{echotwist._fast.alarm}: the fast loop's C{timerfd}, made for real on
this system through each way it can be (Python's C{os} from 3.13, the C
library through C{ctypes}), and its arming rules with a recording timer.
"""

from __future__ import annotations

import gc
import os
import select
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from echotwist._fast import alarm as alarmModule
from echotwist._fast.alarm import LONGEST, SHORT_OF, SLACK, Alarm, makeAlarm
from tests._twistd import WAIT


def readable(fd: int, wait: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], wait)[0])


class _RealAlarmMixin:
    """
    An alarm made by C{calls()} goes off when armed, and clears.
    """

    def calls(self) -> object:
        raise NotImplementedError

    def makeOne(self) -> Alarm:
        alarm = makeAlarm(self.calls())  # type: ignore[arg-type]
        assert alarm is not None
        self.addCleanup(alarm.close)  # type: ignore[attr-defined]
        return alarm

    def test_goesOff(self) -> None:
        alarm = self.makeOne()
        self.assertFalse(readable(alarm.fd))  # type: ignore[attr-defined]
        alarm.wake(0.01)
        self.assertTrue(readable(alarm.fd, WAIT))  # type: ignore[attr-defined]
        alarm.clear()
        self.assertFalse(readable(alarm.fd))  # type: ignore[attr-defined]
        self.assertEqual(alarm.deadline, float("inf"))  # type: ignore[attr-defined]

    def test_noTimeLeft(self) -> None:
        """
        Armed with nothing left to wait (a timer of zero would be no timer),
        it goes off at once.
        """
        alarm = self.makeOne()
        alarm.wake(0.0)
        self.assertTrue(readable(alarm.fd, WAIT))  # type: ignore[attr-defined]

    def test_armedAgainForSooner(self) -> None:
        alarm = self.makeOne()
        alarm.wake(3600)
        alarm.wake(0.01)
        self.assertTrue(readable(alarm.fd, WAIT))  # type: ignore[attr-defined]

    def test_clearedBeforeGoingOff(self) -> None:
        """
        Cleared while not readable (armed again between going off and the
        read), it reads nothing and says so.
        """
        alarm = self.makeOne()
        alarm.wake(3600)
        alarm.clear()
        self.assertEqual(alarm.deadline, float("inf"))  # type: ignore[attr-defined]

    def test_closedWhenCollected(self) -> None:
        """
        An alarm dropped without being closed (its reactor crashed, never
        shut down, and was let go) closes its descriptor when collected.
        """
        alarm = makeAlarm(self.calls())  # type: ignore[arg-type]
        assert alarm is not None
        path = f"/proc/self/fd/{alarm.fd}"
        self.assertEqual(os.readlink(path), "anon_inode:[timerfd]")  # type: ignore[attr-defined]
        del alarm
        gc.collect()
        # Gone, or (were the number taken again) no timerfd.
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            target = None
        self.assertNotEqual(target, "anon_inode:[timerfd]")  # type: ignore[attr-defined]

    def test_closeTwice(self) -> None:
        alarm = self.makeOne()
        fd = alarm.fd
        alarm.close()
        alarm.close()
        self.assertEqual(alarm.fd, -1)  # type: ignore[attr-defined]
        with self.assertRaises(OSError):  # type: ignore[attr-defined]
            os.fstat(fd)


class LibcAlarmTests(_RealAlarmMixin, SynchronousTestCase):
    """
    Through C{ctypes} (Python before 3.13): the loop's alarm on this
    project's oldest Pythons, so on Linux it must be there.
    """

    if not sys.platform.startswith("linux"):
        skip = "timerfd is Linux's"

    def calls(self) -> object:
        calls = alarmModule._libcCalls()
        self.assertIsNotNone(calls, "timerfd_create/timerfd_settime not found")
        return calls

    def test_setFails(self) -> None:
        """
        A failed C{timerfd_settime} raises with its errno, rather than
        leaving the loop waiting on a timer that was never set.
        """
        calls = self.calls()
        assert calls is not None
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        with self.assertRaises(OSError) as caught:
            calls[1](r, 1000)  # type: ignore[index]
        self.assertIsNotNone(caught.exception.errno)


class OsAlarmTests(_RealAlarmMixin, SynchronousTestCase):
    """
    Through C{os.timerfd_create} (Python 3.13 and later).
    """

    if alarmModule._osCalls() is None:
        skip = "this Python has no os.timerfd_create"

    def calls(self) -> object:
        return alarmModule._osCalls()


class WakeTests(SynchronousTestCase):
    """
    When L{Alarm.wake} sets the timer: only for a deadline earlier than
    the one it is armed for (by more than L{SLACK}), on the alarm's clock.
    """

    def setUp(self) -> None:
        self.set: list[tuple[int, int]] = []
        self.now = 100.0
        # A descriptor of the test's to stand for the timer's: an alarm
        # closes its own.
        self.fd = self.descriptor()
        self.alarm = Alarm(
            self.fd, lambda fd, ns: self.set.append((fd, ns)), lambda: self.now
        )
        self.addCleanup(self.alarm.close)

    def descriptor(self) -> int:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def test_monotonicByDefault(self) -> None:
        """
        An alarm's deadlines are on the timer's own clock (monotonic), not
        the wall clock the reactor's C{seconds} reads, which can be stepped.
        """
        alarm = Alarm(self.descriptor(), lambda fd, ns: None)
        self.addCleanup(alarm.close)
        before = time.monotonic()
        alarm.wake(5.0)
        self.assertGreaterEqual(alarm.deadline, before + 5.0)
        self.assertLessEqual(alarm.deadline, time.monotonic() + 5.0)

    def test_firstWake(self) -> None:
        self.alarm.wake(1.5)
        self.assertEqual(self.set, [(self.fd, 1_500_000_000)])
        self.assertEqual(self.alarm.deadline, 101.5)

    def test_laterOrSameNotArmedAgain(self) -> None:
        """
        A later deadline (an earlier call was cancelled) leaves it armed for
        sooner: it goes off early and the main loop asks again.  The same
        deadline computed again a little later is no new deadline.
        """
        self.alarm.wake(1.0)
        self.alarm.wake(5.0)
        self.now += 0.1
        self.alarm.wake(0.9 - SLACK / 2)
        self.assertEqual(len(self.set), 1)
        self.assertEqual(self.alarm.deadline, 101.0)

    def test_soonerArmedAgain(self) -> None:
        self.alarm.wake(1.0)
        self.alarm.wake(0.5)
        self.assertEqual(self.set, [(self.fd, 1_000_000_000), (self.fd, 500_000_000)])
        self.assertEqual(self.alarm.deadline, 100.5)

    def test_atLeastANanosecond(self) -> None:
        self.alarm.wake(0.0)
        self.alarm.deadline = float("inf")
        self.alarm.wake(1e-12)
        self.assertEqual(self.set, [(self.fd, 1), (self.fd, 1)])

    def test_longestWait(self) -> None:
        """
        A call years away arms it for L{LONGEST} seconds, and the deadline
        it keeps is then.
        """
        self.alarm.wake(1e12)
        self.assertEqual(self.set, [(self.fd, int(LONGEST * 1e9))])
        self.assertLess(abs(self.alarm.deadline - (100.0 + LONGEST)), 1.0)

    def test_longestWaitOfAHugeTimeout(self) -> None:
        """
        A timeout so large that the clock's value is lost in adding it
        still leaves the deadline at L{LONGEST} from now, so that sooner
        calls arm it again.
        """
        self.alarm.wake(1e30)
        self.assertEqual(self.alarm.deadline, 100.0 + LONGEST)
        self.alarm.wake(LONGEST / 2)
        self.assertEqual(self.set[-1], (self.fd, int(LONGEST / 2 * 1e9)))

    def test_armedAfterGoingOff(self) -> None:
        self.alarm.wake(1.0)
        self.alarm.deadline = float("inf")
        self.now += 1.0
        self.alarm.wake(1.0)
        self.assertEqual(len(self.set), 2)


class MakeAlarmTests(SynchronousTestCase):
    def test_refused(self) -> None:
        """
        A system that refuses a timerfd (a sandbox, a descriptor limit)
        gets no alarm, and the loop polls with timeouts.
        """

        def refuse() -> int:
            raise OSError(38, "Function not implemented")

        self.assertIsNone(makeAlarm((refuse, lambda fd, ns: None)))

    def test_shortOfDescriptors(self) -> None:
        """
        Out of descriptors (or memory) is not for good: the caller hears of
        it, to try again later, rather than being told there is no timerfd.
        """
        for number in sorted(SHORT_OF):

            def short(number: int = number) -> int:
                raise OSError(number, os.strerror(number))

            with self.assertRaises(OSError) as caught:
                makeAlarm((short, lambda fd, ns: None))
            self.assertEqual(caught.exception.errno, number)

    def test_none(self) -> None:
        """
        Where neither Python nor the C library has the calls, no alarm.
        """
        self.patch(alarmModule, "_osCalls", lambda: None)
        self.patch(alarmModule, "_libcCalls", lambda: None)
        self.assertIsNone(makeAlarm())

    def test_default(self) -> None:
        if not sys.platform.startswith("linux"):
            raise self.skipTest("timerfd is Linux's")
        alarm = makeAlarm()
        self.assertIsNotNone(alarm)
        assert alarm is not None
        alarm.close()
