# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics, read from the server's books when scraped.

Nothing is counted for the metrics themselves: the collector reads the
counts the factory and the datagram policy keep anyway, so a scrape costs
O(open connections) and the data path pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from echotwist.datagram import DATAGRAM_REFUSALS
from echotwist.stats import Stats
from echotwist.stream import CONNECTION_REFUSALS

__all__ = ["EchoCollector", "metricsSite", "registryFor"]


class EchoCollector:
    """
    A Prometheus collector over a server's counts: C{snapshot()} returns
    them (one process's, or the sum of its workers').
    """

    def __init__(
        self, snapshot: Callable[[], Stats], workers: Callable[[], int]
    ) -> None:
        self.snapshot = snapshot
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        now = self.snapshot()
        refusedCounts, counts = now["refused"], now["datagrams"]
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
        refused = CounterMetricFamily(
            "echotwist_connections_refused",
            "Stream connections closed unanswered by a limit.",
            labels=["reason"],
        )
        for reason in CONNECTION_REFUSALS:
            refused.add_metric([reason], refusedCounts.get(reason, 0))
        yield refused
        yield CounterMetricFamily(
            "echotwist_connections_evicted",
            "Idle stream connections closed to admit a new client to a full server.",
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
        yield CounterMetricFamily(
            "echotwist_datagrams_answered",
            "UDP datagrams answered.",
            value=counts.get("answered", 0),
        )
        datagramsRefused = CounterMetricFamily(
            "echotwist_datagrams_refused",
            "UDP datagrams not answered: a loop guard, a reflection guard or"
            " the rate limit.",
            labels=["reason"],
        )
        for reason in DATAGRAM_REFUSALS:
            datagramsRefused.add_metric([reason], counts.get(reason, 0))
        yield datagramsRefused
        yield CounterMetricFamily(
            "echotwist_datagram_send_errors",
            "UDP answers the kernel would not send.",
            value=counts.get("send failed", 0),
        )
        yield GaugeMetricFamily(
            "echotwist_workers", "Worker processes serving now.", value=self.workers()
        )


def registryFor(collector: EchoCollector) -> CollectorRegistry:
    """
    A registry with echotwist's metrics and the process's own (CPU, memory,
    descriptors).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


class _MetricsPage(Resource):
    isLeaf = True

    def __init__(
        self, registry: CollectorRegistry, refresh: Callable[[], Deferred[None]] | None
    ) -> None:
        super().__init__()
        self.registry = registry
        self.refresh = refresh

    def render_GET(self, request: Request) -> bytes | int:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        if self.refresh is None:
            return generate_latest(self.registry)

        def render(_: object) -> None:
            request.write(generate_latest(self.registry))
            request.finish()

        self.refresh().addCallback(render)
        return NOT_DONE_YET


def metricsSite(
    registry: CollectorRegistry, refresh: Callable[[], Deferred[None]] | None = None
) -> Site:
    """
    A web site serving C{registry} at C{/metrics}; with C{refresh}, each
    scrape waits for it first (a supervisor asking its workers).

    prometheus_client's own C{MetricsResource} collects on the reactor's
    thread pool; the books are the reactor thread's, so this page collects
    there (a scrape is cheap).
    """
    root = Resource()
    root.putChild(b"metrics", _MetricsPage(registry, refresh))
    site = Site(root)
    site.noisy = False
    site.displayTracebacks = False
    return site
