"""
The TCP transport under TLS echo connections off the fast path (small
reads, Twisted's write) and the handshake budget's gate.  (The fast path's
TLS transport is tested in tests.test__fast_tls; the echo over TLS, end to
end, in tests.system.test_transports; its memory, in
tests.system.test_hostile.)
"""

from __future__ import annotations

import socket

from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests._tools import requireTLS

try:
    from echotwist.tls import TLS_READ_SIZE, HandshakeGate, TLSServer
except ImportError:  # TLS is an extra; setUp skips (or, in CI, fails)
    pass


class PlainTLSServerTests(SynchronousTestCase):
    """
    Off the fast path (any reactor but echotwist's), the TLS transport
    keeps its small reads and writes as Twisted's TCP transport does:
    queued, sent by the reactor when the socket is writable.
    """

    def test_writeIsTwisteds(self) -> None:
        requireTLS()
        reactor = MemoryReactorClock()
        ours, peer = socket.socketpair()
        self.addCleanup(peer.close)
        self.addCleanup(ours.close)
        ours.setblocking(False)
        transport = TLSServer(ours, Protocol(), ("127.0.0.1", 1), None, 1, reactor)
        self.assertEqual(transport.bufferSize, TLS_READ_SIZE)
        transport.write(b"record")
        # (assertIn would fail on the transport's repr, which needs a
        # reactor that started it.)
        self.assertTrue(transport in reactor.getWriters(), "queued, not sent")
        peer.setblocking(False)
        self.assertRaises(BlockingIOError, peer.recv, 100)
        transport.doWrite()
        self.assertEqual(peer.recv(100), b"record")


class HandshakeGateTests(SynchronousTestCase):
    """
    The factory a TLS port sees: the handshake budget first, Twisted's TLS
    factory after.
    """

    def setUp(self) -> None:
        requireTLS()
        from twisted.internet.address import IPv4Address
        from twisted.internet.ssl import CertificateOptions
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from echotwist import EchoFactory

        self.clock = MemoryReactorClock()
        self.books = EchoFactory(self.clock, tlsHandshakesPerSource=1)
        self.tls = TLSMemoryBIOFactory(CertificateOptions(), False, self.books)
        self.gate = HandshakeGate(self.tls, self.books)
        self.address = IPv4Address("TCP", "192.0.2.1", 40000)

    def test_overBudgetBuildsNothing(self) -> None:
        """
        Over budget, no protocol: the port closes the socket, and no TLS
        state is made.
        """
        self.books.handshaking["192.0.2.1"] = 1
        self.assertIsNone(self.gate.buildProtocol(self.address))
        self.assertEqual(
            self.books.refused,
            {"too many TLS handshakes in progress from this source": 1},
        )

    def test_withinBudgetBuildsTheTLSProtocol(self) -> None:
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        protocol = self.gate.buildProtocol(self.address)
        self.assertIsInstance(protocol, TLSMemoryBIOProtocol)
        self.assertEqual(self.books.refused, {})

    def test_startAndStopReachTheTLSFactory(self) -> None:
        self.gate.doStart()
        self.assertEqual(self.tls.numPorts, 1)
        self.gate.doStop()
        self.assertEqual(self.tls.numPorts, 0)
