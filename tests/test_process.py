"""
The process around C{twistd echo}'s service (L{echotwist.process}): the
reactor it serves on.
"""

from __future__ import annotations

import signal

from twisted.trial.unittest import SynchronousTestCase

from echotwist.process import installDefaultReactor, watchExitStatus


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
