# -*- test-case-name: tests.test_service -*-
"""
The service that composes the listeners and drains connections on shutdown.

What a listener description means, and how it is parsed, is
L{echotwist.listeners}'; how one listener is run, L{echotwist.listening}'.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger, globalLogPublisher

from echotwist._address import DEFAULT_IPV6_PREFIX, Network, escape, parseNetwork
from echotwist.connections import DEFAULT_DRAIN_QUIET, EchoFactory
from echotwist.limits import ThrottledObserver
from echotwist.listeners import (
    DatagramListener,
    Listener,
    parseDatagramListener,
    parseListener,
)
from echotwist.listening import (
    CannotListen,
    DatagramListenerService,
    ListenerFactory,
    ListenerService,
)
from echotwist.logs import LogFiles
from echotwist.settings import MIN_SOCKET_BUFFER, Settings
from echotwist.signals import SignalHandlers

if TYPE_CHECKING:
    from echotwist.datagram import DatagramPolicy
    from echotwist.identity import Identity
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

# twistd echo's defaults, for those who build an EchoService by hand.
DEFAULT_SHUTDOWN_TIMEOUT: float = Settings.shutdownTimeout
DEFAULT_UDP_RATE: float = Settings.udpRate
DEFAULT_MAX_CONNECTIONS: int = Settings.maxConnections
DEFAULT_MAX_PER_SOURCE: int = Settings.maxPerSource
DEFAULT_IDLE_TIMEOUT: float = Settings.idleTimeout
DEFAULT_EVICT_IDLE_AFTER: float = Settings.evictIdleAfter
DEFAULT_SOCKET_BUFFER: int = Settings.socketBuffer


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


def _echoFactory(settings: Settings, reactor: Any) -> EchoFactory:
    """
    The L{EchoFactory} of C{settings}' limits and timeouts.
    """
    return EchoFactory(
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
        Compose the listeners and their services (see the class's
        parameters).
        """
        super().__init__()
        self.settings = settings = _settings(settings, overrides)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.logFiles = logFiles if logFiles is not None else LogFiles()
        self.signals = SignalHandlers(reactor)
        self.factory = _echoFactory(settings, reactor)
        self._datagramPolicy: DatagramPolicy | None = None
        self.shutdownTimeout = settings.shutdownTimeout
        self.proxyFrom: list[Network] | None = None
        if settings.proxyFrom is not None:
            self.proxyFrom = list(settings.proxyFrom)
        self._openProxies: list[str] = []
        self._warnOpenProxy = warnOpenProxy
        self.socketBuffer = settings.socketBuffer
        self.draining = False
        self._identity = identity
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
            ListenerService(
                item,
                ListenerFactory(self.factory, item.description),
                socketBuffer=settings.socketBuffer,
                keepalive=settings.keepalive,
                acceptLog=acceptLog,
            ).setServiceParent(self.listeners)
        for datagramItem in udp:
            if isinstance(datagramItem, str):
                datagramItem = parseDatagramListener(datagramItem)
            DatagramListenerService(
                datagramItem, self.datagramPolicy, reactor
            ).setServiceParent(self.datagrams)

    @property
    def datagramPolicy(self) -> DatagramPolicy:
        """
        The UDP echo's policy and books, which every C{--udp} listener
        shares and the statistics report: made when first asked for, by the
        first UDP listener or the statistics.
        """
        if self._datagramPolicy is None:
            # Imported here: a start without a UDP listener need not load
            # the UDP echo (docs/performance.rst).
            from echotwist.datagram import DatagramPolicy

            settings = self.settings
            self._datagramPolicy = DatagramPolicy(
                settings.udpRate, self.reactor, ipv6Prefix=settings.ipv6Prefix
            )
        return self._datagramPolicy

    @property
    def identity(self) -> Identity:
        """
        What the identity line and C{/info} say: the C{identity} given, or
        else L{echotwist.identity.identityFor}'s, for
        C{settings.instanceName}, worked out when first asked for (in
        C{__init__}, where C{--identify}, C{--identify-udp}, C{--metrics}
        or C{--health} show it).
        """
        if self._identity is None:
            # Imported here: only the options above show an identity, and
            # a start without them need not import echotwist.identity
            # (docs/performance.rst).
            from echotwist.identity import identityFor

            self._identity = identityFor(self.settings.instanceName)
        return self._identity

    def _listenIdentify(
        self,
        identify: Listener | str | None,
        identifyUDP: DatagramListener | str | None,
    ) -> None:
        """
        Add the identity line's stream and UDP listeners, where asked for.
        """
        settings, reactor = self.settings, self.reactor
        if identify is None and identifyUDP is None:
            return
        # Imported here, for these listeners only (see identity).
        from echotwist.identity import IdentifyDatagram, identifyListener

        if identify is not None:
            if isinstance(identify, str):
                identify = parseListener(identify, reactor)
            self._trust(identify)
            ListenerService(
                identify, identifyListener(self.identity, reactor), "identify"
            ).setServiceParent(self.identifiers)
        if identifyUDP is not None:
            if isinstance(identifyUDP, str):
                identifyUDP = parseDatagramListener(identifyUDP)
            # Books of its own: the echo's metrics count echoes only.
            from echotwist.datagram import DatagramPolicy

            identifyPolicy = DatagramPolicy(
                settings.udpRate, reactor, ipv6Prefix=settings.ipv6Prefix
            )
            DatagramListenerService(
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
        ListenerService(where, site, kind).setServiceParent(self.pages)

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
        self.logFiles.reopenLogged()
        if self.supervisor is not None:
            self.supervisor.reload()

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
