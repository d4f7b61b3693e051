# -*- test-case-name: tests.test_probe_stats -*-
"""
The figures a probe run ends with: round-trip statistics as ping users
know them, and a histogram for the terminal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """
    The nearest-rank percentile of C{ordered} (sorted, not empty): the
    smallest sample that at least C{fraction} of the samples are at or
    under.
    """
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Spread:
    """
    Statistics of a set of durations, in milliseconds.  C{mdev} is ping's:
    the standard deviation of the population.
    """

    count: int
    min: float
    avg: float
    p50: float
    p90: float
    p99: float
    max: float
    mdev: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Spread | None:
        """
        The spread of C{seconds} (durations in seconds); C{None} for none.
        """
        if not seconds:
            return None
        ordered = sorted(s * 1000.0 for s in seconds)
        n = len(ordered)
        mean = math.fsum(ordered) / n
        variance = max(0.0, math.fsum(x * x for x in ordered) / n - mean * mean)
        return cls(
            count=n,
            min=ordered[0],
            avg=mean,
            p50=percentile(ordered, 0.50),
            p90=percentile(ordered, 0.90),
            p99=percentile(ordered, 0.99),
            max=ordered[-1],
            mdev=math.sqrt(variance),
        )

    def asDict(self) -> dict[str, float]:
        """
        The figures as the JSON document has them (to the nanosecond).
        """
        return {k: round(v, 6) for k, v in asdict(self).items()}

    def line(self) -> str:
        """
        The figures as one line, in milliseconds, ping's order.
        """
        return (
            f"min/avg/p50/p90/p99/max/mdev = {self.min:.3f}/{self.avg:.3f}"
            f"/{self.p50:.3f}/{self.p90:.3f}/{self.p99:.3f}/{self.max:.3f}"
            f"/{self.mdev:.3f} ms"
        )


def lossPercent(sent: int, answered: int) -> float:
    """
    The share of C{sent} probes not answered, in percent.
    """
    if sent == 0:
        return 0.0
    return 100.0 * (sent - answered) / sent


def histogram(seconds: Sequence[float], width: int = 40) -> list[str]:
    """
    Lines that draw the distribution of C{seconds} in the terminal: one
    row per power-of-two range of microseconds that holds samples, a bar
    of C{#} as long as its share of the largest row, and the count.
    """
    if not seconds:
        return []
    rows: dict[int, int] = {}
    for s in seconds:
        micro = max(1.0, s * 1e6)
        rows[int(math.log2(micro))] = rows.get(int(math.log2(micro)), 0) + 1
    tallest = max(rows.values())
    lines = []
    for exponent in range(min(rows), max(rows) + 1):
        count = rows.get(exponent, 0)
        low, high = 2**exponent, 2 ** (exponent + 1)
        bar = "#" * max(1 if count else 0, round(width * count / tallest))
        lines.append(f"{_micro(low):>9} - {_micro(high):<9} |{bar:<{width}}| {count}")
    return lines


def _micro(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:g} s"
    if value >= 1e3:
        return f"{value / 1e3:g} ms"
    return f"{value:g} us"
