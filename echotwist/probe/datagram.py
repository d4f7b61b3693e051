# -*- test-case-name: tests.test_probe_datagram -*-
"""
Probes over UDP: one datagram every C{--interval} (latency), or C{--rate}
datagrams a second (C{--bulk}), each carrying its sequence number and send
time, accounted for by a L{DatagramBook}.

The socket is connected to the target, so only the target's datagrams
reach it, and an ICMP "port unreachable" comes back as a refusal.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IHostResolution, IResolutionReceiver
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from echotwist.probe.payload import (
    ANSWERED,
    OUTSTANDING,
    DatagramBook,
    Payloads,
    ProbeFailure,
)
from echotwist.probe.report import Sample, probeLine
from echotwist.probe.run import Run

#: How often a rate run sends, in seconds: a tenth of a second's datagrams
#: at a time would be a burst; a hundredth is smooth enough.
_RATE_TICK = 0.01


_REFUSED = "refused (ICMP port unreachable: nothing listens there)"


class _Datagrams(DatagramProtocol):
    def __init__(self, run: DatagramRun) -> None:
        self.run = run

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.run.received(datagram, self.run.now())

    def connectionRefused(self) -> None:
        self.run.fail(_REFUSED)

    def stopProtocol(self) -> None:
        # An ICMP error makes the socket report an error event, and the
        # epoll reactor then closes the port as a lost connection, without
        # connectionRefused: a port that stops while the run goes on was
        # refused.
        self.run.fail(_REFUSED)


@implementer(IResolutionReceiver)
class _FirstAddress:
    """
    Hands a L{DatagramRun} the address to probe of those a name resolves
    to: its first IPv4 address, or without one its first IPv6 address.
    """

    def __init__(self, run: DatagramRun) -> None:
        self.run = run
        self.addresses: dict[type, str] = {}

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        assert isinstance(address, (IPv4Address, IPv6Address))
        self.addresses.setdefault(type(address), address.host)

    def resolutionComplete(self) -> None:
        address = self.addresses.get(IPv4Address, self.addresses.get(IPv6Address))
        if address is None:
            self.run._unresolved()
        else:
            self.run._open(address)


class DatagramRun(Run):
    """
    A UDP run: latency (one datagram every C{interval}; at an interval of
    0, the next as soon as the last is answered or lost) or, with
    C{rate}, a stream of that many datagrams a second.
    """

    def __init__(
        self,
        *args: Any,
        payloads: Payloads,
        count: int,
        interval: float,
        timeout: float,
        duration: float | None,
        rate: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if rate is not None:
            self.mode = self.results.mode = "bulk"
        self.payloads = payloads
        self.book = DatagramBook(payloads, timeout)
        self.count = count
        self.interval = interval
        self.timeout = timeout
        self.duration = duration
        self.rate = rate
        self.port: Any = None
        self.sending = True
        self.lastSecond = 0
        self.lastCounts = (0, 0)

    def begin(self) -> None:
        """
        Resolve the host when it is a name, then open the socket.

        The name goes through the reactor's C{nameResolver} (getaddrinfo),
        which knows both families: C{reactor.resolve} knows IPv4 only, and
        took a name with only IPv6 addresses for one that does not
        resolve.  Its IPv4 address is still preferred where it has one:
        UDP has no connection to try each address with, and a name of
        both families (Debian's C{localhost}: ::1 first) would otherwise
        be probed over IPv6 where a server listens on IPv4 only, as a
        plain C{--udp 5000} does.
        """
        host = self.target.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            self.reactor.nameResolver.resolveHostName(
                _FirstAddress(self),
                host,
                addressTypes=[IPv4Address, IPv6Address],
                transportSemantics="UDP",
            )
        else:
            self._open(host)

    def _unresolved(self) -> None:
        self.fail("the host name does not resolve")

    def _open(self, address: str) -> None:
        if self.finished:
            return
        protocol = _Datagrams(self)
        interface = "::" if ":" in address else ""
        try:
            self.port = self.reactor.listenUDP(
                0, protocol, interface=interface, maxPacketSize=65536
            )
            self.port.connect(address, self.target.port)
        except Exception as e:
            self.fail(f"cannot send there ({e})")
            return
        if self.duration is not None:
            self.later(self.duration, self.endSending)
        self.sweeper = self.later(self._sweepEvery(), self.sweep)
        if self.rate is not None:
            self.later(1.0, self.progress)
            self.tick()
        else:
            self.sendOne()

    def _sweepEvery(self) -> float:
        return min(0.1, max(0.001, self.timeout / 10))

    def sendOne(self) -> None:
        """
        Send the next datagram, its send time taken right before it leaves.
        """
        if not self.sending:
            # The one already scheduled when --duration or Ctrl-C ended
            # the sending.
            return
        sentAt = self.now()
        datagram = self.book.next(sentAt)
        self.port.write(datagram)
        if self.finished:
            # The write found the target refusing (ICMP), and ended the run.
            return
        seq = self.book.sent - 1
        self.results.samples.append(Sample(seq, sentAt - self.started, len(datagram)))
        if self.count and self.book.sent >= self.count:
            self.endSending()
        elif self.rate is None and self.interval > 0:
            self.later(sentAt + self.interval - self.now(), self.sendOne)

    def tick(self) -> None:
        """
        Send what the rate asks for up to now, and come back a tick later.
        """
        if not self.sending or self.finished:
            return
        assert self.rate is not None
        elapsed = self.now() - self.started
        if self.duration is not None and elapsed >= self.duration:
            # The duration's own timer may come after this tick.
            self.endSending()
            return
        due = math.floor(self.rate * elapsed) + 1
        # After a stall, catch up by at most a few ticks' worth: a burst is
        # not the rate asked for.
        burst = max(1, math.ceil(self.rate * _RATE_TICK * 5))
        for _ in range(min(due - self.book.sent, burst)):
            if not self.sending:
                break
            self.sendOne()
        if self.sending:
            self.later(_RATE_TICK, self.tick)

    def progress(self) -> None:
        """
        Print the last second's counts (C{--bulk}).
        """
        if self.finished:
            return
        second = int(self.now() - self.started)
        sent, answered = self.book.sent, self.book.answered
        self.say(
            f"{second:4d} s: {sent - self.lastCounts[0]} sent,"
            f" {answered - self.lastCounts[1]} answered,"
            f" {self.book.lost} lost so far, {self.book.duplicates} duplicates,"
            f" {self.book.reordered} reordered"
        )
        self.lastCounts = (sent, answered)
        self.later(1.0, self.progress)

    def stop(self) -> None:
        """
        Ctrl-C: send no more, and end once every datagram sent is answered
        or lost (up to C{--timeout}).
        """
        if self.port is None:
            self.finish()
        else:
            self.endSending()

    def endSending(self) -> None:
        """
        Send no more; the run ends once every datagram's fate is known.
        """
        self.sending = False
        self.maybeDone()

    def maybeDone(self) -> None:
        """
        End the run when nothing more will be sent and nothing is awaited.
        """
        if not self.sending and self.book.outstanding() == 0:
            self.finish()

    def received(self, datagram: bytes, arrived: float) -> None:
        """
        Account for a datagram that came back at C{arrived}.
        """
        if self.finished:
            return
        try:
            outcome = self.book.received(datagram, arrived)
        except ProbeFailure as e:
            self.fail(str(e))
            return
        if outcome is None:
            self.results.duplicates = self.book.duplicates
            return
        seq, state = outcome
        sample = self.results.samples[seq]
        if state == ANSWERED:
            sample.rtt = self.book.rtt[seq]
        else:
            sample.status = "late"
        self.results.late = self.book.late
        self.results.reordered = self.book.reordered
        if self.rate is None:
            self.say(probeLine(self.target.text, sample))
            if self.interval == 0 and self.sending and state == ANSWERED:
                self.sendOne()
        self.maybeDone()

    def sweep(self) -> None:
        """
        Count as lost what is past its timeout, and look again soon.
        """
        for seq in self.book.expire(self.now()):
            sample = self.results.samples[seq]
            sample.status = "lost"
            if self.rate is None:
                self.say(
                    probeLine(self.target.text, sample)
                    + f" (no answer within {self.timeout:g} s)"
                )
        if self.rate is None and self.interval == 0 and self.sending:
            if self.book.outstanding() == 0:
                self.sendOne()
        self.maybeDone()
        if not self.finished:
            self.sweeper = self.later(self._sweepEvery(), self.sweep)

    def finish(self) -> None:
        """
        Close the books (per-second loss, a target that never answered),
        then end the run.
        """
        if self.finished:
            return
        # Ended by an error: a datagram still within its timeout was sent
        # and not answered, and counts as lost.
        for sample in self.results.samples:
            if self.book.state[sample.seq] == OUTSTANDING:
                sample.status = "lost"
        self.results.duplicates = self.book.duplicates
        self.results.reordered = self.book.reordered
        self.results.late = self.book.late
        if self.rate is not None:
            lostPerSecond: dict[int, int] = {}
            for sample in self.results.samples:
                if sample.status != "ok":
                    second = int(sample.at)
                    lostPerSecond[second] = lostPerSecond.get(second, 0) + 1
            self.results.bulk = {
                "rate": self.rate,
                "lost_per_second": [
                    lostPerSecond.get(s, 0)
                    for s in range(
                        int(self.results.samples[-1].at) + 1
                        if self.results.samples
                        else 0
                    )
                ],
            }
        if (
            self.results.error is None
            and self.results.samples
            and not any(s.status in ("ok", "late") for s in self.results.samples)
        ):
            self.results.error = (
                f"{self.target.text}: no answer to any of"
                f" {len(self.results.samples)} datagrams"
            )
        super().finish()

    def close(self) -> None:
        """
        Stop listening on the socket.
        """
        if self.port is not None:
            self.port.stopListening()
            self.port = None
