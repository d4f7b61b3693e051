"""
echotwist-probe's runs in process, pytest-native, on pytest-twisted's
reactor, against echotwist's L{EchoService} on loopback: latency over TCP
and UDP, throughput, and the server's own limits seen from the probe.
"""

from __future__ import annotations

import pytest_twisted

from echotwist.probe.bulk import StreamBulk
from echotwist.probe.datagram import DatagramRun
from echotwist.probe.payload import Payloads
from echotwist.probe.stream import StreamLatency
from echotwist.probe.target import parseTarget, streamEndpoint
from tests._twistedclients import bounded
from tests.conftest import portOf

LOOPBACK = "127.0.0.1"


def streamRun(port, **options):
    from twisted.internet import reactor

    target = parseTarget(f"tcp:{LOOPBACK}:{port}")
    settings = {
        "payloads": Payloads(3, 1500),
        "count": 20,
        "interval": 0.0,
        "timeout": 5.0,
        "duration": None,
        "connectEach": False,
    }
    settings.update(options)
    return StreamLatency(
        reactor,
        target,
        {},
        lambda line: None,
        endpoint=streamEndpoint(reactor, target, 5.0),
        **settings,
    )


@pytest_twisted.ensureDeferred
async def test_latencyOverTCP(serve):
    run = streamRun(portOf(serve()))
    results = await bounded(run.start())
    assert results.error is None
    assert results.answered == 20
    assert all(s.rtt is not None and s.rtt > 0 for s in results.samples)


@pytest_twisted.ensureDeferred
async def test_connectEachAgainstTheConnectionLimit(serve):
    """
    A new connection for each probe stays within a server that allows one
    connection at a time: each is closed before the next opens.
    """
    service = serve(maxConnections=1)
    run = streamRun(portOf(service), count=5, interval=0.01, connectEach=True)
    results = await bounded(run.start())
    assert results.error is None
    assert len(results.connects()) == 5


@pytest_twisted.ensureDeferred
async def test_idleTimeoutIsAnError(serve):
    """
    A server that closes an idle connection between probes ends the run
    with an error that says so.
    """
    service = serve(idleTimeout=0.2)
    run = streamRun(portOf(service), count=3, interval=1.0)
    results = await bounded(run.start())
    assert results.error == (
        f"tcp:{LOOPBACK}:{portOf(service)}: the target closed the connection"
        " between probes"
    )
    assert results.answered == 1


@pytest_twisted.ensureDeferred
async def test_latencyOverUDP(serve):
    from twisted.internet import reactor

    # No rate limit: at the default (100 a second, in bursts of 10) a
    # flood of 30 is partly refused, as the next test shows.
    service = serve([], udp=[f"udp:0:interface={LOOPBACK}"], udpRate=0.0)
    target = parseTarget(f"udp:{LOOPBACK}:{portOf(service)}")
    run = DatagramRun(
        reactor,
        target,
        {"transport": "udp"},
        lambda line: None,
        payloads=Payloads(4, 512),
        count=30,
        interval=0.0,
        timeout=2.0,
        duration=None,
    )
    results = await bounded(run.start())
    assert results.error is None
    assert (results.sent, results.answered, results.duplicates) == (30, 30, 0)


@pytest_twisted.ensureDeferred
async def test_udpRateLimitSeenAsLoss(serve):
    """
    The server's --udp-rate answers about that many datagrams a second
    from one source: the probe counts the rest as lost, none as answers.
    """
    from twisted.internet import reactor

    service = serve([], udp=[f"udp:0:interface={LOOPBACK}"], udpRate=20.0)
    target = parseTarget(f"udp:{LOOPBACK}:{portOf(service)}")
    run = DatagramRun(
        reactor,
        target,
        {"transport": "udp"},
        lambda line: None,
        payloads=Payloads(5, 64),
        count=100,
        interval=0.0,
        timeout=0.2,
        duration=None,
        rate=500.0,
    )
    results = await bounded(run.start())
    assert results.error is None
    assert results.sent == 100
    assert 1 <= results.answered < 60
    assert results.duplicates == 0


@pytest_twisted.ensureDeferred
async def test_bulk(serve):
    from twisted.internet import reactor

    target = parseTarget(f"tcp:{LOOPBACK}:{portOf(serve())}")
    run = StreamBulk(
        reactor,
        target,
        {},
        lambda line: None,
        endpoint=streamEndpoint(reactor, target, 5.0),
        payloads=Payloads(6, 64),
        parallel=2,
        duration=0.5,
        timeout=5.0,
    )
    results = await bounded(run.start())
    assert results.error is None
    assert results.bulk is not None
    assert results.bulk["received_bytes"] == results.bulk["sent_bytes"] > 0
