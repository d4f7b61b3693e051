"""
Every option from the environment (C{ECHOTWIST_<OPTION>}): the command line
wins, repeated options split on whitespace, a bad value is refused in one
line naming the variable.  (On the real twistd:
tests.system.test_environment.)
"""

from __future__ import annotations

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from echotwist._address import parseNetwork
from echotwist.environment import NOT_FROM_ENVIRONMENT, environmentVariable
from echotwist.tap import Options, settingsFrom


def parse(environ: dict[str, str], *argv: str) -> Options:
    options = Options(environ)
    options.parseOptions(list(argv))
    return options


class EnvironmentTests(SynchronousTestCase):
    def refused(self, environ: dict[str, str], *argv: str) -> str:
        message = str(self.assertRaises(UsageError, parse, environ, *argv))
        self.assertNotIn("\n", message)
        return message

    def test_name(self) -> None:
        self.assertEqual(
            environmentVariable("max-connections"), "ECHOTWIST_MAX_CONNECTIONS"
        )

    def test_everyOptionHasAVariable(self) -> None:
        """
        Every option but --help and --version is read from its variable.
        """
        options = Options()
        names = [spec.rstrip("=") for spec in options.longOpt]
        for name in names:
            if name in NOT_FROM_ENVIRONMENT:
                continue
            value = {"no-connection-logs": "1"}.get(name, "x")
            arguments = Options({environmentVariable(name): value})
            given = arguments.environmentArguments([])
            self.assertEqual(given[0], f"--{name}", name)
            self.assertEqual(
                arguments.fromEnvironment, {name: environmentVariable(name)}
            )

    def test_values(self) -> None:
        options = parse(
            {
                "ECHOTWIST_MAX_CONNECTIONS": "7",
                "ECHOTWIST_SHUTDOWN_TIMEOUT": "30",
                "ECHOTWIST_NO_CONNECTION_LOGS": "yes",
                "ECHOTWIST_INSTANCE_NAME": "echo-3",
                "ECHOTWIST_PORT": "tcp:0:interface=127.0.0.1",
            }
        )
        settings = settingsFrom(options)
        self.assertEqual(settings.maxConnections, 7)
        self.assertEqual(settings.shutdownTimeout, 30)
        self.assertFalse(settings.logConnections)
        self.assertEqual(settings.instanceName, "echo-3")
        self.assertEqual(
            [listener.description for listener in options["listeners"]],
            ["tcp:0:interface=127.0.0.1"],
        )

    def test_commandLineWins(self) -> None:
        options = parse(
            {"ECHOTWIST_MAX_CONNECTIONS": "7", "ECHOTWIST_PORT": "tcp:1"},
            "--max-connections",
            "9",
            "-p",
            "tcp:0:interface=127.0.0.1",
        )
        self.assertEqual(options["max-connections"], 9)
        self.assertEqual(
            [listener.description for listener in options["listeners"]],
            ["tcp:0:interface=127.0.0.1"],
        )

    def test_repeated(self) -> None:
        """
        A repeated option's values are separated by whitespace; given on
        the command line, the environment's are not added to them.
        """
        environ = {
            "ECHOTWIST_LISTEN": " tcp:0:interface=127.0.0.1\n\tunix:/tmp/e.sock ",
            "ECHOTWIST_PROXY_FROM": "10.0.0.0/8 2001:db8::7",
        }
        options = parse(environ)
        self.assertEqual(
            [listener.description for listener in options["listeners"]],
            ["tcp:0:interface=127.0.0.1", "unix:/tmp/e.sock"],
        )
        self.assertEqual(
            settingsFrom(options).proxyFrom,
            (parseNetwork("10.0.0.0/8"), parseNetwork("2001:db8::7")),
        )
        options = parse(environ, "--listen", "tcp:0:interface=127.0.0.2")
        self.assertEqual(
            [listener.description for listener in options["listeners"]],
            ["tcp:0:interface=127.0.0.2"],
        )

    def test_falseFlag(self) -> None:
        options = parse({"ECHOTWIST_NO_CONNECTION_LOGS": "off"})
        self.assertTrue(settingsFrom(options).logConnections)

    def test_badValuesNameTheVariable(self) -> None:
        for environ, expected in [
            (
                {"ECHOTWIST_MAX_CONNECTIONS": "many"},
                "ECHOTWIST_MAX_CONNECTIONS: 'many' is not a whole number",
            ),
            (
                {"ECHOTWIST_NO_CONNECTION_LOGS": "maybe"},
                "ECHOTWIST_NO_CONNECTION_LOGS: 'maybe' is not 1, true, yes or on",
            ),
            (
                {"ECHOTWIST_PORT": "abc"},
                "ECHOTWIST_PORT: 'abc' is neither a port number",
            ),
            (
                {"ECHOTWIST_LISTEN": "tcp:0:interface=127.0.0.1 nonsense:1"},
                "ECHOTWIST_LISTEN: ",
            ),
            (
                {"ECHOTWIST_PROXY_FROM": "proxy"},
                "ECHOTWIST_PROXY_FROM: 'proxy' is not an IP address or network",
            ),
            ({"ECHOTWIST_UDP": "x"}, "ECHOTWIST_UDP: "),
            (
                {"ECHOTWIST_INSTANCE_NAME": "\x1b[2J"},
                "ECHOTWIST_INSTANCE_NAME: '\\x1b[2J' is not an instance name",
            ),
        ]:
            self.assertIn(expected, self.refused(environ))

    def test_commandLineErrorNamesTheOption(self) -> None:
        """
        A bad value on the command line is the option's, even with the
        variable set too.
        """
        message = self.refused(
            {"ECHOTWIST_MAX_CONNECTIONS": "7"}, "--max-connections", "many"
        )
        self.assertTrue(message.startswith("--max-connections: "), message)

    def test_otherVariablesIgnored(self) -> None:
        """
        Variables that name no option (the test suite's own, say) are left
        alone.
        """
        options = parse({"ECHOTWIST_REQUIRE_TOOLS": "1", "ECHOTWIST_NOPE": "x"})
        self.assertEqual(options.fromEnvironment, {})
