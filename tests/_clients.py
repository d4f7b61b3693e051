"""
Real socket clients for the integration tests: many at once from one
thread with a selector, every loop bounded in time.
"""

from __future__ import annotations

import os
import selectors
import socket
import time

from tests._twistd import WAIT


class _Exchange:
    def __init__(self, sock: socket.socket, payload: bytes, halfClose: bool) -> None:
        self.sock = sock
        self.payload = payload
        self.halfClose = halfClose
        self.sent = 0
        self.received = bytearray()
        self.eof = False


def exchange(
    address: tuple[str, int] | str,
    payloads: list[bytes],
    *,
    halfClose: bool = False,
    timeout: float = WAIT,
) -> list[tuple[bytes, bool]]:
    """
    Open one connection per payload, all at once; send each payload while
    reading back concurrently.  Without C{halfClose}, each connection
    finishes once it has read back as many bytes as it sent; with it, the
    client shuts down its sending side after the payload and reads until
    EOF.

    @return: per connection, the bytes received and whether EOF was seen.
    """
    selector = selectors.DefaultSelector()
    exchanges = []
    for payload in payloads:
        if isinstance(address, str):
            family = socket.AF_UNIX
        else:
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
        sock.setblocking(False)
        state = _Exchange(sock, payload, halfClose)
        exchanges.append(state)
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, state)
    deadline = time.monotonic() + timeout
    pending = len(exchanges)
    try:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pending} exchanges unfinished after {timeout}s")
            for key, events in selector.select(left):
                state = key.data
                done = False
                if events & selectors.EVENT_WRITE:
                    if state.sent < len(state.payload):
                        state.sent += state.sock.send(
                            state.payload[state.sent : state.sent + 262144]
                        )
                    if state.sent == len(state.payload):
                        if state.halfClose:
                            state.sock.shutdown(socket.SHUT_WR)
                        selector.modify(state.sock, selectors.EVENT_READ, state)
                if events & selectors.EVENT_READ:
                    chunk = state.sock.recv(262144)
                    if chunk:
                        state.received += chunk
                    else:
                        state.eof = True
                    if state.eof or (
                        not state.halfClose
                        and len(state.received) >= len(state.payload)
                    ):
                        done = True
                if done:
                    selector.unregister(state.sock)
                    pending -= 1
    finally:
        for state in exchanges:
            state.sock.close()
        selector.close()
    return [(bytes(state.received), state.eof) for state in exchanges]


def echoOnce(address: tuple[str, int] | str, payload: bytes = b"") -> bytes:
    """
    One connection, one payload, and what came back.
    """
    payload = payload or os.urandom(1024)
    ((received, _),) = exchange(address, [payload])
    return received


def readUntilClosed(sock: socket.socket, timeout: float = WAIT) -> tuple[bytes, str]:
    """
    Read until the server closes; say how it closed: "eof" for a FIN,
    "reset" for a RST.
    """
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(262144)
        except ConnectionResetError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "eof"
        data += chunk
    raise AssertionError(f"connection still open after {timeout}s")
