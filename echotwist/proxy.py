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
header.  It reuses Twisted's v1 and v2 header parsers, but not their trust:
Twisted's v1 parser takes any text between spaces for an address and any
integer for a port, so a header's addresses are checked to be IP addresses
of the family it declares, its ports 0-65535, before anyone sees them.

A PROXY header is a claim: whoever sends it picks the client address that
logs and limits see.  C{trusted} names the peers allowed to make it;
anyone else is refused before a byte is read.  And since a connection holds
a descriptor whether or not a header ever comes, the wrapped protocol may
count it from the moment it is accepted (see L{EchoFactory.connectionAwaiting
<echotwist.connections.EchoFactory.connectionAwaiting>}).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
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
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from echotwist._address import Network, formatAddress, parseNetwork
from echotwist._twisted.haproxy import (
    PROXY_V2_SIGNATURE,
    ProxyHeaderParser,
    proxyV1Parser,
    proxyV2Parser,
)
from echotwist.limits import ThrottledLog

__all__ = [
    "Network",
    "ProxyEndpoint",
    "ProxyHeaderWrapper",
    "ProxyWrappingFactory",
    "parseNetwork",
]

log = Logger()

_V1_SIGNATURE = b"PROXY "
_V2_SIGNATURE = PROXY_V2_SIGNATURE
_V2_FIXED_HEADER = 16

# What a v1 header of a TCP connection must be, field by field; the parser
# has checked the rest.
_V1_TCP = re.compile(rb"PROXY (TCP4|TCP6) ([^ ]+) ([^ ]+) ([0-9]{1,5}) ([0-9]{1,5})")


