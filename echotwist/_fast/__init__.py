# -*- test-case-name: tests.test__fast,tests.test_listening,tests.test__fast_tcp -*-
"""
echotwist's fast path, fenced: everything that makes the echo faster than
Twisted's own transports and loop, and that a server can do without.

  - L{echotwist._fast.reactor}: the loop, Twisted's epoll reactor without
    the logging context per event, which echoes plain reads and splices
    bulk ones itself, and calls a UDP port's pass of reads directly;
  - L{echotwist._fast.tcp}: the kernel paths of a TCP echo (the splice,
    through one shared pipe; what the loop's plain echo leaves to the
    protocol) and their transport, L{echotwist._fast.tcp.SplicingServer};
  - L{echotwist._fast.tls}: TLS's direct send, L{echotwist._fast.tls.DirectTLSServer};
  - L{echotwist._fast.tlsloop}: the TLS echo of whole records in the
    loop, and the TLS protocol that follows record boundaries for it,
    L{echotwist._fast.tlsloop.EchoTLSProtocol};
  - L{echotwist._fast.udp}: the UDP port that answers the datagram echo
    in its own pass of reads, L{echotwist._fast.udp.EchoPassPort};
  - L{echotwist._fast.mmsg}: C{recvmmsg} and C{sendmmsg} through ctypes,
    with which that pass reads and answers a batch of datagrams.

It registers in one place, this module, and is asked from two sides:

  - a listener asks L{classFor} which class the fast path has for it, by
    kind (the transport for L{TCP}, L{PROXIED}, L{TLS}, the TLS protocol
    for L{TLS_PROTOCOL}, the port for L{UDP}) and reactor; None means
    Twisted's own (C{tcp.Server}, echotwist's TLS transport with Twisted's
    write under C{TLSMemoryBIOProtocol}, echotwist's
    L{echotwist.datagram.DatagramPort}): the fast path is on only on
    echotwist's reactor;
  - the reactor reads L{loopHandlers}, the registry each of the fast
    path's transports enters itself in where it is defined (L{register}),
    for what it does with a selectable of that class: call its read pass
    instead of C{doRead}, or look after an ordinary event whether it
    echoes the next read itself.

Nothing outside this package decides by a transport's class: the stream
echo asks its transport whether it may send to it directly (a true
C{echoSendsDirectly}, see L{echotwist.stream.sendsDirectly}), and only
the fast path's transports say so.  The public name of the reactor, for
C{twistd --reactor echotwist} and the start log, is
L{echotwist.reactor.EchotwistEPollReactor}.

@var TCP: a TCP listener whose factory builds L{echotwist.stream.Echo}
    directly.
@var PROXIED: the same under echotwist's PROXY wrapper.
@var TLS: the TCP transport under a TLS echo listener.
@var TLS_PROTOCOL: the TLS protocol of a TLS echo listener (Twisted's,
    following record boundaries for the loop's TLS echo).
@var UDP: a UDP echo listener's port.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = [
    "PROXIED",
    "TCP",
    "TLS",
    "TLS_PROTOCOL",
    "UDP",
    "LoopHandler",
    "classFor",
    "fastPathOn",
    "loopHandlers",
    "register",
]

TCP = "tcp"
PROXIED = "proxied"
TLS = "tls"
TLS_PROTOCOL = "tls-protocol"
UDP = "udp"


#: The registrations: a listener's kind, and the module of this package
#: and the name of its class.  Each is imported only when asked for: TLS's
#: need the tls extra.
_TRANSPORTS: dict[str, tuple[str, str]] = {
    TCP: ("tcp", "SplicingServer"),
    PROXIED: ("tcp", "SplicingServer"),
    TLS: ("tls", "DirectTLSServer"),
    TLS_PROTOCOL: ("tlsloop", "EchoTLSProtocol"),
    UDP: ("udp", "EchoPassPort"),
}


def fastPathOn(reactor: object) -> bool:
    """
    Whether C{reactor} runs the fast path: echotwist's reactor, whose
    class says so with a true C{echoFastPath}.  On any other (C{--reactor
    epoll}, a C{.tac}'s own, a test's C{MemoryReactor}) echotwist is a
    plain Twisted echo.
    """
    return getattr(type(reactor), "echoFastPath", False) is True


def classFor(reactor: object, kind: str) -> type[Any] | None:
    """
    The fast path's class for a listener's part of C{kind} (its transport,
    TLS protocol or port) served by C{reactor}, or None: the fast path is off on that reactor, or has
    nothing for that kind, and the listener keeps Twisted's own.
    """
    where = _TRANSPORTS.get(kind)
    if where is None or not fastPathOn(reactor):
        return None
    module, name = where
    found: type[Any] = getattr(import_module(f"{__name__}.{module}"), name)
    return found


class LoopHandler:
    """
    What the reactor's loop does with a readable selectable of one class.

    A plain class with slots, not a typed named tuple: the loop only reads
    its attributes, and a named tuple's class is built by C{typing} and
    C{collections} as its module loads, which every start does (about 1
    million instructions, 0.15% of a start; docs/performance.rst).

    @ivar readPass: called with the selectable instead of its C{doRead};
        returns whether everything it read was echoed in the pass (so the
        loop may poll again at once), or None for C{doRead}.
    @ivar tracked: after an ordinary read or write, the loop looks whether
        it echoes the selectable's next read itself (see
        L{echotwist._fast.tcp.plainEcho} and L{echotwist._fast.tcp.bulkEcho}).
    @ivar loopEcho: after an ordinary read or write, called with the
        selectable: None, or what the loop keeps to echo the next read
        itself, a tuple of the selectable, then the function that echoes a
        read (called with the descriptor and the tuple; it returns True
        for a read echoed whole, False for one it handed back to the
        selectable's own code, or why the connection is lost), then
        whatever that function needs (see L{echotwist._fast.tlsloop}).
    """

    __slots__ = ("readPass", "tracked", "loopEcho")

    def __init__(
        self,
        readPass: Callable[[Any], bool] | None = None,
        tracked: bool = False,
        loopEcho: Callable[[Any], tuple[Any, ...] | None] | None = None,
    ) -> None:
        self.readPass = readPass
        self.tracked = tracked
        self.loopEcho = loopEcho


#: The loop's handlers, by the selectable's exact class.
_HANDLERS: dict[type, LoopHandler] = {}


def register(kind: type, handler: LoopHandler) -> None:
    """
    Say what the loop does with a readable selectable of class C{kind}
    (its exact class: a subclass may read otherwise).  Each of the fast
    path's transports registers itself where it is defined, so it is
    registered before a listener can be given it (see L{classFor}),
    and TLS's, an extra, is imported only for a TLS listener.
    """
    _HANDLERS[kind] = handler


def loopHandlers() -> dict[type, LoopHandler]:
    """
    The loop's handlers, by the selectable's exact class: the registry
    itself, which the reactor keeps and reads as it goes (a transport
    registered later is seen).
    """
    return _HANDLERS
