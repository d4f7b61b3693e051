# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics, read from the server's books when scraped.

Nothing is counted for the metrics themselves: the collector reads the
counts the factory and the datagram policy keep anyway, so a scrape costs
O(open connections) and the data path pays nothing.

The listener is built for scrapers that misbehave, since it shares the
echo's reactor: at most L{MAX_METRICS_CONNECTIONS} connections, each closed
L{METRICS_CONNECTION_LIFETIME} seconds after it opened, GET and HEAD only,
no request body ever read, no access log, and nothing raised when a
scraper leaves before its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from io import BytesIO
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IProtocolFactory,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from echotwist._twisted import requestMethod
from echotwist.connections import CONNECTION_REFUSALS
from echotwist.datagram import DATAGRAM_REFUSALS
from echotwist.guard import ConnectionGuard
from echotwist.stats import Stats

# prometheus_client is the metrics extra's: imported where /metrics is
# served, so that the health pages (--health) need only Twisted.
if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

__all__ = [
    "MAX_METRICS_CONNECTIONS",
    "METRICS_CONNECTION_LIFETIME",
    "EchoCollector",
    "MetricsGuard",
    "buildInfo",
    "metricsSite",
    "registryFor",
]


def _byReason(
    name: str, documentation: str, reasons: Iterable[str], counts: Mapping[str, int]
) -> Metric:
    """
    A counter with a C{reason} label: one sample for each of C{reasons},
    0 for those C{counts} has not seen.
    """
    from prometheus_client.core import CounterMetricFamily

    counter = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason in reasons:
        counter.add_metric([reason], counts.get(reason, 0))
    return counter


class EchoCollector:
    """
    A Prometheus collector over a server's counts: C{snapshot()} returns
    them (one process's, or the sum of its workers').
    """

    def __init__(
        self,
        snapshot: Callable[[], Stats],
        workers: Callable[[], int],
        reactor: object = None,
    ) -> None:
        self.snapshot = snapshot
        self.workers = workers
        self.buildInfo = buildInfo(reactor)

    def collect(self) -> Iterator[Metric]:
        """
        The metrics of the counts now (what prometheus_client calls on
        every scrape).
        """
        now = self.snapshot()
        yield from self._streamMetrics(now)
        yield from self._datagramMetrics(now)
        yield from self._processMetrics(now)

    def _streamMetrics(self, now: Mapping[str, Any]) -> Iterator[Metric]:
        """
        The stream connections' metrics, and the bytes of both transports.
        """
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        refusedCounts = now["refused"]
        yield CounterMetricFamily(
            "echotwist_connections_accepted",
            "Stream connections admitted.",
            value=now["accepted"],
        )
        yield CounterMetricFamily(
            "echotwist_connections_closed",
            "Stream connections closed, for any reason.",
            value=now["closed"],
        )
        yield _byReason(
            "echotwist_connections_refused",
            "Stream connections closed unanswered by a limit.",
            CONNECTION_REFUSALS,
            refusedCounts,
        )
        yield CounterMetricFamily(
            "echotwist_connections_evicted",
            "Stream connections closed to admit a new client to a full server:"
            " of the source holding the most, or idle.",
            value=now.get("evicted", 0),
        )
        yield GaugeMetricFamily(
            "echotwist_connections_open",
            "Stream connections open now.",
            value=now["open"],
        )
        yield GaugeMetricFamily(
            "echotwist_connections_awaiting_header",
            "Stream connections to haproxy: listeners whose PROXY header is"
            " not in yet; they count against the limits as their proxy's.",
            value=now.get("awaitingHeader", 0),
        )
        yield GaugeMetricFamily(
            "echotwist_sources_open",
            "Sources with stream connections open: IPv4 addresses and IPv6"
            " networks of --ipv6-prefix bits, as the per-source limit counts"
            " them.",
            value=now.get("sources", 0),
        )
        for direction, udp, help in (
            ("received", now["udpReceived"], "Bytes received from clients."),
            ("sent", now["udpSent"], "Bytes echoed back to clients."),
        ):
            family = CounterMetricFamily(
                f"echotwist_{direction}_bytes", help, labels=["transport"]
            )
            family.add_metric(["stream"], now["streamBytes"])
            family.add_metric(["udp"], udp)
            yield family

    def _datagramMetrics(self, now: Mapping[str, Any]) -> Iterator[Metric]:
        """
        The UDP datagrams' metrics.
        """
        from prometheus_client.core import CounterMetricFamily

        counts = now["datagrams"]
        yield CounterMetricFamily(
            "echotwist_datagrams_answered",
            "UDP datagrams answered.",
            value=counts.get("answered", 0),
        )
        yield _byReason(
            "echotwist_datagrams_refused",
            "UDP datagrams not answered: a loop guard, a reflection guard or"
            " the rate limit.",
            DATAGRAM_REFUSALS,
            counts,
        )
        yield CounterMetricFamily(
            "echotwist_datagram_send_errors",
            "UDP answers the kernel would not send.",
            value=counts.get("send failed", 0),
        )

    def _processMetrics(self, now: Mapping[str, Any]) -> Iterator[Metric]:
        """
        The workers' metrics, and what this server runs.
        """
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(
            "echotwist_workers",
            "Worker processes serving now: with --workers, those that sent"
            " their supervisor a heartbeat within the last few seconds.",
            value=self.workers(),
        )
        yield CounterMetricFamily(
            "echotwist_worker_spawn_failures",
            "Attempts to start a worker process that failed (fork refused:"
            " a process-count limit, no memory); each is tried again.",
            value=now.get("workerSpawnFailures", 0),
        )
        yield CounterMetricFamily(
            "echotwist_workers_hung",
            "Worker processes killed (and replaced) for sending no heartbeat"
            " for --worker-timeout seconds.",
            value=now.get("workersHung", 0),
        )
        info = GaugeMetricFamily(
            "echotwist_build_info",
            "Always 1: what this server runs, in its labels.",
            labels=list(self.buildInfo),
        )
        info.add_metric(list(self.buildInfo.values()), 1)
        yield info


