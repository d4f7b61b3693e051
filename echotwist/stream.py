# -*- test-case-name: tests.test_stream -*-
"""
The stream echo protocol (RFC 862 over TCP, and every other stream
transport).

Everything a client sends comes back to it, in order, until the client
closes.  Three things make that hold under real traffic:

  - backpressure: the protocol is the producer for its own transport, so
    while the transport holds more than its buffer size of unsent echo,
    reading from the client stops; it starts again once the buffer drains;
  - half-close: when the client shuts down its sending side, what has been
    received is still echoed, and only then is the connection closed;
  - a drain for shutdown: a connection closes once it is quiet (nothing
    unread, nothing unsent), so bytes sent before a SIGTERM come back.

On echotwist's reactor, over plain TCP (and TCP under echotwist's PROXY
wrapper), the echo is sent straight from dataReceived when nothing is
queued before it, to a transport of the fast path (see
L{echotwist._fast}) that allows it: Twisted's
transport.write() only buffers and asks the reactor for writability, which
costs an epoll_ctl pair and a pass of the loop per message (Twisted issue
5303).  Whatever the socket does not take at once, or any error, goes
through transport.write() as usual, behind nothing, so order, partial
writes and the handling of a lost connection stay Twisted's.  Such a
connection reads up to 128 KiB at a time (Twisted reads 64 KiB), and stops
reading as soon as the kernel refuses part of an echo, until the rest is
sent: it never holds more than one read's worth, whatever the client does.
That send stays here, in dataReceived, because a call more per message
would cost; the other kernel fast paths (the splice, the shared pipe, the
plain echo the reactor runs itself) are in L{echotwist._fast}.  On any
other reactor, and on any other transport, the echo goes through
transport.write(), as in Twisted's own echo.

The books on connections (limits, per-source counts, the idle sweep,
eviction, the drain) are L{echotwist.connections.EchoFactory}'s.
"""

from __future__ import annotations

from errno import ENOBUFS, EWOULDBLOCK
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    INegotiated,
    IPushProducer,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from echotwist._address import escape, formatAddress
from echotwist._twisted import nothingQueued

if TYPE_CHECKING:
    from twisted.protocols.policies import ProtocolWrapper

    from echotwist.connections import EchoFactory

__all__ = [
    "DIRECT_READ_SIZE",
    "NOTHING_SENT",
    "SPLICE_FROM",
    "Echo",
    "passesThrough",
    "sendsDirectly",
]


def sendsDirectly(transport: object) -> bool:
    """
    Whether L{Echo} may send to C{transport} directly when nothing is
    queued on it: a transport whose class says so with a true
    C{echoSendsDirectly}, as the fast path's
    L{echotwist._fast.tcp.SplicingServer} does.  Any other, Twisted's
    C{tcp.Server} too, gets the echo through its C{write()}.  Such a
    transport is a C{tcp.Server} in all the direct send relies on: nothing
    queued as L{echotwist._twisted.nothingQueued} tells; C{socket} is the
    socket; C{producerPaused} makes it resume its producer once drained;
    C{bufferSize} is how much one C{doRead} asks C{recv()} for.
    """
    return getattr(type(transport), "echoSendsDirectly", False) is True


def passesThrough(wrapper: object) -> TypeGuard[ProtocolWrapper]:
    """
    Whether C{wrapper} is a protocol wrapper that, past a header, only
    passes bytes on to the L{Echo} it wraps (its C{wrappedProtocol}), and
    whose C{write()} is its transport's: a class that says so with a true
    C{echoPassesThrough}, as echotwist's PROXY wrapper does.  The direct
    send and the splice see through it.
    """
    return getattr(type(wrapper), "echoPassesThrough", False) is True


#: The reason logged for a connection closed by its client before it sent
#: a byte, by FIN or by RST: a health check, not a fault.
NOTHING_SENT = "client closed without sending anything"

#: What a connection that sends directly reads at a time.
DIRECT_READ_SIZE = 128 * 1024

