"""
The peers echotwist is measured against, each started as its own process
that prints "PORT n" once it listens on 127.0.0.1.

    python peers.py asyncio                 # the stdlib asyncio Protocol echo
    python peers.py uvloop                  # the same on uvloop
    python peers.py asyncio udp             # asyncio's DatagramProtocol echo
    python peers.py asyncio tls CERT KEY    # the Protocol echo over asyncio's ssl
    python peers.py floor                   # the pure-Python floor, TCP
    python peers.py floor udp               # the pure-Python floor, UDP
"""

import asyncio
import os
import select
import socket
import ssl
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class DatagramEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def main(transport, tlsFiles):
    loop = asyncio.get_running_loop()
    if transport == "udp":
        endpoint, _ = await loop.create_datagram_endpoint(
            DatagramEcho, local_addr=("127.0.0.1", 0)
        )
        port = endpoint.get_extra_info("sockname")[1]
    else:
        context = None
        if transport == "tls":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tlsFiles)
        server = await loop.create_server(
            Echo, "127.0.0.1", 0, backlog=4096, ssl=context
        )
        port = server.sockets[0].getsockname()[1]
    print("PORT", port, flush=True)
    await asyncio.Event().wait()


#: The floor's read size: 64 KiB, not 128.  glibc's initial mmap threshold
#: is 128 KiB, so a 128 KiB read buffer would be mapped and unmapped on
#: every read, a cost of the allocator, not of the loop.
FLOOR_READ = 65536


def floorTCP():
    """
    The pure-Python floor for TCP: the least a Python echo can do per
    message, with no framework at all.  A level-triggered C{select.epoll}
    loop over a non-blocking listener; C{os.read}, then C{os.write} of
    what was read; close on end of file or error.

    A yardstick, not a server: no limits, no logs.  The one guard is what
    keeps it correct for the benchmark's closed-loop clients, which read
    while they send: what the kernel does not take at once is kept, the
    connection stops being read, and the rest goes when it is writable.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    listening = listener.fileno()
    poller = select.epoll()
    poller.register(listening, select.EPOLLIN)
    connections = {}
    #: Bytes the kernel did not take yet, by descriptor.
    unsent = {}
    print("PORT", listener.getsockname()[1], flush=True)
    poll, read, write = poller.poll, os.read, os.write

    def close(fd):
        unsent.pop(fd, None)
        poller.unregister(fd)
        connections.pop(fd).close()

    while True:
        for fd, _ in poll():
            if fd == listening:
                try:
                    connection, _ = listener.accept()
                except BlockingIOError:
                    continue
                connection.setblocking(False)
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                connections[connection.fileno()] = connection
                poller.register(connection.fileno(), select.EPOLLIN)
                continue
            # Writable again (or an error) with bytes kept: send them, and
            # read again once they are all gone.  Otherwise read, and send
            # what was read.
            flushing = fd in unsent
            if flushing:
                data = unsent.pop(fd)
            else:
                try:
                    data = read(fd, FLOOR_READ)
                except BlockingIOError:
                    continue
                except OSError:
                    close(fd)
                    continue
                if not data:
                    close(fd)
                    continue
            try:
                sent = write(fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                close(fd)
                continue
            if sent < len(data):
                unsent[fd] = data[sent:]
                if not flushing:
                    poller.modify(fd, select.EPOLLOUT)
            elif flushing:
                poller.modify(fd, select.EPOLLIN)


def floorUDP():
    """
    The pure-Python floor for UDP: C{recvfrom} and C{sendto} in a
    level-triggered C{select.epoll} loop, reading until the socket has no
    more.  No guards at all (a yardstick, not a server): the benchmark's
    closed-loop flows have one datagram in flight each, which the socket's
    buffer always takes.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    print("PORT", sock.getsockname()[1], flush=True)
    poll, recvfrom, sendto = poller.poll, sock.recvfrom, sock.sendto
    while True:
        poll()
        while True:
            try:
                data, address = recvfrom(65535)
            except BlockingIOError:
                break
            sendto(data, address)


def usageError(arguments):
    """
    Why C{arguments} name no peer, in one line, or None.  A peer that is
    not the one asked for would be measured under the wrong name (the
    floor has no TLS; a misspelt loop would be asyncio).
    """
    plain = [[], ["tcp"], ["udp"]]
    if arguments[:1] == ["floor"] and arguments[1:] in plain:
        return None
    if arguments[:1] in (["asyncio"], ["uvloop"]):
        if arguments[1:] in plain or (
            arguments[1:2] == ["tls"] and len(arguments) == 4
        ):
            return None
    return (
        "usage: peers.py asyncio|uvloop [tcp | udp | tls CERT KEY],"
        " or peers.py floor [tcp | udp]"
    )


if __name__ == "__main__":
    error = usageError(sys.argv[1:])
    if error is not None:
        print(error, file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "floor":
        if sys.argv[2:] == ["udp"]:
            floorUDP()
        floorTCP()
    if sys.argv[1] == "uvloop":
        import uvloop

        uvloop.install()
    transport = sys.argv[2] if len(sys.argv) > 2 else "tcp"
    asyncio.run(main(transport, sys.argv[3:5]))
