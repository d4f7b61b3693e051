# -*- test-case-name: tests.test_stream -*-
"""
The stream echo (RFC 862 over TCP, and every other stream transport).

Everything a client sends comes back to it, in order, until the client
closes.  Three things make that hold under real traffic:

  - backpressure: the protocol is the producer for its own transport, so
    while the transport holds more than its buffer size of unsent echo,
    reading from the client stops; it starts again once the buffer drains;
  - half-close: when the client shuts down its sending side, what has been
    received is still echoed, and only then is the connection closed;
  - a drain for shutdown: a connection closes once it is quiet (nothing
    unread, nothing unsent), so bytes sent before a SIGTERM come back.

On plain TCP (and TCP under echotwist's PROXY wrapper) the echo is sent
straight from dataReceived when nothing is queued before it: Twisted's
transport.write() only buffers and asks the reactor for writability, which
costs an epoll_ctl pair and a pass of the loop per message (Twisted issue
5303).  Whatever the socket does not take at once, or any error, goes
through transport.write() as usual, behind nothing, so order, partial
writes and the handling of a lost connection stay Twisted's.  Such a
connection reads up to 128 KiB at a time (Twisted reads 64 KiB), and stops
reading as soon as the kernel refuses part of an echo, until the rest is
sent: it never holds more than one read's worth, whatever the client does.

On Linux, a plain TCP connection whose client sends in bulk (reads of 16
KiB or more) echoes in the kernel: each read splices the bytes from the
socket into a pipe and from the pipe straight back into the socket
(splice(2)), so they are never copied into Python and out again; at 100
KiB messages the copies are most of the server's work.  One pipe serves
every connection and is empty between reads.  Small messages keep recv()
and send(), which cost less there.  TCP under echotwist's PROXY wrapper
splices as well, past the header; TLS and UNIX connections keep the path
above.

The factory keeps the books: the open connections, how many each source
has (an IPv4 address, or an IPv6 network of C{ipv6Prefix} bits: one host
can own a whole /64), the limits on both, and an idle sweep.  The sweep is
one periodic call for all connections rather than a timer each: it costs no
memory per connection and nothing in the data path, where a per-connection
timer would be reset on every read.

The sweep also keeps, for a full server, the connections in the order they
went idle: when C{maxConnections} is reached, a new client is admitted by
evicting the connection idle longest, if it has been idle C{evictIdleAfter}
seconds at least.  Finding it costs the head of that list, not a pass over
every connection, so a flood of connects at a full server stays cheap.

Under echotwist's PROXY wrapper a connection is in the books from the moment
it is accepted, as the proxy's: a peer that never sends a header still
counts against both limits (and, being idle, can be evicted).  Once the
header is in, the client's own source takes its place.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from errno import EINVAL, ENOBUFS, ENOSYS, EWOULDBLOCK
from typing import Any, cast

from twisted.internet import main, tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echotwist._address import (
    DEFAULT_IPV6_PREFIX,
    escape,
    formatAddress,
    sourceGroup,
)
from echotwist.limits import ThrottledLog
from echotwist.proxy import ProxyHeaderWrapper

__all__ = [
    "CONNECTION_REFUSALS",
    "DEFAULT_DRAIN_QUIET",
    "EVICTED",
    "Echo",
    "EchoFactory",
]

log = Logger()

# Transports whose internals the direct send relies on (an empty
# dataBuffer and _tempDataLen mean nothing is queued; socket is the socket;
# producerPaused makes the transport resume its producer once drained;
# bufferSize is how much one doRead asks recv() for); SplicingServer is
# added below.
_DIRECT_TRANSPORTS: tuple[type, ...] = (tcp.Server,)

#: What a connection that sends directly reads at a time.
DIRECT_READ_SIZE = 128 * 1024

#: Reads at least this big make the next read a splice, where the transport
#: allows; a smaller splice makes the next read a plain one.  Splicing
#: saves copying the bytes into and out of Python, which pays from some
#: kilobytes on; for small reads recv() and send() cost less.
SPLICE_FROM = 16 * 1024

try:
    from fcntl import F_SETPIPE_SZ, fcntl
    from os import SPLICE_F_MOVE, SPLICE_F_NONBLOCK, splice

    _SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
except ImportError:  # not Linux
    splice = None  # type: ignore[assignment]


class _SharedPipe:
    """
    The one pipe a process splices every connection's echo through.

    It is empty between reads: each read moves what one connection sent
    into it, and that same read moves it all out again, to the connection
    (and whatever the socket would not take, into the transport's write
    buffer).  Anything unexpected on the way throws the pipe away, so
    bytes can never be carried over to the next connection.
    """

    fds: tuple[int, int] | None = None
    #: Whether splicing works here at all (Linux; a socket type the kernel
    #: can splice).  Once it fails it is not tried again.
    usable = splice is not None

    @classmethod
    def get(cls) -> tuple[int, int] | None:
        if cls.fds is None and cls.usable:
            try:
                readFd, writeFd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                # Room for one whole read; the default is 64 KiB.
                fcntl(writeFd, F_SETPIPE_SZ, DIRECT_READ_SIZE)
            except OSError:
                pass
            cls.fds = (readFd, writeFd)
        return cls.fds

    @classmethod
    def discard(cls) -> None:
        fds, cls.fds = cls.fds, None
        if fds is not None:
            for fd in fds:
                os.close(fd)


#: Seconds a connection must be quiet during a drain before it is closed.
#: A client that pauses between writes (a paced upload, a human at a
#: terminal) keeps its stream up to this long a pause; each connection holds
#: the shutdown that long at least once it stops.
DEFAULT_DRAIN_QUIET = 2.0

#: Quiet checks per quiet period (see L{Echo._scheduleQuietCheck}).
QUIET_CHECKS = 4

#: Why a connection can be refused, as logged and counted.
TOO_MANY = "too many connections"
TOO_MANY_FROM_SOURCE = "too many connections from this source"
CONNECTION_REFUSALS = (TOO_MANY, TOO_MANY_FROM_SOURCE)
#: Why a connection was closed to make room for a new client.
EVICTED = "evicted: idle while the server was full"


@implementer(IHalfCloseableProtocol, IPushProducer)
class Echo(Protocol):
    """
    Echo every byte received back to the sender.

    @ivar bytesEchoed: how many bytes this connection has echoed so far.
    @ivar openedAt: when the connection opened, in the factory reactor's
        seconds.
    """

    factory: EchoFactory
    # Any of TCP, TLS, UNIX, or a policies wrapper around one: each is an
    # ITransport, an IConsumer and an IPushProducer, which no single
    # interface says.
    transport: Any
    bytesEchoed = 0
    openedAt = 0.0
    #: The listener's endpoint description, for logs.
    listener = ""
    #: The client's source, for the per-source limit: its IPv4 address or
    #: its IPv6 network (None for UNIX sockets); interned, so a source's
    #: connections share one string.
    source: str | None = None
    # Why the server closed the connection, once it decided to; None while
    # the connection is open or when the client was the one to close.
    _closeReason: str | None = None
    # True while reading from the client is paused for a backlog of echo:
    # the transport asked us, its producer, to stop (Twisted's path), or a
    # direct send left something unsent.
    _paused = False
    # Shutting down: close once the connection has been quiet for the
    # factory's drainQuiet.
    _draining = False
    # Activity (bytes echoed plus backlogs drained) at the last quiet check,
    # and how many checks in a row have seen none since.
    _quietMark = 0
    _quietTicks = 0
    _quietCheck: IDelayedCall | None = None
    # Refused by a limit: never counted in the books.
    _refused = False
    # Behind the PROXY wrapper, before the header: the wrapper, which holds
    # the connection (this protocol has no transport yet).  The books count
    # the connection as the proxy's meanwhile.
    _awaiting: Any = None
    # The TCP transport to send to directly when its buffer is empty, or
    # None where that is not known to be safe (TLS, other wrappers).
    _direct: tcp.Server | None = None
    # The client sends in bulk: its last read was at least SPLICE_FROM
    # bytes, so the next is spliced (see SplicingServer).
    _bulk = False
    # Times the transport drained a backlog: progress even while nothing
    # can be read (the idle sweep counts it as activity).
    _resumes = 0
    # The idle sweep's marks: activity seen at its last change, and when
    # (until the first change, openedAt stands for it).
    _idleMark = 0
    _idleSince = 0.0

    def proxyAccepted(self, wrapper: Any) -> bool:
        """
        The PROXY wrapper accepted a connection that will start this
        protocol once its header is in: count it now, as the proxy's.

        @param wrapper: the wrapper, which holds the connection until then.
        @return: whether the limits admit it (a refusal is logged).
        """
        self.source = self.factory.sourceOf(
            getattr(wrapper.transport.getPeer(), "host", None)
        )
        self._awaiting = wrapper
        if not self.factory.connectionAwaiting(self):
            self._awaiting = None
            self._refused = True
            return False
        return True

    def proxyAbandoned(self) -> None:
        """
        The connection ended before its PROXY header was in.
        """
        if self._awaiting is not None:
            self._awaiting = None
            self.factory.awaitingEnded(self)

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        source = self.factory.sourceOf(getattr(transport.getPeer(), "host", None))
        if self._awaiting is not None:
            self._awaiting = None
            admitted = self.factory.headerReceived(self, source)
        else:
            self.source = source
            admitted = self.factory.connectionOpened(self)
        if not admitted:
            self._refused = True
            transport.loseConnection()
            return
        # Echo is request/response traffic: never hold a small reply back
        # waiting for more.  Transports without TCP (UNIX sockets) refuse.
        try:
            transport.setTcpNoDelay(True)
        except (AttributeError, NotImplementedError, OSError):
            pass
        transport.registerProducer(self, True)
        if type(transport) in _DIRECT_TRANSPORTS:
            self._direct = transport
        elif isinstance(transport, ProxyHeaderWrapper) and (
            type(transport.transport) in _DIRECT_TRANSPORTS
        ):
            # The wrapper's write() is the TCP transport's write().
            self._direct = cast(tcp.Server, transport.transport)
        if self._direct is not None:
            self._direct.bufferSize = DIRECT_READ_SIZE

    @property
    def peer(self) -> str:
        """
        The client's address, for logs.  Not kept: an idle connection costs
        less memory without one more string.
        """
        transport = self.transport if self._awaiting is None else self._awaiting
        return formatAddress(transport.getPeer())

    def dataReceived(self, data: bytes) -> None:
        self.bytesEchoed += len(data)
        if len(data) >= SPLICE_FROM and not self._bulk:
            self._bulk = True
        direct = self._direct
        if direct is not None and not direct.dataBuffer and not direct._tempDataLen:
            # The socket's own send(): Python retries EINTR itself (PEP 475),
            # so Twisted's untilConcludes wrapper is not needed here.
            try:
                sent: int | OSError = direct.socket.send(data)
            except OSError as e:
                sent = e
            if sent != len(data):
                self._sendRest(direct, data, sent)
            return
        self.transport.write(data)

    def _sendRest(self, direct: tcp.Server, data: bytes, sent: int | OSError) -> None:
        """
        A direct send took only C{sent} bytes of C{data}, or raised C{sent}.
        If the kernel's send buffer is full, queue the rest and stop reading
        until the transport has sent it (it then resumes us, its paused
        producer).
        """
        if isinstance(sent, OSError):
            if sent.errno not in (EWOULDBLOCK, ENOBUFS):
                # Lost: write() queues it, and the reactor's next attempt
                # finds and reports the loss, as usual.
                self.transport.write(data)
                return
            sent = 0
        self.transport.write(data[sent:] if sent else data)
        if not self._paused:
            direct.producerPaused = True
            self.pauseProducing()

    def _finishRead(
        self, data: bytes | None, sent: int | OSError | None
    ) -> ConnectionLost | ConnectionDone | None:
        """
        Finish a read that L{echotwist.reactor.EchotwistEPollReactor}'s
        plain echo (see L{plainEcho}) began but could not end the plain way.

        @param data: what recv() returned, or None if it failed.
        @param sent: what send() of C{data} returned or raised, or None if
            it was not tried (C{data} is empty, or a bulk read).
        @return: what L{tcp.Connection.doRead} returns: None, or why the
            connection is over.
        """
        if data is None:
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        if sent is None:
            self.dataReceived(data)
            return None
        self.bytesEchoed += len(data)
        assert self._direct is not None
        self._sendRest(self._direct, data, sent)
        return None

    def _spliceRead(
        self, transport: SplicingServer, pipe: tuple[int, int]
    ) -> ConnectionLost | ConnectionDone | None:
        """
        Echo what the client sent without it entering user space: splice it
        from the socket into the shared pipe and from the pipe back into
        the socket.  What the socket does not take is read out of the pipe
        and queued on the transport, and reading pauses, as for a direct
        send.  Only called while nothing is queued on the transport.

        @return: what L{tcp.Connection.doRead} returns: None, or why the
            connection is over.
        """
        readFd, writeFd = pipe
        fd = transport.socket.fileno()
        try:
            received = splice(fd, writeFd, DIRECT_READ_SIZE, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno in (EINVAL, ENOSYS):
                # This kernel cannot splice from a socket: read the plain
                # way from now on.
                _SharedPipe.usable = False
                _SharedPipe.discard()
                log.warn(
                    "This kernel cannot splice from a socket ({error});"
                    " echoing through user space",
                    event="splice.unavailable",
                    error=os.strerror(e.errno),
                )
                return _plainRead(transport)
            return main.CONNECTION_LOST
        if not received:
            return main.CONNECTION_DONE
        self.bytesEchoed += received
        if received < SPLICE_FROM:
            self._bulk = False
        try:
            try:
                sent = splice(readFd, fd, received, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                sent = 0
            except OSError:
                # The client is gone; what was in flight to it goes too.
                sent = -1
            if sent == received:
                return None
            unsent = received - max(sent, 0)
            rest = os.read(readFd, unsent)
            if len(rest) != unsent:
                raise RuntimeError(f"read {len(rest)} of {unsent} bytes from the pipe")
        except BaseException:
            _SharedPipe.discard()
            raise
        if sent < 0:
            return main.CONNECTION_LOST
        self._sendRest(transport, rest, 0)
        return None

    def readConnectionLost(self) -> None:
        # The client will send nothing more: echo what is still queued, then
        # close our side too.
        self.closeWhenFlushed("client finished sending")

    def writeConnectionLost(self) -> None:
        # Nothing we write can arrive any more; there is no point reading.
        self.closeWhenFlushed("client stopped receiving")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._refused:
            return
        self._cancelQuietCheck()
        if self._closeReason is not None:
            why = self._closeReason
        elif reason.check(ConnectionDone):
            why = "client closed the connection"
        else:
            # The transport's words (TLS errors quote the library's): one
            # plain line whatever they hold.
            why = escape(reason.getErrorMessage())
        self.factory.connectionClosed(self, why)

    def closeWhenFlushed(self, reason: str) -> None:
        """
        Stop reading, send everything already echoed, then close (FIN).
        """
        if self._closeReason is not None:
            return
        self._closeReason = reason
        self._cancelQuietCheck()
        transport = self.transport
        assert transport is not None
        # A transport never finishes a loseConnection while a producer is
        # still registered with it.
        transport.unregisterProducer()
        transport.loseConnection()

    def abort(self, reason: str) -> None:
        """
        Close at once, dropping whatever is unsent (RST).
        """
        self._closeReason = reason
        self._cancelQuietCheck()
        self.transport.abortConnection()

    def drain(self) -> None:
        """
        The server is shutting down: keep echoing, and close the connection
        once it has been quiet for the factory's C{drainQuiet} seconds:
        nothing received, nothing drained to the reader, reading not paused
        for a backlog.  With C{drainQuiet} 0 it is left to the client (or
        the drain's deadline).
        """
        if self._closeReason is not None or self._draining:
            return
        self._draining = True
        self._quietMark = self._activity()
        self._quietTicks = 0
        self._scheduleQuietCheck()

    def _activity(self) -> int:
        return self.bytesEchoed + self._resumes

    def _scheduleQuietCheck(self) -> None:
        quiet = self.factory.drainQuiet
        if self._quietCheck is None and not self._paused and quiet > 0:
            # Looked at QUIET_CHECKS times a period rather than once: a
            # connection closes between one period and a period and a
            # quarter after its last byte, where checking once a period
            # could take up to two.  No clock read or timer reset in the
            # data path: the check compares counters.
            self._quietCheck = self.factory.reactor.callLater(
                quiet / QUIET_CHECKS, self._closeIfQuiet
            )

    def _cancelQuietCheck(self) -> None:
        if self._quietCheck is not None:
            self._quietCheck.cancel()
            self._quietCheck = None

    def _closeIfQuiet(self) -> None:
        self._quietCheck = None
        if self._paused:
            # resumeProducing looks again once the backlog is sent.
            return
        activity = self._activity()
        if activity != self._quietMark:
            self._quietMark = activity
            self._quietTicks = 0
        else:
            self._quietTicks += 1
            if self._quietTicks >= QUIET_CHECKS:
                self.closeWhenFlushed("server shutting down")
                return
        self._scheduleQuietCheck()

    # IPushProducer: the transport calls these as its send buffer fills up
    # and drains; we pass them on to the transport's reading side.

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._resumes += 1
        self.transport.resumeProducing()
        if self._draining:
            # The reader took its backlog: that is activity, and the quiet
            # period starts over.
            self._quietMark = self._activity()
            self._quietTicks = 0
            self._scheduleQuietCheck()

    def stopProducing(self) -> None:
        # Called as the connection goes away; connectionLost does the books.
        pass


def _plainRead(transport: tcp.Server) -> ConnectionLost | ConnectionDone | None:
    """
    Read as L{tcp.Server} does.
    """
    # Twisted before 26 has doRead untyped: returning it would be Any.
    result: ConnectionLost | ConnectionDone | None = tcp.Server.doRead(transport)
    return result


class SplicingServer(tcp.Server):
    """
    A TCP server transport that lets its L{Echo} echo in the kernel (see
    L{Echo._spliceRead}) whenever nothing is queued to send; otherwise, and
    for any other protocol, it reads as L{tcp.Server} does.  Set as a
    C{tcp.Port}'s C{transport} when the port's factory builds L{Echo}
    protocols directly or under echotwist's PROXY wrapper (not TLS).
    """

    def doRead(self) -> ConnectionLost | ConnectionDone | None:  # type: ignore[override]
        protocol = self.protocol
        if isinstance(protocol, ProxyHeaderWrapper):
            # Past the header the wrapper only passes bytes on.
            protocol = protocol.wrappedProtocol
        if (
            isinstance(protocol, Echo)
            and protocol._bulk
            and protocol._direct is self
            and not self.dataBuffer
            and not self._tempDataLen
        ):
            pipe = _SharedPipe.get()
            if pipe is not None:
                return protocol._spliceRead(self, pipe)
        return _plainRead(self)


_DIRECT_TRANSPORTS += (SplicingServer,)


def plainEcho(transport: object) -> tuple[Echo, Any, Any] | None:
    """
    Whether a transport's next read can be echoed without any of the
    protocol's code: an L{Echo} itself (no subclass, no wrapper) on a
    L{SplicingServer}, sending directly, nothing queued, not paused, not
    closing, not in bulk.  For L{echotwist.reactor.EchotwistEPollReactor},
    which then reads, counts and sends in its own loop.

    @return: the L{Echo} and its socket's C{recv} and C{send}; or None.
    """
    if (
        type(transport) is not SplicingServer
        or not transport.connected
        or transport.disconnecting
    ):
        return None
    protocol = transport.protocol
    if (
        type(protocol) is Echo
        and protocol._direct is transport
        and not protocol._bulk
        and not protocol._paused
        and protocol._closeReason is None
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        sock = transport.socket
        return protocol, sock.recv, sock.send
    return None


class EchoFactory(Factory):
    """
    Builds L{Echo} protocols and keeps the books on them.

    @ivar reactor: the clock for durations, quiet checks, idle sweeps and
        drain deadlines.
    @ivar connections: the open connections.
    @ivar awaiting: connections behind the PROXY wrapper still waiting for
        their header; they count against both limits too.
    @ivar perSource: how many connections each source has open (awaiting
        ones as their proxy's).
    @ivar maxConnections: open connections allowed in all; 0 for no limit.
    @ivar maxPerSource: open connections allowed per source; 0 for no
        limit.
    @ivar ipv6Prefix: how many leading bits of an IPv6 address make one
        source (see L{echotwist._address.sourceGroup}).
    @ivar idleTimeout: seconds without activity after which a connection is
        closed, and a closing connection that cannot flush is aborted; 0
        for never.
    @ivar evictIdleAfter: when C{maxConnections} is reached, a new client
        is admitted by closing the connection idle longest, if it has been
        idle at least this many seconds; 0 for never.
    @ivar logConnections: whether to log each connection opened and closed
        (refusals and evictions are logged regardless, throttled).
    @ivar accepted: connections admitted so far (behind the PROXY wrapper,
        once their header is in).
    @ivar closed: admitted connections closed so far, evicted ones too.
    @ivar evicted: connections closed so far to admit a new client.
    @ivar drainQuiet: during a drain, seconds a connection must go without
        activity before it is closed; 0 to leave it open until the client
        closes or the drain's deadline passes.
    @ivar bytesOfClosed: bytes echoed by the connections closed so far.
    @ivar refused: connections refused so far, by reason.
    """

    # (Twisted before 26 types Factory.protocol so that this is no error.)
    protocol = Echo  # type: ignore[assignment, unused-ignore]
    noisy = False  # "Starting factory ..." lines say nothing an operator needs

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        *,
        maxConnections: int = 0,
        maxPerSource: int = 0,
        idleTimeout: float = 0,
        logConnections: bool = True,
        ipv6Prefix: int = DEFAULT_IPV6_PREFIX,
        evictIdleAfter: float = 0,
        drainQuiet: float = DEFAULT_DRAIN_QUIET,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            # Twisted before 26 types the global reactor as a module.
            reactor = globalReactor  # type: ignore[assignment, unused-ignore]
        assert reactor is not None
        self.reactor = reactor
        self.maxConnections = maxConnections
        self.maxPerSource = maxPerSource
        self.ipv6Prefix = ipv6Prefix
        self.idleTimeout = idleTimeout
        self.evictIdleAfter = evictIdleAfter
        self.logConnections = logConnections
        self.drainQuiet = drainQuiet
        self.accepted = 0
        self.closed = 0
        self.evicted = 0
        self.bytesOfClosed = 0
        self.connections: set[Echo] = set()
        self.awaiting: set[Echo] = set()
        self.perSource: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self._refusals = ThrottledLog(log, reactor)
        self._drained: Deferred[None] | None = None
        self._sweeper: LoopingCall | None = None
        # Eviction candidates, idle longest first, as of the last sweep.
        self._idleOrder: deque[Echo] = deque()

    @property
    def open(self) -> int:
        """
        Connections counted against C{maxConnections}: admitted, or waiting
        for their PROXY header.
        """
        return len(self.connections) + len(self.awaiting)

    @property
    def _evicting(self) -> bool:
        return bool(self.maxConnections and self.evictIdleAfter)

    def sourceOf(self, host: str | None) -> str | None:
        """
        The source C{host} counts as, for the per-source limit and logs.
        """
        if host is None:
            return None
        return sys.intern(sourceGroup(host, self.ipv6Prefix))

    def _refusal(self, protocol: Echo) -> str | None:
        # The per-source limit first: a client it refuses must not cost an
        # idle connection its place.
        source = protocol.source
        if (
            self.maxPerSource
            and source is not None
            and self.perSource.get(source, 0) >= self.maxPerSource
        ):
            return TOO_MANY_FROM_SOURCE
        if (
            self.maxConnections
            and self.open >= self.maxConnections
            and not self._evictOne()
        ):
            return TOO_MANY
        return None

    def _refuse(self, protocol: Echo, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1
        if why == TOO_MANY_FROM_SOURCE:
            # The source, not one address of it: with IPv6 the address is
            # whichever of 2**64 the client picked this time.
            self._refusals.warn(
                why,
                "Refused connection from {source}: {reason}",
                event="connection.refused",
                source=protocol.source,
                reason=why,
            )
        else:
            self._refusals.warn(
                why,
                "Refused connection from {peer}: {reason}",
                event="connection.refused",
                peer=protocol.peer,
                source=protocol.source,
                reason=why,
            )

    def _count(self, protocol: Echo) -> None:
        source = protocol.source
        if source is not None:
            self.perSource[source] = self.perSource.get(source, 0) + 1

    def _uncount(self, protocol: Echo) -> None:
        source = protocol.source
        if source is not None:
            left = self.perSource.pop(source) - 1
            if left:
                self.perSource[source] = left

    def connectionOpened(self, protocol: Echo) -> bool:
        """
        Admit C{protocol} into the books, or refuse it (and log why).

        @return: whether it was admitted.
        """
        why = self._refusal(protocol)
        if why is not None:
            self._refuse(protocol, why)
            return False
        protocol.openedAt = self.reactor.seconds()
        self._count(protocol)
        self._admit(protocol)
        return True

    def connectionAwaiting(self, protocol: Echo) -> bool:
        """
        Count a connection whose PROXY header is still to come, as its
        proxy's, or refuse it (and log why).

        @return: whether it was admitted.
        """
        why = self._refusal(protocol)
        if why is not None:
            self._refuse(protocol, why)
            return False
        protocol.openedAt = self.reactor.seconds()
        self._count(protocol)
        self.awaiting.add(protocol)
        self._startSweeping()
        return True

    def headerReceived(self, protocol: Echo, source: str | None) -> bool:
        """
        An awaiting connection's PROXY header named its client, whose
        C{source} now counts it in place of the proxy's.  Its place among
        C{maxConnections} it keeps; the client's per-source limit may
        refuse it (and log why), and then it leaves the books.

        @return: whether it was admitted.
        """
        self.awaiting.discard(protocol)
        self._uncount(protocol)
        protocol.source = source
        if (
            self.maxPerSource
            and source is not None
            and self.perSource.get(source, 0) >= self.maxPerSource
        ):
            self._refuse(protocol, TOO_MANY_FROM_SOURCE)
            self._stopSweepingIfEmpty()
            return False
        self._count(protocol)
        self._admit(protocol)
        return True

    def awaitingEnded(self, protocol: Echo) -> None:
        """
        An awaiting connection ended before its PROXY header was in (the
        wrapper logged why, if it was the one to close it).
        """
        if protocol in self.awaiting:
            self.awaiting.discard(protocol)
            self._uncount(protocol)
            self._stopSweepingIfEmpty()
            self._checkDrained()

    def _admit(self, protocol: Echo) -> None:
        self.accepted += 1
        self.connections.add(protocol)
        if self.logConnections:
            log.info(
                "{peer} connected",
                event="connection.opened",
                peer=protocol.peer,
                listener=protocol.listener,
                open=len(self.connections),
            )
        if self._drained is not None:
            protocol.drain()
        self._startSweeping()

    def connectionClosed(self, protocol: Echo, reason: str) -> None:
        if protocol not in self.connections:
            # Evicted: the books let it go already.
            return
        self.connections.discard(protocol)
        self.closed += 1
        self.bytesOfClosed += protocol.bytesEchoed
        self._uncount(protocol)
        self._stopSweepingIfEmpty()
        if self.logConnections:
            log.info(
                "{peer} disconnected after {duration:.3f}s, {bytesIn} bytes"
                " echoed: {reason}",
                event="connection.closed",
                peer=protocol.peer,
                listener=protocol.listener,
                duration=self.reactor.seconds() - protocol.openedAt,
                bytesIn=protocol.bytesEchoed,
                bytesOut=protocol.bytesEchoed,
                reason=reason,
                open=len(self.connections),
            )
        self._checkDrained()

    def _checkDrained(self) -> None:
        if self._drained is not None and not self.connections:
            drained, self._drained = self._drained, None
            drained.callback(None)

    # --- eviction ----------------------------------------------------------

    def _idleSince(self, protocol: Echo) -> float | None:
        """
        Since when C{protocol} has been idle, no later than the truth; None
        if it was active since the last sweep, or is closing already.
        """
        if protocol._awaiting is not None:
            # Nothing is echoed before the header: idle since accepted.
            return protocol.openedAt if protocol in self.awaiting else None
        if (
            protocol not in self.connections
            or protocol._closeReason is not None
            or protocol.bytesEchoed + protocol._resumes != protocol._idleMark
        ):
            return None
        return max(protocol._idleSince, protocol.openedAt)

    def _evictOne(self) -> bool:
        """
        Close the connection idle longest, if it has been idle
        C{evictIdleAfter} seconds at least, and let it go from the books.

        The sweep lists the candidates idle longest first.  A candidate
        found active or gone is dropped (the next sweep lists it again if it
        goes idle), so each costs one look per sweep however many clients
        knock.

        @return: whether one was evicted.
        """
        if not self._evicting:
            return False
        now = self.reactor.seconds()
        order = self._idleOrder
        while order:
            protocol = order[0]
            since = self._idleSince(protocol)
            if since is None:
                order.popleft()
                continue
            if now - since < self.evictIdleAfter:
                # Idle longest, and still not long enough: none is.
                return False
            order.popleft()
            self._evict(protocol, now - since)
            return True
        return False

    def _evict(self, protocol: Echo, idle: float) -> None:
        self.evicted += 1
        self._refusals.warn(
            EVICTED,
            "Closed {peer}, idle {idle:.1f}s or more, to admit a new client:"
            " the server is full",
            event="connection.evicted",
            peer=protocol.peer,
            source=protocol.source,
            idle=idle,
            reason=EVICTED,
        )
        wrapper = protocol._awaiting
        if wrapper is not None:
            protocol._awaiting = None
            self.awaiting.discard(protocol)
            self._uncount(protocol)
            wrapper.transport.abortConnection()
            return
        # Let it go from the books now, so that the newcomer has its place
        # at once (its transport reports the loss on a later iteration).
        self.connectionClosed(protocol, EVICTED)
        try:
            if protocol._paused:
                # Its client does not read: the echo it holds cannot be
                # delivered, and a close would wait for it forever.
                protocol.abort(EVICTED)
            else:
                protocol.closeWhenFlushed(EVICTED)
        except Exception:
            log.failure("Could not evict {peer}", peer=protocol.peer)

    # --- the idle sweep ----------------------------------------------------

    @property
    def sweepInterval(self) -> float:
        """
        Seconds between idle sweeps: a tenth of the idle timeout, and a
        quarter of C{evictIdleAfter} while eviction is on; between 50 ms
        and 10 s.  So a connection is closed between C{idleTimeout} and
        C{idleTimeout} plus this after its last activity, and can be
        evicted between C{evictIdleAfter} and C{evictIdleAfter} plus this.
        """
        wanted = [10.0]
        if self.idleTimeout:
            wanted.append(self.idleTimeout / 10)
        if self._evicting:
            wanted.append(self.evictIdleAfter / 4)
        return max(0.05, min(wanted))

    def _startSweeping(self) -> None:
        if self._sweeper is not None or not (self.idleTimeout or self._evicting):
            return
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self.reactor
        self._sweeper.start(self.sweepInterval, now=False)

    def _stopSweepingIfEmpty(self) -> None:
        if not self.open and self._sweeper is not None:
            if self._sweeper.running:
                self._sweeper.stop()
            self._sweeper = None
            self._idleOrder.clear()

    def _sweep(self) -> None:
        now = self.reactor.seconds()
        limit = self.idleTimeout
        evicting = self._evicting
        idle: list[tuple[float, Echo]] = []
        for protocol in list(self.connections):
            activity = protocol.bytesEchoed + protocol._resumes
            if activity != protocol._idleMark:
                protocol._idleMark = activity
                protocol._idleSince = now
                continue
            since = max(protocol._idleSince, protocol.openedAt)
            if limit and now - since >= limit:
                protocol._idleSince = now
                # One connection's failure must not end the sweeps (a
                # LoopingCall stops at the first exception).
                try:
                    if protocol._closeReason is None:
                        protocol.closeWhenFlushed("idle timeout")
                    else:
                        # It was closing, and could not send what it had
                        # left within another idle timeout: its reader is
                        # gone.
                        protocol.abort(f"{protocol._closeReason}; could not flush")
                except Exception:
                    log.failure("Idle sweep could not close {peer}", peer=protocol.peer)
            elif evicting and protocol._closeReason is None:
                idle.append((since, protocol))
        if evicting:
            idle.extend((protocol.openedAt, protocol) for protocol in self.awaiting)
            idle.sort(key=lambda item: item[0])
            self._idleOrder = deque(protocol for _, protocol in idle)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Close every connection once it is quiet (see L{Echo.drain}); abort
        whatever is still open C{timeout} seconds from now.  Connections
        still waiting for a PROXY header are closed at once: they have
        nothing to echo yet.

        @return: fires once no connection is left open.
        """
        for protocol in list(self.awaiting):
            wrapper = protocol._awaiting
            self.awaitingEnded(protocol)
            protocol._awaiting = None
            if wrapper is not None:
                wrapper.transport.abortConnection()
        done: Deferred[None] = Deferred()
        if not self.connections:
            done.callback(None)
            return done
        log.info(
            (
                "Draining {count} connection(s): each closes once quiet for"
                " {quiet}s; what is left is aborted after {timeout}s"
                if self.drainQuiet
                else "Draining {count} connection(s): each closes when its"
                " client closes; what is left is aborted after {timeout}s"
            ),
            event="drain.started",
            count=len(self.connections),
            quiet=self.drainQuiet,
            timeout=timeout,
        )
        started = self.reactor.seconds()
        self._drained = done
        deadline = self.reactor.callLater(timeout, self._abortAll)
        for protocol in list(self.connections):
            protocol.drain()

        def finished(result: None) -> None:
            if deadline.active():
                deadline.cancel()
            log.info(
                "Drain finished after {duration:.3f}s",
                event="drain.finished",
                duration=self.reactor.seconds() - started,
            )
            return result

        return done.addCallback(finished)

    def _abortAll(self) -> None:
        left = list(self.connections)
        log.warn(
            "Shutdown deadline passed: aborting {count} connection(s)",
            event="drain.deadline",
            count=len(left),
        )
        for protocol in left:
            protocol.abort("shutdown deadline passed")
