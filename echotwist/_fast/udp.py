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
from socket import MSG_DONTWAIT
from typing import Any

from echotwist._address import escape
from echotwist._fast import LoopHandler, register
from echotwist._fast.mmsg import Batches, available
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

    @ivar onePasses: after a pass by batches that read one datagram, how
        many passes read one datagram each, by C{recvfrom} and C{sendto},
        before a pass by batches looks again how many come at a time (see
        L{readPass}).
    """

    onePasses = 16

    # Whether the echo's next pass asks before reading (see readPass).
    _asking = False
    # What it asks: a poll object for the port's socket, made when the
    # port starts listening (see startListening).
    _queue: Any = None
    # Where the echo's pass reads and answers a batch of datagrams with
    # one system call each way, over IPv4 where the C library has them.
    _batches: Batches | None = None
    # How many of the next passes read one datagram each (see readPass).
    _onesLeft = 0
    # What those passes use, bound once when they start (see _ones): the
    # read's size, and the policy's verdicts, rate limiter, loop guard,
    # clock, byte counts and counts.
    _one: tuple[Any, ...] = ()

    def startListening(self) -> None:
        """
        Start listening, and make what the echo's pass of reads asks
        whether a datagram is queued, or its batches (see L{readPass}).
        """
        super().startListening()
        # Passes of one datagram start again from a pass by batches.
        self._onesLeft, self._one = 0, ()
        queue = select.poll()
        queue.register(self.socket.fileno(), select.POLLIN)
        self._queue = queue
        if self.addressFamily == socket.AF_INET and available():
            self._batches = Batches(
                self.socket.fileno(), self.maxDatagramsPerRead, self.maxPacketSize
            )

    def connectionLost(self, reason: Any = None) -> None:
        """
        Let go of the batches' memory with the socket.
        """
        self._batches = None
        self._onesLeft, self._one = 0, ()
        super().connectionLost(reason)

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
        source's rate, the loop guard, then the answer.  A datagram from
        an address the policy has not judged yet, or one it refuses,
        goes to the protocol (which judges, counts and logs it); so does
        an answer the socket could not send.  The loop guard takes the
        pass's time, read once, and is called only for a datagram whose
        digest it holds (see
        L{echotwist.datagram.EchoLoopGuard.tablesFor}), unless the pass
        handed one to the protocol, which checks at its own time.

        Where the C library has C{recvmmsg} and C{sendmmsg} (see
        L{echotwist._fast.mmsg}), the pass reads every queued datagram
        up to the bound with one call and sends its answers with another
        (L{_batchPass}); after such a pass that read one datagram, the next
        L{onePasses} passes read one datagram each, with C{recvfrom}, and
        answer it with C{sendto}, the checks in the same order, the loop
        guard called for it (one datagram gains nothing from its tables),
        and then a pass by batches looks again.  Those passes are made
        here, with what they use bound once when they start (L{_ones}),
        rather than in a method of their own.  For one datagram such a
        pass costs about 8,000 user-space instructions less than one by
        batches, its two C{ctypes} calls and its set-up for a batch (64 B
        x 1, see docs/performance.rst); a pass that reads one datagram
        asks nothing of the kernel after it (asking is a system call,
        reading into C{EAGAIN} costlier still), so a datagram queued
        behind it waits for the loop's next poll, which finds it at once.

        Elsewhere it reads and answers one datagram at a time with
        C{recvfrom} and C{sendto} (L{_echoPass}), where after a pass that
        read L{ASK_UP_TO} datagrams or fewer, the next one asks the kernel
        (C{poll} with no wait, on a poll object made once) before each
        read after its first whether a datagram is
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
        left = self._onesLeft
        if not left:
            protocol = self.protocol
            if type(protocol) is DatagramEcho and self.addressFamily == socket.AF_INET:
                batches = self._batches
                if batches is None:
                    return self._echoPass(protocol)
                return self._batchPass(protocol, batches)
            self._protocolPass()
            return False
        # A pass of one datagram (only ever set for the datagram echo over
        # IPv4, see _ones), here rather than in a method of its own: at
        # one datagram in flight it is a pass a datagram, and the call
        # and the look-ups of what it uses cost more than its checks.
        self._onesLeft = left - 1
        size, verdicts, limiter, loops, seconds, counted, counts = self._one
        sock = self.socket
        try:
            data, addr = sock.recvfrom(size)
        except OSError as e:
            endOfReads(e)
            return True
        host, port = addr
        try:
            verdict = verdicts.get(host)
            if port < FIRST_UNPRIVILEGED_PORT or not verdict or verdict[0]:
                # Refused, or not judged yet: the protocol's.
                self.protocol.datagramReceived(data, addr)
                return False
            if limiter is not None and not limiter.allow(verdict[1]):
                why = "over the rate limit"
            elif loops.isLoopAt(host, port, data, seconds()):
                why = "echo loop"
            else:
                try:
                    sent = sock.sendto(data, addr)  # whole, or OSError
                except OSError:
                    why = ""
                else:
                    # What DatagramPolicy.countAnswers(sent, sent, 1) counts,
                    # without its call.
                    counted["received"] += sent
                    counted["sent"] += sent
                    counts["answered"] = counts.get("answered", 0) + 1
                    return True
            _unanswered(self.protocol, why, data, addr, verdict[1])
        except Exception:
            log.failure("Unhandled error in {protocol!r}", protocol=self.protocol)
        return False

    def _ones(self, echo: DatagramEcho) -> None:
        """
        Make the next L{onePasses} passes read one datagram each (see
        L{readPass}), and bind what they use of the policy of C{echo}, the
        port's datagram echo, whose parts are made with it and stay (its
        tables change in place).  Not the socket's methods: the port's
        socket is looked up each pass, as every other pass does.
        """
        policy = echo.policy
        self._one = (
            self.maxPacketSize,
            policy.verdicts,
            policy.limiter,
            policy.loops,
            policy.clock.seconds,
            policy.bytes,
            policy.counts,
        )
        self._onesLeft = self.onePasses

    def _batchPass(self, echo: DatagramEcho, batches: Batches) -> bool:
        """
        The pass of L{readPass} for the datagram echo over IPv4 with
        L{Batches}: one C{recvmmsg} reads what is queued, up to the bound,
        and each run of answers the checks let through leaves by one
        C{sendmmsg}, sent before anything else is answered or refused, so
        answers leave in the order their datagrams came.  The checks are
        L{_echoPass}'s, in the same order.  The run is sent before the loop
        guard is called too, if it holds an answer of the same digest: one
        C{sendmmsg} could not send is then forgotten by the guard before
        it judges the next, as when each answer leaves at once.
        """
        reads = self.maxDatagramsPerRead
        got = batches.recvmmsg(min(reads, batches.count), MSG_DONTWAIT, None)
        if got <= 0:
            if got < 0:
                batches.failedRead()
            return True
        if got == 1:
            # One at a time: the next passes read one each (see readPass).
            self._ones(echo)
        policy = echo.policy
        verdicts, limiter, loops = policy.verdicts, policy.limiter, policy.loops
        now = policy.clock.seconds()
        tables = loops.tablesFor(now, got)
        newer, older = tables or ({}, {})
        clean, fast, first = True, tables is not None, (now, 0)
        memory, size, sendLengths = batches.memory, batches.size, batches.sendLengths
        peers, known = batches.peers, batches.known
        answerable = group = ""  # the last answered, compared (see readPass)
        start = sent = answered = 0  # answers from start on wait for sendmmsg
        # The digests of answers gathered after the loop guard's call; those
        # gathered without it have the pass's own entry, first.
        held: set[int] | None = None
        for i, length in enumerate(batches.lengths[:got]):
            addr = known.get(peers[i]) or batches.peer(i)
            host, port = addr
            o = i * size
            try:
                why = ""
                if host != answerable or port < FIRST_UNPRIVILEGED_PORT:
                    verdict = verdicts.get(host)
                    if port < FIRST_UNPRIVILEGED_PORT or not verdict or verdict[0]:
                        # Refused, or not judged yet: the protocol's (see tablesFor).
                        clean = fast = False
                        answerable, why = "", _PROTOCOL
                    else:
                        answerable, group = host, verdict[1]
                if not why:
                    head = memory[o : o + (length if length < KEY else KEY)]
                    key = hash((host, port, head))
                    if limiter is not None and not limiter.allow(group):
                        why = "over the rate limit"
                    elif fast and key not in older and key not in newer:
                        newer[key] = first
                    else:
                        if start < i and (
                            newer.get(key) is first or (held and key in held)
                        ):
                            # The guard counts only answers that left: one
                            # of this digest that sendmmsg could not send is
                            # forgotten (see DatagramEcho.answer) before the
                            # guard is asked, as when each leaves at once.
                            failed, unsent = _sendRun(echo, batches, start, i)
                            start, clean = i, clean and not failed
                            answered, sent = answered - failed, sent - unsent
                        if loops.isLoopAt(host, port, memory[o : o + length], now):
                            why = "echo loop"
                        elif held is None:
                            held = {key}
                        else:
                            held.add(key)
                if not why:
                    sendLengths[i] = length
                    sent += length
                    answered += 1
                    continue
                failed, unsent = _sendRun(echo, batches, start, i)
                start, clean = i + 1, False
                answered, sent = answered - failed, sent - unsent
                if why is _PROTOCOL:
                    echo.datagramReceived(memory[o : o + length], addr)
                else:
                    _unanswered(echo, why, memory[o : o + length], addr, group)
            except Exception:
                clean = False
                failed, unsent = _sendRun(echo, batches, start, i)
                start = i + 1
                answered, sent = answered - failed, sent - unsent
                log.failure("Unhandled error in {protocol!r}", protocol=echo)
        failed = unsent = 0
        if start < got:
            done = batches.sendmmsg(batches.answersAt[start], got - start, 0)
            if done < got - start:
                # Sent in part, or not at all: the rest as _sendRun sends.
                failed, unsent = _sendRun(echo, batches, start + max(done, 0), got)
        policy.countAnswers(sent - unsent, sent - unsent, answered - failed)
        return clean and not failed

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


#: What the batch pass's checks say of a datagram that goes to the protocol.
_PROTOCOL = "the protocol's"


def _sendRun(
    echo: DatagramEcho, batches: Batches, start: int, end: int
) -> tuple[int, int]:
    """
    Send the answers from C{start} up to C{end} of a batch pass (see
    L{EchoPassPort._batchPass}); one C{sendmmsg} could not send goes
    through the transport's write, as one C{sendto} could not send does
    (see L{_unanswered}).  An error that write raises is logged, as the
    other passes log it, and raises no further: the caller has counted
    the run as sent, and would send it again.

    @return: how many answers C{sendmmsg} did not send, and their bytes.
    """
    if start >= end:
        return 0, 0
    failed = batches.send(start, end)
    unsent = 0
    for i in failed:
        length = batches.sendLengths[i]
        unsent += length
        o = i * batches.size
        try:
            _unanswered(echo, "", batches.memory[o : o + length], batches.peer(i), "")
        except Exception:
            log.failure("Unhandled error in {protocol!r}", protocol=echo)
    return len(failed), unsent


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
