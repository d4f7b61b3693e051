# -*- test-case-name: tests.test_probe -*-
"""
C{echotwist-probe}: a client that measures the path to any RFC 862 echo
server (round trip, loss, throughput, every byte checked), the other end
of echotwist::

    echotwist-probe tcp:127.0.0.1:5000 --count 5
    python -m echotwist.probe udp:127.0.0.1:5000 --interval 0.2 --count 50

The server never imports this package: nothing here slows its start.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.logger import ILogObserver
from twisted.python import usage
from zope.interface import provider

from echotwist.probe.options import ProbeOptions

__all__ = ["main", "ProbeOptions"]

_PREFIX = "Parameter type enforcement failed: "


def _installReactor() -> None:
    """
    Run on echotwist's epoll reactor where there is one: Twisted's epoll
    reactor without its logging context per event, a few microseconds
    less between a datagram's arrival and the probe's timestamp.
    """
    try:
        from echotwist.reactor import install
    except ImportError:  # no epoll here: the default reactor serves
        return
    try:
        install()
    except Exception:  # a reactor is installed already (a test, an embedding)
        pass


@provider(ILogObserver)
def _logLine(event: dict[str, Any]) -> None:
    """
    Twisted's critical events (an error in a callback) as one escaped line
    each on standard error, never a traceback; the rest is not the probe's
    to print.  A certificate that names no host is left out: the probe's
    own check says so (L{echotwist.probe.target.peerCheck}).
    """
    from twisted.logger import LogLevel, formatEvent

    from echotwist._address import escape

    if event.get("log_level") != LogLevel.critical:
        return
    # Twisted's legacy log.err (Twisted 24.3's TLS info callback uses it)
    # hands its failure over as "failure", its traceback inside the text,
    # and its reason as "why".
    failure = event.get("log_failure", event.get("failure"))
    if "log_failure" not in event and failure is not None:
        text = str(event.get("why") or "Unhandled error")
    else:
        text = formatEvent(event)
    if failure is not None:
        error = failure.value
        if type(error).__module__.startswith("service_identity"):
            return
        text += f": {type(error).__name__}: {error}"
    print(f"echotwist-probe: {escape(' '.join(text.split()))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    The command: parse C{argv} (default C{sys.argv[1:]}), probe, and exit
    with ping's status.
    """
    options = ProbeOptions()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        text = str(e).removeprefix(_PREFIX)
        print(f"echotwist-probe: {text} (see --help)", file=sys.stderr)
        sys.exit(2)
    _installReactor()
    from twisted.internet import task
    from twisted.logger import globalLogBeginner

    # Until logging begins, Twisted prints its critical events to standard
    # error with their tracebacks: a line each instead.
    globalLogBeginner.beginLoggingTo([_logLine], redirectStandardIO=False)

    task.react(_probe, (options,))
    raise AssertionError("task.react returned")  # pragma: no cover


