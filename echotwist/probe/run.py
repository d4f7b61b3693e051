# -*- test-case-name: tests.test_probe_run -*-
"""
What every kind of run shares: its target, clock, results, the lines it
prints while it runs, how it ends (done, stopped, or an error) and why a
connection ended.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error
from twisted.python.failure import Failure

from echotwist._address import escape
from echotwist.probe.report import Results
from echotwist.probe.target import Target


def describeFailure(reason: Failure) -> str:
    """
    What went wrong with a connection, in a few words a user knows.
    """
    value = reason.value
    if isinstance(value, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, error.TimeoutError):
        return "no connection (timed out)"
    if isinstance(value, error.DNSLookupError):
        return "the host name does not resolve"
    if isinstance(value, error.NoRouteError):
        return "no route to the host"
    if isinstance(value, error.ConnectionDone):
        return "the target closed the connection"
    if isinstance(value, error.ConnectionLost):
        return "the connection was reset"
    if isinstance(value, error.ConnectError):
        # A UNIX socket's failure carries only its errno: say its reason.
        osError = value.osError
        if isinstance(osError, int):
            text = os.strerror(osError)
        else:
            text = osError if osError else str(value)
        return f"could not connect ({text})".replace("\n", " ")
    # A TLS failure (certificate, handshake) arrives as a pyOpenSSL error.
    # Its text may quote what the peer sent: escaped, as in a log.
    text = escape(" ".join(str(value).split()))
    name = type(value).__name__
    if "VerificationError" in name:
        # service_identity's: the chain is trusted, the host name is not in
        # it, and trusting another authority would not help.
        return (
            "the certificate is not for the target's host name"
            " (--insecure to skip the check)"
        )
    if "certificate verify failed" in text:
        return (
            "the certificate did not verify (--ca FILE to trust an authority,"
            " --insecure to skip the check)"
        )
    if type(value).__module__.startswith(("OpenSSL", "ssl")):
        return f"TLS failed ({text[:200]})"
    return f"{name}: {text[:200]}"


class Run:
    """
    A run of probes against one target.

    @ivar done: fires with the L{Results} when the run is over.
    """

    mode = "latency"

    def __init__(
        self,
        reactor: Any,
        target: Target,
        settings: dict[str, Any],
        say: Callable[[str], None],
        now: Callable[[], float] = time.perf_counter,
        checkPeer: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.checkPeer = checkPeer
        self.target = target
        self.say = say
        self.now = now
        self.results = Results(target.text, self.mode, settings)
        self.done: defer.Deferred[Results] = defer.Deferred()
        self.started = 0.0
        self.finished = False
        self._timers: list[Any] = []

    def later(self, delay: float, f: Callable[..., Any], *args: Any) -> Any:
        """
        Call C{f} after C{delay} seconds, unless the run has ended by then.
        """
        call = self.reactor.callLater(max(0.0, delay), self._unlessFinished, f, *args)
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(call)
        return call

    def _unlessFinished(self, f: Callable[..., Any], *args: Any) -> None:
        if not self.finished:
            f(*args)

    def peerRefused(self, transport: Any) -> bool:
        """
        A TLS handshake is done: whether the certificate fails the check
        of the target's host name (L{echotwist.probe.target.peerCheck});
        if it does, the run ends with the reason, and the connection is
        aborted before a byte is sent on it.
        """
        if self.checkPeer is None:
            return False
        problem = self.checkPeer(transport)
        if problem is None:
            return False
        self.fail(problem)
        transport.abortConnection()
        return True

    def start(self) -> defer.Deferred[Results]:
        """
        Start the run; L{done}.
        """
        self.started = self.now()
        self.begin()
        return self.done

    def begin(self) -> None:
        """
        Start probing (each kind of run its own way).
        """
        raise NotImplementedError()

    def stop(self) -> None:
        """
        End the run now (Ctrl-C, or its --duration): what was measured is
        the result.
        """
        self.finish()

    def fail(self, message: str) -> None:
        """
        End the run with an error about the target.
        """
        if not self.finished:
            self.results.error = f"{self.target.text}: {message}"
        self.finish()

    def finish(self) -> None:
        """
        End the run: cancel its timers, let go of its connections, fire
        L{done}.
        """
        if self.finished:
            return
        self.finished = True
        self.results.elapsed = self.now() - self.started
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self.close()
        self.done.callback(self.results)

    def close(self) -> None:
        """
        Let go of connections and ports.
        """
