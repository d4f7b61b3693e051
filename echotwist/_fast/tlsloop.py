# -*- test-case-name: tests.test__fast_tlsloop -*-
"""
The TLS echo in the reactor's own loop: a read that is one whole record
of application data is decrypted, encrypted again and sent back by
L{echotwist.reactor.EchotwistEPollReactor} itself, with OpenSSL's own
calls on the SSL object and memory BIOs of the connection's pyOpenSSL
C{Connection}, without the transport's C{doRead}, Twisted's TLS protocol,
the L{Echo}'s code or pyOpenSSL's Python around each call.

Twisted's TLS (L{twisted.protocols.tls.TLSMemoryBIOProtocol}) runs each
read through some twenty Python calls: the transport's C{doRead}, the TLS
protocol's C{dataReceived} and its loop of C{recv()} until OpenSSL has
nothing more (which ends in an exception), the L{Echo}'s C{dataReceived},
the TLS protocol's C{write()} and its loop of C{send()}, and a flush of
the memory BIO after each (another exception when it is empty) into the
transport's C{write()}.  For a small echo that Python is most of the
server's work, far more than OpenSSL's own.  L{echoRead} does what all of
that does for one whole record, in one function: read the socket,
C{BIO_write}, C{SSL_read}, C{SSL_write}, C{BIO_read} (through
L{echotwist._twisted.openssl}, which also turns a failed call into the
exception pyOpenSSL's own method would raise), write the socket.  What
that saves, measured, is in docs/performance.rst.

It knows the read is one whole record, and so that OpenSSL will have
nothing left over for a second C{SSL_read}, because it follows the record
boundaries of everything the connection receives: L{EchoTLSProtocol} (the
TLS protocol of echo listeners) follows those of every read Twisted's path
takes, and the loop's reads are whole records.

Anything else goes back to Twisted's TLS protocol, at the point Twisted's
own code would be at, so that it does what it always does:

  - a read that is not one whole application-data record (half a record,
    several, a handshake record such as a TLS 1.2 renegotiation, an alert
    in clear): handed to the TLS protocol's C{dataReceived} before any of
    it reaches OpenSSL;
  - a record that holds no application data (a TLS 1.3 KeyUpdate or
    close_notify, which are encrypted as application data, or a fatal
    error): OpenSSL has taken it, and the TLS protocol's receiving loop
    (through L{echotwist._twisted.tlsReceived} and
    L{echotwist._twisted.tlsReceiveFailed}) does the rest: answers the
    KeyUpdate, closes, or reports the error;
  - an SSL_write that fails (renegotiation under way): the echo goes to the
    TLS protocol's C{write()}, which tries it again and buffers it;
  - a send the kernel takes only part of: the rest goes to the transport's
    C{write()}, which queues it and pauses reading (see
    L{echotwist._fast.tls.DirectTLSServer}).

The loop takes a connection (L{fastEcho}) only in the state where all of
that is exact, and where the door has its pyOpenSSL parts (otherwise
Twisted's path takes every read): the handshake is done, nothing is buffered or queued on
either layer, neither is closing or paused, the protocol is an L{Echo}
itself (no subclass, no wrapper) and the records received so far ended
where a read ended.  Pausing and closing the transport stop reading, which
takes the connection out of the loop (see the reactor's C{removeReader});
a TLS close keeps reading for the client's close_notify, so each read
looks whether the TLS protocol is closing.
"""

from __future__ import annotations

import os
from typing import Any

from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.protocols.tls import TLSMemoryBIOProtocol

from echotwist._twisted import (
    nothingQueued,
    tlsReceived,
    tlsReceiveFailed,
    tlsSettled,
    writeShutDown,
)
from echotwist._twisted.openssl import connectionParts, raiseSSLError
from echotwist._twisted.openssl import ffi as _ffi
from echotwist._twisted.openssl import lib as _lib
from echotwist.stream import Echo

__all__ = ["EchoTLSProtocol", "echoRead", "fastEcho"]

#: A TLS record's header: content type, version (2 bytes), length (2).
_HEADER = 5
#: The content type of application data (and, in TLS 1.3, of every
#: encrypted record, whatever it holds).
_APPLICATION_DATA = 23
#: What one C{recv()} asks for: more than a record's plaintext (16 KiB at
#: most), so that one call takes a whole record.
_RECEIVE = 2**15
#: What one C{bio_read()} asks for, as Twisted's TLS protocol does.
_FLUSH = 2**15

# The buffers every connection's echo passes through: the reactor's loop
# echoes one read at a time, and nothing is left in them between reads.
_PLAIN = _ffi.new("char[]", _RECEIVE)
_CIPHER = _ffi.new("char[]", _FLUSH)


class EchoTLSProtocol(TLSMemoryBIOProtocol):
    """
    Twisted's TLS protocol (without the write aggregation of its default,
    as in L{echotwist.tls}), following the record boundaries of what it
    receives so that L{fastEcho} can tell whether OpenSSL holds part of a
    record.

    @ivar recordHead: the first bytes (fewer than five) of a record header
        received so far, when a read ended inside one.
    @ivar recordLeft: how many bytes of the current record are still to
        come.
    """

    recordHead = b""
    recordLeft = 0

    def dataReceived(self, data: bytes) -> None:
        """
        Follow the records of C{data}, then handle it as Twisted does.
        """
        self.followRecords(data)
        super().dataReceived(data)

    def followRecords(self, data: bytes) -> None:
        """
        Move the record boundaries on past C{data}, received next.
        """
        if self.recordHead:
            data = self.recordHead + data
        size = len(data)
        # The offset of the next record header in data.
        at = self.recordLeft
        while size - at >= _HEADER:
            at += _HEADER + (data[at + 3] << 8 | data[at + 4])
        if at >= size:
            self.recordLeft = at - size
            self.recordHead = b""
        else:
            self.recordLeft = 0
            self.recordHead = data[at:]

    @property
    def atRecordBoundary(self) -> bool:
        """
        Whether what was received so far ends where a record ends: OpenSSL
        holds no part of one.
        """
        return not self.recordLeft and not self.recordHead


