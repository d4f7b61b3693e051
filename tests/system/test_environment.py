"""
Options from the environment (C{ECHOTWIST_<OPTION>}) on the real twistd:
taken when the command line does not give them, and a bad one refused in
one line.
"""

from __future__ import annotations

import re

from tests._clients import echoOnce
from tests._twistd import LOOPBACK, ServerTestCase


class EnvironmentServerTests(ServerTestCase):
    def test_twistdFromEnvironment(self) -> None:
        """
        The real twistd, configured by the environment alone.
        """
        server = self.start(
            runner=[*self.twistd()],
            env={
                "ECHOTWIST_PORT": f"tcp:0:interface={LOOPBACK}",
                "ECHOTWIST_HEALTH": f"tcp:port=0:interface={LOOPBACK}",
                "ECHOTWIST_NO_CONNECTION_LOGS": "1",
            },
        )
        server.waitFor(r"Serving health on ")
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"x" * 100), b"x" * 100)
        self.assertIsNone(re.search(r" connected\b", server.output))

    def test_twistdRefuses(self) -> None:
        output = self.failedStart(
            runner=[*self.twistd()], env={"ECHOTWIST_IDLE_TIMEOUT": "soon"}
        )
        self.assertIn("ECHOTWIST_IDLE_TIMEOUT: 'soon' is not a number", output)

    def twistd(self) -> list[str]:
        from tests._twistd import command

        return [command("twistd"), "-n", "--pidfile=", "echo"]
