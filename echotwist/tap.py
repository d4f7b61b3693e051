# -*- test-case-name: tests.test_tap -*-
"""
The tap configuration of C{twistd echo}: options, and the service they make.
"""

from __future__ import annotations

import getopt
import os
import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from twisted.application.service import IService
from twisted.python import usage

from echotwist._twisted import twistdMayOpenLogFile
from echotwist.environment import environmentArguments
from echotwist.listeners import (
    DatagramListener,
    Listener,
    MissingExtra,
    installExtra,
    parseDatagramListener,
    parseListener,
)
from echotwist.process import (
    ReportsToForeground,
    checkLogDestination,
    checkRunnerFiles,
    installDefaultReactor,
    prepareProcess,
    reactorName,
    twistdLeavesStatus0,
)
from echotwist.service import EchoService, LogFiles
from echotwist.settings import Settings, optionFields

DEFAULT_PORT = "tcp:5000"

#: The options that name one listener, and what to do for more than one.
_ONE_LISTENER = {
    "port": "--listen adds more listeners",
    "metrics": "the metrics are served on one listener",
    "health": "the health pages are served on one listener",
    "identify": "the identity line is served on one stream listener",
    "identify-udp": "the identity line is served on one UDP port",
}

_F = TypeVar("_F", bound=Callable[..., object])


def _typed(value: Any) -> str:
    """
    A default as a user would type it: 300, not 300.0; 60,10,5 for a
    tuple.
    """
    if isinstance(value, tuple):
        return ",".join(_typed(item) for item in value)
    return f"{value:g}"


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


def versionLine() -> str:
    """
    What C{--version} prints: echotwist's version, and the Twisted and
    Python it runs on, which a bug report needs as much.
    """
    import platform

    import twisted

    from echotwist import __version__

    return (
        f"echotwist {__version__} (Twisted {twisted.__version__},"
        f" {platform.python_implementation()} {platform.python_version()})"
    )


#: Each parsed option's default, as a user types it (and --help shows it).
_TYPED_DEFAULTS = {
    f.metadata["option"]: _typed(f.default)
    for f in optionFields()
    if "parse" in f.metadata and f.default is not None
}


def _repeats(listener: Listener, seen: list[Listener]) -> bool:
    """
    Whether C{listener} is one of C{seen} again.  Port 0 means a fresh free
    port each time: "tcp:0" may well repeat.
    """
    fields = listener.description.split(":")
    if "0" in fields or "port=0" in fields:
        return False
    return any(listener.description == other.description for other in seen)


def _datagramRepeats(datagram: DatagramListener, seen: list[DatagramListener]) -> bool:
    """
    Whether C{datagram} is one of C{seen} again.  Port 0 means a fresh free
    port each time, as for L{_repeats}.
    """
    return datagram.port != 0 and datagram in seen


