"""
The per-source token buckets, the source groups and the throttled logs,
on a Clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from echotwist._address import sourceGroup
from echotwist.limits import SourceRateLimiter, ThrottledLog, ThrottledObserver


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


class SourceGroupTests(SynchronousTestCase):
    def test_ipv4IsItself(self) -> None:
        self.assertEqual(sourceGroup("192.0.2.1"), "192.0.2.1")

    def test_ipv6IsItsNetwork(self) -> None:
        self.assertEqual(sourceGroup("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(sourceGroup("2001:db8:1:2:3:4:5:6", 48), "2001:db8:1::/48")
        self.assertEqual(sourceGroup("2001:db8:1:2:3:4:5:6", 1), "::/1")
        self.assertEqual(sourceGroup("2001:db8::ffff", 127), "2001:db8::fffe/127")
        self.assertEqual(sourceGroup("2001:db8::1", 128), "2001:db8::1")

    def test_linkLocalIsItsNetworkOnItsInterface(self) -> None:
        """
        Hosts on two links can hold the same link-local address: the
        interface (scope) is part of the source, written as RFC 4007 does.
        """
        self.assertEqual(sourceGroup("fe80::1%eth0"), "fe80::%eth0/64")
        self.assertEqual(sourceGroup("fe80::2:3%eth0"), "fe80::%eth0/64")
        self.assertEqual(sourceGroup("fe80::1%eth1"), "fe80::%eth1/64")
        self.assertEqual(sourceGroup("fe80::1%7", 128), "fe80::1%7")
        self.assertEqual(sourceGroup("fe80::1:2%eth0", 10), "fe80::%eth0/10")
        # Without a scope, or for a global address, no interface.
        self.assertEqual(sourceGroup("fe80::1"), "fe80::/64")
        self.assertEqual(sourceGroup("2001:db8::1%eth0"), "2001:db8::/64")
        # Whatever the scope holds reads as one plain line.
        self.assertEqual(sourceGroup("fe80::1%e\x1bx"), "fe80::%e\\x1bx/64")
        # A scope ipaddress refuses: the address without it.
        self.assertEqual(sourceGroup("fe80::1%a%b"), "fe80::/64")

    def test_mappedIPv4(self) -> None:
        self.assertEqual(sourceGroup("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(sourceGroup("::ffff:192.0.2.1", 128), "192.0.2.1")

    def test_notAnAddressIsEscaped(self) -> None:
        self.assertEqual(sourceGroup("x:\x1b[2J"), "x:\\x1b[2J")


class ThrottledObserverTests(SynchronousTestCase):
    def test_oneEventPerFormatPerIntervalWithCount(self) -> None:
        """
        Twisted's accept-error lines, as its listening port logs them when
        out of descriptors: one of each every 10 seconds, the next one
        saying how many were suppressed, as warnings with an event name.
        """
        clock = Clock()
        seen: list[LogEvent] = []
        observer = ThrottledObserver(seen.append, clock, "listener.accept_failed")
        log = Logger(namespace="twisted.internet.tcp.Port", observer=observer)
        for n in range(100):
            log.info("EMFILE encountered; releasing reserved file descriptor.")
            log.info("EMFILE recovery: Closed socket from {address}", address=n)
        clock.advance(10)
        log.info("EMFILE recovery: Closed socket from {address}", address=100)
        self.assertEqual(
            [formatEvent(e) for e in seen],
            [
                "EMFILE encountered; releasing reserved file descriptor.",
                "EMFILE recovery: Closed socket from 0",
                "EMFILE recovery: Closed socket from 100 (99 similar lines suppressed)",
            ],
        )
        self.assertEqual([e["suppressed"] for e in seen], [0, 0, 99])
        self.assertEqual({e["event"] for e in seen}, {"listener.accept_failed"})
        self.assertEqual({e["log_level"] for e in seen}, {LogLevel.warn})
