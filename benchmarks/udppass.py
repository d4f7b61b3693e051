"""
User-space instructions per datagram of the UDP echo's pass of reads
(C{readPass} of L{echotwist.datagram.DatagramPort}, or of
C{echotwist._fast.udp.EchoPassPort} where it lives), at a fixed number of
datagrams a pass, counted by valgrind's callgrind:

    python benchmarks/udppass.py SIZE FLOWS

Each round, FLOWS client sockets on loopback send one SIZE-byte datagram
each (its first 8 bytes a sequence number, as cudp.c's), the port makes
one pass, and the answers are read back and checked.  The script runs
itself under callgrind for 400 and 800 rounds' worth of datagrams and
prints the difference of the two totals over the difference of the
datagrams: the client side's Python is included (the same for any
version of the pass), start-up is not.

Why besides benchmarks/instructions.sh: that one runs the whole server
under valgrind, fifty times slower than a real one, so the C client's
next datagrams are queued behind each pass, and the cost of a pass's end
(reading into EAGAIN, or asking first) is shared among several datagrams
where a real server at 64 B x 1 pays it for every one.  Here a pass reads
exactly FLOWS datagrams.

    python benchmarks/udppass.py --rounds N SIZE FLOWS

runs N rounds once, without valgrind (what the count runs).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys

#: Datagrams of the two counted runs.
SHORT, LONG = 4000, 8000


def rounds(size: int, flows: int, count: int) -> None:
    """
    Run C{count} rounds of C{flows} datagrams of C{size} bytes through one
    datagram echo port's pass of reads.
    """
    from twisted.internet.task import Clock
    from twisted.internet.testing import MemoryReactorClock

    from echotwist.datagram import DatagramEcho, DatagramPolicy

    try:
        # Where the pass lives once the fast path is fenced in _fast.
        from echotwist._fast.udp import EchoPassPort as Port
    except ImportError:
        from echotwist.datagram import DatagramPort as Port

    clock = Clock()
    policy = DatagramPolicy(rate=0, clock=clock)
    port = Port(0, DatagramEcho(policy), "127.0.0.1", 65536, MemoryReactorClock())
    port.startListening()
    address = ("127.0.0.1", port.getHost().port)
    clients = []
    for _ in range(flows):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        clients.append(client)
    rest = bytes(range(256)) * (size // 256 + 1)
    rest = rest[: size - 8]
    sequence = 0
    for _ in range(count):
        for client in clients:
            sequence += 1
            # Linux queues a loopback datagram at the receiver within sendto.
            client.sendto(sequence.to_bytes(8, "big") + rest, address)
        port.readPass()
        for client in clients:
            answer = client.recv(65536, socket.MSG_DONTWAIT)
            if answer[8:] != rest:
                raise SystemExit("udppass: an answer differs from its datagram")
        # The loop guard's window turns as it would between datagrams.
        clock.advance(0.0003)
    if policy.counts != {"answered": flows * count}:
        raise SystemExit(f"udppass: not every datagram answered: {policy.counts}")


def counted(size: int, flows: int, count: int) -> int:
    """
    The instructions callgrind counts for a run of C{count} rounds.
    """
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--rounds",
            str(count),
            str(size),
            str(flows),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or found is None:
        raise SystemExit(f"udppass: no count from callgrind:\n{done.stderr}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("size", type=int, help="bytes a datagram, 8 to 65507")
    parser.add_argument("flows", type=int, help="datagrams a pass, 1 to 32")
    parser.add_argument("--rounds", type=int, help="run this many, uncounted")
    options = parser.parse_args()
    if not 8 <= options.size <= 65507 or not 1 <= options.flows <= 32:
        parser.error("SIZE must be 8 to 65507 and FLOWS 1 to 32")
    if options.rounds is not None:
        rounds(options.size, options.flows, options.rounds)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("udppass: needs valgrind (apt-get install valgrind)")
    short, long = SHORT // options.flows, LONG // options.flows
    first = counted(options.size, options.flows, short)
    second = counted(options.size, options.flows, long)
    per = (second - first) // ((long - short) * options.flows)
    print(
        f"{options.size} B x {options.flows} a pass: {per} user-space"
        " instructions per UDP datagram (pass and client side)"
    )


if __name__ == "__main__":
    main()
