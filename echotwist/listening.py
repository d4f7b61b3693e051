# -*- test-case-name: tests.test_listening,tests.test_service -*-
"""
The services that run one listener each, stream or UDP: listening (a
failure ends start-up with one line), the socket options of a TCP
listener, the transports of TLS and, on echotwist's reactor, of the fast
path (asked of L{echotwist._fast.classFor}), and a log line when it
starts and stops.

What a listener description means, and how it is parsed, is
L{echotwist.listeners}'.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.application.service import Service
from twisted.internet import tcp
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocolFactory
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

from echotwist._address import formatAddress
from echotwist._fast import PROXIED, TCP, TLS, TLS_PROTOCOL, UDP, classFor
from echotwist._files import whyCannotCreateIn
from echotwist._twisted import datagramPortFromDescriptor, setAcceptLogObserver
from echotwist.connections import EchoFactory
from echotwist.listeners import DatagramListener, Listener, descriptionFields
from echotwist.sockets import clampSocketBuffers, setKeepalive
from echotwist.stream import Echo

if TYPE_CHECKING:
    from echotwist.datagram import DatagramPolicy, DatagramPort

__all__ = [
    "CannotListen",
    "DatagramListenerService",
    "ListenerFactory",
    "ListenerService",
]

# As before this module was split from echotwist.service: operators filter
# on the namespace.
log = Logger(namespace="echotwist.service")
_T = TypeVar("_T")


def _unixDirectoryProblem(description: str) -> str | None:
    """
    Why no socket can be made in the directory of a C{unix:} listener's
    path (missing, read-only, not ours to write), if that is why.
    """
    fields = descriptionFields(description)
    if fields[0] == "haproxy":
        fields = fields[1:]
    if fields[0] != "unix" or len(fields) < 2:
        return None
    path = next(
        (f[len("address=") :] for f in fields[1:] if f.startswith("address=")),
        fields[1],
    )
    return whyCannotCreateIn(os.path.dirname(os.path.abspath(path.replace("\\", ""))))


def _whyNotListening(error: Exception, description: str = "") -> str:
    problem = _unixDirectoryProblem(description)
    if problem is not None:
        # Twisted's UNIX listener fails on its lock file first, and names
        # that (a symbolic link named by a pid), not the directory.
        return problem
    socketError = getattr(error, "socketError", None)
    if isinstance(error, CannotListenError) and isinstance(socketError, OSError):
        why = socketError.strerror or str(socketError)
        if socketError.errno == errno.EADDRINUSE:
            return f"{why} (another process is listening there)"
        if socketError.errno == errno.EACCES:
            return f"{why} (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        return why
    return str(error) or type(error).__name__


class CannotListen(Exception):
    """
    A listener could not listen, so the server must not start.  The
    message is the one line a user sees.

    Not a SystemExit: a daemonizing twistd reports only an Exception to the
    process waiting in the foreground (which otherwise waits forever).
    When it reaches the top of twistd -n or twist, the tap's excepthook
    (L{echotwist.tap}) prints the message alone, without a traceback; the exit status is 1.
    """


def _listenOrExit(description: str, listen: Callable[[], _T]) -> _T:
    """
    Call C{listen}; if it fails, end start-up with one line saying why.
    """
    try:
        return listen()
    except Exception as e:
        raise CannotListen(
            f"echotwist: cannot listen on {description}:"
            f" {_whyNotListening(e, description)}"
        ) from None


_STARTED = {
    "metrics": "Serving metrics on {address} ({description})",
    "health": "Serving health on {address} ({description})",
    "identify": "Serving the identity line on {address} ({description})",
    "identify-udp": "Serving the identity line on {address} ({description})",
}


def _logStarted(description: str, port: IListeningPort, logKind: str = "echo") -> None:
    log.info(
        _STARTED.get(logKind, "Listening on {address} ({description})"),
        event="listener.started",
        kind=logKind,
        address=formatAddress(port.getHost()),
        description=description,
    )


def _logStopped(description: str) -> None:
    log.info(
        "Stopped listening on {description}",
        event="listener.stopped",
        description=description,
    )


class ListenerFactory(Factory):
    """
    What one listener's port sees as its factory: the server's shared
    L{EchoFactory}, with each connection told which listener took it.
    """

    noisy = False

    def __init__(self, shared: EchoFactory, description: str) -> None:
        self.shared = shared
        self.description = description

    # Twisted 26 allows addr to be None, and older ones not.
    def buildProtocol(self, addr: IAddress | None) -> Echo:  # type: ignore[override, unused-ignore]
        """
        A protocol of the shared factory, told which listener took it.
        """
        protocol = self.shared.buildProtocol(addr)  # type: ignore[arg-type, unused-ignore]
        assert isinstance(protocol, Echo)
        protocol.listener = self.description
        return protocol

    def logPrefix(self) -> str:
        """
        The prefix of the log lines of its connections.
        """
        return "echotwist"


class ListenerService(Service):
    """
    One listener.  A listener that cannot listen stops the start of the
    whole server with a one-line reason instead of a traceback.

    Twisted's L{StreamServerEndpointService
    <twisted.application.internet.StreamServerEndpointService>} does this
    (with C{_raiseSynchronously}, as C{strports.service} uses it), and this
    is that service, kept to the part echotwist uses, for one reason: its
    module, C{twisted.application.internet}, imports C{automat} for its
    client services, a measurable part of the time from C{twistd -n echo}
    to its first echo (docs/performance.rst), which a plain Twisted
    C{.tac} (through C{strports}) pays and echotwist's start need not.
    """

    def __init__(
        self,
        listener: Listener,
        factory: IProtocolFactory,
        logKind: str = "echo",
        *,
        socketBuffer: int = 0,
        keepalive: tuple[int, int, int] = (0, 0, 0),
        acceptLog: ILogObserver | None = None,
    ) -> None:
        """
        @param logKind: what its log line says it serves (the C{kind} of
            C{listener.started}).
        @param socketBuffer: SO_SNDBUF and SO_RCVBUF for the connections of
            a TCP listener, set on the listening socket, whose connections
            inherit them; 0 for the kernel's autotuning.
        @param keepalive: TCP keepalive for the connections of a TCP
            listener, as idle, interval and count (see C{--keepalive});
            C{(0, 0, 0)} for none.
        @param acceptLog: where the port's own log lines about failing
            accepts go (Twisted's, e.g. out of file descriptors); None for
            the global log.
        """
        self.endpoint = listener.endpoint
        self.tls = listener.tls
        self.proxied = listener.proxied
        self.factory = factory
        self.description = listener.description
        self.logKind = logKind
        self.socketBuffer = socketBuffer
        self.keepalive = keepalive
        self.acceptLog = acceptLog
        self.port: IListeningPort | None = None
        # The endpoint's listen, once called: fires with the port (or None,
        # if it failed after start-up, or was cancelled).
        self._listening: Deferred[IListeningPort | None] | None = None

    def privilegedStartService(self) -> None:
        """
        Listen (before twistd drops privileges: ports under 1024).
        """
        super().privilegedStartService()
        _listenOrExit(self.description, self._listen)

    def startService(self) -> None:
        """
        Listen, unless L{privilegedStartService} did.
        """
        super().startService()
        if self._listening is None:
            _listenOrExit(self.description, self._listen)

    def _listen(self) -> None:
        """
        Call the endpoint's listen: a failure now (all of echotwist's
        endpoints fail at once) is raised; a later one is logged.
        """
        now = True
        failedNow: list[Failure] = []

        def failed(reason: Failure) -> None:
            if now:
                failedNow.append(reason)
            elif not reason.check(CancelledError):
                log.failure(
                    "echotwist: cannot listen on {description}",
                    reason,
                    description=self.description,
                )

        listening = self.endpoint.listen(self.factory).addCallback(self._started)
        self._listening = listening.addErrback(failed)
        now = False
        if failedNow:
            self._listening = None
            failedNow[0].raiseException()

    def _started(self, port: IListeningPort) -> IListeningPort:
        try:
            return self._setUp(port)
        except BaseException:
            # Not serving, then (the failure is raised or logged): close the
            # port rather than leave it open with nothing to stop it.
            port.stopListening()
            raise

    def _setUp(self, port: IListeningPort) -> IListeningPort:
        # First of all: the kernel completes handshakes before anything is
        # accepted, and each connection takes the listening socket's
        # buffers as they are then.  (Those of the few microseconds between
        # listen() and this, at start, keep the kernel's autotuning.)
        if self.socketBuffer:
            clampSocketBuffers(self.description, port, self.socketBuffer)
        if self.keepalive[0]:
            setKeepalive(port, self.keepalive)
        _logStarted(self.description, port, self.logKind)
        self.port = port
        if self.acceptLog is not None and isinstance(port, tcp.Port):
            setAcceptLogObserver(port, self.acceptLog)
        factory = getattr(port, "factory", None)
        tls: Any = None
        # An ssl: listener's port holds Twisted's TLS factory, over the
        # PROXY wrapper's factory under haproxy:ssl:, over ours.
        if self.tls or self.proxied:
            # Imported here, for the listeners that have one: a plain tcp:
            # listener never meets a WrappingFactory, and without the TLS
            # extra nothing else imports twisted.protocols.policies, so
            # every start would pay for it (docs/performance.rst).
            from twisted.protocols.policies import WrappingFactory

            if self.tls and isinstance(factory, WrappingFactory):
                tls, factory = factory, factory.wrappedFactory
            if self.proxied and isinstance(factory, WrappingFactory):
                factory = factory.wrappedFactory
        if (
            type(port) is tcp.Port
            and port.transport is tcp.Server
            and isinstance(factory, ListenerFactory)
        ):
            if tls is not None:
                # TLS to Echo: small reads (echotwist.tls), sent at once
                # on the fast path.
                from echotwist.tls import HandshakeGate, TLSServer, echoTLSProtocol

                # (Twisted before 26 types it as BufferingTLSTransport.)
                tls.protocol = (  # type: ignore[assignment, unused-ignore]
                    classFor(port.reactor, TLS_PROTOCOL) or echoTLSProtocol
                )
                port.transport = classFor(port.reactor, TLS) or TLSServer
                if factory.shared.admission.tlsHandshakesPerSource or (
                    factory.shared.admission.tlsHandshakeRate
                ):
                    # Started already (listening): the gate only passes its
                    # stop on, when the port stops.
                    port.factory = HandshakeGate(tls, factory.shared)
            else:
                # TCP to Echo, directly or under the PROXY wrapper: on the
                # fast path its connections may echo in the kernel;
                # elsewhere they keep Twisted's tcp.Server.
                fast = classFor(port.reactor, PROXIED if self.proxied else TCP)
                if fast is not None:
                    port.transport = fast
        return port

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, or stop trying to.
        """
        super().stopService()
        listening, self._listening = self._listening, None
        if listening is None:
            return succeed(None)
        listening.cancel()

        def stop(port: IListeningPort | None) -> Deferred[None] | None:
            if port is None:
                return None  # it never listened: nothing to say
            stopped = port.stopListening() or succeed(None)
            return stopped.addCallback(lambda result: _logStopped(self.description))

        return listening.addCallback(stop)


