# -*- test-case-name: tests.test_signals -*-
"""
Signal handlers that call into the reactor thread, and give the old
handlers back when the server has stopped.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

__all__ = ["SignalHandlers"]


class SignalHandlers:
    """
    The signals a server takes, and the handlers it took them from.
    """

    def __init__(self, reactor: Any) -> None:
        """
        @param reactor: the reactor whose thread runs each handler.
        """
        self.reactor = reactor
        self._oldHandlers: dict[int, Any] = {}

    def handle(self, signum: int, handler: Callable[[], object]) -> None:
        """
        Call C{handler} in the reactor thread when C{signum} arrives, until
        L{restore}; a signal taken already keeps its first handler.

        A Python signal handler runs between any two bytecodes of the main
        thread, in the middle of whatever the reactor was doing (writing a
        log line, say); callFromThread only queues the call and wakes the
        reactor, as twistd's own SIGUSR1 handler does.
        """
        if signum in self._oldHandlers:
            return
        reactor = self.reactor
        self._oldHandlers[signum] = signal.signal(
            signum, lambda *_: reactor.callFromThread(handler)
        )

    def restore(self) -> None:
        """
        Give every signal taken back the handler it had before.
        """
        for signum, handler in self._oldHandlers.items():
            signal.signal(signum, handler)
        self._oldHandlers.clear()
