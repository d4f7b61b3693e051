"""
How addresses read in logs: C{127.0.0.1:5000}, C{[::1]:5000}, C{unix:/run/echo.sock}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress


def formatAddress(address: IAddress | None) -> str:
    """
    A short, familiar text for C{address}, for log lines.
    """
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "backslashreplace")
        return f"unix:{name}" if name else "unix:(unnamed)"
    return str(address)
