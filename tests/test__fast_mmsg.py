"""
L{echotwist._fast.mmsg}: C{recvmmsg} and C{sendmmsg} through ctypes, on a
real loopback socket.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import sys

from twisted.trial.unittest import SynchronousTestCase

from echotwist._fast.mmsg import Batches, available


class BatchesTests(SynchronousTestCase):
    """
    L{Batches} reads what C{recvfrom} would read, and sends it back.
    """

    if not available():
        skip = "no recvmmsg/sendmmsg here"

    def setUp(self) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.server.close)
        self.server.bind(("127.0.0.1", 0))
        self.batches = Batches(self.server.fileno(), 4, 65536)

    def receive(self, batches: Batches, count: int) -> int:
        """
        Read up to C{count} queued datagrams into C{batches} without
        waiting, as the UDP pass does: how many, or -1.
        """
        return int(batches.recvmmsg(count, socket.MSG_DONTWAIT, None))

    def client(self, host: str) -> socket.socket:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind((host, 0))
        return client

    def test_receiveAsRecvfrom(self) -> None:
        """
        C{recvmmsg} reads up to its count of queued datagrams: their
        bytes, lengths (empty and the largest too) and peers, as
        C{recvfrom} would give them.
        """
        one, two = self.client("127.0.0.2"), self.client("127.0.0.3")
        to = self.server.getsockname()
        datagrams = [
            (one, b"x" * 65507),
            (two, b""),
            (one, b"abc"),
            (two, b"d"),
            (one, b"e"),
        ]
        for client, datagram in datagrams:
            client.sendto(datagram, to)
        self.assertEqual(self.receive(self.batches, 4), 4)
        size = self.batches.size
        for i, (client, datagram) in enumerate(datagrams[:4]):
            length = self.batches.lengths[i]
            self.assertEqual(
                self.batches.memory[i * size : i * size + length], datagram
            )
            self.assertEqual(self.batches.peer(i), client.getsockname())
        self.assertEqual(self.receive(self.batches, 4), 1)
        self.assertEqual(self.receive(self.batches, 4), -1)
        self.assertEqual(ctypes.get_errno(), errno.EAGAIN)
        self.batches.failedRead()  # quietly: nothing was queued

    def test_truncatedAsRecvfrom(self) -> None:
        """
        A datagram longer than a buffer is cut to it, as C{recvfrom} with
        that size cuts it, and writes nothing into the next datagram's
        buffer; its length is what was read, not what was sent.
        """
        small = Batches(self.server.fileno(), 2, 16)
        one = self.client("127.0.0.2")
        one.sendto(b"A" * 100, self.server.getsockname())
        one.sendto(b"B", self.server.getsockname())
        self.assertEqual(self.receive(small, 2), 2)
        self.assertEqual(list(small.lengths[:2]), [16, 1])
        self.assertEqual(small.memory[:], b"A" * 16 + b"B" + b"\0" * 15)

    def test_sendBack(self) -> None:
        """
        L{Batches.send} sends each datagram back to its peer, as long as
        L{Batches.sendLengths} says.
        """
        one, two = self.client("127.0.0.2"), self.client("127.0.0.3")
        to = self.server.getsockname()
        one.sendto(b"hello", to)
        two.sendto(b"world", to)
        self.assertEqual(self.receive(self.batches, 4), 2)
        self.batches.sendLengths[0] = 5
        self.batches.sendLengths[1] = 3
        self.assertEqual(self.batches.send(0, 2), [])
        self.assertEqual(one.recv(100), b"hello")
        self.assertEqual(two.recv(100), b"wor")

    def test_sendFails(self) -> None:
        """
        L{Batches.send} says which answers it could not send.
        """
        one = self.client("127.0.0.2")
        one.sendto(b"hello", self.server.getsockname())
        self.assertEqual(self.receive(self.batches, 4), 1)
        self.batches.sendLengths[0] = 70000  # EMSGSIZE
        self.assertEqual(self.batches.send(0, 1), [0])


class AvailableTests(SynchronousTestCase):
    """
    Where the fast path runs, the batches are there: a Python or C library
    whose ctypes or structures no longer match fails here, not silently.
    """

    def test_available(self) -> None:
        if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
            raise self.skipTest("recvmmsg/sendmmsg are used on 64-bit Linux only")
        self.assertTrue(available())
