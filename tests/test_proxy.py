"""
The PROXY header wrapper, in memory: a StringTransport under it, an Echo
over it, time from a Clock.
"""

from __future__ import annotations

import socket
import struct

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist import Echo, EchoFactory
from echotwist.proxy import ProxyHeaderWrapper, ProxyWrappingFactory, parseNetwork

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


class HeaderTrustTests(SynchronousTestCase):
    """
    A header's addresses must be IP addresses of the family it declares,
    its ports 0-65535.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.echoes = EchoFactory(self.clock, maxConnections=10)
        self.factory = ProxyWrappingFactory(self.echoes, self.clock)

    def connect(self, peer: IAddress | None = None) -> tuple[ProxyHeaderWrapper, _TCP]:
        wrapper = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert isinstance(wrapper, ProxyHeaderWrapper)
        transport = _TCP(peerAddress=peer or IPv4Address("TCP", "127.0.0.1", 55555))
        wrapper.makeConnection(transport)
        return wrapper, transport

    def refused(self, header: bytes) -> str:
        # A fresh factory: refusals of one reason are logged once in 10 s.
        self.factory = ProxyWrappingFactory(self.echoes, self.clock)
        wrapper, transport = self.connect()
        with capturedLogs() as events:
            wrapper.dataReceived(header + b"echo me")
        self.assertTrue(transport.disconnecting, header)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.echoes.connections, set())
        (event,) = events
        self.assertEqual(event["event"], "proxy.refused")
        text = formatEvent(event)
        self.assertTrue(text.isprintable() and text.isascii(), text)
        wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.echoes.perSource, {})
        self.assertEqual(self.echoes.awaiting, set())
        return str(event["reason"])

    def test_forgedSourceWithControlBytes(self) -> None:
        reason = self.refused(b"PROXY TCP4 1.2.3.4\x1b[2J\x00\tFORGED 5.6.7.8 1 2\r\n")
        self.assertEqual(reason, "PROXY header address is not an IPv4 address")

    def test_wrongFamily(self) -> None:
        self.assertEqual(
            self.refused(b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n"),
            "PROXY header address is not an IPv4 address",
        )
        self.assertEqual(
            self.refused(b"PROXY TCP6 192.0.2.9 2001:db8::1 1 2\r\n"),
            "PROXY header address is not an IPv6 address",
        )

    def test_notAnAddress(self) -> None:
        for source in (b"localhost", b"1.2.3", b"01.2.3.4", b"1.2.3.4%x"):
            self.assertEqual(
                self.refused(b"PROXY TCP4 " + source + b" 192.0.2.1 1 2\r\n"),
                "PROXY header address is not an IPv4 address",
                source,
            )
        # Not even text: Twisted's parser refuses it already.
        self.assertEqual(
            self.refused(b"PROXY TCP4 \xff\x1b 192.0.2.1 1 2\r\n"),
            "malformed PROXY header",
        )
        self.assertEqual(
            self.refused(b"PROXY TCP6 fe80::1%eth0 2001:db8::1 1 2\r\n"),
            "PROXY header address is not an IPv6 address",
        )

    def test_ports(self) -> None:
        self.assertEqual(
            self.refused(b"PROXY TCP4 192.0.2.9 192.0.2.1 65536 7\r\n"),
            "PROXY header port is not 0-65535",
        )
        for ports in (b"-1 7", b"+1 7", b"1 0x7", b"1 7 extra", b"1_0 7", b"1  7"):
            self.assertEqual(
                self.refused(b"PROXY TCP4 192.0.2.9 192.0.2.1 " + ports + b"\r\n"),
                "malformed PROXY header",
                ports,
            )

    def test_edgesAreAccepted(self) -> None:
        for header, peer in (
            (b"PROXY TCP4 192.0.2.9 192.0.2.1 0 65535\r\n", "192.0.2.9:0"),
            (b"PROXY TCP6 2001:db8::9 2001:db8::1 65535 7\r\n", "[2001:db8::9]:65535"),
            (b"PROXY UNKNOWN whatever\r\n", "127.0.0.1:55555"),
            # What HAProxy 2.6 sends for a client of a UNIX-socket frontend.
            (b"PROXY UNKNOWN\r\n", "127.0.0.1:55555"),
        ):
            wrapper, transport = self.connect()
            wrapper.dataReceived(header + b"hi")
            self.assertEqual(transport.value(), b"hi", header)
            echo = wrapper.wrappedProtocol
            assert isinstance(echo, Echo)
            self.assertEqual(echo.peer, peer)

    def test_bareUnknownSplitAcrossReads(self) -> None:
        """
        C{PROXY UNKNOWN\\r\\n} arriving a few bytes at a time keeps the
        proxy's address; anything else after PROXY is still refused.
        """
        for header in (b"PROXY UNKNOWNX\r\n", b"PROXY \r\n", b"PROXY  UNKNOWN\r\n"):
            self.assertEqual(self.refused(header), "malformed PROXY header", header)
        wrapper, transport = self.connect()
        for chunk in (b"PRO", b"XY UNK", b"NOWN\r", b"\nhi"):
            wrapper.dataReceived(chunk)
        self.assertEqual(transport.value(), b"hi")
        echo = wrapper.wrappedProtocol
        assert isinstance(echo, Echo)
        self.assertEqual(echo.peer, "127.0.0.1:55555")

    def test_v2UnixAddressesRefused(self) -> None:
        body = b"/tmp/\x1b[2J".ljust(108, b"\x00") + b"/x".ljust(108, b"\x00")
        header = (
            b"\r\n\r\n\x00\r\nQUIT\n"
            + bytes([0x21, 0x31])
            + struct.pack("!H", len(body))
            + body
        )
        self.assertEqual(
            self.refused(header), "PROXY header is not for TCP over IPv4 or IPv6"
        )

    def test_v2Udp(self) -> None:
        header = bytearray(v2("198.51.100.9", 41000))
        header[13] = 0x12  # AF_INET, DGRAM
        self.assertEqual(
            self.refused(bytes(header)), "PROXY header is not for TCP over IPv4 or IPv6"
        )


class TrustedPeerTests(SynchronousTestCase):
    """
    With C{trusted}, only those peers may send PROXY headers.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.echoes = EchoFactory(self.clock)
        self.factory = ProxyWrappingFactory(
            self.echoes,
            self.clock,
            [parseNetwork("10.0.0.0/8"), parseNetwork("2001:db8::7")],
        )

    def connect(self, peer: IAddress) -> tuple[ProxyHeaderWrapper, _TCP]:
        wrapper = self.factory.buildProtocol(peer)
        assert isinstance(wrapper, ProxyHeaderWrapper)
        transport = _TCP(peerAddress=peer)
        wrapper.makeConnection(transport)
        return wrapper, transport

    def test_trustedPeers(self) -> None:
        for peer in (
            IPv4Address("TCP", "10.1.2.3", 5),
            IPv6Address("TCP", "2001:db8::7", 5),
            IPv6Address("TCP", "::ffff:10.9.9.9", 5),
            UNIXAddress(None),
        ):
            wrapper, transport = self.connect(peer)
            wrapper.dataReceived(V1 + b"ok")
            self.assertEqual(transport.value(), b"ok", peer)

    def test_untrustedPeerRefusedBeforeAnyByte(self) -> None:
        for peer in (
            IPv4Address("TCP", "192.0.2.1", 5),
            IPv6Address("TCP", "2001:db8::8", 5),
            IPv6Address("TCP", "::ffff:192.0.2.1", 5),
        ):
            self.clock.advance(self.factory.refusals.interval)
            with capturedLogs() as events:
                wrapper, transport = self.connect(peer)
            self.assertTrue(transport.disconnecting, peer)
            (event,) = events
            self.assertEqual(event["event"], "proxy.refused")
            self.assertIn("not allowed", event["reason"])
            wrapper.dataReceived(V1 + b"no")
            self.assertEqual(transport.value(), b"")
            self.assertEqual(self.echoes.awaiting, set())
            wrapper.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_parseNetwork(self) -> None:
        self.assertEqual(str(parseNetwork("192.0.2.7")), "192.0.2.7/32")
        self.assertEqual(str(parseNetwork("2001:db8::/32")), "2001:db8::/32")
        e = self.assertRaises(ValueError, parseNetwork, "10.1.2.3/8")
        self.assertIn("did you mean 10.0.0.0/8?", str(e))
        e = self.assertRaises(ValueError, parseNetwork, "proxy.example")
        self.assertIn("is not an IP address or network", str(e))


