"""
Prometheus metrics: cheap counting on the request path, exposition at
scrape time.

The request path only bumps plain Python integers and list cells (no
``.labels()`` lookups, no locks: the reactor is one thread).  A `Collector`
registered in one explicit `CollectorRegistry` reads those numbers, and the
live state of the node (connections, datastore, peers, hints, ring), when
Prometheus scrapes ``/metrics``.  `CATALOGUE` lists every metric family the
node exports; the monitoring tests check dashboards and alert rules against
it.

Names follow Prometheus conventions: ``dynomite_`` prefix, base units
(seconds, bytes), ``_total`` for counters, bounded labels (command family,
result, peer, datacenter; never keys or client addresses).  ``dc`` and
``rack`` of the node itself are target labels set in the scrape
configuration; the node's own labels say ``node_dc``/``node_rack`` (build
info) and ``ring_dc``/``ring_rack`` (ring nodes) so they never clash with
them.  Every known label value is exported from the start at 0, so that
``increase()`` sees the first event after a restart.
"""

from __future__ import annotations

import platform
from typing import Dict, Iterable, List, NamedTuple, Tuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from dynomite import __version__
from dynomite.config.vocabulary import CONSISTENCY_LEVELS as LEVELS, NODE_STATES
from dynomite.stats import REQUEST_RESULTS, Histogram, NodeMetrics

DROP_REASONS = ("window", "overflow", "truncated")

class Spec(NamedTuple):
    name: str
    kind: str  # counter | gauge | histogram | info
    help: str
    labels: Tuple[str, ...] = ()


CATALOGUE: Tuple[Spec, ...] = (
    Spec("dynomite_build_info", "gauge", "Always 1; labels say what runs and where.",
         ("version", "python", "node_dc", "node_rack")),
    Spec("dynomite_uptime_seconds", "gauge", "Seconds since the node started."),
    Spec("dynomite_node_state", "gauge", "1 for the node's current state.", ("state",)),
    Spec("dynomite_client_connections", "gauge", "Open client connections."),
    Spec("dynomite_client_connections_accepted_total", "counter", "Client connections accepted."),
    Spec("dynomite_client_requests_total", "counter", "Client requests answered, by command family and result.",
         ("family", "result")),
    Spec("dynomite_request_duration_seconds", "histogram",
         "Time from reading a request to writing its reply.", ("op",)),
    Spec("dynomite_client_protocol_errors_total", "counter", "Connections closed for a protocol error.", ("reason",)),
    Spec("dynomite_datastore_up", "gauge", "1 while the local Redis has a usable connection."),
    Spec("dynomite_datastore_requests_total", "counter", "Requests sent to the local Redis, by result.", ("result",)),
    Spec("dynomite_datastore_request_duration_seconds", "histogram",
         "Time from sending a request to the local Redis to its reply (sampled)."),
    Spec("dynomite_datastore_in_flight", "gauge", "Requests waiting for the local Redis."),
    Spec("dynomite_peer_up", "gauge", "1 while a peer link is UP.", ("peer", "peer_dc", "peer_rack")),
    Spec("dynomite_peer_requests_total", "counter",
         "Requests sent to peers (a run of pipelined requests is one), by peer datacenter and result.",
         ("peer_dc", "result")),
    Spec("dynomite_peer_request_duration_seconds", "histogram",
         "Time from sending a request to a peer to its reply (sampled), by peer datacenter.", ("peer_dc",)),
    Spec("dynomite_peer_requests_in_flight", "gauge", "Requests waiting for a peer.", ("peer_dc",)),
    Spec("dynomite_peer_timeouts_total", "counter", "Peer requests that timed out.", ("peer_dc",)),
    Spec("dynomite_peer_ejections_total", "counter", "Peer connections dropped for silence.", ("peer",)),
    Spec("dynomite_replication_writes_total", "counter", "Writes sent to replicas, by scope and result.",
         ("scope", "result")),
    Spec("dynomite_quorum_failures_total", "counter", "Requests answered -ERR for lack of quorum.",
         ("op", "consistency")),
    Spec("dynomite_hints_pending", "gauge", "Hints waiting for a target.", ("target",)),
    Spec("dynomite_hints_pending_bytes", "gauge", "Bytes of hints waiting for a target.", ("target",)),
    Spec("dynomite_hints_oldest_age_seconds", "gauge", "Age of the oldest hint waiting for a target.", ("target",)),
    Spec("dynomite_hints_stored_total", "counter", "Hints written to the hint log.", ("target",)),
    Spec("dynomite_hints_replayed_total", "counter", "Hints delivered after their target came back.", ("target",)),
    Spec("dynomite_hints_dropped_total", "counter", "Hints dropped, by reason.", ("target", "reason")),
    Spec("dynomite_ring_nodes", "gauge", "Nodes of the ring by datacenter, rack and state.",
         ("ring_dc", "ring_rack", "state")),
    Spec("dynomite_config_reloads_total", "counter", "Configuration reloads (SIGHUP), by result.", ("result",)),
    Spec("dynomite_config_last_reload_success_timestamp_seconds", "gauge",
         "When the configuration was last loaded successfully."),
)

