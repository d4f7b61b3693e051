"""
Signal handlers that hand each signal to the reactor thread and give the
old handlers back (L{echotwist.signals}).  A signal this process sends
itself, with a recording reactor; the old handler always restored.  (Signals
sent to the real twistd: tests.system.test_signals.)
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from echotwist.signals import SignalHandlers

#: Neither trial nor echotwist takes it.
SIGNAL = signal.SIGUSR2


class _Reactor:
    """
    Records what a handler asked the reactor thread to call.
    """

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []

    def callFromThread(self, f: Callable[[], object]) -> None:
        self.calls.append(f)


class SignalHandlersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.before: list[int] = []
        # A handler of the test's own, so that a restore is seen to give
        # back exactly what was there.
        self.original = signal.signal(SIGNAL, lambda *_: self.before.append(1))
        self.addCleanup(signal.signal, SIGNAL, self.original)
        self.previous = signal.getsignal(SIGNAL)
        self.reactor = _Reactor()
        self.handlers = SignalHandlers(self.reactor)
        self.addCleanup(self.handlers.restore)

    def test_handedToTheReactorThread(self) -> None:
        """
        The signal only queues the handler for the reactor thread; it does
        not run it in the middle of whatever the main thread was doing.
        """
        ran: list[str] = []

        def handler() -> None:
            ran.append("ran")

        self.handlers.handle(SIGNAL, handler)
        signal.raise_signal(SIGNAL)
        self.assertEqual((self.reactor.calls, ran), ([handler], []))
        self.assertEqual(self.before, [])

    def test_firstHandlerKept(self) -> None:
        def first() -> None:
            pass

        def second() -> None:
            pass

        self.handlers.handle(SIGNAL, first)
        self.handlers.handle(SIGNAL, second)
        signal.raise_signal(SIGNAL)
        self.assertEqual(self.reactor.calls, [first])

    def test_restoreGivesTheOldHandlerBack(self) -> None:
        self.handlers.handle(SIGNAL, lambda: None)
        self.assertIsNot(signal.getsignal(SIGNAL), self.previous)
        self.handlers.restore()
        self.assertIs(signal.getsignal(SIGNAL), self.previous)
        signal.raise_signal(SIGNAL)
        self.assertEqual((self.reactor.calls, self.before), ([], [1]))

    def test_takenAgainAfterRestore(self) -> None:
        """
        A server started again after a stop takes its signals again.
        """

        def handler() -> None:
            pass

        self.handlers.handle(SIGNAL, lambda: None)
        self.handlers.restore()
        self.handlers.handle(SIGNAL, handler)
        signal.raise_signal(SIGNAL)
        self.assertEqual(self.reactor.calls, [handler])
