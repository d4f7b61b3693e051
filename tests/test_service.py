"""
EchoService: listeners, start-up errors, and the drain on stop.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from echotwist import Echo, EchoService, Listener
from echotwist.datagram import DATAGRAMS_PER_READ, DatagramPort
from echotwist.fastpath import SplicingServer
from echotwist.proxy import parseNetwork
from echotwist.service import CannotListen
from echotwist.sockets import clampSocketBuffers
from tests._tools import scratchDirectory, selfSignedCertificate


@implementer(IListeningPort)
class _Port:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred[None]:
        self.journal.append("stopped listening")
        return succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 5000)


@implementer(IStreamServerEndpoint)
class _Endpoint:
    def __init__(self, journal: list[str], error: Exception | None = None) -> None:
        self.journal = journal
        self.error = error

    def listen(self, factory: Factory) -> Deferred[IListeningPort]:
        if self.error is not None:
            return fail(self.error)
        self.journal.append("listening")
        return succeed(_Port(self.journal))


def cannotListen(code: int, text: str) -> CannotListenError:
    return CannotListenError("127.0.0.1", 5000, OSError(code, text))


class StartTests(SynchronousTestCase):
    def test_listensOnEveryDescription(self) -> None:
        reactor = MemoryReactorClock()
        service = EchoService(["5000", "tcp:5001:interface=127.0.0.1"], reactor=reactor)
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(5000, ""), (5001, "127.0.0.1")],
        )
        self.assertTrue(
            all(f.shared is service.factory for _, f, _, _ in reactor.tcpServers)
        )
        started = [
            e["description"] for e in events if e.get("event") == "listener.started"
        ]
        self.assertEqual(started, ["tcp:5000", "tcp:5001:interface=127.0.0.1"])

    def test_untrustedProxyIsSaidOnce(self) -> None:
        reactor = MemoryReactorClock()
        service = EchoService(
            ["haproxy:tcp:0", "haproxy:unix:/tmp/echo.sock", "tcp:0"], reactor=reactor
        )
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
            service.stopService()
            service.startService()
        warnings = [e for e in events if e.get("event") == "proxy.untrusted"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(
            warnings[0]["listeners"], "haproxy:tcp:0, haproxy:unix:/tmp/echo.sock"
        )

    def test_trustedProxiesOrWorkersSayNothing(self) -> None:
        for kwargs in ({"proxyFrom": ["10.0.0.0/8"]}, {"warnOpenProxy": False}):
            reactor = MemoryReactorClock()
            service = EchoService(["haproxy:tcp:0"], reactor=reactor, **kwargs)
            with capturedLogs() as events:
                service.privilegedStartService()
                service.startService()
            self.assertNotIn("proxy.untrusted", [e.get("event") for e in events])
            (_, factory, _, _) = reactor.tcpServers[0]
            self.assertEqual(
                factory.trusted,
                None if "warnOpenProxy" in kwargs else [parseNetwork("10.0.0.0/8")],
            )

    def test_udpReadsWholeDatagrams(self) -> None:
        """
        Each UDP port gets its own protocol (Twisted binds a protocol to one
        port) and reads up to 65536 bytes, not Twisted's default 8192, a
        bounded number of datagrams a pass (see DatagramPort).
        """
        reactor = MemoryReactorClock()
        service = EchoService(
            [],
            udp=["udp:0:interface=127.0.0.1", "udp:0:interface=\\:\\:1"],
            reactor=reactor,
        )
        service.privilegedStartService()
        first, second = (child.port for child in service.datagrams)
        for port, host in ((first, "127.0.0.1"), (second, "::1")):
            self.assertIsInstance(port, DatagramPort)
            self.assertEqual(port.maxPacketSize, 65536)
            self.assertEqual(port.maxDatagramsPerRead, DATAGRAMS_PER_READ)
            self.assertEqual(port.getHost().host, host)
            self.assertIn(port, reactor.readers)
        self.assertIsNot(first.protocol, second.protocol)
        self.assertIs(first.protocol.policy, second.protocol.policy)
        stopped = service.stopService()
        reactor.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(reactor.readers, set())

    def test_twistStartsWithoutPrivilegedStart(self) -> None:
        """
        twist calls startService only; the listeners start all the same.
        """
        reactor = MemoryReactorClock()
        EchoService(["tcp:5000"], reactor=reactor).startService()
        self.assertEqual(len(reactor.tcpServers), 1)

    def refusal(self, error: Exception) -> str:
        service = EchoService([Listener("tcp:5000", _Endpoint([], error))])
        message = str(self.assertRaises(CannotListen, service.privilegedStartService))
        self.assertNotIn("\n", message)
        return message

    def test_portInUse(self) -> None:
        self.assertEqual(
            self.refusal(cannotListen(errno.EADDRINUSE, "Address already in use")),
            "echotwist: cannot listen on tcp:5000: Address already in use"
            " (another process is listening there)",
        )

    def test_privilegedPort(self) -> None:
        self.assertEqual(
            self.refusal(cannotListen(errno.EACCES, "Permission denied")),
            "echotwist: cannot listen on tcp:5000: Permission denied"
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        )

    def test_otherError(self) -> None:
        self.assertEqual(
            self.refusal(OverflowError("bind(): port must be 0-65535.")),
            "echotwist: cannot listen on tcp:5000: bind(): port must be 0-65535.",
        )

    def test_twistSeesTheSameRefusal(self) -> None:
        service = EchoService(
            [
                Listener(
                    "tcp:5000", _Endpoint([], cannotListen(errno.EADDRINUSE, "in use"))
                )
            ]
        )
        self.assertRaises(CannotListen, service.startService)


class StopTests(SynchronousTestCase):
    def test_stopsListeningThenDrains(self) -> None:
        reactor = MemoryReactorClock()
        journal: list[str] = []
        service = EchoService(
            [Listener("tcp:5000", _Endpoint(journal))],
            reactor=reactor,
            shutdownTimeout=7,
        )
        service.startService()
        protocol = service.factory.buildProtocol(None)
        assert isinstance(protocol, Echo)
        transport = StringTransport()
        protocol.makeConnection(transport)

        stopped = service.stopService()
        self.assertEqual(journal, ["listening", "stopped listening"])
        self.assertFalse(transport.disconnecting)
        self.assertNoResult(stopped)

        # A running reactor's time passes in steps; each quiet check
        # schedules the next from its own step.
        reactor.pump([service.factory.drainQuiet / 8] * 9)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_deadlineIsTheShutdownTimeout(self) -> None:
        reactor = MemoryReactorClock()
        service = EchoService(
            [Listener("tcp:5000", _Endpoint([]))], reactor=reactor, shutdownTimeout=7
        )
        service.startService()
        protocol = service.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.pauseProducing()  # its reader is not reading
        stopped = service.stopService()
        reactor.advance(6.9)
        self.assertFalse(transport.disconnected)
        reactor.advance(0.1)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)


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


class _BrokenPort(_Port):
    def getHost(self) -> IPv4Address:
        raise RuntimeError("no address")


@implementer(IStreamServerEndpoint)
class _BrokenPortEndpoint:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    def listen(self, factory: Factory) -> Deferred[IListeningPort]:
        return succeed(_BrokenPort(self.journal))


class SetUpFailureTests(SynchronousTestCase):
    def test_aPortThatCannotBeSetUpIsClosedAndSaid(self) -> None:
        """
        What goes wrong setting up a port just opened ends start-up with
        one line, and the port is closed, not left open.
        """
        journal: list[str] = []
        service = EchoService(
            [Listener("tcp:5000", _BrokenPortEndpoint(journal))],
            reactor=MemoryReactorClock(),
        )
        message = str(self.assertRaises(CannotListen, service.privilegedStartService))
        self.assertEqual(message, "echotwist: cannot listen on tcp:5000: no address")
        self.assertEqual(journal, ["stopped listening"])


class StartWeightTests(SynchronousTestCase):
    """
    What starting C{twistd -n echo} imports: not the modules only some
    listeners need, which cost every start time (docs/performance.rst).
    """

    def test_startImportsNeitherAutomatNorThePROXYParsers(self) -> None:
        # (Nor twisted.protocols.policies, without the TLS extra; with it,
        # twisted.internet.tcp imports it through twisted.protocols.tls.)
        code = (
            "import sys\n"
            "import echotwist.reactor, echotwist.tap\n"
            "from twisted.plugins.echotwist_plugin import echo\n"
            "options = echo.options()\n"
            "options.parseOptions(['--port', 'tcp:0:interface=127.0.0.1'])\n"
            "service = echo.makeService(options)\n"
            "service.privilegedStartService()\n"
            "service.startService()\n"
            "service.stopService()\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(("
            "'automat', 'twisted.application.internet',"
            " 'twisted.protocols.haproxy', 'echotwist.proxy')))))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        self.assertEqual(out.strip(), "")


class SocketBufferTests(SynchronousTestCase):
    """
    SO_SNDBUF and SO_RCVBUF are set on TCP listening sockets, and the
    connections accepted from them inherit both.
    """

    def listening(self, family: int = socket.AF_INET) -> _SocketPort:
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        if family == socket.AF_UNIX:
            sock.bind(os.path.join(scratchDirectory(self), "s"))
        else:
            sock.bind(("127.0.0.1", 0))
        sock.listen()
        return _SocketPort(sock)

    def buffers(self, sock: socket.socket) -> tuple[int, int]:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        )

    def test_tcpListenerAndItsConnections(self) -> None:
        port = self.listening()
        clampSocketBuffers("tcp:0", port, 32768)
        # Linux doubles the value, for its bookkeeping.
        self.assertEqual(self.buffers(port.socket), (65536, 65536))
        client = socket.create_connection(port.socket.getsockname(), timeout=5)
        self.addCleanup(client.close)
        accepted, _ = port.socket.accept()
        self.addCleanup(accepted.close)
        self.assertEqual(self.buffers(accepted), (65536, 65536))

    def test_unixListenerUntouched(self) -> None:
        port = self.listening(socket.AF_UNIX)
        before = self.buffers(port.socket)
        clampSocketBuffers("unix:s", port, 8192)
        self.assertEqual(self.buffers(port.socket), before)

    def test_kernelCapIsLogged(self) -> None:
        with open("/proc/sys/net/core/wmem_max") as f:
            cap = int(f.read())
        port = self.listening()
        with capturedLogs() as events:
            clampSocketBuffers("tcp:0", port, cap * 2)
        self.assertEqual(
            [e["cap"] for e in events if e.get("event") == "listener.buffer_capped"][
                :1
            ],
            ["net.core.wmem_max"],
        )


class _SocketPort:
    """
    Just enough of a listening port: its socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


