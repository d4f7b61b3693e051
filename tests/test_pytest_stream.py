"""
Stream echo end to end, pytest-native: EchoService and Twisted clients on
pytest-twisted's reactor, in one process.  Echo over every local stream
transport, half-close, backpressure, the connection limits, the idle
timeout, and the drain when the service stops.
"""

from __future__ import annotations

import os
import socket

import pytest
import pytest_twisted
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import LoopingCall

from tests._twistedclients import Client, HalfCloseClient, bounded, connect, until
from tests.conftest import portOf

KiB = 1024
MiB = 1024 * KiB


@pytest_twisted.ensureDeferred
async def test_theReactorIsPytestTwisteds(serve):
    """
    The service under test listens on the reactor pytest-twisted runs
    (Twisted's default unless pytest is given --reactor), so the clients
    here share it.
    """
    from twisted.internet import reactor

    service = serve()
    assert service.reactor is reactor
    assert reactor.running


@pytest.mark.parametrize("size", [1, 1500, 256 * KiB, 4 * MiB])
@pytest_twisted.ensureDeferred
async def test_echoesEveryByte(serve, size):
    port = portOf(serve())
    client = await connect(port)
    payload = os.urandom(size)
    client.transport.write(payload)
    assert await client.receive(size) == payload
    client.transport.loseConnection()
    await client.closed()


