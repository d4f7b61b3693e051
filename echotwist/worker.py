# -*- test-case-name: tests.test_worker,tests.test_supervisor -*-
"""
One worker process of a supervised echotwist (C{--workers N}).

The supervisor starts it as C{python -m echotwist.worker} and writes its
configuration, one line of JSON naming the listening sockets it inherited
(by descriptor) and the server's options, to its standard input: a pipe,
so that no option shows in C{ps} as a command line would.  The worker
serves those sockets as the single-process server would, logs to its
standard output (a pipe the supervisor reads) as Twisted's JSON log events
tagged with its number, and on its control pipe (stdin in, a descriptor
out) sends a heartbeat with its counts every L{heartbeatInterval} seconds
and answers C{stats} with them.  It drains and exits on SIGTERM or SIGINT,
or when its supervisor goes away (the control pipe closes).
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import sys
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    formatEvent,
    globalLogBeginner,
)
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from echotwist._twisted import exitSignal
from echotwist.connections import EchoFactory
from echotwist.listeners import DatagramListener, Listener, parseListener
from echotwist.logs import LogFiles, jsonLinesObserver
from echotwist.service import EchoService
from echotwist.settings import Settings
from echotwist.stats import stats

# Run as "python -m echotwist.worker", the module is __main__: name it.
log = Logger(namespace="echotwist.worker")

#: How often a worker reports to its supervisor, at most: the supervisor's
#: count of live workers is a few of these stale at worst, and a report
#: costs a line of JSON on a pipe.
HEARTBEAT_INTERVAL = 1.0

#: The most a configuration line may hold before it is given up.
MAX_CONFIGURATION = 1 << 20

#: How long a full worker leaves a new connection to its siblings before it
#: takes it itself (see L{AcceptInTurn}): far longer than a sibling with
#: room takes to accept (the kernel wakes every worker at once), and short
#: beside what a client waits for once every worker is full.
ACCEPT_GRACE = 0.25

#: How many connections a full worker accepts at most in one pass over
#: what its siblings left: Twisted's port's first pass.
TAKE_AT_ONCE = 100


def heartbeatInterval(settings: Settings) -> float:
    """
    Seconds between a worker's heartbeats: L{HEARTBEAT_INTERVAL}, or a
    quarter of C{--worker-timeout} if that is less, so that a live worker
    misses its deadline only if it misses 4 heartbeats in a row.
    """
    if settings.workerTimeout:
        return min(HEARTBEAT_INTERVAL, settings.workerTimeout / 4)
    return HEARTBEAT_INTERVAL


def _family(fileno: int) -> int:
    probe = socket.socket(fileno=fileno)
    try:
        return int(probe.family)
    finally:
        probe.detach()


class _AdoptingReactor:
    """
    A stand-in reactor for parsing one inherited listener's description:
    every way an endpoint can ask to listen (TCP, TLS, UNIX, an adopted
    socket) adopts the inherited descriptor instead, with whatever wrapping
    the endpoint itself puts around the factory (TLS, PROXY).  Everything
    else goes to the real reactor.
    """

    def __init__(self, reactor: Any, fileno: int) -> None:
        self._reactor = reactor
        self._fileno = fileno

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _adopt(self, factory: Any) -> Any:
        port = self._reactor.adoptStreamPort(
            self._fileno, _family(self._fileno), factory
        )
        os.close(self._fileno)  # adoptStreamPort took a duplicate
        return port

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        return self._adopt(factory)

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        # Imported here: TLS is an extra (pyOpenSSL), and only an ssl:
        # listener gets this far.
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self._adopt(TLSMemoryBIOFactory(contextFactory, False, factory))

    def listenUNIX(self, address: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
        return self._adopt(factory)

    def adoptStreamPort(
        self, fileDescriptor: int, addressFamily: int, factory: Any
    ) -> Any:
        return self._adopt(factory)


def workerDescription(description: str) -> str:
    """
    The description a worker parses for an inherited listener: a systemd
    socket is already open, and its wrapping (if any) is all that matters.
    """
    head, _, rest = description.partition("systemd:")
    return head + "tcp:0" if rest else description


def _tagged(observer: ILogObserver, worker: int) -> ILogObserver:
    @implementer(ILogObserver)
    def tag(event: LogEvent) -> None:
        event = dict(event)
        system = event.get("log_system") or event.get("log_namespace", "-")
        event["log_system"] = f"{system} worker {worker}"
        event["worker"] = worker
        # The sentence as this process formats it: Twisted's JSON keeps only
        # str() of each field it formats ("{duration:.3f}" would come out
        # with every digit), and an object field not at all.
        event["log_text"] = formatEvent(event)
        observer(event)

    return tag  # type: ignore[no-any-return]


class AcceptInTurn:
    """
    A worker's share of a burst of connects: no more than it has room for.

    Every worker accepts from the same listening sockets, and C{--max-
    connections} holds for each.  Twisted's port accepts up to
    C{numberAccepts} connections (100 at first) each time its socket is
    readable, so the worker the kernel woke first took a whole burst and
    refused what was over its own limit, while its siblings had room: two
    workers of 20 refused 10 to 18 of a burst of 36.  So a worker accepts
    at most as many connections a pass as it has room for; once full, it
    stops reading its listeners, and what is still queued after
    C{grace} seconds, which no sibling took (they are full too, or stuck),
    it accepts and admits by eviction or refuses, as one process does,
    pass after pass while each takes all it asked for, before it waits
    again.  It reads again as soon as it has room.

    @ivar ports: the listening ports of the echo, as Twisted made them.
    """

    def __init__(
        self, factory: EchoFactory, reactor: Any, grace: float = ACCEPT_GRACE
    ) -> None:
        self.factory = factory
        self.reactor = reactor
        self.grace = grace
        self.ports: list[Any] = []
        self.full = False
        self._leftovers: Any = None
        # While it takes what its siblings left (see TAKE_AT_ONCE).
        self._taking = False
        factory.openChanged = self.changed

    def watch(self, port: Any) -> None:
        """
        Share the accepts of C{port} (a C{tcp.Port}, or a C{unix.Port}):
        each pass of its accepts is held to the room left.
        """
        accept = port.doRead

        def doRead() -> object:
            if self._taking:
                port.numberAccepts = TAKE_AT_ONCE
            else:
                room = self.factory.admission.maxConnections - self.factory.open
                # Twisted's own pace (it grows and shrinks the batch with
                # what each pass found), held to the room; at least one, as
                # Twisted's port never tries fewer.
                port.numberAccepts = max(1, min(port.numberAccepts, room))
            return accept()

        # An attribute of this port alone: the reactor calls its doRead.
        port.doRead = doRead
        self.ports.append(port)

    def _listening(self) -> list[Any]:
        return [
            port
            for port in self.ports
            if getattr(port, "connected", False) and not port.disconnecting
        ]

    def changed(self) -> None:
        """
        The count of open connections changed: stop reading once full,
        read again once not.
        """
        full = self.factory.admission.full(self.factory.open)
        if full == self.full:
            return
        self.full = full
        for port in self._listening():
            if full:
                port.stopReading()
            else:
                port.startReading()
        if full:
            if self._leftovers is None:
                self._leftovers = self.reactor.callLater(self.grace, self._take)
        elif self._leftovers is not None:
            self._leftovers.cancel()
            self._leftovers = None

    def _take(self) -> None:
        """
        Accept what the siblings left for C{grace} seconds: each evicts or
        is refused as a full server's newcomer is.
        """
        self._leftovers = None
        ports = self._listening()
        self._taking = True
        try:
            for port in ports:
                port.doRead()
        finally:
            self._taking = False
        if not (self.full and ports):
            return
        # A pass that took all it asked for left more queued, as Twisted's
        # port judges it too (it asks for 20 more next time): no sibling
        # drains the queue, so look again on the next iteration, not after
        # another grace period.  A pass each grace period alone answered
        # 400 connects a second a worker, and a flood at a full server
        # waited in the kernel's queue for seconds, with it newcomers who
        # would evict an idle connection.  A shorter pass waits the grace:
        # what comes meanwhile is for a sibling with room, if there is one.
        more = any(port.numberAccepts > TAKE_AT_ONCE for port in ports)
        if self._leftovers is not None:
            # An eviction in the pass made room and took it again.
            self._leftovers.cancel()
        self._leftovers = self.reactor.callLater(0 if more else self.grace, self._take)


class _Control(LineOnlyReceiver):
    """
    The worker's end of its control pipe: a heartbeat with the counts every
    C{interval} seconds, and the counts again whenever asked (C{stats}).
    """

    delimiter = b"\n"

    def __init__(self, service: EchoService, reactor: Any, interval: float) -> None:
        self.service = service
        self.reactor = reactor
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._interval = interval

    def _counts(self) -> dict[str, Any]:
        return stats(self.service.factory, self.service.datagramPolicy)

    def _beat(self) -> None:
        # Sent from the reactor's own loop: a worker whose loop is stuck (or
        # a stopped process) stops sending, which is what the supervisor
        # watches for.
        self.sendLine(json.dumps({"heartbeat": self._counts()}).encode())

    def connectionMade(self) -> None:
        self._heartbeat.start(self._interval, now=True)

    def lineReceived(self, line: bytes) -> None:
        if line == b"stats":
            self.sendLine(json.dumps(self._counts()).encode())

    def connectionLost(self, reason: object = None) -> None:
        if self._heartbeat.running:
            self._heartbeat.stop()
        # The supervisor is gone: nobody will tell us to stop, so stop.
        if getattr(self.reactor, "running", False):
            log.warn("Supervisor gone: draining", event="worker.orphaned")
            self.reactor.stop()


def readConfiguration(fileno: int) -> tuple[dict[str, Any], bytes]:
    """
    Read the supervisor's configuration: the first line on C{fileno}.

    @return: the configuration, and what followed it on the pipe (the
        start of the control conversation), which is not to be lost.
    """
    data = b""
    while b"\n" not in data:
        if len(data) > MAX_CONFIGURATION:
            raise SystemExit("echotwist.worker: configuration line too long")
        chunk = os.read(fileno, 65536)
        if not chunk:
            raise SystemExit(
                "echotwist.worker: no configuration on standard input; workers"
                " are started by twistd echo --workers N"
            )
        data += chunk
    line, _, rest = data.partition(b"\n")
    return json.loads(line), rest


def _inherited(
    config: dict[str, Any], reactor: Any
) -> tuple[list[Listener], list[DatagramListener]]:
    """
    The stream and UDP listeners of the sockets the supervisor passed,
    described as the supervisor's own (so logs and metrics name them as
    typed), each of its kind (TLS, PROXY) as parsed.
    """
    listeners = [
        parseListener(
            workerDescription(item["description"]),
            _AdoptingReactor(reactor, item["fileno"]),
        )._replace(description=item["description"])
        for item in config["listeners"]
    ]
    datagrams = [
        DatagramListener(item["description"], 0, "", item["fileno"])
        for item in config["udp"]
    ]
    return listeners, datagrams


def main() -> None:
    """
    Run a worker: the supervisor's JSON configuration is the first line of
    standard input.
    """
    config, pending = readConfiguration(0)
    # Signals from a terminal reach the supervisor alone, which relays them.
    os.setpgrp()
    if config["reactor"]:
        from twisted.application.reactors import installReactor

        installReactor(config["reactor"])
    from twisted.internet import reactor as globalReactor

    # Any: Twisted before 26 types the global reactor as a module.
    reactor: Any = globalReactor
    from twisted.internet.stdio import StandardIO

    # JSON, so the supervisor can emit each event as it was, to wherever
    # its own log goes.
    globalLogBeginner.beginLoggingTo(
        [_tagged(jsonLinesObserver(sys.stdout), config["worker"])],
        redirectStandardIO=False,
    )
    faulthandler.enable()
    listeners, datagrams = _inherited(config, reactor)
    settings = Settings.fromJSON(config["settings"])
    service = EchoService(
        listeners,
        udp=datagrams,
        settings=settings,
        # The supervisor said it, once.
        warnOpenProxy=False,
        # Its log is a pipe to the supervisor, which reopens the log file.
        logFiles=LogFiles(twistd=False),
        reactor=reactor,
    )
    service.startService()
    if settings.maxConnections:
        turns = AcceptInTurn(service.factory, reactor)
        for listener in service.listeners:
            port = getattr(listener, "port", None)
            if port is not None:
                turns.watch(port)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    control: Protocol = _Control(service, reactor, heartbeatInterval(settings))
    StandardIO(control, stdin=0, stdout=config["controlFileno"], reactor=reactor)  # type: ignore[call-arg]
    if pending:
        control.dataReceived(pending)
    log.info("Worker {worker} serving", event="worker.serving", worker=config["worker"])
    reactor.run()
    stoppedBy = exitSignal(reactor)
    if stoppedBy:
        # Die by the signal that stopped us, as twistd does.
        signal.signal(stoppedBy, signal.SIG_DFL)
        os.kill(os.getpid(), stoppedBy)


if __name__ == "__main__":
    main()
