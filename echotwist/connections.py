# -*- test-case-name: tests.test_connections,tests.test_stream -*-
"""
The books on stream connections: L{EchoFactory} builds the L{Echo}
protocols and keeps count of them.

The factory keeps the open connections, how many each source has (an IPv4
address, or an IPv6 network of C{ipv6Prefix} bits: one host can own a
whole /64), the limits on both, and an idle sweep.  The sweep is one
periodic call for all connections rather than a timer each: it costs no
memory per connection and nothing in the data path, where a
per-connection timer would be reset on every read.

When C{maxConnections} is reached, a new client is admitted by evicting a
connection, chosen in two steps (see L{EchoFactory._evictOne}):

  1. Fair shares.  If some source holds at least two connections more than
     the newcomer's source does, the idlest connection of a source holding
     the most goes.  So a few addresses that fill the server, however
     busy they keep their connections, give up their slots one by one to
     clients from other addresses: to hold a full server against newcomers
     an attacker needs as many sources (IPv4 addresses, IPv6 networks of
     C{ipv6Prefix} bits) as the server has slots.  The books keep the
     sources by how many connections each holds, so finding the one that
     holds the most costs nothing; the sweep keeps each source's idle
     connections in the order they went idle, so its idlest is the head of
     that list.
  2. Idleness.  Otherwise (every source holds about as many as the
     newcomer's), the connection idle longest goes, if it has been idle
     C{evictIdleAfter} seconds at least.  The sweep keeps the connections
     in the order they went idle, so this costs the head of that list, not
     a pass over every connection.

A flood of connects at a full server stays cheap either way.

TLS handshakes are a budget per source: C{tlsHandshakesPerSource} in
progress at once and C{tlsHandshakeRate} new ones a second (a token bucket,
one second's worth deep).  L{EchoFactory.admitHandshake} is asked as a TLS
connection is accepted (see L{echotwist.tls.HandshakeGate}); one over
either is closed before Twisted's TLS layer is built for it, let alone its
client's hello read: it costs an accept and a close, not a handshake's
cryptography, so one address cannot spend the server's CPU on handshakes
however fast it connects.

Under echotwist's PROXY wrapper a connection is in the books from the moment
it is accepted, as the proxy's: a peer that never sends a header still
counts against C{maxConnections} and, as its proxy's, towards eviction's fair
shares (and, being idle, can be evicted).  Once the header is in, the
client's own source takes its place, and is held to C{maxPerSource}: the
proxy's is not, or a proxy's burst of connects would be refused before a
header was read.

On shutdown, L{EchoFactory.drain} has every connection close once it is
quiet (see L{Echo.drain}), and aborts what is left at a deadline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from echotwist._address import DEFAULT_IPV6_PREFIX
from echotwist._twisted import orGlobalReactor
from echotwist.admission import (
    HANDSHAKE_RATE,
    TOO_MANY_FROM_SOURCE,
    TOO_MANY_HANDSHAKES,
    Admission,
)
from echotwist.limits import ThrottledLog
from echotwist.settings import Settings
from echotwist.stream import Echo

__all__ = [
    "CONNECTION_REFUSALS",
    "DEFAULT_DRAIN_QUIET",
    "EVICTED",
    "EVICTED_SHARE",
    "HANDSHAKE_RATE",
    "TOO_MANY_HANDSHAKES",
    "EchoFactory",
]

# Stream connection events keep the namespace they had before the split of
# echotwist.stream: operators filter on it, and text log lines stay as long
# as README's log volume says.
log = Logger(namespace="echotwist.stream")

#: Seconds a connection must be quiet during a drain before it is closed:
#: C{--drain-quiet}'s default, which L{Settings} holds.
DEFAULT_DRAIN_QUIET: float = Settings.drainQuiet

#: Why a connection can be refused, as logged and counted.
TOO_MANY = "too many connections"
CONNECTION_REFUSALS = (
    TOO_MANY,
    TOO_MANY_FROM_SOURCE,
    TOO_MANY_HANDSHAKES,
    HANDSHAKE_RATE,
)
# Refusals that name the source, not the peer: with IPv6 the address is
# whichever of 2**64 the client picked this time.
_OF_THE_SOURCE = frozenset({TOO_MANY_FROM_SOURCE, TOO_MANY_HANDSHAKES, HANDSHAKE_RATE})
#: Why a connection was closed to make room for a new client.
EVICTED = "evicted: idle while the server was full"
EVICTED_SHARE = "evicted: its source held the most connections of a full server"


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
    @ivar admission: who may connect (L{echotwist.admission.Admission}):
        the limits (C{maxConnections}, C{maxPerSource}, C{ipv6Prefix}, the
        TLS handshake budget) live there, given by the keyword arguments
        of the same names.
    @ivar idleTimeout: seconds without activity after which a connection is
        closed, and a closing connection that cannot flush is aborted; 0
        for never.
    @ivar evictIdleAfter: when the admission's C{maxConnections} is reached, a new client
        is admitted by closing the idlest connection of the source holding
        the most, if that holds two or more than the newcomer's source,
        or else the connection idle longest, if it has been idle at least
        this many seconds; 0 for never evicting.
    @ivar logConnections: whether to log each connection opened and closed
        (refusals and evictions are logged regardless, throttled).
    @ivar accepted: connections admitted so far (behind the PROXY wrapper,
        once their header is in).
    @ivar closed: admitted connections closed so far, evicted ones too.
    @ivar evicted: connections closed so far to admit a new client.
    @ivar evictedForShare: of those, how many because their source held the
        most connections.
    @ivar handshaking: TLS handshakes in progress, per source.
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
        tlsHandshakesPerSource: int = 0,
        tlsHandshakeRate: float = 0,
    ) -> None:
        self.reactor = reactor = orGlobalReactor(reactor)
        self.idleTimeout = idleTimeout
        self.evictIdleAfter = evictIdleAfter
        self.logConnections = logConnections
        self.drainQuiet = drainQuiet
        self.admission = Admission(
            reactor,
            maxConnections=maxConnections,
            maxPerSource=maxPerSource,
            ipv6Prefix=ipv6Prefix,
            tlsHandshakesPerSource=tlsHandshakesPerSource,
            tlsHandshakeRate=tlsHandshakeRate,
        )
        # The admission's books, by their old names.
        self.handshaking = self.admission.handshaking
        self.perSource = self.admission.perSource
        self.accepted = 0
        self.closed = 0
        self.evicted = 0
        self.evictedForShare = 0
        self.bytesOfClosed = 0
        self.connections: set[Echo] = set()
        self.awaiting: set[Echo] = set()
        self.refused: dict[str, int] = {}
        self._refusals = ThrottledLog(log, reactor)
        self._drained: Deferred[None] | None = None
        self._sweeper: LoopingCall | None = None
        # Eviction candidates, idle longest first, as of the last sweep.
        self._idleOrder: deque[Echo] = deque()
        # The same, per source: where the fair-share step finds its victim.
        self._idleBySource: dict[str, deque[Echo]] = {}
        #: Called with no arguments whenever L{open} changes, or None (see
        #: L{echotwist.worker.AcceptInTurn}).
        self.openChanged: Callable[[], object] | None = None

    @property
    def open(self) -> int:
        """
        Connections counted against C{maxConnections}: admitted, or waiting
        for their PROXY header.
        """
        return len(self.connections) + len(self.awaiting)

    @property
    def _evicting(self) -> bool:
        return bool(self.admission.maxConnections and self.evictIdleAfter)

    def sourceOf(self, host: str | None) -> str | None:
        """
        The source C{host} counts as, for the per-source limit and logs.
        """
        return self.admission.sourceOf(host)

    def _refusal(self, protocol: Echo) -> str | None:
        # The per-source limits first: a client they refuse must not cost an
        # idle connection its place.  Not yet for a connection whose PROXY
        # header is to come: it counts as its proxy's, whose bursts carry
        # many clients and outrun the reading of their headers (a pass of
        # accepts takes 100 and more), while a peer held back here could
        # claim a new client in each header anyway.  Its client's source
        # is held to the limit when the header names it (headerReceived).
        source = protocol.source
        if not protocol.awaitingHeader and self._sourceFull(source):
            return TOO_MANY_FROM_SOURCE
        if self.admission.full(self.open) and not self._evictOne(source):
            return TOO_MANY
        return None

    def _sourceFull(self, source: str | None) -> bool:
        """
        Whether C{source} holds as many connections as it may, those of it
        still waiting for their PROXY header left out: they count as their
        proxy's, but are for the clients their headers will name.  Without
        that, a proxy's own connection (HAProxy's health check, with a
        LOCAL header; a client of its UNIX-socket frontend, UNKNOWN) was
        refused whenever a burst it carried for others had C{maxPerSource}
        headers still to come.
        """
        if not self.admission.sourceFull(source):
            return False
        if not self.awaiting:
            return True  # no PROXY header is to come (every plain listener)
        assert source is not None
        # Looked at only at the limit, and no more than the source holds.
        waiting = sum(
            1 for protocol in self.admission.members[source] if protocol.awaitingHeader
        )
        return self.perSource[source] - waiting >= self.admission.maxPerSource

    def admitHandshake(self, host: str | None) -> bool:
        """
        Whether a TLS connection from C{host}, accepted but not yet given a
        protocol, is within its source's handshake budget; if not, the
        refusal is counted and logged, and the caller closes it.

        Called before Twisted's TLS layer is built for the connection, so
        that a refusal costs no TLS state at all.
        """
        source = self.sourceOf(host)
        if source is None:
            return True
        why = self.admission.handshakeRefusal(source)
        if why is None:
            return True
        self.refused[why] = self.refused.get(why, 0) + 1
        self._refusals.warn(
            why,
            "Refused connection from {source}: {reason}",
            event="connection.refused",
            source=source,
            reason=why,
        )
        return False

    def _refuse(self, protocol: Echo, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1
        if why in _OF_THE_SOURCE:
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

    def connectionOpened(self, protocol: Echo) -> bool:
        """
        Admit C{protocol} into the books, or refuse it (and log why).

        @return: whether it was admitted.
        """
        if not self._book(protocol):
            return False
        self._admit(protocol)
        return True

    def connectionAwaiting(self, protocol: Echo) -> bool:
        """
        Count a connection whose PROXY header is still to come, as its
        proxy's, or refuse it (and log why).

        @return: whether it was admitted.
        """
        if not self._book(protocol):
            return False
        self.awaiting.add(protocol)
        self._startSweeping()
        if self.openChanged is not None:
            self.openChanged()
        return True

    def _book(self, protocol: Echo) -> bool:
        """
        Count C{protocol} against the limits, or refuse it (and log why).

        @return: whether it was counted.
        """
        why = self._refusal(protocol)
        if why is not None:
            self._refuse(protocol, why)
            return False
        protocol.openedAt = self.reactor.seconds()
        self.admission.count(protocol)
        if protocol.tls:
            self.admission.handshakeStarted(protocol)
        return True

    def handshakeEnded(self, protocol: Echo) -> None:
        """
        C{protocol}'s TLS handshake finished, or its connection closed
        first: it no longer counts against its source's handshake budget.
        """
        self.admission.handshakeEnded(protocol)

    def headerReceived(self, protocol: Echo, source: str | None) -> bool:
        """
        An awaiting connection's PROXY header named its client, whose
        C{source} now counts it in place of the proxy's.  Its place among
        C{maxConnections} it keeps; the client's per-source limit may
        refuse it (and log why), and then it leaves the books.

        @return: whether it was admitted.
        """
        self.awaiting.discard(protocol)
        self.admission.uncount(protocol)
        protocol.source = source
        if self._sourceFull(source):
            self._refuse(protocol, TOO_MANY_FROM_SOURCE)
            self._stopSweepingIfEmpty()
            if self.openChanged is not None:
                self.openChanged()
            return False
        self.admission.count(protocol)
        self._admit(protocol)
        return True

    def awaitingEnded(self, protocol: Echo) -> None:
        """
        An awaiting connection ended before its PROXY header was in (the
        wrapper logged why, if it was the one to close it).
        """
        if protocol in self.awaiting:
            self.awaiting.discard(protocol)
            self.admission.uncount(protocol)
            self._stopSweepingIfEmpty()
            if self.openChanged is not None:
                self.openChanged()
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
        if self.openChanged is not None:
            self.openChanged()

    def connectionClosed(self, protocol: Echo, reason: str) -> None:
        """
        C{protocol} closed, for C{reason}: let it go from the books and log
        it (an evicted connection was let go already).
        """
        if protocol not in self.connections:
            # Evicted: the books let it go already.
            return
        self.connections.discard(protocol)
        self.handshakeEnded(protocol)
        self.closed += 1
        self.bytesOfClosed += protocol.bytesEchoed
        self.admission.uncount(protocol)
        self._stopSweepingIfEmpty()
        if self.openChanged is not None:
            self.openChanged()
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
        if protocol.awaitingHeader:
            # Nothing is echoed before the header: idle since accepted.
            return protocol.openedAt if protocol in self.awaiting else None
        if (
            protocol not in self.connections
            or protocol.closeReason is not None
            or protocol.activity() != protocol.idleMark
        ):
            return None
        return max(protocol.idleSince, protocol.openedAt)

    def _evictOne(self, newcomer: str | None) -> bool:
        """
        Close a connection to admit a client from the source C{newcomer},
        and let it go from the books: the idlest of a source holding the
        most connections, if that holds at least two more than
        C{newcomer}; otherwise the connection idle longest, if it has been
        idle C{evictIdleAfter} seconds at least.

        Two more, not one: a source holding just one more than the
        newcomer's would hold as many as it after the swap, and the two
        would take each other's place back and forth.

        For the second step the sweep lists the candidates idle longest
        first.  A candidate found active or gone is dropped (the next sweep
        lists it again if it goes idle), so each costs one look per sweep
        however many clients knock.

        @return: whether one was evicted.
        """
        if not self._evicting:
            return False
        now = self.reactor.seconds()
        has = 0 if newcomer is None else self.perSource.get(newcomer, 0)
        if self.admission.most >= has + 2:
            victim = self._idlestOfTheMost(now)
            if victim is not None:
                self._evict(victim[0], now - victim[1], self.admission.most)
                return True
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

    def _idlestOfTheMost(self, now: float) -> tuple[Echo, float] | None:
        """
        The idlest connection of a source holding the most, and since when
        it is idle (C{now} if it was active since the last sweep); None if
        every one of them is closing already.
        """
        source = next(iter(self.admission.holding[self.admission.most]))
        # The sweep's list for the source first, idle longest at its head;
        # a candidate found active, gone, or no longer of this source (a
        # PROXY header came) is dropped, so each costs one look per sweep.
        order = self._idleBySource.get(source)
        while order:
            protocol = order[0]
            since = self._idleSince(protocol)
            if since is None or protocol.source != source:
                order.popleft()
                continue
            return protocol, since
        # Every one of its connections was active, or is newer, since the
        # last sweep: none is idler than another, as far as is known.
        for protocol in self.admission.members[source]:
            if protocol.awaitingHeader or protocol.closeReason is None:
                return protocol, now
        return None  # all closing: they are leaving anyway

    def _evict(self, protocol: Echo, idle: float, held: int = 0) -> None:
        """
        Close C{protocol}, idle C{idle} seconds, to admit a new client;
        C{held}, if not 0, is how many connections its source held, the
        most of any: it goes for that, not for being idle.
        """
        self.evicted += 1
        extra: dict[str, int] = {}
        if held:
            self.evictedForShare += 1
            reason = EVICTED_SHARE
            why = (
                "Closed {peer}, idle {idle:.1f}s, to admit a new client: the"
                " server is full and its source {source} held {held}"
                " connections, the most of any"
            )
            extra["held"] = held
        else:
            reason = EVICTED
            why = (
                "Closed {peer}, idle {idle:.1f}s or more, to admit a new"
                " client: the server is full"
            )
        self._refusals.warn(
            reason,
            why,
            event="connection.evicted",
            peer=protocol.peer,
            source=protocol.source,
            idle=idle,
            reason=reason,
            **extra,
        )
        if protocol.awaitingHeader:
            self.awaiting.discard(protocol)
            self.admission.uncount(protocol)
            protocol.abandonHeader()
            if self.openChanged is not None:
                self.openChanged()
            return
        # Let it go from the books now, so that the newcomer has its place
        # at once (its transport reports the loss on a later iteration).
        reason = EVICTED_SHARE if held else EVICTED
        self.connectionClosed(protocol, reason)
        try:
            if protocol.paused:
                # Its client does not read: the echo it holds cannot be
                # delivered, and a close would wait for it forever.
                protocol.abort(reason)
            else:
                protocol.closeWhenFlushed(reason)
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
            self._idleBySource.clear()

    def _sweep(self) -> None:
        now = self.reactor.seconds()
        limit = self.idleTimeout
        evicting = self._evicting
        idle: list[tuple[float, Echo]] = []
        for protocol in list(self.connections):
            activity = protocol.activity()
            if activity != protocol.idleMark:
                protocol.idleMark = activity
                protocol.idleSince = now
                continue
            since = max(protocol.idleSince, protocol.openedAt)
            if limit and now - since >= limit:
                protocol.idleSince = now
                # One connection's failure must not end the sweeps (a
                # LoopingCall stops at the first exception).
                try:
                    if protocol.closeReason is None:
                        protocol.closeWhenFlushed("idle timeout")
                    else:
                        # It was closing, and could not send what it had
                        # left within another idle timeout: its reader is
                        # gone.
                        protocol.abort(f"{protocol.closeReason}; could not flush")
                except Exception:
                    log.failure("Idle sweep could not close {peer}", peer=protocol.peer)
            elif evicting and protocol.closeReason is None:
                idle.append((since, protocol))
        if evicting:
            idle.extend((protocol.openedAt, protocol) for protocol in self.awaiting)
            idle.sort(key=lambda item: item[0])
            self._idleOrder = deque(protocol for _, protocol in idle)
            bySource: dict[str, deque[Echo]] = {}
            for _, protocol in idle:
                if protocol.source is not None:
                    bySource.setdefault(protocol.source, deque()).append(protocol)
            self._idleBySource = bySource

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Close every connection once it is quiet (see L{Echo.drain}); abort
        whatever is still open C{timeout} seconds from now.  Connections
        still waiting for a PROXY header are closed at once: they have
        nothing to echo yet.

        @return: fires once no connection is left open.
        """
        for protocol in list(self.awaiting):
            self.awaitingEnded(protocol)
            protocol.abandonHeader()
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
