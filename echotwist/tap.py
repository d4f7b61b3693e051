# -*- test-case-name: tests.test_tap -*-
"""
The tap configuration of C{twistd echo}: options, and the service they make.
"""

from __future__ import annotations

import select
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeVar

from twisted.application.service import IService
from twisted.python import usage

from echotwist.proxy import parseNetwork
from echotwist.service import (
    DEFAULT_DRAIN_QUIET,
    DEFAULT_EVICT_IDLE_AFTER,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_IPV6_PREFIX,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_SOURCE,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SOCKET_BUFFER,
    DEFAULT_UDP_RATE,
    MIN_SOCKET_BUFFER,
    DatagramListener,
    EchoService,
    Listener,
    LogFiles,
    MissingExtra,
    parseDatagramListener,
    parseListener,
)

DEFAULT_PORT = "tcp:5000"

_F = TypeVar("_F", bound=Callable[..., object])


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


def _typed(value: float) -> str:
    """
    A default as a user would type it: 300, not 300.0.
    """
    return f"{value:g}"


#: How each numeric option's text becomes its value.  postOptions does it,
#: not usage.Options: given a coerce function, Options says "Parameter type
#: enforcement failed: ..." without naming the option, and prints its
#: default as the coerced value (300.0).
_COERCE: dict[str, Callable[[str], float]] = {
    "workers": _count,
    "max-connections": _count,
    "max-per-source": _count,
    "ipv6-prefix": _prefixLength,
    "evict-idle-after": _seconds,
    "idle-timeout": _seconds,
    "socket-buffer": _socketBuffer,
    "shutdown-timeout": _seconds,
    "drain-quiet": _seconds,
    "udp-rate": _perSecond,
}


def _twistdLeavesStatus0(parent: object) -> bool:
    """
    Whether C{parent} is a twistd that would print a usage error and exit
    with status 0: twistd's C{app.run} exits with status 1 only from
    Twisted 26 on.  (twist exits with EX_USAGE on any version.)
    """
    import twisted
    from twisted.application.app import ServerOptions

    major = twisted.version.major  # type: ignore[attr-defined]
    return isinstance(parent, ServerOptions) and isinstance(major, int) and major < 26


def _oneLine(method: _F) -> _F:
    # usage.Options prints an opt_ method's docstring as its --help text;
    # fold the source indentation away so it wraps cleanly.
    method.__doc__ = " ".join((method.__doc__ or "").split())
    return method


def _parse(option: str, description: str) -> Listener:
    try:
        return parseListener(description)
    except MissingExtra as e:
        # Not a usage error: the command is right, the install is short of
        # a part.  SystemExit prints the one line and exits 1, under twistd
        # and twist alike.
        raise SystemExit(str(e)) from None
    except ValueError as e:
        raise usage.UsageError(f"{option}: {e}") from None


def installDefaultReactor(
    parent: MutableMapping[str, Any] | None = None,
    modules: Mapping[str, object] = sys.modules,
    install: Callable[[], object] | None = None,
) -> bool:
    """
    Install echotwist's reactor (L{echotwist.reactor}) as the one to serve
    on, unless a reactor is installed already: the user named one
    (C{twistd --reactor NAME} and C{twist --reactor NAME} install it while
    parsing their own options, before this runs), or a C{.tac} or program
    chose one.  Only where epoll exists; elsewhere Twisted's default stays.

    Under C{twist}, the reactor is handed to C{twist}'s own options
    (C{parent}), which otherwise install their default one after this and
    fail because one is installed.

    Must run before anything imports C{twisted.internet.reactor}, which
    installs the default: so before the listeners are parsed.

    @param parent: the options this is a sub-command of (C{twistd}'s or
        C{twist}'s), or None.
    @param modules: where to look for an installed reactor (for tests).
    @param install: installs echotwist's reactor and returns it (for tests).
    @return: whether it installed echotwist's reactor.
    """
    if "twisted.internet.reactor" in modules or not hasattr(select, "epoll"):
        return False
    if install is None:
        from echotwist.reactor import install as installEchotwist

        install = installEchotwist
    reactor = install()
    if parent is not None and "reactorName" in parent and "reactor" not in parent:
        # twist's TwistOptions: it installs self["reactorName"] unless
        # self["reactor"] is there.
        parent["reactor"] = reactor
        parent["reactorName"] = "echotwist"
    return True


