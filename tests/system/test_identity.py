"""
Which backend answered, on the real twistd: the identity line on
--identify (stream, behind PROXY too) and --identify-udp, never on the echo
ports.
"""

from __future__ import annotations

import os
import socket

from echotwist import __version__
from echotwist.identity import (
    IDENTIFY_CONNECTION_LIFETIME,
    MAX_IDENTIFY_CONNECTIONS_PER_SOURCE,
)
from tests._clients import echoOnce
from tests._tools import selfSignedCertificate
from tests._twistd import LOOPBACK, WAIT, ServerTestCase
from tests.system.test_transports import ask, freePort


def readLine(port: int, send: bytes = b"") -> tuple[bytes, tuple[str, int]]:
    """
    Connect, send C{send}, read until the server closes; what came and the
    client's own address.
    """
    with socket.create_connection((LOOPBACK, port), timeout=WAIT) as sock:
        own = sock.getsockname()
        sock.sendall(send)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    return received, own


class IdentifyServerTests(ServerTestCase):
    def test_streamAndDatagram(self) -> None:
        """
        The line on --identify and --identify-udp, naming the instance and
        the client as it connected; the echo port beside them stays
        byte-exact.
        """
        udp = freePort(socket.SOCK_DGRAM)
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--identify",
            f"tcp:0:interface={LOOPBACK}",
            "--identify-udp",
            f"udp:{udp}:interface={LOOPBACK}",
            "--instance-name",
            "echo-7",
        )
        echoPort = server.port
        port = int(
            server.waitFor(r"Serving the identity line on \S+:(\d+) \(tcp").group(1)
        )
        line, (host, own) = readLine(port, b"ignored")
        self.assertEqual(
            line,
            f"echotwist host={socket.gethostname()} instance=echo-7"
            f" version={__version__} client={host}:{own}\r\n".encode(),
        )
        self.assertIn(b"instance=echo-7", ask(b"?", udp) or b"")
        payload = os.urandom(4096)
        self.assertEqual(echoOnce((LOOPBACK, echoPort), payload), payload)

    def test_tlsClientsThatNeverHandshake(self) -> None:
        """
        --identify over TLS: clients that connect and never send a
        handshake were held open for good, without limit, until the
        process had no descriptor left for the echo.  Now at most
        MAX_IDENTIFY_CONNECTIONS_PER_SOURCE from one source are held (one
        more is closed at once) and each for IDENTIFY_CONNECTION_LIFETIME
        seconds; a client that does the handshake still gets the line, and
        the echo answers throughout.
        """
        key, certificate = selfSignedCertificate(self.directory)
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--identify",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={certificate}",
        )
        port = int(
            server.waitFor(r"Serving the identity line on \S+:(\d+) \(ssl").group(1)
        )
        silent = []
        for _ in range(MAX_IDENTIFY_CONNECTIONS_PER_SOURCE + 2):
            sock = socket.create_connection((LOOPBACK, port), timeout=WAIT)
            self.addCleanup(sock.close)
            silent.append(sock)

        def closedByServer(sock: socket.socket) -> bool:
            try:
                return sock.recv(1) == b""
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False

        # The two over the cap are closed as they are accepted.
        for sock in silent[MAX_IDENTIFY_CONNECTIONS_PER_SOURCE:]:
            self.assertTrue(closedByServer(sock))
        payload = os.urandom(1024)
        self.assertEqual(echoOnce((LOOPBACK, server.port), payload), payload)
        # The others at the end of their lifetime (WAIT bounds the wait).
        self.assertGreater(WAIT, IDENTIFY_CONNECTION_LIFETIME * 2)
        for sock in silent[:MAX_IDENTIFY_CONNECTIONS_PER_SOURCE]:
            self.assertTrue(closedByServer(sock))
        import ssl

        context = ssl.create_default_context(cafile=certificate)
        with socket.create_connection((LOOPBACK, port), timeout=WAIT) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                line = tls.recv(4096)
        self.assertTrue(line.startswith(b"echotwist host="), line)
        server.waitFor(r"Refused identify connection from 127\.0\.0\.1:\d+")

    def test_behindProxy(self) -> None:
        """
        Behind haproxy:, the client named is the one the PROXY header gave.
        """
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--identify",
            f"haproxy:tcp:0:interface={LOOPBACK}",
            "--proxy-from",
            LOOPBACK,
        )
        port = int(server.waitFor(r"Serving the identity line on \S+:(\d+)").group(1))
        line, _ = readLine(port, b"PROXY TCP4 203.0.113.9 127.0.0.1 4444 5001\r\n")
        self.assertTrue(line.endswith(b" client=203.0.113.9:4444\r\n"), line)

    def test_notOnAnEchoPort(self) -> None:
        """
        The identity line cannot share an echo listener.
        """
        output = self.failedStart("--port", "tcp:5000", "--identify", "tcp:5000")
        self.assertIn("--identify: tcp:5000 is also an echo listener", output)

    def test_badInstanceName(self) -> None:
        output = self.failedStart("--instance-name", "two words")
        self.assertIn("--instance-name: 'two words' is not an instance name", output)
