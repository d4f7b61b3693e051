"""
echotwist's own listener service (L{echotwist.listening}): a listen that
is still pending at stop, and its ports on the real reactor (not run).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from echotwist import EchoService, Listener
from echotwist._fast.tcp import SplicingServer
from echotwist._fast.udp import EchoPassPort
from echotwist._twisted import closeEpoll
from echotwist.datagram import DatagramPort
from echotwist.proxy import parseNetwork
from echotwist.reactor import EchotwistEPollReactor
from tests._tools import scratchDirectory, selfSignedCertificate
from tests.test_service import _Port, cannotListen


class _OutOfBuffersSocket:
    """
    A listening socket whose every accept fails as when the system is out
    of buffers.
    """

    def accept(self) -> tuple[socket.socket, object]:
        raise OSError(errno.ENOBUFS, "No buffer space available")


@implementer(IStreamServerEndpoint)
class _SlowEndpoint:
    """
    An endpoint whose listen answers later (or never), unlike all of
    echotwist's own.
    """

    def __init__(self) -> None:
        self.cancelled = False
        self.listening: Deferred[IListeningPort] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[IListeningPort]) -> None:
        self.cancelled = True

    def listen(self, factory: Factory) -> Deferred[IListeningPort]:
        return self.listening


class PendingListenTests(SynchronousTestCase):
    """
    echotwist's own listener service (see its docstring: Twisted's
    StreamServerEndpointService, without its module) with an endpoint that
    has not answered yet.
    """

    def test_stopCancelsTheListen(self) -> None:
        endpoint = _SlowEndpoint()
        service = EchoService(
            [Listener("tcp:5000", endpoint)], reactor=MemoryReactorClock()
        )
        service.privilegedStartService()
        service.startService()
        with capturedLogs() as events:
            self.successResultOf(service.stopService())
        self.assertTrue(endpoint.cancelled)
        self.assertEqual([e.get("event") for e in events if e.get("log_failure")], [])
        # It never listened: no "Stopped listening" either.
        self.assertNotIn("listener.stopped", [e.get("event") for e in events])

    def test_aLateFailureIsLogged(self) -> None:
        endpoint = _SlowEndpoint()
        service = EchoService(
            [Listener("tcp:5000", endpoint)], reactor=MemoryReactorClock()
        )
        service.startService()
        with capturedLogs() as events:
            endpoint.listening.errback(cannotListen(errno.EADDRINUSE, "in use"))
        (failure,) = [e for e in events if e.get("log_failure")]
        self.assertEqual(formatEvent(failure), "echotwist: cannot listen on tcp:5000")
        self.assertTrue(failure["log_failure"].check(CannotListenError))
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)
        # Stopping then has nothing to stop.
        self.successResultOf(service.stopService())

    def test_aLatePortIsServedAndStopped(self) -> None:
        endpoint = _SlowEndpoint()
        service = EchoService(
            [Listener("tcp:5000", endpoint)], reactor=MemoryReactorClock()
        )
        service.startService()
        journal: list[str] = []
        endpoint.listening.callback(_Port(journal))
        (child,) = service.listeners
        self.assertIsInstance(child.port, _Port)  # type: ignore[attr-defined]
        with capturedLogs() as events:
            self.successResultOf(service.stopService())
        self.assertEqual(journal, ["stopped listening"])
        self.assertIn("listener.stopped", [e.get("event") for e in events])


class RealListenerTests(TestCase):
    """
    EchoService's own listeners, on the real reactor (not run).
    """

    def start(
        self, description: str = "tcp:0:interface=127.0.0.1", **kwargs: Any
    ) -> EchoService:
        service = EchoService([description], **kwargs)
        service.privilegedStartService()
        if "reactor" not in kwargs:
            # A reactor of the test's own is not run: its cleanup (see
            # fastReactor) closes what listens on it.
            self.addCleanup(service.stopService)
        return service

    def test_socketBufferSet(self) -> None:
        (child,) = self.start(socketBuffer=16384).listeners
        sock = child.port.socket
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), 32768)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), 32768)

    def test_acceptErrorsThrottled(self) -> None:
        """
        Twisted's port logs each accept that fails; echotwist's ports pass
        at most one such line per reason every 10 seconds.
        """
        (child,) = self.start().listeners
        port = child.port
        real, port.socket = port.socket, _OutOfBuffersSocket()
        try:
            with capturedLogs() as events:
                for _ in range(50):
                    port.doRead()
        finally:
            port.socket = real
        lines = [formatEvent(e) for e in events]
        self.assertEqual(lines, ["Could not accept new connection (ENOBUFS)"])
        self.assertEqual(events[0]["event"], "listener.accept_failed")

    def fastReactor(self) -> EchotwistEPollReactor:
        """
        echotwist's reactor, not run, for listeners on the fast path.
        """
        reactor = EchotwistEPollReactor()
        self.addCleanup(closeEpoll, reactor)
        self.addCleanup(reactor.disconnectAll)
        return reactor

    def test_transports(self) -> None:
        """
        On echotwist's reactor, plain TCP connections may echo in the
        kernel; TLS ones read little, send at once, and skip Twisted's
        aggregation of small writes (an echo writes once per read); UDP
        ports answer the echo in their own pass of reads.
        """
        reactor = self.fastReactor()
        service = self.start(reactor=reactor, udp=["udp:0:interface=127.0.0.1"])
        (tcpChild,) = service.listeners
        self.assertIs(tcpChild.port.transport, SplicingServer)
        (udpChild,) = service.datagrams
        self.assertIs(type(udpChild.port), EchoPassPort)
        directory = scratchDirectory(self)
        key, certificate = selfSignedCertificate(directory)
        (tlsChild,) = self.start(
            f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
            reactor=reactor,
        ).listeners
        # Imported here: TLS is an extra (selfSignedCertificate skipped
        # this test without it).
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        from echotwist._fast.tls import DirectTLSServer
        from echotwist._fast.tlsloop import EchoTLSProtocol
        from echotwist.tls import HandshakeGate

        self.assertIs(tlsChild.port.transport, DirectTLSServer)
        # Twisted's TLS factory, behind the handshake budget.
        gate = tlsChild.port.factory
        self.assertIsInstance(gate, HandshakeGate)
        # Twisted's TLS protocol (following record boundaries for the
        # loop's TLS echo), not its write-aggregating BufferingTLSTransport.
        self.assertIs(gate.tls.protocol, EchoTLSProtocol)
        self.assertEqual(EchoTLSProtocol.__bases__, (TLSMemoryBIOProtocol,))

    def test_transportsOffTheFastPath(self) -> None:
        """
        On any other reactor (here Twisted's own, the global one of the
        tests) the fast path is off: TCP listeners, plain or under the
        PROXY wrapper, keep Twisted's C{tcp.Server}; TLS keeps its small
        reads with Twisted's write; UDP ports keep the bound and the
        scope, with each datagram handed to the protocol.
        """
        from twisted.internet import tcp

        service = self.start(udp=["udp:0:interface=127.0.0.1"])
        (proxiedChild,) = self.start(
            "haproxy:tcp:0:interface=127.0.0.1",
            proxyFrom=[parseNetwork("127.0.0.1")],
        ).listeners
        self.assertIs(proxiedChild.port.transport, tcp.Server)
        (tcpChild,) = service.listeners
        self.assertIs(tcpChild.port.transport, tcp.Server)
        (udpChild,) = service.datagrams
        self.assertIs(type(udpChild.port), DatagramPort)
        directory = scratchDirectory(self)
        key, certificate = selfSignedCertificate(directory)
        (tlsChild,) = self.start(
            f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
        ).listeners
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        from echotwist.tls import TLSServer

        self.assertIs(tlsChild.port.transport, TLSServer)
        self.assertIs(tlsChild.port.factory.tls.protocol, TLSMemoryBIOProtocol)

    def test_proxiedTLSTransport(self) -> None:
        """
        Under C{haproxy:ssl:}, TLS is outside the PROXY wrapper: the
        listener says both, and the TLS transport and the handshake budget
        are set as for C{ssl:}.
        """
        directory = scratchDirectory(self)
        key, certificate = selfSignedCertificate(directory)
        (child,) = self.start(
            f"haproxy:ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
            proxyFrom=[parseNetwork("127.0.0.1")],
            reactor=self.fastReactor(),
        ).listeners
        from echotwist._fast.tls import DirectTLSServer
        from echotwist.proxy import ProxyWrappingFactory
        from echotwist.tls import HandshakeGate

        self.assertEqual((child.tls, child.proxied), (True, True))
        self.assertIs(child.port.transport, DirectTLSServer)
        gate = child.port.factory
        self.assertIsInstance(gate, HandshakeGate)
        self.assertIsInstance(gate.tls.wrappedFactory, ProxyWrappingFactory)
