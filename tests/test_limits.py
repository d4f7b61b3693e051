"""
The per-source token buckets and the throttled log, on a Clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from echotwist.limits import SourceRateLimiter, ThrottledLog


class SourceRateLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_burstThenRate(self) -> None:
        limiter = SourceRateLimiter(rate=10, burst=3, clock=self.clock)
        self.assertEqual([limiter.allow("a") for _ in range(4)], [True] * 3 + [False])
        self.clock.advance(0.1)  # one token back
        self.assertEqual([limiter.allow("a") for _ in range(2)], [True, False])

    def test_sustainedFloodGetsTheRate(self) -> None:
        limiter = SourceRateLimiter(rate=100, burst=10, clock=self.clock)
        allowed = 0
        for _ in range(3000):  # 3000 over one second
            allowed += limiter.allow("flooder")
            self.clock.advance(1 / 3000)
        self.assertTrue(100 <= allowed <= 111, allowed)

    def test_sourcesAreIndependent(self) -> None:
        limiter = SourceRateLimiter(rate=1, burst=1, clock=self.clock)
        self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"))
        self.assertTrue(limiter.allow("b"))

    def test_tableIsBoundedUnderASpoofedFlood(self) -> None:
        limiter = SourceRateLimiter(rate=1, burst=1, clock=self.clock, maxSources=100)
        for n in range(10_000):
            limiter.allow(f"10.0.{n // 256}.{n % 256}")
        self.assertEqual(len(limiter), 100)

    def test_idleSourcesAreForgotten(self) -> None:
        limiter = SourceRateLimiter(rate=10, burst=5, clock=self.clock)
        for n in range(50):
            limiter.allow(n)
        self.assertEqual(len(limiter), 50)
        self.clock.advance(0.5)  # every bucket is full again
        for _ in range(50):
            limiter.allow("steady")
        self.assertEqual(len(limiter), 1)


class ThrottledLogTests(SynchronousTestCase):
    def test_oneLinePerIntervalWithCount(self) -> None:
        clock = Clock()
        throttled = ThrottledLog(Logger(), clock, interval=10)
        with capturedLogs() as events:
            for _ in range(5):
                throttled.warn("flood", "refused {peer}", peer="x")
            throttled.warn("other", "refused {peer}", peer="y")
            clock.advance(10)
            throttled.warn("flood", "refused {peer}", peer="z")
        self.assertEqual([e["peer"] for e in events], ["x", "y", "z"])
        self.assertEqual([e["suppressed"] for e in events], [0, 0, 4])
        self.assertIn("{suppressed} similar lines suppressed", events[2]["log_format"])
