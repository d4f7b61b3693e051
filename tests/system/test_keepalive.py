"""
TCP keepalive on stream connections, against the real twistd: a client
that vanishes without a FIN or RST is reaped even at C{--idle-timeout 0};
the kernel's view of the server's sockets (C{ss}), and a client cut off, in
network namespaces the test makes.  (The option itself:
tests.test_settings.KeepaliveOptionTests.)
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

from tests._tools import requireRoot, requireTool
from tests._twistd import LOOPBACK, WAIT, ServerTestCase, command
from tests.system.test_hostile_sources import _connect


def _serverSockets(port: int, runner: list[str] | None = None) -> list[str]:
    """
    What C{ss -tion} says of the established sockets on C{port}'s side of
    the server, one entry per socket.
    """
    argv = [requireTool("ss", "iproute2"), "-tino", "state", "established"]
    argv.append(f"( sport = :{port} )")
    done = subprocess.run(
        [*(runner or []), *argv],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    return [line for line in done.stdout.splitlines()[1:] if f":{port} " in line]


class KeepaliveSocketTests(ServerTestCase):
    def keepaliveTimers(self, *args: str) -> list[str]:
        server = self.start("--port", f"tcp:0:interface={LOOPBACK}", *args)
        port = server.port
        sock = _connect(port)
        self.addCleanup(sock.close)
        sock.sendall(b"x")
        self.assertEqual(sock.recv(1), b"x")
        (line,) = _serverSockets(port)
        return re.findall(r"timer:\(keepalive,([^,]+),(\d+)\)", line)

    def test_onByDefault(self) -> None:
        """
        The kernel has a keepalive timer on the server's side of a
        connection: the first probe 60 s into a silence (ss shows 59sec or
        1min, as it rounds).
        """
        (timer,) = self.keepaliveTimers()
        self.assertRegex(timer[0], r"^(59sec|1min)$")

    def test_idleAsGiven(self) -> None:
        (timer,) = self.keepaliveTimers("--keepalive", "1234,7,3")
        self.assertEqual(timer[0], "20min")  # 1234 s, as ss rounds it

    def test_offAtZero(self) -> None:
        self.assertEqual(self.keepaliveTimers("--keepalive", "0"), [])


_CLIENT = r"""
import socket, sys, time
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
sock.sendall(b"hello")
assert sock.recv(5) == b"hello"
print("ready", sock.getsockname()[1], flush=True)
# Held, and never closed: it is cut off before it could be.
time.sleep(float(sys.argv[3]))
"""


class VanishedClientTests(ServerTestCase):
    """
    A client in one network namespace, the server in another, joined by a
    veth pair; the client's end goes down while it holds a connection, so
    neither a FIN nor a RST ever reaches the server.
    """

    SERVER = "10.213.0.1"
    CLIENT = "10.213.0.2"

    def setUp(self) -> None:
        requireRoot("creates network namespaces and a veth pair")
        self.ip = requireTool("ip", "iproute2")
        super().setUp()
        tag = uuid.uuid4().hex[:8]
        self.serverSide = f"etk-ka-s-{tag}"
        self.clientSide = f"etk-ka-c-{tag}"
        self.clientLink = f"vkc{tag}"
        for namespace in (self.serverSide, self.clientSide):
            self.command(self.ip, "netns", "add", namespace)
            # Deleting a namespace deletes the veth end in it, and so both.
            self.addCleanup(self.command, self.ip, "netns", "delete", namespace)
            self.inside(namespace, self.ip, "link", "set", "lo", "up")
        self.inside(
            self.serverSide,
            self.ip,
            "link",
            "add",
            f"vks{tag}",
            "type",
            "veth",
            "peer",
            "name",
            self.clientLink,
            "netns",
            self.clientSide,
        )
        for namespace, link, address in (
            (self.serverSide, f"vks{tag}", self.SERVER),
            (self.clientSide, self.clientLink, self.CLIENT),
        ):
            self.inside(namespace, self.ip, "addr", "add", f"{address}/30", "dev", link)
            self.inside(namespace, self.ip, "link", "set", link, "up")

    def command(self, *argv: str) -> str:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=WAIT, check=False
        )
        self.assertEqual(done.returncode, 0, f"{argv}: {done.stderr}")
        return done.stdout

    def inside(self, namespace: str, *argv: str) -> str:
        return self.command(self.ip, "netns", "exec", namespace, *argv)

    def test_vanishedClientIsReaped(self) -> None:
        """
        At C{--idle-timeout 0} and C{--keepalive 1,1,2}, the connection of a
        client cut off is closed once two probes, a second apart, go
        unanswered after a second of silence: a few seconds, bounded here
        by a generous wait.
        """
        port = 7007  # the namespace is the test's own: any port is free
        server = self.start(
            "--port",
            f"tcp:{port}:interface={self.SERVER}",
            "--idle-timeout",
            "0",
            "--keepalive",
            "1,1,2",
            runner=[self.ip, "netns", "exec", self.serverSide]
            + [command("twistd"), "-n", "--pidfile=", "echo"],
        )
        server.waitFor(rf"Listening on {re.escape(self.SERVER)}:{port}")
        client = subprocess.Popen(
            [self.ip, "netns", "exec", self.clientSide, sys.executable, "-c"]
            + [_CLIENT, self.SERVER, str(port), str(WAIT * 3)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(client.wait, WAIT)
        self.addCleanup(client.kill)
        assert client.stdout is not None
        ready = client.stdout.readline()
        self.assertTrue(ready.startswith("ready "), ready)
        clientPort = ready.split()[1]
        peer = re.escape(f"{self.CLIENT}:{clientPort}")
        server.waitFor(rf"{peer} connected")
        self.inside(self.clientSide, self.ip, "link", "set", self.clientLink, "down")
        closed = server.waitFor(
            rf"{peer} disconnected after [\d.]+s, 5 bytes echoed: (.*)"
        )
        # Twisted reports every failed read alike (the kernel's ETIMEDOUT
        # included): a loss, not a close by the client.
        self.assertIn("non-clean", closed.group(1))
        self.assertEqual(client.poll(), None, "the client held on to the end")
