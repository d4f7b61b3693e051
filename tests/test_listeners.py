"""
Listener descriptions (L{echotwist.listeners}): systemd sockets passed
without names, and listen backlogs.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from socket import AF_INET, AF_INET6, AF_UNIX, SOCK_STREAM

from twisted.internet.endpoints import AdoptedStreamServerEndpoint, _SystemdParser
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python.systemd import ListenFDs
from twisted.trial.unittest import SynchronousTestCase

import echotwist.listeners as listenersModule
from echotwist.listeners import _unnamedSystemdSocket, listenBacklog, parseListener
from echotwist.proxy import ProxyEndpoint
from tests._tools import scratchDirectory, selfSignedCertificate

_socketFamily = listenersModule._socketFamily


class UnnamedSystemdSocketTests(SynchronousTestCase):
    """
    C{systemd:...:index=N} when the sockets come without LISTEN_FDNAMES, as
    C{systemd-socket-activate} without C{--fdname} passes them.
    """

    def setUp(self) -> None:
        # Descriptors 3 and 4 here are the test runner's: say they are not
        # sockets, unless a test says otherwise.
        self.family: int | None = None
        self.patch(listenersModule, "_socketFamily", lambda fileno: self.family)

    def environ(self, **variables: str) -> None:
        self.patch(listenersModule, "_activationEnvironment", lambda: variables)

    def test_adoptedInTheSocketsOwnFamily(self) -> None:
        """
        domain=INET for an IPv6 socket (systemd-socket-activate -l 5000
        binds [::]) adopts it as IPv6, and says so.
        """
        self.environ(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
        self.family = AF_INET6
        with capturedLogs() as events:
            found = self.adopted("systemd:domain=INET:index=0")
        self.assertEqual(found, (3, AF_INET6))
        (warning,) = events
        self.assertEqual(warning["event"], "listener.family")
        self.assertEqual((warning["actual"], warning["declared"]), ("INET6", "INET"))
        # As before listeners had a module of their own: operators filter on it.
        self.assertEqual(warning["log_namespace"], "echotwist.service")
        self.family = AF_INET
        with capturedLogs() as events:
            self.assertEqual(self.adopted("systemd:domain=INET:index=0"), (3, AF_INET))
        self.assertEqual(list(events), [])

    def test_socketFamily(self) -> None:
        for family in (AF_INET, AF_INET6, AF_UNIX):
            with socket.socket(family, SOCK_STREAM) as s:
                self.assertEqual(_socketFamily(s.fileno()), family)
        readFd, writeFd = os.pipe()
        self.addCleanup(os.close, readFd)
        self.addCleanup(os.close, writeFd)
        self.assertIsNone(_socketFamily(readFd))

    def test_namedSocketsToo(self) -> None:
        """
        Twisted's own parser (names passed) gets the same family check.
        """
        self.patch(_SystemdParser, "_sddaemon", ListenFDs([3], ("echo",)))
        self.family = AF_INET6
        with capturedLogs():
            found = self.adopted("systemd:domain=INET:name=echo")
        self.assertEqual(found, (3, AF_INET6))

    def test_environmentTwistedDeleted(self) -> None:
        """
        Importing twisted.internet.endpoints deletes LISTEN_PID and
        LISTEN_FDS from os.environ; the initial environment still has them.
        """
        directory = tempfile.mkdtemp(prefix="echotwist-")
        self.addCleanup(shutil.rmtree, directory, True)
        initial = os.path.join(directory, "environ")
        with open(initial, "wb") as f:
            f.write(b"HOME=/\0LISTEN_FDS=2\0LISTEN_PID=42\0")
        self.patch(os, "environ", {"HOME": "/"})
        self.assertEqual(
            listenersModule._activationEnvironment(initial),
            {"LISTEN_FDS": "2", "LISTEN_PID": "42"},
        )
        # What os.environ has now wins over how the process started.
        self.patch(os, "environ", {"LISTEN_FDS": "1", "LISTEN_PID": "7"})
        self.assertEqual(
            listenersModule._activationEnvironment(initial),
            {"LISTEN_FDS": "1", "LISTEN_PID": "7"},
        )
        self.patch(os, "environ", {})
        self.assertEqual(
            listenersModule._activationEnvironment(initial + ".missing"), {}
        )

    def adopted(self, description: str) -> tuple[int, int]:
        reactor = MemoryReactorClock()
        endpoint = parseListener(description, reactor).endpoint
        # Not listened on: adopting closes the descriptor it was given, and
        # 3 and 4 here are the test runner's own.
        assert isinstance(endpoint, AdoptedStreamServerEndpoint)
        self.assertIs(endpoint.reactor, reactor)
        return endpoint.fileno, endpoint.addressFamily

    def test_indexWithoutNames(self) -> None:
        self.environ(LISTEN_FDS="2", LISTEN_PID=str(os.getpid()))
        self.assertEqual(self.adopted("systemd:domain=INET:index=0"), (3, AF_INET))
        self.assertEqual(self.adopted("systemd:domain=INET6:index=1"), (4, AF_INET6))

    def test_behindTheProxyWrapper(self) -> None:
        self.environ(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
        listener = parseListener("haproxy:systemd:domain=INET:index=0")
        self.assertIsInstance(listener.endpoint, ProxyEndpoint)
        self.assertEqual((listener.tls, listener.proxied), (False, True))

    def test_kindsTold(self) -> None:
        """
        A listener says whether it is TLS and behind the PROXY wrapper, so
        that the service need not look among the loaded modules.
        """
        self.environ(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
        listener = parseListener("systemd:domain=INET:index=0")
        self.assertEqual((listener.tls, listener.proxied), (False, False))

    def test_namesLeaveItToTwisted(self) -> None:
        environ = {
            "LISTEN_FDS": "1",
            "LISTEN_PID": str(os.getpid()),
            "LISTEN_FDNAMES": "echo",
        }
        self.assertIsNone(_unnamedSystemdSocket("domain=INET:index=0", environ))
        del environ["LISTEN_FDNAMES"]
        self.assertIsNone(_unnamedSystemdSocket("domain=INET:name=echo", environ))
        self.assertEqual(
            _unnamedSystemdSocket("domain=INET:index=0", environ), (3, AF_INET)
        )

    def test_notForThisProcess(self) -> None:
        """
        LISTEN_PID names another process (a parent that was passed the
        sockets): they are not ours to take.
        """
        self.environ(LISTEN_FDS="1", LISTEN_PID=str(os.getpid() + 1))
        with self.assertRaises(ValueError) as caught:
            parseListener("systemd:domain=INET:index=0", MemoryReactorClock())
        self.assertIn("no such socket was passed", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_indexPastTheSocketsPassed(self) -> None:
        self.environ(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
        with self.assertRaises(ValueError) as caught:
            parseListener("systemd:domain=INET:index=1", MemoryReactorClock())
        self.assertIn("no such socket was passed", str(caught.exception))

    def test_nothingPassed(self) -> None:
        self.environ()
        with self.assertRaises(ValueError) as caught:
            parseListener("systemd:domain=INET:index=0", MemoryReactorClock())
        self.assertIn("LISTEN_FDS and LISTEN_PID", str(caught.exception))

    def test_unknownDomain(self) -> None:
        self.environ(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
        with self.assertRaises(ValueError) as caught:
            parseListener("systemd:domain=INETX:index=0", MemoryReactorClock())
        self.assertIn("INETX", str(caught.exception))


class BacklogTests(SynchronousTestCase):
    """
    Stream listeners get a listen backlog fit for bursts unless their
    description sets one.
    """

    def listen(
        self, description: str, backlog: int | None = 1024
    ) -> MemoryReactorClock:
        reactor = MemoryReactorClock()
        listener = parseListener(description, reactor, backlog)
        self.successResultOf(listener.endpoint.listen(Factory()))
        return reactor

    def test_everyStreamType(self) -> None:
        key, certificate = selfSignedCertificate(scratchDirectory(self))
        self.assertEqual(self.listen("tcp:0").tcpServers[0][2], 1024)
        self.assertEqual(self.listen("0").tcpServers[0][2], 1024)
        self.assertEqual(self.listen("tcp6:0").tcpServers[0][2], 1024)
        self.assertEqual(self.listen("unix:/tmp/e.sock").unixServers[0][2], 1024)
        ssl = f"ssl:0:privateKey={key}:certKey={certificate}"
        self.assertEqual(self.listen(ssl).sslServers[0][3], 1024)
        self.assertEqual(self.listen("haproxy:tcp:0").tcpServers[0][2], 1024)
        self.assertEqual(self.listen("haproxy:tcp6:0").tcpServers[0][2], 1024)
        self.assertEqual(
            self.listen("haproxy:unix:/tmp/e.sock").unixServers[0][2], 1024
        )
        self.assertEqual(self.listen("haproxy:" + ssl).sslServers[0][3], 1024)

    def test_descriptionsOwnBacklogWins(self) -> None:
        self.assertEqual(self.listen("tcp:0:backlog=7").tcpServers[0][2], 7)
        self.assertEqual(self.listen("tcp6:0:backlog=7").tcpServers[0][2], 7)
        self.assertEqual(
            self.listen("haproxy:unix:/tmp/e.sock:backlog=7").unixServers[0][2], 7
        )
        # Positionally: port, interface, backlog.
        self.assertEqual(self.listen("tcp:0:127.0.0.1:7").tcpServers[0][2], 7)

    def test_escapedColonIsNotAField(self) -> None:
        reactor = self.listen("unix:address=/tmp/a\\:backlog\\=3")
        self.assertEqual(reactor.unixServers[0][0], "/tmp/a:backlog=3")
        self.assertEqual(reactor.unixServers[0][2], 1024)

    def test_descriptionIsKeptAsGiven(self) -> None:
        reactor = MemoryReactorClock()
        self.assertEqual(parseListener("tcp:0", reactor).description, "tcp:0")

    def test_defaultIsTheKernelsCap(self) -> None:
        reactor = self.listen("tcp:0", None)
        self.assertEqual(reactor.tcpServers[0][2], listenBacklog())
        path = os.path.join(scratchDirectory(self), "somaxconn")
        for cap, backlog in (("128", 128), ("4096", 4096), ("1000000", 65535)):
            with open(path, "w") as f:
                f.write(cap + "\n")
            self.assertEqual(listenBacklog(path), backlog)
        self.assertEqual(listenBacklog(path + ".missing"), 1024)
