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
size; it writes as Twisted's TCP transport does.  On echotwist's reactor
the fast path's L{echotwist._fast.tls.DirectTLSServer} takes its place,
which also sends at once when nothing is queued, and pauses its producer
as soon as the kernel refuses part of a write.  L{echoTLSProtocol} is the
TLS layer without the aggregation of small writes: an echo writes once per
read already; on echotwist's reactor its subclass
L{echotwist._fast.tlsloop.EchoTLSProtocol} takes its place, which also
follows record boundaries so that the loop may echo whole records itself.

L{HandshakeGate} stands between a TLS listening port and Twisted's TLS
factory: a connection over its source's handshake budget (see
L{echotwist.connections}) is closed as it is accepted, before any TLS state
is made for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import tcp
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

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
#: write aggregation of its default (C{BufferingTLSTransport}).
echoTLSProtocol = TLSMemoryBIOProtocol


class TLSServer(tcp.Server):
    """
    The TCP transport under a TLS echo connection: small reads (see the
    module docstring).
    """

    bufferSize = TLS_READ_SIZE


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