# Every metric family name the node exports (counters with their _total).
EXPORTED_NAMES = frozenset(s.name for s in CATALOGUE)


class Collector:
    """Turns a running `NodeService` into metric families at scrape time."""

    def __init__(self, service) -> None:
        self.service = service

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        s = self.service
        m: NodeMetrics = s.metrics
        node = s.node
        config = s.config
        now = s.clock.seconds()

        g = GaugeMetricFamily("dynomite_build_info", CATALOGUE[0].help,
                              labels=["version", "python", "node_dc", "node_rack"])
        g.add_metric([__version__, "%s %s" % (platform.python_implementation(), platform.python_version()),
                      config.datacenter, config.rack], 1)
        yield g
        yield GaugeMetricFamily("dynomite_uptime_seconds", "Seconds since the node started.",
                                value=now - node.started)
        state = GaugeMetricFamily("dynomite_node_state", "1 for the node's current state.", labels=["state"])
        current = getattr(s, "state", None)
        current_name = getattr(current, "name", "NORMAL") if current is not None else "NORMAL"
        for name in NODE_STATES:
            state.add_metric([name], 1 if name == current_name else 0)
        yield state
        yield GaugeMetricFamily("dynomite_client_connections", "Open client connections.", value=len(node.clients))
        yield CounterMetricFamily("dynomite_client_connections_accepted", "Client connections accepted.",
                                  value=node.connections_accepted)
        c = CounterMetricFamily("dynomite_client_requests", "Client requests answered, by command family and result.",
                                labels=["family", "result"])
        for family, (ok, err) in m.requests.items():
            c.add_metric([family, "ok"], ok)
            c.add_metric([family, "error"], err)
        yield c
        h = HistogramMetricFamily("dynomite_request_duration_seconds",
                                  "Time from reading a request to writing its reply.", labels=["op"])
        for op, hist in (("read", m.read_latency), ("write", m.write_latency)):
            h.add_metric([op], hist.cumulative(), hist.total)
        yield h
        c = CounterMetricFamily("dynomite_client_protocol_errors", "Connections closed for a protocol error.",
                                labels=["reason"])
        for reason, n in m.protocol_errors.items():
            c.add_metric([reason], n)
        yield c

        ds = s.datastore
        yield GaugeMetricFamily("dynomite_datastore_up", "1 while the local Redis has a usable connection.",
                                value=1 if ds.is_up else 0)
        c = CounterMetricFamily("dynomite_datastore_requests", "Requests sent to the local Redis, by result.",
                                labels=["result"])
        counts = ds.request_counts()
        for result in REQUEST_RESULTS:
            c.add_metric([result], counts[result])
        yield c
        h = HistogramMetricFamily("dynomite_datastore_request_duration_seconds",
                                  "Time from sending a request to the local Redis to its reply (sampled).")
        h.add_metric([], ds.latency.cumulative(), ds.latency.total)
        yield h
        yield GaugeMetricFamily("dynomite_datastore_in_flight", "Requests waiting for the local Redis.",
                                value=ds.in_flight)

        up = GaugeMetricFamily("dynomite_peer_up", "1 while a peer link is UP.",
                               labels=["peer", "peer_dc", "peer_rack"])
        in_flight = GaugeMetricFamily("dynomite_peer_requests_in_flight", "Requests waiting for a peer.",
                                      labels=["peer_dc"])
        timeouts = CounterMetricFamily("dynomite_peer_timeouts", "Peer requests that timed out.", labels=["peer_dc"])
        ejections = CounterMetricFamily("dynomite_peer_ejections", "Peer connections dropped for silence.",
                                        labels=["peer"])
        requests = CounterMetricFamily(
            "dynomite_peer_requests",
            "Requests sent to peers (a run of pipelined requests is one), by peer datacenter and result.",
            labels=["peer_dc", "result"])
        duration = HistogramMetricFamily(
            "dynomite_peer_request_duration_seconds",
            "Time from sending a request to a peer to its reply (sampled), by peer datacenter.",
            labels=["peer_dc"])
        per_dc: Dict[str, List[int]] = {}
        per_dc_results: Dict[str, Dict[str, int]] = {}
        per_dc_latency: Dict[str, Histogram] = {}
        for link in s.peers.values():
            dc = link.datacenter
            up.add_metric([link.name, dc, link.rack], 1 if link.is_up else 0)
            acc = per_dc.setdefault(dc, [0, 0])
            acc[0] += link.in_flight
            acc[1] += link.timed_out_total
            ejections.add_metric([link.name], link.dropped_total)
            results = per_dc_results.setdefault(dc, dict.fromkeys(REQUEST_RESULTS, 0))
            for result, n in link.request_counts().items():
                results[result] += n
            per_dc_latency.setdefault(dc, Histogram()).add(link.latency)
        for dc, (n_in_flight, n_timeouts) in sorted(per_dc.items()):
            in_flight.add_metric([dc], n_in_flight)
            timeouts.add_metric([dc], n_timeouts)
            for result in REQUEST_RESULTS:
                requests.add_metric([dc, result], per_dc_results[dc][result])
            hist = per_dc_latency[dc]
            duration.add_metric([dc], hist.cumulative(), hist.total)
        yield up
        yield requests
        yield duration
        yield in_flight
        yield timeouts
        yield ejections

        co = s.coordinator
        c = CounterMetricFamily("dynomite_replication_writes", "Writes sent to replicas, by scope and result.",
                                labels=["scope", "result"])
        for scope, (acked, failed) in (("local_rack", co.local_writes), ("remote_dc", co.remote_writes)):
            c.add_metric([scope, "acked"], acked)
            c.add_metric([scope, "failed"], failed)
        hinted = {"local_rack": 0, "remote_dc": 0}
        for target, outbox in s.outboxes.items():
            link = s.peers.get(target)
            remote = target.startswith("dc:") or (link is not None and link.datacenter != config.datacenter)
            scope = "remote_dc" if remote else "local_rack"
            hinted[scope] += outbox.hints.appended_total
        for scope, n in sorted(hinted.items()):
            c.add_metric([scope, "hinted"], n)
        yield c
        c = CounterMetricFamily("dynomite_quorum_failures", "Requests answered -ERR for lack of quorum.",
                                labels=["op", "consistency"])
        for op in ("read", "write"):
            for level in LEVELS:
                c.add_metric([op, level], co.quorum_failures.get((op, level), 0))
        yield c

        yield from self._hints(now)

        ring = GaugeMetricFamily("dynomite_ring_nodes", "Nodes of the ring by datacenter, rack and state.",
                                 labels=["ring_dc", "ring_rack", "state"])
        counts: Dict[Tuple[str, str, str], int] = {}
        for info in s.topology.nodes:
            if info.is_local:
                st = "up"
            else:
                st = "up" if s.peers[info.name].is_up else "down"
            key = (info.datacenter, info.rack, st)
            counts[key] = counts.get(key, 0) + 1
        for (dc, rack, st), n in sorted(counts.items()):
            ring.add_metric([dc, rack, st], n)
        yield ring

        c = CounterMetricFamily("dynomite_config_reloads", "Configuration reloads (SIGHUP), by result.",
                                labels=["result"])
        for result, n in sorted(m.reloads.items()):
            c.add_metric([result], n)
        yield c
        if m.last_reload_success is not None:
            yield GaugeMetricFamily("dynomite_config_last_reload_success_timestamp_seconds",
                                    "When the configuration was last loaded successfully.",
                                    value=m.last_reload_success)

    def _hints(self, now: float) -> Iterable:
        pending = GaugeMetricFamily("dynomite_hints_pending", "Hints waiting for a target.", labels=["target"])
        pending_bytes = GaugeMetricFamily("dynomite_hints_pending_bytes", "Bytes of hints waiting for a target.",
                                          labels=["target"])
        oldest = GaugeMetricFamily("dynomite_hints_oldest_age_seconds",
                                   "Age of the oldest hint waiting for a target.", labels=["target"])
        stored = CounterMetricFamily("dynomite_hints_stored", "Hints written to the hint log.", labels=["target"])
        replayed = CounterMetricFamily("dynomite_hints_replayed", "Hints delivered after their target came back.",
                                       labels=["target"])
        dropped = CounterMetricFamily("dynomite_hints_dropped", "Hints dropped, by reason.",
                                      labels=["target", "reason"])
        for target, outbox in sorted(self.service.outboxes.items()):
            stats = outbox.stats(now)
            pending.add_metric([target], stats["pending"])
            pending_bytes.add_metric([target], stats["pending_bytes"])
            oldest.add_metric([target], stats["oldest_age_seconds"])
            stored.add_metric([target], stats["stored_total"])
            replayed.add_metric([target], stats["replayed_total"])
            reasons = dict.fromkeys(DROP_REASONS, 0)
            reasons.update(stats["dropped_total"])
            for reason, n in sorted(reasons.items()):
                dropped.add_metric([target, reason], n)
        yield from (pending, pending_bytes, oldest, stored, replayed, dropped)


def make_registry(service) -> CollectorRegistry:
    """One explicit registry: the node's collector plus process, platform and GC."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(service))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
