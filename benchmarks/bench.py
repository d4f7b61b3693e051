"""
echotwist's benchmark: echotwist against its peers, in one run, on loopback.

    python benchmarks/bench.py                 # the full table, ~15 minutes
    python benchmarks/bench.py --quick         # 1 KiB and 100 KiB at 10 connections
    python benchmarks/bench.py --client c      # the independent C load generator

Peers: a plain Twisted echo (twisted.protocols.wire.Echo, default reactor),
the stdlib asyncio Protocol echo, and uvloop's when it is installed; and,
as a yardstick, a C epoll echo (cecho.c) when a C compiler is there.  Each
server runs as its own process; closed-loop clients (send a message, wait
for all of it back, check every byte, repeat) run for --seconds per cell.
The figure that matters on a shared two-core machine is messages per server
CPU-second (utime + stime from /proc), which does not depend on how fast the
client is; the table also splits it into user and kernel time per message.
Each server gets one untimed pass first; then the servers take turns, round
after round, and a ratio between two servers is the median of the rounds'
ratios, printed with their range.  Also measured: memory per idle connection (5000 connections,
idle timeout on) and time from start to first echo.  Every load loop is
bounded in time and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
LOOPBACK = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")
# Server and client each get a core of their own (when there are two), so
# neither is measured while waiting for the other's time slice.
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU, CLIENT_CPU = CPUS[0], CPUS[-1]


def pin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


# --- servers -----------------------------------------------------------------


@dataclass
class Peer:
    name: str
    argv: list[str]
    portPattern: str


def echotwist(name: str, reactor: list[str], options: list[str]) -> Peer:
    """
    echotwist under twistd, with C{reactor}'s options before the plugin's
    name and C{options} (the benchmark's own --socket-buffer) after.
    """
    return Peer(
        name,
        [
            os.path.join(BIN, "twistd"),
            "-n",
            "--pidfile=",
            *reactor,
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--max-connections",
            "0",
            "--max-per-source",
            "0",
            "--no-connection-logs",
            *options,
        ],
        r"Listening on \S+:(\d+)",
    )


def echotwistOptions(args: argparse.Namespace) -> list[str]:
    """
    The echotwist options the benchmark passes on: --socket-buffer, when
    given (otherwise echotwist's own default holds).
    """
    if args.socket_buffer is None:
        return []
    return ["--socket-buffer", str(args.socket_buffer)]


def peers(directory: str, options: list[str]) -> list[Peer]:
    twistd = os.path.join(BIN, "twistd")
    found = [
        echotwist("echotwist", [], options),
        echotwist("echotwist-r", ["--reactor", "echotwist"], options),
        Peer(
            "twisted",
            [twistd, "-n", "--pidfile=", "-y", os.path.join(HERE, "plain.tac")],
            r"starting on (\d+)",
        ),
        Peer(
            "asyncio",
            [sys.executable, os.path.join(HERE, "peers.py"), "asyncio"],
            r"PORT (\d+)",
        ),
    ]
    try:
        import uvloop  # noqa: F401

        found.append(
            Peer(
                "uvloop",
                [sys.executable, os.path.join(HERE, "peers.py"), "uvloop"],
                r"PORT (\d+)",
            )
        )
    except ImportError:
        pass
    # The yardstick, not a peer to beat: a C epoll echo (benchmarks/cecho.c).
    cecho = buildC("cecho", directory)
    if cecho is not None:
        found.append(Peer("c-epoll", [cecho], r"PORT (\d+)"))
    return found


class Running:
    def __init__(self, peer: Peer, directory: str, pinned: bool = True) -> None:
        self.peer = peer
        path = os.path.join(directory, f"{peer.name}.log")
        # The server writes through a description of its own, appending:
        # reading through a shared one would move where the server writes
        # next, and a read between two writes (print() makes one per word
        # under PYTHONUNBUFFERED) would have the next land over the first.
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.started = time.monotonic()
        try:
            self.process = subprocess.Popen(
                peer.argv,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: pin(SERVER_CPU)) if pinned else None,
            )
        finally:
            os.close(out)
        self.log = open(path, "rb")
        self.port = self._waitForPort()

    def output(self) -> bytes:
        """
        All the server has written so far.
        """
        self.log.seek(0)
        return self.log.read()

    def _waitForPort(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(self.peer.portPattern.encode(), self.output())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.01)
        self.stop()
        raise SystemExit(f"{self.peer.name} did not start:\n{self.output().decode()}")

    def cpu(self) -> tuple[float, float]:
        """
        CPU-seconds the server has used so far: (user, system).
        """
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / TICK, int(fields[12]) / TICK

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- clients -----------------------------------------------------------------


def pythonClient(port: int, conns: int, size: int, seconds: float) -> str:
    """
    The closed-loop client in Python: one selector, every connection
    sending a message and waiting for all of it back.  Same output as
    loadgen.c.
    """
    message = bytes((i * 31 + 7) & 0xFF for i in range(size))
    selector = selectors.DefaultSelector()
    state = []
    for n in range(conns):
        sock = socket.create_connection((LOOPBACK, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        entry = [sock, 0, bytearray(), 0.0]  # socket, sent, received, started
        state.append(entry)
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, n)
    messages = errors = 0
    samples: list[float] = []
    end = time.monotonic() + seconds
    for entry in state:
        entry[3] = time.monotonic()
    while time.monotonic() < end:
        for key, events in selector.select(0.1):
            entry = state[key.data]
            sock = entry[0]
            if events & selectors.EVENT_WRITE and entry[1] < size:
                try:
                    entry[1] += sock.send(message[entry[1] :])
                except BlockingIOError:
                    pass
                if entry[1] == size:
                    selector.modify(sock, selectors.EVENT_READ, key.data)
            if events & selectors.EVENT_READ:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise SystemExit("connection closed by the server")
                received = entry[2]
                received += chunk
                if len(received) >= size:
                    now = time.monotonic()
                    if bytes(received) != message:
                        errors += 1
                    messages += 1
                    samples.append(now - entry[3])
                    entry[2] = bytearray()
                    entry[3] = now
                    try:
                        entry[1] = sock.send(message)
                    except BlockingIOError:
                        entry[1] = 0
                    if entry[1] < size:
                        selector.modify(
                            sock, selectors.EVENT_READ | selectors.EVENT_WRITE, key.data
                        )
    samples.sort()
    p50 = samples[len(samples) // 2] if samples else 0
    p99 = samples[int(len(samples) * 0.99)] if samples else 0
    return (
        f"messages={messages} bytes={messages * size} p50_us={p50 * 1e6:.1f}"
        f" p99_us={p99 * 1e6:.1f} errors={errors} seconds={seconds:.3f}"
    )


def buildC(name: str, directory: str) -> str | None:
    """
    Compile benchmarks/NAME.c into DIRECTORY; None without a C compiler.
    """
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    binary = os.path.join(directory, name)
    subprocess.run(
        [compiler, "-O2", "-o", binary, os.path.join(HERE, f"{name}.c")], check=True
    )
    return binary


def buildLoadgen(directory: str) -> str:
    binary = buildC("loadgen", directory)
    if binary is None:
        raise SystemExit("--client c needs a C compiler (cc or gcc)")
    return binary


@dataclass
class Cell:
    server: str
    size: int
    conns: int
    messages: int
    seconds: float
    serverUser: float
    serverSystem: float
    p50: float
    p99: float

    @property
    def serverCPU(self) -> float:
        return self.serverUser + self.serverSystem

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def perCPU(self) -> float:
        return self.messages / self.serverCPU if self.serverCPU else float("nan")


def measure(
    server: Running, size: int, conns: int, seconds: float, loadgen: str | None
) -> Cell:
    if loadgen is not None:
        argv = [loadgen, str(server.port), str(conns), str(size), str(seconds)]
    else:
        argv = [
            sys.executable,
            __file__,
            "_client",
            str(server.port),
            str(conns),
            str(size),
            str(seconds),
        ]
    userBefore, systemBefore = server.cpu()
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        preexec_fn=lambda: pin(CLIENT_CPU),
    )
    userAfter, systemAfter = server.cpu()
    if result.returncode:
        raise SystemExit(f"client failed against {server.peer.name}: {result.stderr}")
    fields = dict(item.split("=") for item in result.stdout.split())
    if int(fields["errors"]):
        raise SystemExit(f"{server.peer.name} echoed wrong bytes")
    return Cell(
        server.peer.name,
        size,
        conns,
        int(fields["messages"]),
        float(fields["seconds"]),
        userAfter - userBefore,
        systemAfter - systemBefore,
        float(fields["p50_us"]),
        float(fields["p99_us"]),
    )


def idleMemory(server: Running, count: int) -> float:
    """
    Bytes of server RSS per idle connection, at C{count} connections.
    """
    socks = [socket.create_connection((LOOPBACK, server.port))]
    socks[0].sendall(b"warm")
    socks[0].recv(10)
    before = server.rss()
    for n in range(count):
        socks.append(socket.create_connection((LOOPBACK, server.port)))
        if n % 500 == 499 or n == count - 1:
            # Its echo means the server has accepted and set up every
            # connection before it (they are accepted in order).
            socks[-1].sendall(b"x")
            socks[-1].recv(1)
    per = (server.rss() - before) / count
    for sock in socks:
        sock.close()
    return per


def firstEcho(peer: Peer, directory: str) -> float:
    started = time.monotonic()
    server = Running(peer, directory)
    try:
        with socket.create_connection((LOOPBACK, server.port)) as sock:
            sock.sendall(b"first")
            sock.recv(10)
        return time.monotonic() - started
    finally:
        server.stop()


# --- the run -----------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=["python", "c"], default="python")
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell")
    parser.add_argument(
        "--quick", action="store_true", help="1 KiB and 100 KiB at 10 connections only"
    )
    parser.add_argument(
        "--idle", type=int, default=5000, help="connections for idle memory; 0 to skip"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per cell; the median counts"
    )
    parser.add_argument("--only", help="comma-separated servers to run")
    parser.add_argument(
        "--cells",
        help="comma-separated SIZExCONNS cells to run, e.g. 1024x10,1024x1000",
    )
    parser.add_argument(
        "--no-workers",
        dest="workers",
        action="store_false",
        help="skip the --workers 2 against --workers 1 comparison",
    )
    parser.add_argument(
        "--plot", help="write a PNG of the ratios here (needs matplotlib)"
    )
    parser.add_argument(
        "--socket-buffer",
        type=int,
        help="run echotwist with this --socket-buffer (0: kernel autotuning);"
        " default: echotwist's own default",
    )
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    directory = tempfile.mkdtemp(prefix="echotwist-bench-")
    loadgen = buildLoadgen(directory) if args.client == "c" else None
    servers = peers(directory, echotwistOptions(args))
    if args.only:
        servers = [p for p in servers if p.name in args.only.split(",")]
    cellSpecs = (
        [(1024, 10), (102400, 10)]
        if args.quick
        else [(s, c) for s in (64, 1024, 102400) for c in (10, 100, 1000)]
    )
    if args.cells:
        cellSpecs = [
            (int(size), int(conns))
            for size, conns in (cell.split("x") for cell in args.cells.split(","))
        ]

    # Every server runs throughout, idle but for its turn; the servers take
    # turns cell by cell, round after round (each round starting one server
    # further on), so that drift in the machine's speed falls on all of them
    # alike; the median of the rounds counts.
    running = [Running(peer, directory) for peer in servers]
    runs: dict[tuple[str, int, int], list[Cell]] = {}
    try:
        # One untimed pass first: a server's first seconds of load are not
        # its steady state (the stdlib asyncio echo, for one, maps and
        # unmaps memory for every read until its allocator has adapted).
        for size, conns in cellSpecs:
            for server in running:
                measure(server, size, conns, min(args.seconds, 1.0), loadgen)
        for round in range(args.repeat):
            for size, conns in cellSpecs:
                for turn in range(len(running)):
                    server = running[(round + turn) % len(running)]
                    cell = measure(server, size, conns, args.seconds, loadgen)
                    runs.setdefault((server.peer.name, size, conns), []).append(cell)
                    print(
                        f"  round {round + 1}: {server.peer.name:12} {size:>6} B x {conns:>4}:"
                        f" {cell.rate:8.0f} msg/s {cell.perCPU:8.0f} msg/CPU-s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for server in running:
            server.stop()
    cells = [
        sorted(found, key=lambda c: c.perCPU)[len(found) // 2]
        for found in runs.values()
    ]

    memory: dict[str, float] = {}
    startup: dict[str, float] = {}
    for peer in servers:
        if args.idle:
            server = Running(peer, directory)
            try:
                memory[peer.name] = idleMemory(server, args.idle)
            finally:
                server.stop()
        startup[peer.name] = min(firstEcho(peer, directory) for _ in range(3))

    spread = workersComparison(args, directory, loadgen) if args.workers else None
    report(cells, runs, memory, startup, args)
    if spread is not None:
        reportWorkers(*spread)
    shutil.rmtree(directory, ignore_errors=True)


def workersComparison(
    args: argparse.Namespace, directory: str, loadgen: str | None
) -> tuple[dict[int, float], dict[int, int]]:
    """
    echotwist with --workers 1 and --workers 2, unpinned (workers would
    inherit a pinned supervisor's single core), 1 KiB messages on 100
    connections: messages/s, and how connections spread over the workers.
    """
    rates: dict[int, list[float]] = {1: [], 2: []}
    spread: dict[int, int] = {}
    for count in (1, 2):
        peer = echotwist(f"echotwist-w{count}", [], echotwistOptions(args))
        peer.argv = [a for a in peer.argv if a != "--no-connection-logs"]
        peer.argv += ["--workers", str(count)]
        server = Running(peer, directory, pinned=False)
        try:
            if count > 1:
                waitForWorkers(server, count)
            for _ in range(args.repeat):
                rates[count].append(
                    measure(server, 1024, 100, args.seconds, loadgen).rate
                )
            for line in server.output().decode("utf-8", "replace").splitlines():
                match = re.search(r" worker (\d+)\] .* connected$", line)
                if match:
                    worker = int(match.group(1))
                    spread[worker] = spread.get(worker, 0) + 1
        finally:
            server.stop()
    return {n: sorted(r)[len(r) // 2] for n, r in rates.items()}, spread


def waitForWorkers(server: Running, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.output().count(b" serving") >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"{server.peer.name}: workers did not start")


def reportWorkers(rates: dict[int, float], spread: dict[int, int]) -> None:
    print("\nworkers (1 KiB x 100 connections, not pinned, median msg/s):")
    for count, rate in rates.items():
        print(f"  --workers {count}: {rate:9.0f} msg/s")
    print(f"  2 workers / 1: {rates[2] / rates[1]:.2f}")
    total = sum(spread.values())
    shares = ", ".join(
        f"worker {n}: {c} ({100 * c / total:.0f}%)" for n, c in sorted(spread.items())
    )
    print(f"  connections per worker over the run: {shares}")


def report(
    cells: list[Cell],
    runs: dict[tuple[str, int, int], list[Cell]],
    memory: dict[str, float],
    startup: dict[str, float],
    args: argparse.Namespace,
) -> None:
    by = {(c.server, c.size, c.conns): c for c in cells}
    nan = float("nan")

    def ratio(
        a: tuple[str, int, int], b: tuple[str, int, int]
    ) -> tuple[float, float, float]:
        """
        a's msg/CPU-s over b's, taken round by round (the two were measured
        minutes apart at most, under the same drift): median, lowest, highest.
        """
        if a not in runs or b not in runs:
            return nan, nan, nan
        ratios = [x.perCPU / y.perCPU for x, y in zip(runs[a], runs[b], strict=True)]
        return statistics.median(ratios), min(ratios), max(ratios)

    print(
        f"\nclient: {args.client}; {args.seconds:g} s per cell, median of {args.repeat};"
        f" loopback; servers on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}\n"
    )
    print(
        f"{'server':12} {'size':>7} {'conns':>5} {'msg/s':>9} {'MB/s':>8}"
        f" {'p50 us':>8} {'p99 us':>9} {'msg/CPU-s':>10} {'usr us':>7}"
        f" {'sys us':>7} {'-r is x':>8}"
    )
    for c in cells:
        ours = "echotwist-r" if ("echotwist-r", c.size, c.conns) in by else "echotwist"
        print(
            f"{c.server:12} {c.size:>7} {c.conns:>5} {c.rate:9.0f}"
            f" {c.rate * c.size / 1e6:8.1f} {c.p50:8.0f} {c.p99:9.0f}"
            f" {c.perCPU:10.0f} {c.serverUser / c.messages * 1e6:7.2f}"
            f" {c.serverSystem / c.messages * 1e6:7.2f}"
            f" {ratio((ours, c.size, c.conns), (c.server, c.size, c.conns))[0]:8.2f}"
        )
    print(
        "(usr us, sys us: the server's user and kernel CPU per message, in"
        " microseconds; -r is x: echotwist-r's msg/CPU-s over the row's, the"
        " median of the rounds' ratios)"
    )
    if memory:
        print(
            f"\nmemory per idle connection ({args.idle} connections,"
            " idle timeout on for echotwist):"
        )
        for name, per in memory.items():
            print(f"  {name:10} {per:7.0f} bytes")
    print("\nstart to first echo (best of 3):")
    for name, seconds in startup.items():
        print(f"  {name:10} {seconds * 1000:7.0f} ms")

    print("\ntargets:")

    # (what, value, bound, spread): a positive bound is a floor, a negative
    # one a ceiling; the spread is the rounds' lowest and highest ratio.
    checks: list[tuple[str, float, float, str]] = []
    for ours in ("echotwist", "echotwist-r"):
        for size in (1024, 102400):
            for peer, floor in (("asyncio", 1.0), ("twisted", 1.6)):
                value, low, high = ratio((ours, size, 10), (peer, size, 10))
                checks.append(
                    (
                        f"{ours} vs {peer}, msg/CPU-s, {size} B x 10 >= {floor}",
                        value,
                        floor,
                        f" (rounds {low:.2f}-{high:.2f})",
                    )
                )
        for size in (64, 1024, 102400):
            if (ours, size, 1000) in by:
                value, low, high = ratio((ours, size, 10), (ours, size, 1000))
                checks.append(
                    (
                        f"{ours} cost per message, 1000 vs 10 conns, {size} B <= 1.15",
                        value,
                        -1.15,
                        f" (rounds {low:.2f}-{high:.2f})",
                    )
                )
        if ours in memory:
            checks.append(
                (f"{ours} bytes per idle connection <= 1536", memory[ours], -1536, "")
            )
        if ours in startup and "twisted" in startup:
            checks.append(
                (
                    f"{ours} start to first echo vs a plain Twisted .tac <= 1.1",
                    startup[ours] / startup["twisted"],
                    -1.1,
                    "",
                )
            )
    for text, value, bound, spread in checks:
        if math.isnan(value):
            continue  # a server this run left out
        ok = value >= bound if bound > 0 else value <= -bound
        print(f"  {'MET ' if ok else 'MISS'} {text}: {value:.2f}{spread}")
    print("  (echotwist-r is echotwist under twistd --reactor echotwist)")

    # What the flat-scaling target is up against: how every server's cost
    # per message grows, the C yardstick's being the kernel's own share.
    names = sorted({c.server for c in cells}, key=[c.server for c in cells].index)
    sizes = [s for s in (64, 1024, 102400) if any((n, s, 1000) in by for n in names)]
    if sizes:
        print("\ncost per message at 1000 connections / at 10 (1.00 is flat):")
        print(f"  {'server':12}" + "".join(f" {s:>8} B" for s in sizes))
        for name in names:
            row = "".join(
                f" {ratio((name, s, 10), (name, s, 1000))[0]:10.2f}" for s in sizes
            )
            print(f"  {name:12}{row}")

    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print(
                "(no plot: matplotlib is not installed; pip install 'echotwist[bench]')"
            )
            return
        labels, values = [], []
        for c in cells:
            if ("echotwist-r", c.size, c.conns) in by and c.server != "echotwist-r":
                labels.append(f"vs {c.server}\n{c.size}B x{c.conns}")
                values.append(
                    ratio(
                        ("echotwist-r", c.size, c.conns), (c.server, c.size, c.conns)
                    )[0]
                )
        fig, ax = plt.subplots(figsize=(max(6, len(values) * 0.6), 4))
        ax.bar(range(len(values)), values)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(values)), labels, rotation=90, fontsize=7)
        ax.set_ylabel("echotwist-r msg/CPU-s ÷ peer's")
        ax.set_title(
            "echotwist under --reactor echotwist against each peer (1.0 = equal)",
            fontsize=9,
        )
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"(plot written to {args.plot})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        port, conns, size = (int(a) for a in sys.argv[2:5])
        print(pythonClient(port, conns, size, float(sys.argv[5])))
    else:
        main()
