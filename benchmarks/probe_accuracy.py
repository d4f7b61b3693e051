"""
How close echotwist-probe's round trip comes to a C client's, in one run,
on loopback:

    python benchmarks/probe_accuracy.py              # 5 rounds
    python benchmarks/probe_accuracy.py --rounds 3 --seconds 1

Against the C echo servers (benchmarks/cecho.c over TCP, ``cudp echo``
from benchmarks/cudp.c over UDP), each round measures the p50 round trip
of 64-byte messages, one at a time, with the C client (loadgen.c with one
connection; ``cudp ping``) and then with echotwist-probe (``--interval 0
--count N --quiet --json -``), and prints both and their ratio.  The
figure is the median of the rounds' ratios, with their range; the target
is a ratio of at most 1.3.  Server and clients are pinned to cores of
their own (when there are two), as bench.py pins them.  Every run is
bounded (the C clients by --seconds, the probe by --count, both by a
timeout), and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU, CLIENT_CPU = CPUS[0], CPUS[-1]
TARGET = 1.3


def build(name: str, directory: str) -> str:
    binary = os.path.join(directory, name)
    subprocess.run(
        ["cc", "-O2", "-o", binary, os.path.join(HERE, f"{name}.c")], check=True
    )
    return binary


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)]


def startServer(argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [*pinned(SERVER_CPU), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.match(r"PORT (\d+)", line)
    if match is None:
        server.kill()
        raise SystemExit(f"{argv[0]} did not start: {line!r}")
    return server, int(match.group(1))


def cP50(argv: list[str], seconds: float) -> float:
    """
    The p50 round trip, in microseconds, a C client prints.
    """
    out = subprocess.run(
        [*pinned(CLIENT_CPU), *argv],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    match = re.search(r"p50_us=([\d.]+)", out)
    if match is None:
        raise SystemExit(f"no p50 from {argv}: {out!r}")
    return float(match.group(1))


def probeP50(target: str, count: int) -> float:
    """
    The p50 round trip, in microseconds, echotwist-probe measures.
    """
    result = subprocess.run(
        [
            *pinned(CLIENT_CPU),
            os.path.join(BIN, "echotwist-probe"),
            target,
            "--interval",
            "0",
            "--count",
            str(count),
            "--quiet",
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise SystemExit(f"echotwist-probe failed: {result.stderr}")
    return float(json.loads(result.stdout)["summary"]["rtt_ms"]["p50"]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="probe-accuracy-") as directory:
        cecho, loadgen, cudp = (
            build(name, directory) for name in ("cecho", "loadgen", "cudp")
        )
        tcpServer, tcpPort = startServer([cecho])
        udpServer, udpPort = startServer([cudp, "echo"])
        try:
            ratios: dict[str, list[float]] = {"tcp": [], "udp": []}
            print("round  transport  C p50 us  probe p50 us  ratio")
            for round in range(1, args.rounds + 1):
                for transport, client, port in [
                    ("tcp", [loadgen, str(tcpPort), "1", "64"], tcpPort),
                    ("udp", [cudp, "ping", str(udpPort), "64"], udpPort),
                ]:
                    c = cP50([*client, str(args.seconds)], args.seconds)
                    ours = probeP50(f"{transport}:127.0.0.1:{port}", args.count)
                    ratios[transport].append(ours / c)
                    print(
                        f"{round:5d}  {transport:9s}  {c:8.1f}  {ours:12.1f}"
                        f"  {ours / c:5.2f}",
                        flush=True,
                    )
            for transport, values in ratios.items():
                median = statistics.median(values)
                verdict = "MET" if median <= TARGET else "MISS"
                print(
                    f"{transport}: probe p50 / C p50 = {median:.2f}"
                    f" (rounds {min(values):.2f}-{max(values):.2f});"
                    f" target <= {TARGET}: {verdict}"
                )
        finally:
            for server in (tcpServer, udpServer):
                server.kill()
                server.wait(10)


if __name__ == "__main__":
    main()
