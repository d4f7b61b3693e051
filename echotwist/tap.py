# -*- test-case-name: tests.test_tap -*-
"""
The tap configuration of C{twistd echo}: options, and the service they make.
"""

from __future__ import annotations

import faulthandler
import getopt
import os
import re
import select
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeVar

from twisted.application.service import IService, MultiService
from twisted.python import usage

from echotwist._twisted import (
    FOREGROUND_REPORT,
    handReactorToTwist,
    reportFailedStart,
    twistdMayOpenLogFile,
)
from echotwist.listeners import (
    DatagramListener,
    Listener,
    MissingExtra,
    installExtra,
    parseDatagramListener,
    parseListener,
)
from echotwist.service import CannotListen, EchoService, LogFiles
from echotwist.settings import Settings, optionFields

DEFAULT_PORT = "tcp:5000"

_F = TypeVar("_F", bound=Callable[..., object])


def _typed(value: Any) -> str:
    """
    A default as a user would type it: 300, not 300.0; 60,10,5 for a
    tuple.
    """
    if isinstance(value, tuple):
        return ",".join(_typed(item) for item in value)
    return f"{value:g}"


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


#: What every C{twistd echo} option's variable starts with.
ENVIRONMENT_PREFIX = "ECHOTWIST_"

#: Options that repeat: from the environment, their values are separated
#: by whitespace (which no endpoint description or network holds).
REPEATED_OPTIONS = ("listen", "udp", "proxy-from")

