# -*- test-case-name: tests.test_probe_stream -*-
"""
Latency over a stream (TCP, TLS, UNIX): one probe at a time, over one
connection or a new connection for each probe, every byte checked.

A stream cannot lose a probe: an answer that does not come within
C{--timeout}, a connection closed or reset while a probe is out, and bytes
that differ from what was sent all end the run with an error.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IHandshakeListener, ISystemHandle
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from echotwist.probe.payload import Payloads, firstDifference
from echotwist.probe.report import Sample, probeLine
from echotwist.probe.run import Run, describeFailure


@implementer(IHandshakeListener)
class _LatencyProtocol(Protocol):
    """
    One connection of a latency run: sends a probe when told and checks
    what comes back as it arrives.
    """

    def __init__(self, run: StreamLatency) -> None:
        self.run = run
        self.expected = b""
        self.received = 0
        self.closing = False
        self.socket: socket.socket | None = None

    def connectionMade(self) -> None:
        if self.run.target.kind == "tls":
            # Probes start once the handshake is done: its round trips are
            # the connection's set-up, not the first probe's.
            return
        if ISystemHandle.providedBy(self.transport):
            handle = self.transport.getHandle()
            if isinstance(handle, socket.socket):
                self.socket = handle
        self.run.connected(self)

    def handshakeCompleted(self) -> None:
        if not self.run.peerRefused(self.transport):
            self.run.connected(self)

    def send(self, payload: bytes, now: Callable[[], float]) -> float:
        """
        Send C{payload}; the time it left.

        Twisted's C{transport.write} only queues: the bytes leave on the
        reactor's next pass, and the round trip would include that pass.
        A probe is sent only when the previous one has come back whole,
        so nothing is ever queued in the transport here, and sending on
        the socket (L{ISystemHandle.getHandle}) keeps the order; what the
        socket does not take goes through the transport after it.  (TLS
        writes through the transport: its socket carries records.)
        """
        self.expected = payload
        self.received = 0
        sentAt = now()
        if self.socket is None:
            self.transport.write(payload)  # type: ignore[union-attr]
            return sentAt
        try:
            sent = self.socket.send(payload)
        except OSError:
            # A full buffer or a broken connection: the transport finds
            # out which, and says so through connectionLost.
            sent = 0
        if sent < len(payload):
            self.transport.write(payload[sent:])  # type: ignore[union-attr]
        return sentAt

    def dataReceived(self, data: bytes) -> None:
        arrived = self.run.now()
        end = self.received + len(data)
        expected = self.expected[self.received : end]
        if data != expected:
            offset = firstDifference(expected, data)
            assert offset is not None
            if offset >= len(expected):
                self.run.fail(
                    f"answered {end - len(self.expected)} bytes more than"
                    f" probe {self.run.seq} sent"
                )
            else:
                self.run.fail(
                    f"answer to probe {self.run.seq} differs from what was"
                    f" sent at byte {self.received + offset}"
                    f" (sent 0x{expected[offset]:02x}, got 0x{data[offset]:02x})"
                )
            return
        self.received = end
        if end == len(self.expected):
            self.expected = b""
            self.run.answered(arrived)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.run.disconnected(self, reason)


class StreamLatency(Run):
    """
    A latency run over a stream endpoint.
    """

    def __init__(
        self,
        *args: Any,
        endpoint: Any,
        payloads: Payloads,
        count: int,
        interval: float,
        timeout: float,
        duration: float | None,
        connectEach: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.endpoint = endpoint
        self.payloads = payloads
        self.count = count
        self.interval = interval
        self.timeout = timeout
        self.duration = duration
        self.connectEach = connectEach
        self.protocol: _LatencyProtocol | None = None
        self.seq = -1
        self.sample: Sample | None = None
        self.sentAt = 0.0
        self.connectStarted = 0.0
        self.connectTime: float | None = None
        self.answerTimer: Any = None
        self.setUpTimer: Any = None
        self.stopping = False

    def begin(self) -> None:
        """
        Bound the run by its duration, and connect.
        """
        if self.duration is not None:
            self.later(self.duration, self.stop)
        self.connect()

    def connect(self) -> None:
        """
        Open a connection; its set-up must end within the timeout.
        """
        self.connectStarted = self.now()
        self.connectTime = None
        factory = Factory.forProtocol(lambda: _LatencyProtocol(self))
        # The endpoint bounds TCP's connect; this bounds the rest of the
        # set-up (a TLS handshake with a peer that never answers).
        timer = self.later(self.timeout, self._setUpTimedOut)
        self.setUpTimer = timer
        d = self.endpoint.connect(factory)
        d.addErrback(self._connectFailed)

    def _setUpTimedOut(self) -> None:
        self.fail(f"no connection within {self.timeout:g} s")

    def _connectFailed(self, reason: Failure) -> None:
        self.fail(describeFailure(reason))

    def connected(self, protocol: _LatencyProtocol) -> None:
        """
        The connection is ready (TLS: handshake done): send a probe.
        """
        if self.finished:
            protocol.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.connectTime = self.now() - self.connectStarted
        if self.setUpTimer.active():
            self.setUpTimer.cancel()
        self.protocol = protocol
        self.sendProbe()

    def sendProbe(self) -> None:
        """
        Send the next probe.
        """
        assert self.protocol is not None
        self.seq += 1
        payload = self.payloads.stream(self.seq)
        self.sentAt = self.protocol.send(payload, self.now)
        self.sample = Sample(self.seq, self.sentAt - self.started, len(payload))
        if self.connectTime is not None:
            self.sample.connect = self.connectTime
            self.connectTime = None
        if self.answerTimer is None or not self.answerTimer.active():
            self.answerTimer = self.later(self.timeout, self._watch)

    def _watch(self) -> None:
        """
        The answer timeout.  One timer watches every probe, and is moved
        only when it fires early: a timer made and cancelled for each
        probe would cost a flood its speed, and the round trip its
        accuracy.
        """
        waiting = self.protocol is not None and bool(self.protocol.expected)
        if not waiting:
            return
        due = self.sentAt + self.timeout - self.now()
        if due > 0:
            self.answerTimer = self.later(due, self._watch)
            return
        assert self.protocol is not None
        self.fail(
            f"no answer to probe {self.seq} within {self.timeout:g} s"
            f" ({self.protocol.received} of {len(self.protocol.expected)}"
            " bytes back)"
        )

    def answered(self, arrived: float) -> None:
        """
        The probe came back whole at C{arrived}: record it, and send the
        next when due.
        """
        assert self.sample is not None and self.protocol is not None
        self.sample.rtt = arrived - self.sentAt
        self.results.samples.append(self.sample)
        self.say(probeLine(self.target.text, self.sample))
        self.sample = None
        if self.stopping or (self.count and len(self.results.samples) >= self.count):
            self.finish()
            return
        due = self.sentAt + self.interval - self.now()
        if self.connectEach:
            self.protocol.closing = True
            self.protocol.transport.loseConnection()  # type: ignore[union-attr]
            self.protocol = None
            self.later(due, self.connect)
        elif self.interval == 0:
            self.sendProbe()
        else:
            self.later(due, self.sendProbe)

    def stop(self) -> None:
        """
        Ctrl-C or the end of C{--duration}: send no more, but let a probe
        that is out come back first (or fail, at its C{--timeout}).
        """
        if self.protocol is not None and self.protocol.expected:
            self.stopping = True
        else:
            self.finish()

    def finish(self) -> None:
        """
        Count a probe that was sent and never came back (the run failed
        on it), then end the run.
        """
        if not self.finished and self.sample is not None:
            self.sample.status = "lost"
            self.results.samples.append(self.sample)
            self.sample = None
        super().finish()

    def disconnected(self, protocol: _LatencyProtocol, reason: Failure) -> None:
        """
        A connection ended: an error unless the run closed it.
        """
        if protocol.closing or self.finished:
            return
        if protocol is not self.protocol:
            # Lost before it was ever ready: a TLS handshake that failed.
            self.fail(describeFailure(reason))
            return
        if protocol.expected:
            self.fail(
                f"{describeFailure(reason)} after {protocol.received} of"
                f" {len(protocol.expected)} bytes of probe {self.seq} came back"
            )
        else:
            self.fail(f"{describeFailure(reason)} between probes")

    def close(self) -> None:
        """
        Close the connection (abort it after an error).
        """
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.closing = True
            if self.results.error is None:
                self.protocol.transport.loseConnection()
            else:
                self.protocol.transport.abortConnection()  # type: ignore[attr-defined]
