# -*- test-case-name: tests.test_admission,tests.test_connections -*-
"""
Admission of stream connections: the books that say whether a connection
may open, and count it while it is open.

L{Admission} keeps the limits (C{--max-connections}, C{--max-per-source}),
the source each address counts as (C{--ipv6-prefix}), the connections each
source holds (with the sources by how many they hold, for eviction's fair
shares), and the TLS handshake budget per source
(C{--tls-handshakes-per-source}, C{--tls-handshake-rate}).  The factory
(L{echotwist.connections.EchoFactory}) asks it, and does the rest: the
logs, eviction's choice of a victim, the drain.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from echotwist._address import sourceGroup
from echotwist.limits import SourceRateLimiter

if TYPE_CHECKING:
    from echotwist.stream import Echo

__all__ = ["HANDSHAKE_RATE", "TOO_MANY_FROM_SOURCE", "TOO_MANY_HANDSHAKES", "Admission"]

TOO_MANY_FROM_SOURCE = "too many connections from this source"
TOO_MANY_HANDSHAKES = "too many TLS handshakes in progress from this source"
HANDSHAKE_RATE = "TLS handshakes from this source over the rate"


class Admission:
    """
    The books that admit stream connections.

    @ivar maxConnections: open connections allowed in all; 0 for no limit.
    @ivar maxPerSource: open connections allowed per source; 0 for no
        limit.
    @ivar ipv6Prefix: how many leading bits of an IPv6 address make one
        source (see L{echotwist._address.sourceGroup}).
    @ivar perSource: how many connections each source has open.
    @ivar members: the connections of each source.
    @ivar most: the most connections a source holds.
    @ivar tlsHandshakesPerSource: TLS handshakes allowed in progress at
        once per source; 0 for no limit.
    @ivar tlsHandshakeRate: new TLS handshakes allowed a second per source,
        in bursts of up to a second's worth (at least 1); 0 for no limit.
    @ivar handshaking: TLS handshakes in progress, per source.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        maxConnections: int,
        maxPerSource: int,
        ipv6Prefix: int,
        tlsHandshakesPerSource: int,
        tlsHandshakeRate: float,
    ) -> None:
        self.maxConnections = maxConnections
        self.maxPerSource = maxPerSource
        self.ipv6Prefix = ipv6Prefix
        self.tlsHandshakesPerSource = tlsHandshakesPerSource
        self.tlsHandshakeRate = tlsHandshakeRate
        self.perSource: dict[str, int] = {}
        # The sources by how many connections they hold (count -> sources),
        # with the largest count: kept as counts change, a step at a time,
        # so that the source holding the most is known without a search.
        self.members: dict[str, set[Echo]] = {}
        self.holding: dict[int, set[str]] = {}
        self.most = 0
        self.handshaking: dict[str, int] = {}
        self._handshakers: set[Echo] = set()
        self._handshakeRate = (
            SourceRateLimiter(tlsHandshakeRate, max(1.0, tlsHandshakeRate), reactor)
            if tlsHandshakeRate
            else None
        )

    def sourceOf(self, host: str | None) -> str | None:
        """
        The source C{host} counts as, for the per-source limit and logs.
        """
        if host is None:
            return None
        return sys.intern(sourceGroup(host, self.ipv6Prefix))

    def sourceFull(self, source: str | None) -> bool:
        """
        Whether C{source} holds as many connections as it may.
        """
        return bool(
            self.maxPerSource
            and source is not None
            and self.perSource.get(source, 0) >= self.maxPerSource
        )

    def full(self, open: int) -> bool:
        """
        Whether C{open} connections are as many as the server may hold.
        """
        return bool(self.maxConnections and open >= self.maxConnections)

    def handshakeRefusal(self, source: str) -> str | None:
        """
        Why a new TLS connection from C{source} is over its source's
        handshake budget; None if it is within it.
        """
        if (
            self.tlsHandshakesPerSource
            and self.handshaking.get(source, 0) >= self.tlsHandshakesPerSource
        ):
            return TOO_MANY_HANDSHAKES
        if self._handshakeRate is not None and not self._handshakeRate.allow(source):
            return HANDSHAKE_RATE
        return None

    def count(self, protocol: Echo) -> None:
        """
        Count C{protocol} as one of its source's connections.
        """
        source = protocol.source
        if source is None:
            return
        had = self.perSource.get(source, 0)
        self.perSource[source] = had + 1
        self.members.setdefault(source, set()).add(protocol)
        self._hold(source, had, had + 1)

    def handshakeStarted(self, protocol: Echo) -> None:
        """
        Count C{protocol}'s TLS handshake against its source's budget, until
        L{handshakeEnded}.
        """
        source = protocol.source
        if source is not None:
            self._handshakers.add(protocol)
            self.handshaking[source] = self.handshaking.get(source, 0) + 1

    def uncount(self, protocol: Echo) -> None:
        """
        C{protocol} no longer counts as one of its source's connections.
        """
        source = protocol.source
        if source is None:
            return
        had = self.perSource.pop(source)
        left = had - 1
        members = self.members[source]
        members.discard(protocol)
        if left:
            self.perSource[source] = left
        else:
            del self.members[source]
        self._hold(source, had, left)

    def handshakeEnded(self, protocol: Echo) -> None:
        """
        C{protocol}'s TLS handshake finished, or its connection closed
        first: it no longer counts against its source's handshake budget.
        """
        if protocol not in self._handshakers:
            return
        self._handshakers.discard(protocol)
        source = protocol.source
        assert source is not None
        left = self.handshaking.pop(source) - 1
        if left:
            self.handshaking[source] = left

    def _hold(self, source: str, had: int, has: int) -> None:
        """
        Move C{source} from the sources holding C{had} connections to those
        holding C{has} (one more or one fewer), keeping the largest count.
        """
        if had:
            holders = self.holding[had]
            holders.discard(source)
            if not holders:
                del self.holding[had]
                if had == self.most:
                    # Counts move one at a time: the source that held the
                    # most alone now holds one fewer, and that is the most.
                    self.most = has
        if has:
            self.holding.setdefault(has, set()).add(source)
            if has > self.most:
                self.most = has
