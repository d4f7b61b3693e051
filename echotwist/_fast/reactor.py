# -*- test-case-name: tests.test__fast_reactor -*-
"""
The loop of echotwist's fast path (see L{echotwist._fast}): an epoll
reactor without a logging context per event, for busy echo servers.  Its
public name is L{echotwist.reactor.EchotwistEPollReactor}: what C{twistd
-n echo ...} and C{twist echo ...} serve on when no reactor is named (see
L{echotwist.process.installDefaultReactor}), and what C{--reactor
echotwist} names.

Twisted's epoll reactor runs every read and write inside
C{log.callWithLogger}, which asks the selectable for its log prefix and
pushes a context holding it, only so that legacy C{log.msg} calls made
during the event carry a "system" of that prefix.  echotwist logs through
C{twisted.logger} with its own namespaces and fields, so at tens of
thousands of events a second that context is pure cost.  This reactor is
Twisted's epoll reactor with that one wrapper taken out; it keeps the
wrapper's other duty, which is to log an exception from an event and carry
on.  Legacy log lines written during an event lose their per-connection
"system" prefix (they show "-").  C{--reactor epoll} (or any other name)
serves on that reactor instead; a C{.tac} keeps whatever it installs.

It also echoes small reads itself.  On a busy server most events are a
plain TCP echo connection with a few bytes to read: for those (see
L{echotwist._fast.tcp.plainEcho}: an L{Echo} itself, sending directly,
nothing queued, not paused, closing or in bulk) the loop reads the
socket into one buffer it reuses and sends back what it read (the
C{readinto} of the descriptor as a C{FileIO}, and os.write of a view of
the buffer: recv() and send() without flags, minus the argument parsing
of the socket object's methods and a bytes object allocated per read,
which measurably cut the server's user-space instructions per message,
see docs/performance.rst) and counts the bytes, the whole of what the
transport's doRead and the protocol's dataReceived would do, without
either call.  Anything else, a short send, a send error, end of file, a
read of L{SPLICE_FROM} or more, goes to the protocol, and the connection
back to the ordinary path until an ordinary read finds it plain again.

Bulk reads it splices itself the same way: for a connection the
transport would splice (see L{echotwist._fast.tcp.bulkEcho}), the loop
splices the read into the shared pipe and back out to the socket and
counts it, without the transport's doRead and its checks; a short or
failed splice, end of file, or a read under L{SPLICE_FROM} is finished by
L{echotwist._fast.tcp.finishSplice} or the transport, and the connection
goes back to the ordinary path (what that saves at 100 KiB x 10 is in
docs/performance.rst).

A TLS connection's read that is one whole record of application data is
echoed the same way, by L{echotwist._fast.tlsloop.echoRead} on the
connection's pyOpenSSL C{Connection}, for connections that
L{echotwist._fast.tlsloop.fastEcho} chose after an ordinary read or write;
any other read it hands back to Twisted's TLS protocol, and the connection
is looked at again.

Which connections and ports it treats so, it asks the fast path's
registrations (L{echotwist._fast.loopHandlers}) by their class: the TCP
transport of the fast path (L{echotwist._fast.tcp.SplicingServer}) is
looked at after its ordinary events, and so is TLS's
(L{echotwist._fast.tls.DirectTLSServer}); the fast path's UDP port
(L{echotwist._fast.udp.EchoPassPort}) has its pass of reads called
directly; that port answers each datagram in the pass with every check of
the echo's policy (see its C{readPass}), and a pass in which every
datagram was answered counts as such an echo below.  Anything else is
served as Twisted's epoll reactor serves it.

When every event of a poll was such an echo, plain, spliced, TLS or datagram, it polls
again at once instead of returning to Twisted's main loop: nothing ran
that could have scheduled a call, stopped the reactor or queued a call
from a thread (a thread or a signal handler wakes the reactor through its
waker, which is not such an echo), so the loop's pass over timed and
thread calls would find nothing to do; it costs a microsecond or so, per
message on a single connection.  It still returns when the next timed
call is due.

Its polls wait with no timeout: a timerfd, the loop's alarm (see
L{echotwist._fast.alarm}), goes off when the next timed call is due, and
its event ends the repeat.  A finite epoll timeout costs the kernel a
timer per sleep, which one message in flight pays per message.
"""

