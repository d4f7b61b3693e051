# -*- test-case-name: tests.test__twisted -*-
"""
The door to Twisted's private PROXY protocol parsers (see
L{echotwist._twisted}).

Twisted's PROXY header parsers live in private modules: the public
L{twisted.protocols.haproxy} offers only its wrapping factory and endpoint,
which can neither refuse an untrusted peer nor bound the wait for a header.
Checked with Twisted 24.3.0 and 26.10.0 (the same classes, C{feed()} and
C{PREFIX}).
"""

from __future__ import annotations

from typing import Any

from twisted.protocols.haproxy._v1parser import V1Parser as _TwistedV1Parser
from twisted.protocols.haproxy._v2parser import V2Parser as _TwistedV2Parser

__all__ = [
    "PROXY_V2_SIGNATURE",
    "ProxyHeaderParser",
    "proxyV1Parser",
    "proxyV2Parser",
]

#: The twelve bytes a PROXY v2 header starts with (C{V2Parser.PREFIX}).
PROXY_V2_SIGNATURE: bytes = _TwistedV2Parser.PREFIX

#: A PROXY header parser: C{feed(data)} returns C{(info, rest)}, C{info}
#: being None until the header is whole (a L{twisted.protocols.haproxy}
#: C{_info.ProxyInfo} then), and raises on a malformed header.
ProxyHeaderParser = Any


class _LenientV1Parser(_TwistedV1Parser):
    """
    Twisted's v1 parser, taking C{PROXY UNKNOWN} with nothing after it too.
    """

    @classmethod
    def parse(cls, line: bytes) -> Any:
        """
        Parse a v1 header line.  A bare C{PROXY UNKNOWN} is an UNKNOWN
        header like any other: the specification says that after UNKNOWN
        "the rest of the line before the CRLF may be omitted by the
        sender", and HAProxy 2.6 omits it for a client of a UNIX-socket
        frontend.
        """
        if line == b"PROXY UNKNOWN":
            # Twisted's parser wants a space after the protocol.
            line += b" "
        return super().parse(line)


def proxyV1Parser() -> ProxyHeaderParser:
    """
    A new PROXY v1 (text) header parser: Twisted's C{V1Parser}
    (C{twisted.protocols.haproxy._v1parser}), which also takes a bare
    C{PROXY UNKNOWN}.  Relies on its classmethod C{parse(line)} being what
    C{feed} calls for each whole line.  Checked with
    Twisted 24.3.0 and 26.10.0.
    """
    return _LenientV1Parser()


def proxyV2Parser() -> ProxyHeaderParser:
    """
    A new PROXY v2 (binary) header parser: Twisted's C{V2Parser}
    (C{twisted.protocols.haproxy._v2parser}).  Checked with Twisted 24.3.0
    and 26.10.0.
    """
    return _TwistedV2Parser()
