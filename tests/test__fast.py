"""
The fast path's registration (L{echotwist._fast}): which transports a
listener gets on which reactor, and what the loop does with each.
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from echotwist._fast import (
    PROXIED,
    TCP,
    TLS,
    UDP,
    LoopHandler,
    classFor,
    fastPathOn,
    loopHandlers,
)
from echotwist._fast.tcp import SplicingServer
from echotwist._fast.udp import EchoPassPort
from echotwist._twisted import closeEpoll
from echotwist.datagram import DatagramPort
from echotwist.reactor import EchotwistEPollReactor
from tests._tools import requireTLS


def _what(handler: LoopHandler) -> tuple[object, bool, object]:
    """
    What C{handler} tells the loop, to compare.
    """
    return (handler.readPass, handler.tracked, handler.loopEcho)


class _SaysFast:
    """
    A reactor whose class claims the fast path, without being echotwist's.
    """

    echoFastPath = True


class _SaysSomething:
    """
    A reactor whose class has the attribute, but not True.
    """

    echoFastPath = 1


class RegistrationTests(SynchronousTestCase):
    def echotwistReactor(self) -> EchotwistEPollReactor:
        reactor = EchotwistEPollReactor()
        self.addCleanup(closeEpoll, reactor)
        return reactor

    def test_onlyOnAReactorThatSaysSo(self) -> None:
        """
        The fast path is on for echotwist's reactor (and any whose class
        says C{echoFastPath = True}), off for Twisted's own, a memory
        reactor, or a class that says something else.
        """
        self.assertTrue(fastPathOn(self.echotwistReactor()))
        self.assertTrue(fastPathOn(_SaysFast()))
        for reactor in (MemoryReactorClock(), _SaysSomething()):
            self.assertFalse(fastPathOn(reactor), reactor)
        self.assertFalse(fastPathOn(EPollReactor.__new__(EPollReactor)))

    def test_transportsOn(self) -> None:
        """
        On the fast path: the splicing transport for TCP, plain or under
        the PROXY wrapper, and the UDP port that answers in its own pass.
        """
        reactor = self.echotwistReactor()
        self.assertIs(classFor(reactor, TCP), SplicingServer)
        self.assertIs(classFor(reactor, PROXIED), SplicingServer)
        self.assertIs(classFor(reactor, UDP), EchoPassPort)

    def test_tlsTransportOn(self) -> None:
        """
        TLS's direct send is registered too, imported only when asked (TLS
        is an extra).
        """
        requireTLS()
        from echotwist._fast.tls import DirectTLSServer

        self.assertIs(classFor(self.echotwistReactor(), TLS), DirectTLSServer)

    def test_nothingOff(self) -> None:
        """
        Off the fast path, or for a kind it does not know, nothing: the
        listener keeps Twisted's own.
        """
        for kind in (TCP, PROXIED, TLS, UDP):
            self.assertIsNone(classFor(MemoryReactorClock(), kind), kind)
        self.assertIsNone(classFor(self.echotwistReactor(), "sctp"))

    def test_loopHandlers(self) -> None:
        """
        The loop tracks the splicing transport after an ordinary event,
        and calls the UDP port's pass instead of its C{doRead}; Twisted's
        own transports are not registered, so they get Twisted's
        C{doRead}.
        """
        handlers = loopHandlers()
        self.assertEqual(_what(handlers[SplicingServer]), (None, True, None))
        self.assertEqual(
            _what(handlers[EchoPassPort]), (EchoPassPort.readPass, False, None)
        )
        for kind in (tcp.Server, DatagramPort, SplicingServer.__base__):
            self.assertNotIn(kind, handlers)

    def test_tlsLoopHandler(self) -> None:
        """
        TLS's transport registers its loop echo when it is imported (for a
        TLS listener: TLS is an extra), and the registry the reactor holds
        sees it.
        """
        requireTLS()
        held = loopHandlers()
        from echotwist._fast.tls import DirectTLSServer
        from echotwist._fast.tlsloop import fastEcho

        self.assertIs(held, loopHandlers())
        self.assertEqual(_what(held[DirectTLSServer]), (None, False, fastEcho))
