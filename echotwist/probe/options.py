# -*- test-case-name: tests.test_probe_options -*-
"""
The command line of C{echotwist-probe}.
"""

from __future__ import annotations

import getopt
import os
import random
import sys
from collections.abc import Callable

from twisted.python import usage

from echotwist.probe.payload import HEADER
from echotwist.probe.report import checkPlotting
from echotwist.probe.target import ECHO_PORT, TargetError, parseTarget

#: The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507
#: The largest stream probe: a bound on what one probe holds in memory.
MAX_STREAM_PROBE = 64 * 1024 * 1024
#: The most connections --parallel opens.
MAX_PARALLEL = 1000


def _show(value: float) -> str:
    """
    A bound as a user writes it: a whole number in full (not C{6.71089e+07}).
    """
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number(
    kind: Callable[[str], float], name: str, low: float, high: float | None = None
) -> Callable[[str], float]:
    """
    A coercer for a number option C{--name}, from C{low} to C{high}, that
    says which option and what it accepts when the value is wrong.
    """

    def coerce(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"--{name} must be a number, not {text!r}") from None
        if value != value or value < low or (high is not None and value > high):
            bound = (
                f"from {_show(low)} to {_show(high)}"
                if high is not None
                else f"{_show(low)} or more"
            )
            raise ValueError(f"--{name} must be {bound}, not {text}")
        return value

    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


