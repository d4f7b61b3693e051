"""
echotwist-probe's command line (L{echotwist.probe.options}).
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.options import ProbeOptions
from echotwist.probe.payload import (
    HEADER,
)


class ProbeOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> ProbeOptions:
        options = ProbeOptions()
        options.parseOptions(list(argv))
        return options

    def refused(self, *argv: str) -> str:
        with self.assertRaises(usage.UsageError) as caught:
            self.parse(*argv)
        return str(caught.exception)

    def test_defaults(self) -> None:
        """
        Like ping: one probe of 64 bytes a second, until stopped.
        """
        options = self.parse("tcp:127.0.0.1:5000")
        self.assertEqual(
            (options["size"], options["interval"], options["count"]), (64, 1.0, 0)
        )
        self.assertIsInstance(options["seed"], int)

    def test_optionsAfterTheTarget(self) -> None:
        options = self.parse("tcp:127.0.0.1:5000", "-c", "5", "--size", "100", "-q")
        self.assertEqual((options["count"], options["size"]), (5, 100))
        self.assertTrue(options["quiet"])

    def test_floodNeedsABound(self) -> None:
        """
        An interval of 0 is refused without --count or --duration.
        """
        self.assertIn("--count or --duration", self.refused("-i", "0", "tcp:h:7"))
        self.parse("-i", "0", "-c", "10", "tcp:h:7")
        self.parse("-i", "0", "-w", "1", "tcp:h:7")

    def test_badNumbersNameTheOption(self) -> None:
        for argv, says in [
            (("-c", "-1"), "--count must be 0 or more"),
            (("-c", "many"), "--count must be a number"),
            (("-i", "nan"), "--interval must be from 0"),
            (("-s", "0"), "--size must be from 1"),
            (("--max-loss", "101"), "--max-loss must be from 0 to 100"),
            (("-P", "100000"), "--parallel must be from 1 to 1000"),
            (("-s", "67108865"), "--size must be from 1 to 67108864, not"),
            (("--rate", "0"), "--rate must be from 1 to 1000000, not"),
            (("-W", "0"), "--timeout must be from 0.001 to 3600, not"),
        ]:
            self.assertIn(says, self.refused(*argv, "tcp:h:7"), argv)

    def test_udpSizes(self) -> None:
        self.assertIn(f"from {HEADER.size}", self.refused("-s", "10", "udp:h:7"))
        self.assertIn("65507", self.refused("-s", "65508", "udp:h:7"))
        self.parse("-s", "65507", "udp:h:7")

    def test_combinationsRefused(self) -> None:
        self.assertIn("stream", self.refused("--connect-each", "udp:h:7"))
        self.assertIn("tls:", self.refused("--insecure", "tcp:h:7"))
        self.assertIn("tls:", self.refused("--ca", "/dev/null", "tcp:h:7"))
        self.assertIn("cannot read", self.refused("--ca", "/nonexistent", "tls:h:7"))
        self.assertIn("no target", self.refused("-c", "1"))

    def test_outputThatIsADirectory(self) -> None:
        """
        --json naming a directory is refused before the run, not found out
        with a traceback when the run is over.  (--plot goes through the
        same check, after the check for matplotlib.)
        """
        directory = self.mktemp()
        os.mkdir(directory)
        self.assertEqual(
            self.refused("--json", directory, "tcp:h:7"),
            f"--json {directory}: is a directory",
        )

    def test_countRefusedForStreamBulk(self) -> None:
        """
        A stream --bulk run has no probes to count: --count is refused,
        not ignored.  Over UDP it bounds the datagrams sent.
        """
        self.assertEqual(
            self.refused("-c", "3", "--bulk", "tcp:h:7"),
            "--count is not for --bulk over a stream: give --duration",
        )
        self.assertEqual(self.parse("-c", "3", "--bulk", "udp:h:7")["count"], 3)

    def test_bulkRunsTenSecondsUnlessTold(self) -> None:
        self.assertEqual(self.parse("--bulk", "tcp:h:7")["duration"], 10.0)
        self.assertEqual(self.parse("--bulk", "-w", "2", "tcp:h:7")["duration"], 2.0)