#: Options that are no configuration.
NOT_FROM_ENVIRONMENT = ("help", "version")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def environmentVariable(option: str) -> str:
    """
    The environment variable that gives C{option}: C{ECHOTWIST_} and its
    name in upper case, dashes as underscores (C{ECHOTWIST_MAX_CONNECTIONS}).
    """
    return ENVIRONMENT_PREFIX + option.upper().replace("-", "_")


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
    handReactorToTwist(parent, install(), "echotwist")
    return True


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
            None if f.default is None else _typed(f.default),
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
        The options the environment gives (see L{environmentVariable}), as
        command-line arguments, for those options C{given} does not name:
        the command line wins, a repeated option's values included.  A
        repeated option's variable holds its values separated by
        whitespace; a flag's holds 1, true, yes or on (0, false, no, off or
        nothing for unset).
        """
        self.fromEnvironment = {}
        try:
            named, _ = getopt.getopt(given, self.shortOpt, self.longOpt)
        except getopt.GetoptError:
            return []  # the command line's own error is the one to see
        onCommandLine = {self.synonyms[name.lstrip("-")] for name, _ in named}
        arguments: list[str] = []
        for spec in self.longOpt:
            name = spec.rstrip("=")
            variable = environmentVariable(name)
            value = self.environ.get(variable)
            if name in NOT_FROM_ENVIRONMENT or name in onCommandLine or value is None:
                continue
            self.fromEnvironment[name] = variable
            if not spec.endswith("="):
                word = value.strip().lower()
                if word in _TRUE:
                    arguments.append(f"--{name}")
                elif word not in _FALSE:
                    raise usage.UsageError(
                        f"{variable}: {value!r} is not 1, true, yes or on (nor 0,"
                        " false, no or off)"
                    )
            elif name in REPEATED_OPTIONS:
                for item in value.split():
                    arguments += [f"--{name}", item]
            else:
                arguments += [f"--{name}", value]
        return arguments

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
            options = self.environmentArguments(options) + list(options)
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
        """
        Parse the values given, install the default reactor unless one was
        named, then parse the stream, UDP and metrics listeners; a bad
        value, or a bad or repeated listener, is a usage error.
        """
        for f in optionFields():
            name = f.metadata["option"]
            if "parse" in f.metadata and isinstance(self[name], str):
                try:
                    self[name] = f.metadata["parse"](self[name])
                except ValueError as e:
                    raise usage.UsageError(f"{self.label(name)}: {e}") from None

        # Before the listeners: parsing them imports the global reactor.
        installDefaultReactor(self.parent)
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
        self["listeners"] = listeners

        datagramListeners: list[DatagramListener] = []
        for description in self["udp"]:
            try:
                datagram = parseDatagramListener(description)
            except ValueError as e:
                raise usage.UsageError(f"{self.label('udp')}: {e}") from None
            if datagram in datagramListeners:
                raise usage.UsageError(
                    f"{self.label('udp')}: {datagram.description} is given twice"
                )
            datagramListeners.append(datagram)
        self["datagramListeners"] = datagramListeners
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
        for option in ("health", "identify"):
            if self[option] is None:
                continue
            side = _parse(self.label(option), self[option])
            if _repeats(side, listeners):
                raise usage.UsageError(
                    f"{self.label(option)}: {side.description} is also an echo listener"
                )
            self[option] = side
        if self["identify-udp"] is not None:
            try:
                identifyUDP = parseDatagramListener(self["identify-udp"])
            except ValueError as e:
                raise usage.UsageError(f"{self.label('identify-udp')}: {e}") from None
            if identifyUDP in datagramListeners:
                raise usage.UsageError(
                    f"{self.label('identify-udp')}: {identifyUDP.description} is also"
                    " a --udp"
                    " listener"
                )
            self["identify-udp"] = identifyUDP


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


def _oneLineHook(previous: Callable[..., object]) -> Callable[..., object]:
    def hook(kind: type[BaseException], value: BaseException, tb: object) -> None:
        if isinstance(value, CannotListen):
            print(value, file=sys.stderr)
        else:
            previous(kind, value, tb)

    hook.echotwist = True  # type: ignore[attr-defined]
    return hook


def _prepareProcess() -> None:
    """
    What the process running C{twistd echo} gets, which a library must not
    do to its host: a listener that cannot listen ends start-up with one
    line, not a traceback, and a real segfault leaves a Python stack.
    """
    if not getattr(sys.excepthook, "echotwist", False):
        sys.excepthook = _oneLineHook(sys.excepthook)
    # No Python code can clean up after a real segfault; the most it can do
    # is say where it happened.  twistd replaces sys.stderr with a log file
    # object, hence the original.
    if sys.__stderr__ is not None and not faulthandler.is_enabled():
        faulthandler.enable(sys.__stderr__, all_threads=True)
    # As PID 1 (a container without --init) the signal twistd re-sends
    # itself after the drain cannot kill it: end with 128 + its number all
    # the same.  Once the reactor runs, its own handlers are there to wrap.
    from twisted.internet import reactor

    from echotwist.exitstatus import ExitStatus

    reactor.callWhenRunning(ExitStatus().watch)


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
            value = tuple(str(item) for item in value)
        values[f.name] = value
    return Settings(**values)


def _briefly(message: str, limit: int = FOREGROUND_REPORT) -> str:
    """
    C{message} in at most C{limit} ASCII bytes: its parenthesis dropped if
    that is enough, else cut after a whole word, with an ellipsis.
    """
    message = message.encode("ascii", "backslashreplace").decode("ascii")
    message = message.removeprefix("echotwist: ")
    if len(message) > limit:
        message = re.sub(r" \([^()]*\)$", "", message)
    if len(message) > limit:
        message = message[: limit - 3].rsplit(" ", 1)[0] + "..."
    return message


class _ReportsToForeground(MultiService):
    """
    Under a daemonizing twistd, the service it runs: a listener that cannot
    listen is told to the process waiting in the foreground in words that
    fit what it reads, not as twistd's cut traceback line
    (C{echotwist.service.CannotListen: echotwist: cannot listen on
    tcp:5000: Addre}).  The whole line is in the log file.

    @param runner: twistd's options, where it keeps the pipe to the
        foreground once it has daemonized (see
        L{echotwist._twisted.reportFailedStart}).
    """

    def __init__(self, service: IService, runner: MutableMapping[str, Any]) -> None:
        super().__init__()
        self._runner = runner
        service.setServiceParent(self)

    def _report(self, start: Callable[[], object]) -> None:
        try:
            start()
        except CannotListen as e:
            reportFailedStart(self._runner, _briefly(str(e)).encode("ascii"))
            raise

    def privilegedStartService(self) -> None:
        self._report(super().privilegedStartService)

    def startService(self) -> None:
        self._report(super().startService)


def makeService(options: Options) -> IService:
    """
    The service C{twistd echo} runs: an L{EchoService}, or with C{--workers}
    above 1 a supervisor of worker processes that each run one.
    """
    _prepareProcess()
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
    service: IService
    if settings.workers > 1:
        from echotwist.supervisor import SupervisorService

        service = SupervisorService(
            options["listeners"], reactorName=_reactorName(), **common
        )
    else:
        service = EchoService(options["listeners"], **common)
    if runner is not None and "nodaemon" in runner and not runner["nodaemon"]:
        return _ReportsToForeground(service, runner)
    return service
