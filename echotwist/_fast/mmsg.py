# -*- test-case-name: tests.test__fast_mmsg,tests.test__fast_udp -*-
"""
Linux's C{recvmmsg(2)} and C{sendmmsg(2)} for an IPv4 UDP port: every
datagram queued (up to a pass's bound) read in one system call, and the
answers sent back from where they were read in another.

Python's C{socket} module has neither, so they are called through
C{ctypes}.  What they save is measured, not guessed: Python's C{recvfrom}
and C{sendto} cost a system call each per datagram, and about 6,000
user-space instructions between them (C{recvfrom} formats the peer's
address with C{inet_ntop}, which is C{sprintf}; C{sendto} parses it back
with C{PyArg_ParseTuple} and C{inet_pton}; each releases and takes the
GIL).  See docs/performance.rst.

L{Batches.recvmmsg} fills the buffers (and L{Batches.failedRead} says
what its error does); L{Batches.send} sends a run of
them back to where each came from, with the length the caller set in
L{Batches.sendLengths}.  The buffers are an anonymous memory map, whose
pages the kernel gives only as datagrams touch them.

L{available} says whether this C library has both calls and the
structures are laid out as this module declares them; if not, the port
reads with C{recvfrom} as before.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import sys
from errno import EINTR
from functools import cache, partial
from typing import Any

from echotwist.datagram import endOfReads

__all__ = ["Batches", "available"]


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_IOVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


#: The size of a C{struct sockaddr_in}, where each peer's address is read.
_SOCKADDR_IN = 16
_HEADER = ctypes.sizeof(_MMsgHdr)


@cache
def _calls() -> tuple[Any, Any] | None:
    """
    The C library's C{recvmmsg} and C{sendmmsg} (looked up once), or None where
    there are none (not Linux, or a C library without them), or where
    the structures are not the 64-bit Linux layout declared here.
    """
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    # The layout of struct mmsghdr on 64-bit Linux (glibc and musl alike).
    if ctypes.sizeof(_MMsgHdr) != 64 or _MMsgHdr.len.offset != 56:
        return None
    try:
        # PyDLL: called with the GIL held, since neither call waits (the
        # socket is non-blocking, and recvmmsg is asked not to wait), and
        # a single-threaded loop gains nothing from dropping it: about 800
        # instructions a pass saved (udppass.py 64 1).
        libc = ctypes.PyDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    # No argtypes: each call passes ready-made ctypes pointers and small
    # Python ints (which ctypes passes as C ints), which costs about half
    # of converting each argument through argtypes.
    recvmmsg.restype = sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


def available() -> bool:
    """
    Whether L{Batches} can be made here.
    """
    return _calls() is not None


class Batches:
    """
    Room for C{count} datagrams of up to C{size} bytes each, and their
    peers' addresses, read from and answered on one IPv4 UDP socket.

    @ivar memory: the datagrams, the C{i}th at C{i * size}; slicing it
        gives C{bytes}.
    @ivar lengths: the length of each datagram the last C{recvmmsg} read
        (a view of the kernel's C{msg_len}s).
    @ivar sendLengths: the length to send of each answer, set by the
        caller before L{send}.
    @ivar peers: the last C{recvmmsg}'s peer of each datagram as one
        integer (a view of each C{sockaddr_in}'s first eight bytes),
        which L{peer} turns into C{(host, port)}.
    """

    #: How many peers' C{(host, port)} are kept for L{peer}; past that
    #: the cache starts again, so a flood of sources costs bounded memory.
    peerCache = 1024

    def __init__(self, fd: int, count: int, size: int) -> None:
        calls = _calls()
        assert calls is not None
        recvmmsg, sendmmsg = calls
        self.fd, self.count, self.size = fd, count, size
        self.memory = mmap.mmap(-1, count * size)
        self._anchor = ctypes.c_char.from_buffer(self.memory)
        base = ctypes.addressof(self._anchor)
        self._names = ctypes.create_string_buffer(count * _SOCKADDR_IN)
        names = ctypes.addressof(self._names)
        self._received = (_MMsgHdr * count)()
        self._readInto = (_IOVec * count)()
        self._answers = (_MMsgHdr * count)()
        self._sendFrom = (_IOVec * count)()
        for i in range(count):
            self._readInto[i].base = self._sendFrom[i].base = base + i * size
            self._readInto[i].len = size
            for headers, vectors in (
                (self._received, self._readInto),
                (self._answers, self._sendFrom),
            ):
                header = headers[i].hdr
                header.name = names + i * _SOCKADDR_IN
                header.namelen = _SOCKADDR_IN
                header.iov = ctypes.pointer(vectors[i])
                header.iovlen = 1
        # recvmmsg(count, flags, timeout) and sendmmsg(at, count, flags),
        # their socket (and recvmmsg's headers) bound (each header's
        # namelen is the room for the address; the kernel writes back the
        # length it used, 16 for IPv4, so it stays room); at is an item of
        # answersAt, the headers from the ith answer on.
        fdArgument = ctypes.c_int(fd)
        self.recvmmsg = partial(
            recvmmsg, fdArgument, ctypes.c_void_p(ctypes.addressof(self._received))
        )
        self.sendmmsg = partial(sendmmsg, fdArgument)
        self.answersAt = [
            ctypes.c_void_p(ctypes.addressof(self._answers) + i * _HEADER)
            for i in range(count)
        ]
        # Views of the kernel's msg_len of each header, and of each answer's
        # iov_len (size_t: 64-bit only, see _calls), and of each peer's
        # sockaddr_in's first eight bytes.
        perHeader = ctypes.sizeof(_MMsgHdr) // 4
        self.lengths = (
            memoryview(self._received)
            .cast("B")
            .cast("I")[_MMsgHdr.len.offset // 4 :: perHeader]
        )
        perVector = ctypes.sizeof(_IOVec) // 8
        self.sendLengths = (
            memoryview(self._sendFrom)
            .cast("B")
            .cast("Q")[_IOVec.len.offset // 8 :: perVector]
        )
        self.peers = memoryview(self._names).cast("B").cast("Q")[:: _SOCKADDR_IN // 8]
        #: The peers L{peer} has met, by L{peers}' integer.
        self.known: dict[int, tuple[str, int]] = {}

    def failedRead(self) -> None:
        """
        Return if the error of the last read (C{recvmmsg} said -1) ends a
        pass quietly, as L{echotwist.datagram.endOfReads} has it; raise
        it otherwise.
        """
        error = ctypes.get_errno()
        endOfReads(OSError(error, os.strerror(error)))

    def peer(self, i: int) -> tuple[str, int]:
        """
        The C{(host, port)} the C{i}th datagram of the last C{recvmmsg}
        came from, as C{recvfrom} gives it: the same tuple for the same
        peer while it is cached.
        """
        raw = self.peers[i]
        known = self.known.get(raw)
        if known is None:
            # sockaddr_in: family (2 bytes), port, address (network order).
            address = raw.to_bytes(8, sys.byteorder)
            known = (
                socket.inet_ntoa(address[4:]),
                int.from_bytes(address[2:4], "big"),
            )
            if len(self.known) >= self.peerCache:
                self.known.clear()
            self.known[raw] = known
        return known

    def send(self, start: int, end: int) -> list[int]:
        """
        Send the answers C{start} up to C{end} (each to where its datagram
        came from, L{sendLengths} long), retrying a signal's interruption.

        @return: those C{sendmmsg} could not send, each of which the
            caller answers another way (C{sendmmsg} reports the error of
            a message only when it is the first of a call).
        """
        failed = []
        while start < end:
            sent = self.sendmmsg(self.answersAt[start], end - start, 0)
            if sent > 0:
                start += sent
            elif sent < 0 and ctypes.get_errno() == EINTR:
                continue
            else:
                failed.append(start)
                start += 1
        return failed
