"""
EchoService: its listeners, start-up errors, and the drain on stop, with
endpoints and ports in memory.
"""

from __future__ import annotations

import errno
import subprocess
import sys

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echotwist import Echo, EchoService, Listener
from echotwist.datagram import DATAGRAMS_PER_READ, DatagramPolicy, DatagramPort
from echotwist.identity import Identity, identityFor
from echotwist.proxy import parseNetwork
from echotwist.service import CannotListen
from echotwist.settings import Settings


@implementer(IListeningPort)
class _Port:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred[None]:
        self.journal.append("stopped listening")
        return succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 5000)


@implementer(IStreamServerEndpoint)
class _Endpoint:
    def __init__(self, journal: list[str], error: Exception | None = None) -> None:
        self.journal = journal
        self.error = error

    def listen(self, factory: Factory) -> Deferred[IListeningPort]:
        if self.error is not None:
            return fail(self.error)
        self.journal.append("listening")
        return succeed(_Port(self.journal))


def cannotListen(code: int, text: str) -> CannotListenError:
    return CannotListenError("127.0.0.1", 5000, OSError(code, text))


class StartTests(SynchronousTestCase):
    def test_listensOnEveryDescription(self) -> None:
        reactor = MemoryReactorClock()
        service = EchoService(["5000", "tcp:5001:interface=127.0.0.1"], reactor=reactor)
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(5000, ""), (5001, "127.0.0.1")],
        )
        self.assertTrue(
            all(f.shared is service.factory for _, f, _, _ in reactor.tcpServers)
        )
        started = [
            e["description"] for e in events if e.get("event") == "listener.started"
        ]
        self.assertEqual(started, ["tcp:5000", "tcp:5001:interface=127.0.0.1"])

    def test_untrustedProxyIsSaidOnce(self) -> None:
        reactor = MemoryReactorClock()
        service = EchoService(
            ["haproxy:tcp:0", "haproxy:unix:/tmp/echo.sock", "tcp:0"], reactor=reactor
        )
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
            service.stopService()
            service.startService()
        warnings = [e for e in events if e.get("event") == "proxy.untrusted"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(
            warnings[0]["listeners"], "haproxy:tcp:0, haproxy:unix:/tmp/echo.sock"
        )

    def test_trustedProxiesOrWorkersSayNothing(self) -> None:
        for kwargs in ({"proxyFrom": ["10.0.0.0/8"]}, {"warnOpenProxy": False}):
            reactor = MemoryReactorClock()
            service = EchoService(["haproxy:tcp:0"], reactor=reactor, **kwargs)
            with capturedLogs() as events:
                service.privilegedStartService()
                service.startService()
            self.assertNotIn("proxy.untrusted", [e.get("event") for e in events])
            (_, factory, _, _) = reactor.tcpServers[0]
            self.assertEqual(
                factory.trusted,
                None if "warnOpenProxy" in kwargs else [parseNetwork("10.0.0.0/8")],
            )

    def test_udpReadsWholeDatagrams(self) -> None:
        """
        Each UDP port gets its own protocol (Twisted binds a protocol to one
        port) and reads up to 65536 bytes, not Twisted's default 8192, a
        bounded number of datagrams a pass (see DatagramPort).
        """
        reactor = MemoryReactorClock()
        service = EchoService(
            [],
            udp=["udp:0:interface=127.0.0.1", "udp:0:interface=\\:\\:1"],
            reactor=reactor,
        )
        service.privilegedStartService()
        first, second = (child.port for child in service.datagrams)
        for port, host in ((first, "127.0.0.1"), (second, "::1")):
            self.assertIsInstance(port, DatagramPort)
            self.assertEqual(port.maxPacketSize, 65536)
            self.assertEqual(port.maxDatagramsPerRead, DATAGRAMS_PER_READ)
            self.assertEqual(port.getHost().host, host)
            self.assertIn(port, reactor.readers)
        self.assertIsNot(first.protocol, second.protocol)
        self.assertIs(first.protocol.policy, second.protocol.policy)
        stopped = service.stopService()
        reactor.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(reactor.readers, set())

    def test_twistStartsWithoutPrivilegedStart(self) -> None:
        """
        twist calls startService only; the listeners start all the same.
        """
        reactor = MemoryReactorClock()
        EchoService(["tcp:5000"], reactor=reactor).startService()
        self.assertEqual(len(reactor.tcpServers), 1)

    def refusal(self, error: Exception) -> str:
        service = EchoService([Listener("tcp:5000", _Endpoint([], error))])
        message = str(self.assertRaises(CannotListen, service.privilegedStartService))
        self.assertNotIn("\n", message)
        return message

    def test_portInUse(self) -> None:
        self.assertEqual(
            self.refusal(cannotListen(errno.EADDRINUSE, "Address already in use")),
            "echotwist: cannot listen on tcp:5000: Address already in use"
            " (another process is listening there)",
        )

    def test_privilegedPort(self) -> None:
        self.assertEqual(
            self.refusal(cannotListen(errno.EACCES, "Permission denied")),
            "echotwist: cannot listen on tcp:5000: Permission denied"
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        )

    def test_otherError(self) -> None:
        self.assertEqual(
            self.refusal(OverflowError("bind(): port must be 0-65535.")),
            "echotwist: cannot listen on tcp:5000: bind(): port must be 0-65535.",
        )

    def test_twistSeesTheSameRefusal(self) -> None:
        service = EchoService(
            [
                Listener(
                    "tcp:5000", _Endpoint([], cannotListen(errno.EADDRINUSE, "in use"))
                )
            ]
        )
        self.assertRaises(CannotListen, service.startService)


class StopTests(SynchronousTestCase):
    def test_stopsListeningThenDrains(self) -> None:
        reactor = MemoryReactorClock()
        journal: list[str] = []
        service = EchoService(
            [Listener("tcp:5000", _Endpoint(journal))],
            reactor=reactor,
            shutdownTimeout=7,
        )
        service.startService()
        protocol = service.factory.buildProtocol(None)
        assert isinstance(protocol, Echo)
        transport = StringTransport()
        protocol.makeConnection(transport)

        stopped = service.stopService()
        self.assertEqual(journal, ["listening", "stopped listening"])
        self.assertFalse(transport.disconnecting)
        self.assertNoResult(stopped)

        # A running reactor's time passes in steps; each quiet check
        # schedules the next from its own step.
        reactor.pump([service.factory.drainQuiet / 8] * 9)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_deadlineIsTheShutdownTimeout(self) -> None:
        reactor = MemoryReactorClock()
        service = EchoService(
            [Listener("tcp:5000", _Endpoint([]))], reactor=reactor, shutdownTimeout=7
        )
        service.startService()
        protocol = service.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.pauseProducing()  # its reader is not reading
        stopped = service.stopService()
        reactor.advance(6.9)
        self.assertFalse(transport.disconnected)
        reactor.advance(0.1)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)


