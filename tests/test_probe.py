"""
echotwist-probe's command (L{echotwist.probe}): the heading of a run and
the run its options ask for, on a MemoryReactorClock.  (The command as a
user runs it, against real servers: tests.system.test_probe_command.)
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe import _logLine, heading, makeRun
from echotwist.probe.bulk import StreamBulk
from echotwist.probe.datagram import DatagramRun
from echotwist.probe.options import ProbeOptions
from echotwist.probe.stream import StreamLatency
from tests._tools import requireTLS, scratchDirectory


def parsed(*argv: str) -> ProbeOptions:
    options = ProbeOptions()
    options.parseOptions([*argv, "--seed", "7"])
    return options


class HeadingTests(SynchronousTestCase):
    """
    The first line says what is probed, how, and the seed to repeat it.
    """

    def test_paced(self) -> None:
        self.assertEqual(
            heading(parsed("tcp:127.0.0.1:5000", "-s", "100", "-i", "0.5")),
            "PROBE tcp:127.0.0.1:5000: 100 bytes every 0.5 s, seed 7",
        )

    def test_closedLoop(self) -> None:
        self.assertEqual(
            heading(parsed("tcp:127.0.0.1:5000", "-i", "0", "-c", "3")),
            "PROBE tcp:127.0.0.1:5000: 64 bytes,"
            " each as soon as the last is back, seed 7",
        )

    def test_bulk(self) -> None:
        self.assertEqual(
            heading(parsed("tcp:127.0.0.1:5000", "--bulk")),
            "PROBE tcp:127.0.0.1:5000: streaming both ways, seed 7",
        )
        self.assertEqual(
            heading(parsed("udp:127.0.0.1:5000", "--bulk", "--rate", "250")),
            "PROBE udp:127.0.0.1:5000: streaming datagrams at 250/s, seed 7",
        )


class MakeRunTests(SynchronousTestCase):
    """
    The options choose the run: datagrams for a UDP target, latency or bulk
    for a stream; a target that cannot be used is one line, and no run.
    """

    def made(self, *argv: str) -> tuple[object, str]:
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            run = makeRun(MemoryReactorClock(), parsed(*argv), lambda line: None)
        return run, stderr.getvalue()

    def test_datagram(self) -> None:
        run, error = self.made("udp:127.0.0.1:5000", "-c", "1")
        self.assertIsInstance(run, DatagramRun)
        self.assertEqual(error, "")

    def test_streamLatency(self) -> None:
        run, error = self.made("tcp:127.0.0.1:5000", "-c", "1")
        self.assertIsInstance(run, StreamLatency)
        self.assertEqual(error, "")

    def test_streamBulk(self) -> None:
        run, error = self.made("tcp:127.0.0.1:5000", "--bulk")
        self.assertIsInstance(run, StreamBulk)
        self.assertEqual(error, "")

    def test_unusableTrustRoot(self) -> None:
        requireTLS()
        path = os.path.join(scratchDirectory(self), "ca.pem")
        with open(path, "w") as f:
            f.write("not a certificate\n")
        run, error = self.made("tls:127.0.0.1:5000", "--ca", path)
        self.assertIsNone(run)
        self.assertEqual(
            error, f"echotwist-probe: --ca {path}: not a PEM certificate\n"
        )


class LogLineTests(SynchronousTestCase):
    """
    What Twisted logs while the probe runs reaches standard error as one
    escaped line per critical event, never a traceback.
    """

    def logged(self, event: dict[str, object]) -> str:
        out = io.StringIO()
        with redirect_stderr(out):
            _logLine(event)
        return out.getvalue()

    def failure(self, error: Exception) -> object:
        from twisted.python.failure import Failure

        try:
            raise error
        except Exception:
            return Failure()

    def test_criticalIsOneLine(self) -> None:
        from twisted.logger import LogLevel

        text = self.logged(
            {
                "log_level": LogLevel.critical,
                "log_format": "while doing {what}",
                "what": "x\x1b[2J",
                "log_failure": self.failure(ValueError("bad\nnews")),
            }
        )
        self.assertEqual(
            text, "echotwist-probe: while doing x\\x1b[2J: ValueError: bad news\n"
        )

    def test_restIsNotPrinted(self) -> None:
        from twisted.logger import LogLevel

        for level in (LogLevel.info, LogLevel.warn, LogLevel.error):
            self.assertEqual(
                self.logged({"log_level": level, "log_format": "noise"}), ""
            )

    def test_certificateErrorLeftToTheProbe(self) -> None:
        requireTLS()
        from service_identity import CertificateError
        from twisted.logger import LogLevel

        self.assertEqual(
            self.logged(
                {
                    "log_level": LogLevel.critical,
                    "log_format": "while verifying certificate",
                    "log_failure": self.failure(CertificateError("no SAN")),
                }
            ),
            "",
        )

    def test_legacyErrorIsOneLine(self) -> None:
        """
        An error logged through Twisted's legacy C{log.err} (Twisted 24.3's
        TLS info callback does: C{"Error during info_callback"}) carries
        its failure as C{failure} and its traceback in its text: one line
        too, and a service_identity error is left to the probe.
        """
        requireTLS()
        from service_identity import CertificateError
        from twisted.logger import globalLogPublisher
        from twisted.python import log as legacy

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            legacy.err(self.failure(ValueError("bad\nnews")), "Error during x")
            legacy.err(self.failure(CertificateError("no SAN")), "Error during y")
        finally:
            globalLogPublisher.removeObserver(events.append)
        self.flushLoggedErrors(ValueError, CertificateError)
        self.assertEqual(len(events), 2)
        self.assertEqual(
            self.logged(events[0]),
            "echotwist-probe: Error during x: ValueError: bad news\n",
        )
        self.assertEqual(self.logged(events[1]), "")
