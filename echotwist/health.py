# -*- test-case-name: tests.test_health -*-
"""
Health for orchestrators, on the C{--metrics} endpoint and on C{--health}
(the same pages without C{/metrics}):

  - C{/healthz}: 200 while the process serves HTTP at all (a liveness
    probe: it stays 200 through the drain, or the orchestrator would kill
    the drain it asked for);
  - C{/readyz}: 200 while every listener listens and the server is not
    draining, 503 with the reason otherwise (a readiness probe: it fails
    the moment SIGTERM arrives, so a Service or a load balancer stops
    sending new clients while open connections still echo);
  - C{/info}: the server's identity and the client's address, as JSON
    (L{echotwist.identity}).

The site is the metrics site (L{echotwist.metrics.metricsSite}), with its
guards: a few connections at once, each for a few seconds, GET and HEAD
only.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.resource import Resource
from twisted.web.server import Request

from echotwist.identity import Identity

__all__ = ["Health", "Info", "Liveness", "Readiness"]


class _Page(Resource):
    """
    A page whose answer is computed on each request, never cached, GET and
    HEAD alike.
    """

    isLeaf = True
    contentType = b"text/plain; charset=utf-8"

    def body(self, request: Request) -> bytes:
        """
        The answer to C{request}; it may set the response code.
        """
        raise NotImplementedError

    def render_GET(self, request: Request) -> bytes:
        body = self.body(request)
        request.setHeader(b"Content-Type", self.contentType)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body

    def render_HEAD(self, request: Request) -> bytes:
        # Without its own render_HEAD, twisted.web fakes HEAD with GET and
        # logs a line each time.
        self.render_GET(request)
        return b""


class Liveness(_Page):
    """
    C{/healthz}: answered at all, the process serves.
    """

    def body(self, request: Request) -> bytes:
        """
        C{ok}.
        """
        return b"ok\n"


class Readiness(_Page):
    """
    C{/readyz}: 200 and C{ready}, or 503 and why not.
    """

    def __init__(self, notReady: Callable[[], list[str]]) -> None:
        """
        @param notReady: the reasons the server is not ready: none when it
            is.
        """
        super().__init__()
        self.notReady = notReady

    def body(self, request: Request) -> bytes:
        """
        C{ready}, or 503 and C{not ready: } with the reasons.
        """
        reasons = self.notReady()
        if not reasons:
            return b"ready\n"
        request.setResponseCode(503)
        return ("not ready: " + "; ".join(reasons) + "\n").encode("ascii", "replace")


class Info(_Page):
    """
    C{/info}: the server's identity and the client's address as JSON.
    """

    contentType = b"application/json"

    def __init__(self, identity: Identity) -> None:
        super().__init__()
        self.identity = identity

    def body(self, request: Request) -> bytes:
        """
        The identity, with the address of the client that asked.
        """
        return self.identity.asJSON(request.getClientAddress())


class Health:
    """
    What the health pages read: the server's readiness and its identity.
    """

    def __init__(self, notReady: Callable[[], list[str]], identity: Identity) -> None:
        self.notReady = notReady
        self.identity = identity

    def pages(self) -> dict[bytes, Resource]:
        """
        The pages, by name.
        """
        return {
            b"healthz": Liveness(),
            b"readyz": Readiness(self.notReady),
            b"info": Info(self.identity),
        }
