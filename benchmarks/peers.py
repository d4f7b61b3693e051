"""
The peers echotwist is measured against, each started as its own process
that prints "PORT n" once it listens on 127.0.0.1.

    python peers.py asyncio                 # the stdlib asyncio Protocol echo
    python peers.py uvloop                  # the same on uvloop
    python peers.py asyncio udp             # asyncio's DatagramProtocol echo
    python peers.py asyncio tls CERT KEY    # the Protocol echo over asyncio's ssl
"""

import asyncio
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


if __name__ == "__main__":
    if sys.argv[1] == "uvloop":
        import uvloop

        uvloop.install()
    transport = sys.argv[2] if len(sys.argv) > 2 else "tcp"
    asyncio.run(main(transport, sys.argv[3:5]))