#: Reads at least this big make the next read a splice, where the transport
#: allows; a smaller splice makes the next read a plain one.  Splicing
#: saves copying the bytes into and out of Python, which pays from some
#: kilobytes on; for small reads recv() and send() cost less.
SPLICE_FROM = 16 * 1024

#: Quiet checks per quiet period (see L{Echo._scheduleQuietCheck}).
QUIET_CHECKS = 4


@implementer(IHalfCloseableProtocol, IPushProducer, IHandshakeListener)
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
    #: The idle sweep's marks, kept by the factory: activity (see
    #: L{activity}) seen at its last change, and when (until the first
    #: change, C{openedAt} stands for it).
    idleMark = 0
    idleSince = 0.0
    #: What echotwist's own loop reads this connection with while it echoes
    #: it without this protocol's code (see
    #: L{echotwist._fast.tcp.plainEcho}), set by that loop: the
    #: C{readinto} of the socket's file.  Kept here, beside the count the
    #: loop adds to, so that a message touches as few of the connection's
    #: objects as can be: at a thousand connections each is out of the
    #: CPU's caches by the connection's next message.
    loopRead: Any = None
    #: Over TLS (an C{ssl:} listener): the handshake is still to finish
    #: when the connection is made, and counts against the source's
    #: handshake budget until it does.
    tls = False

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
        """
        Enter the books (or be refused), become the transport's producer,
        and send directly where the transport allows.
        """
        transport = self.transport
        assert transport is not None
        source = self.factory.sourceOf(getattr(transport.getPeer(), "host", None))
        if self._awaiting is not None:
            self._awaiting = None
            admitted = self.factory.headerReceived(self, source)
        else:
            self.source = source
            # Twisted's TLS transport calls this before its handshake.
            self.tls = INegotiated.providedBy(transport)
            admitted = self.factory.connectionOpened(self)
        if not admitted:
            self._refused = True
            if self.tls:
                # Not a word of TLS, not a cycle of crypto: the client's
                # hello is still unread, and a TLS close would answer it.
                transport.abortConnection()
            else:
                transport.loseConnection()
            return
        # Echo is request/response traffic: never hold a small reply back
        # waiting for more.  Transports without TCP (UNIX sockets) refuse.
        try:
            transport.setTcpNoDelay(True)
        except (AttributeError, NotImplementedError, OSError):
            pass
        transport.registerProducer(self, True)
        if sendsDirectly(transport):
            self._direct = transport
        elif passesThrough(transport) and sendsDirectly(transport.transport):
            # The wrapper's write() is the TCP transport's write().
            self._direct = cast(tcp.Server, transport.transport)
        if self._direct is not None:
            self._direct.bufferSize = DIRECT_READ_SIZE

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake finished: it no longer counts against the
        source's budget.
        """
        self.factory.handshakeEnded(self)

    @property
    def peer(self) -> str:
        """
        The client's address, for logs.  Not kept: an idle connection costs
        less memory without one more string.
        """
        transport = self.transport if self._awaiting is None else self._awaiting
        return formatAddress(transport.getPeer())

    def dataReceived(self, data: bytes) -> None:
        """
        Echo C{data}: straight to the socket when nothing is queued on a
        direct transport, through C{transport.write()} otherwise.
        """
        self.bytesEchoed += len(data)
        if len(data) >= SPLICE_FROM and not self._bulk:
            self._bulk = True
        direct = self._direct
        if direct is not None and nothingQueued(direct):
            # The socket's own send(): Python retries EINTR itself (PEP 475),
            # so Twisted's untilConcludes wrapper is not needed here.
            try:
                sent: int | OSError = direct.socket.send(data)
            except OSError as e:
                sent = e
            if sent != len(data):
                self.sendRest(direct, data, sent)
            return
        self.transport.write(data)

    # What the kernel fast paths (echotwist._fast)
    # read of an Echo, and the few things they tell it: nothing else of it
    # is theirs to touch.  Besides these, they add to bytesEchoed what they
    # echo.

    def sendsDirectlyTo(self, transport: object) -> bool:
        """
        Whether this protocol sends its echo straight to C{transport}'s
        socket when nothing is queued on it (see L{sendsDirectly}).
        """
        return self._direct is transport

    @property
    def inBulk(self) -> bool:
        """
        Whether the client sends in bulk: its last read was at least
        L{SPLICE_FROM} bytes, so the next may be spliced.
        """
        return self._bulk

    @property
    def undisturbed(self) -> bool:
        """
        Whether the next read needs nothing of this protocol but its echo:
        reading is not paused and the server has not decided to close.
        """
        return not self._paused and self._closeReason is None

    def splicedEcho(self, count: int) -> None:
        """
        A fast path echoed C{count} bytes in the kernel: count them; a
        read under L{SPLICE_FROM} ends the bulk.
        """
        self.bytesEchoed += count
        if count < SPLICE_FROM:
            self._bulk = False

    def partlySent(self, data: bytes, sent: int | OSError) -> None:
        """
        A fast path read C{data} and sent only C{sent} bytes of it straight
        to the socket, or the send raised C{sent}: count it, and queue the
        rest as L{sendRest} does.
        """
        self.bytesEchoed += len(data)
        assert self._direct is not None
        self.sendRest(self._direct, data, sent)

    def sendRest(self, direct: tcp.Server, data: bytes, sent: int | OSError) -> None:
        """
        A direct send to C{direct} took only C{sent} bytes of C{data}, or
        raised C{sent}.  If the kernel's send buffer is full, queue the
        rest and stop reading until the transport has sent it (it then
        resumes us, its paused producer).
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

    def readConnectionLost(self) -> None:
        """
        The client will send nothing more: echo what is still queued, then
        close our side too.
        """
        self.closeWhenFlushed("client finished sending")

    def writeConnectionLost(self) -> None:
        """
        Nothing we write can arrive any more, so there is no point reading:
        close.
        """
        self.closeWhenFlushed("client stopped receiving")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Leave the books, saying why the connection closed.
        """
        if self._refused:
            return
        self._cancelQuietCheck()
        if (
            self.bytesEchoed == 0
            and self._closeReason in (None, "client finished sending")
            and reason.check(ConnectionDone, ConnectionLost)
        ):
            # A load balancer's health check: it connects and closes, with
            # FIN or with RST (HAProxy's), and has nothing to complain of.
            why = NOTHING_SENT
        elif self._closeReason is not None:
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
        self._quietMark = self.activity()
        self._quietTicks = 0
        self._scheduleQuietCheck()

    def activity(self) -> int:
        """
        Bytes echoed plus backlogs drained: grows while the connection
        makes progress, even while nothing can be read.
        """
        return self.bytesEchoed + self._resumes

    @property
    def closeReason(self) -> str | None:
        """
        Why the server closes the connection, once it decided to; None
        while it is open or when the client was the one to close.
        """
        return self._closeReason

    @property
    def paused(self) -> bool:
        """
        Whether reading from the client is paused for a backlog of echo
        (its client does not read).
        """
        return self._paused

    @property
    def awaitingHeader(self) -> bool:
        """
        Whether the connection is behind the PROXY wrapper, its header
        still to come.
        """
        return self._awaiting is not None

    def abandonHeader(self) -> None:
        """
        Close a connection whose PROXY header is still to come, at once
        (RST), without a word in the books: the caller lets it go from
        them.
        """
        wrapper, self._awaiting = self._awaiting, None
        if wrapper is not None:
            wrapper.transport.abortConnection()

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
        activity = self.activity()
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
        """
        Stop reading from the client: its echo is backed up.
        """
        self._paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Read from the client again: its echo drained.  During a drain that
        counts as activity, and the quiet period starts over.
        """
        self._paused = False
        self._resumes += 1
        self.transport.resumeProducing()
        if self._draining:
            # The reader took its backlog: that is activity, and the quiet
            # period starts over.
            self._quietMark = self.activity()
            self._quietTicks = 0
            self._scheduleQuietCheck()

    def stopProducing(self) -> None:
        """
        Nothing: called as the connection goes away, and L{connectionLost}
        does the books.
        """