def buildInfo(reactor: object) -> dict[str, str]:
    """
    The labels of C{echotwist_build_info}: echotwist's version, Twisted's,
    Python's, and the reactor serving (its class, as the start log names it;
    empty when not known).
    """
    import platform

    import twisted

    from echotwist import __version__

    reactorType = type(reactor)
    return {
        "version": __version__,
        "twisted": twisted.__version__,
        "python": platform.python_version(),
        "reactor": ""
        if reactor is None
        else f"{reactorType.__module__}.{reactorType.__qualname__}",
    }


def registryFor(collector: EchoCollector) -> CollectorRegistry:
    """
    A registry with echotwist's metrics and the process's own (CPU, memory,
    descriptors).
    """
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


#: Metrics connections open at once.  One more is closed as soon as it is
#: accepted: a scrape storm costs an accept and a close each, and the echo
#: in the same reactor keeps its turn.  A Prometheus server holds one
#: connection per target; 16 leave room for a few of them, a curl or two,
#: and a health checker.
MAX_METRICS_CONNECTIONS = 16

#: Metrics connections open at once from one source (an IPv4 address, an
#: IPv6 /64): a Prometheus server holds one, a kubelet one per probe, so 4
#: leave room; one client cannot take the 16 and fail the health probes.
MAX_METRICS_CONNECTIONS_PER_SOURCE = 4

#: Seconds a metrics connection may stay open, whatever it is doing.  A
#: scrape takes milliseconds; a client that dribbles its request, never
#: reads the answer or just holds the connection loses its place after
#: this.  Scrapers that keep connections alive open a new one.
METRICS_CONNECTION_LIFETIME = 5.0

log = Logger()


