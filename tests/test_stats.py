"""
The counters a server and its workers report (L{echotwist.stats}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist.stats import addStats


class AddStatsTests(SynchronousTestCase):
    def test_sumsNestedCounts(self) -> None:
        self.assertEqual(
            addStats(
                {"accepted": 2, "refused": {"a": 1}},
                {"accepted": 3, "refused": {"a": 1, "b": 4}, "open": 1},
            ),
            {"accepted": 5, "refused": {"a": 2, "b": 4}, "open": 1},
        )
