"""
pytest's view of the tests.

pytest runs both kinds: trial's TestCases (through its unittest support)
and the pytest-native tests in C{tests/test_pytest_*.py}, which run on
pytest-twisted's reactor (Twisted's default reactor unless pytest is given
C{--reactor}).  Their fixtures start echotwist's public L{EchoService} on
random loopback ports in this process, on that same reactor, so Twisted
clients talk to it from the test itself.

trial imports the C{test_pytest_*} modules too; they hold no TestCase, so
they add no trial tests.  Nothing here imports the reactor at import time:
pytest loads this file before pytest-twisted installs the reactor.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps its example database and caches in .hypothesis under the
# working directory: the checkout, under pytest.  Tests write only under
# the temporary directory.  (trial works in _trial_temp already.)
set_hypothesis_home_dir(
    os.path.join(tempfile.gettempdir(), f"echotwist-hypothesis-{os.getuid()}")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """
    Run the pytest-native tests after every trial TestCase.  The first of
    them starts pytest-twisted's reactor (in a greenlet, for the rest of
    the session); a trial TestCase that is not synchronous runs the reactor
    itself, and after that would fail with ReactorAlreadyRunning.
    """
    items.sort(key=lambda item: _usesTheReactor(item))


def _usesTheReactor(item: pytest.Item) -> bool:
    return item.path.name.startswith("test_pytest_")


class Events:
    """
    The log events echotwist emitted during a test, by their C{event} name.
    """

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.seen.append(event)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e.get("event") == name]

    async def wait(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        """
        Wait (bounded) until C{count} events called C{name} were logged.
        """
        from tests._twistedclients import until

        await until(lambda: len(self.named(name)) >= count, f"{count} x {name}")
        return self.named(name)


@pytest.fixture
def events() -> Iterator[Events]:
    from twisted.logger import globalLogPublisher

    seen = Events()
    globalLogPublisher.addObserver(seen)
    yield seen
    globalLogPublisher.removeObserver(seen)


def portOf(service: Any, index: int = 0) -> int:
    """
    The port the C{index}th listener of a started L{EchoService} is bound
    to, counting its echo's stream and UDP listeners, then the identity
    line's, then the metrics and health sites'.
    """
    listeners = [
        *service.listeners,
        *service.datagrams,
        *service.identifiers,
        *service.pages,
    ]
    return int(listeners[index].port.getHost().port)


@pytest_twisted.async_yield_fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """
    Start L{EchoService}s: C{serve(listen, **options)}, by default one TCP
    listener on a random loopback port.  Each is stopped (and drained)
    after the test, if the test has not stopped it.
    """
    from echotwist import EchoService

    started: list[Any] = []

    def start(listen: Any = ("tcp:0:interface=127.0.0.1",), **options: Any) -> Any:
        options.setdefault("shutdownTimeout", 2.0)
        service = EchoService(listen, **options)
        service.privilegedStartService()
        service.startService()
        started.append(service)
        return service

    yield start
    for service in started:
        if service.running:
            await service.stopService()
