# -*- test-case-name: tests.test_probe_report -*-
"""
What a run found, and how it is told: lines for people, one JSON document
for programs (L{SCHEMA}), a plot, and ping's exit status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO, Any

from echotwist.probe.stats import Spread, histogram, lossPercent

#: The JSON document's C{schema} field; docs/probe.rst describes it.
SCHEMA = "echotwist-probe/1"

#: Exit statuses, as ping's: all answered and checked; some lost or a
#: threshold passed; an error (bad target, no answer, not an echo).
OK, FAILED, ERROR = 0, 1, 2


@dataclass
class Sample:
    """
    One probe.

    @ivar at: when it was sent, seconds from the start of the run.
    @ivar rtt: its round trip in seconds; C{None} if not answered.
    @ivar connect: the connection's set-up time in seconds, when the probe
        made one (the first probe, or each with C{--connect-each}).
    @ivar status: C{ok}, C{lost} or C{late}.
    """

    seq: int
    at: float
    size: int
    rtt: float | None = None
    connect: float | None = None
    status: str = "ok"

    def asDict(self) -> dict[str, Any]:
        """
        The sample as the JSON document has it.
        """
        return {
            "seq": self.seq,
            "at": round(self.at, 6),
            "bytes": self.size,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 6),
            "connect_ms": None
            if self.connect is None
            else round(self.connect * 1000, 6),
            "status": self.status,
        }


@dataclass
class Results:
    """
    Everything a run measured.
    """

    target: str
    mode: str
    settings: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    elapsed: float = 0.0
    error: str | None = None
    #: Throughput runs: bytes sent, bytes received back, bytes in flight at
    #: the end; over UDP, datagrams lost in each second.
    bulk: dict[str, Any] | None = None

    @property
    def isStreamBulk(self) -> bool:
        """
        Whether this is a throughput run over a stream (bytes, no probes).
        """
        return self.bulk is not None and "received_bytes" in self.bulk

    @property
    def sent(self) -> int:
        """
        Probes sent.
        """
        return len(self.samples)

    @property
    def answered(self) -> int:
        """
        Probes answered (in time, unchanged).
        """
        return sum(1 for s in self.samples if s.status == "ok")

    def rtts(self) -> list[float]:
        """
        Round trips of the answered probes, in seconds.
        """
        return [s.rtt for s in self.samples if s.rtt is not None and s.status == "ok"]

    def connects(self) -> list[float]:
        """
        Connection set-up times, in seconds.
        """
        return [s.connect for s in self.samples if s.connect is not None]

    def summary(self) -> dict[str, Any]:
        """
        The summary as the JSON document has it.
        """
        rtt = Spread.of(self.rtts())
        connect = Spread.of(self.connects())
        return {
            "sent": self.sent,
            "answered": self.answered,
            "lost": self.sent - self.answered,
            "loss_percent": round(lossPercent(self.sent, self.answered), 3),
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "late": self.late,
            "elapsed_s": round(self.elapsed, 6),
            "rtt_ms": None if rtt is None else rtt.asDict(),
            "connect_ms": None if connect is None else connect.asDict(),
        }

    def exitStatus(self, maxLoss: float | None, maxP99: float | None) -> int:
        """
        Ping's exit status, with the thresholds: L{ERROR} after an error,
        L{FAILED} when a probe was lost or a threshold passed (any loss
        when no C{maxLoss} is given), else L{OK}.
        """
        if self.error is not None:
            return ERROR
        return FAILED if self.failures(maxLoss, maxP99) else OK

    def failures(self, maxLoss: float | None, maxP99: float | None) -> list[str]:
        """
        Lines saying which threshold the run passed.
        """
        found = []
        if self.isStreamBulk:
            assert self.bulk is not None
            if self.bulk["sent_bytes"] == 0:
                # Stopped while connecting: no throughput was measured,
                # which is not a clean run.
                return ["stopped before any byte was sent"]
        elif self.sent == 0:
            # Stopped before the first probe went (still connecting):
            # nothing was answered, and ping too exits 1 then.
            return ["stopped before a probe was sent"]
        loss = lossPercent(self.sent, self.answered)
        if maxLoss is None:
            if self.answered < self.sent:
                found.append(f"{self.sent - self.answered} of {self.sent} lost")
        elif loss > maxLoss:
            found.append(f"loss {loss:.1f}% is over --max-loss {maxLoss:g}%")
        rtt = Spread.of(self.rtts())
        if maxP99 is not None and rtt is not None and rtt.p99 > maxP99:
            found.append(f"p99 {rtt.p99:.3f} ms is over --max-p99 {maxP99:g} ms")
        return found

    def document(self, status: int) -> dict[str, Any]:
        """
        The JSON document (schema L{SCHEMA}).
        """
        return {
            "schema": SCHEMA,
            "target": self.target,
            "mode": self.mode,
            "settings": self.settings,
            "samples": [s.asDict() for s in self.samples],
            "summary": self.summary(),
            "bulk": self.bulk,
            "error": self.error,
            "exit_status": status,
        }


def probeLine(target: str, sample: Sample) -> str:
    """
    The line printed for one probe, as ping prints it.
    """
    if sample.status != "ok" or sample.rtt is None:
        return f"{sample.size} bytes to {target}: seq={sample.seq} {sample.status}"
    text = (
        f"{sample.size} bytes from {target}: seq={sample.seq}"
        f" time={sample.rtt * 1000:.3f} ms"
    )
    if sample.connect is not None:
        text += f" connect={sample.connect * 1000:.3f} ms"
    return text


def summaryLines(results: Results, showHistogram: bool) -> list[str]:
    """
    The summary for people, as ping ends.
    """
    summary = results.summary()
    streamBulk = results.isStreamBulk
    if results.error is not None and not results.samples and not streamBulk:
        # Nothing was measured: the error line says it all.
        return []
    lines = [f"--- {results.target} echo statistics ---"]
    if not streamBulk:
        lines.append(
            f"{summary['sent']} probes sent, {summary['answered']} answered,"
            f" {summary['loss_percent']:g}% lost"
            + (
                f", {results.duplicates} duplicates, {results.reordered} reordered,"
                f" {results.late} late"
                if results.settings.get("transport") == "udp"
                else ""
            )
            + f", time {results.elapsed * 1000:.0f} ms"
        )
    rtt = Spread.of(results.rtts())
    if rtt is not None:
        lines.append("rtt " + rtt.line())
    connect = Spread.of(results.connects())
    if connect is not None:
        lines.append("connect " + connect.line())
    if streamBulk:
        assert results.bulk is not None
        bulk = results.bulk
        lines.append(
            f"throughput {bulk['received_mb_s']:.3f} MB/s received back over"
            f" {bulk['parallel']} connection(s) in {bulk['seconds']:.3f} s;"
            f" {bulk['sent_bytes']} bytes sent, {bulk['received_bytes']}"
            f" received, {bulk['in_flight_bytes']} in flight at the end"
        )
    if results.bulk is not None and "lost_per_second" in results.bulk:
        lost = results.bulk["lost_per_second"]
        shown = " ".join(str(n) for n in lost[:60]) + (" ..." if len(lost) > 60 else "")
        lines.append(f"lost in each second of sending: {shown}")
    if showHistogram and results.rtts():
        lines.append("rtt histogram:")
        lines.extend(histogram(results.rtts()))
    return lines


def writeJSON(results: Results, status: int, out: IO[str]) -> None:
    """
    Write the JSON document (schema L{SCHEMA}) to C{out}.
    """
    json.dump(results.document(status), out, indent=1)
    out.write("\n")


def checkPlotting() -> str | None:
    """
    C{None} when C{--plot} can work; else the line saying what to install.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from echotwist.listeners import installExtra

        return f"--plot needs matplotlib: {installExtra('plot')}"
    return None


def plot(results: Results, path: str) -> None:
    """
    Draw round-trip time over time and its distribution (CDF) into
    C{path}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    answered = [s for s in results.samples if s.rtt is not None and s.status == "ok"]
    figure, (overTime, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    overTime.plot(
        [s.at for s in answered], [s.rtt * 1000 for s in answered if s.rtt], "."
    )
    lost = [s.at for s in results.samples if s.status != "ok"]
    if lost:
        overTime.plot(lost, [0] * len(lost), "rx", label="lost")
        overTime.legend()
    overTime.set_xlabel("time (s)")
    overTime.set_ylabel("round trip (ms)")
    overTime.set_title(f"{results.target}: round trip over time")
    ordered = sorted(s.rtt * 1000 for s in answered if s.rtt is not None)
    cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))])
    cdf.set_xlabel("round trip (ms)")
    cdf.set_ylabel("fraction of probes")
    cdf.set_title("distribution (CDF)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
