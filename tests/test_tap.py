"""
The tap configuration: what "twistd echo" accepts, refuses, and makes.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys

import twisted
from twisted.python.usage import UsageError
from twisted.python.versions import Version
from twisted.trial.unittest import SynchronousTestCase

from echotwist import EchoService, process
from echotwist.settings import optionFields
from echotwist.tap import Options, makeService
from tests._tools import requireTLS, selfSignedCertificate


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def descriptions(*argv: str) -> list[str]:
    return [listener.description for listener in parse(*argv)["listeners"]]


class OptionsTests(SynchronousTestCase):
    def test_defaultIsTheOriginalPort(self) -> None:
        self.assertEqual(descriptions(), ["tcp:5000"])

    def test_portNumber(self) -> None:
        self.assertEqual(descriptions("--port", "7"), ["tcp:7"])
        self.assertEqual(descriptions("-p", "5001"), ["tcp:5001"])
        self.assertEqual(descriptions("--port", "0"), ["tcp:0"])

    def test_portEndpoint(self) -> None:
        self.assertEqual(
            descriptions("--port", "tcp:5002:interface=127.0.0.1"),
            ["tcp:5002:interface=127.0.0.1"],
        )

    def test_listenRepeatsAndReplacesTheDefaultPort(self) -> None:
        self.assertEqual(
            descriptions("--listen", "tcp:5003", "--listen", "unix:/tmp/e.sock"),
            ["tcp:5003", "unix:/tmp/e.sock"],
        )

    def test_listenAndPort(self) -> None:
        self.assertEqual(
            descriptions("--listen", "tcp:5003", "--port", "5004"),
            ["tcp:5003", "tcp:5004"],
        )

    def test_udpAloneReplacesTheDefaultPort(self) -> None:
        options = parse("--udp", "7", "--udp", "udp:7:interface=\\:\\:1")
        self.assertEqual(options["listeners"], [])
        self.assertEqual(
            [(d.port, d.interface) for d in options["datagramListeners"]],
            [(7, ""), (7, "::1")],
        )
        self.assertEqual(descriptions("--udp", "7", "--port", "7"), ["tcp:7"])

    def test_udpRate(self) -> None:
        self.assertEqual(parse()["udp-rate"], 100.0)
        self.assertEqual(parse("--udp-rate", "0")["udp-rate"], 0.0)

    def test_shutdownTimeout(self) -> None:
        self.assertEqual(parse()["shutdown-timeout"], 10.0)
        self.assertEqual(parse("--shutdown-timeout", "2.5")["shutdown-timeout"], 2.5)

    def test_drainQuiet(self) -> None:
        self.assertEqual(parse()["drain-quiet"], 2.0)
        self.assertEqual(parse("--drain-quiet", "0")["drain-quiet"], 0.0)
        service = makeService(parse("--drain-quiet", "7.5"))
        assert isinstance(service, EchoService)
        self.assertEqual(service.factory.drainQuiet, 7.5)

    def test_socketBuffer(self) -> None:
        self.assertEqual(parse()["socket-buffer"], 98304)
        self.assertEqual(parse("--socket-buffer", "0")["socket-buffer"], 0)
        self.assertEqual(parse("--socket-buffer", "131072")["socket-buffer"], 131072)

    def test_everyOptionHelpSaysDefaultAndExample(self) -> None:
        text = str(Options())
        # Each option's entry starts on a line of its own: "  -p, --port=".
        entries = re.split(r"\n {2,6}(?=-)", text)
        for option in (
            "--port=",
            "--listen=",
            "--shutdown-timeout=",
            "--udp=",
            "--udp-rate=",
            "--max-connections=",
            "--max-per-source=",
            "--idle-timeout=",
            "--drain-quiet=",
            "--metrics=",
            "--workers=",
            "--ipv6-prefix=",
            "--evict-idle-after=",
            "--proxy-from=",
            "--socket-buffer=",
        ):
            (entry,) = (e for e in entries if option in e.split()[:2])
            self.assertIn("[default:", entry, option)
            self.assertIn("e.g.", entry, option)

    def test_sourceOptions(self) -> None:
        options = parse()
        self.assertEqual(
            (
                options["ipv6-prefix"],
                options["evict-idle-after"],
                options["proxy-from"],
            ),
            (64, 10.0, None),
        )
        options = parse(
            "--ipv6-prefix",
            "56",
            "--evict-idle-after",
            "0",
            "--proxy-from",
            "10.0.0.0/8",
            "--proxy-from",
            "2001:db8::7",
        )
        self.assertEqual(options["ipv6-prefix"], 56)
        self.assertEqual(options["evict-idle-after"], 0)
        self.assertEqual(
            [str(n) for n in options["proxy-from"]], ["10.0.0.0/8", "2001:db8::7/128"]
        )

    def test_defaultsAsAUserTypesThem(self) -> None:
        text = " ".join(str(Options()).split())
        for default in ("300", "10", "100", "1000", "1"):
            self.assertIn(f"[default: {default}]", text)
        self.assertNotRegex(text, r"\[default: [\d.]*\.0\]")

    def test_numbersGivenAsDefaults(self) -> None:
        options = parse()
        self.assertEqual(options["idle-timeout"], 300.0)
        self.assertEqual(options["workers"], 1)
        self.assertEqual(options["max-connections"], 1000)
        self.assertEqual(options["max-per-source"], 100)
        self.assertEqual(parse("--idle-timeout", "0.5")["idle-timeout"], 0.5)

    def test_defaultsParseToTheirValues(self) -> None:
        """
        Each option's default as C{--help} shows it parses to its field's
        own value, of the same type: what lets a start take the field's
        value for an option left at its default, without parsing it.
        """
        typed = {p[0]: p[2] for p in Options.optParameters}
        checked = []
        for f in optionFields():
            name = f.metadata["option"]
            if "parse" not in f.metadata or f.default is None:
                continue
            value = f.metadata["parse"](typed[name])
            self.assertEqual((value, type(value)), (f.default, type(f.default)), name)
            # Given as typed, or left alone, it is the same value.
            self.assertEqual(parse(f"--{name}", typed[name])[name], value, name)
            self.assertEqual(parse()[name], value, name)
            checked.append(name)
        self.assertIn("workers", checked)
        self.assertIn("keepalive", checked)


class BadValueTests(SynchronousTestCase):
    """
    Every bad value is one line that names the option and the value.
    """

    def refused(self, *argv: str) -> str:
        message = str(self.assertRaises(UsageError, parse, *argv))
        self.assertNotIn("\n", message)
        return message

    def test_portNotANumber(self) -> None:
        message = self.refused("--port", "abc")
        self.assertIn("--port: 'abc' is neither a port number", message)
        self.assertIn("Unknown endpoint type", message)

    def test_portOutOfRange(self) -> None:
        self.assertEqual(
            self.refused("--port", "70000"),
            "--port: '70000' is not a port number (0-65535)",
        )

    def test_negativePort(self) -> None:
        self.assertIn("'-1' is neither a port number", self.refused("--port", "-1"))

    def test_unknownEndpointType(self) -> None:
        message = self.refused("--listen", "foo:1")
        self.assertIn("--listen: 'foo:1'", message)
        self.assertIn("Unknown endpoint type: 'foo'", message)

    def test_badEndpointArgument(self) -> None:
        self.assertIn("--listen: 'tcp:abc'", self.refused("--listen", "tcp:abc"))
        self.assertIn("'bogus'", self.refused("--listen", "tcp:5000:bogus=1"))

    def test_unreadableKey(self) -> None:
        requireTLS()
        message = self.refused("--listen", "ssl:5000:privateKey=/nonexistent/key.pem")
        self.assertIn(
            "the TLS private key file (privateKey=) '/nonexistent/key.pem'"
            " does not exist",
            message,
        )

    def test_keyFileIsADirectory(self) -> None:
        """
        It was said not to exist.
        """
        requireTLS()
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        self.assertIn(
            f"the TLS private key file (privateKey=) {directory!r} is a directory",
            self.refused("--listen", f"ssl:0:privateKey={directory}"),
        )

    def test_keyFileHoldsNoKey(self) -> None:
        """
        A certificate given as the key was OpenSSL's "[('DECODER routines',
        '', 'unsupported')]" inside "is neither a port number nor ...".
        """
        requireTLS()
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        _, certificate = selfSignedCertificate(directory)
        self.assertIn(
            f"the TLS private key file (privateKey=) {certificate!r} holds no PEM"
            " private key",
            self.refused(
                "--listen", f"ssl:0:privateKey={certificate}:certKey={certificate}"
            ),
        )

    def test_oneListenerOptionGivenTwice(self) -> None:
        """
        An option naming one listener, given twice, took the last value and
        silently opened no listener for the first.
        """
        self.assertEqual(
            self.refused("--port", "5000", "-p", "5001"),
            "--port: given twice ('5000', then '5001'); --listen adds more listeners",
        )
        for name in ("metrics", "health", "identify"):
            message = self.refused(f"--{name}", "tcp:9100", f"--{name}=tcp:9101")
            self.assertTrue(
                message.startswith(
                    f"--{name}: given twice ('tcp:9100', then 'tcp:9101'); the"
                ),
                message,
            )
        self.assertIn(
            "--identify-udp: given twice",
            self.refused("--identify-udp", "5001", "--identify-udp", "5002"),
        )
        # Repeatable options stay repeatable.
        self.assertEqual(
            descriptions("--listen", "tcp:5000", "--listen", "tcp:5001"),
            ["tcp:5000", "tcp:5001"],
        )

    def test_sideListenersShareNoEndpoint(self) -> None:
        """
        C{--metrics}, C{--health} and C{--identify} on one endpoint passed
        the options, and the second to listen failed with "Address already
        in use (another process is listening there)".
        """
        self.assertEqual(
            self.refused("--metrics", "tcp:9100", "--health", "tcp:9100"),
            "--health: tcp:9100 is also the --metrics listener (which serves"
            " the health pages too)",
        )
        self.assertEqual(
            self.refused("--health", "tcp:8080", "--identify", "tcp:8080"),
            "--identify: tcp:8080 is also the --health listener",
        )
        self.assertEqual(
            self.refused("--metrics", "9100", "--identify", "tcp:9100"),
            "--identify: tcp:9100 is also the --metrics listener",
        )
        # Port 0 is a fresh port each time.
        parse("--metrics", "tcp:0", "--health", "tcp:0", "--identify", "tcp:0")

    def test_givenTwice(self) -> None:
        self.assertEqual(
            self.refused("--port", "5000", "--listen", "tcp:5000"),
            "--port: tcp:5000 is given twice",
        )

    def test_badUDP(self) -> None:
        self.assertIn("'abc' is not a UDP port", self.refused("--udp", "abc"))
        self.assertIn("'70000' is not a UDP port", self.refused("--udp", "70000"))
        self.assertIn("unknown UDP option 'foo'", self.refused("--udp", "udp:7:foo=1"))
        self.assertIn(
            "is not an IP address", self.refused("--udp", "udp:7:interface=nowhere")
        )
        self.assertEqual(
            self.refused("--udp", "7", "--udp", "udp:7"), "--udp: udp:7 is given twice"
        )
        self.assertIn(
            "not a number of datagrams a second", self.refused("--udp-rate", "fast")
        )

    def test_udpPortZeroIsNeverARepeat(self) -> None:
        """
        Port 0 is a fresh free port each time, for UDP as for TCP: two of
        them, or one for the echo and one for the identity line on one
        interface, are two listeners, not one given twice.
        """
        self.assertEqual(
            [
                d.description
                for d in parse("--udp", "0", "--udp", "0")["datagramListeners"]
            ],
            ["udp:0", "udp:0"],
        )
        options = parse(
            "--udp",
            "udp:0:interface=127.0.0.1",
            "--identify-udp",
            "udp:0:interface=127.0.0.1",
        )
        self.assertEqual(options["identify-udp"].port, 0)
        self.assertIn(
            "is also a --udp listener",
            self.refused("--udp", "udp:7", "--identify-udp", "7"),
        )

    def test_badWorkers(self) -> None:
        self.assertIn("0 is not a number of workers", self.refused("--workers", "0"))
        self.assertIn("'two' is not a whole number", self.refused("--workers", "two"))

    def test_shutdownTimeoutNotANumber(self) -> None:
        self.assertIn(
            "'soon' is not a number of seconds",
            self.refused("--shutdown-timeout", "soon"),
        )
        self.assertIn("0 or more", self.refused("--shutdown-timeout", "-1"))
        self.assertIn("0 or more", self.refused("--shutdown-timeout", "nan"))
        self.assertIn("0 or more", self.refused("--drain-quiet", "-1"))

    def test_badSourceOptions(self) -> None:
        for bad in ("0", "129", "64.5", "x"):
            self.assertIn(
                "is not an IPv6 prefix length (1-128)",
                self.refused("--ipv6-prefix", bad),
            )
        self.assertIn("0 or more", self.refused("--evict-idle-after", "-1"))
        self.assertIn(
            "--proxy-from: '10.1.2.3/8' has host bits set",
            self.refused("--proxy-from", "10.1.2.3/8"),
        )
        self.assertIn(
            "--proxy-from: 'proxy' is not an IP address or network",
            self.refused("--proxy-from", "proxy"),
        )

    def test_socketBufferTooLarge(self) -> None:
        """
        A size setsockopt(2) cannot take (over a C int) was accepted, and
        every listener then failed to listen with "a bytes-like object is
        required"; the largest it can take is accepted (the kernel caps it,
        and says so at start).
        """
        for value in (str(2**31), "9" * 26):
            self.assertIn(
                f"--socket-buffer: '{value}' is too large a socket buffer (at"
                " most 2147483647 bytes",
                self.refused("--socket-buffer", value),
            )
        self.assertEqual(
            parse("--socket-buffer", str(2**31 - 1))["socket-buffer"], 2**31 - 1
        )

    def test_socketBufferTooSmall(self) -> None:
        message = self.refused("--socket-buffer", "100")
        self.assertIn("--socket-buffer: '100' is too small a socket buffer", message)
        self.assertIn("4096", message)
        self.assertIn(
            "--socket-buffer: '64k' is not a whole number",
            self.refused("--socket-buffer", "64k"),
        )

    def test_everyNumberNamesItsOption(self) -> None:
        parsed = [
            f.metadata["option"]
            for f in optionFields()
            if "parse" in f.metadata
            and isinstance(f.default, (int, float, tuple))
            and not isinstance(f.default, bool)
        ]
        self.assertEqual(sorted(parsed), sorted(p[0] for p in _numeric()))
        for name in parsed:
            for bad in ("-1", "many", ""):
                message = self.refused(f"--{name}", bad)
                self.assertTrue(message.startswith(f"--{name}: "), message)
                self.assertNotIn("enforcement", message)

    def test_unescapedIPv6(self) -> None:
        for option, description in (
            ("--listen", "tcp6:5000:interface=::1"),
            ("--port", "tcp6:5000:interface=fe80::1"),
            ("--metrics", "tcp6:9100:interface=::1"),
            ("--udp", "udp:7:interface=::1"),
        ):
            message = self.refused(option, description)
            self.assertTrue(message.startswith(f"{option}: "), message)
            self.assertIn("escape each colon of an IPv6 address", message)
            self.assertIn("interface=\\:\\:1", message)
        # Escaped, it is fine.
        self.assertEqual(
            descriptions("--listen", "tcp6:0:interface=\\:\\:1"),
            ["tcp6:0:interface=\\:\\:1"],
        )


def _numeric() -> list[list[object]]:
    """
    The optParameters whose default is a number, as typed.
    """
    return [
        p
        for p in Options.optParameters
        # (--keepalive's is three numbers: 60,10,5.)
        if isinstance(p[2], str) and p[2].replace(".", "").replace(",", "").isdigit()
    ]


class OldTwistdTests(SynchronousTestCase):
    """
    twistd before Twisted 26 prints a usage error and exits with status 0;
    under it the tap ends the process itself, with status 1.
    """

    def underTwistd(self, major: int, *argv: str) -> tuple[object, str]:
        from twisted.scripts._twistd_unix import ServerOptions

        self.patch(twisted, "version", Version("Twisted", major, 5, 0))
        self.patch(sys, "argv", ["twistd", "-n", "echo", *argv])
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        config = ServerOptions()
        try:
            config.parseOptions(["-n", "echo", *argv])
        except SystemExit as e:
            return e.code, out.getvalue()
        except UsageError as e:
            return e, out.getvalue()
        return None, out.getvalue()

    def test_exitsWithStatus1(self) -> None:
        code, out = self.underTwistd(25, "--port", "70000")
        self.assertEqual(code, 1)
        self.assertEqual(
            out.splitlines()[-1],
            "twistd -n: --port: '70000' is not a port number (0-65535)",
        )
        self.assertIn("Usage: twistd [options]", out)

    def test_aBadNumberToo(self) -> None:
        code, out = self.underTwistd(24, "--idle-timeout", "-1")
        self.assertEqual(code, 1)
        self.assertIn("--idle-timeout: '-1'", out.splitlines()[-1])

    def test_newTwistdIsLeftToDoIt(self) -> None:
        error, out = self.underTwistd(26, "--port", "70000")
        self.assertIsInstance(error, UsageError)
        self.assertEqual(out, "")

    def test_goodOptionsPass(self) -> None:
        self.assertEqual(self.underTwistd(24, "--port", "0"), (None, ""))


class MakeServiceTests(SynchronousTestCase):
    def test_workers(self) -> None:
        from echotwist.supervisor import SupervisorService

        one = makeService(parse())
        assert isinstance(one, EchoService)
        self.assertIsNone(one.supervisor)
        service = makeService(parse("--workers", "3", "--max-connections", "7"))
        assert isinstance(service, EchoService)
        supervisor = service.getServiceNamed("workers")
        assert isinstance(supervisor, SupervisorService)
        self.assertEqual(supervisor.wanted, 3)
        self.assertEqual(service.factory.admission.maxConnections, 7)

    def test_sourceOptionsReachTheBooksAndTheWorkers(self) -> None:
        from echotwist.proxy import ProxyEndpoint
        from echotwist.supervisor import SupervisorService

        argv = (
            "--listen",
            "haproxy:tcp:0:interface=127.0.0.1",
            "--ipv6-prefix",
            "48",
            "--evict-idle-after",
            "3",
            "--proxy-from",
            "10.0.0.0/8",
        )
        service = makeService(parse(*argv))
        assert isinstance(service, EchoService)
        self.assertEqual(service.factory.admission.ipv6Prefix, 48)
        self.assertEqual(service.datagramPolicy.ipv6Prefix, 48)
        self.assertEqual(service.factory.evictIdleAfter, 3)
        (child,) = service.listeners
        endpoint = child.endpoint  # type: ignore[attr-defined]
        assert isinstance(endpoint, ProxyEndpoint)
        self.assertEqual([str(n) for n in endpoint.trusted or []], ["10.0.0.0/8"])

        supervisor = makeService(parse("--workers", "2", *argv))
        assert isinstance(supervisor, EchoService)
        assert isinstance(supervisor.supervisor, SupervisorService)
        self.assertEqual(supervisor.factory.admission.ipv6Prefix, 48)
        self.assertEqual(supervisor.factory.evictIdleAfter, 3)
        self.assertEqual([str(n) for n in supervisor.proxyFrom or []], ["10.0.0.0/8"])

    def test_socketBuffer(self) -> None:
        from echotwist.supervisor import SupervisorService

        service = makeService(parse("--socket-buffer", "32768"))
        assert isinstance(service, EchoService)
        self.assertEqual(service.socketBuffer, 32768)
        self.assertEqual(
            [child.socketBuffer for child in service.listeners],  # type: ignore[attr-defined]
            [32768],
        )
        supervisor = makeService(parse("--workers", "2", "--socket-buffer", "0"))
        assert isinstance(supervisor, EchoService)
        assert isinstance(supervisor.supervisor, SupervisorService)
        self.assertEqual(supervisor.socketBuffer, 0)

    def test_oneListenerEach(self) -> None:
        service = makeService(
            parse(
                "--listen",
                "tcp:0",
                "--listen",
                "unix:/tmp/x.sock",
                "--shutdown-timeout",
                "3",
            )
        )
        assert isinstance(service, EchoService)
        self.assertEqual(
            [child.description for child in service.listeners],  # type: ignore[attr-defined]
            ["tcp:0", "unix:/tmp/x.sock"],
        )
        self.assertEqual(service.shutdownTimeout, 3.0)
        self.assertTrue(
            all(child.factory.shared is service.factory for child in service.listeners)
        )  # type: ignore[attr-defined]


class LogFileSearchTests(SynchronousTestCase):
    """
    The service looks among live objects for twistd's log file (which
    SIGHUP reopens) only where twistd may have opened one: a search costs
    start-up a few milliseconds.  Checked against what twistd's own logger
    then opens, run as twistd runs it.
    """

    def decide(self, *twistdArgv: str) -> tuple[bool, bool]:
        """
        @return: whether the service searches, and whether twistd opened a
            log file.
        """
        from twisted.internet import defer
        from twisted.python import failure, logfile
        from twisted.scripts._twistd_unix import ServerOptions, UnixApplicationRunner

        # -b would turn on Deferred debugging and post-mortem pdb for this
        # whole test process.
        self.patch(defer, "setDebugging", lambda on: None)
        self.patch(failure, "startDebugMode", lambda: None)
        config = ServerOptions()
        config.parseOptions(["--pidfile=", *twistdArgv, "echo", "--port", "0"])
        runner = UnixApplicationRunner(config)
        runner.preApplication()
        service = makeService(config.subOptions)
        if not isinstance(service, EchoService):
            # A daemonizing twistd's: the server is its one child.
            (service,) = service  # type: ignore[misc]
        assert isinstance(service, EchoService)
        opened: list[str] = []

        def fromFullPath(cls: object, path: str, **kwargs: object) -> io.StringIO:
            opened.append(path)
            return io.StringIO()

        self.patch(logfile.LogFile, "fromFullPath", classmethod(fromFullPath))
        # twistd's logger sets a SIGUSR1 handler where there is none.
        self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        if not config["logger"]:
            runner.logger._getLogObserver()
        return service.logFiles._twistd, bool(opened)

    def test_notToStandardOutput(self) -> None:
        self.assertEqual(self.decide("-n"), (False, False))
        self.assertEqual(self.decide("-n", "--logfile=-"), (False, False))

    def test_notToSyslog(self) -> None:
        # As on a host with a syslog daemon: where there is none, --syslog
        # is refused (tests.test_process.CheckLogDestinationTests).
        self.patch(process, "_takesLines", lambda path: True)
        self.assertEqual(self.decide("--syslog"), (False, False))

    def test_aLogFile(self) -> None:
        self.assertEqual(self.decide("-n", "--logfile=echo.log"), (True, True))
        self.assertEqual(self.decide("-n", "-l", "echo.log"), (True, True))
        # A daemon with no --logfile writes twistd.log.
        self.assertEqual(self.decide(), (True, True))

    def test_debugWithoutNodaemon(self) -> None:
        # -b turns "nodaemon" on after twistd's logger chose a file.
        self.assertEqual(self.decide("-b"), (True, True))
        searches, _ = self.decide("-n", "-b")
        self.assertTrue(searches)  # cannot be told apart from -b alone

    def test_aLoggerOfItsOwn(self) -> None:
        searches, _ = self.decide("-n", "--logger", "echotwist.logs.jsonObserver")
        self.assertTrue(searches)

    def test_twist(self) -> None:
        from twisted.application.twist._options import TwistOptions

        config = TwistOptions()
        config.parseOptions(["echo", "--port", "0"])
        service = makeService(config.subOptions)
        assert isinstance(service, EchoService)
        self.assertFalse(service.logFiles._twistd)

    def test_noRunner(self) -> None:
        options = parse()
        options.parent = None
        service = makeService(options)
        assert isinstance(service, EchoService)
        self.assertTrue(service.logFiles._twistd)


class ReactorChoiceTests(SynchronousTestCase):
    """
    When the options choose the reactor (see
    L{echotwist.process.installDefaultReactor}, tested in
    tests.test_process).
    """

    def test_beforeTheListenersAreParsed(self) -> None:
        """
        Options.postOptions chooses the reactor before it parses a listener
        (parsing imports the global reactor), and passes its parent.
        """
        import echotwist.tap as tap

        calls: list[str] = []
        self.patch(
            tap,
            "installDefaultReactor",
            lambda parent: calls.append(f"reactor {parent!r}"),
        )
        realParse = tap.parseListener
        self.patch(
            tap,
            "parseListener",
            lambda description: calls.append("listener") or realParse(description),
        )
        parse("--port", "7")
        self.assertEqual(calls, ["reactor None", "listener"])
