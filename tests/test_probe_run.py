"""
echotwist-probe's run (L{echotwist.probe.run}): a failure said in one
line.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.run import describeFailure
from tests._tools import requireTLS


class DescribeFailureTests(SynchronousTestCase):
    def test_knownFailures(self) -> None:
        from twisted.internet import error

        for exception, says in [
            (error.ConnectionRefusedError(), "connection refused"),
            (error.TimeoutError(), "no connection (timed out)"),
            (error.DNSLookupError(), "the host name does not resolve"),
            (error.ConnectionDone(), "the target closed the connection"),
            (error.ConnectionLost(), "the connection was reset"),
            # A UNIX socket's connect failure carries only its errno.
            (
                error.getConnectError((2, "No such file or directory")),
                "could not connect (No such file or directory)",
            ),
        ]:
            self.assertEqual(describeFailure(Failure(exception)), says)

    def test_peerTextEscaped(self) -> None:
        """
        Text of an unexpected failure reaches the error line escaped: what
        a peer might put in it cannot drive the terminal.
        """
        line = describeFailure(Failure(ValueError("bad \x1b[2J\x00 thing")))
        self.assertEqual(line, "ValueError: bad \\x1b[2J\\x00 thing")

    def test_certificateForAnotherHost(self) -> None:
        """
        A trusted certificate for another host name: trusting another
        authority (--ca) would not help, and the line does not say it
        would.
        """
        requireTLS()
        from service_identity import VerificationError

        self.assertEqual(
            describeFailure(Failure(VerificationError(errors=[]))),
            "the certificate is not for the target's host name"
            " (--insecure to skip the check)",
        )