class ProbeOptions(usage.Options):
    """
    Options of C{echotwist-probe}.
    """

    synopsis = "echotwist-probe [options] TARGET"
    longdesc = (
        "Measure the path to an RFC 862 echo server: round-trip time, loss,"
        " throughput, every byte checked.  TARGET is tcp:HOST:PORT,"
        " tcp6:HOST:PORT, tls:HOST:PORT, unix:PATH, udp:HOST:PORT, or"
        f" HOST[:PORT] for TCP (port {ECHO_PORT} unless --port says)."
        "  Exit status: 0 all answered and checked, 1 a probe lost or a"
        " threshold passed, 2 an error."
    )

    optParameters = [
        [
            "count",
            "c",
            0,
            "Stop after N probes (0: until Ctrl-C or --duration).",
            _number(int, "count", 0),
        ],
        [
            "interval",
            "i",
            1.0,
            "Seconds between probes; 0 floods, and needs --count or --duration.",
            _number(float, "interval", 0, 3600),
        ],
        [
            "size",
            "s",
            64,
            "Bytes in each probe (UDP: 24 to 65507).",
            _number(int, "size", 1, MAX_STREAM_PROBE),
        ],
        [
            "timeout",
            "W",
            2.0,
            "Seconds to wait for a connection or an"
            " answer; a UDP answer later than this is late and counts as lost.",
            _number(float, "timeout", 0.001, 3600),
        ],
        [
            "duration",
            "w",
            None,
            "Stop after this many seconds (--bulk: 10).",
            _number(float, "duration", 0.001, 86400),
        ],
        [
            "port",
            "p",
            ECHO_PORT,
            "The port of a target given as a bare HOST.",
            _number(int, "port", 1, 65535),
        ],
        [
            "seed",
            None,
            None,
            "Seed of the random payload (default: a fresh one;"
            " the JSON output records it).",
            _number(int, "seed", 0),
        ],
        [
            "parallel",
            "P",
            1,
            "--bulk over a stream: connections at once.",
            _number(int, "parallel", 1, MAX_PARALLEL),
        ],
        [
            "rate",
            None,
            1000.0,
            "--bulk over UDP: datagrams a second.",
            _number(float, "rate", 1, 1_000_000),
        ],
        [
            "json",
            None,
            None,
            "Write the results as one JSON document to FILE"
            " ('-': standard output, and no other output there).",
        ],
        [
            "plot",
            None,
            None,
            "Draw round-trip time over time and its CDF into"
            " FILE.png (needs the plot extra: matplotlib).",
        ],
        [
            "max-loss",
            None,
            None,
            "Exit 1 when more than PCT percent of probes are lost (default: any loss).",
            _number(float, "max-loss", 0, 100),
        ],
        [
            "max-p99",
            None,
            None,
            "Exit 1 when the p99 round trip is over MS milliseconds.",
            _number(float, "max-p99", 0),
        ],
        [
            "ca",
            None,
            None,
            "tls: trust the certificate authority in this PEM"
            " file instead of the system's.",
        ],
    ]
    optFlags = [
        [
            "connect-each",
            "C",
            "A new connection for each probe (reports the connect time).",
        ],
        ["bulk", "b", "Throughput mode: stream both ways at once (UDP: at --rate)."],
        ["histogram", "H", "Draw the round-trip distribution in the terminal."],
        ["quiet", "q", "No line per probe: the summary only."],
        ["insecure", "k", "tls: do not check the server's certificate."],
    ]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse C{options}, which may come after the target as they do for
        ping (C{echotwist-probe HOST -c 5}): Twisted's parser stops at the
        first argument, so the options are put first.
        """
        if options is None:
            options = sys.argv[1:]
        try:
            found, arguments = getopt.gnu_getopt(options, self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        ordered: list[str] = []
        for name, value in found:
            takesValue = (
                name[2:] + "=" in self.longOpt
                if name.startswith("--")
                else name[1] + ":" in self.shortOpt
            )
            ordered.extend([name, value] if takesValue else [name])
        super().parseOptions([*ordered, "--", *arguments])

    def opt_version(self) -> None:
        """
        Show echotwist's version and exit.
        """
        from echotwist import __version__

        print(f"echotwist-probe {__version__}")
        sys.exit(0)

    def parseArgs(self, target: str | None = None) -> None:
        """
        The one argument: the target.
        """
        if target is None:
            raise usage.UsageError("no target given (e.g. tcp:127.0.0.1:5000)")
        self["targetText"] = target

    def postOptions(self) -> None:
        """
        Check the target and the options together; refuse, in a sentence
        naming the option, what cannot work or would flood.
        """
        try:
            target = parseTarget(self["targetText"], self["port"])
        except TargetError as e:
            raise usage.UsageError(str(e)) from None
        self["target"] = target
        if self["seed"] is None:
            self["seed"] = random.SystemRandom().randrange(2**32)
        if self["bulk"] and self["duration"] is None:
            self["duration"] = 10.0
        if target.isDatagram:
            if not HEADER.size <= self["size"] <= MAX_DATAGRAM:
                raise usage.UsageError(
                    f"--size over UDP must be from {HEADER.size} (the probe's"
                    f" header) to {MAX_DATAGRAM}, not {self['size']}"
                )
            if self["connect-each"]:
                raise usage.UsageError("--connect-each needs a stream target, not udp:")
            if self["parallel"] != 1:
                raise usage.UsageError("--parallel is for streams; over UDP use --rate")
        elif self["bulk"] and self["connect-each"]:
            raise usage.UsageError("--bulk and --connect-each do not go together")
        elif self["bulk"] and self["count"]:
            # Over UDP --count bounds the datagrams a --bulk run sends; a
            # stream has no probes to count.
            raise usage.UsageError(
                "--count is not for --bulk over a stream: give --duration"
            )
        if (
            not self["bulk"]
            and self["interval"] == 0
            and not (self["count"] or self["duration"])
        ):
            raise usage.UsageError(
                "--interval 0 floods the target: give --count or --duration too"
            )
        if target.kind != "tls" and (self["insecure"] or self["ca"]):
            raise usage.UsageError("--insecure and --ca are for tls: targets")
        if self["insecure"] and self["ca"]:
            raise usage.UsageError("--insecure and --ca do not go together")
        if self["ca"] is not None and not os.access(self["ca"], os.R_OK):
            raise usage.UsageError(f"--ca {self['ca']}: cannot read the file")
        if self["plot"] is not None:
            missing = checkPlotting()
            if missing is not None:
                raise usage.UsageError(missing)
        for name in ("json", "plot"):
            path = self[name]
            if path is not None and path != "-":
                directory = os.path.dirname(os.path.abspath(path))
                if os.path.isdir(path):
                    raise usage.UsageError(f"--{name} {path}: is a directory")
                if not os.access(directory, os.W_OK):
                    raise usage.UsageError(f"--{name} {path}: cannot write there")

    def settings(self) -> dict[str, object]:
        """
        The settings as the JSON document records them.
        """
        target = self["target"]
        return {
            "transport": target.kind,
            "host": target.host,
            "port": target.port or None,
            "size": self["size"],
            "count": self["count"],
            "interval_s": self["interval"],
            "timeout_s": self["timeout"],
            "duration_s": self["duration"],
            "connect_each": bool(self["connect-each"]),
            "bulk": bool(self["bulk"]),
            "parallel": self["parallel"],
            "rate": self["rate"] if self["bulk"] and target.isDatagram else None,
            "seed": self["seed"],
            "argv": sys.argv[1:],
        }
