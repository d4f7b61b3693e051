"""
Values a fuzzer found accepted, given to the real C{twistd echo}: each must
end it with exit status 1, a one-line error naming the option, and no
traceback.
"""

from __future__ import annotations

import re

from echotwist.settings import optionFields
from tests._twistd import ServerTestCase

#: An Arabic-Indic digit three: Python's int() and float() take it.
ARABIC_THREE = "\u0663"


class FuzzedOptionTests(ServerTestCase):
    def refusedLine(self, option: str, value: str, *more: str) -> str:
        """
        Start twistd with C{option} set to C{value}; the one line that says
        why it refused, which must name C{option}.
        """
        output = self.failedStart(f"{option}={value}", *more)
        naming = [line for line in output.splitlines() if f"{option}: " in line]
        self.assertEqual(len(naming), 1, output)
        # The error is the last thing twistd says (after its usage text).
        self.assertEqual(naming[0], output.splitlines()[-1], output)
        return naming[0]

    def test_emptyPort(self) -> None:
        """
        C{--port ''} was taken for "no --port" and served on tcp:5000.
        """
        self.assertIn("'' is empty", self.refusedLine("--port", ""))

    def test_blanksAroundADescription(self) -> None:
        for option in ("--port", "--listen", "--udp", "--metrics"):
            for value in (" tcp:0", "tcp:0 ", "\ttcp:0"):
                line = self.refusedLine(option, value)
                self.assertIn("has blanks at its start or end", line)

    def test_negativeBacklog(self) -> None:
        for value in (
            "tcp:0:backlog=-5",
            "tcp:0:interface=127.0.0.1:backlog=-5",
            "haproxy:tcp:0:backlog=-5",
            f"tcp:0:backlog={ARABIC_THREE}",
        ):
            line = self.refusedLine("--port", value)
            self.assertIn("backlog: ", line)

    def test_unicodeDigitsInPorts(self) -> None:
        for option, value in (
            ("--port", ARABIC_THREE),
            ("--port", f"tcp:{ARABIC_THREE}"),
            ("--port", f"tcp:port={ARABIC_THREE}"),
            ("--listen", f"tcp6:{ARABIC_THREE}"),
            ("--udp", ARABIC_THREE),
            ("--udp", f"udp:{ARABIC_THREE}"),
        ):
            line = self.refusedLine(option, value)
            self.assertRegex(line, r"port|endpoint type")

    def test_unicodeDigitsInEveryNumber(self) -> None:
        """
        Every numeric option goes through one parser, which takes ASCII
        digits only: C{--ipv6-prefix \\u0663} was accepted as 3.
        """
        numeric = [
            f.metadata["option"] for f in optionFields() if "parse" in f.metadata
        ]
        self.assertIn("ipv6-prefix", numeric)
        for name in numeric:
            line = self.refusedLine(f"--{name}", ARABIC_THREE)
            self.assertIn(repr(ARABIC_THREE), line)

    def test_otherThingsIntAndFloatTake(self) -> None:
        for value in ("1_000", " 5", "5 ", "+5", "1e3", "nan", "inf", "9" * 400):
            line = self.refusedLine("--idle-timeout", value)
            self.assertRegex(line, r"is (not a|too large a) number of seconds")
        for value in ("1_000", " 5", "+5"):
            self.refusedLine("--max-connections", value)

    def test_unixModeInOctal(self) -> None:
        line = self.refusedLine("--listen", f"unix:{self.directory}/echo.sock:mode=999")
        self.assertTrue(re.search(r"mode: '999' is not a file mode", line), line)

    def test_socketBufferOverACInt(self) -> None:
        """
        C{--socket-buffer} over what setsockopt(2) takes passed the option
        check and failed at listen: "cannot listen on tcp:...: a bytes-like
        object is required, not 'int'", naming no option.
        """
        line = self.refusedLine(
            "--socket-buffer", str(2**31), "--port", "tcp:0:interface=127.0.0.1"
        )
        self.assertIn("is too large a socket buffer", line)

    def test_portGivenTwice(self) -> None:
        """
        C{--port A --port B} served on B alone, saying nothing of A.
        """
        line = self.refusedLine(
            "--port", "tcp:0:interface=127.0.0.1", "--port", "tcp:0:interface=127.0.0.2"
        )
        self.assertIn("given twice", line)
