"""
The process around C{twistd echo}'s service (L{echotwist.process}): the
reactor it serves on.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist.process import installDefaultReactor


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
