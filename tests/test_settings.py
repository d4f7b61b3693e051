"""
Settings: each knob defined once, built once from the command line, handed
whole to the service and the workers (the keepalive triple among them); and
the library leaves its host process alone.
"""

from __future__ import annotations

import dataclasses
import errno
import faulthandler
import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from echotwist import EchoService
from echotwist._address import parseNetwork
from echotwist.service import CannotListen, Listener
from echotwist.settings import DEFAULT_KEEPALIVE, Settings, optionFields
from echotwist.tap import Options, makeService, settingsFrom
from tests.test_service import _Endpoint, cannotListen


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class SettingsTests(SynchronousTestCase):
    def test_everyFieldIsAnOption(self) -> None:
        """
        Each field of Settings is a twistd echo option, with its help text
        and its default in --help.
        """
        usage = " ".join(str(Options()).split())
        fields = optionFields()
        self.assertEqual(
            {f.name for f in fields}, {f.name for f in dataclasses.fields(Settings)}
        )
        for f in fields:
            self.assertIn(f"--{f.metadata['option']}", usage)
            if "help" in f.metadata:
                self.assertIn(f.metadata["help"][:40], usage)

    def test_fromOptions(self) -> None:
        self.assertEqual(settingsFrom(parse()), Settings())
        self.assertEqual(
            settingsFrom(
                parse(
                    "--max-connections",
                    "7",
                    "--idle-timeout",
                    "2.5",
                    "--workers",
                    "3",
                    "--no-connection-logs",
                )
            ),
            Settings(
                maxConnections=7, idleTimeout=2.5, workers=3, logConnections=False
            ),
        )

    def test_jsonRoundTrip(self) -> None:
        """
        What a worker is handed is what the supervisor was given.
        """
        settings = Settings(maxPerSource=3, udpRate=0.5, logConnections=False)
        self.assertEqual(Settings.fromJSON(settings.toJSON()), settings)

    def test_proxyFromIsNetworks(self) -> None:
        """
        C{--proxy-from} is parsed once, into networks, which the settings
        keep; a worker gets them back as networks, and a program's text is
        parsed as the service is made.
        """
        networks = (parseNetwork("10.0.0.0/8"), parseNetwork("2001:db8::7"))
        options = Options({})
        options.parseOptions(
            ["--proxy-from", "10.0.0.0/8", "--proxy-from", "2001:db8::7"]
        )
        settings = settingsFrom(options)
        self.assertEqual(settings.proxyFrom, networks)
        self.assertEqual(Settings.fromJSON(settings.toJSON()), settings)
        service = EchoService(["tcp:0"], proxyFrom=["10.0.0.0/8", "2001:db8::7"])
        self.assertEqual(service.settings.proxyFrom, networks)
        self.assertEqual(service.proxyFrom, list(networks))

    def test_immutable(self) -> None:
        settings = Settings()
        self.assertRaises(
            dataclasses.FrozenInstanceError, setattr, settings, "maxConnections", 1
        )

    def test_serviceTakesSettingsAndOverrides(self) -> None:
        reactor = MemoryReactorClock()
        service = EchoService(
            [], settings=Settings(maxConnections=9), maxPerSource=2, reactor=reactor
        )
        self.assertEqual(service.settings, Settings(maxConnections=9, maxPerSource=2))
        self.assertEqual(service.factory.admission.maxConnections, 9)
        self.assertEqual(service.factory.admission.maxPerSource, 2)
        self.assertRaises(TypeError, EchoService, [], reactor=reactor, noSuchKnob=1)

    def test_makeServiceHandsTheSettingsOn(self) -> None:
        service = makeService(parse("--port", "tcp:0", "--shutdown-timeout", "4"))
        assert isinstance(service, EchoService)
        self.assertEqual(service.settings, Settings(shutdownTimeout=4.0))


class HostProcessTests(SynchronousTestCase):
    """
    Building and starting an EchoService (as a .tac does) changes nothing
    process-wide; the tap (twistd echo) does, for its own process.
    """

    def setUp(self) -> None:
        hook = sys.excepthook
        wasEnabled = faulthandler.is_enabled()
        # As a fresh process has them (an earlier test may have run the tap).
        sys.excepthook = sys.__excepthook__
        faulthandler.disable()

        def restore() -> None:
            sys.excepthook = hook
            if wasEnabled:
                faulthandler.enable()
            else:
                faulthandler.disable()

        self.addCleanup(restore)

    def test_libraryLeavesTheProcessAlone(self) -> None:
        hook = sys.excepthook
        service = EchoService(
            [Listener("tcp:5000", _Endpoint([], cannotListen(errno.EADDRINUSE, "x")))]
        )
        self.assertRaises(CannotListen, service.privilegedStartService)
        self.assertIs(sys.excepthook, hook)
        self.assertFalse(faulthandler.is_enabled())

    def test_tapPreparesItsProcess(self) -> None:
        hook = sys.excepthook
        makeService(parse("--port", "tcp:0"))
        self.assertIsNot(sys.excepthook, hook)
        self.assertTrue(faulthandler.is_enabled())


class KeepaliveOptionTests(SynchronousTestCase):
    def parsed(self, *argv: str) -> tuple[int, int, int]:
        options = Options()
        options.parseOptions(list(argv))
        return settingsFrom(options).keepalive

    def test_values(self) -> None:
        self.assertEqual(self.parsed(), DEFAULT_KEEPALIVE)
        self.assertEqual(DEFAULT_KEEPALIVE, (60, 10, 5))
        self.assertEqual(self.parsed("--keepalive", "300"), (300, 10, 5))
        self.assertEqual(self.parsed("--keepalive", "30,5,3"), (30, 5, 3))
        self.assertEqual(self.parsed("--keepalive", "0"), (0, 0, 0))

    def test_jsonRoundTrip(self) -> None:
        """
        Workers get the same tuple the supervisor parsed.
        """
        settings = Settings(keepalive=(30, 5, 3))
        self.assertEqual(Settings.fromJSON(settings.toJSON()), settings)
