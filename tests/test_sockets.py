"""
Socket options on listening ports (L{echotwist.sockets}): the buffer clamp
on a TCP listener and its connections, a UNIX listener left alone, and a
kernel cap below the asked size logged.
"""

from __future__ import annotations

import os
import socket

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from echotwist.sockets import clampSocketBuffers
from tests._tools import scratchDirectory


class _SocketPort:
    """
    Just enough of a listening port: its socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


class SocketBufferTests(SynchronousTestCase):
    """
    SO_SNDBUF and SO_RCVBUF are set on TCP listening sockets, and the
    connections accepted from them inherit both.
    """

    def listening(self, family: int = socket.AF_INET) -> _SocketPort:
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        if family == socket.AF_UNIX:
            sock.bind(os.path.join(scratchDirectory(self), "s"))
        else:
            sock.bind(("127.0.0.1", 0))
        sock.listen()
        return _SocketPort(sock)

    def buffers(self, sock: socket.socket) -> tuple[int, int]:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        )

    def test_tcpListenerAndItsConnections(self) -> None:
        port = self.listening()
        clampSocketBuffers("tcp:0", port, 32768)
        # Linux doubles the value, for its bookkeeping.
        self.assertEqual(self.buffers(port.socket), (65536, 65536))
        client = socket.create_connection(port.socket.getsockname(), timeout=5)
        self.addCleanup(client.close)
        accepted, _ = port.socket.accept()
        self.addCleanup(accepted.close)
        self.assertEqual(self.buffers(accepted), (65536, 65536))

    def test_unixListenerUntouched(self) -> None:
        port = self.listening(socket.AF_UNIX)
        before = self.buffers(port.socket)
        clampSocketBuffers("unix:s", port, 8192)
        self.assertEqual(self.buffers(port.socket), before)

    def test_kernelCapIsLogged(self) -> None:
        with open("/proc/sys/net/core/wmem_max") as f:
            cap = int(f.read())
        port = self.listening()
        with capturedLogs() as events:
            clampSocketBuffers("tcp:0", port, cap * 2)
        self.assertEqual(
            [e["cap"] for e in events if e.get("event") == "listener.buffer_capped"][
                :1
            ],
            ["net.core.wmem_max"],
        )
