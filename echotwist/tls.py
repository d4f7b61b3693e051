# -*- test-case-name: tests.test_tls -*-
"""
TLS echo connections that hold little for a client that never reads.

Twisted's TLS (L{twisted.protocols.tls}) runs over an ordinary TCP
transport, which reads 64 KiB at a time and asks its producer to pause only
once more than 64 KiB waits to be sent.  Over TLS that is not the whole
cost of a client that sends and never reads: OpenSSL's memory BIO that
takes what was read grows to the largest single read (by a third again) and
never shrinks, the whole of a read is decrypted and echoed before a pause
can take effect, and Twisted's default TLS transport holds up to 64 KB of
cleartext besides, to aggregate small writes.  Measured with such clients
on this project's machine: about 200 KiB of user space each.

L{TLSServer} is the TCP transport under a TLS echo connection: it reads
L{TLS_READ_SIZE} at a time, so OpenSSL's buffers stay near a record's
size; it sends at once when nothing is queued before (as echotwist's
plain TCP echo does, see L{echotwist.stream}), so an echo normally leaves in
the same pass of the loop instead of waiting in a buffer; and it pauses its
producer as soon as the kernel refuses part of a write, so what it holds is
at most what one read produces.  L{echoTLSProtocol} is the TLS layer without
the aggregation of small writes: an echo writes once per read already.

L{HandshakeGate} stands between a TLS listening port and Twisted's TLS
factory: a connection over its source's handshake budget (see
L{echotwist.connections}) is closed as it is accepted, before any TLS state
is made for it.
"""

from __future__ import annotations

from errno import ENOBUFS, EWOULDBLOCK
from typing import TYPE_CHECKING

from twisted.internet import tcp
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

from echotwist._twisted import nothingQueued, writeShutDown
from echotwist.tlsfast import EchoTLSProtocol, fastEcho

if TYPE_CHECKING:
    from echotwist.connections import EchoFactory

__all__ = ["TLS_READ_SIZE", "HandshakeGate", "TLSServer", "echoTLSProtocol"]

#: What a TLS connection reads at a time: a record and a half (a record
#: carries at most 16 KiB), so most reads hold a whole record.  Measured
#: with clients that never read: 16 KiB held 93 KiB of user space per
#: connection, 24 KiB 99 KiB, 32 KiB 116 KiB, 64 KiB 159 KiB; bulk TLS echo
#: cost about a fifth more CPU per message at 16 KiB than at 32 KiB.
TLS_READ_SIZE = 24 * 1024

#: The TLS protocol class for echo listeners: Twisted's own, without the
#: write aggregation of its default (C{BufferingTLSTransport}), following
#: record boundaries for the loop's TLS echo (L{echotwist.tlsfast}).
echoTLSProtocol = EchoTLSProtocol


class TLSServer(tcp.Server):
    """
    The TCP transport under a TLS echo connection (see the module
    docstring).
    """

    bufferSize = TLS_READ_SIZE

    #: Whether, and how, L{echotwist.reactor.EchotwistEPollReactor} may
    #: echo the next read in its own loop (L{echotwist.tlsfast.fastEcho}).
    fastEchoFor = staticmethod(fastEcho)

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


class HandshakeGate(ServerFactory):
    """
    What a TLS listening port sees as its factory: Twisted's TLS factory
    C{tls}, behind C{books}' handshake budget.  A port closes a connection
    at once when its factory builds no protocol for it; so a connection over
    budget costs an accept and a close, and no TLS state.
    """

    noisy = False

    def __init__(self, tls: TLSMemoryBIOFactory, books: EchoFactory) -> None:
        self.tls = tls
        self.books = books

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override, unused-ignore]
        """
        Twisted's TLS protocol for the connection from C{addr}, or None if
        its source is over its handshake budget (refused, logged and
        counted by the books).
        """
        if not self.books.admitHandshake(getattr(addr, "host", None)):
            return None
        # Twisted before 26 has buildProtocol untyped.
        protocol: Protocol | None = self.tls.buildProtocol(addr)
        return protocol

    # The port starts and stops its factory; the TLS factory keeps the
    # count that its own start and stop depend on.
    def doStart(self) -> None:
        """
        Start the TLS factory behind the gate, as the port would have.
        """
        self.tls.doStart()

    def doStop(self) -> None:
        """
        Stop the TLS factory behind the gate, as the port would have.
        """
        self.tls.doStop()

    def logPrefix(self) -> str:
        """
        The system name of the port's log lines.
        """
        return "echotwist"
