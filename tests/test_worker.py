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
