# -*- test-case-name: tests.test_service -*-
"""
The service that composes the listeners and drains connections on shutdown.

What a listener description means, and how it is parsed, is
L{echotwist.listeners}'.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.application.service import IService, MultiService, Service
from twisted.internet import tcp
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
)
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure

from echotwist._address import (
    DEFAULT_IPV6_PREFIX,
    Network,
    escape,
    formatAddress,
    parseNetwork,
)
from echotwist._twisted import datagramPortFromDescriptor, setAcceptLogObserver
from echotwist.connections import DEFAULT_DRAIN_QUIET, EchoFactory
from echotwist.datagram import (
    MAX_DATAGRAM,
    DatagramEcho,
    DatagramPolicy,
    DatagramPort,
)
from echotwist.fastpath import SplicingServer
from echotwist.identity import (
    IdentifyDatagram,
    IdentifyFactory,
    Identity,
    identityFor,
)
from echotwist.limits import ThrottledObserver
from echotwist.listeners import (
    DatagramListener,
    Listener,
    _fields,
    parseDatagramListener,
    parseListener,
)
from echotwist.logs import LogFiles
from echotwist.settings import MIN_SOCKET_BUFFER, Settings
from echotwist.signals import SignalHandlers
from echotwist.stream import Echo

if TYPE_CHECKING:
    from echotwist.supervisor import SupervisorService

__all__ = [
    "CannotListen",
    "DEFAULT_DRAIN_QUIET",
    "DEFAULT_EVICT_IDLE_AFTER",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_IPV6_PREFIX",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_PER_SOURCE",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DEFAULT_SOCKET_BUFFER",
    "DEFAULT_UDP_RATE",
    "MIN_SOCKET_BUFFER",
    "EchoService",
    "LogFiles",
]

log = Logger()
_T = TypeVar("_T")

# twistd echo's defaults, for those who build an EchoService by hand.
DEFAULT_SHUTDOWN_TIMEOUT: float = Settings.shutdownTimeout
DEFAULT_UDP_RATE: float = Settings.udpRate
DEFAULT_MAX_CONNECTIONS: int = Settings.maxConnections
DEFAULT_MAX_PER_SOURCE: int = Settings.maxPerSource
DEFAULT_IDLE_TIMEOUT: float = Settings.idleTimeout
DEFAULT_EVICT_IDLE_AFTER: float = Settings.evictIdleAfter
DEFAULT_SOCKET_BUFFER: int = Settings.socketBuffer


def _missingDirectory(description: str) -> str | None:
    """
    The directory of a C{unix:} listener's path, if it does not exist.
    """
    fields = _fields(description)
    if fields[0] == "haproxy":
        fields = fields[1:]
    if fields[0] != "unix" or len(fields) < 2:
        return None
    path = next(
        (f[len("address=") :] for f in fields[1:] if f.startswith("address=")),
        fields[1],
    )
    directory = os.path.dirname(os.path.abspath(path.replace("\\", "")))
    return None if os.path.isdir(directory) else directory


def _whyNotListening(error: Exception, description: str = "") -> str:
    directory = _missingDirectory(description)
    if directory is not None:
        # Twisted's UNIX listener fails on its lock file first, and names
        # that, not the directory.
        return f"its directory {directory} does not exist"
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


class _ListenerFactory(Factory):
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
        protocol = self.shared.buildProtocol(addr)  # type: ignore[arg-type, unused-ignore]
        assert isinstance(protocol, Echo)
        protocol.listener = self.description
        return protocol

    def logPrefix(self) -> str:
        return "echotwist"


def _tcpSocket(port: IListeningPort) -> socket.socket | None:
    """
    The listening socket of C{port}, if it is an IPv4 or IPv6 one.
    """
    sock = getattr(port, "socket", None)
    if not isinstance(sock, socket.socket) or sock.family not in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return None
    return sock


def _clampSocketBuffers(description: str, port: IListeningPort, size: int) -> None:
    """
    Set SO_SNDBUF and SO_RCVBUF to C{size} on a TCP listening socket.
    Connections accepted from it inherit both, from before their handshake
    (so the window offered fits), and with them the kernel's autotuning
    turned off: a client that sends and never reads pins at most about four
    times C{size} of kernel memory (Linux doubles the value set, for its
    bookkeeping) instead of megabytes.  Not for UNIX sockets, whose memory
    the kernel bounds already (net.core.wmem_default a socket).
    """
    sock = _tcpSocket(port)
    if sock is None:
        return
    for option, cap in (
        (socket.SO_SNDBUF, "net.core.wmem_max"),
        (socket.SO_RCVBUF, "net.core.rmem_max"),
    ):
        sock.setsockopt(socket.SOL_SOCKET, option, size)
        got = sock.getsockopt(socket.SOL_SOCKET, option) // 2
        if got < size:
            log.warn(
                "{description}: the kernel caps socket buffers at {got} bytes"
                " ({cap}), below --socket-buffer {size}",
                event="listener.buffer_capped",
                description=description,
                got=got,
                size=size,
                cap=cap,
            )


def _setKeepalive(port: IListeningPort, keepalive: tuple[int, int, int]) -> None:
    """
    Turn TCP keepalive on for the connections of a TCP listening socket:
    after C{keepalive[0]} seconds of silence, a probe every C{keepalive[1]}
    seconds, and the connection reset after C{keepalive[2]} unanswered.
    Linux copies these options from the listening socket to every
    connection it accepts, and starts the timer from the handshake, so this
    costs nothing per connection; a connection whose probes go unanswered
    fails with ETIMEDOUT and is closed like any other lost connection.
    (An adopted socket's own settings are overwritten: the option says.)
    """
    sock = _tcpSocket(port)
    if sock is None:
        return
    idle, interval, count = keepalive
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        (getattr(socket, "TCP_KEEPIDLE", None), idle),
        (getattr(socket, "TCP_KEEPINTVL", None), interval),
        (getattr(socket, "TCP_KEEPCNT", None), count),
    ):
        # Linux has all three; elsewhere the system's timings stand.
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class _ListenerService(Service):
    """
    One listener.  A listener that cannot listen stops the start of the
    whole server with a one-line reason instead of a traceback.

    Twisted's L{StreamServerEndpointService
    <twisted.application.internet.StreamServerEndpointService>} does this
    (with C{_raiseSynchronously}, as C{strports.service} uses it), and this
    is that service, kept to the part echotwist uses, for one reason: its
    module, C{twisted.application.internet}, imports C{automat} for its
    client services, 17 ms or more of the 250 ms from C{twistd -n echo} to
    its first echo on the benchmark's machine, which a plain Twisted
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
            _clampSocketBuffers(self.description, port, self.socketBuffer)
        if self.keepalive[0]:
            _setKeepalive(port, self.keepalive)
        _logStarted(self.description, port, self.logKind)
        self.port = port
        if self.acceptLog is not None and isinstance(port, tcp.Port):
            setAcceptLogObserver(port, self.acceptLog)
        factory = getattr(port, "factory", None)
        tls: Any = None
        # An ssl: listener's port holds Twisted's TLS factory, over the
        # PROXY wrapper's factory under haproxy:ssl:, over ours.
        if self.tls and isinstance(factory, WrappingFactory):
            tls, factory = factory, factory.wrappedFactory
        if self.proxied and isinstance(factory, WrappingFactory):
            factory = factory.wrappedFactory
        if (
            type(port) is tcp.Port
            and port.transport is tcp.Server
            and isinstance(factory, _ListenerFactory)
        ):
            if tls is not None:
                # TLS to Echo: small reads, sent at once (echotwist.tls).
                from echotwist.tls import HandshakeGate, TLSServer, echoTLSProtocol

                # (Twisted before 26 types it as BufferingTLSTransport.)
                tls.protocol = echoTLSProtocol  # type: ignore[assignment, unused-ignore]
                port.transport = TLSServer
                if factory.shared.tlsHandshakesPerSource or (
                    factory.shared.tlsHandshakeRate
                ):
                    # Started already (listening): the gate only passes its
                    # stop on, when the port stops.
                    port.factory = HandshakeGate(tls, factory.shared)
            else:
                # TCP to Echo, directly or under the PROXY wrapper: its
                # connections may echo in the kernel.
                port.transport = SplicingServer
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


