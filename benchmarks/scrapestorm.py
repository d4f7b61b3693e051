"""
The echo's round trip while a storm of scrapers hits --metrics.

    python benchmarks/scrapestorm.py                     # 1000 scrapers, 10 s
    python benchmarks/scrapestorm.py --workers 2
    python benchmarks/scrapestorm.py --scrapers 200 --seconds 5
    python benchmarks/scrapestorm.py --early 200 --workers 2   # scrapers that leave

Starts the twistd installed next to this Python (echo and metrics on
127.0.0.1, random ports), measures the echo's round trip (64 bytes, one
probe every 10 ms on one connection) for a few seconds alone, then again
while --scrapers concurrent scrapers (asyncio, in a process of their own)
loop for --seconds: connect, GET /metrics, read until the answer is whole
or the connection closes, close, again.  Prints the echo's round trip
(median, p99, worst) alone and under the storm, how many scrapes were
answered and how many closed unanswered (over the metrics listener's
cap), and how many lines the server logged during the storm.  Every loop
is bounded in time and count and talks to 127.0.0.1 only.

With --early N it runs no storm: N scrapers one after another send GET
/metrics and close at once (every other one with a reset), then the
server is stopped, and it prints how many tracebacks and log lines that
left in the server's log.  A shared
machine makes the figures noisy: run it more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.dirname(sys.executable)
LOOPBACK = "127.0.0.1"
GET = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
#: At most this many scrape attempts per scraper, whatever the clock says.
MAX_ATTEMPTS = 100_000


def probe(port: int, seconds: float) -> list[float]:
    """
    Echo round trips in milliseconds: 64 bytes every 10 ms for C{seconds}.
    """
    rtts = []
    message = os.urandom(64)
    with socket.create_connection((LOOPBACK, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            s.sendall(message)
            got = b""
            while len(got) < len(message):
                chunk = s.recv(len(message) - len(got))
                if not chunk:
                    raise RuntimeError("echo connection closed")
                got += chunk
            rtts.append((time.perf_counter() - started) * 1000)
            if got != message:
                raise RuntimeError("echo differs")
            time.sleep(0.01)  # pacing: one probe per 10 ms, not a sync
    return rtts


async def _scraper(port: int, deadline: float, counts: dict[str, int]) -> None:
    for _ in range(MAX_ATTEMPTS):
        if time.monotonic() >= deadline:
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(LOOPBACK, port), 10
            )
        except (OSError, asyncio.TimeoutError):
            counts["connect failed"] += 1
            continue
        try:
            writer.write(GET)
            answer = await asyncio.wait_for(reader.read(-1), 10)
            key = "answered" if answer.startswith(b"HTTP/1.1 200") else "unanswered"
        except (OSError, asyncio.TimeoutError):
            key = "unanswered"
        counts[key] += 1
        writer.close()


async def _storm(port: int, scrapers: int, seconds: float) -> dict[str, int]:
    counts = {"answered": 0, "unanswered": 0, "connect failed": 0}
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_scraper(port, deadline, counts) for _ in range(scrapers)))
    return counts


def stormMain(port: int, scrapers: int, seconds: float) -> None:
    print(json.dumps(asyncio.run(_storm(port, scrapers, seconds))))


def early(
    port: int, count: int, workers: int, server: subprocess.Popen[str], lines: list[str]
) -> None:
    before = len(lines)
    for n in range(count):
        with socket.create_connection((LOOPBACK, port), timeout=10) as s:
            if n % 2:
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            s.sendall(GET)
    time.sleep(2)  # let the server take in the last closes before it stops
    server.terminate()
    server.wait(30)
    time.sleep(0.5)  # the reader thread's last lines
    logged = lines[before:]
    print(f"workers {workers}, {count} scrapes closed early")
    print(f"  tracebacks in the log: {sum('Traceback' in x for x in lines)}")
    print(f"  log lines from the first scrape to the exit: {len(logged)}")


def summary(rtts: list[float]) -> str:
    ordered = sorted(rtts)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"median {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms,"
        f" worst {ordered[-1]:.2f} ms ({len(ordered)} probes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--baseline", type=float, default=3.0)
    parser.add_argument("--early", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--storm", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.storm:
        port, scrapers, seconds = args.storm
        stormMain(int(port), int(scrapers), float(seconds))
        return

    directory = tempfile.mkdtemp(prefix="scrapestorm-")
    server = subprocess.Popen(
        [
            os.path.join(BIN, "twistd"),
            "-n",
            "--pidfile=",
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--metrics",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            str(args.workers),
        ],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            lines.append(line.rstrip("\n"))
            if args.workers == 1 or f"Worker {args.workers} serving" in line:
                if any("Serving metrics" in x for x in lines):
                    ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(30):
            raise SystemExit("server did not start:\n" + "\n".join(lines))
        text = "\n".join(lines)
        echoPort = int(re.search(r"Listening on \S+:(\d+) ", text).group(1))  # type: ignore[union-attr]
        metricsPort = int(re.search(r"Serving metrics on \S+:(\d+)", text).group(1))  # type: ignore[union-attr]
        if args.early:
            early(metricsPort, args.early, args.workers, server, lines)
            return
        alone = probe(echoPort, args.baseline)
        before = len(lines)
        storm = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--storm",
                str(metricsPort),
                str(args.scrapers),
                str(args.seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # let the scrapers get going before measuring
        underStorm = probe(echoPort, max(0.0, args.seconds - 1.0))
        out, _ = storm.communicate(timeout=args.seconds + 60)
        logged = lines[before:]
        counts = json.loads(out)
        print(f"workers {args.workers}, {args.scrapers} scrapers for {args.seconds} s")
        print(f"  echo alone:       {summary(alone)}")
        print(f"  echo under storm: {summary(underStorm)}")
        print(
            f"  scrapes: {counts['answered']} answered, {counts['unanswered']}"
            f" closed unanswered, {counts['connect failed']} connects failed"
        )
        print(f"  server log lines during the storm: {len(logged)}")
        for line in logged[:5]:
            print(f"    {line[:160]}")
        print(f"  tracebacks in the log: {sum('Traceback' in x for x in lines)}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
