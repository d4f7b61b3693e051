# -*- test-case-name: tests.test__fast_tcp,tests.test__fast_reactor -*-
"""
The kernel fast paths of the TCP echo, part of echotwist's fast path (see
L{echotwist._fast}): where an echo skips Twisted's write buffer, or Python
altogether.

On Linux, a plain TCP connection whose client sends in bulk (reads of 16
KiB or more) echoes in the kernel: each read splices the bytes from the
socket into a pipe and from the pipe straight back into the socket
(splice(2)), so they are never copied into Python and out again; at 100
KiB messages the copies are most of the server's work.  One pipe serves
every connection and is empty between reads.  Small messages keep recv()
and send(), which cost less there.  TCP under echotwist's PROXY wrapper
splices as well, past the header; TLS and UNIX connections do not.  The
direct send itself stays in L{echotwist.stream.Echo.dataReceived} (a call
more per message would cost), for the transports that allow it: this
module's.

L{SplicingServer} is the TCP transport that splices, on echotwist's
reactor only (elsewhere a TCP listener keeps Twisted's C{tcp.Server}, and
the echo its C{write()}); L{plainEcho} says which connections
L{echotwist._fast.reactor.FastEPollReactor} may echo in its own loop,
without the transport's or the protocol's code, and L{finishRead} hands
the protocol a read that loop could not finish.
"""

from __future__ import annotations

import os
from errno import EINVAL, ENOBUFS, ENOSYS
from io import FileIO

from twisted.internet import main, tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger

from echotwist._fast import LoopHandler, register
from echotwist._twisted import nothingQueued
from echotwist.stream import DIRECT_READ_SIZE, Echo, passesThrough

__all__ = [
    "SplicingServer",
    "bulkEcho",
    "finishRead",
    "finishSplice",
    "plainEcho",
    "plainRead",
    "splice",
]

# Stream connection events keep the namespace they had before the split of
# echotwist.stream: operators filter on it, and text log lines stay as long
# as README's log volume says.
log = Logger(namespace="echotwist.stream")

try:
    from fcntl import F_SETPIPE_SZ, fcntl
    from os import SPLICE_F_MOVE, SPLICE_F_NONBLOCK, splice

    _SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
except ImportError:  # not Linux
    splice = None  # type: ignore[assignment]
    _SPLICE_FLAGS = 0


class _SharedPipe:
    """
    The one pipe a process splices every connection's echo through.

    It is empty between reads: each read moves what one connection sent
    into it, and that same read moves it all out again, to the connection
    (and whatever the socket would not take, into the transport's write
    buffer).  Anything unexpected on the way throws the pipe away, so
    bytes can never be carried over to the next connection.
    """

    fds: tuple[int, int] | None = None
    #: Whether splicing works here at all (Linux; a socket type the kernel
    #: can splice).  Once it fails it is not tried again.
    usable = splice is not None

    @classmethod
    def get(cls) -> tuple[int, int] | None:
        if cls.fds is None and cls.usable:
            try:
                readFd, writeFd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                # Room for one whole read; the default is 64 KiB.
                fcntl(writeFd, F_SETPIPE_SZ, DIRECT_READ_SIZE)
            except OSError:
                pass
            cls.fds = (readFd, writeFd)
        return cls.fds

    @classmethod
    def discard(cls) -> None:
        fds, cls.fds = cls.fds, None
        if fds is not None:
            for fd in fds:
                os.close(fd)


