"""
echotwist's benchmark: echotwist against its peers, in one run, on loopback.

    python benchmarks/bench.py                 # the full tables, ~20 minutes
    python benchmarks/bench.py --quick         # 1 KiB and 100 KiB x 10, 64 B x 1
    python benchmarks/bench.py --client c      # the independent C load generator
    python benchmarks/bench.py --client c --as-typed   # twistd -n echo --port P
    python benchmarks/bench.py --start-only --as-typed --only echotwist,twisted
                                               # start and memory rows alone

echotwist runs as a user types it (twistd -n echo: echotwist's reactor), and
as echotwist-epoll under twistd --reactor epoll, Twisted's default reactor.
Peers: a plain Twisted echo (twisted.protocols.wire.Echo, default reactor),
the stdlib asyncio Protocol echo, and uvloop's when it is installed; and,
as yardsticks, python-floor, the least a Python loop can do (peers.py's
floor: epoll, os.read, os.write, no framework), and a C epoll echo
(cecho.c) when a C compiler is there.  Each server runs as its own
process; closed-loop clients (send a message, wait for all of it back,
check every byte, repeat) run for --seconds per cell.
The figure that matters on a shared two-core machine is messages per server
CPU-second (utime + stime from /proc), which does not depend on how fast the
client is; the table also splits it into user and kernel time per message.
Each server gets one untimed pass first; then the servers take turns, round
after round, and a ratio between two servers is the median of the rounds'
ratios, printed with their range.  The 64 B x 1 cell is the latency cell: one
connection's round trip, p50, against the C echo's.  Also measured: memory
per idle connection (5000 connections, idle timeout on), time from start to
first echo, and the resident memory of each server idle after that echo:
those two rows are the default install's (pip install echotwist, no
extras), from a venv the run builds with this checkout (--start-install).
With --as-typed, echotwist is exactly "twistd -n echo --port P" (all
interfaces, default limits, connection logs on), so only the cells its
default limits admit are run.

UDP and TLS have tables of their own, driven by C clients (cudp.c's load
mode, tlsload.c with OpenSSL): UDP at 64 B x 1, 1 KiB x 10 and 8 KiB x 10
flows (one datagram in flight per flow, matched by sequence number) against
echotwist at --udp-rate 0, a plain Twisted DatagramProtocol echo, asyncio's,
uvloop's, python-floor's recvfrom/sendto loop and a C one; TLS (an RSA-2048
certificate made in a temporary directory) at 1 KiB x 10 and in new
handshakes (4 clients, each connecting, echoing 64 B and closing, over and
over: a "message" is one such connection) against echotwist's ssl:
listener (no per-source handshake limits: the clients share one address),
a plain Twisted listenSSL echo, asyncio's ssl and uvloop's.  --transports
picks among tcp, udp and tls.  With --quick, UDP runs 1 KiB x 10 and 64 B
x 1.
Every load loop is bounded in time and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

HERE = os.path.dirname(os.path.abspath(__file__))
#: The checkout the benchmark is part of: what the default install installs.
CHECKOUT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
LOOPBACK = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")
# Server and client each get a core of their own (when there are two), so
# neither is measured while waiting for the other's time slice.
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU, CLIENT_CPU = CPUS[0], CPUS[-1]
#: The latency cell: one connection, 64 B messages; its figure is the p50
#: round trip.
LATENCY = (64, 1)
#: Starts per server; the quickest counts (start-up is a few hundred
#: milliseconds, and a shared machine's noise is tens).
STARTS = 5
#: How often a start's log is read for its port: a millisecond, where the
#: load cells' servers are read every 10 ms (a start of ~150 ms measured to
#: the next 10 ms is up to 7% off, more than the target's margin).
START_POLL = 0.001
#: Seconds for building the default install's venv, pip's download included.
INSTALL_TIMEOUT = 300
#: Seconds a started server has to echo its first message.
FIRST_ECHO_TIMEOUT = 30.0


def pin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


# --- servers -----------------------------------------------------------------


@dataclass
class Peer:
    name: str
    argv: list[str]
    portPattern: str
    #: Variables added to the server's environment.
    env: dict[str, str] | None = None
    #: Whether it runs without this process's module paths (see
    #: L{ownEnvironment}): a server of the default install.
    isolated: bool = False


#: Variables that put modules on an interpreter's path from outside it.
FOREIGN_PATHS = ("PYTHONPATH", "PYTHONHOME")


def ownEnvironment() -> dict[str, str]:
    """
    This process's environment less L{FOREIGN_PATHS}: for the default
    install (L{defaultInstall}), built and run as on a machine with nothing
    else.  With this install's paths in PYTHONPATH (trial's C{-j} workers
    run with their C{sys.path} there), pip took Twisted for installed
    already, the default install had no C{twistd}, and its servers would
    have imported this install's modules.
    """
    return {k: v for k, v in os.environ.items() if k not in FOREIGN_PATHS}


def echotwist(
    name: str, reactor: list[str], options: list[str], asTyped: bool = False
) -> Peer:
    """
    echotwist under twistd, with C{reactor}'s options before the plugin's
    name and C{options} (the benchmark's own --socket-buffer) after; as
    typed, exactly C{twistd -n echo --port P} and those options.
    """
    if asTyped:
        # The command exactly as README.rst types it, on a free port.
        return Peer(
            name,
            [
                os.path.join(BIN, "twistd"),
                "-n",
                *reactor,
                "echo",
                "--port",
                str(freePort()),
                *options,
            ],
            r"Listening on \S+:(\d+)",
        )
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


def freePort() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


#: The command as typed, and the same on Twisted's default reactor.
OURS, OURS_EPOLL = "echotwist", "echotwist-epoll"


def peers(directory: str, options: list[str], asTyped: bool = False) -> list[Peer]:
    twistd = os.path.join(BIN, "twistd")
    found = [
        echotwist(OURS, [], options, asTyped),
        echotwist(OURS_EPOLL, ["--reactor", "epoll"], options, asTyped),
        Peer(
            "twisted",
            [twistd, "-n", "--pidfile=", "-y", os.path.join(HERE, "plain.tac")],
            r"starting on (\d+)",
        ),
        *pythonPeers([]),
        floor([]),
    ]
    # The yardstick, not a peer to beat: a C epoll echo (benchmarks/cecho.c).
    cecho = buildC("cecho", directory)
    if cecho is not None:
        found.append(Peer("c-epoll", [cecho], r"PORT (\d+)"))
    return found


#: The transports the benchmark knows, and the cells of UDP and TLS.
TCP, UDP, TLS = "tcp", "udp", "tls"
UDP_CELLS = [(64, 1), (1024, 10), (8192, 10)]
#: TLS: 1 KiB messages on 10 connections, and new handshakes: 4 clients,
#: each connecting, echoing 64 B and closing, over and over (size 0 in the
#: tables stands for that cell).
HANDSHAKES = (0, 4)
TLS_CELLS = [(1024, 10), HANDSHAKES]
#: The UDP yardstick's name: cudp.c's recvfrom/sendto echo.
C_UDP = "c-udp"
#: The pure-Python floor's name: peers.py's floor, for TCP and UDP.
FLOOR = "python-floor"


def udpPeers(directory: str) -> list[Peer]:
    """
    UDP echo servers on 127.0.0.1: echotwist with no per-source rate (the
    load comes from one address), a plain Twisted C{DatagramProtocol}
    echo, asyncio's and uvloop's, and Python's and C's bare
    C{recvfrom}/C{sendto} loops.
    """
    twistd = os.path.join(BIN, "twistd")
    found = [
        Peer(
            OURS,
            [
                twistd,
                "-n",
                "--pidfile=",
                "echo",
                "--udp",
                f"udp:0:interface={LOOPBACK}",
                "--udp-rate",
                "0",
                "--no-connection-logs",
            ],
            r"Listening on \S+:(\d+)",
        ),
        Peer(
            "twisted",
            [twistd, "-n", "--pidfile=", "-y", os.path.join(HERE, "plain.tac")],
            r"starting on (\d+)",
            {"PLAIN_ECHO_UDP": "1"},
        ),
        *pythonPeers(["udp"]),
        floor(["udp"]),
    ]
    cudp = buildC("cudp", directory)
    if cudp is not None:
        found.append(Peer(C_UDP, [cudp, "echo"], r"PORT (\d+)"))
    return found


def tlsPeers(certificate: str, key: str) -> list[Peer]:
    """
    TLS echo servers on 127.0.0.1, all with the same certificate:
    echotwist's C{ssl:} listener, a plain Twisted echo on C{listenSSL} (the
    C{ssl:} endpoint), and the asyncio Protocol echo on asyncio's and
    uvloop's C{ssl}.
    """
    description = f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={certificate}"
    twistd = os.path.join(BIN, "twistd")
    # The TCP benchmark's echotwist (no connection limits, no connection
    # logs), its --port an ssl: description, and no per-source handshake
    # limits: every client is 127.0.0.1.
    ours = echotwist(
        OURS,
        [],
        ["--tls-handshake-rate", "0", "--tls-handshakes-per-source", "0"],
    )
    ours.argv[ours.argv.index(f"tcp:0:interface={LOOPBACK}")] = description
    return [
        ours,
        Peer(
            "twisted",
            [twistd, "-n", "--pidfile=", "-y", os.path.join(HERE, "plain.tac")],
            r"starting on (\d+)",
            {"PLAIN_ECHO_PORT": description},
        ),
        *pythonPeers(["tls", certificate, key]),
    ]


def pythonPeers(arguments: list[str]) -> list[Peer]:
    """
    The asyncio echo of peers.py with C{arguments}, and uvloop's when it is
    installed.
    """
    loops = ["asyncio"]
    try:
        import uvloop  # noqa: F401

        loops.append("uvloop")
    except ImportError:
        pass
    return [
        Peer(
            loop,
            [sys.executable, os.path.join(HERE, "peers.py"), loop, *arguments],
            r"PORT (\d+)",
        )
        for loop in loops
    ]


def floor(arguments: list[str]) -> Peer:
    """
    The pure-Python floor of peers.py with C{arguments}: what any Python
    echo loop costs (epoll, a read, a write, no framework), beside which
    the peers' and echotwist's figures can be read.
    """
    return Peer(
        FLOOR,
        [sys.executable, os.path.join(HERE, "peers.py"), "floor", *arguments],
        r"PORT (\d+)",
    )


def makeCertificate(directory: str) -> tuple[str, str] | None:
    """
    A self-signed RSA-2048 certificate and its key, made with the openssl
    command in C{directory}: (certificate, key), or None without openssl.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    certificate = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            certificate,
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return certificate, key


