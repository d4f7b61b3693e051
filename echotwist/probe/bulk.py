# -*- test-case-name: tests.test_probe_bulk -*-
"""
Throughput over a stream (C{--bulk}): C{--parallel} connections each send
without pause and read the echo at the same time, every byte checked,
for C{--duration} seconds; then they stop sending and wait (up to
C{--timeout}) for what is still in flight.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHandshakeListener, IPullProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from echotwist.probe.payload import Payloads, firstDifference
from echotwist.probe.run import Run, describeFailure

#: Bytes handed to the transport each time it asks for more.
CHUNK = 65536


@implementer(IPullProducer, IHandshakeListener)
class _BulkProtocol(Protocol):
    """
    One connection of a throughput run: a pull producer of the block,
    repeated, on its own transport, and a checker of what comes back.
    """

    def __init__(self, run: StreamBulk) -> None:
        self.run = run
        self.sent = 0
        self.received = 0
        self.producing = False
        self.closing = False

    def connectionMade(self) -> None:
        if self.run.target.kind != "tls":
            self.run.connected(self)

    def handshakeCompleted(self) -> None:
        if not self.run.peerRefused(self.transport):
            self.run.connected(self)

    def startSending(self) -> None:
        self.producing = True
        self.transport.registerProducer(self, False)  # type: ignore[union-attr]

    def stopSending(self) -> None:
        if self.producing:
            self.producing = False
            self.transport.unregisterProducer()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        if not self.producing:
            return
        self.transport.write(self.run.chunk)  # type: ignore[union-attr]
        self.sent += CHUNK

    def stopProducing(self) -> None:
        self.producing = False

    def dataReceived(self, data: bytes) -> None:
        start = self.received % CHUNK
        doubled = self.run.doubled
        position = 0
        while position < len(data):
            piece = data[position : position + CHUNK - start]
            expected = doubled[start : start + len(piece)]
            if piece != expected:
                offset = firstDifference(expected, piece)
                assert offset is not None
                self.run.fail(
                    "the echo differs from what was sent at byte"
                    f" {self.received + position + offset} of a connection"
                )
                return
            position += len(piece)
            start = 0
        self.received += len(data)
        if self.received > self.sent:
            self.run.fail("answered more bytes than were sent")
            return
        self.run.receivedBytes(len(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.run.disconnected(self, reason)


class StreamBulk(Run):
    """
    A throughput run over a stream endpoint.
    """

    mode = "bulk"

    def __init__(
        self,
        *args: Any,
        endpoint: Any,
        payloads: Payloads,
        parallel: int,
        duration: float,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.endpoint = endpoint
        self.chunk = payloads.block[:CHUNK]
        self.doubled = self.chunk * 2
        self.parallel = parallel
        self.duration = duration
        self.timeout = timeout
        self.protocols: list[_BulkProtocol] = []
        self.ready = 0
        self.streaming = False
        self.draining = False
        self.total = 0
        self.lastTotal = 0
        self.sendingStarted = 0.0
        self.connectStarted = 0.0

    def begin(self) -> None:
        """
        Open the connections; the set-up must end within the timeout.
        """
        self.connectStarted = self.now()
        self.setUpTimer = self.later(self.timeout, self._setUpTimedOut)
        factory = Factory.forProtocol(lambda: _BulkProtocol(self))
        for _ in range(self.parallel):
            self.endpoint.connect(factory).addErrback(self._connectFailed)

    def _setUpTimedOut(self) -> None:
        self.fail(f"no connection within {self.timeout:g} s")

    def _connectFailed(self, reason: Failure) -> None:
        self.fail(describeFailure(reason))

    def connected(self, protocol: _BulkProtocol) -> None:
        """
        A connection is ready; when all are, start streaming on each.
        """
        if self.finished:
            protocol.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.protocols.append(protocol)
        if len(self.protocols) < self.parallel:
            return
        self.setUpTimer.cancel()
        self.streaming = True
        self.sendingStarted = self.now()
        self.say(
            f"streaming to {self.target.text} over {self.parallel} connection(s)"
            f" for {self.duration:g} s"
        )
        for p in self.protocols:
            p.startSending()
        self.later(self.duration, self.endSending)
        self.later(1.0, self.progress)

    def inFlight(self) -> int:
        """
        Bytes sent and not yet back, over every connection.
        """
        return sum(p.sent - p.received for p in self.protocols)

    def progress(self) -> None:
        """
        Print the last second's rate received back, and what is in flight.
        """
        if self.finished or self.draining:
            return
        elapsed = self.now() - self.sendingStarted
        rate = (self.total - self.lastTotal) / 1e6
        self.lastTotal = self.total
        self.say(
            f"{elapsed:6.1f} s: {rate:.3f} MB/s received back,"
            f" {self.inFlight()} bytes in flight"
        )
        self.later(1.0, self.progress)

    def receivedBytes(self, count: int) -> None:
        """
        Count C{count} bytes back; end the drain when nothing is in flight.
        """
        self.total += count
        if self.draining and self.inFlight() == 0:
            self.finish()

    def endSending(self) -> None:
        """
        The duration is over: stop sending, and wait (bounded) for the rest.
        """
        self.draining = True
        for p in self.protocols:
            p.stopSending()
        if self.inFlight() == 0:
            self.finish()
        else:
            self.later(self.timeout, self._drainTimedOut)

    def _drainTimedOut(self) -> None:
        """
        Sending stopped C{--timeout} ago and bytes are still out: they
        never came back (a discard service, a server that stopped
        reading), and that is an error, not a throughput figure.
        """
        sent = sum(p.sent for p in self.protocols)
        missing = self.inFlight()
        what = (
            f"none of the {sent} bytes sent came back"
            if missing == sent
            else f"{missing} of the {sent} bytes sent never came back"
        )
        self.fail(f"{what} within {self.timeout:g} s after sending stopped")

    def stop(self) -> None:
        """
        Ctrl-C: stop sending and wait, as at the end of C{--duration}, for
        what is in flight (up to C{--timeout}).  Already waiting (the
        duration is over), the wait goes on: ending it here would take the
        bytes that never came back for a clean run.  Still connecting, the
        run ends at once, with nothing sent.
        """
        if self.draining:
            return
        if self.streaming:
            self.endSending()
        else:
            self.finish()

    def disconnected(self, protocol: _BulkProtocol, reason: Failure) -> None:
        """
        A connection ended: an error unless the run closed it.
        """
        if protocol.closing or self.finished:
            return
        self.fail(
            f"{describeFailure(reason)} with {protocol.sent - protocol.received}"
            " bytes in flight"
        )

    def finish(self) -> None:
        """
        Record the throughput figures, then end the run.
        """
        if self.finished:
            return
        # Until the last byte came back (or the drain gave up): bytes
        # still in flight at the end count against the rate.
        seconds = self.now() - (self.sendingStarted or self.now())
        sent = sum(p.sent for p in self.protocols)
        self.results.bulk = {
            "parallel": self.parallel,
            "seconds": round(seconds, 6),
            "sent_bytes": sent,
            "received_bytes": self.total,
            "in_flight_bytes": sent - self.total,
            "received_mb_s": round(self.total / 1e6 / seconds, 6)
            if seconds > 0
            else 0.0,
        }
        super().finish()

    def close(self) -> None:
        """
        Stop sending and close every connection (abort it after an error:
        bytes a peer never reads would hold a closing connection open).
        """
        for p in self.protocols:
            p.closing = True
            if p.transport is not None:
                p.stopSending()
                if self.results.error is None:
                    p.transport.loseConnection()
                else:
                    p.transport.abortConnection()  # type: ignore[attr-defined]
