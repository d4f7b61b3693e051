"""
The exit status after SIGTERM and SIGINT when twistd is PID 1 (a container
without C{--init}): 143 and 130 after the drain, as anywhere else, and its
workers reaped.  Run for real in a PID namespace of its own
(C{unshare --pid --fork --mount-proc}, root).
"""

from __future__ import annotations

import signal
import socket
import time

import psutil

from tests._tools import requireRoot, requireTool
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase, command, waitServing


class PidOneTests(ServerTestCase):
    """
    The real twistd as the init of a PID namespace.
    """

    def setUp(self) -> None:
        super().setUp()
        requireRoot("a PID namespace (unshare --pid)")
        self.unshare = requireTool("unshare", "util-linux")

    def startAsInit(self, *echoArgs: str) -> tuple[Server, psutil.Process]:
        server = self.start(
            *echoArgs,
            runner=[
                self.unshare,
                "--pid",
                "--fork",
                "--mount-proc",
                command("twistd"),
                "-n",
                "--pidfile=",
                "echo",
            ],
        )
        server.listening()
        deadline = time.monotonic() + WAIT
        while not (children := psutil.Process(server.process.pid).children()):
            self.assertLess(time.monotonic(), deadline, server.output)
            time.sleep(0.02)
        (twistd,) = children
        return server, twistd

    def drainedExit(self, signum: int) -> None:
        """
        twistd as PID 1, a client open: after C{signum} the client's bytes
        still come back, then it closes, and the exit status says the
        signal.
        """
        server, twistd = self.startAsInit(
            "--port", f"tcp:0:interface={LOOPBACK}", "--drain-quiet", "1"
        )
        client = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
        self.addCleanup(client.close)
        client.sendall(b"before\n")
        self.assertEqual(client.recv(100), b"before\n")
        twistd.send_signal(signum)
        server.waitFor(r"Draining 1 connection")
        client.sendall(b"during the drain\n")
        self.assertEqual(client.recv(100), b"during the drain\n")
        self.assertEqual(client.recv(100), b"")  # closed once quiet
        self.assertEqual(server.wait(), 128 + signum, server.output)
        self.assertIn("Drain finished", server.output)

    def test_sigterm(self) -> None:
        """
        SIGTERM to twistd as PID 1: exit status 143 after the drain.
        """
        self.drainedExit(signal.SIGTERM)

    def test_sigint(self) -> None:
        """
        SIGINT to twistd as PID 1: exit status 130 after the drain.
        """
        self.drainedExit(signal.SIGINT)

    def test_workersReaped(self) -> None:
        """
        With workers under a supervisor that is PID 1, a killed worker is
        reaped (no zombie) and replaced, and SIGTERM still ends in 143.
        """
        server, supervisor = self.startAsInit(
            "--port", f"tcp:0:interface={LOOPBACK}", "--workers", "2"
        )
        waitServing(server, 2)
        victim = supervisor.children()[0]
        victim.kill()
        # (The log says the PIDs inside the namespace.)
        server.waitFor(r"Worker \d \(pid \d+\) exited after .*: signal 9")
        waitServing(server, 3)
        # Reaped: gone from the process table, not left a zombie.
        deadline = time.monotonic() + WAIT
        while psutil.pid_exists(victim.pid):
            try:
                status = victim.status()
            except psutil.NoSuchProcess:
                break
            self.assertLess(time.monotonic(), deadline, f"worker left {status}")
            time.sleep(0.02)
        zombies = [
            child.pid
            for child in supervisor.children()
            if child.status() == psutil.STATUS_ZOMBIE
        ]
        self.assertEqual(zombies, [])
        supervisor.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait(), 143, server.output)
        self.assertIn("All workers have exited", server.output)
