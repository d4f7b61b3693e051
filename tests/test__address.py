"""
Addresses a peer controls, made safe for a log line (L{echotwist._address}).
(Its source groups are tested with the limits they key:
tests.test_limits.SourceGroupTests.)
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist._address import escape


class EscapeTests(SynchronousTestCase):
    def test_printableAsciiUnchanged(self) -> None:
        self.assertEqual(escape("[2001:db8::1]:80 ok"), "[2001:db8::1]:80 ok")

    def test_controlsNewlinesAndNonAscii(self) -> None:
        self.assertEqual(
            escape("1.2.3.4\x1b[2J\x00\tFORGED\r\n\x7f\u2028é"),
            "1.2.3.4\\x1b[2J\\x00\\x09FORGED\\x0d\\x0a\\x7f\\u2028\\xe9",
        )

    def test_backslashesCannotForgeAnEscape(self) -> None:
        self.assertEqual(escape("\\x1b"), "\\\\x1b")
