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
from echotwist.probe.report import ERROR, OK
from echotwist.probe.target import parseTarget
from tests.test_probe_stream import _StreamEndpoint


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
