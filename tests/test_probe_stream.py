"""
echotwist-probe's stream latency run (L{echotwist.probe.stream}), in
process with a Clock and a StringTransport.  (The command as a user runs
it, against real servers: tests.system.test_probe_command.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.payload import (
    Payloads,
)
from echotwist.probe.report import ERROR, FAILED, OK
from echotwist.probe.stream import StreamLatency
from echotwist.probe.target import parseTarget

# --- in process ---------------------------------------------------------------


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
