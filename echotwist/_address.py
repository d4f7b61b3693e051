# -*- test-case-name: tests.test__address,tests.test_limits -*-
"""
How addresses read in logs (C{127.0.0.1:5000}, C{[::1]:5000},
C{unix:/run/echo.sock}), and which group of addresses a limit counts a
client in (an IPv6 client: its network of C{--ipv6-prefix} bits, on its
interface if link-local).
"""

from __future__ import annotations

import ipaddress
import re
from functools import cache
from typing import TypeAlias

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

#: The IPv6 prefix length one source is, unless configured: a /64 is what
#: a single host or subscriber is usually given (RFC 6177), and a host that
#: owns one can use any of its 2**64 addresses.
DEFAULT_IPV6_PREFIX = 64


@cache
def _unsafe() -> re.Pattern[str]:
    """
    Anything but printable ASCII: control bytes, DEL, and every non-ASCII
    character (a terminal can be told things by more than C0 controls).
    Compiled when first needed: most text is printable ASCII, which
    L{escape} returns as it is, and a start need not pay for it
    (docs/performance.rst).
    """
    return re.compile(r"[^\x20-\x7e]")


def _escapeOne(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str) -> str:
    """
    C{text} with every character that is not printable ASCII written as a
    Python escape (C{\\x1b}, C{\\x00}, C{\\u2028}), and backslashes doubled,
    so that anything a peer chose reads as one plain line in a text log.
    """
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return _unsafe().sub(_escapeOne, text.replace("\\", "\\\\"))


def formatAddress(address: IAddress | None) -> str:
    """
    A short, familiar text for C{address}, for log lines.  Whatever in it a
    peer could choose (a UNIX client binds its socket to any name it likes)
    is escaped.
    """
    if isinstance(address, IPv4Address):
        text = f"{address.host}:{address.port}"
    elif isinstance(address, IPv6Address):
        text = f"[{address.host}]:{address.port}"
    elif isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "backslashreplace")
        text = f"unix:{name}" if name else "unix:(unnamed)"
    else:
        text = str(address)
    return escape(text)


def parseHost(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """
    An address as the kernel reports it (C{192.0.2.1}, C{2001:db8::1},
    C{fe80::1%eth0}), parsed with its scope, if it has a valid one.

    @raise ValueError: if C{host} is not an IP address.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        # A scope ipaddress will not take: the address without it.
        return ipaddress.ip_address(host.split("%", 1)[0])


def sourceGroup(host: str, ipv6Prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """
    The source a per-source limit counts C{host} as: an IPv4 address is
    itself; an IPv4 address mapped in IPv6 (C{::ffff:192.0.2.1}) is that
    IPv4 address; any other IPv6 address is its network of C{ipv6Prefix}
    bits (C{2001:db8:1:2::/64}), or itself at 128, and a link-local one
    that network on its interface (C{fe80::%eth0/64}).  Text that is not
    an IP address is returned as it is (escaped).
    """
    if ":" not in host:
        # IPv4, the common case: no parsing.
        return host
    try:
        address = parseHost(host)
    except ValueError:
        return escape(host)
    return groupOf(address, ipv6Prefix)


def groupOf(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ipv6Prefix: int = DEFAULT_IPV6_PREFIX,
) -> str:
    """
    L{sourceGroup} of an address already parsed.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    # Every link has its own fe80::/64, so hosts on two links can hold the
    # same link-local address: the interface (scope) is part of the source.
    # RFC 4007 writes a scoped prefix fe80::%eth0/64.
    scope = address.scope_id
    zone = f"%{escape(scope)}" if scope and address.is_link_local else ""
    if ipv6Prefix >= 128:
        return f"{ipaddress.IPv6Address(int(address))}{zone}"
    mask = ((1 << ipv6Prefix) - 1) << (128 - ipv6Prefix)
    return f"{ipaddress.IPv6Address(int(address) & mask)}{zone}/{ipv6Prefix}"


#: An IP network, as L{parseNetwork} makes it (an address is a network of
#: one).
Network: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network"


def parseNetwork(text: str) -> Network:
    """
    An address (C{10.0.0.1}, C{::1}) or a network (C{10.0.0.0/8},
    C{2001:db8::/32}) as a network.

    @raise ValueError: with a one-line message a user can act on.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ValueError(
                f"{text!r} is not an IP address or network (e.g. 10.0.0.0/8,"
                f" 192.0.2.7, 2001:db8::/32)"
            ) from None
        raise ValueError(
            f"{text!r} has host bits set ({e}): did you mean {loose}?"
        ) from None