def _isTrusted(address: IAddress, trusted: Sequence[Network]) -> bool:
    """
    Whether a peer at C{address} may send PROXY headers.  A UNIX socket's
    peer has no address to judge; who may connect is up to the socket
    file's permissions.
    """
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return True
    try:
        ip = ipaddress.ip_address(address.host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def _untrustworthy(info: Any) -> str | None:
    """
    Why a parsed header's addresses cannot be believed, or None.
    """
    header = bytes(info.header)
    if header.startswith(_V1_SIGNATURE):
        if info.source is None:
            return None  # PROXY UNKNOWN: the proxy's own address stays
        match = _V1_TCP.fullmatch(header.rstrip(b"\r\n"))
        if match is None:
            return "malformed PROXY header"
        family = socket.AF_INET if match.group(1) == b"TCP4" else socket.AF_INET6
        for field in (match.group(2), match.group(3)):
            try:
                socket.inet_pton(family, field.decode("ascii"))
            except (OSError, ValueError):
                return (
                    "PROXY header address is not an"
                    f" {'IPv4' if family == socket.AF_INET else 'IPv6'} address"
                )
        if any(int(field) > 65535 for field in match.group(4, 5)):
            return "PROXY header port is not 0-65535"
        return None
    # v2: the parser unpacked binary addresses and 16-bit ports, which
    # cannot be malformed; but they may be of a kind echo has no use for.
    for address in (info.source, info.destination):
        if address is None:
            continue
        if not isinstance(address, (IPv4Address, IPv6Address)) or address.type != "TCP":
            return "PROXY header is not for TCP over IPv4 or IPv6"
    return None


@implementer(IHalfCloseableProtocol)
class ProxyHeaderWrapper(ProtocolWrapper):
    """
    Read a PROXY header, then hand the connection to the wrapped protocol
    with C{getPeer} and C{getHost} saying what the header said.
    """

    factory: ProxyWrappingFactory
    #: Past its header it passes bytes on and writes to the TCP transport:
    #: the direct send and the splice see through it (see
    #: L{echotwist.stream.passesThrough}).
    echoPassesThrough = True
    _proxyInfo: Any = None
    _parser: ProxyHeaderParser | None = None
    _started = False
    _pending = b""
    _deadline: Any = None

    def makeConnection(self, transport: Any) -> None:
        """
        Take the connection; the wrapped protocol starts once the header is
        in.
        """
        # ProtocolWrapper.makeConnection, except that the wrapped protocol
        # waits for the header.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

    def connectionMade(self) -> None:
        """
        Refuse a peer not trusted to send PROXY headers; otherwise let the
        wrapped protocol count the connection, and start the header's
        deadline.
        """
        assert self.transport is not None
        trusted = self.factory.trusted
        if trusted is not None and not _isTrusted(self.transport.getPeer(), trusted):
            self._refuse("peer is not allowed to send PROXY headers (--proxy-from)")
            return
        # Counted from now on, header or not (the wrapped protocol's limits
        # log their own refusals).
        accepted = getattr(self.wrappedProtocol, "proxyAccepted", None)
        if accepted is not None and not accepted(self):
            self.transport.loseConnection()
            return
        self._deadline = self.factory.reactor.callLater(
            self.factory.headerTimeout, self._refuse, "no PROXY header in time"
        )

    def dataReceived(self, data: bytes) -> None:
        """
        Parse the PROXY header (refusing a bad one), then pass everything
        after it to the wrapped protocol.
        """
        if self._started:
            self.wrappedProtocol.dataReceived(data)
            return
        if getattr(self.transport, "disconnecting", True):
            return  # refused; whatever else comes is of no interest
        if self._parser is None:
            self._pending += data
            data = self._pending
            if data.startswith(_V2_SIGNATURE):
                if len(data) < _V2_FIXED_HEADER:
                    return
                if data[12] & 0xF0 != 0x20:
                    self._refuse("unsupported PROXY protocol version")
                    return
                self._parser = proxyV2Parser()
            elif data.startswith(_V1_SIGNATURE):
                self._parser = proxyV1Parser()
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
        why = _untrustworthy(info)
        if why is not None:
            self._refuse(why)
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
        """
        The client the header named; the peer itself before the header, or
        if the header named none.
        """
        if self._proxyInfo is not None and self._proxyInfo.source is not None:
            return self._proxyInfo.source  # type: ignore[no-any-return]
        assert self.transport is not None
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        """
        The destination the header named; the local address before the
        header, or if the header named none.
        """
        if self._proxyInfo is not None and self._proxyInfo.destination is not None:
            return self._proxyInfo.destination  # type: ignore[no-any-return]
        assert self.transport is not None
        return self.transport.getHost()

    def readConnectionLost(self) -> None:
        """
        Pass a half-close on to a started half-closeable protocol; close
        otherwise.
        """
        self._halfClosed("readConnectionLost")

    def writeConnectionLost(self) -> None:
        """
        Pass a half-close on to a started half-closeable protocol; close
        otherwise.
        """
        self._halfClosed("writeConnectionLost")

    def _halfClosed(self, side: str) -> None:
        # side: the IHalfCloseableProtocol method that tells of it.
        if self._started and IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            getattr(self.wrappedProtocol, side)()
        else:
            self.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Tell the wrapped protocol: that it lost its connection if it
        started, that it was abandoned before the header if not.
        """
        self._cancelDeadline()
        if self._started:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)
            abandoned = getattr(self.wrappedProtocol, "proxyAbandoned", None)
            if abandoned is not None:
                abandoned()


class ProxyWrappingFactory(WrappingFactory):
    """
    Wraps each connection of a factory in a L{ProxyHeaderWrapper}.

    @ivar headerTimeout: seconds a client has to send its PROXY header.
    @ivar trusted: the networks whose peers may send PROXY headers; None
        for any peer.
    """

    protocol = ProxyHeaderWrapper
    noisy = False
    headerTimeout = 10.0

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        reactor: IReactorTime,
        trusted: Sequence[Network] | None = None,
    ) -> None:
        super().__init__(wrappedFactory)
        self.reactor = reactor
        self.trusted = trusted
        self.refusals = ThrottledLog(log, reactor)

    def logPrefix(self) -> str:
        """
        The wrapped factory's prefix, marked as behind the PROXY wrapper.
        """
        return f"{self.wrappedFactory.logPrefix()} (PROXY)"


@implementer(IStreamServerEndpoint)
class ProxyEndpoint:
    """
    A server endpoint whose connections begin with a PROXY header.

    @ivar trusted: the networks whose peers may send PROXY headers; None
        for any peer.  Set before C{listen}.
    """

    def __init__(
        self,
        wrapped: IStreamServerEndpoint,
        reactor: IReactorTime,
        trusted: Sequence[Network] | None = None,
    ) -> None:
        self._wrapped = wrapped
        self._reactor = reactor
        self.trusted = trusted

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen on the wrapped endpoint with C{factory} behind the PROXY
        wrapper.
        """
        return self._wrapped.listen(
            ProxyWrappingFactory(factory, self._reactor, self.trusted)
        )
