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
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from echotwist._address import DEFAULT_IPV6_PREFIX, Network, parseNetwork

__all__ = [
    "DEFAULT_KEEPALIVE",
    "MIN_SOCKET_BUFFER",
    "WORKERS_PER_CPU",
    "Settings",
    "decimalNumber",
    "maxWorkers",
    "optionFields",
    "usableCPUs",
    "wholeNumber",
]

#: Below this the kernel would round up anyway (Linux: SOCK_MIN_SNDBUF).
MIN_SOCKET_BUFFER = 4096

#: setsockopt(2) takes the size as a C int: a larger one cannot even be
#: passed (Python's socket.setsockopt fails on it).
_MAX_SOCKET_BUFFER = 2**31 - 1


#: What a number given on the command line may look like: ASCII digits,
#: with a decimal fraction where one makes sense.  Python's own C{int()} and
#: C{float()} take more (Unicode digits such as C{"\u0663"}, C{"1_000"},
#: spaces around, exponents, C{"nan"}), none of which a user means to type,
#: and some of which hide a mistake.
_WHOLE = re.compile(r"[0-9]+")


@cache
def _decimal() -> re.Pattern[str]:
    """
    A decimal number (see above), compiled when first needed: a start that
    gives no option takes no decimal (docs/performance.rst).
    """
    return re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def wholeNumber(text: str, what: str = "a whole number") -> int:
    """
    Parse a whole number written in ASCII digits, nothing else.

    @param what: what the number is, for the error (e.g. C{"a port
        number"}).
    @raise ValueError: naming C{text} and C{what}.
    """
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{text!r} is not {what} (0 or more, in digits 0-9)")
    return int(text)


def decimalNumber(text: str, what: str) -> float:
    """
    Parse a number, whole or decimal (C{2}, C{2.5}, C{.5}), written in ASCII
    digits, nothing else.

    @param what: what it counts, for the error (e.g. C{"seconds"}).
    @raise ValueError: naming C{text} and C{what}.
    """
    if not _decimal().fullmatch(text):
        raise ValueError(
            f"{text!r} is not a number of {what} (0 or more, in digits 0-9)"
        )
    value = float(text)
    if value == float("inf"):
        # Hundreds of digits: no finite number of anything.
        raise ValueError(f"{text!r} is too large a number of {what}")
    return value


def _number(what: str) -> Callable[[str], float]:
    def coerce(text: str) -> float:
        return decimalNumber(text, what)

    return coerce


_seconds = _number("seconds")
_perSecond = _number("datagrams a second")
_handshakesPerSecond = _number("TLS handshakes a second")


def _count(text: str) -> int:
    return wholeNumber(text)