def environmentOf(peer: Peer) -> dict[str, str] | None:
    """
    The environment C{peer}'s server runs in: this process's, less
    L{FOREIGN_PATHS} if it is isolated, with its own variables added.
    """
    if peer.isolated:
        return {**ownEnvironment(), **(peer.env or {})}
    return {**os.environ, **peer.env} if peer.env else None


class Running:
    def __init__(
        self, peer: Peer, directory: str, pinned: bool = True, poll: float = 0.01
    ) -> None:
        self.peer = peer
        self.poll = poll
        path = os.path.join(directory, f"{peer.name}.log")
        # A directory each: twistd without --pidfile= writes twistd.pid there.
        cwd = os.path.join(directory, peer.name)
        os.makedirs(cwd, exist_ok=True)
        # The server writes through a description of its own, appending:
        # reading through a shared one would move where the server writes
        # next, and a read between two writes (print() makes one per word
        # under PYTHONUNBUFFERED) would have the next land over the first.
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.started = time.monotonic()
        try:
            self.process = subprocess.Popen(
                peer.argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: pin(SERVER_CPU)) if pinned else None,
                env=environmentOf(peer),
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
            time.sleep(self.poll)
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


def buildC(name: str, directory: str, libraries: tuple[str, ...] = ()) -> str | None:
    """
    Compile benchmarks/NAME.c into DIRECTORY, linked with C{libraries}
    (C{-lNAME}); None without a C compiler, or when it fails with
    libraries (their headers not installed: libssl-dev for OpenSSL).
    """
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    binary = os.path.join(directory, name)
    if os.path.exists(binary):
        return binary
    result = subprocess.run(
        [
            compiler,
            "-O2",
            "-o",
            binary,
            os.path.join(HERE, f"{name}.c"),
            *(f"-l{library}" for library in libraries),
        ],
        capture_output=bool(libraries),
        text=True,
    )
    if result.returncode:
        if libraries:
            print(f"(cannot build {name}.c: {result.stderr.strip()})", file=sys.stderr)
            return None
        raise SystemExit(f"cannot build {name}.c")
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
    #: UDP: datagrams not back within a second (sent again; not counted).
    lost: int = 0

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
    server: Running,
    size: int,
    conns: int,
    seconds: float,
    loadgen: str | None,
    transport: str = TCP,
) -> Cell:
    """
    One cell against C{server}: for TCP with C{loadgen} (or the Python
    client when None); for UDP and TLS C{loadgen} is cudp or tlsload.
    """
    if transport == UDP and loadgen is not None:
        argv = [loadgen, "load", str(server.port), str(conns), str(size), str(seconds)]
    elif transport == TLS and loadgen is not None:
        argv = (
            [loadgen, "handshakes", str(server.port), str(conns), str(seconds)]
            if (size, conns) == HANDSHAKES
            else [
                loadgen,
                "echo",
                str(server.port),
                str(conns),
                str(size),
                str(seconds),
            ]
        )
    elif loadgen is not None:
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
        int(fields.get("lost", 0)),
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