class _BrokenPort(_Port):
    def getHost(self) -> IPv4Address:
        raise RuntimeError("no address")


@implementer(IStreamServerEndpoint)
class _BrokenPortEndpoint:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    def listen(self, factory: Factory) -> Deferred[IListeningPort]:
        return succeed(_BrokenPort(self.journal))


class SetUpFailureTests(SynchronousTestCase):
    def test_aPortThatCannotBeSetUpIsClosedAndSaid(self) -> None:
        """
        What goes wrong setting up a port just opened ends start-up with
        one line, and the port is closed, not left open.
        """
        journal: list[str] = []
        service = EchoService(
            [Listener("tcp:5000", _BrokenPortEndpoint(journal))],
            reactor=MemoryReactorClock(),
        )
        message = str(self.assertRaises(CannotListen, service.privilegedStartService))
        self.assertEqual(message, "echotwist: cannot listen on tcp:5000: no address")
        self.assertEqual(journal, ["stopped listening"])


class StartWeightTests(SynchronousTestCase):
    """
    What starting C{twistd -n echo} imports and builds: not the modules only
    some listeners need, nor generated code a named tuple does without,
    which cost every start time (docs/performance.rst).
    """

    def importedAtStart(
        self, prefixes: tuple[str, ...], withoutOpenSSL: bool = False
    ) -> list[str]:
        """
        Compose and start C{twistd echo --port tcp:0} in a fresh interpreter
        as twistd does, and list the modules it imported that start with
        one of C{prefixes}.

        @param withoutOpenSSL: start as the default install does, which has
            no pyOpenSSL (the tests' install has the TLS extra): Twisted's
            TCP module, finding none, loads no TLS.
        """
        return self.afterStart(
            f"sorted(m for m in sys.modules if m.startswith({prefixes!r}))",
            withoutOpenSSL,
        )

    def afterStart(
        self, names: str, withoutOpenSSL: bool = False, before: str = ""
    ) -> list[str]:
        """
        Compose and start C{twistd echo --port tcp:0} in a fresh interpreter
        as twistd does, and return the strings the expression C{names}
        gives there afterwards.

        @param withoutOpenSSL: as for L{importedAtStart}.
        @param before: code to run first, before echotwist is imported.
        """
        code = (
            "import sys\n"
            + before
            + ("sys.modules['OpenSSL'] = None\n" if withoutOpenSSL else "")
            + "import echotwist.reactor, echotwist.tap\n"
            "from twisted.plugins.echotwist_plugin import echo\n"
            "options = echo.options()\n"
            "options.parseOptions(['--port', 'tcp:0:interface=127.0.0.1'])\n"
            "service = echo.makeService(options)\n"
            "service.privilegedStartService()\n"
            "service.startService()\n"
            "service.stopService()\n"
            f"print(' '.join({names}))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return out.split()

    def test_startImportsNeitherAutomatNorThePROXYParsers(self) -> None:
        self.assertEqual(
            self.importedAtStart(
                (
                    "automat",
                    "twisted.application.internet",
                    "twisted.protocols.haproxy",
                    "echotwist.proxy",
                )
            ),
            [],
        )

    def classesAfterStart(self, test: str) -> list[str]:
        """
        The classes of echotwist's modules, by module and name, for which
        the expression C{test} (of C{c}, the class) is true after a start
        (see L{afterStart}).
        """
        return self.afterStart(
            "sorted(f'{c.__module__}.{c.__qualname__}'"
            " for m in list(sys.modules.values())"
            " if getattr(m, '__name__', '').startswith('echotwist')"
            " for c in vars(m).values()"
            " if isinstance(c, type) and c.__module__ == m.__name__"
            f" and {test})"
        )

    def test_startBuildsNoDataclassButSettings(self) -> None:
        """
        Of echotwist's classes a start loads, only L{Settings}, the one
        declaration of the options, is a dataclass: a frozen dataclass's
        methods are generated and compiled as its module loads, which every
        start pays (L{echotwist._twisted.EPollParts} as one cost about 2.5
        million instructions, 0.4% of a start; docs/performance.rst).
        """
        self.assertEqual(
            self.classesAfterStart("__import__('dataclasses').is_dataclass(c)"),
            ["echotwist.settings.Settings"],
        )

    def test_startBuildsNoNamedTupleButTheListeners(self) -> None:
        """
        Of echotwist's classes a start loads, only the public L{Listener}
        and L{DatagramListener} are named tuples: a typed named tuple's
        class is built by C{typing} and C{collections} as its module loads,
        which every start pays (L{echotwist._twisted.EPollParts} and
        L{echotwist._fast.LoopHandler} as named tuples cost about 2.2
        million instructions, 0.3% of a start; docs/performance.rst).
        """
        self.assertEqual(
            self.classesAfterStart("issubclass(c, tuple) and hasattr(c, '_fields')"),
            ["echotwist.listeners.DatagramListener", "echotwist.listeners.Listener"],
        )

    def test_startCompilesNoPatternOnlyRefusalsUse(self) -> None:
        """
        A default start compiles none of the regular expressions that only
        a refusal, a UDP listener, a decimal option or a peer's unprintable
        text needs (the unescaped IPv6 address of a listener, a decimal
        number, what L{echotwist._address.escape} escapes): compiling them
        costs every start a few hundred microseconds (docs/performance.rst).
        """
        self.assertEqual(
            self.afterStart(
                "[p for p in compiled"
                " if any(k in p for k in ('interface=', 'x20-', '[0-9]*)?'))]",
                before="import re\n"
                "compiled = []\n"
                "_compile = re.compile\n"
                "def recording(pattern, flags=0):\n"
                "    compiled.append(str(pattern))\n"
                "    return _compile(pattern, flags)\n"
                "re.compile = recording\n",
            ),
            [],
        )

    def test_defaultStartParsesNoDefault(self) -> None:
        """
        A start that gives no option but C{--port} runs none of the options'
        parsers on their defaults, which parse to the fields' own values
        (L{tests.test_tap.OptionsTests.test_defaultsParseToTheirValues}):
        not even C{--workers}', which counts the CPUs this process may use.
        """
        self.assertEqual(
            self.afterStart(
                "asked",
                before="import os\n"
                "asked = []\n"
                "_affinity = os.sched_getaffinity\n"
                "def recording(pid):\n"
                "    asked.append('sched_getaffinity')\n"
                "    return _affinity(pid)\n"
                "os.sched_getaffinity = recording\n",
            ),
            [],
        )

    def test_startNotAsPidOneImportsNoExitStatus(self) -> None:
        """
        A start that is not PID 1 does not import L{echotwist.exitstatus},
        neither as the service is made nor once the reactor runs
        (L{echotwist.process.watchExitStatus}): only PID 1 needs it.
        """
        self.assertEqual(
            self.afterStart(
                "(getattr(__import__('echotwist.process').process,"
                " 'watchExitStatus', lambda: None)(),"
                " sorted(m for m in sys.modules"
                " if m.startswith('echotwist.exitstatus')))[1]"
            ),
            [],
        )

    def test_startWithoutIdentityOptionsImportsNoIdentity(self) -> None:
        """
        Without C{--identify}, C{--identify-udp}, C{--metrics} or
        C{--health}, nothing shows the server's identity, and a start does
        not import L{echotwist.identity}.
        """
        self.assertEqual(self.importedAtStart(("echotwist.identity",)), [])

    def test_identityWorkedOutWhenFirstAskedFor(self) -> None:
        """
        L{EchoService.identity} is the one given, or else
        L{identityFor}'s for C{--instance-name}, the same object each time.
        """
        given = Identity("h", "i", "1")
        self.assertIs(
            EchoService([], reactor=MemoryReactorClock(), identity=given).identity,
            given,
        )
        service = EchoService(
            [], settings=Settings(instanceName="echo-7"), reactor=MemoryReactorClock()
        )
        found = service.identity
        self.assertEqual(found, identityFor("echo-7"))
        self.assertIs(service.identity, found)

    def test_startWithoutUDPImportsNoUDPEcho(self) -> None:
        """
        A start without a C{--udp} listener does not import
        L{echotwist.datagram}, the UDP echo (its module and its policy cost
        every start a few hundred microseconds; docs/performance.rst).
        """
        self.assertEqual(self.importedAtStart(("echotwist.datagram",)), [])

    def test_datagramPolicyMadeWhenFirstAskedFor(self) -> None:
        """
        L{EchoService.datagramPolicy} is made when first asked for, under
        C{--udp-rate} and C{--ipv6-prefix}, and is the same object each
        time: every UDP listener and the statistics share one set of books.
        """
        service = EchoService(
            [],
            settings=Settings(udpRate=7.0, ipv6Prefix=48),
            reactor=MemoryReactorClock(),
        )
        policy = service.datagramPolicy
        self.assertIsInstance(policy, DatagramPolicy)
        self.assertEqual((policy.rate, policy.ipv6Prefix), (7.0, 48))
        self.assertIs(service.datagramPolicy, policy)

    def test_udpListenersShareTheServicePolicy(self) -> None:
        """
        Each C{--udp} listener echoes under the service's one
        L{EchoService.datagramPolicy}, the books the statistics report.
        """
        service = EchoService(
            [],
            udp=["udp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.2"],
            reactor=MemoryReactorClock(),
        )
        policies = [
            listener.protocol.policy
            for listener in service.getServiceNamed("datagrams")
        ]
        self.assertEqual(policies, [service.datagramPolicy] * 2)

    def test_defaultInstallStartImportsNoPolicies(self) -> None:
        """
        Without the TLS extra, a start on a tcp: listener does not import
        L{twisted.protocols.policies} (only ssl: and haproxy: listeners
        unwrap a C{WrappingFactory}); with it, Twisted's TCP module imports
        it anyway, through L{twisted.protocols.tls}.  Nor any TLS.
        """
        self.assertEqual(
            self.importedAtStart(
                ("twisted.protocols.policies", "twisted.protocols.tls", "OpenSSL"),
                withoutOpenSSL=True,
            ),
            # sys.modules["OpenSSL"] is the None that blocks it.
            ["OpenSSL"],
        )