class _MetricsRequest(Request):
    """
    A request to the metrics site: GET or HEAD, without a body.

    twisted.web reads a request's whole body before the resource sees the
    request, into memory or, past 100 KB (and for any chunked body), into a
    temporary file.  Metrics take no input, so a request that announces a
    body, or uses any other method, is answered at once (405 or 413) and
    its connection closed; nothing it sends is kept.
    """

    _refused = False

    def gotLength(self, length: int | None) -> None:
        # twisted.web has no public way to the method yet.  Were it ever
        # missing, any body is still refused, by 413.
        method = requestMethod(self.channel)
        if method is not None and method not in (b"GET", b"HEAD"):
            self._refuse(b"405 Method Not Allowed", b"Allow: GET, HEAD\r\n")
        elif length != 0:
            # None: a chunked body, of any length.
            self._refuse(b"413 Content Too Large", b"")
        else:
            super().gotLength(length)

    def _refuse(self, status: bytes, headers: bytes) -> None:
        self._refused = True
        self.content = BytesIO()
        channel = self.channel
        assert channel.transport is not None
        channel.transport.write(
            b"HTTP/1.1 " + status + b"\r\n" + headers + b"Content-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        channel.loseConnection()

    def handleContentChunk(self, data: bytes) -> None:
        if not self._refused:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # What a refused request sent before its connection closed can end
        # up complete; it has had its answer.
        if not self._refused:
            super().requestReceived(command, path, version)


class _MetricsSite(Site):
    requestFactory = _MetricsRequest
    noisy = False
    displayTracebacks = False

    def log(self, request: http.Request) -> None:
        # No access log: a line per scrape says nothing an operator needs,
        # and a scrape storm would make it the server's biggest cost.
        pass


class _MetricsPage(Resource):
    isLeaf = True

    def __init__(
        self, registry: CollectorRegistry, refresh: Callable[[], Deferred[None]] | None
    ) -> None:
        super().__init__()
        self.registry = registry
        self.refresh = refresh

    def render_GET(self, request: Request) -> bytes | int:
        return self._render(request, head=False)

    def render_HEAD(self, request: Request) -> bytes | int:
        # Without its own render_HEAD, twisted.web fakes HEAD with GET and
        # logs a line each time.
        return self._render(request, head=True)

    def _render(self, request: Request, head: bool) -> bytes | int:
        from prometheus_client import CONTENT_TYPE_LATEST

        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        if self.refresh is None:
            return self._body(request, head)
        # The scraper may leave while the workers are asked; finishing a
        # request whose connection is gone raises.
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def render(_: object) -> None:
            if not gone:
                request.write(self._body(request, head))
                request.finish()

        self.refresh().addCallback(render)
        return NOT_DONE_YET

    def _body(self, request: Request, head: bool) -> bytes:
        from prometheus_client import generate_latest

        body = generate_latest(self.registry)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return b"" if head else body


class MetricsGuard(ConnectionGuard):
    """
    Guards the metrics site (L{ConnectionGuard}): at most
    C{maxConnections} connections at once, C{maxPerSource} from one
    source, each closed C{lifetime} seconds after it opened; refusals are
    logged as C{metrics.refused}.
    """

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        reactor: IReactorTime | None = None,
        maxConnections: int = MAX_METRICS_CONNECTIONS,
        lifetime: float = METRICS_CONNECTION_LIFETIME,
        maxPerSource: int = MAX_METRICS_CONNECTIONS_PER_SOURCE,
    ) -> None:
        super().__init__(
            wrappedFactory,
            reactor,
            maxConnections=maxConnections,
            lifetime=lifetime,
            maxPerSource=maxPerSource,
            what="metrics",
            event="metrics.refused",
            log=log,
        )


def metricsSite(
    registry: CollectorRegistry | None,
    refresh: Callable[[], Deferred[None]] | None = None,
    reactor: IReactorTime | None = None,
    pages: Mapping[bytes, Resource] | None = None,
) -> MetricsGuard:
    """
    A web site serving C{registry} at C{/metrics} (or nothing there, if
    None), and C{pages} (the health pages, L{echotwist.health}) by name;
    with C{refresh}, each scrape waits for it first (a supervisor asking
    its workers).  GET and HEAD only, no request bodies, no access log, and
    guarded by L{MetricsGuard}.

    prometheus_client's own C{MetricsResource} collects on the reactor's
    thread pool; the books are the reactor thread's, so this page collects
    there (a scrape is cheap).
    """
    root = Resource()
    if registry is not None:
        root.putChild(b"metrics", _MetricsPage(registry, refresh))
    for name, page in (pages or {}).items():
        root.putChild(name, page)
    return MetricsGuard(_MetricsSite(root, reactor=reactor), reactor)
