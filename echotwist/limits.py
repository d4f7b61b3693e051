# -*- test-case-name: tests.test_limits -*-
"""
Limits that protect the server from its peers, and a log that a flood of
refusals cannot turn into a flood of lines.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel
from zope.interface import implementer

__all__ = ["SourceRateLimiter", "ThrottledLog", "ThrottledObserver"]


class SourceRateLimiter:
    """
    A token bucket per source address: each source may send C{rate} items a
    second on average, and C{burst} at once.

    The table of sources is bounded: it holds at most C{maxSources} entries,
    and a source whose bucket has filled up again is forgotten (a new entry
    would be the same), so a flood from spoofed addresses costs at most
    C{maxSources} entries.  When the table is full, the source heard from
    least recently gives up its entry, which can only make the limit more
    lenient for it, never refuse a newcomer.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: IReactorTime,
        maxSources: int = 16384,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.maxSources = maxSources
        self._clock = clock
        # source -> (tokens, when they were counted), least recently heard first
        self._buckets: OrderedDict[object, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: object) -> bool:
        """
        Take a token from C{source}'s bucket, if it has one.
        """
        now = self._clock.seconds()
        buckets = self._buckets
        self._forgetOneIdle(now)
        entry = buckets.pop(source, None)
        if entry is None:
            tokens = self.burst
            if len(buckets) >= self.maxSources:
                buckets.popitem(last=False)
        else:
            tokens = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        buckets[source] = (tokens, now)
        return allowed

    def _forgetOneIdle(self, now: float) -> None:
        # Amortised sweep: each call looks at the least recently heard
        # source only, which is the first to have filled up again.
        if self._buckets:
            source, (tokens, then) = next(iter(self._buckets.items()))
            if tokens + (now - then) * self.rate >= self.burst:
                del self._buckets[source]


class _Throttle:
    """
    At most one pass per key every C{interval} seconds, counting the ones
    turned away in between.
    """

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self._clock = clock
        self.interval = interval
        # key -> (when last let through, how many turned away since)
        self._state: dict[object, tuple[float, int]] = {}

    def admit(self, key: object) -> int | None:
        """
        @return: None if C{key} had its pass within the interval; otherwise
            how many were turned away since its last pass.
        """
        now = self._clock.seconds()
        last = self._state.get(key)
        if last is not None and now - last[0] < self.interval:
            self._state[key] = (last[0], last[1] + 1)
            return None
        self._state[key] = (now, 0)
        return last[1] if last is not None else 0


class ThrottledLog:
    """
    Emit at most one event per key every C{interval} seconds; the next event
    for that key says how many were suppressed in between.
    """

    def __init__(
        self, log: Logger, clock: IReactorTime, interval: float = 10.0
    ) -> None:
        self._log = log
        self._throttle = _Throttle(clock, interval)

    @property
    def interval(self) -> float:
        """
        Seconds at least between two events of one key.
        """
        return self._throttle.interval

    def warn(self, key: object, format: str, **fields: Any) -> None:
        """
        Log a warning for C{key}, unless one was logged less than
        C{interval} seconds ago; the next one logged says how many were
        suppressed meanwhile.
        """
        suppressed = self._throttle.admit(key)
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} similar lines suppressed)"
        self._log.warn(format, suppressed=suppressed, **fields)


@implementer(ILogObserver)
class ThrottledObserver:
    """
    A log observer that passes on at most one event per format every
    C{interval} seconds, as a warning, to C{observer}; the next one says how
    many were suppressed in between, and every one carries C{event}.

    For log lines echotwist does not write itself: Twisted's listening port
    logs up to three lines for each connection it has to drop when the
    process is out of file descriptors ("EMFILE encountered; ...",
    "EMFILE recovery: Closed socket from ...", "Re-reserving ..."), which
    a flood of connects would turn into a flood of lines.
    """

    def __init__(
        self,
        observer: ILogObserver,
        clock: IReactorTime,
        event: str,
        interval: float = 10.0,
    ) -> None:
        self._observer = observer
        self._throttle = _Throttle(clock, interval)
        self._event = event

    def __call__(self, event: LogEvent) -> None:
        suppressed = self._throttle.admit(event.get("log_format"))
        if suppressed is None:
            return
        event = dict(event)
        if suppressed:
            event["log_format"] = (
                f"{event.get('log_format') or ''}"
                " ({suppressed} similar lines suppressed)"
            )
        event["suppressed"] = suppressed
        event["event"] = self._event
        event["log_level"] = LogLevel.warn
        self._observer(event)
