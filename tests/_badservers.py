"""
Echo servers that misbehave, each a few lines, for the probe's tests:

    python tests/_badservers.py MODE

listens on a free port of 127.0.0.1, prints C{PORT n}, and serves until it
is killed (the tests always kill it).  Modes:

  - C{corrupt}: a TCP echo that flips byte 10 of what each connection sends.
  - C{http}: answers like a web server to anything, then closes.
  - C{discard}: reads everything, answers nothing (RFC 863); prints C{READ}
    when a connection's first bytes arrive.
  - C{deaf}: accepts a connection and never reads from it (until killed).
  - C{halfway}: echoes half of the first 64 bytes, then closes.
  - C{reset}: echoes the first probe, then resets the connection.
  - C{drop3}: a UDP echo that drops every third datagram.
  - C{shuffle}: a UDP echo that sends every second datagram after the next
    one (reordering) and every fifth one twice (a duplicate).
  - C{udpjunk}: answers each UDP datagram with a datagram of the same
    size that is not its echo.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys


def tcp(serve: object) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print("PORT", listener.getsockname()[1], flush=True)
    while True:
        connection, _ = listener.accept()
        with connection:
            try:
                serve(connection)  # type: ignore[operator]
            except OSError:
                # The probe resets a connection it finds wrong: serve the
                # next one.
                pass


def corrupt(connection: socket.socket) -> None:
    seen = 0
    while data := connection.recv(65536):
        if seen <= 10 < seen + len(data):
            data = bytearray(data)
            data[10 - seen] ^= 0xFF
        seen += len(data)
        connection.sendall(bytes(data))


#: What the C{http} server answers to anything.
HTTP_ANSWER = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


def http(connection: socket.socket) -> None:
    connection.recv(65536)
    connection.sendall(HTTP_ANSWER)


def discard(connection: socket.socket) -> None:
    # Said once a connection, so that a test knows a probe has arrived
    # (no more: a full pipe would stop the server reading).
    if connection.recv(65536):
        print("READ", flush=True)
    while connection.recv(65536):
        pass


def deaf(connection: socket.socket) -> None:
    # Holds the connection, unread, until the test kills the server.
    signal.pause()


def halfway(connection: socket.socket) -> None:
    # All 64 read first: closing with unread bytes would reset, not close.
    data = b""
    while len(data) < 64:
        chunk = connection.recv(64 - len(data))
        if not chunk:
            return
        data += chunk
    connection.sendall(data[:32])


def reset(connection: socket.socket) -> None:
    connection.sendall(connection.recv(65536))
    connection.recv(65536)
    # A zero linger time makes close() send a RST.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def udp(mode: str) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    print("PORT", server.getsockname()[1], flush=True)
    count = 0
    held: tuple[bytes, object] | None = None
    while True:
        data, peer = server.recvfrom(65536)
        count += 1
        if mode == "drop3":
            if count % 3 != 0:
                server.sendto(data, peer)
        elif mode == "udpjunk":
            server.sendto(bytes(len(data)), peer)
        elif held is None and count % 2 == 0:
            held = (data, peer)
        else:
            server.sendto(data, peer)
            if count % 5 == 0:
                server.sendto(data, peer)
            if held is not None:
                server.sendto(*held)  # type: ignore[arg-type]
                held = None


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode in ("drop3", "shuffle", "udpjunk"):
        udp(mode)
    else:
        tcp(globals()[mode])
