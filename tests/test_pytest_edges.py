"""
UDP, the PROXY protocol and metrics end to end, pytest-native:
EchoService and Twisted clients on pytest-twisted's reactor, in one
process.
"""

from __future__ import annotations

import os
import struct

import pytest
import pytest_twisted
from twisted.internet.error import ConnectionDone

from tests._tools import requireRoot
from tests._twistedclients import (
    DatagramClient,
    HalfCloseClient,
    bounded,
    connect,
    reactor,
    turn,
    until,
)
from tests.conftest import portOf

LOOPBACK = "127.0.0.1"


def udpService(serve, **options):
    service = serve([], udp=[f"udp:0:interface={LOOPBACK}"], **options)
    return service, portOf(service)


def udpClient(port=0, interface=LOOPBACK):
    client = DatagramClient()
    reactor.listenUDP(port, client, interface=interface, maxPacketSize=70000)
    return client


@pytest.fixture
def udpClients():
    clients = []

    def make(port=0, interface=LOOPBACK):
        client = udpClient(port, interface)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.transport.stopListening()


@pytest.mark.parametrize("size", [1, 8193, 65507])
@pytest_twisted.ensureDeferred
async def test_udpAnswersWholeDatagrams(serve, udpClients, size):
    """
    Each datagram comes back whole, up to the largest IPv4 payload (past
    Twisted's default 8192-byte read).
    """
    _, port = udpService(serve)
    client = udpClients()
    datagram = os.urandom(size)
    client.transport.write(datagram, (LOOPBACK, port))
    assert await client.answered(1) == [datagram]


@pytest_twisted.ensureDeferred
async def test_udpRateLimitPerSource(serve, udpClients):
    service, port = udpService(serve, udpRate=10)
    flooder = udpClients()
    for i in range(50):
        flooder.transport.write(b"%d" % i, (LOOPBACK, port))
    counts = service.datagramPolicy.counts
    await until(lambda: sum(counts.values()) == 50, "every datagram judged")
    answered = counts.get("answered", 0)
    # A burst of one, then ten a second: a flood gets a few answers.
    assert 1 <= answered < 10
    assert counts["over the rate limit"] == 50 - answered
    await until(lambda: len(flooder.answers) == answered, "the answers in")
    # Another source address has a bucket of its own.
    other = udpClients(interface="127.0.0.2")
    other.transport.write(b"mine", (LOOPBACK, port))
    assert await other.answered(1) == [b"mine"]


@pytest_twisted.ensureDeferred
async def test_udpFromAPrivilegedPortIsNotAnswered(serve, udpClients):
    """
    A datagram that claims to come from chargen (port 19) gets no answer,
    so spoofed datagrams cannot start an echo/chargen storm.
    """
    requireRoot("binds UDP port 19")
    service, port = udpService(serve)
    chargen = udpClients(19)
    chargen.transport.write(b"storm", (LOOPBACK, port))
    counts = service.datagramPolicy.counts
    await until(lambda: counts.get("privileged source port"), "the refusal")
    honest = udpClients()
    honest.transport.write(b"fine", (LOOPBACK, port))
    assert await honest.answered(1) == [b"fine"]
    assert chargen.answers == []


def proxyV2(source, port):
    body = (
        bytes(map(int, source.split(".")))
        + bytes([127, 0, 0, 1])
        + struct.pack("!HH", port, 7)
    )
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack("!H", len(body)) + body


@pytest_twisted.ensureDeferred
async def test_proxyV1TheClientsAddressIsLogged(serve, events):
    port = portOf(serve([f"haproxy:tcp:0:interface={LOOPBACK}"]))
    client = await connect(port)
    client.transport.write(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 7\r\nhello")
    assert await client.receive(5) == b"hello"
    (opened,) = await events.wait("connection.opened")
    assert opened["peer"] == "203.0.113.7:40000"
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_proxyV2SplitAcrossReads(serve, events):
    port = portOf(serve([f"haproxy:tcp:0:interface={LOOPBACK}"]))
    client = await connect(port)
    client.transport.setTcpNoDelay(True)
    header = proxyV2("198.51.100.9", 41000)
    for piece in (header[:5], header[5:17], header[17:] + b"after"):
        # Each piece leaves in a segment of its own.
        client.transport.write(piece)
        await turn()
    assert await client.receive(5) == b"after"
    (opened,) = await events.wait("connection.opened")
    assert opened["peer"] == "198.51.100.9:41000"
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_proxyWithoutAHeaderIsRefused(serve, events):
    port = portOf(serve([f"haproxy:tcp:0:interface={LOOPBACK}"]))
    client = await connect(port)
    client.transport.write(b"GET / HTTP/1.0\r\n\r\n")
    reason = await client.closed()
    assert isinstance(reason, ConnectionDone)
    assert client.received == b""
    (refused,) = await events.wait("proxy.refused")
    assert refused["peer"].startswith("127.0.0.1:")
    assert not events.named("connection.opened")


@pytest_twisted.ensureDeferred
async def test_proxyLimitsCountTheClientsAddress(serve, events):
    """
    Behind a proxy every connection comes from the proxy's address; the
    per-source limit counts the address in the header instead.
    """
    port = portOf(serve([f"haproxy:tcp:0:interface={LOOPBACK}"], maxPerSource=1))
    first = await connect(port)
    first.transport.write(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 7\r\nA")
    assert await first.receive(1) == b"A"
    second = await connect(port)
    second.transport.write(b"PROXY TCP4 192.0.2.2 127.0.0.1 1000 7\r\nB")
    assert await second.receive(1) == b"B"
    again = await connect(port)
    again.transport.write(b"PROXY TCP4 192.0.2.1 127.0.0.1 1001 7\r\nC")
    await again.closed()
    assert again.received == b""
    (refused,) = await events.wait("connection.refused")
    assert refused["source"] == "192.0.2.1"
    assert refused["reason"] == "too many connections from this source"
    for client in (first, second):
        client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_proxyPassesHalfCloseOn(serve):
    port = portOf(serve([f"haproxy:tcp:0:interface={LOOPBACK}"]))
    client = await connect(port, HalfCloseClient())
    payload = os.urandom(300_000)
    client.transport.write(b"PROXY TCP4 192.0.2.5 127.0.0.1 1000 7\r\n" + payload)
    client.transport.loseWriteConnection()
    assert await bounded(client.eof) == payload


@pytest_twisted.ensureDeferred
async def test_metricsCountWhatHappened(serve, events):
    from twisted.web.client import Agent, readBody

    service = serve(
        [f"tcp:0:interface={LOOPBACK}"], metrics=f"tcp:0:interface={LOOPBACK}"
    )
    echoPort, metricsPort = portOf(service, 0), portOf(service, 1)
    for i in range(3):
        client = await connect(echoPort)
        client.transport.write(b"x" * (i + 1))
        await client.receive(i + 1)
        client.transport.loseConnection()
        await client.closed()
    await events.wait("connection.closed", 3)
    response = await bounded(
        Agent(reactor).request(
            b"GET", f"http://{LOOPBACK}:{metricsPort}/metrics".encode()
        )
    )
    assert response.code == 200
    text = (await bounded(readBody(response))).decode()
    assert "echotwist_connections_accepted_total 3.0" in text
    assert "echotwist_connections_open 0.0" in text