from __future__ import annotations

import errno
import os
from errno import EINVAL, ENOBUFS, ENOSYS
from select import EPOLLIN
from typing import Any, Literal

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.logger import Logger

from echotwist._fast import loopHandlers, tcp
from echotwist._fast.alarm import SHORT_OF, Alarm, makeAlarm
from echotwist._fast.tcp import (
    _SPLICE_FLAGS,
    SplicingServer,
    _SharedPipe,
    bulkEcho,
    finishRead,
    finishSplice,
    plainEcho,
    plainRead,
)
from echotwist._twisted import epollParts
from echotwist.stream import DIRECT_READ_SIZE, SPLICE_FROM, Echo

__all__ = ["FastEPollReactor"]

# The reactor's events keep the namespace they had before the fast path
# moved here: operators filter on it.
log = Logger(namespace="echotwist.reactor")


class FastEPollReactor(EPollReactor):
    """
    Twisted's epoll reactor without the logging context per event, echoing
    plain small reads in its own loop (see the module docstring).
    """

    #: The fast path's transports serve on it (see
    #: L{echotwist._fast.fastPathOn}).
    echoFastPath = True

    def __init__(self) -> None:
        super().__init__()
        # The fast path's registrations: the classes whose pass of reads
        # this loop calls instead of doRead, and those it looks at after
        # an ordinary event.
        self._handlers = loopHandlers()
        # What the poll loop uses of Twisted's epoll reactor's internals,
        # through echotwist's one door to them.
        self._parts = epollParts(self)
        # Connections whose reads this loop echoes itself, indexed by
        # descriptor (None where there is none; see _setPlain): each one's
        # Echo, whose loopRead the loop reads it with (see tcp.plainEcho;
        # tests put others in).  Nothing more a connection: at a thousand
        # connections each object of one is out of the caches when its
        # next message comes, and one more is a miss more.  A list, not a
        # dictionary: indexing it costs fewer instructions than hashing,
        # and it touches neither a dictionary entry nor the key's int
        # object, which the lookup compares.  Descriptors are small
        # numbers, the lowest free ones, so it is about as long as the
        # highest descriptor the loop had an event of (8 bytes each; see
        # _reach).
        self._plainEchoes: list[Echo | None] = []
        # What the plain echo sends with (tests put others in).
        self._plainWrite = os.write
        # What the plain echo reads into, one read at a time: a bytes
        # object per read would be allocated at DIRECT_READ_SIZE and shrunk.
        self._readBuffer = bytearray(DIRECT_READ_SIZE)
        self._readView = memoryview(self._readBuffer)
        # Connections in bulk whose reads this loop splices itself (see
        # echotwist._fast.tcp.bulkEcho): the transport and its Echo.
        self._bulkEchoes: dict[int, tuple[Any, Echo]] = {}
        # Other connections whose reads this loop echoes itself (TLS, see
        # echotwist._fast.tlsloop): what their handler's loopEcho returned,
        # the transport first and the function that echoes a read second.
        self._loopEchoes: dict[int, tuple[Any, ...]] = {}
        # Ports whose pass of reads this loop calls directly, by
        # descriptor: the port and its handler's readPass (see _event).
        self._passes: dict[int, tuple[Any, Any]] = {}
        # How many times stop() and crash() were called: a repeat of polls
        # ends when it changes (see _poll).
        self._stops = 0
        # What the polls wait on for the next timed call instead of a
        # timeout (see echotwist._fast.alarm): made at the first poll that
        # needs one; False where this system has none.  None again after
        # shutdown, or while the system is short of descriptors for one.
        self._alarm: Alarm | None | Literal[False] = None
        self.addSystemEventTrigger("after", "shutdown", self.closeAlarm)

    def stop(self) -> None:
        """
        Stop the reactor (see C{IReactorCore.stop}), and end a repeat of
        polls under way (see L{_poll}): a signal handler may call it
        between two polls.
        """
        super().stop()
        self._stops += 1

    def crash(self) -> None:
        """
        Stop the reactor at once (see C{IReactorCore.crash}), and end a
        repeat of polls under way (see L{_poll}).
        """
        super().crash()
        self._stops += 1

    def removeReader(self, reader: IReadDescriptor) -> None:
        """
        Stop reading from C{reader}, and echoing it in this loop.
        """
        # Pausing, closing and losing a connection all come through here.
        # Twisted before 26 types fileno() as returning object.
        fd = reader.fileno()
        if fd == -1:
            # Closed before it was removed: its descriptor by the reader,
            # as Twisted's own removal finds it, so that no entry of its
            # outlives it (the loop trusts its plain echoes' entries).
            fd = next(
                (n for n, s in self._parts.selectables.items() if s is reader), -1
            )
        self._dropPlain(fd)  # type: ignore[arg-type, unused-ignore]
        self._bulkEchoes.pop(fd, None)  # type: ignore[call-overload, unused-ignore]
        self._loopEchoes.pop(fd, None)  # type: ignore[call-overload, unused-ignore]
        self._passes.pop(fd, None)  # type: ignore[call-overload, unused-ignore]
        super().removeReader(reader)

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll and handle the events; poll again at once while every event
        was an echo in this loop, until C{timeout}.  A timed call due in
        C{timeout} seconds is waited for by the alarm (see
        L{echotwist._fast.alarm}), armed only if it is not armed for then
        already, and the polls wait with no timeout.
        """
        if timeout is None:
            self._poll(-1, True)
            return
        if timeout > 0.0:
            alarm = self._alarm
            if alarm is None:
                alarm = self._makeAlarm()
            if alarm is not False:
                try:
                    alarm.wake(timeout)
                except OSError as e:
                    self._alarmFailed(alarm, e)
                else:
                    self._poll(-1, True)
                    return
        self._poll(timeout, True)

    def _alarmFailed(self, alarm: Alarm, error: OSError) -> None:
        """
        The alarm could not be armed (its descriptor closed under the loop,
        say): the polls wait with timeouts from now on.  Raised from
        L{doPoll}, the error would end every pass of the main loop that
        should wait before its poll: the loop would spin, logging it at
        every pass (tens of thousands a second), and poll only when a
        timed call is due.
        """
        log.error(
            "The loop's alarm failed ({error}): its polls wait with"
            " timeouts from now on",
            error=error,
        )
        self._alarm = False
        # Not closed: a timer of its own that is valid takes any deadline
        # it is given, so the descriptor is closed already (EBADF) or its
        # number another's now (EINVAL, not a timerfd), which closing
        # would close under its owner.
        alarm.abandon()

    def _makeAlarm(self) -> Alarm | Literal[False]:
        """
        Make the loop's alarm and add it to the epoll object, once; False
        where there can be none, and the polls wait with timeouts.  Short
        of descriptors or memory for one (see L{SHORT_OF}), this poll waits
        with a timeout and the next that needs the alarm tries again: a
        flood of connections at the descriptor limit when the first timed
        call came must not cost the loop its alarm for good.
        """
        try:
            alarm = makeAlarm()
        except OSError:
            return False
        if alarm is None:
            self._alarm = False
            return False
        try:
            self._parts.register(alarm.fd, EPOLLIN)
        except (OSError, ValueError) as e:
            # Refused (a closed epoll object, or one out of watches or
            # memory for now): polls with timeouts.
            alarm.close()
            if getattr(e, "errno", None) not in SHORT_OF:
                self._alarm = False
            return False
        self._alarm = alarm
        return alarm

    def closeAlarm(self) -> None:
        """
        Close the loop's alarm, if it made one (at shutdown; a reactor that
        runs again makes another).
        """
        alarm = self._alarm
        self._alarm = None
        if isinstance(alarm, Alarm):
            alarm.close()

    def _poll(self, timeout: float, again: bool) -> bool:
        """
        Poll and handle the events, the plain echo's here and the others'
        in L{_event}; with C{again}, poll again at once while every event
        was an echo in this loop (see the module docstring), until
        C{timeout} has passed, the reactor is stopped or a thread queued a
        call (the checks are for what a signal handler may have done
        meanwhile).  What the polls use is looked up once a call, not once
        a poll: on one busy connection every message is a poll.

        @param timeout: seconds to wait for events; -1 to wait until some
            come.
        @return: whether the last poll had events and every one was an
            echo in this loop.
        """
        parts = self._parts
        poll, selectables, stopped = parts.poll, parts.selectables, parts.justStopped
        plainEchoes, passes, write = self._plainEchoes, self._passes, self._plainWrite
        threadCalls, seconds = self.threadCallQueue, self.seconds
        buffer, view, spliceFrom = self._readBuffer, self._readView, SPLICE_FROM
        # The buffer's first outSize bytes.
        out, outSize = view[:0], 0
        deadline = seconds() + timeout if timeout > 0.0 else 0.0
        # Stops and crashes counted (see stop): cheaper to compare than
        # the reactor's own flag is to read, through the door, per poll.
        stops = self._stops
        if stopped(self):
            again = False
        while True:
            try:
                events = poll(timeout, len(selectables))
            except OSError as err:
                if err.errno == errno.EINTR:
                    return False
                raise
            if not events:
                return False
            allPlain = True
            for fd, event in events:
                try:
                    try:
                        echo = plainEchoes[fd]
                    except IndexError:
                        # Past the list's end: no plain echo had so high a
                        # descriptor (a UDP port or a TLS connection on a
                        # server without plain echoes above it).  Raised
                        # and caught at each of its events, an IndexError
                        # cost every datagram of a UDP-only server about
                        # 1,900 instructions (docs/performance.rst): the
                        # list reaches it from now on.
                        self._reach(fd)
                        echo = None
                    # An entry is the registered selectable's: removeReader
                    # drops it, whatever the descriptor's state.
                    if echo is not None and event == EPOLLIN:
                        # What tcp.Connection.doRead and Echo.dataReceived
                        # do, for a plain echo (see plainEcho), without a
                        # call: most events of a busy server are these.
                        sent: int | OSError | None
                        data: bytes | None
                        # A bound method's call is specialised; looking
                        # the method up on the file per call is not.
                        read = echo.loopRead
                        try:
                            size = read(buffer)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data, sent = None, None
                        else:
                            # Neither None (nothing there after all:
                            # EAGAIN) nor 0 (end of file), nor bulk.
                            if size and size < spliceFrom:
                                if size != outSize:
                                    # Messages come in a few sizes, mostly:
                                    # the last size's view serves again,
                                    # where a slice per send would cost a
                                    # slice and a view object.
                                    out, outSize = view[:size], size
                                try:
                                    sent = write(fd, out)
                                except OSError as e:
                                    sent = e
                                else:
                                    if sent == size:
                                        echo.bytesEchoed += size
                                        continue
                            elif size is None:
                                continue
                            else:
                                sent = None
                            # The protocol's, as bytes: the buffer is the
                            # next read's.
                            data = bytes(view[:size])
                        allPlain = False
                        self._finishPlain(fd, echo, data, sent)
                        continue
                    port = passes.get(fd)
                    if (
                        port is not None
                        and event == EPOLLIN
                        and port[0] is selectables.get(fd)
                    ):
                        # A UDP port's pass of reads, its echoes answered in
                        # it (see EchoPassPort.readPass): what _readPass
                        # does, without its call, since on a busy port
                        # nearly every pass is an event of its own.
                        try:
                            if not port[1](port[0]):
                                allPlain = False
                        except KeyboardInterrupt:
                            raise
                        except BaseException as e:
                            allPlain = False
                            self._failed(port[0], e)
                    elif not self._event(fd, event):
                        allPlain = False
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    allPlain = False
                    log.failure(
                        "Unhandled error in {selectable!r}",
                        selectable=selectables.get(fd),
                    )
            if not (allPlain and again) or self._stops != stops or threadCalls:
                return allPlain
            # Float constants: a float compared with a float is the
            # interpreter's specialised compare, with an int a call.
            if timeout > 0.0:
                timeout = deadline - seconds()
                if timeout <= 0.0:
                    return True
            elif timeout == 0:
                return True

    def _finishPlain(
        self,
        fd: int,
        echo: Echo,
        data: bytes | None,
        sent: int | OSError | None,
    ) -> None:
        """
        Finish a plain echo's read that L{_poll} could not end the plain
        way: the protocol's to finish (see L{finishRead}); it may pause,
        close or turn to bulk, so the connection goes back to the
        ordinary path.
        """
        self._plainEchoes[fd] = None
        transport = echo.transport
        try:
            why = finishRead(echo, data, sent)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            self._failed(transport, e)
            return
        if why:
            self._parts.disconnectSelectable(transport, why, True)

    def _event(self, fd: int, event: int) -> bool:
        """
        Handle an event of L{_poll} that is not a plain echo's read.

        @return: whether it was an echo in this loop (spliced, TLS or a
            port's pass of datagrams, every one answered), or nothing.
        """
        selectable = self._parts.selectables.get(fd)
        if selectable is None:
            alarm = self._alarm
            if isinstance(alarm, Alarm) and fd == alarm.fd:
                # A timed call is due: back to the main loop.
                alarm.clear()
                return False
            return True
        # Here, where the selectable is at hand: what raises past Twisted's
        # own handling (a connectionLost, as its loop lets it) is logged
        # naming it, though its disconnection took it out of the reactor.
        try:
            if event == EPOLLIN:
                bulk = self._bulkEchoes.get(fd)
                pipe = _SharedPipe.fds
                if bulk is not None and bulk[0] is selectable and pipe:
                    # What SplicingServer.doRead does for a bulk echo (see
                    # bulkEcho), without a call to it.
                    try:
                        if self._spliceEcho(fd, selectable, bulk[1], pipe):
                            return True
                    except KeyboardInterrupt:
                        raise
                    except BaseException as e:
                        # The pipe may hold its bytes: it goes too.
                        _SharedPipe.discard()
                        self._failed(selectable, e)
                    self._track(fd, selectable)
                    return False
                other = self._loopEchoes.get(fd)
                if other is not None and other[0] is selectable:
                    # A TLS echo's read (see echotwist._fast.tlsloop).
                    return self._loopEcho(fd, selectable, other)
                handler = self._handlers.get(type(selectable))
                if handler is not None and handler.readPass is not None:
                    # A UDP port's pass of reads, without the wrapper of
                    # doReadOrWrite; its echoes are answered in it (see
                    # EchoPassPort.readPass).  _poll calls the next ones.
                    self._passes[fd] = (selectable, handler.readPass)
                    return self._readPass(selectable, handler.readPass)
            self._parts.doReadOrWrite(selectable, fd, event)
            handler = self._handlers.get(type(selectable))
            if handler is not None:
                if handler.tracked:
                    self._track(fd, selectable)
                elif handler.loopEcho is not None:
                    self._trackLoopEcho(fd, selectable)
            return False
        except KeyboardInterrupt:
            raise
        except BaseException:
            log.failure("Unhandled error in {selectable!r}", selectable=selectable)
            return False

    def _failed(self, selectable: Any, e: BaseException) -> None:
        """
        What Twisted's own loop does when handling an event raised C{e}
        (called from the C{except} clause): logged, and the connection is
        lost.
        """
        log.failure("Unhandled error in {selectable!r}", selectable=selectable)
        self._parts.disconnectSelectable(selectable, e, True)

    def _loopEcho(self, fd: int, selectable: Any, entry: tuple[Any, ...]) -> bool:
        """
        Echo one read of a connection the loop echoes through its handler's
        C{loopEcho} (TLS, see L{echotwist._fast.tlsloop}).  A call more
        than the plain echo, which a TLS record's cryptography dwarfs.

        @return: whether the read was echoed whole in the loop.
        """
        try:
            why = entry[1](fd, entry)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            self._failed(selectable, e)
            return False
        if why is True:
            return True
        if why is False:
            # Twisted's code finished it: the connection may be anything
            # now; look again.
            self._trackLoopEcho(fd, selectable)
        else:
            self._parts.disconnectSelectable(selectable, why, True)
        return False

    def _readPass(self, selectable: Any, readPass: Any) -> bool:
        """
        Call a port's pass of reads (see L{echotwist._fast.LoopHandler}).

        @return: whether every datagram of the pass was answered in it.
        """
        try:
            return bool(readPass(selectable))
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            # As Twisted's doReadOrWrite has it.
            self._failed(selectable, e)
            return False

    def _track(self, fd: int, transport: SplicingServer) -> None:
        """
        After an ordinary read or write, say whether this loop echoes the
        connection's next read itself, plainly or by splicing, or leaves it
        to the transport.
        """
        found = plainEcho(transport)
        if found is not None:
            self._setPlain(fd, found)
            self._bulkEchoes.pop(fd, None)
            return
        self._dropPlain(fd)
        echo = bulkEcho(transport)
        if echo is None:
            self._bulkEchoes.pop(fd, None)
        else:
            self._bulkEchoes[fd] = (transport, echo)

    def _setPlain(self, fd: int, echo: Echo) -> None:
        """
        Echo C{fd}'s reads in this loop, with C{echo}'s C{loopRead} (see
        L{echotwist._fast.tcp.plainEcho}).
        """
        self._reach(fd)
        self._plainEchoes[fd] = echo

    def _reach(self, fd: int) -> None:
        """
        Make the list of plain echoes long enough to index C{fd} (an
        epoll event's descriptor, 0 or more), with None up to it: the list
        is never longer than the highest descriptor the loop saw, which the
        process's descriptor limit bounds.
        """
        entries = self._plainEchoes
        if fd >= len(entries):
            entries.extend([None] * (fd + 1 - len(entries)))

    def _dropPlain(self, fd: int) -> None:
        """
        No longer echo C{fd}'s reads in this loop, if it did.
        """
        if 0 <= fd < len(self._plainEchoes):
            self._plainEchoes[fd] = None

    def plainEchoes(self) -> dict[int, Echo]:
        """
        The connections whose reads this loop echoes itself, by descriptor:
        their L{Echo}s (for tests and a look from a debugger).
        """
        return {fd: e for fd, e in enumerate(self._plainEchoes) if e is not None}

    def _trackLoopEcho(self, fd: int, transport: Any) -> None:
        """
        After an ordinary read or write of a connection whose handler has
        a C{loopEcho} (or a read handed back), say whether this loop
        echoes its next read itself (see L{echotwist._fast.tlsloop}).
        """
        handler = self._handlers.get(type(transport))
        # Not if the connection is gone meanwhile.
        registered = self._parts.selectables.get(fd) is transport
        entry = (
            handler.loopEcho(transport)
            if registered and handler is not None and handler.loopEcho is not None
            else None
        )
        if entry is None:
            self._loopEchoes.pop(fd, None)
        else:
            self._loopEchoes[fd] = entry

    def _spliceEcho(
        self, fd: int, selectable: Any, echo: Echo, pipe: tuple[int, int]
    ) -> bool:
        """
        Splice one read of a bulk echo (see L{bulkEcho}) into the shared
        pipe and back out to the socket, as L{SplicingServer.doRead} would.

        @return: whether that was all: a whole bulk read echoed.  Otherwise
            the rest is done (a short send queued, the end of the
            connection handled, a plain read) and the connection is back on
            the ordinary path.
        """
        try:
            received = tcp.splice(
                fd, pipe[1], DIRECT_READ_SIZE, None, None, _SPLICE_FLAGS
            )
        except BlockingIOError:
            # Readable, yet nothing to splice: TCP urgent data (see
            # tcp._spliceRead).  A plain read steps over it.
            del self._bulkEchoes[fd]
            why = plainRead(selectable)
            if why:
                self._parts.disconnectSelectable(selectable, why, True)
            return False
        except OSError as e:
            del self._bulkEchoes[fd]
            if e.errno in (EINVAL, ENOSYS):
                # The transport's own read finds out, and says so.
                self._parts.doReadOrWrite(selectable, fd, EPOLLIN)
            else:
                self._parts.disconnectSelectable(selectable, CONNECTION_LOST, True)
            return False
        if not received:
            del self._bulkEchoes[fd]
            self._parts.disconnectSelectable(selectable, CONNECTION_DONE, True)
            return False
        try:
            sent = tcp.splice(pipe[0], fd, received, None, None, _SPLICE_FLAGS)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            # ENOBUFS is a full buffer, as Twisted's writes take it;
            # anything else, the client is gone.
            sent = 0 if e.errno == ENOBUFS else -1
        if sent == received and received >= SPLICE_FROM:
            echo.bytesEchoed += received
            return True
        del self._bulkEchoes[fd]
        why = finishSplice(echo, selectable, pipe, received, sent)
        if why:
            self._parts.disconnectSelectable(selectable, why, True)
        return False

    doIteration = doPoll