def _repeats(listener: Listener, seen: list[Listener]) -> bool:
    """
    Whether C{listener} is one of C{seen} again.  Port 0 means a fresh free
    port each time: "tcp:0" may well repeat.
    """
    fields = listener.description.split(":")
    if "0" in fields or "port=0" in fields:
        return False
    return any(listener.description == other.description for other in seen)


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "An RFC 862 echo server: everything a client sends comes back to it,"
        " byte for byte, until it closes; each UDP datagram is answered with"
        " the same bytes.  With no option it listens on tcp:5000, on every"
        " interface.  Where epoll exists it serves on echotwist's own reactor"
        " unless --reactor (an option of twistd or twist) names another."
    )

    optFlags = [
        [
            "no-connection-logs",
            None,
            "Do not log each connection opened and closed, so that a flood of"
            " short connections cannot make logging the bottleneck; refusals"
            " and everything else are still logged (e.g. --no-connection-logs)."
            " [default: log them]",
        ],
    ]

    optParameters = [
        [
            "workers",
            None,
            "1",
            "Serve with this many worker processes under a supervisor that"
            " restarts them; 1 for one process and no supervisor"
            " (e.g. --workers 2). Limits apply per worker.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this server endpoint"
            " description (e.g. --metrics tcp:9100:interface=127.0.0.1)."
            " [default: none]",
        ],
        [
            "max-connections",
            None,
            _typed(DEFAULT_MAX_CONNECTIONS),
            "Open stream connections allowed across all listeners; one more is"
            " closed at once, unanswered; 0 for no limit"
            " (e.g. --max-connections 10000).",
        ],
        [
            "max-per-source",
            None,
            _typed(DEFAULT_MAX_PER_SOURCE),
            "Open stream connections allowed per client address (behind"
            " haproxy:, the client's own), an IPv6 client's whole"
            " --ipv6-prefix network counting as one address; 0 for no limit"
            " (e.g. --max-per-source 10).",
        ],
        [
            "ipv6-prefix",
            None,
            _typed(DEFAULT_IPV6_PREFIX),
            "How many leading bits of an IPv6 address make one source for"
            " --max-per-source and --udp-rate, 1-128 (e.g. --ipv6-prefix 56);"
            " an IPv4 address mapped in IPv6 counts as that IPv4 address.",
        ],
        [
            "evict-idle-after",
            None,
            _typed(DEFAULT_EVICT_IDLE_AFTER),
            "When --max-connections is reached, admit a new client by closing"
            " the connection idle longest, if it has sent nothing for this"
            " many seconds; 0 for never (e.g. --evict-idle-after 30).",
        ],
        [
            "idle-timeout",
            None,
            _typed(DEFAULT_IDLE_TIMEOUT),
            "Close a connection that has sent nothing for this many seconds;"
            " abort one that cannot take its last echo within as long again;"
            " 0 for never (e.g. --idle-timeout 60).",
        ],
        [
            "socket-buffer",
            None,
            _typed(DEFAULT_SOCKET_BUFFER),
            "SO_SNDBUF and SO_RCVBUF, in bytes, of every stream connection"
            " over TCP (TLS and haproxy: too); Linux doubles it, so a client"
            " that never reads pins about four times this of kernel memory;"
            " 0 for the kernel's autotuning, which lets one such client pin"
            " megabytes (e.g. --socket-buffer 131072).",
        ],
        [
            "shutdown-timeout",
            None,
            _typed(DEFAULT_SHUTDOWN_TIMEOUT),
            "On SIGTERM or SIGINT, stop accepting, let open connections finish"
            " echoing, and abort those still open after this many seconds"
            " (e.g. --shutdown-timeout 30).",
        ],
        [
            "drain-quiet",
            None,
            _typed(DEFAULT_DRAIN_QUIET),
            "On SIGTERM or SIGINT, close an open connection once it has been"
            " quiet (nothing received, no echo waiting) for this many seconds:"
            " longer keeps clients that pause between writes, shorter ends the"
            " shutdown sooner; 0 waits for each client until"
            " --shutdown-timeout (e.g. --drain-quiet 5).",
        ],
        [
            "udp-rate",
            None,
            _typed(DEFAULT_UDP_RATE),
            "UDP datagrams a second answered per source (an IPv4 address, or"
            " an IPv6 --ipv6-prefix network), in bursts of up to a tenth of"
            " that (at least 1); 0 for no limit (e.g. --udp-rate 1000).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["port"] = None
        self["listen"] = []
        self["udp"] = []
        self["proxy-from"] = None

    @_oneLine
    def opt_port(self, port: str) -> None:
        """
        Listen on PORT: a port number, meaning tcp:PORT, or any server
        endpoint description (e.g. --port 7 or --port
        tcp:5000:interface=127.0.0.1). [default: tcp:5000, used only when no
        --listen or --udp is given]
        """
        self["port"] = port

    opt_p = opt_port

    @_oneLine
    def opt_listen(self, description: str) -> None:
        """
        Also listen on this server endpoint description; repeat for more
        listeners (e.g. --listen 'tcp6:5000:interface=\\:\\:1' --listen
        unix:/run/echo.sock). [default: none]
        """
        self["listen"].append(description)

    @_oneLine
    def opt_udp(self, description: str) -> None:
        """
        Answer UDP datagrams on PORT or udp:PORT:interface=ADDRESS (colons in
        an IPv6 address escaped); repeat for more (e.g. --udp 7 --udp
        'udp:7:interface=\\:\\:1'). [default: none]
        """
        self["udp"].append(description)

    @_oneLine
    def opt_proxy_from(self, network: str) -> None:
        """
        Believe PROXY headers on haproxy: listeners only from this address
        or network; repeat for more (e.g. --proxy-from 10.0.0.0/8
        --proxy-from 2001:db8::7). Other peers are refused. [default: any
        peer, which can then claim any client address]
        """
        try:
            parsed = parseNetwork(network)
        except ValueError as e:
            raise usage.UsageError(f"--proxy-from: {e}") from None
        if self["proxy-from"] is None:
            self["proxy-from"] = []
        self["proxy-from"].append(parsed)

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if not _twistdLeavesStatus0(self.parent):
                raise
            # As twistd 26's app.run does, to keep README's promise of exit
            # status 1 on the Twisteds setup.cfg allows.
            print(self.parent)
            print(f"{' '.join(sys.argv[0:2])}: {e}")
            sys.exit(1)

    def postOptions(self) -> None:
        for name, coerce in _COERCE.items():
            if isinstance(self[name], str):
                try:
                    self[name] = coerce(self[name])
                except ValueError as e:
                    raise usage.UsageError(f"--{name}: {e}") from None

        # Before the listeners: parsing them imports the global reactor.
        installDefaultReactor(self.parent)
        wanted: list[tuple[str, str]] = [("--listen", d) for d in self["listen"]]
        if self["port"] is not None or not (wanted or self["udp"]):
            wanted.append(("--port", self["port"] or DEFAULT_PORT))
        listeners: list[Listener] = []
        for option, description in wanted:
            listener = _parse(option, description)
            if _repeats(listener, listeners):
                raise usage.UsageError(
                    f"{option}: {listener.description} is given twice"
                )
            listeners.append(listener)
        self["listeners"] = listeners

        datagramListeners: list[DatagramListener] = []
        for description in self["udp"]:
            try:
                datagram = parseDatagramListener(description)
            except ValueError as e:
                raise usage.UsageError(f"--udp: {e}") from None
            if datagram in datagramListeners:
                raise usage.UsageError(f"--udp: {datagram.description} is given twice")
            datagramListeners.append(datagram)
        self["datagramListeners"] = datagramListeners
        if self["workers"] < 1:
            raise usage.UsageError(
                "--workers: 0 is not a number of workers (1 or more)"
            )

        if self["metrics"] is not None:
            metrics = _parse("--metrics", self["metrics"])
            if _repeats(metrics, listeners):
                raise usage.UsageError(
                    f"--metrics: {metrics.description} is also an echo listener"
                )
            self["metrics"] = metrics


def _reactorName() -> str | None:
    """
    The short name of the installed reactor, for the workers to install.
    """
    from twisted.application.reactors import getReactorTypes
    from twisted.internet import reactor

    module = type(reactor).__module__
    for installer in getReactorTypes():
        if getattr(installer, "moduleName", None) == module:
            return str(installer.shortName)
    return None


def makeService(options: Options) -> IService:
    runner = options.parent
    common = {
        "udp": options["datagramListeners"],
        "udpRate": options["udp-rate"],
        "maxConnections": options["max-connections"],
        "maxPerSource": options["max-per-source"],
        "idleTimeout": options["idle-timeout"],
        "ipv6Prefix": options["ipv6-prefix"],
        "evictIdleAfter": options["evict-idle-after"],
        "proxyFrom": options["proxy-from"],
        "shutdownTimeout": options["shutdown-timeout"],
        "drainQuiet": options["drain-quiet"],
        "logConnections": not options["no-connection-logs"],
        "metrics": options["metrics"],
        "socketBuffer": options["socket-buffer"],
        # twist opens its --log-file itself and keeps it in its options;
        # twistd's --logfile is found without.
        "logFiles": LogFiles(runner.get("logFile") if runner is not None else None),
    }
    if options["workers"] > 1:
        from echotwist.supervisor import SupervisorService

        return SupervisorService(
            options["listeners"],
            workers=options["workers"],
            reactorName=_reactorName(),
            **common,
        )
    return EchoService(options["listeners"], **common)