class _DatagramListenerService(Service):
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
        self.listener = listener
        self.description = listener.description
        self.protocol = protocol if protocol is not None else DatagramEcho(policy)
        self.logKind = logKind
        self._reactor = reactor
        self._port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._port = _listenOrExit(self.description, self._listen)
        _logStarted(self.description, self._port, self.logKind)

    def _listen(self) -> IListeningPort:
        # What reactor.listenUDP and adoptDatagramPort do, with echotwist's
        # port (see DatagramPort) in place of Twisted's.
        listener = self.listener
        if listener.fileno is not None:
            family = socket.socket(fileno=listener.fileno)
            try:
                port = datagramPortFromDescriptor(
                    DatagramPort,
                    self._reactor,
                    listener.fileno,
                    family.family,
                    self.protocol,
                    MAX_DATAGRAM,
                )
            finally:
                family.close()  # the port took a duplicate
        else:
            port = DatagramPort(
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
        return self._port

    def startService(self) -> None:
        super().startService()
        if self._port is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        stopped = port.stopListening()
        d = stopped if isinstance(stopped, Deferred) else succeed(None)
        return d.addCallback(lambda result: _logStopped(self.description))


def _settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """
    C{settings} (C{twistd echo}'s defaults if None) with C{overrides}, and
    C{proxyFrom} as networks: a program may give their text, parsed here,
    once.
    """
    settings = dataclasses.replace(settings or Settings(), **overrides)
    if settings.proxyFrom is None:
        return settings
    return dataclasses.replace(
        settings,
        proxyFrom=tuple(
            parseNetwork(item) if isinstance(item, str) else item
            for item in settings.proxyFrom
        ),
    )


class EchoService(MultiService):
    """
    An echo server: one L{EchoFactory} behind any number of stream listeners.

    Stopping it (SIGTERM or SIGINT under twistd) stops accepting at once,
    lets every open connection finish what it was sent, and closes each
    once it has been quiet for C{drainQuiet} seconds; whatever is still
    open after C{shutdownTimeout} seconds is aborted.

    Its children, each a named L{MultiService} with one job:
    C{"listeners"} (the echo's stream listeners), C{"datagrams"} (its UDP
    listeners), C{"identify"} (the identity line's listeners), C{"workers"}
    (with workers: the L{SupervisorService
    <echotwist.supervisor.SupervisorService>} that serves the echo's
    listeners in worker processes) and C{"pages"} (the metrics and health
    sites, which stop only after the drain).

    @ivar factory: the L{EchoFactory} every listener shares.
    """

    def __init__(
        self,
        listen: Iterable[Listener | str] = ("tcp:5000",),
        *,
        udp: Iterable[DatagramListener | str] = (),
        settings: Settings | None = None,
        metrics: Listener | str | None = None,
        health: Listener | str | None = None,
        identify: Listener | str | None = None,
        identifyUDP: DatagramListener | str | None = None,
        identity: Identity | None = None,
        warnOpenProxy: bool = True,
        logFiles: LogFiles | None = None,
        reactor: Any = None,
        supervise: Callable[..., SupervisorService] | None = None,
        **overrides: Any,
    ) -> None:
        """
        @param listen: port numbers or server endpoint descriptions (see
            L{parseListener}), or L{Listener}s already parsed.
        @param udp: UDP ports or C{udp:PORT:interface=ADDRESS} descriptions
            (see L{parseDatagramListener}), or L{DatagramListener}s.
        @param settings: limits, timeouts and the rest (see
            L{echotwist.settings.Settings}); C{twistd echo}'s defaults if
            None.
        @param metrics: where to serve Prometheus metrics at C{/metrics}, as
            a server endpoint description; None for nowhere.  The health
            pages (L{echotwist.health}) are served there too.
        @param health: where to serve the health pages without the metrics,
            as a server endpoint description; None for nowhere.
        @param identify: where to answer each connection with the identity
            line (L{echotwist.identity}), as a server endpoint description;
            None for nowhere.
        @param identifyUDP: where to answer each datagram with the identity
            line, as for C{udp}; None for nowhere.
        @param identity: what the identity line and C{/info} say; by
            default L{identityFor}'s, for C{settings.instanceName}.
        @param logFiles: the log files SIGHUP reopens; by default twistd's
            C{--logfile}, if any.
        @param reactor: the reactor to listen with; the global one if None.
        @param supervise: to serve the echo's listeners in worker processes:
            called with the settings, the reactor, the C{"listeners"} and
            C{"datagrams"} services and the L{SignalHandlers}, it returns
            the L{SupervisorService <echotwist.supervisor.SupervisorService>}
            (e.g. a C{functools.partial} of it); None to serve them here.
        @param overrides: fields of L{Settings} to change from C{settings},
            e.g. C{shutdownTimeout=30} or C{maxPerSource=0}.
        """
        super().__init__()
        self.settings = settings = _settings(settings, overrides)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.logFiles = logFiles if logFiles is not None else LogFiles()
        self.signals = SignalHandlers(reactor)
        self.factory = EchoFactory(
            reactor,
            maxConnections=settings.maxConnections,
            maxPerSource=settings.maxPerSource,
            idleTimeout=settings.idleTimeout,
            logConnections=settings.logConnections,
            ipv6Prefix=settings.ipv6Prefix,
            evictIdleAfter=settings.evictIdleAfter,
            drainQuiet=settings.drainQuiet,
            tlsHandshakesPerSource=settings.tlsHandshakesPerSource,
            tlsHandshakeRate=settings.tlsHandshakeRate,
        )
        self.datagramPolicy = DatagramPolicy(
            settings.udpRate, reactor, ipv6Prefix=settings.ipv6Prefix
        )
        self.shutdownTimeout = settings.shutdownTimeout
        self.proxyFrom: list[Network] | None = None
        if settings.proxyFrom is not None:
            self.proxyFrom = list(settings.proxyFrom)
        self._openProxies: list[str] = []
        self._warnOpenProxy = warnOpenProxy
        self.socketBuffer = settings.socketBuffer
        self.draining = False
        self.identity = (
            identity if identity is not None else identityFor(settings.instanceName)
        )
        self.listeners = self._group("listeners")
        self.datagrams = self._group("datagrams")
        self.identifiers = self._group("identify")
        self._listenEcho(listen, udp)
        self._listenIdentify(identify, identifyUDP)
        self.supervisor: SupervisorService | None = None
        if supervise is not None:
            self.supervisor = supervise(
                settings, reactor, self.listeners, self.datagrams, self.signals
            )
            self.supervisor.setServiceParent(self)
        self.pages = self._group("pages")
        for kind, where in (("metrics", metrics), ("health", health)):
            if where is not None:
                self._listenPages(kind, where)

    def _group(self, name: str) -> MultiService:
        """
        A child service named C{name}, for listeners of one job.
        """
        group = MultiService()
        group.setName(name)
        group.setServiceParent(self)
        return group

    def _listenEcho(
        self,
        listen: Iterable[Listener | str],
        udp: Iterable[DatagramListener | str],
    ) -> None:
        """
        Add the echo's stream and UDP listeners.
        """
        settings, reactor = self.settings, self.reactor
        # Shared by every listener: one line per reason every 10 seconds.
        acceptLog = ThrottledObserver(
            globalLogPublisher, reactor, "listener.accept_failed"
        )
        for item in listen:
            if isinstance(item, str):
                item = parseListener(item, reactor)
            self._trust(item)
            _ListenerService(
                item,
                _ListenerFactory(self.factory, item.description),
                socketBuffer=settings.socketBuffer,
                keepalive=settings.keepalive,
                acceptLog=acceptLog,
            ).setServiceParent(self.listeners)
        for datagramItem in udp:
            if isinstance(datagramItem, str):
                datagramItem = parseDatagramListener(datagramItem)
            _DatagramListenerService(
                datagramItem, self.datagramPolicy, reactor
            ).setServiceParent(self.datagrams)

    def _listenIdentify(
        self,
        identify: Listener | str | None,
        identifyUDP: DatagramListener | str | None,
    ) -> None:
        """
        Add the identity line's stream and UDP listeners, where asked for.
        """
        settings, reactor = self.settings, self.reactor
        if identify is not None:
            if isinstance(identify, str):
                identify = parseListener(identify, reactor)
            self._trust(identify)
            _ListenerService(
                identify, IdentifyFactory(self.identity), "identify"
            ).setServiceParent(self.identifiers)
        if identifyUDP is not None:
            if isinstance(identifyUDP, str):
                identifyUDP = parseDatagramListener(identifyUDP)
            # Books of its own: the echo's metrics count echoes only.
            identifyPolicy = DatagramPolicy(
                settings.udpRate, reactor, ipv6Prefix=settings.ipv6Prefix
            )
            _DatagramListenerService(
                identifyUDP,
                identifyPolicy,
                reactor,
                IdentifyDatagram(self.identity, identifyPolicy),
                "identify-udp",
            ).setServiceParent(self.identifiers)

    def _listenPages(self, kind: str, where: Listener | str) -> None:
        """
        Add the listener of the metrics site (C{kind} C{"metrics"}) or of the
        health pages alone (C{"health"}).
        """
        reactor = self.reactor
        # Imported here: prometheus_client and twisted.web take longer to
        # import than the rest of the server, which needs neither.
        from echotwist.health import Health
        from echotwist.metrics import EchoCollector, metricsSite, registryFor

        if isinstance(where, str):
            where = parseListener(where, reactor)
        self._trust(where)
        pages = Health(self.notReady, self.identity).pages()
        if kind == "metrics":
            snapshot, workers, refresh = self.metricsSource()
            site = metricsSite(
                registryFor(EchoCollector(snapshot, workers, reactor)),
                refresh,
                reactor,
                pages,
            )
        else:
            site = metricsSite(None, None, reactor, pages)
        _ListenerService(where, site, kind).setServiceParent(self.pages)

    def _trust(self, listener: Listener) -> None:
        """
        Tell a C{haproxy:} listener whose PROXY headers to believe.
        """
        if listener.proxied:
            # A haproxy: listener's endpoint is echotwist's ProxyEndpoint.
            listener.endpoint.trusted = self.proxyFrom  # type: ignore[attr-defined]
            if self.proxyFrom is None:
                self._openProxies.append(listener.description)

    def metricsSource(self) -> tuple[Any, Any, Any]:
        """
        What metrics read: a snapshot of the counts, the number of workers,
        and what to do before each scrape (nothing, in one process); the
        supervisor's, with workers.
        """
        if self.supervisor is not None:
            return self.supervisor.metricsSource()
        from echotwist.stats import stats

        return (lambda: stats(self.factory, self.datagramPolicy), lambda: 1, None)

    def notReady(self) -> list[str]:
        """
        Why the server should be sent no new clients now: it is draining,
        a listener does not listen, or (with workers) no worker serves.
        None of these: ready.
        """
        if self.draining:
            return ["draining"]
        reasons = [
            f"not listening on {escape(child.description)}"
            for group in (self.listeners, self.datagrams, self.identifiers)
            for child in group
            if child.port is None
        ]
        if not reasons and self.supervisor is not None:
            reasons = self.supervisor.notReady()
        return reasons

    def privilegedStartService(self) -> None:
        """
        Take SIGHUP (a reload, from now on), and listen (as root, where
        twistd is).
        """
        # As early as twistd lets us: a SIGHUP from here on never kills.
        self.signals.handle(signal.SIGHUP, self.reload)
        super().privilegedStartService()

    def startService(self) -> None:
        """
        Log the reactor (and, once, the listeners that believe any PROXY
        header), take SIGHUP and SIGUSR1, and start the listeners.
        """
        # Said once however the service is started (twistd calls
        # privilegedStartService first, twist does not).
        reactorType = type(self.reactor)
        log.info(
            "Serving on the {reactor} reactor",
            event="reactor.serving",
            reactor=f"{reactorType.__module__}.{reactorType.__qualname__}",
        )
        if self._openProxies and self._warnOpenProxy:
            self._warnOpenProxy = False
            log.warn(
                "Any peer of {listeners} can claim any client address in a"
                " PROXY header; --proxy-from names the proxies to believe",
                event="proxy.untrusted",
                listeners=", ".join(self._openProxies),
            )
        self.signals.handle(signal.SIGHUP, self.reload)
        if signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
            # twistd rotates its --logfile on SIGUSR1; without one (-n to
            # standard output, twist) the default would end the server.
            self.signals.handle(signal.SIGUSR1, self._noRotation)
        # twistd starts services before the reactor runs and installs its
        # SIGTERM handler: a search of the heap here would widen the moment
        # in which a SIGTERM still kills outright.  Once it runs, then.
        self.reactor.callLater(0, self.logFiles.start)
        super().startService()

    def _noRotation(self) -> None:
        log.info(
            "SIGUSR1: no twistd log file to rotate (SIGHUP reopens a log"
            " file after logrotate moved it)",
            event="log.not_rotated",
        )

    def reload(self) -> None:
        """
        SIGHUP: reopen the log files at their paths (logrotate moved them);
        with workers, then replace them (L{SupervisorService.reload
        <echotwist.supervisor.SupervisorService.reload>}).
        """
        self._reopenLogs()
        if self.supervisor is not None:
            self.supervisor.reload()

    def _reopenLogs(self) -> None:
        if not self.logFiles.paths:
            log.info(
                "SIGHUP: no log file to reopen (logging to standard output,"
                " syslog or an observer of its own)",
                event="log.reopened",
                path=None,
            )
            return
        for path in self.logFiles.paths:
            # Into the old file: the last line there says where the log went.
            log.info(
                "SIGHUP: reopening the log file {path}",
                event="log.reopening",
                path=path,
            )
        for path, error in self.logFiles.reopen():
            if error is None:
                log.info(
                    "SIGHUP: reopened the log file {path}",
                    event="log.reopened",
                    path=path,
                )
            else:
                log.error(
                    "SIGHUP: cannot reopen the log file {path} ({error});"
                    " still writing to the file it was",
                    event="log.reopen_failed",
                    path=path,
                    error=error.strerror or str(error),
                )

    def stopService(self) -> Deferred[None]:
        """
        Fail readiness, stop listening (and supervising), then drain the
        connections (see L{drain}); the metrics and health listeners stop
        only after, so that they answer (C{/readyz}: 503) while connections
        drain.  SIGHUP is restored last.
        """
        self.draining = True
        Service.stopService(self)
        first: list[IService] = [self.listeners, self.datagrams, self.identifiers]
        if self.supervisor is not None:
            first.append(self.supervisor)
        first.reverse()
        stopped = DeferredList([maybeDeferred(child.stopService) for child in first])
        drained = stopped.addCallback(lambda _: self.drain())
        drained.addCallback(lambda _: maybeDeferred(self.pages.stopService))

        def restore(result: object) -> None:
            # Only now: a SIGHUP during the drain must not kill it either.
            self.signals.restore()

        return drained.addBoth(restore)

    def drain(self) -> Deferred[None]:
        """
        Let open connections finish (see L{EchoFactory.drain}), once the
        listeners have stopped; with workers, let the workers drain and
        exit (L{SupervisorService.drain
        <echotwist.supervisor.SupervisorService.drain>}).
        """
        if self.supervisor is not None:
            workers = self.supervisor.drain()
            if workers is not None:
                return workers
        return self.factory.drain(self.shutdownTimeout)
