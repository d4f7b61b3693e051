"""
echotwist-probe's datagram payloads and books (L{echotwist.probe.payload}):
what was sent, answered, lost, duplicated and reordered.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.payload import (
    ANSWERED,
    HEADER,
    LATE,
    DatagramBook,
    Payloads,
    ProbeFailure,
)


class DatagramBookTests(SynchronousTestCase):
    """
    The UDP books: nothing but an unchanged echo of a datagram of this run
    within the timeout is an answer.
    """

    def setUp(self) -> None:
        self.book = DatagramBook(Payloads(seed=5, size=100), timeout=1.0)

    def test_answer(self) -> None:
        datagram = self.book.next(10.0)
        self.assertEqual(len(datagram), 100)
        self.assertEqual(self.book.received(datagram, 10.25), (0, ANSWERED))
        self.assertEqual(self.book.rtt, {0: 0.25})

    def test_eachDatagramDiffers(self) -> None:
        first, second = self.book.next(1.0), self.book.next(1.0)
        self.assertNotEqual(first[HEADER.size :], second[HEADER.size :])

    def test_lossAndLate(self) -> None:
        datagram = self.book.next(0.0)
        self.book.next(0.5)
        self.assertEqual(self.book.expire(0.99), [])
        self.assertEqual(self.book.expire(1.0), [0])
        self.assertEqual(self.book.received(datagram, 1.2), (0, LATE))
        self.assertEqual(
            (self.book.lost, self.book.late, self.book.answered), (1, 1, 0)
        )
        self.assertEqual(self.book.expire(1.6), [1])

    def test_duplicate(self) -> None:
        datagram = self.book.next(0.0)
        self.book.received(datagram, 0.1)
        self.assertIsNone(self.book.received(datagram, 0.2))
        self.assertEqual((self.book.duplicates, self.book.answered), (1, 1))

    def test_reordered(self) -> None:
        first, second = self.book.next(0.0), self.book.next(0.0)
        self.book.received(second, 0.1)
        self.assertEqual(self.book.received(first, 0.2), (0, ANSWERED))
        self.assertEqual((self.book.reordered, self.book.answered), (1, 2))

    def test_corruptByteNamed(self) -> None:
        datagram = bytearray(self.book.next(0.0))
        datagram[60] ^= 1
        with self.assertRaises(ProbeFailure) as caught:
            self.book.received(bytes(datagram), 0.1)
        self.assertIn(
            "datagram 0 differs from what was sent at byte 60", str(caught.exception)
        )

    def test_truncated(self) -> None:
        datagram = self.book.next(0.0)
        with self.assertRaises(ProbeFailure) as caught:
            self.book.received(datagram[:50], 0.1)
        self.assertIn("at byte 50 (50 bytes back of 100)", str(caught.exception))

    def test_notAnEcho(self) -> None:
        """
        Another run's datagram, one never sent, or other bytes altogether
        are never taken for answers.
        """
        other = DatagramBook(Payloads(seed=6, size=100), timeout=1.0)
        self.book.next(0.0)
        for datagram in [other.next(0.0), bytes(100), b"x", b"HTTP/1.1 400\r\n" * 3]:
            with self.assertRaises(ProbeFailure):
                self.book.received(datagram, 0.1)
        unsent = Payloads(seed=5, size=100).datagram(7, 0.0)
        with self.assertRaises(ProbeFailure):
            self.book.received(unsent, 0.1)
        self.assertEqual(self.book.answered, 0)
