"""
TCP echo latency beside a UDP flood (issue 23): start twistd echo with a
TCP and a UDP port on loopback, measure TCP round trips of 64 bytes with
no flood, then while one source (127.0.0.2) floods the UDP port with
--rate datagrams a second, and print p50, p99 and the worst of each.

    python benchmarks/udpflood.py --rate 100000 --seconds 10 --repeat 3

A bounded flood: --seconds each run, paced in batches every millisecond.
Run it on a quiet machine; on a shared one, compare ratios of runs made
side by side.  PYTHONPATH picks the echotwist to measure (e.g. an older
checkout, for a before-and-after).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

LOOPBACK = "127.0.0.1"


def flood(port: int, rate: int, seconds: float, sent: multiprocessing.Value) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    payload = b"f" * 64
    batch = max(1, rate // 1000)
    start = time.monotonic()
    count = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while count < due:
            for _ in range(batch):
                try:
                    sock.sendto(payload, (LOOPBACK, port))
                except BlockingIOError:
                    pass
                count += 1
        time.sleep(0.001)
    sent.value = count


def probe(port: int, seconds: float) -> list[float]:
    """
    Round trips of 64 bytes, one after another, for C{seconds}, in ms.
    """
    times = []
    with socket.create_connection((LOOPBACK, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(10)
        message = b"p" * 64
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            began = time.perf_counter()
            sock.sendall(message)
            got = b""
            while len(got) < len(message):
                got += sock.recv(64 - len(got))
            times.append((time.perf_counter() - began) * 1000)
            time.sleep(0.002)  # a probe, not a load: ~400 a second
    return times


def summary(times: list[float]) -> str:
    times = sorted(times)
    p99 = times[int(len(times) * 0.99) - 1]
    return (
        f"n={len(times)} p50={statistics.median(times):.3f} ms"
        f" p99={p99:.3f} ms max={times[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rate", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        udpPort = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "echo",
             "--port", f"tcp:0:interface={LOOPBACK}",
             "--udp", f"udp:{udpPort}:interface={LOOPBACK}",
             "--no-connection-logs"],
            cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            tcpPort = 0
            deadline = time.monotonic() + 20
            while not tcpPort and time.monotonic() < deadline:
                line = server.stdout.readline()
                match = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(tcp", line)
                if match:
                    tcpPort = int(match.group(1))
            assert tcpPort, "the server did not start"
            time.sleep(1.0)  # let the UDP listener start too
            for run in range(args.repeat):
                quiet = probe(tcpPort, args.seconds)
                sent = multiprocessing.Value("q", 0)
                flooder = multiprocessing.Process(
                    target=flood, args=(udpPort, args.rate, args.seconds + 1, sent)
                )
                flooder.start()
                time.sleep(0.5)
                loaded = probe(tcpPort, args.seconds)
                flooder.join(args.seconds + 30)
                print(f"run {run + 1} quiet:  {summary(quiet)}")
                print(
                    f"run {run + 1} flood:  {summary(loaded)}"
                    f" ({sent.value / (args.seconds + 1):,.0f} datagrams/s sent)",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
