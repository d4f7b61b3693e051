# -*- test-case-name: tests.test_stats,tests.test_metrics -*-
"""
A process's counts as plain data: what a worker reports to its supervisor,
what a supervisor sums, and what the metrics page shows.  Kept apart from
L{echotwist.metrics}, so that counting needs no prometheus_client.
"""

from __future__ import annotations

from typing import Any

from echotwist.connections import EchoFactory
from echotwist.datagram import DatagramPolicy

__all__ = ["Stats", "addStats", "stats"]

Stats = dict[str, Any]


def stats(factory: EchoFactory, policy: DatagramPolicy) -> Stats:
    """
    One process's counts, as plain data: what a worker reports to its
    supervisor, and what L{EchoCollector} turns into metrics.
    """
    return {
        "accepted": factory.accepted,
        "closed": factory.closed,
        "open": len(factory.connections),
        "awaitingHeader": len(factory.awaiting),
        "sources": len(factory.perSource),
        "evicted": factory.evicted,
        "refused": dict(factory.refused),
        "streamBytes": factory.bytesOfClosed
        + sum(protocol.bytesEchoed for protocol in factory.connections),
        "datagrams": dict(policy.counts),
        "udpReceived": policy.bytes["received"],
        "udpSent": policy.bytes["sent"],
    }


def addStats(total: Stats, more: Stats) -> Stats:
    """
    The sum of two processes' counts.
    """
    summed: Stats = {}
    for key in total.keys() | more.keys():
        mine, theirs = total.get(key), more.get(key)
        if isinstance(mine, dict) or isinstance(theirs, dict):
            summed[key] = addStats(mine or {}, theirs or {})
        else:
            summed[key] = (mine or 0) + (theirs or 0)
    return summed
