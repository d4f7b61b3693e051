# -*- test-case-name: tests.test_probe_payload -*-
"""
What the probe sends, and the books of a UDP run.

Every probe is C{--size} bytes taken from one block of random bytes drawn
from C{--seed}, at a place that depends on the probe's sequence number, so
each probe differs from the one before and an echo of a stale or another
probe's payload is caught.  Over UDP each datagram starts with a header: a
magic, the run's identifier, the sequence number and the send time.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

#: Where a probe's window may start in the block.
_SPREAD = 65536
#: Magic, run identifier, sequence number, send time (float seconds).
HEADER = struct.Struct("!4s4sQd")
MAGIC = b"ETP\x01"


class Payloads:
    """
    The bytes of each probe of one run.
    """

    def __init__(self, seed: int, size: int) -> None:
        self.seed = seed
        self.size = size
        rng = random.Random(seed)
        self.block = rng.randbytes(size + _SPREAD)
        self.runId = rng.randbytes(4)

    def _start(self, seq: int) -> int:
        return (seq * 40503) % _SPREAD

    def stream(self, seq: int) -> bytes:
        """
        Probe C{seq}'s payload over a stream.
        """
        start = self._start(seq)
        return self.block[start : start + self.size]

    def datagram(self, seq: int, sentAt: float) -> bytes:
        """
        Datagram C{seq}, sent at C{sentAt}.
        """
        start = self._start(seq)
        return (
            HEADER.pack(MAGIC, self.runId, seq, sentAt)
            + self.block[start : start + self.size - HEADER.size]
        )


def firstDifference(expected: bytes, got: bytes) -> int | None:
    """
    The offset of the first byte where C{got} differs from C{expected}
    (C{got} longer or shorter counts at the end of the shorter); C{None}
    when they are equal.
    """
    if expected == got:
        return None
    for offset, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return offset
    return min(len(expected), len(got))


class ProbeFailure(Exception):
    """
    The target answered something that is not an echo: the message is one
    line (without the target's name) saying what came back.
    """


#: States of a datagram in L{DatagramBook}.
OUTSTANDING, ANSWERED, LOST, LATE = range(4)


@dataclass
class DatagramBook:
    """
    The books of a UDP run: which datagram was sent when, and what came
    back.  An answer is a datagram that comes back whole and unchanged
    within C{timeout}; one that comes back after that is late (and stays
    lost), a second copy is a duplicate, one older than the newest answer
    so far is reordered (and still an answer).  Nothing else is ever
    taken for an answer.

    @ivar sentAt: send time of each datagram, by sequence number.
    @ivar state: L{OUTSTANDING}, L{ANSWERED}, L{LOST} or L{LATE}, by
        sequence number.
    """

    payloads: Payloads
    timeout: float
    sentAt: list[float] = field(default_factory=list)
    state: bytearray = field(default_factory=bytearray)
    rtt: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    lost: int = 0
    _newest: int = -1
    _expireFrom: int = 0

    @property
    def sent(self) -> int:
        """
        Datagrams sent.
        """
        return len(self.sentAt)

    @property
    def answered(self) -> int:
        """
        Datagrams answered within the timeout.
        """
        return len(self.rtt)

    def next(self, now: float) -> bytes:
        """
        The next datagram to send, sent at C{now}.
        """
        seq = len(self.sentAt)
        self.sentAt.append(now)
        self.state.append(OUTSTANDING)
        return self.payloads.datagram(seq, now)

    def received(self, datagram: bytes, now: float) -> tuple[int, int] | None:
        """
        Account for C{datagram}, received at C{now}.

        @return: C{(seq, state)} for a datagram of this run: L{ANSWERED}
            for an answer, L{LATE} for a late one; C{None} for a duplicate.
        @raise ProbeFailure: it is not an echo of a datagram of this run.
        """
        if len(datagram) < HEADER.size:
            raise ProbeFailure(
                f"answered a datagram of {len(datagram)} bytes that is not an echo"
            )
        magic, runId, seq, _ = HEADER.unpack_from(datagram)
        if magic != MAGIC or runId != self.payloads.runId or seq >= self.sent:
            raise ProbeFailure(
                f"answered a datagram of {len(datagram)} bytes that is not an echo"
                " of any datagram sent"
            )
        expected = self.payloads.datagram(seq, self.sentAt[seq])
        offset = firstDifference(expected, datagram)
        if offset is not None:
            raise ProbeFailure(
                f"answer to datagram {seq} differs from what was sent at byte"
                f" {offset} ({len(datagram)} bytes back of {len(expected)})"
            )
        state = self.state[seq]
        if state in (ANSWERED, LATE):
            self.duplicates += 1
            return None
        if state == LOST:
            self.state[seq] = LATE
            self.late += 1
            return seq, LATE
        self.state[seq] = ANSWERED
        self.rtt[seq] = now - self.sentAt[seq]
        if seq < self._newest:
            self.reordered += 1
        self._newest = max(self._newest, seq)
        return seq, ANSWERED

    def expire(self, now: float) -> list[int]:
        """
        Count as lost every datagram still unanswered C{timeout} after it
        was sent; the sequence numbers newly lost.
        """
        lost = []
        index = self._expireFrom
        while index < self.sent and self.sentAt[index] + self.timeout <= now:
            if self.state[index] == OUTSTANDING:
                self.state[index] = LOST
                self.lost += 1
                lost.append(index)
            index += 1
        self._expireFrom = index
        return lost

    def outstanding(self) -> int:
        """
        Datagrams neither answered nor lost yet.
        """
        return self.sent - self.answered - self.lost
