# -*- test-case-name: tests.test__twisted -*-
"""
The one door to Twisted's private names.

Twisted's compatibility policy covers its public names only.  Where
echotwist must lean on something private (an attribute, a module, a key of
a runner's options, a file format), it does it here, each behind a small
function or name whose docstring says what it relies on and which Twisted
releases were read and tested for it.  C{tests.test__twisted} checks every
one of them against the installed Twisted and fails with a sentence naming
what changed, so that a new release that removes or changes one is caught
by a fast unit test instead of an AttributeError deep in a hot path or a
slow real-twistd test.

Checked against Twisted 24.3.0 and 26.10.0.  Nothing else in C{echotwist}
touches a Twisted name that starts with an underscore.  What only the PROXY
wrapper needs is in L{echotwist._twisted.haproxy}, so that Twisted's PROXY
parsers load only where a listener needs them; what the loop's TLS echo
needs of pyOpenSSL's private names, in L{echotwist._twisted.openssl}.  It also holds the one
shim for what those releases type differently (L{orGlobalReactor}).
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar, cast

from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted.internet.epollreactor import EPollReactor
    from twisted.internet.udp import Port as UDPPort

_R = TypeVar("_R")

__all__ = [
    "FOREGROUND_REPORT",
    "EPollParts",
    "datagramPortFromDescriptor",
    "closeEpoll",
    "epollParts",
    "exitSignal",
    "handReactorToTwist",
    "nothingQueued",
    "orGlobalReactor",
    "reportFailedStart",
    "requestMethod",
    "setAcceptLogObserver",
    "tlsReceiveFailed",
    "tlsReceived",
    "tlsSettled",
    "twistdMayOpenLogFile",
    "writeShutDown",
]


def orGlobalReactor(reactor: _R | None) -> _R:
    """
    C{reactor}, or Twisted's global reactor if it is None: how a class
    that takes a reactor (for tests, a L{twisted.internet.task.Clock})
    defaults to the one that runs.  Twisted before 26 types the global
    reactor as a module, hence the one cast here.
    """
    if reactor is not None:
        return reactor
    from twisted.internet import reactor as globalReactor

    return cast(_R, globalReactor)


# -- transports --------------------------------------------------------------


def nothingQueued(transport: Any) -> bool:
    """
    Whether a L{twisted.internet.abstract.FileDescriptor} (a TCP transport)
    holds nothing unsent: its C{dataBuffer} is empty and so is what
    C{write()} appended since the last flush into it, which only the
    private C{_tempDataLen} counts.  Bytes written to the socket directly
    when this is true cannot overtake any written before.  Checked with
    Twisted 24.3.0 and 26.10.0.
    """
    return not transport.dataBuffer and not transport._tempDataLen


def writeShutDown(transport: Any) -> bool:
    """
    Whether a L{twisted.internet.abstract.FileDescriptor}'s sending side
    is shut down (C{loseWriteConnection()} done, so nothing more may be
    sent): the private C{_writeDisconnected}.  Checked with Twisted 24.3.0
    and 26.10.0.
    """
    return bool(transport._writeDisconnected)


def setAcceptLogObserver(port: Any, observer: ILogObserver) -> None:
    """
    Send what a L{twisted.internet.tcp.Port} logs as it accepts (the
    accept errors of C{doRead}, such as EMFILE) to C{observer}, keeping
    its namespace: C{tcp.Port} logs through its private class-level
    C{_logger}, which this shadows on the one port.  TCP, TLS and UNIX
    ports alike.  Checked with Twisted 24.3.0 and 26.10.0.
    """
    port._logger = Logger(namespace=port._logger.namespace, observer=observer)


def datagramPortFromDescriptor(
    portClass: type[UDPPort],
    reactor: Any,
    fd: int,
    family: int,
    protocol: Any,
    maxPacketSize: int,
) -> UDPPort:
    """
    A datagram port of C{portClass} (a L{twisted.internet.udp.Port}
    subclass) on a listening socket adopted from C{fd}, which it
    duplicates: the private classmethod C{udp.Port._fromListeningDescriptor}
    that C{reactor.adoptDatagramPort} itself calls, the one way Twisted
    offers to adopt a datagram socket into a port of one's own class.
    Checked with Twisted 24.3.0 and 26.10.0.
    """
    port: UDPPort = portClass._fromListeningDescriptor(
        reactor, fd, family, protocol, maxPacketSize=maxPacketSize
    )
    return port


def requestMethod(channel: Any) -> bytes | None:
    """
    The method of the request a L{twisted.web.http.HTTPChannel} is reading,
    before its headers are complete (C{Request.gotLength} runs before the
    request is handed its method): the channel's private C{_command}, set
    from the request line and deleted once the request is handed over.
    None where it is not there.  Checked with Twisted 24.3.0 and 26.10.0.
    """
    method: bytes | None = getattr(channel, "_command", None)
    return method


# -- TLS ---------------------------------------------------------------------


def tlsSettled(protocol: Any) -> bool:
    """
    Whether a L{twisted.protocols.tls.TLSMemoryBIOProtocol} is in its
    ordinary state between reads: the handshake done (the private
    C{_handshakeDone}), no cleartext buffered for it (C{_appSendBuffer}),
    the TLS connection neither over (C{_lostTLSConnection}) nor aborted
    (C{_aborted}).  Bytes received in that state go to OpenSSL and straight
    on to the receiving loop (C{dataReceived} does nothing else).  Checked
    with Twisted 24.3.0 and 26.10.0.
    """
    return bool(
        protocol._handshakeDone
        and not protocol._appSendBuffer
        and not protocol._lostTLSConnection
        and not protocol._aborted
    )


def tlsReceived(protocol: Any) -> None:
    """
    Run a L{twisted.protocols.tls.TLSMemoryBIOProtocol}'s receiving loop,
    its private C{_flushReceiveBIO}: what its C{dataReceived} does once the
    bytes are in OpenSSL and the handshake is done (deliver what OpenSSL
    decrypts, answer or close on what it says, then send what it has to
    send).  Checked with Twisted 24.3.0 and 26.10.0.
    """
    protocol._flushReceiveBIO()


def tlsReceiveFailed(protocol: Any) -> None:
    """
    Called while handling the C{OpenSSL.SSL.Error} that a
    L{twisted.protocols.tls.TLSMemoryBIOProtocol}'s C{recv()} raised, do
    what its receiving loop (C{_flushReceiveBIO}) does with it: end the TLS
    connection with that failure (the private C{_tlsShutdownFinished}),
    then send what OpenSSL has to send (C{_flushSendBIO}, an alert).
    Checked with Twisted 24.3.0 and 26.10.0.
    """
    protocol._tlsShutdownFinished(Failure())
    protocol._flushSendBIO()


# -- the reactor -------------------------------------------------------------


class EPollParts:
    """
    What a subclass of Twisted's epoll reactor needs of its internals to
    run its own poll loop, as Twisted's C{EPollReactor.doPoll} does.

    A plain class with slots, not a named tuple or a frozen dataclass: the
    loop only reads its attributes, and it is the lightest to load, which
    every start does (the echotwist reactor builds one): a frozen
    dataclass's methods are generated and compiled as its module loads (2.5
    million instructions, 0.4% of a start), and a typed named tuple's class
    is built by C{typing} and C{collections} as it loads (1.2 million,
    0.2%; docs/performance.rst).

    @ivar poll: the epoll object's C{poll(timeout, maxevents)}.
    @ivar register: the epoll object's C{register(fd, eventmask)}, for a
        descriptor the loop watches itself, not a selectable of Twisted's
        (the fast loop's alarm, see L{echotwist._fast.alarm}).
    @ivar selectables: the readers and writers by descriptor (a live dict,
        changed as they are added and removed).
    @ivar doReadOrWrite: C{(selectable, fd, event)}: handles one event as
        Twisted's loop does, logging an exception and losing the
        connection on one.
    @ivar disconnectSelectable: C{(selectable, why, isRead)}: what the
        reactor does with a selectable whose read or write returned a
        reason to disconnect.
    @ivar justStopped: C{(reactor)}: whether C{reactor.stop()} was called
        since the main loop's last pass, which a loop that polls more than
        once per pass must check to return in time; a C function, since
        the loop asks once a poll (a Python call costs it several hundred
        instructions a message).
    """

    __slots__ = (
        "poll",
        "register",
        "selectables",
        "doReadOrWrite",
        "disconnectSelectable",
        "justStopped",
    )

    def __init__(
        self,
        poll: Callable[[float, int], list[tuple[int, int]]],
        register: Callable[[int, int], None],
        selectables: dict[int, Any],
        doReadOrWrite: Callable[[Any, int, int], None],
        disconnectSelectable: Callable[[Any, BaseException, bool], None],
        justStopped: Callable[[Any], bool],
    ) -> None:
        self.poll = poll
        self.register = register
        self.selectables = selectables
        self.doReadOrWrite = doReadOrWrite
        self.disconnectSelectable = disconnectSelectable
        self.justStopped = justStopped


def epollParts(reactor: EPollReactor) -> EPollParts:
    """
    The internals of an initialised L{EPollReactor} its poll loop uses:
    its private C{_poller} and C{_selectables}, both made once in
    C{__init__} and never replaced, and its private methods
    C{_doReadOrWrite} (of C{posixbase._PollLikeMixin}) and
    C{_disconnectSelectable} (of C{posixbase._DisconnectSelectableMixin});
    and the private C{_justStopped} of L{twisted.internet.base.ReactorBase}.
    Checked with Twisted 24.3.0 and 26.10.0.
    """
    return EPollParts(
        poll=reactor._poller.poll,
        register=reactor._poller.register,
        selectables=reactor._selectables,
        doReadOrWrite=reactor._doReadOrWrite,
        disconnectSelectable=reactor._disconnectSelectable,
        justStopped=attrgetter("_justStopped"),
    )


def closeEpoll(reactor: EPollReactor) -> None:
    """
    Close the epoll object of an L{EPollReactor} that was made but never
    run (a test's private reactor): its private C{_poller}, which Twisted
    closes only when the reactor runs its shutdown.  Checked with Twisted
    24.3.0 and 26.10.0.
    """
    reactor._poller.close()


def exitSignal(reactor: Any) -> int | None:
    """
    The signal that stopped C{reactor} (SIGINT, SIGTERM, SIGBREAK), if one
    did: the private C{_exitSignal} of L{twisted.internet.base.ReactorBase}
    that twistd and twist read to die by that signal.  Checked with
    Twisted 24.3.0 and 26.10.0.
    """
    number: int | None = getattr(reactor, "_exitSignal", None)
    return number


# -- twistd ------------------------------------------------------------------

#: What the process a daemonizing twistd leaves in the foreground reads of
#: the daemon's word on a failed start (C{twisted.scripts._twistd_unix}'s
#: C{_waitForStart} reads 100 bytes, two of them a status).  Checked with
#: Twisted 24.3.0 and 26.10.0.
FOREGROUND_REPORT = 98


def reportFailedStart(runner: MutableMapping[str, Any], message: bytes) -> bool:
    """
    Tell the process a daemonizing twistd left in the foreground that the
    start failed, in C{message} (at most L{FOREGROUND_REPORT} bytes), as
    twistd's own C{_twistd_unix.UnixApplicationRunner} does: it keeps the
    pipe to the foreground in its options as C{statusPipe} and writes a
    status, a space and a message to it.  Closes the pipe and takes it out
    of C{runner}, so twistd does not write to it again.  Checked with
    Twisted 24.3.0 and 26.10.0.

    @return: whether there was such a pipe.
    """
    pipe = runner.get("statusPipe")
    if pipe is None:
        return False
    os.write(pipe, b"1 " + message[:FOREGROUND_REPORT])
    os.close(pipe)
    runner["statusPipe"] = None
    return True


def twistdMayOpenLogFile(runner: Any) -> bool:
    """
    Whether the runner may have opened a twistd log file (C{--logfile}, or
    C{twistd.log} when it daemonizes), as twistd decides in
    C{twisted.scripts._twistd_unix.UnixAppLogger}: not under C{twist}
    (whose options have no C{logfile}), nor with C{--syslog}, nor to
    standard output (C{--logfile=-}, or none with C{-n}).  With
    C{--logger} its observer may keep a log file of its own, and with
    C{-b} the choice was made before C{nodaemon} changed: both say yes.
    Checked with Twisted 24.3.0 and 26.10.0.

    @param runner: twistd's or twist's options, or None if not known (then
        yes).
    """
    if runner is None:
        return True  # not known: look
    if "logfile" not in runner:
        return False  # twist: its --log-file is in its options
    if runner.get("logger"):
        return True
    if runner.get("debug"):
        # twistd's logger decided before -b turned "nodaemon" on (in
        # UnixApplicationRunner.preApplication, before makeService): what
        # it chose is no longer to be told from the options.
        return True
    if runner.get("syslog"):
        return False
    logfile = runner["logfile"]
    return not (logfile == "-" or (not logfile and runner.get("nodaemon")))


def handReactorToTwist(parent: Any, reactor: object, name: str) -> bool:
    """
    Under C{twist}, tell its options that C{reactor} (installed by the
    plugin, called C{name}) is the one to run: C{TwistOptions}
    (C{twisted.application.twist._options}) installs C{self["reactorName"]}
    after parsing unless C{self["reactor"]} is set, and would fail with
    C{ReactorAlreadyInstalledError}.  Checked with
    Twisted 24.3.0 and 26.10.0.

    @param parent: the plugin's parent options: twist's, twistd's or None.
    @return: whether C{parent} was twist's and was told.
    """
    if parent is None or "reactorName" not in parent or "reactor" in parent:
        return False
    parent["reactor"] = reactor
    parent["reactorName"] = name
    return True
