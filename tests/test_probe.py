"""
echotwist-probe: its parts in process with a Clock (targets, options,
statistics, the UDP books, the stream and datagram runs), and the command
as a user runs it, against a real twistd (TCP, UDP, TLS, UNIX), xinetd's
builtin echo, and small servers that misbehave.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.bulk import CHUNK, StreamBulk
from echotwist.probe.datagram import DatagramRun
from echotwist.probe.options import ProbeOptions
from echotwist.probe.payload import (
    ANSWERED,
    HEADER,
    LATE,
    DatagramBook,
    Payloads,
    ProbeFailure,
)
from echotwist.probe.report import ERROR, FAILED, OK, SCHEMA, Results, Sample
from echotwist.probe.run import describeFailure
from echotwist.probe.stats import Spread, histogram, percentile
from echotwist.probe.stream import StreamLatency
from echotwist.probe.target import Target, TargetError, parseTarget

# --- in process ---------------------------------------------------------------


class TargetTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        self.assertEqual(
            parseTarget("tcp:example.org:5000"),
            Target("tcp", "example.org", 5000, "tcp:example.org:5000"),
        )
        self.assertEqual(parseTarget("udp:127.0.0.1:7").kind, "udp")
        self.assertEqual(parseTarget("tls:localhost:443").kind, "tls")
        self.assertEqual(parseTarget("tcp6:::1:5000").host, "::1")
        self.assertEqual(parseTarget("tcp6:[::1]:5000").port, 5000)
        self.assertEqual(parseTarget("unix:/run/echo.sock").host, "/run/echo.sock")

    def test_bareHostIsTCPToPort7(self) -> None:
        """
        A bare host is TCP to RFC 862's port, or to the default given
        (C{--port}); a bare host and port is TCP there.
        """
        self.assertEqual(
            parseTarget("localhost"), Target("tcp", "localhost", 7, "tcp:localhost:7")
        )
        self.assertEqual(parseTarget("localhost", 5000).port, 5000)
        self.assertEqual(parseTarget("127.0.0.1:5000").port, 5000)
        self.assertEqual(
            parseTarget("[::1]:5000"), Target("tcp", "::1", 5000, "tcp:[::1]:5000")
        )
        self.assertEqual(parseTarget("::1").port, 7)

    def test_badTargets(self) -> None:
        for text, says in [
            ("", "no target"),
            ("tcp:localhost", "no port"),
            ("tcp:localhost:0", "1 to 65535"),
            ("tcp:localhost:65536", "1 to 65535"),
            ("udp:localhost:http", "1 to 65535"),
            ("tcp::5000", "no host"),
            ("unix:", "no path"),
            ("ssl:localhost:443", "unknown target type 'ssl', did you mean tls:?"),
            ("ssl:127.0.0.1:1", "unknown target type 'ssl', did you mean tls:?"),
            ("SSL:[::1]:1", "did you mean tls:?"),
            ("http://example.org", "unknown target type 'http', use tcp:"),
            ("[::1", "[ADDRESS]:PORT"),
        ]:
            with self.assertRaises(TargetError, msg=text) as caught:
                parseTarget(text)
            self.assertIn(says, str(caught.exception), text)
            self.assertNotIn("\n", str(caught.exception))

    def test_bareHostWithPortIsNotAType(self) -> None:
        """
        A bare C{HOST:PORT} whose host is a word is still TCP to it.
        """
        self.assertEqual(
            parseTarget("localhost:5000"),
            Target("tcp", "localhost", 5000, "tcp:localhost:5000"),
        )

    def test_escapesWhatItShows(self) -> None:
        """
        A target is shown escaped: a terminal control in it reaches no
        line as it is.
        """
        with self.assertRaises(TargetError) as caught:
            parseTarget("tcp:evil\x1b[2J:99999")
        self.assertIn("evil\\x1b[2J", str(caught.exception))


class ProbeOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> ProbeOptions:
        options = ProbeOptions()
        options.parseOptions(list(argv))
        return options

    def refused(self, *argv: str) -> str:
        with self.assertRaises(usage.UsageError) as caught:
            self.parse(*argv)
        return str(caught.exception)

    def test_defaults(self) -> None:
        """
        Like ping: one probe of 64 bytes a second, until stopped.
        """
        options = self.parse("tcp:127.0.0.1:5000")
        self.assertEqual(
            (options["size"], options["interval"], options["count"]), (64, 1.0, 0)
        )
        self.assertIsInstance(options["seed"], int)

    def test_optionsAfterTheTarget(self) -> None:
        options = self.parse("tcp:127.0.0.1:5000", "-c", "5", "--size", "100", "-q")
        self.assertEqual((options["count"], options["size"]), (5, 100))
        self.assertTrue(options["quiet"])

    def test_floodNeedsABound(self) -> None:
        """
        An interval of 0 is refused without --count or --duration.
        """
        self.assertIn("--count or --duration", self.refused("-i", "0", "tcp:h:7"))
        self.parse("-i", "0", "-c", "10", "tcp:h:7")
        self.parse("-i", "0", "-w", "1", "tcp:h:7")

    def test_badNumbersNameTheOption(self) -> None:
        for argv, says in [
            (("-c", "-1"), "--count must be 0 or more"),
            (("-c", "many"), "--count must be a number"),
            (("-i", "nan"), "--interval must be from 0"),
            (("-s", "0"), "--size must be from 1"),
            (("--max-loss", "101"), "--max-loss must be from 0 to 100"),
            (("-P", "100000"), "--parallel must be from 1 to 1000"),
            (("-s", "67108865"), "--size must be from 1 to 67108864, not"),
            (("--rate", "0"), "--rate must be from 1 to 1000000, not"),
            (("-W", "0"), "--timeout must be from 0.001 to 3600, not"),
        ]:
            self.assertIn(says, self.refused(*argv, "tcp:h:7"), argv)

    def test_udpSizes(self) -> None:
        self.assertIn(f"from {HEADER.size}", self.refused("-s", "10", "udp:h:7"))
        self.assertIn("65507", self.refused("-s", "65508", "udp:h:7"))
        self.parse("-s", "65507", "udp:h:7")

    def test_combinationsRefused(self) -> None:
        self.assertIn("stream", self.refused("--connect-each", "udp:h:7"))
        self.assertIn("tls:", self.refused("--insecure", "tcp:h:7"))
        self.assertIn("tls:", self.refused("--ca", "/dev/null", "tcp:h:7"))
        self.assertIn("cannot read", self.refused("--ca", "/nonexistent", "tls:h:7"))
        self.assertIn("no target", self.refused("-c", "1"))

    def test_countRefusedForStreamBulk(self) -> None:
        """
        A stream --bulk run has no probes to count: --count is refused,
        not ignored.  Over UDP it bounds the datagrams sent.
        """
        self.assertEqual(
            self.refused("-c", "3", "--bulk", "tcp:h:7"),
            "--count is not for --bulk over a stream: give --duration",
        )
        self.assertEqual(self.parse("-c", "3", "--bulk", "udp:h:7")["count"], 3)

    def test_bulkRunsTenSecondsUnlessTold(self) -> None:
        self.assertEqual(self.parse("--bulk", "tcp:h:7")["duration"], 10.0)
        self.assertEqual(self.parse("--bulk", "-w", "2", "tcp:h:7")["duration"], 2.0)


class StatisticsTests(SynchronousTestCase):
    def test_percentileIsNearestRank(self) -> None:
        ordered = [float(i) for i in range(1, 101)]
        self.assertEqual(percentile(ordered, 0.5), 50.0)
        self.assertEqual(percentile(ordered, 0.99), 99.0)
        self.assertEqual(percentile([7.0], 0.99), 7.0)

    def test_spread(self) -> None:
        """
        Figures in milliseconds; mdev as ping's (population deviation).
        """
        spread = Spread.of([0.001, 0.002, 0.003, 0.004])
        assert spread is not None
        self.assertEqual((spread.min, spread.max, spread.p50), (1.0, 4.0, 2.0))
        self.assertAlmostEqual(spread.avg, 2.5)
        self.assertAlmostEqual(spread.mdev, 1.118033988749895)
        self.assertIsNone(Spread.of([]))

    def test_histogram(self) -> None:
        lines = histogram([0.000010] * 4 + [0.000100])
        # 8-16 us holds four, 64-128 us one; the rows between are empty.
        self.assertEqual(len(lines), 4)
        self.assertTrue(lines[0].startswith("     8 us - 16 us"), lines[0])
        self.assertIn("#" * 40 + "| 4", lines[0])
        self.assertTrue(
            lines[-1].endswith("|" + "#" * 10 + " " * 30 + "| 1"), lines[-1]
        )


class ProbeReportTests(SynchronousTestCase):
    def results(self, *rtts: float | None) -> Results:
        results = Results("tcp:h:7", "latency", {"transport": "udp"})
        for seq, rtt in enumerate(rtts):
            results.samples.append(
                Sample(seq, seq, 64, rtt, None, "ok" if rtt is not None else "lost")
            )
        return results

    def test_exitStatusLikePing(self) -> None:
        self.assertEqual(self.results(0.001, 0.002).exitStatus(None, None), OK)
        self.assertEqual(self.results(0.001, None).exitStatus(None, None), FAILED)
        self.assertEqual(self.results(0.001, None).exitStatus(50, None), OK)
        self.assertEqual(self.results(0.001, None).exitStatus(49.9, None), FAILED)
        self.assertEqual(self.results(0.001, 0.003).exitStatus(None, 2.0), FAILED)
        self.assertEqual(self.results(0.001, 0.002).exitStatus(None, 2.0), OK)
        failed = self.results(0.001)
        failed.error = "tcp:h:7: connection refused"
        self.assertEqual(failed.exitStatus(None, None), ERROR)

    def test_document(self) -> None:
        document = json.loads(json.dumps(self.results(0.0015, None).document(1)))
        self.assertEqual(document["schema"], SCHEMA)
        self.assertEqual(document["exit_status"], 1)
        self.assertEqual(
            document["samples"][0],
            {
                "seq": 0,
                "at": 0,
                "bytes": 64,
                "rtt_ms": 1.5,
                "connect_ms": None,
                "status": "ok",
            },
        )
        self.assertEqual(document["summary"]["loss_percent"], 50.0)
        self.assertEqual(document["summary"]["rtt_ms"]["max"], 1.5)


class DatagramBookTests(SynchronousTestCase):
    """
    The UDP books: nothing but an unchanged echo of a datagram of this run
    within the timeout is an answer.
    """

    def setUp(self) -> None:
        self.book = DatagramBook(Payloads(seed=5, size=100), timeout=1.0)

    def test_answer(self) -> None:
        datagram = self.book.next(10.0)
        self.assertEqual(len(datagram), 100)
        self.assertEqual(self.book.received(datagram, 10.25), (0, ANSWERED))
        self.assertEqual(self.book.rtt, {0: 0.25})

    def test_eachDatagramDiffers(self) -> None:
        first, second = self.book.next(1.0), self.book.next(1.0)
        self.assertNotEqual(first[HEADER.size :], second[HEADER.size :])

    def test_lossAndLate(self) -> None:
        datagram = self.book.next(0.0)
        self.book.next(0.5)
        self.assertEqual(self.book.expire(0.99), [])
        self.assertEqual(self.book.expire(1.0), [0])
        self.assertEqual(self.book.received(datagram, 1.2), (0, LATE))
        self.assertEqual(
            (self.book.lost, self.book.late, self.book.answered), (1, 1, 0)
        )
        self.assertEqual(self.book.expire(1.6), [1])

    def test_duplicate(self) -> None:
        datagram = self.book.next(0.0)
        self.book.received(datagram, 0.1)
        self.assertIsNone(self.book.received(datagram, 0.2))
        self.assertEqual((self.book.duplicates, self.book.answered), (1, 1))

    def test_reordered(self) -> None:
        first, second = self.book.next(0.0), self.book.next(0.0)
        self.book.received(second, 0.1)
        self.assertEqual(self.book.received(first, 0.2), (0, ANSWERED))
        self.assertEqual((self.book.reordered, self.book.answered), (1, 2))

    def test_corruptByteNamed(self) -> None:
        datagram = bytearray(self.book.next(0.0))
        datagram[60] ^= 1
        with self.assertRaises(ProbeFailure) as caught:
            self.book.received(bytes(datagram), 0.1)
        self.assertIn(
            "datagram 0 differs from what was sent at byte 60", str(caught.exception)
        )

    def test_truncated(self) -> None:
        datagram = self.book.next(0.0)
        with self.assertRaises(ProbeFailure) as caught:
            self.book.received(datagram[:50], 0.1)
        self.assertIn("at byte 50 (50 bytes back of 100)", str(caught.exception))

    def test_notAnEcho(self) -> None:
        """
        Another run's datagram, one never sent, or other bytes altogether
        are never taken for answers.
        """
        other = DatagramBook(Payloads(seed=6, size=100), timeout=1.0)
        self.book.next(0.0)
        for datagram in [other.next(0.0), bytes(100), b"x", b"HTTP/1.1 400\r\n" * 3]:
            with self.assertRaises(ProbeFailure):
                self.book.received(datagram, 0.1)
        unsent = Payloads(seed=5, size=100).datagram(7, 0.0)
        with self.assertRaises(ProbeFailure):
            self.book.received(unsent, 0.1)
        self.assertEqual(self.book.answered, 0)


class _StreamEndpoint:
    """
    Connects each time to a new L{StringTransport}, at once.
    """

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []

    def connect(self, factory: Any) -> Any:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


class StreamLatencyTests(SynchronousTestCase):
    def makeRun(
        self, **overrides: Any
    ) -> tuple[StreamLatency, _StreamEndpoint, Clock, list[str]]:
        clock = Clock()
        endpoint = _StreamEndpoint()
        lines: list[str] = []
        settings: dict[str, Any] = {
            "endpoint": endpoint,
            "payloads": Payloads(1, 16),
            "count": 3,
            "interval": 1.0,
            "timeout": 2.0,
            "duration": None,
            "connectEach": False,
        }
        settings.update(overrides)
        run = StreamLatency(
            clock,
            parseTarget("tcp:h:7"),
            {},
            lines.append,
            now=clock.seconds,
            **settings,
        )
        return run, endpoint, clock, lines

    def echo(self, endpoint: _StreamEndpoint, clock: Clock, after: float = 0.0) -> None:
        protocol, transport = endpoint.connections[-1]
        clock.advance(after)
        data = transport.value()
        transport.clear()
        protocol.dataReceived(data)

    def test_countProbesOneConnection(self) -> None:
        run, endpoint, clock, lines = self.makeRun()
        done = run.start()
        for _ in range(3):
            self.echo(endpoint, clock, after=0.25)
            clock.advance(0.75)
        results = self.successResultOf(done)
        self.assertEqual([s.rtt for s in results.samples], [0.25, 0.25, 0.25])
        self.assertEqual(len(endpoint.connections), 1)
        self.assertEqual(results.samples[0].connect, 0.0)
        self.assertIsNone(results.samples[1].connect)
        self.assertEqual(
            lines[0], "16 bytes from tcp:h:7: seq=0 time=250.000 ms connect=0.000 ms"
        )
        self.assertEqual(results.exitStatus(None, None), OK)
        self.assertTrue(endpoint.connections[0][1].disconnecting)

    def test_intervalFromSendToSend(self) -> None:
        """
        The next probe goes one interval after the last was sent, not
        after it came back.
        """
        run, endpoint, clock, _ = self.makeRun()
        run.start()
        transport = endpoint.connections[0][1]
        self.echo(endpoint, clock, after=0.4)
        clock.advance(0.59)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.01)
        self.assertEqual(len(transport.value()), 16)

    def test_eachProbeDiffers(self) -> None:
        run, endpoint, clock, _ = self.makeRun()
        run.start()
        first = endpoint.connections[0][1].value()
        self.echo(endpoint, clock)
        clock.advance(1)
        self.assertNotEqual(endpoint.connections[0][1].value(), first)

    def test_connectEach(self) -> None:
        run, endpoint, clock, _ = self.makeRun(connectEach=True)
        done = run.start()
        for _ in range(3):
            self.echo(endpoint, clock, after=0.1)
            clock.advance(1)
        results = self.successResultOf(done)
        self.assertEqual(len(endpoint.connections), 3)
        self.assertTrue(all(t.disconnecting for _, t in endpoint.connections))
        self.assertEqual([s.connect for s in results.samples], [0.0, 0.0, 0.0])

    def test_corruptByte(self) -> None:
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        protocol, transport = endpoint.connections[0]
        data = bytearray(transport.value())
        protocol.dataReceived(bytes(data[:5]))
        data[9] ^= 0x80
        protocol.dataReceived(bytes(data[5:]))
        results = self.successResultOf(done)
        assert results.error is not None
        self.assertIn(
            "tcp:h:7: answer to probe 0 differs from what was sent at byte 9",
            results.error,
        )
        self.assertEqual(results.exitStatus(None, None), ERROR)

    def test_moreThanSent(self) -> None:
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        protocol, transport = endpoint.connections[0]
        protocol.dataReceived(transport.value() + b"x")
        self.assertIn(
            "answered 1 bytes more than probe 0 sent",
            str(self.successResultOf(done).error),
        )

    def test_noAnswerWithinTimeout(self) -> None:
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        protocol, transport = endpoint.connections[0]
        protocol.dataReceived(transport.value()[:4])
        clock.advance(1.99)
        self.assertNoResult(done)
        clock.advance(0.01)
        self.assertEqual(
            self.successResultOf(done).error,
            "tcp:h:7: no answer to probe 0 within 2 s (4 of 16 bytes back)",
        )

    def test_timeoutWatchesEveryProbe(self) -> None:
        """
        The one timer that watches for answers covers later probes too.
        """
        run, endpoint, clock, _ = self.makeRun(count=0)
        done = run.start()
        self.echo(endpoint, clock, after=1.5)
        clock.advance(1.0)
        self.assertNoResult(done)
        clock.advance(1.0)
        self.assertNoResult(done)
        clock.advance(1.0)
        self.assertIn(
            "no answer to probe 1 within 2 s", str(self.successResultOf(done).error)
        )

    def test_closedMidProbe(self) -> None:
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        protocol, transport = endpoint.connections[0]
        protocol.dataReceived(transport.value()[:3])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.successResultOf(done).error,
            "tcp:h:7: the target closed the connection after 3 of 16 bytes of probe 0 came back",
        )

    def test_resetBetweenProbes(self) -> None:
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        self.echo(endpoint, clock)
        endpoint.connections[0][0].connectionLost(Failure(ConnectionLost()))
        results = self.successResultOf(done)
        self.assertEqual(
            results.error, "tcp:h:7: the connection was reset between probes"
        )
        self.assertEqual(len(results.samples), 1)

    def test_stopWaitsForTheProbeOut(self) -> None:
        """
        Ctrl-C with a probe out lets it come back, sends no more, and
        counts it.
        """
        run, endpoint, clock, _ = self.makeRun(count=0)
        done = run.start()
        clock.advance(0.5)
        run.stop()
        self.assertNoResult(done)
        self.echo(endpoint, clock, after=0.1)
        results = self.successResultOf(done)
        self.assertEqual((results.sent, results.answered), (1, 1))
        self.assertEqual(results.exitStatus(None, None), OK)
        clock.advance(5)
        self.assertEqual(endpoint.connections[0][1].value(), b"")

    def test_stopAgainstDiscard(self) -> None:
        """
        Ctrl-C at 1.35 s against a server that never answers: the probe
        out is sent, not answered, and an error at its timeout.
        """
        run, endpoint, clock, _ = self.makeRun(count=0)
        done = run.start()
        clock.advance(1.35)
        run.stop()
        self.assertNoResult(done)
        clock.advance(0.65)
        results = self.successResultOf(done)
        self.assertEqual(
            results.error,
            "tcp:h:7: no answer to probe 0 within 2 s (0 of 16 bytes back)",
        )
        self.assertEqual((results.sent, results.answered), (1, 0))
        self.assertEqual(results.samples[0].status, "lost")
        self.assertEqual(results.exitStatus(None, None), ERROR)

    def test_errorCountsTheProbe(self) -> None:
        """
        The probe a run fails on was sent: the summary and the JSON
        document count it.
        """
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        self.echo(endpoint, clock, after=0.1)
        clock.advance(0.9)
        endpoint.connections[0][0].connectionLost(Failure(ConnectionLost()))
        results = self.successResultOf(done)
        self.assertEqual([s.status for s in results.samples], ["ok", "lost"])
        self.assertEqual(results.document(ERROR)["summary"]["sent"], 2)

    def test_stoppedBeforeAnyProbe(self) -> None:
        """
        Stopped while still connecting: nothing was answered, and that is
        not success.
        """
        run, endpoint, clock, _ = self.makeRun(count=0)
        endpoint.connect = lambda factory: Deferred()  # type: ignore[method-assign]
        done = run.start()
        clock.advance(1)
        run.stop()
        results = self.successResultOf(done)
        self.assertEqual(results.sent, 0)
        self.assertEqual(results.exitStatus(None, None), FAILED)
        self.assertEqual(
            results.failures(None, None), ["stopped before a probe was sent"]
        )

    def test_durationStops(self) -> None:
        run, endpoint, clock, _ = self.makeRun(count=0, duration=2.5)
        done = run.start()
        for _ in range(3):
            self.echo(endpoint, clock)
            clock.advance(1)
        results = self.successResultOf(done)
        self.assertEqual(len(results.samples), 3)
        self.assertIsNone(results.error)


class StreamBulkTests(SynchronousTestCase):
    def makeRun(
        self, **overrides: Any
    ) -> tuple[StreamBulk, _StreamEndpoint, Clock, list[str]]:
        clock = Clock()
        endpoint = _StreamEndpoint()
        lines: list[str] = []
        settings: dict[str, Any] = {
            "endpoint": endpoint,
            "payloads": Payloads(1, 64),
            "parallel": 1,
            "duration": 2.0,
            "timeout": 2.0,
        }
        settings.update(overrides)
        run = StreamBulk(
            clock,
            parseTarget("tcp:h:7"),
            {},
            lines.append,
            now=clock.seconds,
            **settings,
        )
        return run, endpoint, clock, lines

    def send(self, endpoint: _StreamEndpoint, chunks: int) -> bytes:
        """
        Let the connection's producer send C{chunks} chunks; what it sent.
        """
        protocol, transport = endpoint.connections[0]
        for _ in range(chunks):
            protocol.resumeProducing()
        data = transport.value()
        transport.clear()
        return bytes(data)

    def test_everythingBack(self) -> None:
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        data = self.send(endpoint, 3)
        clock.advance(2)
        self.assertNoResult(done)
        endpoint.connections[0][0].dataReceived(data)
        results = self.successResultOf(done)
        self.assertIsNone(results.error)
        assert results.bulk is not None
        self.assertEqual(results.bulk["received_bytes"], 3 * CHUNK)
        self.assertEqual(results.bulk["in_flight_bytes"], 0)
        self.assertEqual(results.exitStatus(None, None), OK)

    def test_discard(self) -> None:
        """
        A discard service: sending stops at --duration, nothing comes back
        within --timeout after that, and the run is an error, exit 2.
        """
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        self.send(endpoint, 3)
        clock.advance(2)
        clock.advance(1.99)
        self.assertNoResult(done)
        clock.advance(0.01)
        results = self.successResultOf(done)
        self.assertEqual(
            results.error,
            f"tcp:h:7: none of the {3 * CHUNK} bytes sent came back within 2 s"
            " after sending stopped",
        )
        assert results.bulk is not None
        self.assertEqual(results.bulk["in_flight_bytes"], 3 * CHUNK)
        self.assertEqual(results.exitStatus(None, None), ERROR)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_notEverythingBack(self) -> None:
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        data = self.send(endpoint, 2)
        endpoint.connections[0][0].dataReceived(data[:1000])
        clock.advance(2)
        clock.advance(2)
        results = self.successResultOf(done)
        self.assertEqual(
            results.error,
            f"tcp:h:7: {2 * CHUNK - 1000} of the {2 * CHUNK} bytes sent never"
            " came back within 2 s after sending stopped",
        )

    def test_stopDrains(self) -> None:
        """
        Ctrl-C stops sending and waits for what is in flight, as the end
        of --duration does.
        """
        run, endpoint, clock, _ = self.makeRun(duration=10.0)
        done = run.start()
        data = self.send(endpoint, 2)
        clock.advance(1)
        run.stop()
        self.assertEqual(self.send(endpoint, 1), b"")
        self.assertNoResult(done)
        endpoint.connections[0][0].dataReceived(data)
        results = self.successResultOf(done)
        self.assertIsNone(results.error)
        assert results.bulk is not None
        self.assertEqual(results.bulk["received_bytes"], 2 * CHUNK)


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


class _UDPClock(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.ports: list[_UDPPort] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> _UDPPort:
        self.ports.append(_UDPPort(protocol))
        protocol.transport = self.ports[-1]
        return self.ports[-1]


class DatagramRunTests(SynchronousTestCase):
    def makeRun(self, **overrides: Any) -> tuple[DatagramRun, _UDPClock, list[str]]:
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
            parseTarget("udp:127.0.0.1:7"),
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


class DescribeFailureTests(SynchronousTestCase):
    def test_knownFailures(self) -> None:
        from twisted.internet import error

        for exception, says in [
            (error.ConnectionRefusedError(), "connection refused"),
            (error.TimeoutError(), "no connection (timed out)"),
            (error.DNSLookupError(), "the host name does not resolve"),
            (error.ConnectionDone(), "the target closed the connection"),
            (error.ConnectionLost(), "the connection was reset"),
            # A UNIX socket's connect failure carries only its errno.
            (
                error.getConnectError((2, "No such file or directory")),
                "could not connect (No such file or directory)",
            ),
        ]:
            self.assertEqual(describeFailure(Failure(exception)), says)

    def test_peerTextEscaped(self) -> None:
        """
        Text of an unexpected failure reaches the error line escaped: what
        a peer might put in it cannot drive the terminal.
        """
        line = describeFailure(Failure(ValueError("bad \x1b[2J\x00 thing")))
        self.assertEqual(line, "ValueError: bad \\x1b[2J\\x00 thing")
