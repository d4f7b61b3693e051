"""
The worker's end of supervision (L{echotwist.worker}): its configuration
from a pipe, and its heartbeat.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from echotwist.settings import Settings


class WorkerControlTests(SynchronousTestCase):
    """
    The worker's end: its configuration from a pipe, and its heartbeat.
    """

    def test_configurationFromThePipe(self) -> None:
        from echotwist.worker import readConfiguration

        read, write = os.pipe()
        self.addCleanup(os.close, read)
        config = {"worker": 3, "settings": Settings().toJSON()}
        # What follows the line on the pipe is the control conversation's.
        os.write(write, json.dumps(config).encode() + b"\nstats\n")
        os.close(write)
        self.assertEqual(readConfiguration(read), (config, b"stats\n"))

    def test_noConfiguration(self) -> None:
        from echotwist.worker import readConfiguration

        read, write = os.pipe()
        self.addCleanup(os.close, read)
        os.write(write, b'{"worker": ')
        os.close(write)
        error = self.assertRaises(SystemExit, readConfiguration, read)
        self.assertIn("no configuration on standard input", str(error))

    def test_heartbeats(self) -> None:
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from echotwist.connections import EchoFactory
        from echotwist.datagram import DatagramPolicy
        from echotwist.worker import _Control, heartbeatInterval

        clock = Clock()

        class Service:
            factory = EchoFactory(clock)
            datagramPolicy = DatagramPolicy(rate=0, clock=clock)

        self.assertEqual(heartbeatInterval(Settings(workerTimeout=2)), 0.5)
        self.assertEqual(heartbeatInterval(Settings(workerTimeout=0)), 1.0)
        self.assertEqual(heartbeatInterval(Settings()), 1.0)
        control = _Control(Service(), clock, 0.5)  # type: ignore[arg-type]
        transport = StringTransport()
        control.makeConnection(transport)
        clock.advance(0.5)
        clock.advance(0.5)
        lines = transport.value().splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(json.loads(lines[0])["heartbeat"]["accepted"], 0)
        transport.clear()
        control.dataReceived(b"stats\n")
        self.assertEqual(json.loads(transport.value())["accepted"], 0)
        control.connectionLost()
        self.assertEqual(clock.getDelayedCalls(), [])


class _QueuedPort:
    """
    What L{AcceptInTurn} uses of a listening C{tcp.Port}, over a queue of
    connects: each C{doRead} accepts up to C{numberAccepts} of them, as
    Twisted's does, and gives each to C{factory} as a connection.
    """

    def __init__(self, factory: object, queued: list[str]) -> None:
        self.factory = factory
        self.queued = queued
        self.numberAccepts = 100
        self.connected = True
        self.disconnecting = False
        self.reading = True
        self.passes: list[int] = []

    def doRead(self) -> None:
        from tests.test_connections import connectFrom

        taken = self.queued[: self.numberAccepts]
        del self.queued[: len(taken)]
        self.passes.append(len(taken))
        for host in taken:
            connectFrom(self.factory, host)  # type: ignore[arg-type]
        # Twisted's pace: 20 more after a pass that took all it asked for.
        if len(taken) == self.numberAccepts:
            self.numberAccepts += 20
        else:
            self.numberAccepts = max(1, len(taken))

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class AcceptInTurnTests(SynchronousTestCase):
    """
    A worker accepts no more of a burst than it has room for, leaves the
    rest to its siblings for a grace period, then takes what is left.
    """

    def setUp(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from echotwist.connections import EchoFactory
        from echotwist.worker import AcceptInTurn

        self.clock = MemoryReactorClock()
        self.factory = EchoFactory(self.clock, maxConnections=2)
        self.turns = AcceptInTurn(self.factory, self.clock, grace=0.25)
        self.port = _QueuedPort(self.factory, [f"192.0.2.{n}" for n in range(1, 6)])
        self.turns.watch(self.port)

    def test_aPassTakesNoMoreThanTheRoomLeft(self) -> None:
        self.port.doRead()
        self.assertEqual(self.port.passes, [2])
        self.assertEqual(len(self.factory.connections), 2)
        self.assertEqual(len(self.port.queued), 3)
        self.assertEqual(self.factory.refused, {})
        self.assertFalse(self.port.reading)

    def test_twistedsPaceWithRoomToSpare(self) -> None:
        """
        With room for more than Twisted's own batch, a pass takes Twisted's
        batch: a server with room for 1000 does not accept 1000 at once.
        """
        self.factory.admission.maxConnections = 1000
        self.port.queued[:] = [f"192.0.2.{n}" for n in range(1, 251)]
        self.port.numberAccepts = 100
        self.port.doRead()
        self.assertEqual(self.port.passes, [100])

    def test_whatSiblingsLeftIsTakenAfterTheGrace(self) -> None:
        self.port.doRead()
        self.clock.advance(0.2)
        self.assertEqual(len(self.port.queued), 3)
        self.clock.advance(0.05)
        # Twisted's own batch: each is refused, as a full server refuses.
        self.assertEqual(self.port.queued, [])
        self.assertEqual(self.factory.refused, {"too many connections": 3})
        self.assertFalse(self.port.reading)
        # Still full: it looks again after another grace period.
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_aFloodIsTakenPassAfterPass(self) -> None:
        """
        Connects queued deeper than a pass at a full worker are taken pass
        after pass, each on the next iteration, while a pass takes all it
        asked for: not 100 each grace period, which left a flood waiting in
        the kernel's queue for seconds.  A shorter pass (what a sibling
        with room leaves, draining the queue) waits the grace again.
        """
        self.port.doRead()
        self.port.queued[:] = [f"198.51.100.{n}" for n in range(1, 251)]
        self.clock.advance(0.2)
        self.assertEqual(self.port.passes, [2])
        # The clock runs each call of the next iteration in this advance.
        self.clock.advance(0.05)
        self.assertEqual(self.port.passes, [2, 100, 100, 50])
        self.assertEqual(self.factory.refused, {"too many connections": 250})
        self.port.queued[:] = ["203.0.113.1"]
        self.clock.advance(0.2)
        self.assertEqual(self.port.passes, [2, 100, 100, 50])
        self.clock.advance(0.05)
        self.assertEqual(self.port.passes, [2, 100, 100, 50, 1])
        self.assertFalse(self.port.reading)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_roomAgainReadsAgain(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.port.doRead()
        next(iter(self.factory.connections)).connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.port.reading)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.port.doRead()
        self.assertEqual(self.port.passes, [2, 1])
        self.assertEqual(self.factory.refused, {})

    def test_aStoppedPortIsLeftAlone(self) -> None:
        self.port.doRead()
        self.port.connected = False
        self.clock.advance(0.25)
        self.assertEqual(len(self.port.queued), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])