class Options(usage.Options):
    """
    The options of C{twistd echo} and C{twist echo}: their docstrings and
    help strings are the C{--help} text.
    """

    synopsis = "[options]"
    longdesc = (
        "An RFC 862 echo server: everything a client sends comes back to it,"
        " byte for byte, until it closes; each UDP datagram is answered with"
        " the same bytes.  With no option it listens on tcp:5000, on every"
        " interface.  Where epoll exists it serves on echotwist's own reactor"
        " unless --reactor (an option of twistd or twist) names another."
        "  Every option can also be set in the environment: ECHOTWIST_ and"
        " its name in upper case, dashes as underscores (e.g."
        " ECHOTWIST_MAX_CONNECTIONS=10000); a repeated option's values are"
        " separated by whitespace, a flag is 1 or 0; the command line wins."
    )

    # Each knob is a field of Settings, which carries its option's name,
    # help text and parser.  The defaults are given as a user types them
    # (300, not 300.0) and parsed in postOptions, not by usage.Options: given
    # a coerce function, it says "Parameter type enforcement failed" without
    # naming the option.
    optFlags = [
        [f.metadata["option"], None, f.metadata["help"]]
        for f in optionFields()
        if f.metadata.get("negated")
    ]
    optParameters = [
        [
            f.metadata["option"],
            None,
            _TYPED_DEFAULTS.get(f.metadata["option"]),
            f.metadata["help"],
        ]
        for f in optionFields()
        if "parse" in f.metadata
    ] + [
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this server endpoint"
            " description (e.g. --metrics tcp:9100:interface=127.0.0.1)."
            " [default: none]",
        ],
        [
            "health",
            None,
            None,
            "Serve /healthz (liveness), /readyz (readiness: 503 from the"
            " moment a drain starts) and /info (identity, as JSON) on this"
            " server endpoint description, for probes that need no metrics;"
            " --metrics serves them too (e.g. --health tcp:8080)."
            " [default: none]",
        ],
        [
            "identify",
            None,
            None,
            "Answer each connection on this server endpoint description with"
            " one line (host name, instance name, version, the client's"
            " address as seen, after any PROXY header), then close it; never"
            " on an echo port (e.g. --identify tcp:5001). [default: none]",
        ],
        [
            "identify-udp",
            None,
            None,
            "Answer each UDP datagram on PORT or udp:PORT:interface=ADDRESS"
            " with the --identify line, rate-limited as --udp is"
            " (e.g. --identify-udp 5001). [default: none]",
        ],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """
        @param environ: where C{ECHOTWIST_*} variables are read; the
            process's environment if None.
        """
        super().__init__()
        self.environ = os.environ if environ is None else environ
        #: The variable each option given by the environment came from.
        self.fromEnvironment: dict[str, str] = {}
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
        from echotwist.proxy import parseNetwork

        try:
            parsed = parseNetwork(network)
        except ValueError as e:
            raise usage.UsageError(f"{self.label('proxy-from')}: {e}") from None
        if self["proxy-from"] is None:
            self["proxy-from"] = []
        self["proxy-from"].append(parsed)

    def label(self, option: str) -> str:
        """
        How an error names C{option}: as the variable it came from, or as
        typed.
        """
        return self.fromEnvironment.get(option, f"--{option}")

    def environmentArguments(self, given: list[str]) -> list[str]:
        """
        The options the environment gives, as command-line arguments, for
        those options C{given} does not name (see
        L{echotwist.environment.environmentArguments}); notes in
        C{fromEnvironment} the variable each came from.
        """
        self.fromEnvironment = {}
        return environmentArguments(self, self.environ, given, self.fromEnvironment)

    def opt_version(self) -> None:
        """
        Display echotwist's version, with Twisted's and Python's, and exit.
        """
        print(versionLine())
        sys.exit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse the command line, after the options the environment gives
        (L{environmentArguments}), as Twisted does; a usage error ends the
        process with status 1 where this twistd would end it with 0.
        """
        if options is None:
            options = sys.argv[1:]
        try:
            self._refuseListenerTwice(options)
            options = self.environmentArguments(options) + list(options)
            super().parseOptions(options)
        except usage.UsageError as e:
            if not twistdLeavesStatus0(self.parent):
                raise
            # As twistd 26's app.run does, to keep README's promise of exit
            # status 1 on the Twisteds setup.cfg allows.
            print(self.parent)
            print(f"{' '.join(sys.argv[0:2])}: {e}")
            sys.exit(1)

    def _refuseListenerTwice(self, argv: list[str]) -> None:
        """
        Refuse an option that names one listener (C{--port}, C{--metrics},
        ...) given twice: as for any option, the last would win, and the
        listener the first named would silently not be opened.

        @raise usage.UsageError: naming the option and both values.
        """
        try:
            named, _ = getopt.getopt(argv, self.shortOpt, self.longOpt)
        except getopt.GetoptError:
            return  # the command line's own error is the one to see
        seen: dict[str, str] = {}
        for flag, value in named:
            name = self.synonyms[flag.lstrip("-")]
            if name not in _ONE_LISTENER:
                continue
            if name in seen:
                raise usage.UsageError(
                    f"--{name}: given twice ({seen[name]!r}, then {value!r});"
                    f" {_ONE_LISTENER[name]}"
                )
            seen[name] = value

    def postOptions(self) -> None:
        """
        Parse the values given, install the default reactor unless one was
        named, then parse the stream, UDP and metrics listeners; a bad
        value, or a bad or repeated listener, is a usage error.  A pidfile
        or log file twistd could not write, or a log that would go nowhere,
        ends start-up in one line (L{checkRunnerFiles},
        L{checkLogDestination}).
        """
        checkRunnerFiles(self.parent)
        checkLogDestination(self.parent)
        for f in optionFields():
            name = f.metadata["option"]
            if "parse" in f.metadata and isinstance(self[name], str):
                if self[name] == _TYPED_DEFAULTS.get(name):
                    # The default as --help shows it parses to the field's
                    # own value (tests.test_tap checks each): take that, and
                    # spare every start the parsers' work (a regular
                    # expression to compile, the CPUs to count for
                    # --workers; docs/performance.rst).
                    self[name] = f.default
                    continue
                try:
                    self[name] = f.metadata["parse"](self[name])
                except ValueError as e:
                    raise usage.UsageError(f"{self.label(name)}: {e}") from None

        # Before the listeners: parsing them imports the global reactor.
        installDefaultReactor(self.parent)
        self["listeners"] = self._streamListeners()
        self["datagramListeners"] = self._datagramListeners()
        self._sideListeners()

    def _streamListeners(self) -> list[Listener]:
        """
        The echo's stream listeners: C{--listen}'s, and C{--port}'s (or the
        default port, where neither they nor C{--udp} are given).
        """
        wanted: list[tuple[str, str]] = [
            (self.label("listen"), d) for d in self["listen"]
        ]
        if self["port"] is not None or not (wanted or self["udp"]):
            # An empty --port is a mistake to report, not the default.
            port = self["port"]
            wanted.append((self.label("port"), DEFAULT_PORT if port is None else port))
        listeners: list[Listener] = []
        for option, description in wanted:
            listener = _parse(option, description)
            if _repeats(listener, listeners):
                raise usage.UsageError(
                    f"{option}: {listener.description} is given twice"
                )
            listeners.append(listener)
        return listeners

    def _datagramListeners(self) -> list[DatagramListener]:
        """
        The echo's UDP listeners, C{--udp}'s.
        """
        datagramListeners: list[DatagramListener] = []
        for description in self["udp"]:
            try:
                datagram = parseDatagramListener(description)
            except ValueError as e:
                raise usage.UsageError(f"{self.label('udp')}: {e}") from None
            if _datagramRepeats(datagram, datagramListeners):
                raise usage.UsageError(
                    f"{self.label('udp')}: {datagram.description} is given twice"
                )
            datagramListeners.append(datagram)
        return datagramListeners

    def _sideListeners(self) -> None:
        """
        Parse the listeners beside the echo's (C{--metrics}, C{--health},
        C{--identify}, C{--identify-udp}), none of which may be one of the
        echo's.
        """
        listeners = self["listeners"]
        datagramListeners = self["datagramListeners"]
        if self["metrics"] is not None:
            try:
                import prometheus_client  # noqa: F401
            except ImportError:
                # As for a TLS listener without its extra: one line, status 1.
                raise SystemExit(
                    "echotwist: --metrics needs prometheus_client, which is not"
                    f" installed: {installExtra('metrics')}"
                ) from None
            metrics = _parse(self.label("metrics"), self["metrics"])
            if _repeats(metrics, listeners):
                raise usage.UsageError(
                    f"{self.label('metrics')}: {metrics.description} is also an"
                    " echo listener"
                )
            self["metrics"] = metrics
        sides: dict[str, Listener] = {}
        if self["metrics"] is not None:
            sides["metrics"] = self["metrics"]
        for option in ("health", "identify"):
            if self[option] is None:
                continue
            side = _parse(self.label(option), self[option])
            if _repeats(side, listeners):
                raise usage.UsageError(
                    f"{self.label(option)}: {side.description} is also an echo listener"
                )
            for other, otherSide in sides.items():
                # Both would listen there, and the second fail as if another
                # process held the port.
                if _repeats(side, [otherSide]):
                    raise usage.UsageError(
                        f"{self.label(option)}: {side.description} is also the"
                        f" {self.label(other)} listener"
                        + (
                            " (which serves the health pages too)"
                            if other == "metrics" and option == "health"
                            else ""
                        )
                    )
            sides[option] = side
            self[option] = side
        if self["identify-udp"] is not None:
            try:
                identifyUDP = parseDatagramListener(self["identify-udp"])
            except ValueError as e:
                raise usage.UsageError(f"{self.label('identify-udp')}: {e}") from None
            if _datagramRepeats(identifyUDP, datagramListeners):
                raise usage.UsageError(
                    f"{self.label('identify-udp')}: {identifyUDP.description} is also"
                    " a --udp"
                    " listener"
                )
            self["identify-udp"] = identifyUDP


def settingsFrom(options: Options) -> Settings:
    """
    The L{Settings} that parsed C{options} describe.
    """
    values: dict[str, Any] = {}
    for f in optionFields():
        value = options[f.metadata["option"]]
        if f.metadata.get("negated"):
            value = not value
        elif f.metadata.get("repeated") and value is not None:
            value = tuple(value)
        values[f.name] = value
    return Settings(**values)


def makeService(options: Options) -> IService:
    """
    The service C{twistd echo} runs: an L{EchoService}, or with C{--workers}
    above 1 a supervisor of worker processes that each run one.
    """
    prepareProcess()
    settings = settingsFrom(options)
    runner = options.parent
    common: dict[str, Any] = {
        "udp": options["datagramListeners"],
        "settings": settings,
        "metrics": options["metrics"],
        "health": options["health"],
        "identify": options["identify"],
        "identifyUDP": options["identify-udp"],
        # twist opens its --log-file itself and keeps it in its options;
        # twistd's --logfile is found without.
        "logFiles": LogFiles(
            runner.get("logFile") if runner is not None else None,
            twistd=twistdMayOpenLogFile(runner),
        ),
    }
    if settings.workers > 1:
        from echotwist.supervisor import SupervisorService

        common["supervise"] = partial(SupervisorService, reactorName=reactorName())
    service: IService = EchoService(options["listeners"], **common)
    if runner is not None and "nodaemon" in runner and not runner["nodaemon"]:
        return ReportsToForeground(service, runner)
    return service