def _spliceRead(
    protocol: Echo, transport: SplicingServer, pipe: tuple[int, int]
) -> ConnectionLost | ConnectionDone | None:
    """
    Echo what the client sent without it entering user space: splice it
    from the socket into the shared pipe and from the pipe back into
    the socket.  What the socket does not take is read out of the pipe
    and queued on the transport, and reading pauses, as for a direct
    send.  Only called while nothing is queued on the transport.

    @param protocol: the connection's L{Echo}, in bulk.
    @param transport: its transport.
    @param pipe: the shared pipe's read and write ends.

    @return: what L{tcp.Connection.doRead} returns: None, or why the
        connection is over.
    """
    readFd, writeFd = pipe
    fd = transport.socket.fileno()
    try:
        # Positional arguments: keywords would cost a parse per call.
        received = splice(fd, writeFd, DIRECT_READ_SIZE, None, None, _SPLICE_FLAGS)
    except BlockingIOError:
        # The socket is readable (the reactor said so), yet there is
        # nothing to splice: TCP urgent data (MSG_OOB), at whose mark
        # splice(2) stops, for ever, while epoll goes on reporting the
        # socket readable: a busy loop and a stalled echo.  A plain read,
        # recv(), steps over the urgent byte (out of band, so not echoed).
        return plainRead(transport)
    except OSError as e:
        if e.errno in (EINVAL, ENOSYS):
            # This kernel cannot splice from a socket: read the plain
            # way from now on.
            _SharedPipe.usable = False
            _SharedPipe.discard()
            log.warn(
                "This kernel cannot splice from a socket ({error});"
                " echoing through user space",
                event="splice.unavailable",
                error=os.strerror(e.errno),
            )
            return plainRead(transport)
        return main.CONNECTION_LOST
    if not received:
        return main.CONNECTION_DONE
    try:
        sent = spliceOut(fd, pipe, received)
    except BaseException:
        # Whatever interrupted it, the pipe holds this connection's bytes.
        _SharedPipe.discard()
        raise
    return finishSplice(protocol, transport, pipe, received, sent)


def spliceOut(fd: int, pipe: tuple[int, int], received: int) -> int:
    """
    Splice the C{received} bytes just spliced into the shared pipe back
    out to the socket C{fd}.

    @return: how many it took; 0 if it would block (or ENOBUFS, as
        Twisted's writes take it), -1 if it failed (the client is gone).
    """
    try:
        return int(splice(pipe[0], fd, received, None, None, _SPLICE_FLAGS))
    except BlockingIOError:
        return 0
    except OSError as e:
        return 0 if e.errno == ENOBUFS else -1


def finishSplice(
    protocol: Echo,
    transport: SplicingServer,
    pipe: tuple[int, int],
    received: int,
    sent: int,
) -> ConnectionLost | ConnectionDone | None:
    """
    Count a spliced echo and finish it: what the socket did not take is
    read out of the pipe and queued on the transport, and reading pauses,
    as for a direct send.

    @param protocol: the connection's L{Echo}.
    @param transport: its transport.
    @param pipe: the shared pipe, holding C{received - sent} bytes of it.
    @param received: how many bytes were spliced into the pipe (1 or more).
    @param sent: how many of them went back out (see L{spliceOut}).
    @return: what L{tcp.Connection.doRead} returns: None, or why the
        connection is over.
    """
    protocol.splicedEcho(received)
    if sent == received:
        return None
    try:
        unsent = received - max(sent, 0)
        rest = os.read(pipe[0], unsent)
        if len(rest) != unsent:
            raise RuntimeError(f"read {len(rest)} of {unsent} bytes from the pipe")
    except BaseException:
        _SharedPipe.discard()
        raise
    if sent < 0:
        return main.CONNECTION_LOST
    protocol.sendRest(transport, rest, 0)
    return None


def plainRead(transport: tcp.Server) -> ConnectionLost | ConnectionDone | None:
    """
    Read as L{tcp.Server} does.
    """
    # Twisted before 26 has doRead untyped: returning it would be Any.
    result: ConnectionLost | ConnectionDone | None = tcp.Server.doRead(transport)
    return result


def _inBulk(transport: tcp.Server) -> Echo | None:
    """
    The L{Echo} on C{transport}, directly or under a wrapper that passes
    bytes through, if it is in bulk, sends directly to C{transport}, and
    nothing is queued there: one whose next read may be spliced.
    """
    protocol = transport.protocol
    if type(protocol) is not Echo and passesThrough(protocol):
        # Past the header the wrapper only passes bytes on.
        protocol = protocol.wrappedProtocol
    if (
        isinstance(protocol, Echo)
        and protocol.inBulk
        and protocol.sendsDirectlyTo(transport)
        and nothingQueued(transport)
    ):
        return protocol
    return None


class _RawSocket(FileIO):
    """
    A socket's descriptor as an unbuffered file (see L{plainEcho}).  Its
    one slot holds the C{name} that C{FileIO} sets, which a plain
    C{FileIO} keeps in a dictionary of its own: about 80 bytes a
    connection instead of about 270.
    """

    __slots__ = ("name",)