class DatagramListenerService(Service):
    """
    One UDP listener.
    """

    def __init__(
        self,
        listener: DatagramListener,
        policy: DatagramPolicy,
        reactor: Any,
        protocol: DatagramProtocol | None = None,
        logKind: str = "udp",
    ) -> None:
        """
        @param protocol: what answers; by default the datagram echo under
            C{policy}.
        @param logKind: what its log line says it serves.
        """
        # Imported here, as the UDP echo's other modules are: a start
        # without a UDP listener need not load them (docs/performance.rst).
        from echotwist.datagram import DatagramEcho

        self.listener = listener
        self.description = listener.description
        self.protocol = protocol if protocol is not None else DatagramEcho(policy)
        self.logKind = logKind
        self._reactor = reactor
        self._port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        """
        Listen (before twistd drops privileges: ports under 1024).
        """
        super().privilegedStartService()
        self._port = _listenOrExit(self.description, self._listen)
        _logStarted(self.description, self._port, self.logKind)

    def _listen(self) -> IListeningPort:
        # What reactor.listenUDP and adoptDatagramPort do, with echotwist's
        # port (see DatagramPort; the fast path's on its reactor) in place
        # of Twisted's.
        from echotwist.datagram import MAX_DATAGRAM, DatagramPort

        listener = self.listener
        portType: type[DatagramPort] = classFor(self._reactor, UDP) or DatagramPort
        if listener.fileno is not None:
            family = socket.socket(fileno=listener.fileno)
            try:
                port = datagramPortFromDescriptor(
                    portType,
                    self._reactor,
                    listener.fileno,
                    family.family,
                    self.protocol,
                    MAX_DATAGRAM,
                )
            finally:
                family.close()  # the port took a duplicate
        else:
            port = portType(
                listener.port,
                self.protocol,
                listener.interface,
                MAX_DATAGRAM,
                self._reactor,
            )
        port.startListening()
        return port

    @property
    def port(self) -> IListeningPort | None:
        """
        The listening port, once listening; None before, and once stopped.
        """
        return self._port

    def startService(self) -> None:
        """
        Listen, unless L{privilegedStartService} did.
        """
        super().startService()
        if self._port is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, and say so.
        """
        super().stopService()
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        stopped = port.stopListening()
        d = stopped if isinstance(stopped, Deferred) else succeed(None)
        return d.addCallback(lambda result: _logStopped(self.description))
