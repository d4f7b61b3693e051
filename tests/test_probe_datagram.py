"""
echotwist-probe's datagram run (L{echotwist.probe.datagram}), on a Clock
with a pretend UDP port.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.datagram import DatagramRun
from echotwist.probe.payload import (
    Payloads,
)
from echotwist.probe.report import ERROR, FAILED, OK
from echotwist.probe.target import parseTarget


class _UDPPort:
    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.written: list[bytes] = []
        self.connected: tuple[str, int] | None = None
        self.listening = True

    def connect(self, host: str, port: int) -> None:
        self.connected = (host, port)

    def write(self, datagram: bytes) -> None:
        self.written.append(datagram)

    def stopListening(self) -> None:
        self.listening = False


class _Names:
    """
    A name resolver that knows a few names, and answers at once with the
    addresses of each, as getaddrinfo would.
    """

    def __init__(self, names: dict[str, list[IAddress]]) -> None:
        self.names = names
        self.asked: list[tuple[str, Any, str]] = []

    def resolveHostName(
        self,
        receiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> None:
        self.asked.append((hostName, addressTypes, transportSemantics))
        receiver.resolutionBegan(None)
        for address in self.names.get(hostName, []):
            if addressTypes is None or type(address) in addressTypes:
                receiver.addressResolved(address)
        receiver.resolutionComplete()


class _UDPClock(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.ports: list[_UDPPort] = []
        self.nameResolver = _Names(
            {
                "v6only": [IPv6Address("UDP", "2001:db8::7", 0)],
                "both": [
                    IPv6Address("UDP", "2001:db8::8", 0),
                    IPv4Address("UDP", "192.0.2.8", 0),
                ],
            }
        )

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> _UDPPort:
        self.ports.append(_UDPPort(protocol))
        protocol.transport = self.ports[-1]
        return self.ports[-1]


class DatagramRunTests(SynchronousTestCase):
    def makeRun(
        self, target: str = "udp:127.0.0.1:7", **overrides: Any
    ) -> tuple[DatagramRun, _UDPClock, list[str]]:
        clock = _UDPClock()
        lines: list[str] = []
        settings: dict[str, Any] = {
            "payloads": Payloads(1, 64),
            "count": 3,
            "interval": 1.0,
            "timeout": 2.0,
            "duration": None,
        }
        settings.update(overrides)
        run = DatagramRun(
            clock,
            parseTarget(target),
            {"transport": "udp"},
            lines.append,
            now=clock.seconds,
            **settings,
        )
        return run, clock, lines

    def answer(self, clock: _UDPClock, index: int) -> None:
        port = clock.ports[0]
        port.protocol.datagramReceived(port.written[index], ("127.0.0.1", 7))

    def test_lossCounted(self) -> None:
        run, clock, lines = self.makeRun()
        done = run.start()
        self.assertEqual(clock.ports[0].connected, ("127.0.0.1", 7))
        clock.advance(0.5)
        self.answer(clock, 0)
        clock.advance(1.5)
        clock.advance(1.0)
        self.answer(clock, 2)
        self.assertNoResult(done)
        clock.advance(1.0)
        results = self.successResultOf(done)
        self.assertEqual([s.status for s in results.samples], ["ok", "lost", "ok"])
        self.assertEqual(results.samples[0].rtt, 0.5)
        self.assertEqual(results.exitStatus(None, None), FAILED)
        self.assertIn(
            "64 bytes to udp:127.0.0.1:7: seq=1 lost (no answer within 2 s)", lines
        )
        self.assertFalse(clock.ports[0].listening)

    def test_lateDuplicateReordered(self) -> None:
        run, clock, _ = self.makeRun(interval=0.5, timeout=1.0, count=4)
        done = run.start()
        clock.advance(0.5)
        self.answer(clock, 1)
        self.answer(clock, 0)
        self.answer(clock, 0)
        for _ in range(16):
            clock.advance(0.1)
        # Datagram 2, sent at 1.0, was lost at 2.0: its answer now is late.
        self.answer(clock, 2)
        self.assertNoResult(done)
        self.answer(clock, 3)
        results = self.successResultOf(done)
        self.assertEqual(
            (results.duplicates, results.reordered, results.late), (1, 1, 1)
        )
        self.assertEqual(
            [s.status for s in results.samples], ["ok", "ok", "late", "ok"]
        )
        self.assertEqual(results.answered, 3)
        self.assertEqual(results.exitStatus(None, None), FAILED)

    def test_floodSendsOnAnswer(self) -> None:
        """
        At an interval of 0 the next datagram goes as soon as the last is
        answered, or lost.
        """
        run, clock, _ = self.makeRun(interval=0, count=3)
        done = run.start()
        self.answer(clock, 0)
        self.assertEqual(len(clock.ports[0].written), 2)
        clock.advance(2.0)
        self.assertEqual(len(clock.ports[0].written), 3)
        self.answer(clock, 2)
        self.assertEqual(self.successResultOf(done).answered, 2)

    def test_somethingElse(self) -> None:
        run, clock, _ = self.makeRun()
        done = run.start()
        clock.ports[0].protocol.datagramReceived(
            b"HTTP/1.1 400 Bad Request\r\n\r\n", None
        )
        self.assertIn(
            "udp:127.0.0.1:7: answered a datagram of 28 bytes that is not an echo",
            str(self.successResultOf(done).error),
        )

    def test_refused(self) -> None:
        run, clock, _ = self.makeRun()
        done = run.start()
        clock.ports[0].protocol.connectionRefused()
        self.assertIn("refused", str(self.successResultOf(done).error))

    def test_portClosedByTheReactor(self) -> None:
        """
        After an ICMP error the epoll reactor closes a UDP port as a lost
        connection, without connectionRefused: that too is a refusal.
        """
        run, clock, _ = self.makeRun()
        done = run.start()
        clock.ports[0].protocol.stopProtocol()
        self.assertIn(
            "refused (ICMP port unreachable", str(self.successResultOf(done).error)
        )

    def test_neverAnswers(self) -> None:
        run, clock, _ = self.makeRun()
        done = run.start()
        for _ in range(50):
            clock.advance(0.1)
        results = self.successResultOf(done)
        self.assertEqual(
            results.error, "udp:127.0.0.1:7: no answer to any of 3 datagrams"
        )
        self.assertEqual(results.exitStatus(None, None), ERROR)

    def test_stopWaitsForOutstanding(self) -> None:
        """
        Ctrl-C sends no more, and ends the run once the datagrams out are
        answered: one in flight is neither dropped nor lost.
        """
        run, clock, _ = self.makeRun(count=0)
        done = run.start()
        self.answer(clock, 0)
        clock.advance(1)
        run.stop()
        self.assertNoResult(done)
        clock.advance(0.5)
        self.answer(clock, 1)
        results = self.successResultOf(done)
        self.assertEqual((results.sent, results.answered), (2, 2))
        self.assertEqual(len(clock.ports[0].written), 2)
        self.assertEqual(results.exitStatus(None, None), OK)

    def test_stopCountsSilenceAsLost(self) -> None:
        """
        Ctrl-C at 1.35 s against a port that never answers: both datagrams
        sent are counted, lost, and the run is the error it is.
        """
        run, clock, _ = self.makeRun(count=0)
        done = run.start()
        clock.advance(1.35)
        run.stop()
        for _ in range(30):
            clock.advance(0.1)
        results = self.successResultOf(done)
        self.assertEqual(len(clock.ports[0].written), 2)
        self.assertEqual((results.sent, results.answered), (2, 0))
        self.assertEqual(results.summary()["sent"], 2)
        self.assertEqual(
            results.error, "udp:127.0.0.1:7: no answer to any of 2 datagrams"
        )
        self.assertEqual(results.exitStatus(None, None), ERROR)

    def test_nothingSentAfterDuration(self) -> None:
        """
        --duration ends the sending: the datagram already scheduled does
        not go, and the run ends when the last one sent is lost.
        """
        run, clock, _ = self.makeRun(count=0, duration=1.5)
        done = run.start()
        for _ in range(40):
            clock.advance(0.1)
        results = self.successResultOf(done)
        self.assertEqual(len(clock.ports[0].written), 2)
        self.assertEqual(results.sent, 2)

    def test_errorCountsOutstandingAsLost(self) -> None:
        """
        A run that ends on an error counts the datagrams still out as
        sent and lost.
        """
        run, clock, _ = self.makeRun(count=0)
        done = run.start()
        self.answer(clock, 0)
        for _ in range(25):
            clock.advance(0.1)
        clock.ports[0].protocol.datagramReceived(b"not an echo" * 3, None)
        results = self.successResultOf(done)
        self.assertEqual([s.status for s in results.samples], ["ok", "lost", "lost"])
        self.assertEqual(results.summary()["sent"], 3)

    def test_rate(self) -> None:
        """
        --bulk over UDP sends --rate datagrams a second, smoothly, and
        counts the loss of each second.
        """
        run, clock, lines = self.makeRun(rate=200.0, count=0, duration=2.0, timeout=0.5)
        done = run.start()
        port = clock.ports[0]
        for _ in range(200):
            clock.advance(0.01)
            for index in range(len(port.written)):
                if index % 4 and port.written[index] is not None:
                    self.answer(clock, index)
                    port.written[index] = None  # type: ignore[call-overload]
        clock.advance(1)
        results = self.successResultOf(done)
        self.assertApproximates(results.sent, 400, 2)
        self.assertApproximates(results.answered / results.sent, 0.75, 0.01)
        assert results.bulk is not None
        self.assertEqual(len(results.bulk["lost_per_second"]), 2)
        self.assertApproximates(results.bulk["lost_per_second"][0], 50, 2)
        self.assertTrue(any(line.startswith("   1 s: ") for line in lines), lines)

    def test_nameWithOnlyIPv6(self) -> None:
        """
        A name with IPv6 addresses only is probed at its address, over
        IPv6, not refused as a name that does not resolve.
        """
        run, clock, _ = self.makeRun("udp:v6only:7", count=1)
        done = run.start()
        self.assertEqual(clock.ports[0].connected, ("2001:db8::7", 7))
        self.assertEqual(
            clock.nameResolver.asked, [("v6only", [IPv4Address, IPv6Address], "UDP")]
        )
        self.answer(clock, 0)
        self.assertIsNone(self.successResultOf(done).error)

    def test_nameOfBothFamilies(self) -> None:
        """
        A name of both families is probed at its IPv4 address, though the
        resolver gives the IPv6 one first (Debian's localhost): where it
        worked before, over IPv4, it still does.
        """
        run, clock, _ = self.makeRun("udp:both:7", count=1)
        run.start()
        self.assertEqual(clock.ports[0].connected, ("192.0.2.8", 7))
        run.stop()

    def test_nameDoesNotResolve(self) -> None:
        run, clock, _ = self.makeRun("udp:nonexistent.invalid:7", count=1)
        results = self.successResultOf(run.start())
        self.assertEqual(
            results.error, "udp:nonexistent.invalid:7: the host name does not resolve"
        )
        self.assertEqual(results.exitStatus(None, None), ERROR)
        self.assertEqual(clock.ports, [])