class SplicingServer(tcp.Server):
    """
    A TCP server transport that lets its L{Echo} echo in the kernel (see
    L{_spliceRead}) whenever nothing is queued to send; otherwise, and
    for any other protocol, it reads as L{tcp.Server} does.  On
    echotwist's reactor, set as a C{tcp.Port}'s C{transport} when the
    port's factory builds L{Echo} protocols directly or under echotwist's
    PROXY wrapper (not TLS).
    """

    #: L{Echo} sends directly on it (see L{echotwist.stream.sendsDirectly}).
    echoSendsDirectly = True

    #: The socket's descriptor as an unbuffered file that does not own it
    #: (see L{plainEcho}), made the first time the connection is plain.
    _rawFile: _RawSocket | None = None

    def doRead(self) -> ConnectionLost | ConnectionDone | None:  # type: ignore[override]
        """
        Splice this read if its L{Echo} is in bulk and nothing is queued;
        read as L{tcp.Server} does otherwise.
        """
        protocol = _inBulk(self)
        if protocol is not None:
            pipe = _SharedPipe.get()
            if pipe is not None:
                return _spliceRead(protocol, self, pipe)
        return plainRead(self)


def plainEcho(transport: object) -> Echo | None:
    """
    Whether a transport's next read can be echoed without any of the
    protocol's code: an L{Echo} itself (no subclass, no wrapper) on a
    L{SplicingServer}, sending directly, nothing queued, not paused, not
    closing, not in bulk.  For L{echotwist._fast.reactor.FastEPollReactor},
    which then reads, counts and sends in its own loop.

    @return: the L{Echo}, its C{loopRead} set: the C{readinto} of the
        socket's descriptor as a C{FileIO} that does not close it, recv()
        without flags into the loop's buffer, returning how many bytes it
        read, None if none were there; or None.
    """
    if (
        type(transport) is not SplicingServer
        or not transport.connected
        or transport.disconnecting
    ):
        return None
    protocol = transport.protocol
    if (
        type(protocol) is Echo
        and protocol.sendsDirectlyTo(transport)
        and not protocol.inBulk
        and protocol.undisturbed
        and nothingQueued(transport)
    ):
        if protocol.loopRead is None:
            # Reading into one reused buffer spares the allocation of a
            # DIRECT_READ_SIZE bytes object and its shrinking to the
            # read's size, per message; FileIO.readinto costs less per
            # call than the socket object's recv_into (no argument tuple
            # to parse).  The file never closes the descriptor: the
            # transport does.
            raw = transport._rawFile
            if raw is None:
                raw = transport._rawFile = _RawSocket(
                    transport.fileno(), "r", closefd=False
                )
            protocol.loopRead = raw.readinto
        return protocol
    return None


def bulkEcho(transport: object) -> Echo | None:
    """
    Whether a transport's next read can be spliced without any of the
    transport's or the protocol's code: what L{SplicingServer.doRead}
    would splice (an L{Echo}, directly or under echotwist's PROXY wrapper,
    in bulk, sending directly, nothing queued), not paused, not closing,
    once the shared pipe exists.  For
    L{echotwist._fast.reactor.FastEPollReactor}, which then splices in
    and out in its own loop, and hands anything else to L{finishSplice}.

    @return: the L{Echo}; or None.
    """
    if (
        type(transport) is not SplicingServer
        or not transport.connected
        or transport.disconnecting
        or _SharedPipe.fds is None
    ):
        return None
    protocol = _inBulk(transport)
    if protocol is not None and protocol.undisturbed:
        return protocol
    return None


def finishRead(
    protocol: Echo, data: bytes | None, sent: int | OSError | None
) -> ConnectionLost | ConnectionDone | None:
    """
    Finish a read that L{echotwist._fast.reactor.FastEPollReactor}'s
    plain echo (see L{plainEcho}) began but could not end the plain way.

    @param protocol: the connection's L{Echo}.
    @param data: what recv() returned, or None if it failed.
    @param sent: what send() of C{data} returned or raised, or None if
        it was not tried (C{data} is empty, or a bulk read).
    @return: what L{tcp.Connection.doRead} returns: None, or why the
        connection is over.
    """
    if data is None:
        return main.CONNECTION_LOST
    if not data:
        return main.CONNECTION_DONE
    if sent is None:
        protocol.dataReceived(data)
        return None
    protocol.partlySent(data, sent)
    return None


# The loop looks after each ordinary event whether it echoes the next read
# itself, plainly or by splicing (see echotwist._fast.reactor).
register(SplicingServer, LoopHandler(tracked=True))
