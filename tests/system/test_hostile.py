"""
Attacks on the real twistd, each asserting the figure it must not get past:
kernel memory pinned by clients that send and never read (TCP, and TCP
under haproxy:), user-space memory pinned by such clients over TLS, the
worst connect time in a burst of connects, and the log lines a flood of
connects makes when the server is out of descriptors.

Every attack is bounded in count and time, and talks to loopback only.
"""

from __future__ import annotations

import os
import re
import select
import socket
import ssl
import struct
import subprocess
import threading
import time

from twisted.trial.unittest import SkipTest

from tests._tools import CHECKOUT, requireTool, selfSignedCertificate
from tests._twistd import LOOPBACK, WAIT, ServerTestCase, command

KiB = 1024
MiB = 1024 * KiB

#: What a connection whose client never reads may pin of kernel memory
#: (its receive queue and send queue), by default (issue 13).
KERNEL_BOUND = 512 * KiB


def _readmeBounds() -> tuple[int, int]:
    """
    What README.rst promises one connection costs at the defaults: the
    server process's part and the kernel's, in bytes.
    """
    with open(os.path.join(CHECKOUT, "README.rst"), encoding="utf-8") as f:
        text = " ".join(f.read().split())
    found = re.search(
        r"up to (\d+) KiB in the server process and about (\d+) KiB of kernel"
        r" socket memory",
        text,
    )
    assert found is not None, "README.rst no longer states the bound"
    return int(found.group(1)) * KiB, int(found.group(2)) * KiB


#: What it may pin of the server's own memory (README.rst;
#: docs/security.rst, Backpressure), and what README says it pins in the
#: kernel, which the measured figure may pass by at most a tenth.
USER_BOUND, README_KERNEL = _readmeBounds()
#: How much each such client tries to push.
PUSH = 8 * MiB
#: A client whose socket stays unwritable this long is held back.
STALLED = 2.0

_SKMEM = re.compile(r"skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f\d+,w(\d+)")


