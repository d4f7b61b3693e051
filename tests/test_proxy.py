"""
The PROXY header wrapper, in memory: a StringTransport under it, an Echo
over it, time from a Clock.
"""

from __future__ import annotations

import socket
import struct

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist import Echo, EchoFactory
from echotwist.proxy import ProxyWrappingFactory

V1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7\r\n"


def v2(source: str, sourcePort: int, command: int = 0x21) -> bytes:
    body = (
        socket.inet_aton(source)
        + socket.inet_aton("192.0.2.1")
        + struct.pack("!HH", sourcePort, 7)
    )
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + bytes([command, 0x11])
        + struct.pack("!H", len(body))
        + body
    )


class _TCP(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class ProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.echoes = EchoFactory(self.clock)
        self.factory = ProxyWrappingFactory(self.echoes, self.clock)
        self.wrapper = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.transport = _TCP(peerAddress=IPv4Address("TCP", "127.0.0.1", 55555))
        self.wrapper.makeConnection(self.transport)

    @property
    def echo(self) -> Echo:
        (echo,) = self.echoes.connections
        return echo

    def test_echoStartsOnlyAfterTheHeader(self) -> None:
        with capturedLogs() as events:
            self.wrapper.dataReceived(V1[:10])
            self.assertEqual(self.echoes.connections, set())
            self.wrapper.dataReceived(V1[10:] + b"hello")
        self.assertEqual(self.transport.value(), b"hello")
        opened = [e for e in events if e.get("event") == "connection.opened"]
        self.assertEqual(opened[0]["peer"], "203.0.113.7:40000")
        self.assertEqual(self.echo.transport.getHost().port, 7)

    def test_headerOneByteAtATime(self) -> None:
        for n in range(len(V1)):
            self.wrapper.dataReceived(V1[n : n + 1])
        self.wrapper.dataReceived(b"x")
        self.assertEqual(self.echo.peer, "203.0.113.7:40000")
        self.assertEqual(self.transport.value(), b"x")

    def test_v2(self) -> None:
        header = v2("198.51.100.9", 41000)
        self.wrapper.dataReceived(header[:3])
        self.wrapper.dataReceived(header[3:14])
        self.wrapper.dataReceived(header[14:] + b"two")
        self.assertEqual(self.echo.peer, "198.51.100.9:41000")
        self.assertEqual(self.transport.value(), b"two")

    def test_v2LocalKeepsTheProxyAddress(self) -> None:
        """
        A LOCAL command (HAProxy's own health check) carries no client.
        """
        self.wrapper.dataReceived(v2("0.0.0.0", 0, command=0x20) + b"hc")
        self.assertEqual(self.echo.peer, "127.0.0.1:55555")

    def refusal(self, data: bytes) -> str:
        with capturedLogs() as events:
            self.wrapper.dataReceived(data)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.echoes.connections, set())
        self.assertEqual(self.transport.value(), b"")
        (event,) = events
        self.assertEqual(event["event"], "proxy.refused")
        self.assertEqual(event["peer"], "127.0.0.1:55555")
        return str(event["reason"])

    def test_notAProxyHeader(self) -> None:
        self.assertEqual(
            self.refusal(b"GET / HTTP/1.0\r\n"), "no PROXY protocol header"
        )

    def test_malformedV1(self) -> None:
        self.assertEqual(
            self.refusal(b"PROXY TCP4 nonsense\r\n"), "malformed PROXY header"
        )

    def test_overlongV1(self) -> None:
        self.assertEqual(self.refusal(b"PROXY " + b"9" * 200), "malformed PROXY header")

    def test_badV2Version(self) -> None:
        header = bytearray(v2("198.51.100.9", 41000))
        header[12] = 0x31
        self.assertEqual(
            self.refusal(bytes(header)), "unsupported PROXY protocol version"
        )

    def test_headerDeadline(self) -> None:
        self.wrapper.dataReceived(b"PROX")
        with capturedLogs() as events:
            self.clock.advance(self.factory.headerTimeout)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(events[0]["reason"], "no PROXY header in time")

    def test_deadlineCancelledByTheHeader(self) -> None:
        self.wrapper.dataReceived(V1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_halfClosePassesThrough(self) -> None:
        self.wrapper.dataReceived(V1 + b"bye")
        self.wrapper.readConnectionLost()
        self.assertEqual(self.transport.value(), b"bye")
        self.assertTrue(self.transport.disconnecting)
        with capturedLogs() as events:
            self.wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(events[0]["reason"], "client finished sending")
        self.assertEqual(self.echoes.connections, set())
        self.assertEqual(self.factory.protocols, {})

    def test_lostBeforeTheHeader(self) -> None:
        self.wrapper.dataReceived(b"PROXY TCP4")
        self.wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.factory.protocols, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
