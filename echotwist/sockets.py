# -*- test-case-name: tests.test_sockets -*-
"""
Socket options set on a TCP listening socket for the connections it
accepts: buffer sizes and keepalive.
"""

from __future__ import annotations

import socket

from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

__all__ = ["clampSocketBuffers", "setKeepalive", "tcpSocket"]

# As before this module was split from echotwist.service: operators filter
# on the namespace.
log = Logger(namespace="echotwist.service")


def tcpSocket(port: IListeningPort) -> socket.socket | None:
    """
    The listening socket of C{port}, if it is an IPv4 or IPv6 one.
    """
    sock = getattr(port, "socket", None)
    if not isinstance(sock, socket.socket) or sock.family not in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return None
    return sock


def clampSocketBuffers(description: str, port: IListeningPort, size: int) -> None:
    """
    Set SO_SNDBUF and SO_RCVBUF to C{size} on a TCP listening socket.
    Connections accepted from it inherit both, from before their handshake
    (so the window offered fits), and with them the kernel's autotuning
    turned off: a client that sends and never reads pins at most about four
    times C{size} of kernel memory (Linux doubles the value set, for its
    bookkeeping) instead of megabytes.  Not for UNIX sockets, whose memory
    the kernel bounds already (net.core.wmem_default a socket).
    """
    sock = tcpSocket(port)
    if sock is None:
        return
    for option, cap in (
        (socket.SO_SNDBUF, "net.core.wmem_max"),
        (socket.SO_RCVBUF, "net.core.rmem_max"),
    ):
        sock.setsockopt(socket.SOL_SOCKET, option, size)
        got = sock.getsockopt(socket.SOL_SOCKET, option) // 2
        if got < size:
            log.warn(
                "{description}: the kernel caps socket buffers at {got} bytes"
                " ({cap}), below --socket-buffer {size}",
                event="listener.buffer_capped",
                description=description,
                got=got,
                size=size,
                cap=cap,
            )


def setKeepalive(port: IListeningPort, keepalive: tuple[int, int, int]) -> None:
    """
    Turn TCP keepalive on for the connections of a TCP listening socket:
    after C{keepalive[0]} seconds of silence, a probe every C{keepalive[1]}
    seconds, and the connection reset after C{keepalive[2]} unanswered.
    Linux copies these options from the listening socket to every
    connection it accepts, and starts the timer from the handshake, so this
    costs nothing per connection; a connection whose probes go unanswered
    fails with ETIMEDOUT and is closed like any other lost connection.
    (An adopted socket's own settings are overwritten: the option says.)
    """
    sock = tcpSocket(port)
    if sock is None:
        return
    idle, interval, count = keepalive
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        (getattr(socket, "TCP_KEEPIDLE", None), idle),
        (getattr(socket, "TCP_KEEPINTVL", None), interval),
        (getattr(socket, "TCP_KEEPCNT", None), count),
    ):
        # Linux has all three; elsewhere the system's timings stand.
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