def firstEcho(peer: Peer, directory: str) -> tuple[float, int]:
    """
    Seconds from starting the server to its first echo; and its resident
    memory, idle, once that echo is back.
    """
    started = time.monotonic()
    server = Running(peer, directory, poll=START_POLL)
    try:
        echoed = b""
        try:
            with socket.create_connection(
                (LOOPBACK, server.port), timeout=FIRST_ECHO_TIMEOUT
            ) as sock:
                sock.sendall(b"first")
                while len(echoed) < len(b"first"):
                    more = sock.recv(10)
                    if not more:
                        break
                    echoed += more
                took = time.monotonic() - started
        except OSError as e:
            raise SystemExit(
                f"{peer.name} did not echo its first message: {e}"
            ) from None
        if echoed != b"first":
            raise SystemExit(
                f"{peer.name} did not echo its first message: it closed the"
                f" connection after {echoed!r}"
            )
        return took, server.rss()
    finally:
        server.stop()


def tlsInstalled(binDirectory: str | None = None) -> bool:
    """
    Whether pyOpenSSL is installed here, or in the install whose C{bin}
    directory is C{binDirectory} (echotwist's tls extra): with it, Twisted's
    TCP module loads OpenSSL into every server.
    """
    if binDirectory is not None:
        found = subprocess.run(
            [
                os.path.join(binDirectory, "python"),
                "-c",
                "import importlib.util, sys;"
                " sys.exit(importlib.util.find_spec('OpenSSL') is None)",
            ],
            capture_output=True,
            timeout=60,
            # As its servers run (see fromInstall).
            env=ownEnvironment(),
        )
        return found.returncode == 0
    import importlib.util

    return importlib.util.find_spec("OpenSSL") is not None


