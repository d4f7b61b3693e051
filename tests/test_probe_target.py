"""
echotwist-probe's targets (L{echotwist.probe.target}): parsed, and a bad
one refused in one line.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from echotwist.probe.target import (
    Target,
    TargetError,
    parseTarget,
    peerCheck,
    tlsOptions,
)
from tests._tools import requireTLS, selfSignedCertificate


class TargetTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        self.assertEqual(
            parseTarget("tcp:example.org:5000"),
            Target("tcp", "example.org", 5000, "tcp:example.org:5000"),
        )
        self.assertEqual(parseTarget("udp:127.0.0.1:7").kind, "udp")
        self.assertEqual(parseTarget("tls:localhost:443").kind, "tls")
        self.assertEqual(parseTarget("tcp6:::1:5000").host, "::1")
        self.assertEqual(parseTarget("tcp6:[::1]:5000").port, 5000)
        self.assertEqual(parseTarget("unix:/run/echo.sock").host, "/run/echo.sock")

    def test_bareHostIsTCPToPort7(self) -> None:
        """
        A bare host is TCP to RFC 862's port, or to the default given
        (C{--port}); a bare host and port is TCP there.
        """
        self.assertEqual(
            parseTarget("localhost"), Target("tcp", "localhost", 7, "tcp:localhost:7")
        )
        self.assertEqual(parseTarget("localhost", 5000).port, 5000)
        self.assertEqual(parseTarget("127.0.0.1:5000").port, 5000)
        self.assertEqual(
            parseTarget("[::1]:5000"), Target("tcp", "::1", 5000, "tcp:[::1]:5000")
        )
        self.assertEqual(parseTarget("::1").port, 7)

    def test_badTargets(self) -> None:
        for text, says in [
            ("", "no target"),
            ("tcp:localhost", "no port"),
            ("tcp:localhost:0", "1 to 65535"),
            ("tcp:localhost:65536", "1 to 65535"),
            ("udp:localhost:http", "1 to 65535"),
            ("tcp::5000", "no host"),
            ("unix:", "no path"),
            ("ssl:localhost:443", "unknown target type 'ssl', did you mean tls:?"),
            ("ssl:127.0.0.1:1", "unknown target type 'ssl', did you mean tls:?"),
            ("SSL:[::1]:1", "did you mean tls:?"),
            ("http://example.org", "unknown target type 'http', use tcp:"),
            ("[::1", "[ADDRESS]:PORT"),
        ]:
            with self.assertRaises(TargetError, msg=text) as caught:
                parseTarget(text)
            self.assertIn(says, str(caught.exception), text)
            self.assertNotIn("\n", str(caught.exception))

    def test_bareHostWithPortIsNotAType(self) -> None:
        """
        A bare C{HOST:PORT} whose host is a word is still TCP to it.
        """
        self.assertEqual(
            parseTarget("localhost:5000"),
            Target("tcp", "localhost", 5000, "tcp:localhost:5000"),
        )

    def test_escapesWhatItShows(self) -> None:
        """
        A target is shown escaped: a terminal control in it reaches no
        line as it is.
        """
        with self.assertRaises(TargetError) as caught:
            parseTarget("tcp:evil\x1b[2J:99999")
        self.assertIn("evil\\x1b[2J", str(caught.exception))


class _Peer:
    """
    A TLS transport as far as L{peerCheck} looks at it: the certificate
    the server sent.
    """

    def __init__(self, path: str | None) -> None:
        self.certificate: Any = None
        if path is not None:
            from OpenSSL import crypto

            with open(path, "rb") as f:
                self.certificate = crypto.load_certificate(
                    crypto.FILETYPE_PEM, f.read()
                )

    def getPeerCertificate(self) -> Any:
        return self.certificate


class PeerCheckTests(SynchronousTestCase):
    """
    The probe's own check of a TLS server's certificate against the
    target's host name, after the handshake: Twisted's lets a certificate
    that names no host through.
    """

    def setUp(self) -> None:
        # The check is service_identity's, which the tls extra installs.
        requireTLS()

    def certificate(self, subjectAltName: bool = True) -> str:
        directory = self.mktemp()
        import os

        os.mkdir(directory)
        return selfSignedCertificate(directory, subjectAltName)[1]

    def test_forTheHost(self) -> None:
        path = self.certificate()
        for text in ("tls:localhost:1", "tls:127.0.0.1:1"):
            check = peerCheck(parseTarget(text), insecure=False)
            assert check is not None
            self.assertIsNone(check(_Peer(path)), text)

    def test_forAnotherHost(self) -> None:
        path = self.certificate()
        for text in ("tls:example.com:1", "tls:[::1]:1"):
            check = peerCheck(parseTarget(text), insecure=False)
            assert check is not None
            self.assertEqual(
                check(_Peer(path)),
                "the certificate is not for the target's host name (--insecure"
                " to skip the check)",
            )

    def test_namesNoHost(self) -> None:
        """
        A certificate without a subjectAltName is for no host, whatever
        its common name says.
        """
        check = peerCheck(parseTarget("tls:localhost:1"), insecure=False)
        assert check is not None
        self.assertEqual(
            check(_Peer(self.certificate(subjectAltName=False))),
            "the certificate is not for localhost: it names no host (no"
            " subjectAltName) (--insecure to skip the check)",
        )

    def test_noCertificate(self) -> None:
        check = peerCheck(parseTarget("tls:localhost:1"), insecure=False)
        assert check is not None
        self.assertIn("sent no certificate", check(_Peer(None)) or "")

    def test_nothingToCheck(self) -> None:
        self.assertIsNone(peerCheck(parseTarget("tls:localhost:1"), insecure=True))
        self.assertIsNone(peerCheck(parseTarget("tcp:localhost:1"), insecure=False))


class InsecureServerNameTests(SynchronousTestCase):
    """
    C{--insecure} skips the certificate's check, not the server name
    (SNI): a server that picks its certificate (or refuses a handshake)
    by the name still gets it, and an IP address is still not sent.
    """

    def serverName(self, text: str) -> object:
        """
        The name a server is sent in a handshake, in memory, with the
        options of C{--insecure} for C{text}.
        """
        requireTLS()
        import os

        from twisted.internet import ssl
        from twisted.internet.protocol import Factory, Protocol
        from twisted.protocols.tls import TLSMemoryBIOFactory
        from twisted.test.iosim import connectedServerAndClient

        directory = self.mktemp()
        os.mkdir(directory)
        key, certificate = selfSignedCertificate(directory)
        with open(key) as k, open(certificate) as c:
            server = ssl.PrivateCertificate.loadPEM(k.read() + c.read()).options()
        names: list[object] = []
        server.getContext().set_tlsext_servername_callback(
            lambda connection: names.append(connection.get_servername())
        )
        plain = Factory.forProtocol(Protocol)
        serverSide = TLSMemoryBIOFactory(server, False, plain)
        clientSide = TLSMemoryBIOFactory(
            tlsOptions(parseTarget(text), None, insecure=True), True, plain
        )
        _, _, pump = connectedServerAndClient(
            lambda: serverSide.buildProtocol(None),
            lambda: clientSide.buildProtocol(None),
        )
        pump.flush()
        self.assertEqual(len(names), 1)
        return names[0]

    def test_nameSent(self) -> None:
        self.assertEqual(self.serverName("tls:example.com:1"), b"example.com")
        self.assertEqual(
            self.serverName("tls:b\u00fccher.example:1"), b"xn--bcher-kva.example"
        )

    def test_addressNotSent(self) -> None:
        self.assertIsNone(self.serverName("tls:127.0.0.1:1"))
        self.assertIsNone(self.serverName("tls:[::1]:1"))
