# -*- test-case-name: tests.test__fast_udp,tests.test__fast_reactor -*-
"""
The fast path of the datagram echo: a UDP port that answers the datagram
echo in its own pass of reads, and that echotwist's reactor calls
directly (see L{echotwist._fast.loopHandlers}).

The bound on datagrams per pass and the keeping of an IPv6 peer's scope
are not speed but safety and correctness: they are
L{echotwist.datagram.DatagramPort}'s, which this port is, and which
serves on any other reactor.
"""

from __future__ import annotations

import select
import socket
from typing import Any

from echotwist._address import escape
from echotwist._fast import LoopHandler, register
from echotwist.datagram import (
    FIRST_UNPRIVILEGED_PORT,
    DatagramEcho,
    DatagramPort,
    endOfReads,
    formatSource,
    log,
)
from echotwist.datagram import LOOP_KEY_BYTES as KEY

__all__ = ["ASK_UP_TO", "EchoPassPort"]

#: A pass of the echo's reads that read this many datagrams or fewer makes
#: the next pass ask before each read after its first whether a datagram
#: is queued (see L{EchoPassPort.readPass}): asking costs about 1,560
#: user-space instructions, reading into C{EAGAIN} about 8,870, so asking
#: before each of up to five reads costs less.
ASK_UP_TO = 5


class EchoPassPort(DatagramPort):
    """
    echotwist's UDP port (see L{DatagramPort}) whose pass of reads answers
    the datagram echo over IPv4 itself (see L{readPass}).
    """

    # Whether the echo's next pass asks before reading (see readPass).
    _asking = False
    # What it asks: a poll object for the port's socket, made when the
    # port starts listening (see startListening).
    _queue: Any = None

    def startListening(self) -> None:
        """
        Start listening, and make what the echo's pass of reads asks
        whether a datagram is queued (see L{readPass}).
        """
        super().startListening()
        queue = select.poll()
        queue.register(self.socket.fileno(), select.POLLIN)
        self._queue = queue

    def doRead(self) -> None:
        """
        Read and answer up to C{maxDatagramsPerRead} datagrams; the rest
        wait for the next pass of the reactor loop.
        """
        self.readPass()

    def readPass(self) -> bool:
        """
        What L{doRead} does; echotwist's reactor calls it directly.

        For the datagram echo over IPv4 (L{DatagramEcho} itself), the
        pass answers in this loop what L{DatagramEcho.datagramReceived}
        would answer, with the same checks in the same order, and counts
        the bytes and answers once a pass: the privileged-port check and
        the address's verdict (remembered by the policy; the pass keeps
        the last answered address's until it hands a datagram to the
        protocol, the only thing that adds or forgets verdicts), the
        source's rate, the loop guard, then C{sendto}.  A datagram from
        an address the policy has not judged yet, or one it refuses,
        goes to the protocol (which judges, counts and logs it); so does
        an answer C{sendto} could not send.  The loop guard takes the
        pass's time, read once, and is called only for a datagram whose
        digest it holds (see
        L{echotwist.datagram.EchoLoopGuard.tablesFor}), unless the pass
        handed one to the protocol, which checks at its own time.

        After a pass that read L{ASK_UP_TO} datagrams or fewer, the next
        one asks the kernel (C{poll} with no wait, on a poll object made
        once) before each read after its first whether a datagram is
        queued, and ends when none is: reading into C{EAGAIN} costs Python
        about 8,900 instructions (the exception, its message decoded from
        the locale), asking about 1,500 (C{FIONREAD} by C{fcntl.ioctl}
        cost 2,500, and said 0 for an empty datagram too), and a
        closed-loop client's datagram comes alone.  After a pass that read
        more, the next reads until C{EAGAIN}, which costs less than asking
        before each of several.

        @return: whether every datagram of the pass was answered in this
            loop (nothing was refused, logged or handed on).
        """
        protocol = self.protocol
        if type(protocol) is DatagramEcho and self.addressFamily == socket.AF_INET:
            return self._echoPass(protocol)
        self._protocolPass()
        return False

    def _echoPass(self, echo: DatagramEcho) -> bool:
        """The pass of L{readPass} for the datagram echo over IPv4."""
        policy = echo.policy
        verdicts, limiter, loops = policy.verdicts, policy.limiter, policy.loops
        now = policy.clock.seconds()
        recvfrom, sendto = self.socket.recvfrom, self.socket.sendto
        size, reads = self.maxPacketSize, self.maxDatagramsPerRead
        # Ask before the second read on, or never (no read is the reads'th).
        ask, queued = 1 if self._asking else reads, self._queue.poll
        # The loop guard is called only for a digest it holds (see tablesFor).
        tables = loops.tablesFor(now, reads)
        newer, older = tables or ({}, {})
        clean, fast, first = True, tables is not None, (now, 0)
        answerable = group = ""  # the last answered, compared (see readPass)
        sent = answered = n = 0
        try:
            for n in range(reads):
                if n >= ask and not queued(0):
                    break
                try:
                    data, addr = recvfrom(size)
                except OSError as e:
                    endOfReads(e)
                    break
                host, port = addr
                try:
                    if host != answerable or port < FIRST_UNPRIVILEGED_PORT:
                        verdict = verdicts.get(host)
                        if port < FIRST_UNPRIVILEGED_PORT or not verdict or verdict[0]:
                            # Refused, or not judged yet: the protocol's (see tablesFor).
                            clean = fast = False
                            answerable = ""
                            echo.datagramReceived(data, addr)
                            continue
                        answerable, group = host, verdict[1]
                    why = ""
                    key = hash((host, port, data[:KEY]))
                    if limiter is not None and not limiter.allow(group):
                        why = "over the rate limit"
                    elif fast and key not in older and key not in newer:
                        newer[key] = first
                    elif loops.isLoopAt(host, port, data, now):
                        why = "echo loop"
                    if not why:
                        try:
                            sent += sendto(data, addr)  # whole, or OSError
                            answered += 1
                            continue
                        except OSError:
                            pass
                    clean = False
                    _unanswered(echo, why, data, addr, group)
                except Exception:
                    clean = False
                    log.failure("Unhandled error in {protocol!r}", protocol=echo)
        finally:
            policy.countAnswers(sent, sent, answered)
            self._asking = n <= ASK_UP_TO
        return clean


def _unanswered(
    echo: DatagramEcho, why: str, data: bytes, addr: tuple[str, int], group: str
) -> None:
    """
    What the datagram echo does with a datagram from C{addr}, whose source
    group is C{group}, that a pass did not answer: refuse it for C{why}, or
    if C{why} is empty, answer it through the transport's write, as
    C{sendto} could not (the write retries on EINTR, takes ECONNREFUSED as
    sent, and raises what the protocol counts as a failed answer).
    """
    host, port = addr
    echo.policy.bytes["received"] += len(data)
    if not why:
        echo.answer(data, addr, host, port)
    elif why == "echo loop":
        echo.refused(why, escape(formatSource(host, port)))
    else:
        echo.refused(why, group)


# The loop calls the port's pass of reads instead of its doRead.
register(EchoPassPort, LoopHandler(readPass=EchoPassPort.readPass))
