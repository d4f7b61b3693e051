"""
The fast path's TLS transport (L{echotwist._fast.tls.DirectTLSServer}):
small reads, sent at once when nothing is queued, paused as soon as the
kernel refuses part of a write.
"""

from __future__ import annotations

import socket

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests._tools import requireTLS

try:
    from echotwist._fast.tls import DirectTLSServer
    from echotwist.tls import TLS_READ_SIZE
except ImportError:  # TLS is an extra; setUp skips (or, in CI, fails)
    pass


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class DirectTLSServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        requireTLS()
        self.reactor = MemoryReactorClock()
        ours, self.peer = socket.socketpair()
        self.addCleanup(self.peer.close)
        ours.setblocking(False)
        self.peer.setblocking(False)
        self.transport = DirectTLSServer(
            ours, Protocol(), ("127.0.0.1", 1), None, 1, self.reactor
        )
        self.addCleanup(ours.close)
        self.producer = _Producer()
        self.transport.registerProducer(self.producer, True)

    def received(self) -> bytes:
        data = bytearray()
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                return bytes(data)
            data += chunk

    def test_readsARecordAndAHalf(self) -> None:
        self.assertEqual(self.transport.bufferSize, TLS_READ_SIZE)
        self.assertEqual(TLS_READ_SIZE, 24 * 1024)

    def test_sentAtOnceWhenNothingIsQueued(self) -> None:
        self.transport.write(b"record")
        self.assertEqual(self.received(), b"record")
        self.assertNotIn(self.transport, self.reactor.getWriters())
        self.assertEqual(self.producer.calls, [])

    def drain(self, expected: int) -> bytes:
        """
        Read at the peer, and let the transport write, until C{expected}
        bytes arrived.
        """
        got = bytearray(self.received())
        for _ in range(10000):
            if len(got) >= expected:
                break
            self.transport.doWrite()
            got += self.received()
        return bytes(got)

    def test_kernelFullPausesAtOnce(self) -> None:
        """
        When the kernel takes none of a write, however small, the bytes are
        queued and the producer is paused at once (Twisted's transport would
        wait for a buffer's worth); it resumes once they are sent.
        """
        filler = 0
        try:
            while True:
                filler += self.transport.socket.send(b"\0" * 65536)
        except BlockingIOError:
            pass
        self.transport.write(b"small")
        self.assertEqual(self.producer.calls, ["pause"])
        self.assertIn(self.transport, self.reactor.getWriters())
        got = self.drain(filler + 5)
        self.assertEqual(got[filler:], b"small")
        self.assertEqual(self.producer.calls, ["pause", "resume"])

    def test_restQueuedInOrder(self) -> None:
        """
        What the kernel does not take of a write is queued, and every later
        write waits behind it.
        """
        big = bytes(range(256)) * 16384  # 4 MiB: more than a socketpair holds
        self.transport.write(big)
        self.assertEqual(self.producer.calls[:1], ["pause"])
        self.transport.write(b"after")
        self.assertEqual(self.drain(len(big) + 5), big + b"after")
        self.assertEqual(self.producer.calls[-1], "resume")

    def test_errorIsLeftToTheReactor(self) -> None:
        """
        A send that fails for another reason than a full buffer queues the
        bytes: the reactor's next write attempt finds the loss and reports
        it as for any write.
        """
        self.peer.close()
        self.transport.write(b"lost")
        self.assertIn(self.transport, self.reactor.getWriters())
        self.assertEqual(self.transport._tempDataLen, 4)
