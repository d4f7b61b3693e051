"""
echotwist-probe's bulk stream run (L{echotwist.probe.bulk}), on a Clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.bulk import CHUNK, StreamBulk
from echotwist.probe.payload import (
    Payloads,
)
from echotwist.probe.report import ERROR, FAILED, OK
from echotwist.probe.target import parseTarget
from tests.test_probe_stream import _StreamEndpoint


class StreamBulkTests(SynchronousTestCase):
    def makeRun(
        self, target: str = "tcp:h:7", **overrides: Any
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
            parseTarget(target),
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

    def test_stopWhileDrainingWaits(self) -> None:
        """
        Ctrl-C after --duration is over, while the run waits for what is in
        flight: the wait goes on to its --timeout, and bytes that never
        came back are still the error they are at the end of the wait, not
        a clean run with exit 0.
        """
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        self.send(endpoint, 3)
        clock.advance(2)
        clock.advance(0.5)
        run.stop()
        self.assertNoResult(done)
        clock.advance(1.5)
        results = self.successResultOf(done)
        self.assertEqual(
            results.error,
            f"tcp:h:7: none of the {3 * CHUNK} bytes sent came back within 2 s"
            " after sending stopped",
        )
        self.assertEqual(results.exitStatus(None, None), ERROR)

    def test_stopWhileDrainingAnswered(self) -> None:
        """
        Ctrl-C during the wait, and then everything comes back: a clean run.
        """
        run, endpoint, clock, _ = self.makeRun()
        done = run.start()
        data = self.send(endpoint, 2)
        clock.advance(2.5)
        run.stop()
        endpoint.connections[0][0].dataReceived(data)
        results = self.successResultOf(done)
        self.assertIsNone(results.error)
        self.assertEqual(results.exitStatus(None, None), OK)

    def test_stopWhileConnecting(self) -> None:
        """
        Ctrl-C before streaming began (here a TLS handshake that has not
        finished): the run ends at once, nothing measured, exit 1 as a
        latency run stopped before its first probe, not 0.
        """
        run, endpoint, clock, _ = self.makeRun(target="tls:h:7")
        done = run.start()
        self.assertEqual(len(endpoint.connections), 1)
        run.stop()
        results = self.successResultOf(done)
        self.assertIsNone(results.error)
        assert results.bulk is not None
        self.assertEqual(results.bulk["sent_bytes"], 0)
        self.assertEqual(
            results.failures(None, None), ["stopped before any byte was sent"]
        )
        self.assertEqual(results.exitStatus(None, None), FAILED)
        self.assertEqual(clock.getDelayedCalls(), [])
