# -*- test-case-name: tests.test_guard,tests.test_metrics,tests.test_identity -*-
"""
A guard for the side listeners that share the echo's reactor (the metrics
and health site, the identity line): at most so many connections at once,
and so many from one source, each closed a fixed time after it opened,
whatever it is doing.

The echo's own connections have their limits (L{echotwist.connections});
a side listener without any would let one client hold descriptors without
end (a TLS client that never finishes its handshake, an HTTP client that
dribbles its request) until the process has none left for the echo.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from echotwist._address import formatAddress, sourceGroup
from echotwist._twisted import orGlobalReactor
from echotwist.limits import ThrottledLog

__all__ = ["ConnectionGuard", "GuardedConnection"]


class GuardedConnection(ProtocolWrapper):
    """
    A guarded connection, closed (reset) the guard's C{lifetime} seconds
    after it opened.
    """

    factory: ConnectionGuard
    _expiry: IDelayedCall | None = None
    #: Behind a C{haproxy:} listener's PROXY wrapper, until the header is
    #: in: the wrapper, which holds the connection.
    _awaiting: Any = None

    def makeConnection(self, transport: ITransport) -> None:
        """
        Count the connection as its peer's (behind a PROXY wrapper: the
        client its header named), start its lifetime (unless it started at
        accept, behind a PROXY wrapper), then the wrapped protocol.
        """
        # Counted per source here, not as it is built: behind a PROXY
        # wrapper the peer then is the proxy, whose own source (its LOCAL
        # health checks, clients on its host) may be full while the client
        # the header will name is not.  One over its source's limit ends
        # here (the protocol built for it is never started).
        self._awaiting = None
        if not self.factory.admit(self, transport.getPeer()):
            self.wrappedProtocol = _Refused()
        if self._expiry is None:
            self._expiry = self.factory.reactor.callLater(
                self.factory.lifetime, self._expire
            )
        super().makeConnection(transport)

    def proxyAccepted(self, wrapper: Any) -> bool:
        """
        The PROXY wrapper (L{echotwist.proxy}) accepted a connection that
        starts this protocol only once its header is in: it holds a place
        among C{maxConnections} from now on, and its lifetime runs; a
        client that sends no header would otherwise hold a descriptor
        outside the caps.

        @param wrapper: the wrapper, which holds the connection until then.
        @return: C{True}: the place was taken when this was built.
        """
        # Counted against the cap, and per source only once its header
        # names its client (makeConnection): a proxy carries many clients,
        # and held to one source's limit it would let through only so
        # many at once, whoever they are.
        self._awaiting = wrapper
        self.factory.registerProtocol(self)
        self._expiry = self.factory.reactor.callLater(
            self.factory.lifetime, self._expire
        )
        return True

    def proxyAbandoned(self) -> None:
        """
        The connection ended before its PROXY header was in (a TCP health
        check, a peer not trusted to send one): its place is given back,
        as a connection's that started is in L{connectionLost}.
        """
        self._awaiting = None
        self._stopClock()
        self.factory.left(self)
        if self in self.factory.protocols:
            self.factory.unregisterProtocol(self)

    def readConnectionLost(self) -> None:
        """
        The client closed its side: passed on to a half-closeable protocol,
        the connection closed otherwise.
        """
        self._halfClosed("readConnectionLost")

    def writeConnectionLost(self) -> None:
        """
        The connection's writing side closed: passed on to a half-closeable
        protocol, the connection closed otherwise.
        """
        self._halfClosed("writeConnectionLost")

    def _halfClosed(self, side: str) -> None:
        # Called only when this wrapper looks half-closeable: it takes on
        # its transport's interfaces (ProtocolWrapper.makeConnection), and
        # the PROXY wrapper it runs behind is one.  Without these methods,
        # ProtocolWrapper.__getattr__ found the PROXY wrapper's, which
        # called this one's again: a RecursionError for every client that
        # half-closed after its header.
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            getattr(self.wrappedProtocol, side)()
        else:
            self.loseConnection()

    def _expire(self) -> None:
        self._expiry = None
        transport = self.transport
        if transport is None and self._awaiting is not None:
            transport = self._awaiting.transport
        transport.abortConnection()  # type: ignore[union-attr]

    def _stopClock(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop the lifetime's clock and give the connection's place back.
        """
        self._stopClock()
        self.factory.left(self)
        super().connectionLost(reason)


