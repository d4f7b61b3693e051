"""
Issue 23's trickle lockout, at the server's defaults: C{--attackers}
loopback addresses (127.0.9.x) open C{--per-attacker} connections each to
C{twistd echo} (1000 in all by default: the default --max-connections), and
each connection sends one byte every C{--every} seconds (9: just under
--evict-idle-after 10).  Meanwhile a client from another address
(127.0.8.1) knocks once a second for C{--seconds}: connect, send, wait for
the echo or the close, disconnect.  The attacker reconnects every
connection the server closes, to keep the server full.

Prints how many knocks were served, the time from each knock to its echo,
how many attacking connections the server closed, and the bytes a second
the attack cost.  Bounded in count and time; the server is stopped at the
end.  Extra arguments after C{--} go to C{twistd echo}.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)


def knock(port: int) -> float | None:
    """
    Seconds from connect to echo, or None if refused.
    """
    started = time.monotonic()
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=("127.0.8.1", 0)
    ) as sock:
        sock.sendall(b"let me in")
        got = b""
        try:
            while len(got) < 9:
                chunk = sock.recv(16)
                if not chunk:
                    return None
                got += chunk
        except (TimeoutError, ConnectionResetError):
            return None
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attackers", type=int, default=10)
    parser.add_argument("--per-attacker", type=int, default=100)
    parser.add_argument("--every", type=float, default=9.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--tac",
        help="run this .tac (twistd -y) instead of twistd echo, e.g. to"
        " measure an older version; it must listen on tcp:0 on 127.0.0.1",
    )
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="trickle-")
    server = subprocess.Popen(
        [os.path.join(BIN, "twistd"), "-n", "--pidfile="]
        + (
            ["-y", os.path.abspath(args.tac)]
            if args.tac
            else ["echo", "--port", "tcp:0:interface=127.0.0.1", "--no-connection-logs"]
        )
        + args.extra,
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    held: list[socket.socket] = []
    owner: dict[socket.socket, str] = {}
    try:
        assert server.stdout is not None
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            match = re.search(
                r"Listening on 127\.0\.0\.1:(\d+)", server.stdout.readline()
            )
            if match:
                port = int(match.group(1))
        if port is None:
            raise SystemExit("the server did not start")
        for n in range(1, args.attackers + 1):
            for _ in range(args.per_attacker):
                sock = socket.create_connection(
                    ("127.0.0.1", port), timeout=5, source_address=(f"127.0.9.{n}", 0)
                )
                sock.sendall(b"x")
                sock.recv(1)
                sock.setblocking(False)
                held.append(sock)
                owner[sock] = f"127.0.9.{n}"
        print(f"{len(held)} attacking connections open", flush=True)
        selector = selectors.DefaultSelector()
        for sock in held:
            selector.register(sock, selectors.EVENT_READ)
        closed: set[socket.socket] = set()
        reconnected = 0
        sent = 0
        waits: list[float] = []
        refused = 0
        started = time.monotonic()
        # Spread the trickle over the interval, as a patient attacker would.
        nextByte = {
            sock: started + args.every * i / len(held) for i, sock in enumerate(held)
        }
        nextKnock = started
        while time.monotonic() - started < args.seconds:
            now = time.monotonic()
            for sock, due in nextByte.items():
                if due <= now and sock not in closed:
                    try:
                        sock.send(b".")
                        sent += 1
                    except OSError:
                        closed.add(sock)
                    nextByte[sock] = due + args.every
            for key, _ in selector.select(0.02):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    if not sock.recv(64):  # type: ignore[union-attr]
                        raise OSError
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(sock)  # type: ignore[arg-type]
                    selector.unregister(sock)
            for sock in [s for s in closed if s in nextByte]:
                # Take the slot back at once, from the same address.
                del nextByte[sock]
                sock.close()
                again = socket.create_connection(
                    ("127.0.0.1", port), timeout=5, source_address=(owner[sock], 0)
                )
                again.setblocking(False)
                held.append(again)
                owner[again] = owner[sock]
                selector.register(again, selectors.EVENT_READ)
                nextByte[again] = now + args.every
                reconnected += 1
            if now >= nextKnock:
                waited = knock(port)
                if waited is None:
                    refused += 1
                else:
                    waits.append(waited)
                nextKnock = now + 1.0
        elapsed = time.monotonic() - started
        print(
            f"knocks: {len(waits)} served, {refused} refused;"
            + (
                f" connect to echo p50 {statistics.median(waits) * 1000:.2f} ms,"
                f" max {max(waits) * 1000:.2f} ms"
                if waits
                else ""
            ),
            flush=True,
        )
        print(
            f"attacking connections closed by the server: {len(closed)}"
            f" (reconnected: {reconnected});"
            f" attack traffic {sent / elapsed:.0f} B/s over {elapsed:.0f} s",
            flush=True,
        )
    finally:
        for sock in held:
            sock.close()
        server.send_signal(signal.SIGTERM)
        server.wait(20)


if __name__ == "__main__":
    main()
