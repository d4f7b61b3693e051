"""
echotwist's reactor: it polls like Twisted's epoll reactor, survives an
exception from an event, and serves the command as typed (C{twistd -n echo},
C{twist echo}, their workers), unless the user names another reactor.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import replace
from select import EPOLLIN

from twisted.internet.abstract import FileDescriptor
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from echotwist._fast.udp import EchoPassPort
from echotwist.datagram import LOOP_TOLERANCE, DatagramEcho, DatagramPolicy
from echotwist.reactor import EchotwistEPollReactor
from tests._clients import echoOnce, exchange
from tests._twistd import (
    LOOPBACK,
    SERVING_ON_ECHOTWIST,
    SERVING_ON_EPOLL,
    WAIT,
    Server,
    ServerTestCase,
    command,
)
from tests.test_metrics import scrape


class _Readable(FileDescriptor):
    def __init__(
        self, reactor: EchotwistEPollReactor, sock: socket.socket, fail: bool
    ) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.fail = fail
        self.reads = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        self.reads += 1
        self.sock.recv(100)
        if self.fail:
            raise RuntimeError("a bug in a protocol")

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)  # type: ignore[arg-type]
        if self.fail:
            raise RuntimeError("and a bug in its connectionLost")


class PollTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = EchotwistEPollReactor()
        self.addCleanup(self.reactor._poller.close)

    def readable(self, fail: bool) -> _Readable:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        theirs.sendall(b"x")
        selectable = _Readable(self.reactor, ours, fail)
        self.reactor.addReader(selectable)
        self.addCleanup(lambda: self.reactor._selectables.pop(ours.fileno(), None))
        return selectable

    def test_readsAndSurvivesAnError(self) -> None:
        """
        Twisted's _doReadOrWrite logs an error from doRead and disconnects
        the selectable; an error from that disconnection reaches doPoll,
        which logs it too and goes on to the next event.
        """
        failing, fine = self.readable(True), self.readable(False)
        with capturedLogs() as events:
            self.reactor.doPoll(1)
        self.assertEqual((failing.reads, fine.reads), (1, 1))
        ours = [e for e in events if e.get("log_namespace") == "echotwist.reactor"]
        self.assertEqual(len(ours), 1)
        self.assertEqual(
            len(self.flushLoggedErrors(RuntimeError)), 2, "both errors logged"
        )


class DatagramPollTests(SynchronousTestCase):
    """
    The loop calls a UDP port of the datagram echo's pass of reads itself
    (L{EchoPassPort.readPass}); a poll in which it answered every datagram
    counts as a plain echo, one with a refusal does not.
    """

    def setUp(self) -> None:
        self.reactor = EchotwistEPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.policy = DatagramPolicy(rate=0, clock=Clock())
        self.port = EchoPassPort(
            0, DatagramEcho(self.policy), "127.0.0.1", 65536, self.reactor
        )
        self.port.startListening()
        self.addCleanup(self.port.socket.close)
        self.addCleanup(self.reactor.removeReader, self.port)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.client.close)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(WAIT)

    def exchange(self, datagrams: list[bytes]) -> bool:
        """
        Send C{datagrams}, poll once: whether every event was an echo.
        """
        for datagram in datagrams:
            self.client.sendto(datagram, ("127.0.0.1", self.port.getHost().port))
        return self.reactor._pollOnce(WAIT)

    def test_answeredInTheLoop(self) -> None:
        # The first datagram from an address is judged by the protocol.
        self.assertFalse(self.exchange([b"hello"]))
        self.assertEqual(self.client.recv(100), b"hello")
        self.assertTrue(self.exchange([b"a", b"b"]))
        self.assertEqual([self.client.recv(100) for _ in range(2)], [b"a", b"b"])
        self.assertEqual(self.policy.counts, {"answered": 3})

    def test_aRefusalIsNotAPlainEcho(self) -> None:
        self.exchange([b"hello"])
        self.client.recv(100)
        with capturedLogs():
            self.assertFalse(self.exchange([b"x"] * (LOOP_TOLERANCE + 2)))
        self.assertEqual(self.policy.counts["echo loop"], 1)


class _ScriptedPoller:
    """
    Stands in for the reactor's epoll object: each poll() returns the next
    list of (fd, event) from a script, and records its timeout.
    """

    def __init__(
        self, reactor: EchotwistEPollReactor, script: list[list[tuple[int, int]]]
    ) -> None:
        self.reactor = reactor
        self.script = script
        self.timeouts: list[float] = []
        self.onPoll: list[object] = []

    def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        if self.onPoll:
            action = self.onPoll.pop(0)
            if callable(action):
                action()
        return self.script.pop(0) if self.script else []


class _PlainEcho:
    """
    What the reactor's plain-echo entry needs of an Echo and its socket:
    a count, and a read and a write (called as C{os.read} and C{os.write}
    are) that hand over C{message} each time.
    """

    bytesEchoed = 0

    def __init__(self, message: bytes = b"ping") -> None:
        self.message = message
        self.sent: list[bytes] = []

    def read(self, fd: int, size: int) -> bytes:
        return self.message

    def write(self, fd: int, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


class PlainPollTests(SynchronousTestCase):
    """
    A poll whose events are all plain echoes polls again at once, without
    a pass of the main loop; anything else, a due timed call, a stop or a
    call from a thread returns to the main loop.
    """

    def setUp(self) -> None:
        self.reactor = EchotwistEPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.echo = _PlainEcho()
        self.transport = object()
        # fd 1000: a plain echo; fd 1001: anything else (counts its reads).
        self.reactor._selectables[1000] = self.transport
        self.reactor._plainEchoes[1000] = (
            self.transport,
            self.echo,
            self.echo.read,
            self.echo.write,
        )
        self.otherReads: list[int] = []
        self.reactor._selectables[1001] = _Counting(self.otherReads)
        self.addCleanup(self.reactor._selectables.clear)

    def script(self, *polls: list[tuple[int, int]]) -> _ScriptedPoller:
        poller = _ScriptedPoller(self.reactor, list(polls))
        parts = self.reactor._parts
        self.reactor._parts = replace(parts, poll=poller.poll)
        self.addCleanup(setattr, self.reactor, "_parts", parts)
        return poller

    def test_plainEchoesPollAgain(self) -> None:
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain, plain, [(1001, EPOLLIN)], plain)
        self.reactor.doPoll(None)
        # Three plain polls and the one with another event, in one call;
        # the fifth waits for the next.
        self.assertEqual(len(poller.timeouts), 4)
        self.assertEqual(poller.timeouts, [-1, -1, -1, -1])
        self.assertEqual(self.echo.sent, [b"ping"] * 3)
        self.assertEqual(self.echo.bytesEchoed, 12)
        self.assertEqual(self.otherReads, [1])

    def test_returnsWhenNothingHappened(self) -> None:
        """
        A poll that timed out (no events) returns: a timed call is due.
        """
        poller = self.script([])
        self.reactor.doPoll(0.5)
        self.assertEqual(poller.timeouts, [0.5])

    def test_timeoutShrinksToTheDeadline(self) -> None:
        """
        With a timed call due in C{timeout} seconds, each further poll waits
        only what is left, and once it has passed the main loop gets the
        call on time.
        """
        now = [100.0]
        self.patch(self.reactor, "seconds", lambda: now[0])
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain, plain)

        def later(seconds: float) -> object:
            return lambda: now.__setitem__(0, now[0] + seconds)

        poller.onPoll = [later(0.25), later(0.5), later(0.5)]
        self.reactor.doPoll(1.0)
        self.assertEqual(poller.timeouts, [1.0, 0.75, 0.25])
        self.assertEqual(len(self.echo.sent), 3)

    def test_nonBlockingPollOnce(self) -> None:
        """
        A poll with timeout 0 (something is due now) is not repeated.
        """
        poller = self.script([(1000, EPOLLIN)], [(1000, EPOLLIN)])
        self.reactor.doPoll(0)
        self.assertEqual(poller.timeouts, [0])

    def test_stopReturns(self) -> None:
        """
        A signal handler that stops the reactor between polls ends the
        repeat.
        """
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain, plain)
        poller.onPoll = [None, self.reactor.stop]
        # As if running (stop() refuses otherwise); it never runs here.
        self.reactor._stopped = False
        self.reactor.doPoll(None)
        self.assertTrue(self.reactor._justStopped)
        self.assertEqual(len(poller.timeouts), 2)

    def test_callFromThreadReturns(self) -> None:
        plain = [(1000, EPOLLIN)]
        poller = self.script(plain, plain, plain)
        poller.onPoll = [lambda: self.reactor.threadCallQueue.append((print, (), {}))]
        self.addCleanup(self.reactor.threadCallQueue.clear)
        self.reactor.doPoll(None)
        self.assertEqual(len(poller.timeouts), 1)


class _Counting:
    """
    A selectable that is not a plain echo: it counts its reads.
    """

    def __init__(self, reads: list[int]) -> None:
        self.reads = reads

    def doRead(self) -> None:
        self.reads.append(1)

    def fileno(self) -> int:
        return 1001


def _pipes(pid: int) -> int:
    """
    How many of process C{pid}'s descriptors are pipes.
    """
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("pipe:")
        except FileNotFoundError:  # closed meanwhile
            pass
    return count


class RunTests(ServerTestCase):
    def test_listedByTwistd(self) -> None:
        output = subprocess.run(
            [command("twistd"), "--help-reactors"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=self.directory,
        ).stdout
        self.assertRegex(output, r"echotwist\s+epoll without a logging context")

    def test_servesAsTyped(self) -> None:
        """
        C{twistd -n echo} with no reactor named serves on echotwist's
        reactor, and says so; large transfers and half-close work on it.
        """
        server = self.start()
        server.waitFor(r"reactor class: echotwist\.reactor\.EchotwistEPollReactor")
        server.waitFor(SERVING_ON_ECHOTWIST)
        self.assertBulkEchoes(server, 20)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def assertBulkEchoes(self, server: Server, connections: int) -> None:
        """
        C{connections} clients at once each send C{server} 200,000 bytes
        and half-close; each gets them all back, then the server's close.
        """
        payloads = [os.urandom(200_000) for _ in range(connections)]
        for payload, (received, eof) in zip(
            payloads,
            exchange((LOOPBACK, server.port), payloads, halfClose=True),
            strict=True,
        ):
            self.assertEqual((received, eof), (payload, True))

    def test_smallMessagesRoundTrip(self) -> None:
        """
        Request and response, small messages, ten connections taking turns:
        the reactor's plain echo answers each exactly, and the metrics
        count every byte while the connections are still open.
        """
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--metrics",
            f"tcp:0:interface={LOOPBACK}",
        )
        server.waitFor(SERVING_ON_ECHOTWIST)
        metricsPort = int(server.waitFor(r"Serving metrics on \S+:(\d+)").group(1))
        clients = []
        for _ in range(10):
            client = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
            self.addCleanup(client.close)
            clients.append(client)
        rng = random.Random(7)
        total = 0
        deadline = time.monotonic() + WAIT
        for turn in range(100):
            for client in clients:
                message = rng.randbytes(rng.randint(1, 3000))
                client.sendall(message)
                received = b""
                while len(received) < len(message):
                    self.assertLess(time.monotonic(), deadline, f"turn {turn}")
                    chunk = client.recv(65536)
                    self.assertTrue(chunk, "closed early")
                    received += chunk
                self.assertEqual(received, message)
                total += len(message)
        counted = scrape(metricsPort)
        self.assertEqual(
            counted[("echotwist_received_bytes_total", (("transport", "stream"),))],
            total,
        )
        for client in clients:
            client.shutdown(socket.SHUT_WR)
            self.assertEqual(client.recv(1), b"")

    def assertServesOn(self, server: Server, serving: str, workers: int = 0) -> None:
        """
        C{server} says it serves on the reactor C{serving} matches (and so
        does each of its C{workers}), and echoes.
        """
        server.waitFor(serving)
        for number in range(1, workers + 1):
            server.waitFor(rf"worker {number}\] {serving}")
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"which"), b"which")
        self.assertNotIn("Traceback", server.output)

    def test_namedReactorWinsUnderTwistd(self) -> None:
        server = self.start(reactorArgs=("--reactor", "epoll"))
        self.assertServesOn(server, SERVING_ON_EPOLL)
        self.assertNotIn("EchotwistEPollReactor", server.output)

    def test_epollIsAPlainTwistedEcho(self) -> None:
        """
        Under C{--reactor epoll} the fast path is off: bulk echoes come
        back whole through Twisted's own transport, and nothing is
        spliced (the process never opens the pipe that echotwist's reactor
        splices through, as it does for the same exchange).
        """
        for reactorArgs, serving, spliced in [
            (("--reactor", "epoll"), SERVING_ON_EPOLL, False),
            ((), SERVING_ON_ECHOTWIST, True),
        ]:
            server = self.start(reactorArgs=reactorArgs)
            server.waitFor(serving)
            # A first echo, not spliced: whatever the running reactor opens
            # is open before the count.
            self.assertEqual(echoOnce((LOOPBACK, server.port), b"first"), b"first")
            before = _pipes(server.process.pid)
            self.assertBulkEchoes(server, 5)
            # The shared pipe is two descriptors, and outlives the exchange.
            self.assertEqual(
                _pipes(server.process.pid) - before, 2 if spliced else 0, serving
            )
            server.signal(signal.SIGTERM)
            self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_namedEchotwistUnderTwistd(self) -> None:
        server = self.start(reactorArgs=("--reactor", "echotwist"))
        self.assertServesOn(server, SERVING_ON_ECHOTWIST)

    def test_twistAsTyped(self) -> None:
        """
        Under C{twist} the tap installs echotwist's reactor and hands it to
        twist's options, which then run it instead of installing their own
        (ReactorAlreadyInstalledError, otherwise).
        """
        server = self.start(
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[command("twist"), "--log-format", "text"],
        )
        self.assertServesOn(server, SERVING_ON_ECHOTWIST)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_namedReactorWinsUnderTwist(self) -> None:
        server = self.start(
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[command("twist"), "--log-format", "text", "--reactor", "epoll"],
        )
        self.assertServesOn(server, SERVING_ON_EPOLL)

    def test_workersAsTyped(self) -> None:
        server = self.start("--port", f"tcp:0:interface={LOOPBACK}", "--workers", "2")
        self.assertServesOn(server, SERVING_ON_ECHOTWIST, workers=2)

    def test_workersOnTheNamedReactor(self) -> None:
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
            reactorArgs=("--reactor", "epoll"),
        )
        self.assertServesOn(server, SERVING_ON_EPOLL, workers=2)
        self.assertNotIn("EchotwistEPollReactor", server.output)

    def test_tacKeepsItsReactor(self) -> None:
        """
        A C{.tac} that uses echotwist serves on whatever reactor twistd
        installs for it (Twisted's default, or the one named): only the tap
        chooses.
        """
        tac = os.path.join(self.directory, "echo.tac")
        with open(tac, "w") as f:
            f.write(
                "from twisted.application import service\n"
                "from echotwist import EchoService\n"
                "application = service.Application('echo')\n"
                f"EchoService(['tcp:0:interface={LOOPBACK}'])"
                ".setServiceParent(application)\n"
            )
        server = self.start(runner=[command("twistd"), "-n", "--pidfile=", "-y", tac])
        self.assertServesOn(server, SERVING_ON_EPOLL)
        # Naming it gets echotwist's, as docs/performance.rst says.
        named = self.start(
            runner=[
                command("twistd"),
                "-n",
                "--pidfile=",
                "--reactor",
                "echotwist",
                "-y",
                tac,
            ]
        )
        self.assertServesOn(named, SERVING_ON_ECHOTWIST)
