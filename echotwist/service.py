# -*- test-case-name: tests.test_service -*-
"""
The service that composes the listeners and drains connections on shutdown.
"""

from __future__ import annotations

import errno
import faulthandler
import sys
from collections.abc import Iterable
from typing import NamedTuple

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger

from echotwist._address import formatAddress
from echotwist.stream import EchoFactory

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT", "EchoService", "Listener", "parseListener"]

log = Logger()

DEFAULT_SHUTDOWN_TIMEOUT = 10.0


class Listener(NamedTuple):
    """
    A stream listener: its endpoint description and the parsed endpoint.
    """

    description: str
    endpoint: IStreamServerEndpoint


def parseListener(description: str, reactor: object = None) -> Listener:
    """
    Parse a port number (meaning C{tcp:PORT}) or a Twisted server endpoint
    description such as C{tcp:5000:interface=127.0.0.1}.

    @raise ValueError: with a one-line message a user can act on.
    """
    text = description.strip()
    if text.isdigit():
        if int(text) > 65535:
            raise ValueError(f"{description!r} is not a port number (0-65535)")
        text = f"tcp:{int(text)}"
    if reactor is None:
        from twisted.internet import reactor
    try:
        endpoint = serverFromString(reactor, text)
    except Exception as e:
        raise ValueError(
            f"{description!r} is neither a port number nor a usable server"
            f" endpoint description ({e}); examples: 5000,"
            f" tcp:5000:interface=127.0.0.1, unix:/run/echo.sock"
        ) from None
    return Listener(text, endpoint)


def _whyNotListening(error: Exception) -> str:
    socketError = getattr(error, "socketError", None)
    if isinstance(error, CannotListenError) and isinstance(socketError, OSError):
        why = socketError.strerror or str(socketError)
        if socketError.errno == errno.EADDRINUSE:
            return f"{why} (another process is listening there)"
        if socketError.errno == errno.EACCES:
            return f"{why} (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        return why
    return str(error) or type(error).__name__


class _ListenerService(StreamServerEndpointService):
    """
    One listener.  A listener that cannot listen stops the start of the
    whole server with a one-line reason instead of a traceback.
    """

    # Raise listen errors out of (privileged)startService, as
    # strports.service does, rather than log them and run without the port.
    _raiseSynchronously = True

    def __init__(self, listener: Listener, factory: EchoFactory) -> None:
        super().__init__(listener.endpoint, factory)
        self.description = listener.description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:
            # twistd and twist print the message of a SystemExit and exit 1.
            raise SystemExit(
                f"echotwist: cannot listen on {self.description}: {_whyNotListening(e)}"
            ) from None
        assert self._waitingForPort is not None
        self._waitingForPort.addCallback(self._started)

    def _started(self, port: IListeningPort) -> IListeningPort:
        log.info(
            "Listening on {address} ({description})",
            event="listener.started",
            address=formatAddress(port.getHost()),
            description=self.description,
        )
        return port

    def stopService(self) -> Deferred[None]:
        d: Deferred[None] = super().stopService()

        def stopped(result: None) -> None:
            log.info(
                "Stopped listening on {description}",
                event="listener.stopped",
                description=self.description,
            )
            return result

        return d.addCallback(stopped)


class EchoService(MultiService):
    """
    An echo server: one L{EchoFactory} behind any number of stream listeners.

    Stopping it (SIGTERM or SIGINT under twistd) stops accepting at once,
    lets every open connection finish what it was sent, and closes each as
    soon as it is quiet; whatever is still open after C{shutdownTimeout}
    seconds is aborted.

    @ivar factory: the L{EchoFactory} every listener shares.
    """

    def __init__(
        self,
        listen: Iterable[Listener | str] = ("tcp:5000",),
        *,
        shutdownTimeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        reactor: object = None,
    ) -> None:
        """
        @param listen: port numbers or server endpoint descriptions (see
            L{parseListener}), or L{Listener}s already parsed.
        @param shutdownTimeout: seconds a drain may take before the
            connections still open are aborted.
        @param reactor: the reactor to listen with; the global one if None.
        """
        super().__init__()
        self.factory = EchoFactory(reactor)  # type: ignore[arg-type]
        self.shutdownTimeout = shutdownTimeout
        for item in listen:
            if isinstance(item, str):
                item = parseListener(item, reactor)
            _ListenerService(item, self.factory).setServiceParent(self)

    def privilegedStartService(self) -> None:
        # No Python code can clean up after a real segfault; the most it can
        # do is say where it happened.  twistd has replaced sys.stderr with
        # a log file object by now, hence the original.
        if sys.__stderr__ is not None and not faulthandler.is_enabled():
            faulthandler.enable(sys.__stderr__, all_threads=True)
        super().privilegedStartService()

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[object] = super().stopService()
        return stopped.addCallback(lambda _: self.factory.drain(self.shutdownTimeout))