class _Output:
    """
    Standard output, for a reader that may go away (C{echotwist-probe ... |
    head}): ping dies of SIGPIPE then, and the pipeline ends.  The probe
    cannot take SIGPIPE's default (a peer's reset would kill it too), so a
    write that finds the pipe broken sends the rest of the output to
    /dev/null, and ends the run as Ctrl-C does.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.run: Any = None
        self.readerGone = False

    def line(self, text: str) -> None:
        """
        Print C{text}, unless the reader is gone.
        """
        if self.readerGone:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            self.gone()

    def gone(self) -> None:
        """
        The reader is gone: nothing more reaches standard output, and the
        run ends.
        """
        self.readerGone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        if self.run is not None:
            # Not from inside the run's own call that printed.
            self.reactor.callLater(0, self.run.stop)


async def _probe(reactor: Any, options: ProbeOptions) -> None:
    from echotwist.probe.report import (
        ERROR,
        plot,
        summaryLines,
        writeJSON,
    )

    toStdout = options["json"] != "-"
    quiet = options["quiet"] or not toStdout
    output = _Output(reactor)

    def say(line: str) -> None:
        if not quiet:
            output.line(line)

    run = makeRun(reactor, options, say)
    if run is None:
        raise SystemExit(2)
    output.run = run
    if toStdout:
        output.line(heading(options))

    def interrupted(*_: object) -> None:
        # The first Ctrl-C ends the run with its summary, as ping's; a
        # second one, should the end hang, ends the process.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        reactor.callFromThread(run.stop)

    signal.signal(signal.SIGINT, interrupted)
    # A collection in the middle of a round trip would be measured as the
    # path's: nothing a run allocates forms cycles, so none is needed.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        results = await run.start()
    finally:
        gc.enable()
    status = results.exitStatus(options["max-loss"], options["max-p99"])
    if toStdout:
        for line in summaryLines(results, options["histogram"]):
            output.line(line)
    if results.error is not None:
        print(f"echotwist-probe: {results.error}", file=sys.stderr)
    else:
        for line in results.failures(options["max-loss"], options["max-p99"]):
            print(f"echotwist-probe: {results.target}: {line}", file=sys.stderr)
    if options["json"] is not None:
        try:
            if options["json"] == "-":
                writeJSON(results, status, sys.stdout)
                sys.stdout.flush()
            else:
                with open(options["json"], "w") as f:
                    writeJSON(results, status, f)
        except OSError as e:
            if options["json"] == "-":
                output.gone()
            # The document is the run's result for a program: without it,
            # the run is an error, whatever it measured.
            print(
                f"echotwist-probe: --json {options['json']}: cannot write"
                f" ({e.strerror})",
                file=sys.stderr,
            )
            status = ERROR
    if options["plot"] is not None and results.rtts():
        try:
            plot(results, options["plot"])
        except OSError as e:
            print(
                f"echotwist-probe: --plot {options['plot']}: cannot write"
                f" ({e.strerror})",
                file=sys.stderr,
            )
            status = ERROR
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        output.gone()
    raise SystemExit(status)


def heading(options: ProbeOptions) -> str:
    """
    The first line of a run, as ping's: what is probed, how, and the seed.
    """
    target = options["target"]
    if options["bulk"]:
        what = (
            f"streaming datagrams at {options['rate']:g}/s"
            if target.isDatagram
            else "streaming both ways"
        )
    elif options["interval"]:
        what = f"{options['size']} bytes every {options['interval']:g} s"
    else:
        what = f"{options['size']} bytes, each as soon as the last is back"
    return f"PROBE {target.text}: {what}, seed {options['seed']}"


def makeRun(reactor: Any, options: ProbeOptions, say: Any) -> Any:
    """
    The run C{options} ask for; C{None} (after a line on standard error)
    when the target cannot be used.
    """
    from echotwist.probe.payload import Payloads
    from echotwist.probe.target import TargetError, peerCheck, streamEndpoint

    target = options["target"]
    run: dict[str, Any] = {
        "payloads": Payloads(options["seed"], options["size"]),
        "timeout": options["timeout"],
        "duration": options["duration"],
    }
    latency = {"count": options["count"], "interval": options["interval"]}
    if target.isDatagram:
        from echotwist.probe.datagram import DatagramRun

        kind: Any = DatagramRun
        run.update(latency, rate=options["rate"] if options["bulk"] else None)
    else:
        try:
            run["endpoint"] = streamEndpoint(
                reactor, target, options["timeout"], options["ca"], options["insecure"]
            )
        except TargetError as e:
            print(f"echotwist-probe: {e}", file=sys.stderr)
            return None
        run["checkPeer"] = peerCheck(target, options["insecure"])
        if options["bulk"]:
            from echotwist.probe.bulk import StreamBulk

            kind = StreamBulk
            run["parallel"] = options["parallel"]
        else:
            from echotwist.probe.stream import StreamLatency

            kind = StreamLatency
            run.update(latency, connectEach=options["connect-each"])
    return kind(reactor, target, options.settings(), say, **run)
