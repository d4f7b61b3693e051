"""
Which backend answered, in memory: the identity line on --identify and the
datagram answer on --identify-udp.  (On the real twistd, behind PROXY too
and never on the echo ports: tests.system.test_identity.)
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from echotwist import __version__
from echotwist.datagram import DatagramPolicy
from echotwist.identity import (
    IdentifyDatagram,
    IdentifyFactory,
    Identity,
    identityFor,
)

IDENTITY = Identity(hostname="host-1", instance="echo-0", version="9.9")


class IdentityTests(SynchronousTestCase):
    def test_instanceFromOption(self) -> None:
        identity = identityFor("echo-3", {"POD_NAME": "p", "HOSTNAME": "h"}, "host")
        self.assertEqual(identity, Identity("host", "echo-3", __version__))

    def test_instanceFromPodName(self) -> None:
        """
        Without --instance-name: the pod's name, then the container's host
        name, then the host name.
        """
        self.assertEqual(
            identityFor(None, {"POD_NAME": "p", "HOSTNAME": "h"}, "host").instance,
            "p",
        )
        self.assertEqual(identityFor(None, {"HOSTNAME": "h"}, "host").instance, "h")
        self.assertEqual(identityFor(None, {}, "host").instance, "host")

    def test_line(self) -> None:
        line = IDENTITY.line(IPv4Address("TCP", "203.0.113.9", 4444))
        self.assertEqual(
            line,
            b"echotwist host=host-1 instance=echo-0 version=9.9"
            b" client=203.0.113.9:4444\r\n",
        )

    def test_escaped(self) -> None:
        """
        A name from the environment, a client's chosen UNIX socket name:
        one line of printable ASCII, spaces kept out of the fields.
        """
        identity = identityFor("a\x1b[2J\nb c", {}, "h\x00st\u2028x")
        line = identity.line(UNIXAddress(b"/tmp/\x1b]0;x\x07"))
        self.assertEqual(
            line,
            b"echotwist host=h\\x00st_x instance=a\\x1b[2J_b_c"
            b" version="
            + __version__.encode()
            + b" client=unix:/tmp/\\x1b]0;x\\x07\r\n",
        )

    def test_stream(self) -> None:
        """
        A connection gets the line with its own address, then is closed.
        """
        protocol = IdentifyFactory(IDENTITY).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 7777))
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), IDENTITY.line(transport.getPeer()))
        self.assertTrue(transport.disconnecting)


class _DatagramTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def write(self, data: bytes, addr: object) -> None:
        self.sent.append((data, addr))


class IdentifyDatagramTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.policy = DatagramPolicy(10, self.clock)
        self.protocol = IdentifyDatagram(IDENTITY, self.policy)
        self.transport = _DatagramTransport()
        self.protocol.transport = self.transport  # type: ignore[assignment]

    def test_answered(self) -> None:
        self.protocol.datagramReceived(b"?", ("192.0.2.1", 40000))
        self.assertEqual(
            self.transport.sent,
            [
                (
                    IDENTITY.line(IPv4Address("UDP", "192.0.2.1", 40000)),
                    ("192.0.2.1", 40000),
                )
            ],
        )

    def test_noReflection(self) -> None:
        """
        The answer is larger than the question: from a privileged port (a
        spoofed echo or chargen) nothing is answered, and a flood from one
        source gets its rate only.
        """
        self.protocol.datagramReceived(b"?", ("192.0.2.1", 19))
        self.assertEqual(self.transport.sent, [])
        for _ in range(100):
            self.protocol.datagramReceived(b"?", ("192.0.2.2", 40000))
        self.assertEqual(len(self.transport.sent), 1)  # a burst of 10/10: 1
        self.assertEqual(self.policy.counts["over the rate limit"], 99)

    def test_noLoopWithAnEchoServer(self) -> None:
        """
        An echo server that gets the identity line (a datagram spoofed from
        it) sends it straight back: after the loop guard's few tolerated
        echoes the line is no longer answered, whatever the rate.
        """
        self.protocol.policy = DatagramPolicy(0, self.clock)
        echoServer = ("192.0.2.9", 7007)
        self.protocol.datagramReceived(b"?", echoServer)
        for _ in range(20):
            self.clock.advance(0.001)
            sent = len(self.transport.sent)
            # The echo server answers the last line it got.
            self.protocol.datagramReceived(self.transport.sent[-1][0], echoServer)
            if len(self.transport.sent) == sent:
                break
        self.assertLessEqual(len(self.transport.sent), 4)
        self.assertEqual(self.protocol.policy.counts["echo loop"], 1)
