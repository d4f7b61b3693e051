"""
The datagram echo: what it answers, what it refuses, and send errors.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.error import MessageLengthError
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from echotwist.datagram import DatagramEcho, DatagramPolicy, burstFor


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.error: Exception | None = None

    def write(self, datagram: bytes, addr: Any) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append((datagram, addr))


class DatagramEchoTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.policy = DatagramPolicy(rate=100, clock=self.clock)
        self.transport = _Transport()
        self.echo = DatagramEcho(self.policy)
        self.echo.transport = self.transport  # type: ignore[assignment]

    def test_answersWithTheSameBytes(self) -> None:
        for size in (0, 1, 1400, 8193, 65507):
            self.echo.datagramReceived(b"d" * size, ("192.0.2.1", 40000))
        self.assertEqual(
            self.transport.sent,
            [(b"d" * size, ("192.0.2.1", 40000)) for size in (0, 1, 1400, 8193, 65507)],
        )
        self.assertEqual(self.policy.counts, {"answered": 5})

    def test_ipv6(self) -> None:
        self.echo.datagramReceived(b"six", ("2001:db8::1", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), 1)

    def refused(self, host: str, port: int) -> str:
        with capturedLogs() as events:
            self.echo.datagramReceived(b"x", (host, port))
        self.assertEqual(self.transport.sent, [])
        (event,) = events
        self.assertEqual(event["event"], "datagram.refused")
        return str(event["reason"])

    def test_cyclingServicePorts(self) -> None:
        for port in (7, 9, 13, 19, 37):
            self.setUp()
            self.assertEqual(self.refused("192.0.2.1", port), "privileged source port")

    def test_everyPrivilegedPort(self) -> None:
        self.assertEqual(self.refused("192.0.2.1", 1023), "privileged source port")
        self.setUp()
        self.assertEqual(self.refused("192.0.2.2", 0), "privileged source port")

    def test_broadcastMulticastUnspecified(self) -> None:
        cases = {
            "255.255.255.255": "broadcast source",
            "224.0.0.1": "multicast source",
            "239.1.2.3": "multicast source",
            "ff02::1": "multicast source",
            "::ffff:224.0.0.1": "multicast source",
            "0.0.0.0": "unspecified source",
            "::": "unspecified source",
        }
        for host, reason in cases.items():
            self.setUp()
            self.assertEqual(self.refused(host, 40000), reason, host)

    def test_rateLimit(self) -> None:
        for _ in range(50):
            self.echo.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), burstFor(100))
        self.assertEqual(self.policy.counts["over the rate limit"], 40)
        self.clock.advance(1)
        self.echo.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), burstFor(100) + 1)

    def test_noLimit(self) -> None:
        echo = DatagramEcho(DatagramPolicy(rate=0, clock=self.clock))
        echo.transport = self.transport  # type: ignore[assignment]
        for _ in range(1000):
            echo.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), 1000)

    def test_rateIsSharedAcrossPorts(self) -> None:
        other = DatagramEcho(self.policy)
        other.transport = self.transport  # type: ignore[assignment]
        for _ in range(10):
            self.echo.datagramReceived(b"x", ("192.0.2.1", 40000))
            other.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), burstFor(100))

    def test_sendErrorsAreCountedNotRaised(self) -> None:
        errors = [
            OSError(errno.EAGAIN, "Resource temporarily unavailable"),
            OSError(errno.ENOBUFS, "No buffer space available"),
            MessageLengthError("message too long"),
        ]
        with capturedLogs() as events:
            for error in errors:
                self.transport.error = error
                self.echo.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(self.policy.counts, {"send failed": 3})
        self.assertEqual(len(events), 1)  # throttled
        self.transport.error = None
        self.echo.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(len(self.transport.sent), 1)

    def test_rateIsPerIPv6Prefix(self) -> None:
        """
        Every address of one /64 draws on one bucket; the log names the
        network, not the address that happened to be refused.
        """
        with capturedLogs() as events:
            for n in range(1, 51):
                self.echo.datagramReceived(b"x", (f"2001:db8:1:2::{n:x}", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), burstFor(100))
        self.assertEqual(self.policy.counts["over the rate limit"], 40)
        (event,) = events
        self.assertEqual(event["peer"], "2001:db8:1:2::/64")
        self.echo.datagramReceived(b"x", ("2001:db8:1:3::1", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), burstFor(100) + 1)

    def test_prefixIsConfigurable(self) -> None:
        policy = DatagramPolicy(rate=100, clock=self.clock, ipv6Prefix=128)
        echo = DatagramEcho(policy)
        echo.transport = self.transport  # type: ignore[assignment]
        for n in range(1, 51):
            echo.datagramReceived(b"x", (f"2001:db8:1:2::{n:x}", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), 50)

    def test_ipv4MappedIsItsIPv4Address(self) -> None:
        for _ in range(10):
            self.echo.datagramReceived(b"x", ("192.0.2.1", 40000))
            self.echo.datagramReceived(b"x", ("::ffff:192.0.2.1", 40000, 0, 0))
        self.assertEqual(len(self.transport.sent), burstFor(100))
