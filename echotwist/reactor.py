# -*- test-case-name: tests.test_reactor -*-
"""
An epoll reactor without a logging context per event, for busy echo
servers: C{twistd --reactor echotwist -n echo ...}.

Twisted's epoll reactor runs every read and write inside
C{log.callWithLogger}, which asks the selectable for its log prefix and
pushes a context holding it, only so that legacy C{log.msg} calls made
during the event carry a "system" of that prefix.  echotwist logs through
C{twisted.logger} with its own namespaces and fields, so at tens of
thousands of events a second that context is pure cost.  This reactor is
Twisted's epoll reactor with that one wrapper taken out; it keeps the
wrapper's other duty, which is to log an exception from an event and carry
on.  Legacy log lines written during an event lose their per-connection
"system" prefix (they show "-"); nothing else changes.  The default reactor
stays Twisted's own.
"""

from __future__ import annotations

import errno

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.logger import Logger

__all__ = ["EchotwistEPollReactor", "install"]

log = Logger()


class EchotwistEPollReactor(EPollReactor):
    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1  # wait indefinitely
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        doReadOrWrite = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                doReadOrWrite(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.failure("Unhandled error in {selectable!r}", selectable=selectable)

    doIteration = doPoll


def install() -> None:
    """
    Install the reactor (what C{twistd --reactor echotwist} calls).
    """
    installReactor(EchotwistEPollReactor())
