# -*- test-case-name: tests.test_identity -*-
"""
Which backend answered: a line naming this server (host name, instance
name, version) and the client as the server sees it, on a listener of its
own (C{--identify}, C{--identify-udp}) and as JSON at C{/info} on the
health endpoint.  Never on an echo port: RFC 862 answers with the client's
bytes and nothing else.

The line is one line of printable ASCII, fields separated by spaces::

    echotwist host=web-1 instance=echo-7d9f-x2x4q version=0.1.0 client=10.0.0.7:51234

Everything in it is escaped (L{echotwist._address.escape}): a host or
instance name comes from the environment, and a client address behind
C{haproxy:} from a PROXY header.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

from echotwist._address import escape, formatAddress
from echotwist.datagram import DatagramPolicy
from echotwist.guard import ConnectionGuard

__all__ = [
    "INSTANCE_VARIABLES",
    "IDENTIFY_CONNECTION_LIFETIME",
    "MAX_IDENTIFY_CONNECTIONS",
    "MAX_IDENTIFY_CONNECTIONS_PER_SOURCE",
    "IdentifyDatagram",
    "IdentifyFactory",
    "Identity",
    "identifyListener",
    "identityFor",
]

log = Logger()

#: --identify connections open at once.  A plain one lives as long as it
#: takes to write a line; over TLS (C{--identify ssl:...}) it waits for the
#: client's handshake, and a client that never sends one would hold its
#: descriptor for good: without a bound, enough of them leave the echo
#: none.  256 is room for many clients at once, and little of the
#: process's descriptors.
MAX_IDENTIFY_CONNECTIONS = 256

#: --identify connections open at once from one source (an IPv4 address,
#: an IPv6 /64), so that one client cannot take the 256.
MAX_IDENTIFY_CONNECTIONS_PER_SOURCE = 16

#: Seconds an --identify connection may stay open, whatever it is doing:
#: the line takes a round trip (a TLS handshake's few more).
IDENTIFY_CONNECTION_LIFETIME = 5.0

#: Where an instance name is looked for, in order, when --instance-name is
#: not given: the pod's name as a Deployment hands it down (the Downward
#: API, docs/deployment.rst), then the host name a container runtime sets.
INSTANCE_VARIABLES = ("POD_NAME", "HOSTNAME")


@dataclass(frozen=True)
class Identity:
    """
    What this server says it is.
    """

    hostname: str
    instance: str
    version: str

    def asDict(self, client: IAddress | None) -> dict[str, Any]:
        """
        The identity and C{client}'s address, as C{/info} gives them: the
        client as a host and a port (None for a UNIX peer), and as text.
        """
        host: str | None = None
        port: int | None = None
        if isinstance(client, (IPv4Address, IPv6Address)):
            host, port = client.host, client.port
        return {
            "hostname": self.hostname,
            "instance": self.instance,
            "version": self.version,
            "client": formatAddress(client) if client is not None else None,
            "clientHost": host,
            "clientPort": port,
        }

    def asJSON(self, client: IAddress | None) -> bytes:
        """
        L{asDict} as one line of JSON (ASCII: json escapes the rest).
        """
        return json.dumps(self.asDict(client), sort_keys=True).encode("ascii") + b"\n"

    def line(self, client: IAddress | None) -> bytes:
        """
        The identity line, ending in CRLF.
        """
        return (
            f"echotwist host={escape(self.hostname) or '-'}"
            f" instance={escape(self.instance) or '-'}"
            f" version={escape(self.version)}"
            f" client={formatAddress(client) if client is not None else '-'}\r\n"
        ).encode("ascii")


def identityFor(
    instanceName: str | None = None,
    environ: Mapping[str, str] = os.environ,
    hostname: str | None = None,
) -> Identity:
    """
    This server's identity: its host name, and C{instanceName} or, without
    one, the first of L{INSTANCE_VARIABLES} set, or else the host name.
    Spaces would split the line's fields: they become underscores.
    """
    # Here, not at the top: the package's __init__ imports this module
    # (through the service) before it has set its version.
    from echotwist import __version__

    if hostname is None:
        hostname = socket.gethostname()
    instance = instanceName
    if not instance:
        instance = next(
            (environ[name] for name in INSTANCE_VARIABLES if environ.get(name)),
            hostname,
        )
    return Identity(
        hostname="_".join(hostname.split()),
        instance="_".join(instance.split()),
        version=__version__,
    )


class _IdentifyProtocol(Protocol):
    """
    Say the identity line and close; whatever the client sends is ignored.
    """

    factory: IdentifyFactory

    def connectionMade(self) -> None:
        assert self.transport is not None
        # Behind haproxy:, getPeer is the address the PROXY header gave.
        self.transport.write(self.factory.identity.line(self.transport.getPeer()))
        self.transport.loseConnection()


class IdentifyFactory(Factory):
    """
    The stream listener of C{--identify}: one line, then the connection
    closes.
    """

    noisy = False

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    # Twisted 26 allows addr to be None, and older ones not.
    def buildProtocol(self, addr: IAddress | None) -> Protocol:  # type: ignore[override, unused-ignore]
        """
        A protocol that says the line and closes.
        """
        protocol = _IdentifyProtocol()
        protocol.factory = self
        return protocol


def identifyListener(
    identity: Identity, reactor: IReactorTime | None = None
) -> ConnectionGuard:
    """
    The factory of an C{--identify} listener: L{IdentifyFactory} behind a
    L{ConnectionGuard} with the limits above (refusals are logged as
    C{identify.connection_refused}).
    """
    return ConnectionGuard(
        IdentifyFactory(identity),
        reactor,
        maxConnections=MAX_IDENTIFY_CONNECTIONS,
        lifetime=IDENTIFY_CONNECTION_LIFETIME,
        maxPerSource=MAX_IDENTIFY_CONNECTIONS_PER_SOURCE,
        what="identify",
        event="identify.connection_refused",
        log=log,
    )


class IdentifyDatagram(DatagramProtocol):
    """
    The UDP listener of C{--identify-udp}: each datagram is answered with
    the identity line, under the same guards and per-source rate as the
    datagram echo (the answer is larger than the question: unguarded, it
    would make this port a reflector), with books of its own.
    """

    noisy = False

    def __init__(self, identity: Identity, policy: DatagramPolicy) -> None:
        self.identity = identity
        self.policy = policy

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """
        Answer with the identity line, unless the policy refuses the source.
        """
        host, port = addr[0], addr[1]
        # The loop guard sees the question: once an echo server sends our
        # line back, the question is the answer we sent, and the guard
        # ends that loop as it ends the echo's.
        why, source = self.policy.refusal(host, port, datagram)
        if why is not None:
            self.policy.count(why)
            self.policy.refusals.warn(
                why,
                "Identity datagram from {source} not answered: {reason}",
                event="identify.refused",
                source=source,
                reason=why,
            )
            return
        peer = (IPv6Address if ":" in host else IPv4Address)("UDP", host, port)
        assert self.transport is not None
        try:
            self.transport.write(self.identity.line(peer), addr)
        except OSError:
            self.policy.count("send failed")
        else:
            self.policy.count("answered")