class CountedFromAcceptTests(SynchronousTestCase):
    """
    A connection counts against both limits from the moment it is accepted,
    as its proxy's until the header names the client; then as the
    client's.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.echoes = EchoFactory(
            self.clock, maxConnections=4, maxPerSource=2, evictIdleAfter=5
        )
        self.factory = ProxyWrappingFactory(self.echoes, self.clock)

    def connect(self, proxy: str = "10.0.0.1") -> tuple[ProxyHeaderWrapper, _TCP]:
        wrapper = self.factory.buildProtocol(IPv4Address("TCP", proxy, 1))
        assert isinstance(wrapper, ProxyHeaderWrapper)
        transport = _TCP(peerAddress=IPv4Address("TCP", proxy, 55555))
        wrapper.makeConnection(transport)
        return wrapper, transport

    def header(self, client: str) -> bytes:
        return f"PROXY TCP4 {client} 192.0.2.1 40000 7\r\n".encode()

    def test_headerlessConnectionsHitTheLimits(self) -> None:
        with capturedLogs() as events:
            held = [self.connect(f"10.0.0.{n}") for n in range(1, 7)]
        self.assertEqual(
            [transport.disconnecting for _, transport in held], [False] * 4 + [True] * 2
        )
        self.assertEqual(len(self.echoes.awaiting), 4)
        self.assertEqual(self.echoes.refused, {"too many connections": 2})
        self.assertEqual(
            [e["event"] for e in events], ["connection.refused"]
        )  # throttled
        # The refused ones leave nothing behind when they go.
        for wrapper, _ in held[4:]:
            wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.echoes.awaiting), 4)

    def test_perSourceLimitWaitsForTheHeader(self) -> None:
        """
        Before their headers, a proxy's connections count as its own, but
        are not held to the per-source limit: a proxy's burst carries many
        clients.  The headers name them, and each client's source is held
        to it; C{maxConnections} holds from the accept on.
        """
        held = [self.connect() for _ in range(3)]
        self.assertEqual([t.disconnecting for _, t in held], [False] * 3)
        self.assertEqual(self.echoes.perSource, {"10.0.0.1": 3})
        self.assertEqual(self.echoes.refused, {})
        for n, (wrapper, _) in enumerate(held):
            wrapper.dataReceived(self.header(f"203.0.113.{n + 1}"))
        self.assertEqual(len(self.echoes.connections), 3)
        self.assertEqual(
            self.echoes.perSource,
            {"203.0.113.1": 1, "203.0.113.2": 1, "203.0.113.3": 1},
        )
        self.connect()
        _, fifth = self.connect()
        self.assertTrue(fifth.disconnecting)
        self.assertEqual(self.echoes.refused, {"too many connections": 1})

    def test_theProxysOwnConnectionsBesideABurst(self) -> None:
        """
        A proxy's own connections (a LOCAL header: HAProxy's health check;
        UNKNOWN: a client of its UNIX-socket frontend) are held to the
        per-source limit among themselves: a burst's connections still
        waiting for their headers count as the proxy's, but are for the
        clients the headers will name.  (A health check was refused while
        2 of a burst's headers were still to come.)
        """
        burst = [self.connect() for _ in range(2)]
        check, checkTransport = self.connect()
        check.dataReceived(v2("0.0.0.0", 0, command=0x20) + b"hc")
        self.assertFalse(checkTransport.disconnecting)
        self.assertEqual(checkTransport.value(), b"hc")
        burst[0][0].dataReceived(self.header("203.0.113.1"))
        unknown, unknownTransport = self.connect()
        unknown.dataReceived(b"PROXY UNKNOWN\r\n")
        self.assertFalse(unknownTransport.disconnecting)
        burst[1][0].dataReceived(self.header("203.0.113.2"))
        self.assertEqual(self.echoes.refused, {})
        self.assertEqual(
            self.echoes.perSource,
            {"10.0.0.1": 2, "203.0.113.1": 1, "203.0.113.2": 1},
        )
        # Its own two are its limit.
        burst[0][0].connectionLost(Failure(ConnectionDone()))
        third, thirdTransport = self.connect()
        third.dataReceived(b"PROXY UNKNOWN\r\n")
        self.assertTrue(thirdTransport.disconnecting)
        self.assertEqual(
            self.echoes.refused, {"too many connections from this source": 1}
        )

    def test_headerMovesTheCountToTheClient(self) -> None:
        first, _ = self.connect()
        second, _ = self.connect()
        first.dataReceived(self.header("203.0.113.7"))
        self.assertEqual(self.echoes.perSource, {"10.0.0.1": 1, "203.0.113.7": 1})
        self.assertEqual(self.echoes.accepted, 1)
        second.dataReceived(self.header("203.0.113.7"))
        self.assertEqual(self.echoes.perSource, {"203.0.113.7": 2})
        # The proxy has room again; the client has none.
        third, _ = self.connect()
        with capturedLogs() as events:
            third.dataReceived(self.header("203.0.113.7"))
        self.assertTrue(third.transport.disconnecting)  # type: ignore[union-attr]
        self.assertEqual(events[0]["source"], "203.0.113.7")
        self.assertEqual(self.echoes.perSource, {"203.0.113.7": 2})
        self.assertEqual(len(self.echoes.connections), 2)
        self.assertEqual(self.echoes.awaiting, set())
        third.connectionLost(Failure(ConnectionDone()))
        for wrapper in (first, second):
            wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.echoes.perSource, {})
        self.assertEqual(self.echoes.connections, set())
        self.assertEqual((self.echoes.accepted, self.echoes.closed), (2, 2))

    def test_openChangedIsToldOfEveryChange(self) -> None:
        """
        L{EchoFactory.openChanged} hears of each connection counted or let
        go, before its header and after (a worker's accepts follow it, see
        L{echotwist.worker.AcceptInTurn}).
        """
        seen: list[int] = []
        self.echoes.openChanged = lambda: seen.append(self.echoes.open)
        first, _ = self.connect()
        second, _ = self.connect("10.0.0.2")
        first.dataReceived(self.header("203.0.113.7"))
        self.assertEqual(seen, [1, 2, 2])
        second.connectionLost(Failure(ConnectionDone()))
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(seen, [1, 2, 2, 1, 0])

    def test_everyEndBeforeTheHeaderReturnsTheCount(self) -> None:
        lost, _ = self.connect()
        timedOut, _ = self.connect()
        bad, _ = self.connect("10.0.0.2")
        lost.connectionLost(Failure(ConnectionDone()))
        bad.dataReceived(b"GET / HTTP/1.0\r\n")
        bad.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(self.factory.headerTimeout)
        timedOut.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.echoes.awaiting, set())
        self.assertEqual(self.echoes.perSource, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_headerlessConnectionIsEvictable(self) -> None:
        held = [self.connect(f"10.0.0.{n}") for n in range(1, 5)]
        for _ in range(60):
            self.clock.advance(0.1)
        with capturedLogs() as events:
            newcomer, transport = self.connect("10.0.0.9")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.echoes.evicted, 1)
        self.assertEqual([e["event"] for e in events], ["connection.evicted"])
        victims = [w for w, t in held if t.disconnected]
        self.assertEqual(len(victims), 1)
        victims[0].connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.echoes.awaiting), 4)
        self.assertEqual(sum(self.echoes.perSource.values()), 4)

    def test_drainClosesHeaderlessConnections(self) -> None:
        wrapper, transport = self.connect()
        done = self.echoes.drain(5)
        self.successResultOf(done)
        self.assertTrue(transport.disconnected)
        wrapper.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.echoes.perSource, {})


class UnixPeerNameTests(SynchronousTestCase):
    def test_peerChosenNameIsEscaped(self) -> None:
        """
        A UNIX client binds its socket to any name it likes; logs escape it.
        """
        clock = MemoryReactorClock()
        factory = ProxyWrappingFactory(EchoFactory(clock), clock)
        wrapper = factory.buildProtocol(None)
        assert wrapper is not None
        transport = _TCP(peerAddress=UNIXAddress(b"/tmp/\x1b[2J\n\x00fake"))
        wrapper.makeConnection(transport)
        with capturedLogs() as events:
            wrapper.dataReceived(b"nonsense\r\n")
        text = formatEvent(events[0])
        self.assertIn("unix:/tmp/\\x1b[2J\\x0a\\x00fake", text)
