# -*- test-case-name: tests.unit.test_monitoring -*-
"""
The numbers the hot path keeps: plain integers and latency histograms.

Requests bump these directly (no locks, no label lookups); `dynomite.ops.metrics`
reads them at scrape time and exports them to Prometheus.  This module sits
at the bottom of the package so that every layer may count.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Dict, List, Optional, Tuple

__all__ = ["BUCKETS", "CLIENT_LIMITS", "PUBSUB_EVENTS", "FAMILIES", "REQUEST_RESULTS", "Histogram", "NodeMetrics"]

#: Why the node closes or refuses a client connection: ``maxclients``
#: reached, idle past ``client_idle_timeout``, a request not completed
#: within ``client_read_timeout``, a subscriber's unread messages beyond
#: its output buffer limit (``pubsub_output_*``); and a connection accepted
#: late because its port's ``client_accept_rate`` was spent, or its
#: ``client_flood_accept_rate`` during a flood, and one refused because its
#: address floods the node (`dynomite.runtime.flood`).
CLIENT_LIMITS = ("maxclients", "idle", "read_timeout", "output_buffer", "accept_rate", "flood", "flooder")

#: What happens to pub/sub messages on a node: published by its clients,
#: received from other nodes, delivered to its subscriptions, dropped (not
#: sent to a node whose link was down).
PUBSUB_EVENTS = ("published", "received", "delivered", "dropped")

# Request latency buckets for a loopback proxy, in seconds.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Results of requests to the local Redis and to peers.
REQUEST_RESULTS = ("ok", "error", "timeout", "unavailable")

FAMILIES = (
    "string", "hash", "list", "set", "sorted-set", "generic", "bitmap", "hyperloglog",
    "geo", "stream", "scripting", "connection", "server", "pubsub", "other",
)


class Histogram:
    """Latency buckets as plain integers (exported cumulatively)."""

    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def observe_many(self, seconds: float, n: int) -> None:
        """``n`` observations of the same value (a run of pipelined requests answered together)."""
        self.counts[bisect_left(BUCKETS, seconds)] += n
        self.total += seconds * n
        self.count += n

    def add(self, other: "Histogram") -> None:
        """Add ``other``'s observations to this one (aggregation at scrape time)."""
        counts = self.counts
        for i, n in enumerate(other.counts):
            counts[i] += n
        self.total += other.total
        self.count += other.count

    def cumulative(self) -> List[Tuple[str, float]]:
        out = []
        running = 0
        for bound, n in zip(BUCKETS + (float("inf"),), self.counts):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

    def quantile(self, q: float) -> float:
        """An upper bound of the q-quantile (bucket resolution), 0 if empty."""
        if not self.count:
            return 0.0
        rank = q * self.count
        running = 0
        for bound, n in zip(BUCKETS + (BUCKETS[-1],), self.counts):
            running += n
            if running >= rank:
                return bound
        return BUCKETS[-1]


class NodeMetrics:
    """The counters the node's code bumps; read by `Collector`."""

    def __init__(self) -> None:
        # family -> [ok, error]; Node keeps a per-command reference to one of these
        self.requests: Dict[str, List[int]] = {f: [0, 0] for f in FAMILIES}
        self.read_latency = Histogram()
        self.write_latency = Histogram()
        # every known label value starts at 0, so increase() sees the first event
        self.protocol_errors: Dict[str, int] = {"malformed": 0, "oversize": 0}
        # client connections the node closed or refused, by why (CLIENT_LIMITS)
        self.client_limits: Dict[str, int] = {reason: 0 for reason in CLIENT_LIMITS}
        # failed AUTHs: wrong credentials, or refused unheard (dynomite.node.access)
        self.auth_failures: Dict[str, int] = {"wrongpass": 0, "throttled": 0}
        self.reloads = {"success": 0, "failure": 0}
        # peer connections the listener refused over TLS, by why (peers.listener.TLS_REFUSALS)
        self.peer_tls_refusals = {"plaintext": 0, "handshake": 0, "certificate_name": 0}
        self.last_reload_success: Optional[float] = None
        # pub/sub messages by what happened (PUBSUB_EVENTS), and the channels,
        # patterns and shard channels with a subscriber on this node
        self.pubsub: Dict[str, int] = dict.fromkeys(PUBSUB_EVENTS, 0)
        self.pubsub_subscriptions: Dict[str, int] = {"channel": 0, "pattern": 0, "shard_channel": 0}

    def family_counter(self, group: str) -> List[int]:
        return self.requests.get(group) or self.requests["other"]

    def count(self, table: Dict, key, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n
