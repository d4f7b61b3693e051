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
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echotwist._address import formatAddress

__all__ = ["Echo", "EchoFactory"]

log = Logger()


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
    peer = ""
    #: While draining, a connection is quiet, and closes, once this many
    #: seconds pass with nothing received and nothing backed up.  Long
    #: enough for the next segment of a burst already on its way to land.
    quietPeriod = 0.05

    # Why the server closed the connection, once it decided to; None while
    # the connection is open or when the client was the one to close.
    _closeReason: str | None = None
    # True while the transport holds more unsent echo than it wants and has
    # asked us, its producer, to stop: reading from the client is paused.
    _paused = False
    # Shutting down: close as soon as the connection is quiet.
    _draining = False
    _readSinceQuietCheck = False
    _quietCheck: IDelayedCall | None = None

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        # Echo is request/response traffic: never hold a small reply back
        # waiting for more.  Transports without TCP (UNIX sockets) refuse.
        try:
            transport.setTcpNoDelay(True)
        except (AttributeError, NotImplementedError, OSError):
            pass
        transport.registerProducer(self, True)
        self.peer = formatAddress(transport.getPeer())
        self.openedAt = self.factory.reactor.seconds()
        self.factory.connectionOpened(self)

    def dataReceived(self, data: bytes) -> None:
        self.bytesEchoed += len(data)
        self._readSinceQuietCheck = True
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        # The client will send nothing more: echo what is still queued, then
        # close our side too.
        self.closeWhenFlushed("client finished sending")

    def writeConnectionLost(self) -> None:
        # Nothing we write can arrive any more; there is no point reading.
        self.closeWhenFlushed("client stopped receiving")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelQuietCheck()
        if self._closeReason is not None:
            why = self._closeReason
        elif reason.check(ConnectionDone):
            why = "client closed the connection"
        else:
            why = reason.getErrorMessage()
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
        as soon as it is quiet: when L{quietPeriod} passed with nothing new
        to read and reading is not paused for a backlog.
        """
        if self._closeReason is not None or self._draining:
            return
        self._draining = True
        self._readSinceQuietCheck = False
        self._scheduleQuietCheck()

    def _scheduleQuietCheck(self) -> None:
        if self._quietCheck is None and not self._paused:
            self._quietCheck = self.factory.reactor.callLater(
                self.quietPeriod, self._closeIfQuiet
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
        if self._readSinceQuietCheck:
            self._readSinceQuietCheck = False
            self._scheduleQuietCheck()
            return
        self.closeWhenFlushed("server shutting down")

    # IPushProducer: the transport calls these as its send buffer fills up
    # and drains; we pass them on to the transport's reading side.

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self.transport.resumeProducing()
        if self._draining:
            self._scheduleQuietCheck()

    def stopProducing(self) -> None:
        # Called as the connection goes away; connectionLost does the books.
        pass


class EchoFactory(Factory):
    """
    Builds L{Echo} protocols and keeps the books on them.

    @ivar reactor: the clock for durations, quiet checks and drain deadlines.
    @ivar connections: the open connections.
    """

    protocol = Echo  # type: ignore[assignment]
    noisy = False  # "Starting factory ..." lines say nothing an operator needs

    def __init__(self, reactor: IReactorTime | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        assert reactor is not None
        self.reactor = reactor
        self.connections: set[Echo] = set()
        self._drained: Deferred[None] | None = None

    def connectionOpened(self, protocol: Echo) -> None:
        self.connections.add(protocol)
        log.info(
            "{peer} connected",
            event="connection.opened",
            peer=protocol.peer,
            open=len(self.connections),
        )
        if self._drained is not None:
            protocol.drain()

    def connectionClosed(self, protocol: Echo, reason: str) -> None:
        self.connections.discard(protocol)
        log.info(
            "{peer} disconnected after {duration:.3f}s, {bytes} bytes echoed: {reason}",
            event="connection.closed",
            peer=protocol.peer,
            duration=self.reactor.seconds() - protocol.openedAt,
            bytes=protocol.bytesEchoed,
            reason=reason,
            open=len(self.connections),
        )
        if self._drained is not None and not self.connections:
            drained, self._drained = self._drained, None
            drained.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Close every connection once it is quiet (see L{Echo.drain}); abort
        whatever is still open C{timeout} seconds from now.

        @return: fires once no connection is left open.
        """
        done: Deferred[None] = Deferred()
        if not self.connections:
            done.callback(None)
            return done
        log.info(
            "Draining {count} connection(s), at most {timeout}s",
            event="drain.started",
            count=len(self.connections),
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
