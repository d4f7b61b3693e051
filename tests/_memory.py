"""
An in-memory peer under Twisted's real write buffering and producer logic.
"""

from __future__ import annotations

import errno

from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import MemoryReactorClock


class _Socket:
    """
    The peer's side of send(): takes what the peer accepts, and raises
    EWOULDBLOCK when that is nothing, as a non-blocking socket does.
    """

    def __init__(self, peer: MemoryPeer) -> None:
        self.peer = peer

    def send(self, data: bytes) -> int:
        if not self.peer.accepting:
            raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable")
        return self.peer.writeSomeData(data)


class MemoryPeer(FileDescriptor):
    """
    A FileDescriptor whose peer accepts bytes only when told to
    (C{accepting}); what it took is in C{delivered}.  Reading is "on" while
    the descriptor is registered as a reader with the memory reactor.
    """

    #: Whether Echo sends to it directly, as to TCP (see
    #: echotwist.stream.sendsDirectly); the stream model turns it on.
    echoSendsDirectly = False

    def __init__(self, reactor: MemoryReactorClock) -> None:
        super().__init__(reactor)
        self.connected = True
        self.accepting = 0
        self.delivered = bytearray()
        self.aborted = False
        self.socket = _Socket(self)

    def writeSomeData(self, data: bytes) -> int:
        taken = bytes(data[: self.accepting])
        self.accepting -= len(taken)
        self.delivered += taken
        return len(taken)

    def getPeer(self) -> str:
        return "memory-peer"

    def abortConnection(self) -> None:
        # As tcp.Connection does: stop at once; the loss arrives later.
        self.aborted = True
        self.disconnecting = True
        self.stopReading()
        self.stopWriting()

    @property
    def reading(self) -> bool:
        return self in self.reactor.getReaders()

    @property
    def writing(self) -> bool:
        return self in self.reactor.getWriters()

    @property
    def held(self) -> int:
        """
        Bytes written to the transport and not yet taken by the peer.
        """
        return len(self.dataBuffer) - self.offset + self._tempDataLen
