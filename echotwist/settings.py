# -*- test-case-name: tests.test_settings -*-
"""
What an echo server is told to do, besides where to listen: one immutable,
typed value, built once from the command line (L{echotwist.tap}) and handed
whole to the service, the supervisor and, as JSON, every worker.

Each knob is defined once, here, as a field of L{Settings} whose metadata
also makes its C{twistd echo} option: its name, help text and parser.  The
tap builds its C{optParameters} and C{optFlags} from these fields, so adding
an option is one field and the code that uses it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from echotwist._address import DEFAULT_IPV6_PREFIX

__all__ = ["MIN_SOCKET_BUFFER", "Settings", "optionFields"]

#: Below this the kernel would round up anyway (Linux: SOCK_MIN_SNDBUF).
MIN_SOCKET_BUFFER = 4096


def _number(what: str) -> Callable[[str], float]:
    def coerce(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number of {what}") from None
        if not 0 <= value < float("inf"):
            raise ValueError(f"{text!r} is not a number of {what} (0 or more)")
        return value

    return coerce


_seconds = _number("seconds")
_perSecond = _number("datagrams a second")


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number (0 or more)")
    return int(text)


def _workers(text: str) -> int:
    count = _count(text)
    if count < 1:
        raise ValueError(f"{count} is not a number of workers (1 or more)")
    return count


def _prefixLength(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 128:
        raise ValueError(f"{text!r} is not an IPv6 prefix length (1-128)")
    return int(text)


def _socketBuffer(text: str) -> int:
    size = _count(text)
    if 0 < size < MIN_SOCKET_BUFFER:
        raise ValueError(
            f"{text!r} is too small a socket buffer (0 for"
            f" the kernel's autotuning, or {MIN_SOCKET_BUFFER} bytes or more)"
        )
    return size


def _option(option: str, default: Any, parse: Callable[[str], Any], help: str) -> Any:
    return field(
        default=default,
        metadata={"option": option, "parse": parse, "help": " ".join(help.split())},
    )


@dataclass(frozen=True)
class Settings:
    """
    The knobs of an echo server, with C{twistd echo}'s defaults.  Immutable:
    C{dataclasses.replace} makes a changed copy.
    """

    workers: int = _option(
        "workers",
        1,
        _workers,
        """Serve with this many worker processes under a supervisor that
        restarts them; 1 for one process and no supervisor (e.g. --workers
        2). Limits apply per worker.""",
    )
    maxConnections: int = _option(
        "max-connections",
        1000,
        _count,
        """Open stream connections allowed across all listeners; one more is
        closed at once, unanswered; 0 for no limit (e.g. --max-connections
        10000).""",
    )
    maxPerSource: int = _option(
        "max-per-source",
        100,
        _count,
        """Open stream connections allowed per client address (behind
        haproxy:, the client's own), an IPv6 client's whole --ipv6-prefix
        network counting as one address; 0 for no limit (e.g.
        --max-per-source 10).""",
    )
    ipv6Prefix: int = _option(
        "ipv6-prefix",
        DEFAULT_IPV6_PREFIX,
        _prefixLength,
        """How many leading bits of an IPv6 address make one source for
        --max-per-source and --udp-rate, 1-128 (e.g. --ipv6-prefix 56); an
        IPv4 address mapped in IPv6 counts as that IPv4 address.""",
    )
    #: A full server admits a new client by closing a connection idle this
    #: long: long enough that a client thinking between two lines keeps its
    #: connection, short enough that idle connections cannot lock everyone
    #: out for the whole idle timeout.
    evictIdleAfter: float = _option(
        "evict-idle-after",
        10.0,
        _seconds,
        """When --max-connections is reached, admit a new client by closing
        the connection idle longest, if it has sent nothing for this many
        seconds; 0 for never (e.g. --evict-idle-after 30).""",
    )
    idleTimeout: float = _option(
        "idle-timeout",
        300.0,
        _seconds,
        """Close a connection that has sent nothing for this many seconds;
        abort one that cannot take its last echo within as long again; 0 for
        never (e.g. --idle-timeout 60).""",
    )
    socketBuffer: int = _option(
        "socket-buffer",
        96 * 1024,
        _socketBuffer,
        """SO_SNDBUF and SO_RCVBUF, in bytes, of every stream connection over
        TCP (TLS and haproxy: too); Linux doubles it, so a client that never
        reads pins at most about 430 KiB of kernel memory at the default, and
        less with a smaller size; 0 for the kernel's autotuning, which lets
        one such client pin megabytes (e.g. --socket-buffer 65536).""",
    )
    shutdownTimeout: float = _option(
        "shutdown-timeout",
        10.0,
        _seconds,
        """On SIGTERM or SIGINT, stop accepting, let open connections finish
        echoing, and abort those still open after this many seconds (e.g.
        --shutdown-timeout 30).""",
    )
    #: A client that pauses between writes (a paced upload, a human at a
    #: terminal) keeps its stream up to this long a pause; each connection
    #: holds the shutdown that long at least once it stops.
    drainQuiet: float = _option(
        "drain-quiet",
        2.0,
        _seconds,
        """On SIGTERM or SIGINT, close an open connection once it has been
        quiet (nothing received, no echo waiting) for this many seconds:
        longer keeps clients that pause between writes, shorter ends the
        shutdown sooner; 0 waits for each client until --shutdown-timeout
        (e.g. --drain-quiet 5).""",
    )
    udpRate: float = _option(
        "udp-rate",
        100.0,
        _perSecond,
        """UDP datagrams a second answered per source (an IPv4 address, or an
        IPv6 --ipv6-prefix network), in bursts of up to a tenth of that (at
        least 1); 0 for no limit (e.g. --udp-rate 1000).""",
    )
    logConnections: bool = field(
        default=True,
        metadata={
            "option": "no-connection-logs",
            "negated": True,
            "help": "Do not log each connection opened and closed, so that a"
            " flood of short connections cannot make logging the bottleneck;"
            " refusals and everything else are still logged"
            " (e.g. --no-connection-logs). [default: log them]",
        },
    )
    #: The peers allowed to send PROXY headers to haproxy: listeners, as
    #: addresses or networks; None for any peer.  (--proxy-from repeats, so
    #: the tap parses it with an opt_ method of its own.)
    proxyFrom: tuple[str, ...] | None = field(
        default=None, metadata={"option": "proxy-from", "repeated": True}
    )

    def toJSON(self) -> str:
        """
        This value as JSON, for a worker's command line.
        """
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def fromJSON(cls, text: str) -> Settings:
        """
        The value L{toJSON} wrote.
        """
        values = json.loads(text)
        if values.get("proxyFrom") is not None:
            values["proxyFrom"] = tuple(values["proxyFrom"])
        return cls(**values)


def optionFields() -> list[dataclasses.Field[Any]]:
    """
    The fields of L{Settings}, each a C{twistd echo} option, in order.
    """
    return list(dataclasses.fields(Settings))
