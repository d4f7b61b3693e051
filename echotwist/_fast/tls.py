# -*- test-case-name: tests.test__fast_tls,tests.test__fast_tlsloop -*-
"""
TLS's direct send: the TCP transport under a TLS echo connection, on
echotwist's reactor, sends at once when nothing is queued before (as the
plain TCP echo does, see L{echotwist.stream}), so an echo normally leaves
in the same pass of the loop instead of waiting in a buffer; and it
pauses its producer as soon as the kernel refuses part of a write, so
what it holds is at most what one read produces.

Its small reads are L{echotwist.tls.TLSServer}'s, which it is, and which
serves with Twisted's own write on any other reactor.
"""

from __future__ import annotations

from errno import ENOBUFS, EWOULDBLOCK

from echotwist._fast import LoopHandler, register
from echotwist._fast.tlsloop import fastEcho
from echotwist._twisted import nothingQueued, writeShutDown
from echotwist.tls import TLSServer

__all__ = ["DirectTLSServer"]


class DirectTLSServer(TLSServer):
    """
    The TCP transport under a TLS echo connection, sending directly (see
    the module docstring).
    """

    def write(self, data: bytes) -> None:
        """
        Send C{data} at once when nothing is queued before it, pausing the
        producer if the kernel takes only part; queue it otherwise.
        """
        if (
            not data
            or not self.connected
            or not nothingQueued(self)
            or writeShutDown(self)
        ):
            super().write(data)
            return
        # Nothing is queued before these bytes, so they may leave now.
        # Python retries EINTR itself (PEP 475).
        try:
            sent = self.socket.send(data)
        except OSError as e:
            if e.errno not in (EWOULDBLOCK, ENOBUFS):
                # Queued: the reactor's next attempt finds and reports the
                # loss, as for any write.
                super().write(data)
                return
            sent = 0
        if sent == len(data):
            return
        super().write(data[sent:] if sent else data)
        # The kernel is full: stop reading now rather than once a buffer's
        # worth is queued.  The transport resumes its producer once it has
        # sent the rest.
        if (
            self.producer is not None
            and self.streamingProducer
            and not self.producerPaused
        ):
            self.producerPaused = True
            self.producer.pauseProducing()  # type: ignore[attr-defined, unused-ignore]


# The loop echoes a whole record of application data itself, once the
# connection is plain (see echotwist._fast.tlsloop).
register(DirectTLSServer, LoopHandler(loopEcho=fastEcho))
