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
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from echotwist.datagram import DATAGRAM_REFUSALS, DatagramPolicy
from echotwist.stream import CONNECTION_REFUSALS, EchoFactory

__all__ = ["EchoCollector", "metricsSite", "registryFor"]


class EchoCollector:
    """
    A Prometheus collector over one server's books.
    """

    def __init__(
        self,
        factory: EchoFactory,
        policy: DatagramPolicy,
        workers: Callable[[], int] = lambda: 1,
    ) -> None:
        self.factory = factory
        self.policy = policy
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        factory, counts = self.factory, self.policy.counts
        yield CounterMetricFamily(
            "echotwist_connections_accepted",
            "Stream connections admitted.",
            value=factory.accepted,
        )
        yield CounterMetricFamily(
            "echotwist_connections_closed",
            "Stream connections closed, for any reason.",
            value=factory.closed,
        )
        refused = CounterMetricFamily(
            "echotwist_connections_refused",
            "Stream connections closed unanswered by a limit.",
            labels=["reason"],
        )
        for reason in CONNECTION_REFUSALS:
            refused.add_metric([reason], factory.refused.get(reason, 0))
        yield refused
        yield GaugeMetricFamily(
            "echotwist_connections_open",
            "Stream connections open now.",
            value=len(factory.connections),
        )
        streamBytes = factory.bytesOfClosed + sum(
            protocol.bytesEchoed for protocol in factory.connections
        )
        for direction, help in (
            ("received", "Bytes received from clients."),
            ("sent", "Bytes echoed back to clients."),
        ):
            family = CounterMetricFamily(
                f"echotwist_{direction}_bytes", help, labels=["transport"]
            )
            family.add_metric(["stream"], streamBytes)
            family.add_metric(["udp"], self.policy.bytes[direction])
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

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


def metricsSite(registry: CollectorRegistry) -> Site:
    """
    A web site serving C{registry} at C{/metrics}.

    prometheus_client's own C{MetricsResource} collects on the reactor's
    thread pool; the books are the reactor thread's, so this page collects
    there, synchronously (a scrape is cheap).
    """
    root = Resource()
    root.putChild(b"metrics", _MetricsPage(registry))
    site = Site(root)
    site.noisy = False
    site.displayTracebacks = False
    return site