def fastEcho(transport: Any) -> tuple[Any, ...] | None:
    """
    Whether the reactor's loop may echo C{transport}'s next read itself
    (see the module docstring): an L{Echo} under an L{EchoTLSProtocol}
    whose handshake is done, nothing buffered, queued, paused or closing,
    at a record boundary.

    @param transport: an L{echotwist._fast.tls.DirectTLSServer}, after an ordinary
        read or write.
    @return: what L{echoRead} needs (the transport first, L{echoRead}
        itself second); or None.
    """
    if (
        not transport.connected
        or transport.disconnecting
        or not nothingQueued(transport)
        or writeShutDown(transport)
    ):
        return None
    tls = transport.protocol
    if (
        type(tls) is not EchoTLSProtocol
        or tls.disconnecting
        or not tls.atRecordBoundary
        or not tlsSettled(tls)
    ):
        return None
    echo = tls.wrappedProtocol
    if type(echo) is not Echo or not echo.undisturbed:
        return None
    connection = tls.getHandle()
    parts = connectionParts(connection)
    if parts is None:
        return None
    return (transport, echoRead, tls, echo, connection, transport.bufferSize, *parts)


def echoRead(fd: int, entry: tuple[Any, ...]) -> bool | BaseException:
    """
    Echo one read of a connection L{fastEcho} chose, or hand it back.

    @param fd: the connection's socket descriptor.
    @param entry: what L{fastEcho} returned for it.
    @return: True if the read was echoed in full (or there was nothing to
        read); False if Twisted's code took it from some point on; or why
        the connection is over (as a transport's C{doRead} returns it).
    """
    transport, _, tls, echo, connection, readSize, ssl, into, out = entry
    try:
        data = os.read(fd, readSize)
    except BlockingIOError:
        return True
    except OSError:
        return CONNECTION_LOST
    size = len(data)
    if not size:
        return CONNECTION_DONE
    if (
        size <= _HEADER
        or data[0] != _APPLICATION_DATA
        or (data[3] << 8 | data[4]) != size - _HEADER
        or tls.disconnecting
    ):
        # Not one whole record of application data, or the TLS connection
        # is closing (its close_notify sent while the transport still
        # reads, for the client's): Twisted's path.
        tls.dataReceived(data)
        return False
    if _lib.BIO_write(into, data, size) != size:
        connection.bio_write(data)  # takes it, or raises as it always would
    received = _lib.SSL_read(ssl, _PLAIN, _RECEIVE)
    if received <= 0:
        _noData(tls, connection, received)
        return False
    # What Echo.dataReceived counts (its bulk mark is for the TCP splice).
    echo.bytesEchoed += received
    written = _lib.SSL_write(ssl, _PLAIN, received)
    if written != received:
        _unwritten(tls, received, written)
        return False
    ready = _lib.BIO_read(out, _CIPHER, _FLUSH)
    if ready <= 0:
        return True  # nothing to send (not after an SSL_write that took a record)
    cipher = _ffi.buffer(_CIPHER, ready)
    if ready == _FLUSH:
        cipher = cipher[:] + _drain(connection)
    try:
        sent = os.write(fd, cipher)
    except OSError:
        sent = 0
    if sent == len(cipher):
        return True
    # The transport queues the rest, and pauses reading (or finds the
    # connection lost), as for any write.
    transport.write(bytes(cipher[sent:]))
    return False


def _noData(tls: Any, connection: Any, received: int) -> None:
    """
    A record that gave no application data to C{SSL_read} (which returned
    C{received}): Twisted's TLS protocol takes it from there.
    """
    try:
        raiseSSLError(connection, received)
    except (WantReadError, ZeroReturnError):
        # A record of TLS's own (a KeyUpdate, close_notify) or an empty
        # one, taken whole: asked again, OpenSSL says the same, and the
        # TLS protocol answers, closes or waits as always.
        pass
    except Error:
        tlsReceiveFailed(tls)
        return
    tlsReceived(tls)


def _unwritten(tls: Any, received: int, written: int) -> None:
    """
    An C{SSL_write} of the C{received} bytes decrypted that wrote
    C{written}: the TLS protocol writes the rest.
    """
    # A failed SSL_write took nothing (a partial one, the start): the TLS
    # protocol's write() makes the same call with the rest, and buffers it
    # or ends the connection, as for any echo; then its receiving loop
    # goes on.  What the failure left in OpenSSL's error queue goes, so
    # that the error reported is that call's alone, as on Twisted's path.
    _lib.ERR_clear_error()
    tls.write(_ffi.buffer(_PLAIN, received)[max(written, 0) :])
    tlsReceived(tls)


def _drain(connection: Any) -> bytes:
    """
    The rest of what OpenSSL holds to send, after a full C{bio_read()}.
    """
    chunks = []
    while True:
        try:
            chunks.append(connection.bio_read(_FLUSH))
        except WantReadError:
            return b"".join(chunks)