def defaultInstall(directory: str) -> str | None:
    """
    Build, in C{directory}, a venv with this checkout installed as C{pip
    install echotwist} installs it: no extras, so no pyOpenSSL (which
    Twisted's TCP module would load into every server, echotwist's and the
    plain C{.tac}'s alike).  pip fetches Twisted and its dependencies
    (from PyPI, or wherever pip is configured to look), caching them in
    C{directory}; the whole build is bounded by L{INSTALL_TIMEOUT}.

    @return: the venv's C{bin} directory; or None, when it cannot be built,
        having printed one line saying why.
    """
    # pip builds from a copy: a build in the checkout itself would leave
    # build/ and *.egg-info there.
    source = os.path.join(directory, "default-install-source")
    venv = os.path.join(directory, "default-install")
    # pip's own temporary directories (the build's isolated environment,
    # unpacked downloads) go under the run's directory too: pip removes
    # them when it ends, but not when the deadline kills it.
    temporary = os.path.join(directory, "default-install-tmp")
    environ = {**ownEnvironment(), "TMPDIR": temporary}
    python = os.path.join(venv, "bin", "python")
    steps = [
        ("python -m venv", [sys.executable, "-m", "venv", venv]),
        (
            "pip install",
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--cache-dir",
                os.path.join(directory, "pip-cache"),
                source,
            ],
        ),
        # Twisted's plugin cache, written once after the install as
        # docs/deployment.rst says to (otherwise the first start writes
        # it, and takes longer than the others).
        (
            "the plugin cache",
            [
                python,
                "-c",
                "from twisted.plugin import IPlugin, getPlugins;"
                " list(getPlugins(IPlugin))",
            ],
        ),
    ]
    deadline = time.monotonic() + INSTALL_TIMEOUT
    why = ""
    try:
        # In the steps' error handling: a checkout that cannot be copied
        # (a disk full, an unreadable file) is one line, as a failed step.
        # Not trial's working directory of a test run in the checkout,
        # nor its lock, a symbolic link to nothing (copied as a link).
        shutil.copytree(
            CHECKOUT,
            source,
            symlinks=True,
            ignore=shutil.ignore_patterns(
                ".*",
                "build",
                "dist",
                "*.egg-info",
                "__pycache__",
                "dropin.cache",
                "*.whl",
                "_trial_temp*",
            ),
        )
        os.makedirs(temporary, exist_ok=True)
    except OSError as e:
        why = f"copying the checkout: {e}"
    for step, argv in [] if why else steps:
        try:
            subprocess.run(
                argv,
                check=True,
                capture_output=True,
                text=True,
                env=environ,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        except subprocess.CalledProcessError as e:
            # pip's own "ERROR: ..." line says why; its last line is a
            # general note.
            lines = [line.strip() for line in (e.stderr or e.stdout or "").splitlines()]
            errors = [line for line in lines if line.startswith("ERROR:")]
            last = (errors or [line for line in lines if line] or [""])[-1]
            why = f"{step}: {last or f'exit status {e.returncode}'}"
            break
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"{step}: {e}"
            break
    if not why:
        return os.path.join(venv, "bin")
    print(
        f"default install not built ({why}); the start and resident rows are"
        f" this install's ({sys.prefix})"
    )
    return None


def isTwistd(peer: Peer) -> bool:
    """
    Whether C{peer} is started by this install's twistd (echotwist, the
    plain C{.tac}).
    """
    return peer.argv[0] == os.path.join(BIN, "twistd")


def fromInstall(peer: Peer, binDirectory: str) -> Peer:
    """
    C{peer} started by the twistd in C{binDirectory} if it is a twistd
    server (see L{isTwistd}); the others as they are.
    """
    if not isTwistd(peer):
        return peer
    return dataclasses.replace(
        peer,
        argv=[os.path.join(binDirectory, "twistd"), *peer.argv[1:]],
        isolated=True,
    )


# --- the run -----------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=["python", "c"], default="python")
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 KiB and 100 KiB at 10 connections, and the 64 B x 1 latency cell",
    )
    parser.add_argument(
        "--as-typed",
        dest="asTyped",
        action="store_true",
        help="run echotwist exactly as 'twistd -n echo --port P' (default limits,"
        " connection logs, all interfaces); only cells of at most 100 connections",
    )
    parser.add_argument(
        "--idle", type=int, default=5000, help="connections for idle memory; 0 to skip"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per cell; the median counts"
    )
    parser.add_argument("--only", help="comma-separated servers to run")
    parser.add_argument(
        "--transports",
        default="tcp,udp,tls",
        help="comma-separated, of tcp, udp and tls (UDP and TLS are driven by"
        " C clients whatever --client says; --cells is for TCP)",
    )
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
        "--plot",
        help="write a PNG here: msg per server CPU-second per server, grouped by"
        " cell, and the latency cell (needs matplotlib)",
    )
    parser.add_argument(
        "--start-install",
        dest="startInstall",
        choices=["default", "this"],
        default="default",
        help="where the start-to-first-echo and resident-memory rows' twistd"
        " servers come from: default, a venv this run builds in its temporary"
        " directory with the checkout installed without extras, as 'pip install"
        " echotwist' installs it (pip fetches Twisted; if that fails the run"
        " says so and uses this install); or this, the benchmark's own install"
        " (with whatever extras it has)",
    )
    parser.add_argument(
        "--start-only",
        dest="startOnly",
        action="store_true",
        help="measure only start to first echo and resident memory (best of"
        " --starts starts) of every server, or those --only names: no cells, no"
        " idle connections, no workers, no UDP or TLS",
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=STARTS,
        help="starts per server for start to first echo, taking turns; the"
        f" quickest counts (default {STARTS})",
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
    # Removed however the run ends: a usage error, a server that does not
    # start, an interrupt (the default install's venv is tens of MiB).
    try:
        run(parser, args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(
    parser: argparse.ArgumentParser, args: argparse.Namespace, directory: str
) -> None:
    """
    The run L{main} parsed C{args} for, in the temporary C{directory}.
    """
    transports = args.transports.split(",")
    unknown = set(transports) - {TCP, UDP, TLS}
    if unknown:
        parser.error(f"--transports: unknown {', '.join(sorted(unknown))}")
    if args.startOnly:
        args.idle, args.workers = 0, False
        transports = [TCP]
    loadgen = (
        buildLoadgen(directory)
        if args.client == "c" and TCP in transports and not args.startOnly
        else None
    )
    servers = peers(directory, echotwistOptions(args), args.asTyped)
    if args.only:
        servers = [p for p in servers if p.name in args.only.split(",")]
    if TCP not in transports:
        servers = []
    cellSpecs = (
        [(1024, 10), (102400, 10), LATENCY]
        if args.quick
        else [(s, c) for s in (64, 1024, 102400) for c in (10, 100, 1000)] + [LATENCY]
    )
    if args.cells:
        cellSpecs = [
            (int(size), int(conns))
            for size, conns in (cell.split("x") for cell in args.cells.split(","))
        ]
    if args.asTyped:
        # As typed, --max-per-source is 100 and every client is 127.0.0.1.
        cellSpecs = [(size, conns) for size, conns in cellSpecs if conns <= 100]
    if args.startOnly:
        cellSpecs = []

    runs = takeTurns(servers, cellSpecs, args, directory, loadgen, TCP)
    cells = medians(runs)
    others = otherTransports(transports, args, directory)

    memory: dict[str, float] = {}
    startup: dict[str, float] = {}
    resident: dict[str, int] = {}
    for peer in servers:
        if args.idle and not args.asTyped:
            server = Running(peer, directory)
            try:
                memory[peer.name] = idleMemory(server, args.idle)
            finally:
                server.stop()
    # The start and resident rows are the default install's (no extras):
    # twistd servers run from a venv with just that, whatever this one has.
    install = (
        defaultInstall(directory)
        if args.startInstall == "default" and any(isTwistd(p) for p in servers)
        else None
    )
    starting = [fromInstall(p, install) if install else p for p in servers]
    # Taking turns, so that a burst of load elsewhere on the machine
    # does not fall on one server's three starts.
    for _ in range(args.starts):
        for peer in starting:
            took, rss = firstEcho(peer, directory)
            startup[peer.name] = min(took, startup.get(peer.name, took))
            resident.setdefault(peer.name, rss)

    spread = (
        workersComparison(args, directory, loadgen)
        if args.workers and not args.asTyped and TCP in transports
        else None
    )
    report(cells, runs, memory, startup, args, resident, others, install)
    if spread is not None:
        reportWorkers(*spread)


def takeTurns(
    servers: list[Peer],
    cellSpecs: list[tuple[int, int]],
    args: argparse.Namespace,
    directory: str,
    loadgen: str | None,
    transport: str,
) -> dict[tuple[str, int, int], list[Cell]]:
    """
    Every cell against every server, C{args.repeat} rounds: each round's
    cells, by (server, size, connections).
    """
    # Every server runs throughout, idle but for its turn; the servers take
    # turns cell by cell, round after round (each round starting one server
    # further on), so that drift in the machine's speed falls on all of them
    # alike; the median of the rounds counts.
    running: list[Running] = []
    runs: dict[tuple[str, int, int], list[Cell]] = {}
    try:
        for peer in servers:
            running.append(Running(peer, directory))
        # One untimed pass first: a server's first seconds of load are not
        # its steady state (the stdlib asyncio echo, for one, maps and
        # unmaps memory for every read until its allocator has adapted).
        for size, conns in cellSpecs:
            for server in running:
                measure(server, size, conns, min(args.seconds, 1.0), loadgen, transport)
        for round in range(args.repeat):
            for size, conns in cellSpecs:
                for turn in range(len(running)):
                    server = running[(round + turn) % len(running)]
                    cell = measure(
                        server, size, conns, args.seconds, loadgen, transport
                    )
                    runs.setdefault((server.peer.name, size, conns), []).append(cell)
                    print(
                        f"  round {round + 1}: {transport} {server.peer.name:12}"
                        f" {size:>6} B x {conns:>4}:"
                        f" {cell.rate:8.0f} msg/s {cell.perCPU:8.0f} msg/CPU-s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for server in running:
            server.stop()
    return runs


def medians(runs: dict[tuple[str, int, int], list[Cell]]) -> list[Cell]:
    """
    Each (server, cell)'s median round, by messages per server CPU-second.
    """
    return [
        sorted(found, key=lambda c: c.perCPU)[len(found) // 2]
        for found in runs.values()
    ]


def otherTransports(
    transports: list[str], args: argparse.Namespace, directory: str
) -> dict[str, dict[tuple[str, int, int], list[Cell]]]:
    """
    The UDP and TLS cells C{transports} asks for, each with its C client;
    a transport whose client cannot be built here is left out, saying so.
    """
    only = args.only.split(",") if args.only else None
    found: dict[str, dict[tuple[str, int, int], list[Cell]]] = {}
    if UDP in transports:
        client = buildC("cudp", directory)
        if client is None:
            print("(no UDP cells: they need a C compiler)", file=sys.stderr)
        else:
            servers = [p for p in udpPeers(directory) if not only or p.name in only]
            cells = [(1024, 10), (64, 1)] if args.quick else UDP_CELLS
            found[UDP] = takeTurns(servers, cells, args, directory, client, UDP)
    if TLS in transports:
        client = buildC("tlsload", directory, ("ssl", "crypto", "pthread"))
        files = makeCertificate(directory)
        if client is None or files is None:
            print(
                "(no TLS cells: they need a C compiler, OpenSSL's headers"
                " (libssl-dev) and the openssl command)",
                file=sys.stderr,
            )
        else:
            servers = [p for p in tlsPeers(*files) if not only or p.name in only]
            found[TLS] = takeTurns(servers, TLS_CELLS, args, directory, client, TLS)
    return found


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
        peer = echotwist(f"{OURS}-w{count}", [], echotwistOptions(args))
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


def pairedRatios(
    runs: dict[tuple[str, int, int], list[Cell]],
    a: tuple[str, int, int],
    b: tuple[str, int, int],
    figure: str = "perCPU",
) -> list[float]:
    """
    a's figure over b's, round by round (the two were measured minutes
    apart at most, under the same drift).
    """
    if a not in runs or b not in runs:
        return []
    return [
        getattr(x, figure) / getattr(y, figure)
        for x, y in zip(runs[a], runs[b], strict=True)
    ]


def summary(ratios: list[float]) -> tuple[float, float, float]:
    """
    The median of the rounds' ratios, the lowest, the highest.
    """
    if not ratios:
        return math.nan, math.nan, math.nan
    return statistics.median(ratios), min(ratios), max(ratios)


#: Figures shown beside a target, not judged: (what, (median, lowest,
#: highest)) of the rounds' ratios.
Beside = Sequence[tuple[str, tuple[float, float, float]]]


class Check(Protocol):
    """
    What records a target: its text, the rounds' ratio (median, lowest,
    highest), its bound (a floor when positive, a ceiling when negative),
    and figures to show beside it.
    """

    def __call__(
        self,
        text: str,
        found: tuple[float, float, float],
        bound: float,
        beside: Beside = (),
    ) -> None: ...


def spread(low: float, high: float) -> str:
    """
    The rounds' range, as a target line ends.
    """
    return f" (rounds {low:.2f}-{high:.2f})"


def besideFloor(
    runs: dict[tuple[str, int, int], list[Cell]],
    peer: str,
    size: int,
    conns: int,
    figure: str = "msg/CPU-s",
) -> Beside:
    """
    The pure-Python floor beside a target against C{peer} in one cell: the
    floor's ratio to that peer, and echotwist's to the floor, each the
    median of the same rounds' ratios.  (What a Python loop can do at all
    on this machine: a target beyond the floor's own ratio is beyond any
    Python loop here.)
    """
    cell = f"{size} B x {conns}"
    return [
        (
            f"{FLOOR} vs {peer}, {figure}, {cell}",
            summary(pairedRatios(runs, (FLOOR, size, conns), (peer, size, conns))),
        ),
        (
            f"{OURS} vs {FLOOR}, {figure}, {cell}",
            summary(pairedRatios(runs, (OURS, size, conns), (FLOOR, size, conns))),
        ),
    ]


def reportTransport(
    transport: str,
    runs: dict[tuple[str, int, int], list[Cell]],
    check: Check,
) -> None:
    """
    The UDP or TLS table, and C{check} called with each target of issue 25
    for it.
    """

    def ratio(
        a: tuple[str, int, int], b: tuple[str, int, int], figure: str = "perCPU"
    ) -> tuple[float, float, float]:
        return summary(pairedRatios(runs, a, b, figure))

    cells = medians(runs)
    print(f"\n{transport.upper()}:")
    print(
        f"{'server':15} {'size':>7} {'conns':>5} {'msg/s':>9} {'MB/s':>8}"
        f" {'p50 us':>8} {'p99 us':>9} {'msg/CPU-s':>10} {'usr us':>7}"
        f" {'sys us':>7} {'ours is x':>9}"
        + (f" {'lost':>5}" if transport == UDP else "")
    )
    for c in cells:
        latency = transport == UDP and (c.size, c.conns) == LATENCY
        mine = ratio(
            (OURS, c.size, c.conns),
            (c.server, c.size, c.conns),
            "p50" if latency else "perCPU",
        )
        size = (
            "connect"
            if transport == TLS and (c.size, c.conns) == HANDSHAKES
            else c.size
        )
        print(
            f"{c.server:15} {size:>7} {c.conns:>5} {c.rate:9.0f}"
            f" {c.rate * c.size / 1e6:8.1f} {c.p50:8.0f} {c.p99:9.0f}"
            f" {c.perCPU:10.0f} {c.serverUser / c.messages * 1e6:7.2f}"
            f" {c.serverSystem / c.messages * 1e6:7.2f}"
            f" {mine[0]:9.2f}" + (f" {c.lost:>5}" if transport == UDP else "")
        )
    if transport == UDP:
        print(
            f"(closed loop, one datagram in flight per flow; {OURS} at --udp-rate 0;"
            f" in the {LATENCY[0]} B x {LATENCY[1]} cell ours is x compares p50"
            " round trips; lost: not back within a second, sent again)"
        )
        check(
            f"{OURS} vs twisted, UDP msg/CPU-s, 1024 B x 10 >= 1.2",
            ratio((OURS, 1024, 10), ("twisted", 1024, 10)),
            1.2,
            besideFloor(runs, "twisted", 1024, 10, "UDP msg/CPU-s"),
        )
        for size, conns in ((1024, 10), LATENCY):
            check(
                f"{OURS} vs uvloop, UDP msg/CPU-s, {size} B x {conns} >= 1.0 (moonshot)",
                ratio((OURS, size, conns), ("uvloop", size, conns)),
                1.0,
                besideFloor(runs, "uvloop", size, conns, "UDP msg/CPU-s"),
            )
        check(
            f"{OURS} vs {C_UDP}, UDP p50 round trip, {LATENCY[0]} B x {LATENCY[1]}"
            " <= 1.3 (moonshot)",
            ratio((OURS, *LATENCY), (C_UDP, *LATENCY), "p50"),
            -1.3,
        )
    else:
        print(
            "(size connect: new handshakes, 4 clients each connecting, echoing 64 B"
            " and closing; a message is one such connection)"
        )
        check(
            f"{OURS} vs asyncio, TLS msg/CPU-s, 1024 B x 10 >= 1.0",
            ratio((OURS, 1024, 10), ("asyncio", 1024, 10)),
            1.0,
        )
        check(
            f"{OURS} vs uvloop, TLS msg/CPU-s, 1024 B x 10 >= 1.0 (moonshot)",
            ratio((OURS, 1024, 10), ("uvloop", 1024, 10)),
            1.0,
        )
        check(
            f"{OURS} vs uvloop, TLS handshakes/CPU-s >= 1.0 (moonshot)",
            ratio((OURS, *HANDSHAKES), ("uvloop", *HANDSHAKES)),
            1.0,
        )


def report(
    cells: list[Cell],
    runs: dict[tuple[str, int, int], list[Cell]],
    memory: dict[str, float],
    startup: dict[str, float],
    args: argparse.Namespace,
    resident: dict[str, int] | None = None,
    others: dict[str, dict[tuple[str, int, int], list[Cell]]] | None = None,
    install: str | None = None,
) -> None:
    """
    Print the tables and the targets.

    @param install: the C{bin} directory of the default install the start
        and resident rows' twistd servers ran from (L{defaultInstall}); None
        when they ran from this one.
    """
    by = {(c.server, c.size, c.conns): c for c in cells}
    resident = resident or {}

    def paired(
        a: tuple[str, int, int], b: tuple[str, int, int], figure: str = "perCPU"
    ) -> list[float]:
        return pairedRatios(runs, a, b, figure)

    def ratio(
        a: tuple[str, int, int], b: tuple[str, int, int], figure: str = "perCPU"
    ) -> tuple[float, float, float]:
        return summary(paired(a, b, figure))

    def growth(name: str, size: int) -> list[float]:
        """
        How much a message costs at 1000 connections over at 10, by round.
        """
        return paired((name, size, 10), (name, size, 1000))

    def fastestGrowth(name: str, size: int) -> float:
        """
        The same growth from each of the two cells' fastest round.
        """
        fastest = [
            max(c.perCPU for c in runs[name, size, conns]) for conns in (10, 1000)
        ]
        return fastest[0] / fastest[1]

    tls = tlsInstalled(install)
    if cells:
        typed = " as typed (twistd -n echo --port P)" if args.asTyped else ""
        print(
            f"\nclient: {args.client}; {args.seconds:g} s per cell, median of {args.repeat};"
            f" loopback; servers on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU};"
            f" {OURS}{typed} on echotwist's reactor, {OURS_EPOLL} on"
            " twistd --reactor epoll\n"
        )
        print(
            f"{'server':15} {'size':>7} {'conns':>5} {'msg/s':>9} {'MB/s':>8}"
            f" {'p50 us':>8} {'p99 us':>9} {'msg/CPU-s':>10} {'usr us':>7}"
            f" {'sys us':>7} {'ours is x':>9}"
        )
        for c in cells:
            if (c.size, c.conns) == LATENCY:
                # The latency cell: ours is x compares round trips (lower is
                # better), not throughput.
                mine = ratio(
                    (OURS, c.size, c.conns), (c.server, c.size, c.conns), "p50"
                )
            else:
                mine = ratio((OURS, c.size, c.conns), (c.server, c.size, c.conns))
            print(
                f"{c.server:15} {c.size:>7} {c.conns:>5} {c.rate:9.0f}"
                f" {c.rate * c.size / 1e6:8.1f} {c.p50:8.0f} {c.p99:9.0f}"
                f" {c.perCPU:10.0f} {c.serverUser / c.messages * 1e6:7.2f}"
                f" {c.serverSystem / c.messages * 1e6:7.2f}"
                f" {mine[0]:9.2f}"
            )
        print(
            "(usr us, sys us: the server's user and kernel CPU per message, in"
            f" microseconds; ours is x: {OURS}'s msg/CPU-s over the row's, the"
            f" median of the rounds' ratios; in the {LATENCY[0]} B x {LATENCY[1]}"
            f" latency cell, {OURS}'s p50 round trip over the row's)"
        )
        if memory:
            print(
                f"\nmemory per idle connection ({args.idle} connections,"
                " idle timeout on for echotwist):"
            )
            for name, per in memory.items():
                print(f"  {name:15} {per:7.0f} bytes")
    if startup:
        print(
            f"\nstart to first echo (best of {args.starts}),"
            " and resident memory idle after it:"
        )
        for name, seconds in startup.items():
            rss = resident.get(name)
            shown = f" {rss / 2**20:7.1f} MiB" if rss else ""
            print(f"  {name:15} {seconds * 1000:7.0f} ms{shown}")
        if install is not None:
            print(
                "  (twistd servers from the default install: this checkout"
                " installed without extras in a venv of this run"
                f" ({os.path.dirname(install)}), as pip install echotwist;"
                f" {'OpenSSL installed there all the same' if tls else 'no OpenSSL'})"
            )
        else:
            print(
                "  (twistd servers from this install, not a default one: the TLS"
                " extra installed here, so Twisted loads OpenSSL into every Twisted"
                " server; the default install leaves it out)"
                if tls
                else "  (twistd servers from this install, not a default one; no TLS"
                " extra here, as in the default install: no OpenSSL in the servers)"
            )

    # (what, value, bound, spread, beside): a positive bound is a floor, a
    # negative one a ceiling; the spread is the rounds' lowest and highest
    # ratio; beside, figures shown under the target, not judged.
    checks: list[tuple[str, float, float, str, Beside]] = []

    def check(
        text: str,
        found: tuple[float, float, float],
        bound: float,
        beside: Beside = (),
    ) -> None:
        value, low, high = found
        checks.append((text, value, bound, spread(low, high), beside))

    for size in (1024, 102400):
        check(
            f"{OURS} vs asyncio, msg/CPU-s, {size} B x 10 >= 1.0",
            ratio((OURS, size, 10), ("asyncio", size, 10)),
            1.0,
        )
    check(
        f"{OURS} vs uvloop, msg/CPU-s, 1024 B x 10 >= 1.0 (moonshot)",
        ratio((OURS, 1024, 10), ("uvloop", 1024, 10)),
        1.0,
        besideFloor(runs, "uvloop", 1024, 10),
    )
    for size, conns in ((64, 1), (1024, 1000)):
        check(
            f"{OURS} vs uvloop, msg/CPU-s, {size} B x {conns} >= 1.0",
            ratio((OURS, size, conns), ("uvloop", size, conns)),
            1.0,
            besideFloor(runs, "uvloop", size, conns),
        )
    check(
        f"{OURS} vs c-epoll, msg/CPU-s, 1024 B x 10 >= 0.85 (moonshot)",
        ratio((OURS, 1024, 10), ("c-epoll", 1024, 10)),
        0.85,
    )
    check(
        f"{OURS} vs c-epoll, p50 round trip, {LATENCY[0]} B x {LATENCY[1]} <= 1.15",
        ratio((OURS, *LATENCY), ("c-epoll", *LATENCY), "p50"),
        -1.15,
    )
    for size in (64, 1024, 102400):
        ours, theirs = growth(OURS, size), growth("c-epoll", size)
        floors = growth(FLOOR, size)
        if ours and theirs:
            beside: list[tuple[str, tuple[float, float, float]]] = []
            if floors:
                beside.append(
                    (
                        f"{FLOOR} cost growth 10 -> 1000 conns vs c-epoll's, {size} B",
                        summary([a / b for a, b in zip(floors, theirs, strict=True)]),
                    )
                )
            # On this project's VM the kernel's copy of a sent message into
            # socket memory runs at half speed for seconds at a time, which
            # halves a copying server's big-message cells in some rounds and
            # not others (docs/performance.rst, "The C echo's slow rounds at
            # 100 KiB"); a slow-down only adds cost, so each cell's fastest
            # round is its least disturbed.  Shown, not judged.
            fastest = fastestGrowth(OURS, size) / fastestGrowth("c-epoll", size)
            beside.append(
                (
                    f"{OURS} cost growth vs c-epoll's, {size} B, each cell's fastest round",
                    (fastest, math.nan, math.nan),
                )
            )
            check(
                f"{OURS} cost growth 10 -> 1000 conns vs c-epoll's, {size} B <= 1.15",
                summary([a / b for a, b in zip(ours, theirs, strict=True)]),
                -1.15,
                beside,
            )
    check(
        f"{OURS} vs twisted, msg/CPU-s, 1024 B x 10 >= 1.6",
        ratio((OURS, 1024, 10), ("twisted", 1024, 10)),
        1.6,
        besideFloor(runs, "twisted", 1024, 10),
    )
    if OURS in memory:
        checks.append(
            (f"{OURS} bytes per idle connection <= 1536", memory[OURS], -1536, "", ())
        )
    if OURS in startup and "twisted" in startup:
        checks.append(
            (
                f"{OURS} start to first echo vs a plain Twisted .tac <= 1.0"
                f" ({'default install' if install else 'this install'})",
                startup[OURS] / startup["twisted"],
                -1.0,
                "",
                (),
            )
        )
    if OURS in resident:
        checks.append(
            (
                f"{OURS} resident memory idle, MiB <= 36"
                f" ({'default install' if install else 'this install'},"
                f" {'with' if tls else 'without'} the TLS extra)",
                resident[OURS] / 2**20,
                -36,
                "",
                (),
            )
        )
    for transport, found in (others or {}).items():
        reportTransport(transport, found, check)
    print("\ntargets:")
    for text, value, bound, rounds, beside in checks:
        if math.isnan(value):
            continue  # a server or cell this run left out
        ok = value >= bound if bound > 0 else value <= -bound
        print(f"  {'MET ' if ok else 'MISS'} {text}: {value:.2f}{rounds}")
        for note, (noted, low, high) in beside:
            if not math.isnan(noted):
                # A figure with no rounds' range is one figure, not a median.
                rounds = "" if math.isnan(low) else spread(low, high)
                print(f"       {note}: {noted:.2f}{rounds}")
    print(f"  ({OURS} is the command as typed: twistd -n echo)")

    # What the flat-scaling target is up against: how every server's cost
    # per message grows, the C yardstick's being the kernel's own share.
    names = sorted({c.server for c in cells}, key=[c.server for c in cells].index)
    sizes = [s for s in (64, 1024, 102400) if any((n, s, 1000) in by for n in names)]
    if sizes:
        print("\ncost per message at 1000 connections / at 10 (1.00 is flat):")
        print(f"  {'server':15}" + "".join(f" {s:>8} B" for s in sizes))
        for name in names:
            row = "".join(f" {summary(growth(name, s))[0]:10.2f}" for s in sizes)
            print(f"  {name:15}{row}")

    if args.plot:
        plot(cells, args.plot, {t: medians(r) for t, r in (others or {}).items()})


def plot(
    cells: list[Cell], path: str, others: dict[str, list[Cell]] | None = None
) -> None:
    """
    Messages per server CPU-second for each server, grouped by cell, and
    beside it the latency cell's p50 round trip for each server; then the
    UDP and TLS cells of C{others}, by transport, the same way.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: matplotlib is not installed; pip install '.[bench]')")
        return
    names = sorted({c.server for c in cells}, key=[c.server for c in cells].index)
    by = {(c.server, c.size, c.conns): c for c in cells}
    throughput = [
        spec for spec in sorted({(c.size, c.conns) for c in cells}) if spec != LATENCY
    ]
    colours = plt.get_cmap("tab10")
    others = others or {}
    widths = [max(1, len(throughput)), 1] + [
        len({(c.size, c.conns) for c in found}) for found in others.values()
    ]
    fig, axes = plt.subplots(
        1,
        len(widths),
        figsize=(max(7, 1.2 * sum(widths) + 3), 4.5),
        gridspec_kw={"width_ratios": widths},
    )
    left, right = axes[0], axes[1]
    for axis, (transport, found) in zip(axes[2:], others.items(), strict=True):
        plotTransport(axis, transport, found, colours)
    width = 0.8 / max(1, len(names))
    for n, name in enumerate(names):
        xs = [i + n * width for i, spec in enumerate(throughput) if (name, *spec) in by]
        ys = [by[(name, *spec)].perCPU for spec in throughput if (name, *spec) in by]
        left.bar(xs, ys, width, label=name, color=colours(n))
    left.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(throughput))],
        [f"{size} B x {conns}" for size, conns in throughput],
        fontsize=8,
    )
    left.set_ylabel("messages per server CPU-second")
    left.set_title("throughput per CPU: higher is better", fontsize=9)
    if names:
        left.legend(fontsize=7, ncol=2)
    latency = [
        (n, by[(name, *LATENCY)].p50)
        for n, name in enumerate(names)
        if (name, *LATENCY) in by
    ]
    right.bar(
        range(len(latency)),
        [p50 for _, p50 in latency],
        color=[colours(n) for n, _ in latency],
    )
    right.set_xticks(
        range(len(latency)), [names[n] for n, _ in latency], rotation=60, fontsize=7
    )
    right.set_ylabel("p50 round trip, µs")
    right.set_title(
        f"latency, {LATENCY[0]} B x {LATENCY[1]}: lower is better", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)
    print(f"(plot written to {path})")


def plotTransport(axis, transport: str, cells: list[Cell], colours) -> None:  # type: ignore[no-untyped-def]
    """
    One transport's cells on C{axis}: msg per server CPU-second by server,
    grouped by cell (the TLS handshake cell in connections).
    """
    names = sorted({c.server for c in cells}, key=[c.server for c in cells].index)
    by = {(c.server, c.size, c.conns): c for c in cells}
    specs = sorted({(c.size, c.conns) for c in cells})
    width = 0.8 / max(1, len(names))
    for n, name in enumerate(names):
        xs = [i + n * width for i, spec in enumerate(specs) if (name, *spec) in by]
        ys = [by[(name, *spec)].perCPU for spec in specs if (name, *spec) in by]
        axis.bar(xs, ys, width, label=name, color=colours(n))
    axis.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(specs))],
        [
            "handshakes" if spec == HANDSHAKES else f"{spec[0]} B x {spec[1]}"
            for spec in specs
        ],
        fontsize=8,
    )
    axis.set_title(f"{transport.upper()}: msg per server CPU-s", fontsize=9)
    axis.legend(fontsize=7)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        port, conns, size = (int(a) for a in sys.argv[2:5])
        print(pythonClient(port, conns, size, float(sys.argv[5])))
    else:
        main()
