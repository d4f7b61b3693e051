"""
Which backend answered, in memory: the identity line on --identify and the
datagram answer on --identify-udp.  (On the real twistd, behind PROXY too
and never on the echo ports: tests.system.test_identity.)
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist import __version__
from echotwist.datagram import DatagramPolicy
from echotwist.guard import GuardedConnection
from echotwist.identity import (
    IDENTIFY_CONNECTION_LIFETIME,
    MAX_IDENTIFY_CONNECTIONS,
    MAX_IDENTIFY_CONNECTIONS_PER_SOURCE,
    IdentifyDatagram,
    IdentifyFactory,
    Identity,
    identifyListener,
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


class _HeldTransport(StringTransport):
    """
    A connection whose closing waits for the peer, as a TLS one does
    before its handshake: C{loseConnection} does not end it.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class IdentifyListenerTests(SynchronousTestCase):
    """
    The --identify listener's guard: a connection that does not end on
    its own (TLS, a client that never sends its handshake) is aborted after
    a lifetime, and only so many are open at once, so that such clients
    cannot take every descriptor the echo needs.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = identifyListener(IDENTITY, self.clock)

    def connect(self, host: str) -> tuple[object, _HeldTransport]:
        """
        Connect from C{host}: the protocol, if the guard let the connection
        in (else None, after checking that it was closed unanswered).
        """
        address = IPv4Address("TCP", host, 40000)
        protocol = self.factory.buildProtocol(address)
        assert protocol is not None
        transport = _HeldTransport(peerAddress=address)
        protocol.makeConnection(transport)
        # One over its source's limit is refused as it is made, one over
        # the cap as it is built: closed unanswered either way.
        if isinstance(protocol, GuardedConnection) and not (
            transport.disconnecting and transport.value() == b""
        ):
            return protocol, transport
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        protocol.connectionLost(Failure(ConnectionDone()))
        return None, transport

    def test_lineStillSaid(self) -> None:
        protocol, transport = self.connect("192.0.2.1")
        self.assertEqual(transport.value(), IDENTITY.line(transport.getPeer()))
        self.assertTrue(transport.disconnecting)

    def test_heldConnectionAborted(self) -> None:
        _, transport = self.connect("192.0.2.1")
        self.clock.advance(IDENTIFY_CONNECTION_LIFETIME - 0.001)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.001)
        self.assertTrue(transport.aborted)

    def test_perSource(self) -> None:
        for _ in range(MAX_IDENTIFY_CONNECTIONS_PER_SOURCE):
            self.assertIsNotNone(self.connect("192.0.2.1")[0])
        self.assertIsNone(self.connect("192.0.2.1")[0])
        self.assertIsNotNone(self.connect("192.0.2.2")[0])

    def test_total(self) -> None:
        for n in range(MAX_IDENTIFY_CONNECTIONS):
            host = f"10.0.{n // MAX_IDENTIFY_CONNECTIONS_PER_SOURCE}.1"
            self.assertIsNotNone(self.connect(host)[0])
        self.assertIsNone(self.connect("192.0.2.9")[0])
        self.assertEqual(self.factory.refused, 1)

    def test_closedConnectionsLeaveRoom(self) -> None:
        """
        Connections that end give their places back (the lifetime's
        timers with them).
        """
        for _ in range(MAX_IDENTIFY_CONNECTIONS_PER_SOURCE):
            protocol, _ = self.connect("192.0.2.1")
            protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertIsNotNone(self.connect("192.0.2.1")[0])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)


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