def serverSocketMemory(port: int) -> list[int]:
    """
    Kernel memory of each established server-side socket on C{port}:
    receive queue plus send queue, as C{ss -tm} reports it (skmem r + w).
    """
    ss = requireTool("ss", "iproute2")
    out = subprocess.run(
        [ss, "-tmnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    ).stdout
    return [int(m.group(1)) + int(m.group(2)) for m in _SKMEM.finditer(out)]


def listenQueue(port: int) -> int:
    """
    The listen backlog of the listening socket on C{port} (C{ss -lt}
    shows it as Send-Q).
    """
    ss = requireTool("ss", "iproute2")
    out = subprocess.run(
        [ss, "-ltnH", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    ).stdout
    (line,) = out.splitlines()
    return int(line.split()[2])


def nonReadingClient(port: int, receiveBuffer: int | None = 4096) -> socket.socket:
    """
    A client that will never read: by default with a receive buffer as
    small as the kernel allows, so that the echo backs up in the server,
    not in the client's own kernel queue (which autotuning would otherwise
    grow to megabytes); None leaves the kernel's.
    """
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receiveBuffer is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    client.settimeout(WAIT)
    client.connect((LOOPBACK, port))
    return client


def push(clients: list[socket.socket]) -> list[int]:
    """
    Send from every client without reading, until each has sent L{PUSH}
    or its socket stayed unwritable for L{STALLED} seconds (the server
    stopped reading from it).

    @return: what each client sent.
    """
    chunk = os.urandom(MiB)
    sent = {client: 0 for client in clients}
    live = set(clients)
    for client in clients:
        client.setblocking(False)
    deadline = time.monotonic() + len(clients) * (PUSH / MiB) + 60
    while live:
        if time.monotonic() > deadline:
            raise AssertionError("clients still sending at the deadline")
        writable = select.select([], list(live), [], STALLED)[1]
        if not writable:
            break
        for client in writable:
            try:
                sent[client] += client.send(chunk)
            except (BlockingIOError, ssl.SSLWantWriteError):
                pass
            if sent[client] >= PUSH:
                live.discard(client)
    return [sent[client] for client in clients]


class KernelMemoryTests(ServerTestCase):
    """
    Clients that send and never read pin at most L{KERNEL_BOUND} each of
    the server's socket memory (kernel autotuning alone lets each pin
    about 5 MiB).
    """

    def nonReaders(
        self,
        *echoArgs: str,
        header: bytes = b"",
        count: int = 20,
        reactor: str | None = None,
        receiveBuffer: int | None = 4096,
    ) -> list[int]:
        runner = None
        if reactor is not None:
            runner = [
                command("twistd"),
                "-n",
                "--pidfile=",
                "--reactor",
                reactor,
                "echo",
            ]
        server = self.start(*echoArgs, "--max-per-source", "0", runner=runner)
        port = server.port
        clients = []
        for _ in range(count):
            client = nonReadingClient(port, receiveBuffer)
            self.addCleanup(client.close)
            client.sendall(header)
            clients.append(client)
        sent = push(clients)
        memory = serverSocketMemory(port)
        self.assertEqual(len(memory), count)
        # The server did take something from each, then held it back.
        self.assertTrue(all(n > 64 * KiB for n in sent), sent)
        self.assertTrue(all(n < PUSH for n in sent), sent)
        # And it still serves everyone else.
        other = socket.create_connection((LOOPBACK, port), timeout=WAIT)
        self.addCleanup(other.close)
        other.sendall(header + b"others")
        self.assertEqual(readExactly(other, 6), b"others")
        return memory

    def test_tcp(self) -> None:
        memory = self.nonReaders("--port", f"tcp:0:interface={LOOPBACK}")
        self.assertLessEqual(max(memory), KERNEL_BOUND, memory)

    def test_asReadmeSays(self) -> None:
        """
        At the defaults a non-reader pins about what README.rst says, within
        a tenth, and README's figure is within the bound.
        """
        self.assertLessEqual(README_KERNEL, KERNEL_BOUND)
        memory = self.nonReaders("--port", f"tcp:0:interface={LOOPBACK}", count=5)
        self.assertLessEqual(max(memory), README_KERNEL * 1.1, memory)
        # A client with the kernel's own receive buffer leaves the server
        # more to send (larger segments): README's figure holds for it too.
        memory = self.nonReaders(
            "--port", f"tcp:0:interface={LOOPBACK}", count=5, receiveBuffer=None
        )
        self.assertLessEqual(max(memory), README_KERNEL * 1.1, memory)

    def test_tcpUnderProxyProtocol(self) -> None:
        memory = self.nonReaders(
            "--port",
            f"haproxy:tcp:0:interface={LOOPBACK}",
            header=b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 7\r\n",
        )
        self.assertLessEqual(max(memory), KERNEL_BOUND, memory)

    def test_reactorEchotwist(self) -> None:
        """
        The same under C{--reactor echotwist}, whose loop echoes small
        reads itself.
        """
        memory = self.nonReaders(
            "--port", f"tcp:0:interface={LOOPBACK}", count=10, reactor="echotwist"
        )
        self.assertLessEqual(max(memory), KERNEL_BOUND, memory)

    def test_option(self) -> None:
        """
        --socket-buffer sets the size: at 16 KiB a non-reader pins about
        four times that.
        """
        memory = self.nonReaders(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--socket-buffer",
            "16384",
            count=5,
        )
        self.assertLessEqual(max(memory), 4 * 16384 + 32 * KiB, memory)


class TLSMemoryTests(ServerTestCase):
    def test_nonReadersOverTLS(self) -> None:
        """
        Clients that send over TLS and never read: each makes the server
        hold at most L{USER_BOUND} of user space, TLS state included.
        """
        key, certificate = selfSignedCertificate(self.directory)
        server = self.start(
            "--port",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={certificate}",
            "--max-per-source",
            "0",
            # Many handshakes from one address, as fast as they go: what the
            # handshake budget is for.  This test measures memory.
            "--tls-handshake-rate",
            "0",
            "--no-connection-logs",
        )
        port = server.port
        context = ssl.create_default_context(cafile=certificate)

        def connect() -> ssl.SSLSocket:
            raw = nonReadingClient(port)
            self.addCleanup(raw.close)
            return context.wrap_socket(raw, server_hostname="localhost")

        # One full exchange first, so what is measured is per connection,
        # not what the first TLS connection sets up once.
        warm = connect()
        payload = os.urandom(256 * KiB)
        warm.sendall(payload)
        echoed = bytearray()
        while len(echoed) < len(payload):
            chunk = warm.recv(len(payload))
            self.assertTrue(chunk, "closed before the echo was back")
            echoed += chunk
        self.assertEqual(bytes(echoed), payload)
        warm.close()

        count = 40
        before = server.rss()
        clients = [connect() for _ in range(count)]
        sent = push(clients)  # type: ignore[arg-type]
        perClient = (server.rss() - before) / count
        self.assertTrue(all(n < PUSH for n in sent), sent)
        self.assertLess(
            perClient, USER_BOUND, f"{perClient / KiB:.1f} KiB per connection"
        )


def readExactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def synRetransmitted(client: socket.socket) -> bool:
    """
    Whether the kernel had to retransmit anything on C{client}, which right
    after connect() can only be its SYN (tcp_info's tcpi_total_retrans).
    """
    info = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 100)[0] != 0


class BurstTests(ServerTestCase):
    def test_burstOfConnects(self) -> None:
        """
        2000 connects from 20 threads at once: the listen queue holds the
        whole burst, so no connect has its SYN dropped and retried a second
        later (Twisted's default backlog of 50 overflows: on this project's
        machine about 150 of the 2000 waited over a second).

        What is asserted is the cause, exactly: the queue's size, and no SYN
        retransmitted on any client socket.  The time is asserted only
        against the one-second retry (measured here: 80-200 ms at worst on
        a loaded 2-core machine), since a busy CI host can hold a thread
        back for a while without anything being wrong with the server.
        """
        with open("/proc/sys/net/core/somaxconn") as f:
            backlog = min(int(f.read()), 65535)
        if backlog < 2000:
            raise SkipTest(
                f"net.core.somaxconn is {backlog}: the kernel allows no listen"
                " queue for a burst of 2000"
            )
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--max-per-source",
            "0",
            "--max-connections",
            "0",
            "--no-connection-logs",
        )
        port = server.port
        self.assertEqual(listenQueue(port), backlog)
        times: list[float] = []
        retried: list[float] = []
        failures: list[BaseException] = []
        start = threading.Barrier(20, timeout=WAIT)

        def connect() -> None:
            try:
                start.wait()
                for _ in range(100):
                    began = time.monotonic()
                    client = socket.create_connection((LOOPBACK, port), timeout=WAIT)
                    took = time.monotonic() - began
                    times.append(took)
                    if synRetransmitted(client):
                        retried.append(took)
                    client.close()
            except BaseException as e:
                failures.append(e)

        threads = [threading.Thread(target=connect) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 3)
        self.assertFalse(any(thread.is_alive() for thread in threads))
        self.assertEqual(failures, [])
        self.assertEqual(len(times), 2000)
        self.assertEqual(retried, [], "connects whose SYN was retried")
        self.assertLess(max(times), 1.0)