@pytest_twisted.ensureDeferred
async def test_manyClientsAtOnceEachGetTheirOwn(serve):
    port = portOf(serve())
    clients = [await connect(port) for _ in range(50)]
    payloads = [os.urandom(10 * KiB) for _ in clients]
    for client, payload in zip(clients, payloads, strict=True):
        client.transport.write(payload)
    for client, payload in zip(clients, payloads, strict=True):
        assert await client.receive(len(payload)) == payload
        client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_unixSocket(serve, tmp_path):
    path = str(tmp_path / "echo.sock")
    serve([f"unix:{path}"])
    client = await connect(path)
    client.transport.write(b"over a UNIX socket")
    assert await client.receive(18) == b"over a UNIX socket"
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_ipv6Loopback(serve):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = portOf(serve(["tcp6:0:interface=\\:\\:1"]))
    client = await connect(port, host="::1")
    client.transport.write(b"six")
    assert await client.receive(3) == b"six"
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_tls(serve, tmp_path):
    from tests._tools import requireTLS, selfSignedCertificate

    # Before Twisted's ssl module, which needs what it checks.
    requireTLS()
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    from tests._twistedclients import reactor

    key, certificate = selfSignedCertificate(str(tmp_path))
    port = portOf(
        serve([f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"])
    )
    from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol

    with open(certificate, "rb") as f:
        authority = Certificate.loadPEM(f.read())
    endpoint = SSL4ClientEndpoint(
        reactor,
        "127.0.0.1",
        port,
        optionsForClientTLS("localhost", trustRoot=authority),
    )
    client = await bounded(connectProtocol(endpoint, Client()))
    payload = os.urandom(512 * KiB)
    client.transport.write(payload)
    assert await client.receive(len(payload)) == payload
    client.transport.loseConnection()
    await client.closed()


@pytest_twisted.ensureDeferred
async def test_halfCloseGetsEverythingThenEOF(serve, events):
    port = portOf(serve())
    client = await connect(port, HalfCloseClient())
    payload = os.urandom(2 * MiB)
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    assert await bounded(client.eof) == payload
    reason = await client.closed()
    assert isinstance(reason, ConnectionDone)
    (closed,) = await events.wait("connection.closed")
    assert closed["bytesIn"] == len(payload)


def unsent(transport):
    """
    Bytes a Twisted transport holds that the kernel has not taken yet
    (FileDescriptor's write buffer).
    """
    return len(transport.dataBuffer) + transport._tempDataLen


def serverSide(service, client):
    """
    The server's L{Echo} for C{client}.
    """
    port = client.transport.getHost().port
    (echo,) = (
        e for e in service.factory.connections if e.transport.getPeer().port == port
    )
    return echo


async def backUp(service, client, size=16 * MiB):
    """
    Make C{client} send C{size} bytes without reading, until the server has
    stopped reading from it with bytes still waiting on the client's side;
    return what was sent.  A small receive buffer on the client keeps the
    kernel from soaking up the echo (it autotunes to megabytes).
    """
    from tests._twistedclients import reactor

    client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.transport.pauseProducing()  # stop reading
    payload = os.urandom(size)
    client.transport.write(payload)
    await until(lambda: service.factory.connections, "the server accepted")
    echo = serverSide(service, client)
    await until(
        lambda: echo.transport not in reactor.getReaders() and unsent(client.transport),
        "the server stopped reading from a client that does not read",
    )
    return payload


@pytest_twisted.ensureDeferred
async def test_backpressureHoldsTheServerToItsBound(serve):
    """
    A client that sends 16 MiB and reads nothing: the server stops reading
    from it while the client still has bytes to send, holding at most its
    128 KiB of echo (and one read) for it.  Once the client reads again,
    every byte comes back in order.
    """
    service = serve()
    client = await connect(portOf(service))
    payload = await backUp(service, client)
    assert unsent(serverSide(service, client).transport) <= 256 * KiB
    client.transport.resumeProducing()
    assert await client.receive(len(payload), timeout=60) == payload
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_aBackedUpClientDoesNotSlowOthers(serve):
    service = serve()
    port = portOf(service)
    hog = await connect(port)
    await backUp(service, hog)
    other = await connect(port)
    other.transport.write(b"still served")
    assert await other.receive(12) == b"still served"
    other.transport.loseConnection()
    hog.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_maxConnectionsRefusesTheNextAndKeepsTheRest(serve, events):
    port = portOf(serve(maxConnections=3))
    admitted = [await connect(port) for _ in range(3)]
    await events.wait("connection.opened", 3)
    refused = await connect(port)
    refused.transport.write(b"let me in")
    reason = await refused.closed()
    assert refused.received == b""
    assert isinstance(reason, (ConnectionDone, ConnectionLost))
    (event,) = events.named("connection.refused")
    assert event["reason"] == "too many connections"
    for client in admitted:
        client.transport.write(b"kept")
        assert await client.receive(4) == b"kept"
        client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_maxPerSourceCountsEachAddress(serve, events):
    port = portOf(serve(maxPerSource=2))
    first = [await connect(port) for _ in range(2)]
    await events.wait("connection.opened", 2)
    third = await connect(port)
    await third.closed()
    assert third.received == b""
    # Another loopback address is another source.
    elsewhere = await connect(port, bindAddress=("127.0.0.2", 0))
    elsewhere.transport.write(b"other source")
    assert await elsewhere.receive(12) == b"other source"
    for client in [*first, elsewhere]:
        client.transport.loseConnection()
    await events.wait("connection.closed", 3)
    again = await connect(port)
    again.transport.write(b"room again")
    assert await again.receive(10) == b"room again"
    again.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_idleTimeoutClosesTheQuietOneOnly(serve):
    port = portOf(serve(idleTimeout=0.5))
    quiet = await connect(port)
    busy = await connect(port)
    ticking = LoopingCall(busy.transport.write, b".")
    ticking.start(0.05)
    try:
        reason = await quiet.closed()
        assert isinstance(reason, ConnectionDone)
        assert not busy.lost.called
    finally:
        ticking.stop()
    busy.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_stopDrainsWhatWasSent(serve, events):
    """
    Stopping the service closes the listener at once, and a client that
    has sent 2 MiB still gets every byte back, then a clean close.
    """
    service = serve(shutdownTimeout=10.0)
    port = portOf(service)
    client = await connect(port)
    await events.wait("connection.opened")
    payload = os.urandom(2 * MiB)
    client.transport.write(payload)
    stopped = service.stopService()
    assert await client.receive(len(payload)) == payload
    reason = await client.closed()
    assert isinstance(reason, ConnectionDone)
    await bounded(stopped)
    assert events.named("drain.finished")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest_twisted.ensureDeferred
async def test_stopAbortsANonReaderAtTheDeadline(serve, events):
    service = serve(shutdownTimeout=0.5)
    client = await connect(portOf(service))
    await backUp(service, client)
    await bounded(service.stopService())
    assert events.named("drain.deadline")
    client.transport.resumeProducing()
    reason = await client.closed()
    assert not isinstance(reason, ConnectionDone)
