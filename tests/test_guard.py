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
            self.assertTrue(transport.disconnecting)
            refused.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
            kept.append(self.connect("192.0.2.2"))
            self.assertNotIsInstance(self.connect("192.0.2.3")[0], GuardedConnection)
        self.assertEqual(self.guard.refused, 2)
        self.assertEqual([e["event"] for e in events], ["side.refused"])
        self.assertEqual(events[0]["log_namespace"], "tests.test_guard")
        self.assertTrue(all(isinstance(p, GuardedConnection) for p, _ in kept))

    def test_unixPeersAreNoSource(self) -> None:
        """
        Peers with no host (a UNIX socket's) are held by C{maxConnections}
        only, as the echo's are: not all counted as one source.
        """
        from twisted.internet.address import UNIXAddress

        for n in range(3):
            protocol = self.guard.buildProtocol(UNIXAddress(None))
            self.assertIsInstance(protocol, GuardedConnection, str(n))
            assert protocol is not None
            protocol.makeConnection(_Aborting(peerAddress=UNIXAddress(None)))
        self.assertNotIsInstance(
            self.guard.buildProtocol(UNIXAddress(None)), GuardedConnection
        )

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


class GuardBehindProxyTests(SynchronousTestCase):
    """
    A guard behind echotwist's PROXY wrapper (C{--metrics haproxy:...},
    C{--identify haproxy:...}): the wrapper builds the guarded protocol as
    it accepts the connection, and starts it only once the header is in.
    """

    def setUp(self) -> None:
        from echotwist.proxy import ProxyWrappingFactory

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
        self.proxy = ProxyWrappingFactory(self.guard, self.clock)

    def connect(self) -> tuple[object, _Aborting]:
        address = IPv4Address("TCP", "192.0.2.1", 4000)
        wrapper = self.proxy.buildProtocol(address)
        transport = _Aborting(peerAddress=address)
        wrapper.makeConnection(transport)
        return wrapper, transport

    def test_abandonedGivesItsPlaceBack(self) -> None:
        """
        Connections closed before their PROXY header (a TCP health check,
        a peer not in --proxy-from) give their place back: they did not
        use up their source's for good.
        """
        for _ in range(5):
            wrapper, _ = self.connect()
            wrapper.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        wrapper, transport = self.connect()
        wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7\r\n")  # type: ignore[attr-defined]
        self.assertFalse(transport.disconnecting)
        self.assertIsInstance(
            wrapper.wrappedProtocol,  # type: ignore[attr-defined]
            GuardedConnection,
        )
        self.assertEqual(
            self.guard._sources,
            {wrapper.wrappedProtocol: "203.0.113.7"},  # type: ignore[attr-defined]
        )

    def test_waitingForTheHeaderCounts(self) -> None:
        """
        A connection still waiting for its header holds a place, and its
        lifetime runs from its accept: one that never sends a header is
        closed after C{lifetime} seconds, and gives its place back.
        """
        self.guard.maxPerSource = 10
        waiting = [self.connect() for _ in range(3)]
        refused, refusedTransport = self.connect()
        self.assertNotIsInstance(refused.wrappedProtocol, GuardedConnection)  # type: ignore[attr-defined]
        # Closed at once, not held open waiting for a header.
        self.assertTrue(refusedTransport.disconnecting)
        refused.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.clock.advance(5.0)
        self.assertTrue(all(transport.aborted for _, transport in waiting))
        for wrapper, _ in waiting:
            wrapper.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertEqual((self.guard.protocols, self.guard._sources), ({}, {}))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_countedAsTheHeadersClient(self) -> None:
        """
        Behind the proxy, the per-source limit holds each client the
        header names, not the proxy: more clients than C{maxPerSource}
        get through one proxy at once, and one client no more than
        C{maxPerSource}.
        """
        self.guard.maxConnections = 10
        started = []
        for n in range(4):
            wrapper, transport = self.connect()
            wrapper.dataReceived(  # type: ignore[attr-defined]
                f"PROXY TCP4 203.0.113.{n} 192.0.2.1 40000 7\r\n".encode()
            )
            self.assertFalse(transport.disconnecting, str(n))
            started.append(wrapper)
        with capturedLogs() as events:
            for _ in range(3):
                wrapper, transport = self.connect()
                wrapper.dataReceived(  # type: ignore[attr-defined]
                    b"PROXY TCP4 198.51.100.9 192.0.2.1 40000 7\r\n"
                )
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.guard.refused, 1)
        self.assertEqual([e["event"] for e in events], ["side.refused"])
        self.assertIn("198.51.100.9", events[0]["peer"])
        wrapper.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertEqual(self.guard._bySource["198.51.100.9"], 2)
        self.assertNotIn("192.0.2.1", self.guard._bySource)

    def test_proxysOwnSourceFullRefusesNoOneElse(self) -> None:
        """
        Headers naming the proxy's own source (HAProxy's health checks with
        a LOCAL header, clients on the proxy's host) fill that source; a
        connection the proxy carries for another client is still accepted:
        whose it is is known only once its header is in.
        """
        self.guard.maxConnections = 10
        for _ in range(2):
            wrapper, transport = self.connect()
            wrapper.dataReceived(  # type: ignore[attr-defined]
                b"PROXY TCP4 192.0.2.1 192.0.2.1 40000 7\r\n"
            )
            self.assertFalse(transport.disconnecting)
        wrapper, transport = self.connect()
        self.assertIsInstance(
            wrapper.wrappedProtocol,  # type: ignore[attr-defined]
            GuardedConnection,
        )
        wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7\r\n")  # type: ignore[attr-defined]
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.guard.refused, 0)
        self.assertEqual(self.guard._bySource, {"192.0.2.1": 2, "203.0.113.7": 1})

    def test_halfCloseAfterTheHeader(self) -> None:
        """
        A client that sends its header, then closes its side (a FIN, which
        HAProxy passes on) has its connection closed, and its place given
        back.  The guarded connection took on the PROXY wrapper's
        C{IHalfCloseableProtocol} with its transport's interfaces, and
        without a C{readConnectionLost} of its own looked the wrapper's
        up, which asked it again: a RecursionError, and a traceback of a
        thousand lines logged for each such client.
        """
        self.guard.maxConnections = 10
        for method in ("readConnectionLost", "writeConnectionLost"):
            wrapper, transport = self.connect()
            wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7\r\n")  # type: ignore[attr-defined]
            getattr(wrapper, method)()
            self.assertTrue(transport.disconnecting, method)
            wrapper.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertEqual(
            (self.guard.protocols, self.guard._sources, self.guard._bySource),
            ({}, {}, {}),
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refusalSaysHowManyOthersAreOpen(self) -> None:
        """
        A connection refused when its header names a full source is not
        among the connections its refusal says are already open (it held a
        place while it waited for its header).
        """
        self.guard.maxConnections = 10
        for _ in range(2):
            wrapper, _ = self.connect()
            wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7\r\n")  # type: ignore[attr-defined]
        with capturedLogs() as events:
            wrapper, transport = self.connect()
            wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7\r\n")  # type: ignore[attr-defined]
        self.assertTrue(transport.disconnecting)
        self.assertEqual((events[0]["open"], events[0]["fromSource"]), (2, 2))