class _RefusingSocket:
    """
    A listening socket whose every accept fails as when the system is out
    of buffers.
    """

    def accept(self) -> tuple[socket.socket, object]:
        raise OSError(errno.ENOBUFS, "No buffer space available")


class RealListenerTests(TestCase):
    """
    EchoService's own listeners, on the real reactor (not run).
    """

    def start(
        self, description: str = "tcp:0:interface=127.0.0.1", **kwargs: Any
    ) -> EchoService:
        service = EchoService([description], **kwargs)
        service.privilegedStartService()
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
        real, port.socket = port.socket, _RefusingSocket()
        try:
            with capturedLogs() as events:
                for _ in range(50):
                    port.doRead()
        finally:
            port.socket = real
        lines = [formatEvent(e) for e in events]
        self.assertEqual(lines, ["Could not accept new connection (ENOBUFS)"])
        self.assertEqual(events[0]["event"], "listener.accept_failed")

    def test_transports(self) -> None:
        """
        Plain TCP connections may echo in the kernel; TLS ones read little,
        send at once, and skip Twisted's aggregation of small writes (an
        echo writes once per read).
        """
        (tcpChild,) = self.start().listeners
        self.assertIs(tcpChild.port.transport, SplicingServer)
        directory = scratchDirectory(self)
        key, certificate = selfSignedCertificate(directory)
        (tlsChild,) = self.start(
            f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
        ).listeners
        # Imported here: TLS is an extra (selfSignedCertificate skipped
        # this test without it).
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        from echotwist.tls import HandshakeGate, TLSServer
        from echotwist.tlsfast import EchoTLSProtocol

        self.assertIs(tlsChild.port.transport, TLSServer)
        # Twisted's TLS factory, behind the handshake budget.
        gate = tlsChild.port.factory
        self.assertIsInstance(gate, HandshakeGate)
        # Twisted's TLS protocol (following record boundaries for the
        # loop's TLS echo), not its write-aggregating BufferingTLSTransport.
        self.assertIs(gate.tls.protocol, EchoTLSProtocol)
        self.assertEqual(EchoTLSProtocol.__bases__, (TLSMemoryBIOProtocol,))

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
        ).listeners
        from echotwist.proxy import ProxyWrappingFactory
        from echotwist.tls import HandshakeGate, TLSServer

        self.assertEqual((child.tls, child.proxied), (True, True))
        self.assertIs(child.port.transport, TLSServer)
        gate = child.port.factory
        self.assertIsInstance(gate, HandshakeGate)
        self.assertIsInstance(gate.tls.wrappedFactory, ProxyWrappingFactory)