def usableCPUs() -> int:
    """
    The CPUs this process may run on (its affinity mask, as a container or
    C{taskset} limits it), or all the machine reports where there is no
    such mask.
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: Workers allowed per usable CPU.  An echo worker never blocks on anything
#: but its sockets, so more workers than CPUs buy nothing but memory (each
#: is a Python process, about 30 MiB) and context switches; 4 per CPU, the
#: top of gunicorn's advice for blocking workers, leaves room for a CPU
#: shared with other work, and refuses the typo that would fork thousands.
WORKERS_PER_CPU = 4


def maxWorkers() -> int:
    """
    The most workers C{--workers} and SIGTTIN allow on this machine.
    """
    return WORKERS_PER_CPU * usableCPUs()


def _workers(text: str) -> int:
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{text!r} is not a whole number of workers (1 or more)")
    count = int(text)
    if count < 1:
        raise ValueError(f"{count} is not a number of workers (1 or more)")
    cpus = usableCPUs()
    if count > WORKERS_PER_CPU * cpus:
        raise ValueError(
            f"{count} workers is more than {WORKERS_PER_CPU} per CPU"
            f" ({WORKERS_PER_CPU * cpus} for the {cpus} this process may use)"
        )
    return count


def _workerTimeout(text: str) -> float:
    seconds = _seconds(text)
    if 0 < seconds < 1:
        raise ValueError(
            f"{text!r} is too short a worker timeout (0 for none, or 1 second or more)"
        )
    return seconds


def _prefixLength(text: str) -> int:
    if not _WHOLE.fullmatch(text) or not 1 <= int(text) <= 128:
        raise ValueError(f"{text!r} is not an IPv6 prefix length (1-128)")
    return int(text)


def _socketBuffer(text: str) -> int:
    size = _count(text)
    if 0 < size < MIN_SOCKET_BUFFER:
        raise ValueError(
            f"{text!r} is too small a socket buffer (0 for"
            f" the kernel's autotuning, or {MIN_SOCKET_BUFFER} bytes or more)"
        )
    if size > _MAX_SOCKET_BUFFER:
        raise ValueError(
            f"{text!r} is too large a socket buffer (at most {_MAX_SOCKET_BUFFER}"
            " bytes; the kernel caps it lower, at net.core.wmem_max and"
            " net.core.rmem_max)"
        )
    return size


def _instanceName(text: str) -> str:
    if not text or len(text) > 253 or not (text.isascii() and text.isprintable()):
        raise ValueError(
            f"{text!r} is not an instance name (1-253 printable ASCII characters)"
        )
    if any(character.isspace() for character in text):
        raise ValueError(f"{text!r} is not an instance name (no spaces)")
    return text


#: Linux's bounds on TCP_KEEPIDLE and TCP_KEEPINTVL (MAX_TCP_KEEPIDLE,
#: MAX_TCP_KEEPINTVL: seconds) and TCP_KEEPCNT (MAX_TCP_KEEPCNT: probes).
_KEEPALIVE_BOUNDS = ((1, 32767, "IDLE"), (1, 32767, "INTERVAL"), (1, 127, "COUNT"))
#: What C{--keepalive} fills in when only IDLE is given.
DEFAULT_KEEPALIVE = (60, 10, 5)


def _keepalive(text: str) -> tuple[int, int, int]:
    if text == "0":
        return (0, 0, 0)
    parts = text.split(",")
    if len(parts) == 1:
        parts += [str(n) for n in DEFAULT_KEEPALIVE[1:]]
    if len(parts) != 3:
        raise ValueError(
            f"{text!r} is not IDLE or IDLE,INTERVAL,COUNT (e.g. 60,10,5), nor 0"
        )
    values = []
    for part, (low, high, name) in zip(parts, _KEEPALIVE_BOUNDS, strict=True):
        value = wholeNumber(part, f"a number for {name}")
        if not low <= value <= high:
            raise ValueError(f"{text!r}: {name} {value} is not within {low}-{high}")
        values.append(value)
    return (values[0], values[1], values[2])


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
        restarts them; 1 for one process and no supervisor, at most 4 per
        CPU (e.g. --workers 2). Limits apply per worker.""",
    )
    #: gunicorn's --timeout default: long enough that no echo worker, which
    #: never blocks, misses it while alive; short enough that a hung one
    #: is gone before most clients give up.
    workerTimeout: float = _option(
        "worker-timeout",
        30.0,
        _workerTimeout,
        """With --workers, kill and replace a worker that has not reported
        to the supervisor for this many seconds (hung, or stopped); 0 for
        never (e.g. --worker-timeout 60).""",
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
    #: A TLS handshake costs the server a millisecond or more of CPU (the
    #: certificate's signature), the client next to nothing if it throws the
    #: result away: 1,620 a second from one address took a whole core.  Ten
    #: at once and twenty a second from one address is more than a browser
    #: or a pool of clients behind one NAT opens, and at most a few
    #: percent of a core.
    tlsHandshakesPerSource: int = _option(
        "tls-handshakes-per-source",
        10,
        _count,
        """TLS handshakes in progress at once allowed per source (an IPv4
        address, or an IPv6 --ipv6-prefix network), on ssl: listeners; a
        connection over it is closed before its handshake starts; 0 for no
        limit (e.g. --tls-handshakes-per-source 50).""",
    )
    tlsHandshakeRate: float = _option(
        "tls-handshake-rate",
        20.0,
        _handshakesPerSecond,
        """New TLS handshakes a second allowed per source, in bursts of up
        to a second's worth (at least 1), on ssl: listeners; a connection
        over it is closed before its handshake starts; 0 for no limit
        (e.g. --tls-handshake-rate 100).""",
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
        the idlest connection of the source holding the most, if it holds two
        or more than the new client's, or else the connection idle longest,
        if it has sent nothing for this many seconds; 0 for never evicting
        (e.g. --evict-idle-after 30).""",
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
    #: A client that vanished (unplugged, its NAT entry expired, its host
    #: powered off) sends no FIN or RST; without probes its connection is
    #: held until --idle-timeout, or forever at 0.  Linux's own defaults
    #: (2 hours, then 9 probes 75 s apart) are too slow to matter; a probe a
    #: minute into a silence costs one empty segment each way.
    keepalive: tuple[int, int, int] = _option(
        "keepalive",
        DEFAULT_KEEPALIVE,
        _keepalive,
        """TCP keepalive on stream connections over TCP (TLS and haproxy:
        too), as IDLE[,INTERVAL,COUNT]: after IDLE seconds of silence,
        probe the client every INTERVAL seconds and close the connection
        after COUNT probes unanswered, so a client that vanished without a
        FIN or RST is reaped even at --idle-timeout 0; 0 for no keepalive
        (e.g. --keepalive 300 or --keepalive 30,5,3).""",
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
    instanceName: str | None = field(
        default=None,
        metadata={
            "option": "instance-name",
            "parse": _instanceName,
            "help": "The name the identity line (--identify) and /info give"
            " this server, e.g. its pod's (e.g. --instance-name echo-0)."
            " [default: $POD_NAME, else $HOSTNAME, else the host name]",
        },
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
    #: networks (see L{parseNetwork}); None for any peer.  (--proxy-from
    #: repeats, so the tap parses it with an opt_ method of its own.)
    proxyFrom: tuple[Network, ...] | None = field(
        default=None, metadata={"option": "proxy-from", "repeated": True}
    )

    def toJSON(self) -> str:
        """
        This value as JSON, for a worker's configuration.
        """
        # Networks as their text, which fromJSON parses.
        return json.dumps(dataclasses.asdict(self), default=str)

    @classmethod
    def fromJSON(cls, text: str) -> Settings:
        """
        The value L{toJSON} wrote.
        """
        values = json.loads(text)
        if "keepalive" in values:
            values["keepalive"] = tuple(values["keepalive"])
        if values.get("proxyFrom") is not None:
            values["proxyFrom"] = tuple(parseNetwork(n) for n in values["proxyFrom"])
        return cls(**values)


def optionFields() -> list[dataclasses.Field[Any]]:
    """
    The fields of L{Settings}, each a C{twistd echo} option, in order.
    """
    return list(dataclasses.fields(Settings))
