"""
echotwist-probe's results and their JSON document
(L{echotwist.probe.report}).
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.report import ERROR, FAILED, OK, SCHEMA, Results, Sample


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
