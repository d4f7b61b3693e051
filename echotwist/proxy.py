# -*- test-case-name: tests.test_proxy -*-
"""
The PROXY protocol (v1 and v2, as HAProxy sends it) in front of a listener:
C{haproxy:tcp:5000} and the like.

Twisted's own wrapper (C{twisted.protocols.haproxy}) starts the wrapped
protocol before the header is read, so C{connectionMade} sees the proxy's
address; it drops a client's half-close (C{policies.ProtocolWrapper} does
not pass C{IHalfCloseableProtocol} on); it closes a connection with a bad
header without a word; and it refuses a header whose first read is shorter
than the signature.  This wrapper reads the header first, then starts the
wrapped protocol with the client's own address in place, passes half-closes
on, logs every refusal (throttled), and gives a client a deadline for the
header.  It reuses Twisted's v1 and v2 header parsers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from echotwist._address import formatAddress
from echotwist.limits import ThrottledLog

__all__ = ["ProxyEndpoint", "ProxyHeaderWrapper", "ProxyWrappingFactory"]

log = Logger()

_V1_SIGNATURE = b"PROXY "
_V2_SIGNATURE = V2Parser.PREFIX
_V2_FIXED_HEADER = 16


@implementer(IHalfCloseableProtocol)
class ProxyHeaderWrapper(ProtocolWrapper):
    """
    Read a PROXY header, then hand the connection to the wrapped protocol
    with C{getPeer} and C{getHost} saying what the header said.
    """

    factory: ProxyWrappingFactory
    _proxyInfo: Any = None
    _parser: V1Parser | V2Parser | None = None
    _started = False
    _pending = b""
    _deadline: Any = None

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection, except that the wrapped protocol
        # waits for the header.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

    def connectionMade(self) -> None:
        self._deadline = self.factory.reactor.callLater(
            self.factory.headerTimeout, self._refuse, "no PROXY header in time"
        )

    def dataReceived(self, data: bytes) -> None:
        if self._started:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._parser is None:
            self._pending += data
            data = self._pending
            if data.startswith(_V2_SIGNATURE):
                if len(data) < _V2_FIXED_HEADER:
                    return
                if data[12] & 0xF0 != 0x20:
                    self._refuse("unsupported PROXY protocol version")
                    return
                self._parser = V2Parser()
            elif data.startswith(_V1_SIGNATURE):
                self._parser = V1Parser()
            elif _V2_SIGNATURE.startswith(data) or _V1_SIGNATURE.startswith(data):
                return  # the signature is still arriving
            else:
                self._refuse("no PROXY protocol header")
                return
            self._pending = b""
        try:
            info, remaining = self._parser.feed(data)
        except Exception:
            self._refuse("malformed PROXY header")
            return
        if info is None:
            return
        self._proxyInfo = info
        self._started = True
        self._cancelDeadline()
        self.wrappedProtocol.makeConnection(self)  # type: ignore[arg-type]
        # The echo may have refused the connection (a limit) and closed it.
        if remaining and not self.disconnecting:
            self.wrappedProtocol.dataReceived(remaining)

    def _refuse(self, reason: str) -> None:
        self._cancelDeadline()
        assert self.transport is not None
        self.factory.refusals.warn(
            reason,
            "Refused connection from {peer}: {reason}",
            event="proxy.refused",
            peer=formatAddress(self.transport.getPeer()),
            reason=reason,
        )
        self.transport.loseConnection()

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def getPeer(self) -> IAddress:
        if self._proxyInfo is not None and self._proxyInfo.source is not None:
            return self._proxyInfo.source  # type: ignore[no-any-return]
        assert self.transport is not None
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        if self._proxyInfo is not None and self._proxyInfo.destination is not None:
            return self._proxyInfo.destination  # type: ignore[no-any-return]
        assert self.transport is not None
        return self.transport.getHost()

    def readConnectionLost(self) -> None:
        if self._started and IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.readConnectionLost()
        else:
            self.loseConnection()

    def writeConnectionLost(self) -> None:
        if self._started and IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.writeConnectionLost()
        else:
            self.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelDeadline()
        if self._started:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)


class ProxyWrappingFactory(WrappingFactory):
    """
    Wraps each connection of a factory in a L{ProxyHeaderWrapper}.

    @ivar headerTimeout: seconds a client has to send its PROXY header.
    """

    protocol = ProxyHeaderWrapper
    noisy = False
    headerTimeout = 10.0

    def __init__(self, wrappedFactory: IProtocolFactory, reactor: IReactorTime) -> None:
        super().__init__(wrappedFactory)
        self.reactor = reactor
        self.refusals = ThrottledLog(log, reactor)

    def logPrefix(self) -> str:
        return f"{self.wrappedFactory.logPrefix()} (PROXY)"


@implementer(IStreamServerEndpoint)
class ProxyEndpoint:
    """
    A server endpoint whose connections begin with a PROXY header.
    """

    def __init__(self, wrapped: IStreamServerEndpoint, reactor: IReactorTime) -> None:
        self._wrapped = wrapped
        self._reactor = reactor

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self._wrapped.listen(ProxyWrappingFactory(factory, self._reactor))
