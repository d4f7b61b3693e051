# -*- test-case-name: tests.test_probe_target -*-
"""
What the probe talks to: a target as a user writes it (C{tcp:HOST:PORT},
C{tcp6:}, C{tls:}, C{unix:PATH}, C{udp:HOST:PORT}, or a bare
C{HOST[:PORT]}), checked and turned into a Twisted client endpoint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

#: RFC 862's port: a bare host means TCP to it.
ECHO_PORT = 7

STREAM_KINDS = ("tcp", "tcp6", "tls", "unix")
KINDS = (*STREAM_KINDS, "udp")
#: Names users give TLS elsewhere (Twisted's endpoints, URLs).
_TLS_NAMES = ("ssl", "tls", "https")


class TargetError(ValueError):
    """
    A target that cannot be parsed or used; the message is one line for
    the user.
    """


@dataclass(frozen=True)
class Target:
    """
    One parsed target.

    @ivar kind: one of L{KINDS}.
    @ivar host: the host name or address (the path, for C{unix}).
    @ivar port: the port (0 for C{unix}).
    @ivar text: the target as it is shown in every line about it.
    """

    kind: str
    host: str
    port: int
    text: str

    @property
    def isDatagram(self) -> bool:
        """
        Whether the target is UDP.
        """
        return self.kind == "udp"


def _port(text: str, target: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise TargetError(f"{target}: the port must be a number from 1 to 65535")
    return int(text)


def _hostAndPort(rest: str, target: str, defaultPort: int | None) -> tuple[str, int]:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise TargetError(f"{target}: an IPv6 address is written [ADDRESS]:PORT")
        portText = tail[1:]
    elif rest.count(":") > 1:
        # An IPv6 address without brackets: the port is after the last colon
        # when one is expected, or the whole is the address.
        if defaultPort is None:
            host, _, portText = rest.rpartition(":")
        else:
            host, portText = rest, ""
    else:
        host, _, portText = rest.partition(":")
    if not host:
        raise TargetError(f"{target}: no host")
    if not portText:
        if defaultPort is None:
            raise TargetError(f"{target}: no port (write HOST:PORT)")
        return host, defaultPort
    return host, _port(portText, target)


def parseTarget(text: str, defaultPort: int = ECHO_PORT) -> Target:
    """
    Parse a target.

    @param defaultPort: the port of a bare C{HOST} (C{--port}).
    @raise TargetError: with a line naming the target and what is wrong.
    """
    from echotwist._address import escape

    shown = escape(text)
    if not text:
        raise TargetError("no target given (e.g. tcp:127.0.0.1:5000)")
    kind, colon, rest = text.partition(":")
    if colon and kind in KINDS:
        if kind == "unix":
            if not rest:
                raise TargetError(f"{shown}: no path (write unix:PATH)")
            return Target(kind, rest, 0, shown)
        host, port = _hostAndPort(rest, shown, None)
        return Target(kind, host, port, shown)
    if colon and kind.isalpha() and rest and not rest.isdigit():
        # "ssl:127.0.0.1:1", "http://..." and the like: a scheme this probe
        # does not speak, rather than a host called "ssl" (a bare host's
        # port is all digits).
        hint = (
            "did you mean tls:?"
            if kind.lower() in _TLS_NAMES
            else f"use {', '.join(k + ':' for k in KINDS)} or HOST[:PORT]"
        )
        raise TargetError(f"{shown}: unknown target type {escape(kind)!r}, {hint}")
    host, port = _hostAndPort(text, shown, defaultPort)
    named = f"[{host}]" if ":" in host else host
    return Target("tcp", host, port, escape(f"tcp:{named}:{port}"))


def streamEndpoint(
    reactor: Any,
    target: Target,
    timeout: float,
    trustRoot: str | None = None,
    insecure: bool = False,
) -> Any:
    """
    A client endpoint for a stream target.

    @param trustRoot: a PEM file of certificate authorities to trust for
        C{tls} instead of the system's.
    @param insecure: for C{tls}, do not check the server's certificate.
    """
    from twisted.internet import endpoints

    if target.kind == "unix":
        return endpoints.UNIXClientEndpoint(reactor, target.host, timeout=timeout)
    if target.kind == "tcp6":
        return endpoints.TCP6ClientEndpoint(
            reactor, target.host, target.port, timeout=timeout
        )
    tcp = endpoints.HostnameEndpoint(reactor, target.host, target.port, timeout=timeout)
    if target.kind != "tls":
        return tcp
    return endpoints.wrapClientTLS(tlsOptions(target, trustRoot, insecure), tcp)


def tlsHint() -> str:
    """
    How to install TLS support, said as the server says it.
    """
    from echotwist.listeners import installExtra

    return installExtra("tls")


def tlsOptions(target: Target, trustRoot: str | None, insecure: bool) -> Any:
    """
    The client TLS options for C{target}: the host's certificate checked
    against the system's authorities, or C{trustRoot}'s, or not at all.

    @raise TargetError: TLS support is missing, or C{trustRoot} unusable.
    """
    try:
        # Twisted's ssl module imports pyOpenSSL: it too needs the extra.
        import OpenSSL  # noqa: F401
        import service_identity  # noqa: F401
        from twisted.internet import ssl
    except ImportError:
        raise TargetError(
            f"{target.text}: TLS needs the tls extra: {tlsHint()}"
        ) from None
    if insecure:
        return _Unchecked(target.host, ssl.CertificateOptions())
    if trustRoot is None:
        return ssl.optionsForClientTLS(target.host)
    try:
        with open(trustRoot, "rb") as f:
            authority = ssl.Certificate.loadPEM(f.read())
    except OSError as e:
        raise TargetError(f"--ca {trustRoot}: {e.strerror}") from None
    except Exception:
        raise TargetError(f"--ca {trustRoot}: not a PEM certificate") from None
    return ssl.optionsForClientTLS(target.host, trustRoot=authority)


@implementer(IOpenSSLClientConnectionCreator)
class _Unchecked:
    """
    The client TLS options of C{--insecure}: the server's certificate is
    not checked, but its name is still sent (SNI), as
    C{optionsForClientTLS} sends it, for a server that picks its
    certificate by the name or refuses a handshake without one.  Twisted
    has no public options that send the name without checking it.
    """

    def __init__(self, host: str, options: Any) -> None:
        from twisted.internet.abstract import isIPAddress, isIPv6Address

        self._options = options
        self._serverName: bytes | None = None
        # Never an address: RFC 6066 allows names only.
        if not (isIPAddress(host) or isIPv6Address(host)):
            try:
                self._serverName = host.encode("ascii")
            except UnicodeEncodeError:
                import idna

                self._serverName = idna.encode(host)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        """
        A client connection of the options' context, with the name set.
        """
        from OpenSSL.SSL import Connection

        connection = Connection(self._options.getContext(), None)
        if self._serverName is not None:
            connection.set_tlsext_host_name(self._serverName)
        return connection


def peerCheck(target: Target, insecure: bool) -> Callable[[Any], str | None] | None:
    """
    For a C{tls} target whose certificate is checked, a check of the
    server's certificate against the target's host name, run once the
    handshake is done: given the transport, C{None} when the certificate
    is for the host, else the line that says why not.  C{None} when there
    is nothing to check.

    Twisted's own check (C{optionsForClientTLS}) lets through a
    certificate that names no host at all: service_identity refuses one
    without a subjectAltName with a C{CertificateError}, which Twisted
    (26.10) does not take for a failed check, but logs, and the handshake
    goes on as verified.  So every certificate of an authority given with
    C{--ca} that issues such certificates passed for every host name.
    This check takes both errors for what they are.
    """
    if target.kind != "tls" or insecure:
        return None
    from service_identity import CertificateError, VerificationError
    from service_identity.cryptography import (
        verify_certificate_hostname,
        verify_certificate_ip_address,
    )

    from echotwist._address import escape

    host = target.host
    verify: Callable[[Any, str], None]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        verify = verify_certificate_hostname
    else:
        verify = verify_certificate_ip_address
    hint = "(--insecure to skip the check)"

    def check(transport: Any) -> str | None:
        certificate = transport.getPeerCertificate()
        if certificate is None:
            return f"the server sent no certificate {hint}"
        try:
            verify(certificate.to_cryptography(), host)
        except CertificateError:
            return (
                f"the certificate is not for {escape(host)}: it names no host"
                f" (no subjectAltName) {hint}"
            )
        except VerificationError:
            # As when Twisted's own check refuses it (26.10: in the
            # handshake, L{echotwist.probe.run.describeFailure}); 24.3's
            # finishes the handshake and this check comes first.
            return f"the certificate is not for the target's host name {hint}"
        return None

    return check
