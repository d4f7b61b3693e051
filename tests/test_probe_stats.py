"""
echotwist-probe's statistics (L{echotwist.probe.stats}): percentiles,
spread and histograms.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.stats import Spread, histogram, percentile


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
