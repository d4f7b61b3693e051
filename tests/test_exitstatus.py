"""
The exit status after SIGTERM and SIGINT when twistd is PID 1 (a container
without C{--init}), in process.  (For real, in a PID namespace:
tests.system.test_exitstatus.)
"""

from __future__ import annotations

import signal

from twisted.trial.unittest import SynchronousTestCase

from echotwist.exitstatus import ExitStatus


class ExitStatusTests(SynchronousTestCase):
    """
    L{ExitStatus} notes the stopping signal and, as PID 1 only, exits with
    128 + its number.
    """

    def setUp(self) -> None:
        self.exits: list[int] = []
        self.registered: list[object] = []
        self.called: list[int] = []
        self.pid = 1
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
            signal.signal(signum, lambda signum, frame: self.called.append(signum))
        self.status = ExitStatus(
            getpid=lambda: self.pid,
            exit=self.exits.append,
            register=self.registered.append,
        )

    def test_pidOneExitsWithTheSignal(self) -> None:
        """
        As PID 1, the first stopping signal makes the status 128 + its
        number; the reactor's handler still runs.
        """
        self.status.watch()
        self.assertEqual(self.registered, [self.status.finish])
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)
        interrupt = signal.getsignal(signal.SIGINT)
        assert callable(interrupt)
        interrupt(signal.SIGINT, None)
        self.assertEqual(self.called, [signal.SIGTERM, signal.SIGINT])
        self.status.finish()
        self.assertEqual(self.exits, [143])

    def test_notPidOne(self) -> None:
        """
        Anywhere but PID 1 the re-sent signal kills the process: nothing
        to do.
        """
        self.pid = 4242
        self.status.watch()
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler)
        handler(signal.SIGINT, None)
        self.status.finish()
        self.assertEqual(self.exits, [])

    def test_noSignal(self) -> None:
        """
        A PID 1 that stopped for another reason keeps its own status.
        """
        self.status.watch()
        self.status.finish()
        self.assertEqual(self.exits, [])

    def test_defaultHandlersLeftAlone(self) -> None:
        """
        A signal the reactor does not handle (default or ignored) is not
        wrapped: it was never going to stop the server with a drain.
        """
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.status.watch()
        self.assertIs(signal.getsignal(signal.SIGINT), signal.SIG_IGN)
        self.status.watch()
        self.assertEqual(len(self.registered), 1)