class _Refused(Protocol):
    """
    A connection over the limits: closed as soon as it is made.

    Refusing it by building no protocol (C{None}) closes a plain TCP
    connection at accept, but a TLS listener's factory wraps whatever the
    factory under it builds, C{None} too, and that connection was held
    open for good; closing it here ends both (Twisted's TLS aborts a
    connection closed before its handshake).
    """

    def proxyAccepted(self, wrapper: Any) -> bool:
        """
        Behind a PROXY wrapper: refused before the header, which would
        otherwise be waited for (L{echotwist.proxy}).
        """
        return False

    def connectionMade(self) -> None:
        """
        Close the connection.
        """
        assert self.transport is not None
        self.transport.loseConnection()


class ConnectionGuard(WrappingFactory):
    """
    Wraps a side listener's factory: at most C{maxConnections} connections
    at once, and C{maxPerSource} from one source (an IPv4 address, an IPv6
    /64); one more is closed as it is accepted, and the refusal logged at
    most once every 10 seconds (event C{event}); each connection is closed
    C{lifetime} seconds after it opened.  Refusals go to C{log}, the
    listener's own logger (its namespace says whose they are).

    Twisted's C{policies.ThrottlingFactory} caps connections too, but logs
    a line for every connection it refuses; C{TimeoutFactory} times out
    idleness only, which a client sending a byte at a time never reaches.

    @ivar what: what the listener serves, as its refusals name it.
    """

    protocol = GuardedConnection
    noisy = False

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        reactor: IReactorTime | None,
        maxConnections: int,
        lifetime: float,
        maxPerSource: int,
        what: str,
        event: str,
        log: Logger,
    ) -> None:
        super().__init__(wrappedFactory)
        self.reactor = reactor = orGlobalReactor(reactor)
        self.maxConnections = maxConnections
        self.maxPerSource = maxPerSource
        self.lifetime = lifetime
        self.what = what
        self.event = event
        self.refused = 0
        self._bySource: dict[str, int] = {}
        self._sources: dict[GuardedConnection, str] = {}
        self._refusals = ThrottledLog(log, reactor)

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override, unused-ignore]
        """
        Build the wrapped protocol, or refuse the connection (closed as it
        is made, and a throttled log line) while C{maxConnections} are
        open.  Its source's limit holds it once it is made (L{admit}).
        """
        if len(self.protocols) >= self.maxConnections:
            source = self._sourceOf(addr)
            self._refuse(
                addr,
                self._bySource.get(source, 0) if source else 0,
                len(self.protocols),
            )
            return _Refused()
        # Twisted before 26 has WrappingFactory.buildProtocol untyped.
        protocol: Protocol | None = super().buildProtocol(addr)
        return protocol

    def admit(self, connection: GuardedConnection, addr: IAddress) -> bool:
        """
        Count C{connection}, from C{addr}, against its source's limit (as
        it is made; behind a PROXY wrapper, once its header named its
        client); C{False}, and a throttled log line, if the source is full.
        """
        source = self._sourceOf(addr)
        if source is None:
            return True
        fromSource = self._bySource.get(source, 0)
        if fromSource >= self.maxPerSource:
            # Not itself among those open (behind a PROXY wrapper it held
            # a place while it waited for its header).
            self._refuse(
                addr, fromSource, len(self.protocols) - (connection in self.protocols)
            )
            return False
        self._bySource[source] = fromSource + 1
        self._sources[connection] = source
        return True

    def _sourceOf(self, addr: IAddress | None) -> str | None:
        # A peer with no host (a UNIX socket's) is no source: as for the
        # echo's connections (L{echotwist.admission}), only the cap in all
        # holds it; counted as one source, every local client shared its
        # few places.
        host = getattr(addr, "host", None)
        return sourceGroup(host) if isinstance(host, str) else None

    def _refuse(self, addr: IAddress | None, fromSource: int, others: int) -> None:
        # others: connections open besides the refused one.
        self.refused += 1
        self._refusals.warn(
            self.event,
            f"Refused {self.what} connection from {{peer}}: {{open}} already"
            " open ({fromSource} from its source)",
            event=self.event,
            peer=formatAddress(addr) if addr is not None else "-",
            open=others,
            fromSource=fromSource,
        )

    def left(self, connection: GuardedConnection) -> None:
        """
        C{connection} closed: its source may open another.
        """
        source = self._sources.pop(connection, None)
        if source is not None:
            count = self._bySource[source] - 1
            if count:
                self._bySource[source] = count
            else:
                del self._bySource[source]
