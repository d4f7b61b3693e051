"""
Twisted clients for the pytest-native tests: they run on the same reactor
as the server under test (pytest-twisted's), and every wait is a Deferred
with a timeout.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from tests._twistd import LOOPBACK, WAIT

reactor: Any = _reactor
_T = TypeVar("_T")
_P = TypeVar("_P", bound=Protocol)


def bounded(d: Deferred[_T], timeout: float = WAIT) -> Deferred[_T]:
    """
    C{d}, failing with C{TimeoutError} if it has not fired in C{timeout}
    seconds.
    """
    return d.addTimeout(timeout, reactor)


async def until(predicate: Any, what: str, timeout: float = WAIT) -> None:
    """
    Let the reactor run until C{predicate()} is true; fail after
    C{timeout} seconds.  For state with no event to wait on (a count in
    the server's books).
    """
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await deferLater(reactor, 0.01, lambda: None)


async def turn() -> None:
    """
    Let the reactor run once round its loop.
    """
    await deferLater(reactor, 0, lambda: None)


class Client(Protocol):
    """
    Collects what comes back.  C{lost} fires with the reason the connection
    ended (the exception, e.g. C{ConnectionDone}: a Failure would make it
    an error).
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred[BaseException] = Deferred()
        self._wanted: list[tuple[int, Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        wanted, self._wanted = self._wanted, []
        for count, d in wanted:
            if len(self.received) >= count:
                d.callback(bytes(self.received))
            else:
                self._wanted.append((count, d))

    def receive(self, count: int, timeout: float = WAIT) -> Deferred[bytes]:
        """
        Fires with everything received once at least C{count} bytes are in.
        """
        d: Deferred[bytes] = Deferred()
        self._wanted.append((count, d))
        self.dataReceived(b"")
        return bounded(d, timeout)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        wanted, self._wanted = self._wanted, []
        for count, d in wanted:
            d.errback(
                AssertionError(
                    f"connection lost with {len(self.received)} of {count} bytes"
                    f" in: {reason.getErrorMessage()}"
                )
            )
        self.lost.callback(reason.value)

    def closed(self, timeout: float = WAIT) -> Deferred[BaseException]:
        return bounded(self.lost, timeout)


@implementer(IHalfCloseableProtocol)
class HalfCloseClient(Client):
    """
    A client that can shut down its sending side and go on reading:
    C{eof} fires when the server has closed its side.
    """

    def __init__(self) -> None:
        super().__init__()
        self.eof: Deferred[bytes] = Deferred()

    def readConnectionLost(self) -> None:
        self.eof.callback(bytes(self.received))
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


async def connect(
    port: int | str,
    protocol: _P | None = None,
    *,
    host: str = LOOPBACK,
    bindAddress: tuple[str, int] | None = None,
) -> Any:
    """
    Connect a L{Client} (or C{protocol}) over TCP to C{host}:C{port}, or
    to the UNIX socket at C{port} if it is a path.
    """
    if isinstance(port, str):
        endpoint: Any = UNIXClientEndpoint(reactor, port, timeout=WAIT)
    elif ":" in host:
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=WAIT)
    else:
        endpoint = TCP4ClientEndpoint(
            reactor, host, port, timeout=WAIT, bindAddress=bindAddress
        )
    return await bounded(connectProtocol(endpoint, protocol or Client()))


class DatagramClient(DatagramProtocol):
    """
    Sends datagrams from a loopback port and collects the answers.
    """

    def __init__(self) -> None:
        self.answers: list[bytes] = []
        self._waiting: list[tuple[int, Deferred[list[bytes]]]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.answers.append(datagram)
        waiting, self._waiting = self._waiting, []
        for count, d in waiting:
            if len(self.answers) >= count:
                d.callback(self.answers)
            else:
                self._waiting.append((count, d))

    def answered(self, count: int, timeout: float = WAIT) -> Deferred[list[bytes]]:
        d: Deferred[list[bytes]] = Deferred()
        self._waiting.append((count, d))
        if len(self.answers) >= count:
            self._waiting.remove((count, d))
            d.callback(self.answers)
        return bounded(d, timeout)
