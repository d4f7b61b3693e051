"""
The side listeners' connection guard (L{echotwist.guard}), on a Clock:
caps, per-source caps, lifetimes, and refusals that close under a TLS
listener's wrapping factory too.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, capturedLogs
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.guard import ConnectionGuard, GuardedConnection

log = Logger(namespace="tests.test_guard")


class _Aborting(StringTransport):
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class ConnectionGuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.guard = ConnectionGuard(
            Factory.forProtocol(Protocol),
            self.clock,
            maxConnections=3,
            lifetime=5.0,
            maxPerSource=2,
            what="side",
            event="side.refused",
            log=log,
        )

    def connect(self, host: str, factory: object = None) -> tuple[object, _Aborting]:
        address = IPv4Address("TCP", host, 4000)
        protocol = (factory or self.guard).buildProtocol(address)  # type: ignore[attr-defined]
        transport = _Aborting(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_caps(self) -> None:
        """
        C{maxPerSource} from one source, C{maxConnections} in all; one
        more is closed unanswered, and logged once under the event given.
        """
        kept = [self.connect("192.0.2.1"), self.connect("192.0.2.1")]
        with capturedLogs() as events:
            refused, transport = self.connect("192.0.2.1")
            self.assertNotIsInstance(refused, GuardedConnection)
            self.assertTrue(transport.disconnecting)
            kept.append(self.connect("192.0.2.2"))
            self.assertNotIsInstance(self.connect("192.0.2.3")[0], GuardedConnection)
        self.assertEqual(self.guard.refused, 2)
        self.assertEqual([e["event"] for e in events], ["side.refused"])
        self.assertEqual(events[0]["log_namespace"], "tests.test_guard")
        self.assertTrue(all(isinstance(p, GuardedConnection) for p, _ in kept))

    def test_lifetime(self) -> None:
        protocol, transport = self.connect("192.0.2.1")
        self.clock.advance(4.999)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.001)
        self.assertTrue(transport.aborted)

    def test_placeGivenBack(self) -> None:
        protocol, _ = self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertIsInstance(self.connect("192.0.2.1")[0], GuardedConnection)

    def test_refusedUnderAWrappingFactory(self) -> None:
        """
        Under a factory that wraps whatever it is given (as Twisted's TLS
        listener does, C{None} too), a refused connection is still closed
        as it is made.
        """
        wrapping = WrappingFactory(self.guard)
        self.connect("192.0.2.1", wrapping)
        self.connect("192.0.2.1", wrapping)
        _, transport = self.connect("192.0.2.1", wrapping)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
