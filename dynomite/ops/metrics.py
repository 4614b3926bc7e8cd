# -*- test-case-name: tests.unit.test_monitoring -*-
"""
Prometheus metrics: cheap counting on the request path, exposition at
scrape time.

The request path only bumps plain Python integers and list cells (no
``.labels()`` lookups, no locks: the reactor is one thread).  A `Collector`
registered in one explicit `CollectorRegistry` reads those numbers, and the
live state of the node (connections, datastore, peers, hints, ring), when
Prometheus scrapes ``/metrics``; it knows the node only through a
`NodeStatus`.

`CATALOGUE` is the one owner of every metric family the node exports: its
name, kind, help text and labels.  The collector builds each family from
it by name (`family`), and the monitoring tests check dashboards and alert
rules against it.

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
from dynomite.config.vocabulary import CONSISTENCY_LEVELS as LEVELS, JOINING, LEAVING, NODE_STATES, NORMAL
from dynomite.ops.status import NodeStatus
from dynomite.peers.gossip import STATUSES
from dynomite.peers.gossiper import GOSSIP_EVENTS
from dynomite.repair.run import PHASES as REPAIR_PHASES
from dynomite.replication.hints import DROP_REASONS
from dynomite.scaleout.manager import COUNTED as SCALEOUT_EVENTS, PHASES as SCALEOUT_PHASES
from dynomite.stats import PUBSUB_EVENTS, REQUEST_RESULTS, Histogram


#: ring statuses `dynomite_ring_nodes` counts (a LEFT node is no longer on the ring)
RING_STATUSES = (NORMAL, JOINING, LEAVING)
#: the phases of a join or leave under way (`dynomite_scaleout_running`): not idle, done or failed
MOVING_PHASES = tuple(p for p in SCALEOUT_PHASES if p not in ("idle", "done", "failed"))


class Spec(NamedTuple):
    """One metric family: counters are named with their ``_total``."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: Tuple[str, ...] = ()


CATALOGUE: Tuple[Spec, ...] = (
    Spec("dynomite_build_info", "gauge", "Always 1; labels say what runs and where.",
         ("version", "python", "node_dc", "node_rack")),
    Spec("dynomite_uptime_seconds", "gauge", "Seconds since the node started."),
    Spec("dynomite_node_state", "gauge", "1 for the node's current state.", ("state",)),
    Spec("dynomite_consistency", "gauge", "1 for the node's live read and write consistency level.",
         ("op", "level")),
    Spec("dynomite_client_connections", "gauge", "Open client connections."),
    Spec("dynomite_client_connections_accepted_total", "counter", "Client connections accepted."),
    Spec("dynomite_client_floods_total", "counter",
         "Floods of client connections ending without a valid request (client_flood_accept_rate)."),
    Spec("dynomite_client_flooded", "gauge", "1 while the client ports accept at the flood bound."),
    Spec("dynomite_client_flooders_total", "counter",
         "Times an address started being refused for opening connections that end without a valid request."),
    Spec("dynomite_client_requests_total", "counter", "Client requests answered, by command family and result.",
         ("family", "result")),
    Spec("dynomite_request_duration_seconds", "histogram",
         "Time from reading a request to writing its reply.", ("op",)),
    Spec("dynomite_client_protocol_errors_total", "counter", "Connections closed for a protocol error.", ("reason",)),
    Spec("dynomite_client_limits_total", "counter",
         "Client connections refused (maxclients), closed (idle, read_timeout, output_buffer)"
         " or accepted late (accept_rate, flood) by a limit, or refused for flooding (flooder).", ("reason",)),
    Spec("dynomite_auth_failures_total", "counter",
         "Failed AUTH and HELLO AUTH attempts: wrongpass, or throttled (too many failures from the address).",
         ("reason",)),
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
    Spec("dynomite_peer_tls", "gauge", "1 while a peer link is UP over TLS only.", ("peer", "peer_dc", "peer_rack")),
    Spec("dynomite_peer_tls_refusals_total", "counter",
         "Peer connections the listener refused: plaintext where TLS is required, failed TLS handshake,"
         " certificate not naming the node.", ("reason",)),
    Spec("dynomite_replication_writes_total", "counter", "Writes sent to replicas, by scope and result.",
         ("scope", "result")),
    Spec("dynomite_quorum_failures_total", "counter", "Requests answered -ERR for lack of quorum.",
         ("op", "consistency")),
    Spec("dynomite_write_order_total", "counter",
         "Leading writes (dynomite.node.leader): writes handed to the next leader (handed_on), writes"
         " failed because their leader was lost after they left for it (leader_lost), writes and copies"
         " sent on to the leader a node that no longer leads their keys named (leader_moved), versions"
         " from another datacenter refused for being too far ahead (clock_ahead), commands run"
         " once here and replicated as their effect (effects_run), or whose outcome here is unknown"
         " (effects_unknown), replayed writes this node's Redis had applied and skipped (replays_skipped),"
         " replayed FORWARDs this node as an entry had applied and answered at once (forwards_skipped) or"
         " that waited for the write in flight (forwards_waited),"
         " clients' runs of writes gathered per leader in a reactor turn (runs_gathered) and the runs they"
         " were led in (gathered_led).",
         ("event",)),
    Spec("dynomite_repair_keys_total", "counter",
         "Repair (dynomite.repair): keys scanned, cells and keys found differing, keys undecided (a tie),"
         " repaired, skipped (changed meanwhile); keys streamed or kept by warm-up; keys read repair fixed"
         " (read_repairs) or could not take (read_repairs_dropped).", ("event",)),
    Spec("dynomite_repair_running", "gauge", "1 while an anti-entropy repair runs (by phase).", ("phase",)),
    Spec("dynomite_warmup_running", "gauge", "1 while this node refills its Redis from other racks."),
    Spec("dynomite_hints_pending", "gauge", "Hints waiting for a target.", ("target",)),
    Spec("dynomite_hints_pending_bytes", "gauge", "Bytes of hints waiting for a target.", ("target",)),
    Spec("dynomite_hints_oldest_age_seconds", "gauge", "Age of the oldest hint waiting for a target.", ("target",)),
    Spec("dynomite_hints_stored_total", "counter", "Hints written to the hint log.", ("target",)),
    Spec("dynomite_hints_replayed_total", "counter", "Hints delivered after their target came back.", ("target",)),
    Spec("dynomite_hints_dropped_total", "counter", "Hints dropped, by reason.", ("target", "reason")),
    Spec("dynomite_ring_nodes", "gauge",
         "Nodes of the ring as this node sees them, by datacenter, rack, link state (up, down) and ring"
         " status (NORMAL; JOINING or LEAVING while scale-out moves their ranges).",
         ("ring_dc", "ring_rack", "state", "status")),
    Spec("dynomite_pubsub_messages_total", "counter",
         "Pub/sub messages: published by this node's clients, received from other nodes, delivered to"
         " this node's subscriptions, dropped (not sent to a node whose link was down).", ("event",)),
    Spec("dynomite_pubsub_subscriptions", "gauge",
         "Channels, patterns and shard channels with a subscriber on this node.", ("kind",)),
    Spec("dynomite_gossip_events_total", "counter",
         "Gossip (enable_gossip): rounds started, messages received, entries learned, joining nodes refused"
         " (a token clash, a removed node), malformed messages ignored.", ("event",)),
    Spec("dynomite_gossip_view_entries", "gauge", "Entries of the gossiped cluster view, by status.", ("status",)),
    Spec("dynomite_scaleout_keys_total", "counter",
         "Scale-out (dynomite.scaleout) driven by this node: keys scanned on the ranges' owners, copied to"
         " their new owners, copy errors (tried again), keys dropped from old owners after the cut-over.",
         ("event",)),
    Spec("dynomite_scaleout_running", "gauge", "1 for the phase of this node's join or leave under way.",
         ("phase",)),
    Spec("dynomite_config_reloads_total", "counter", "Configuration reloads (SIGHUP), by result.", ("result",)),
    Spec("dynomite_config_last_reload_success_timestamp_seconds", "gauge",
         "When the configuration was last loaded successfully."),
)

# Every metric family name the node exports (counters with their _total).
EXPORTED_NAMES = frozenset(s.name for s in CATALOGUE)
SPECS: Dict[str, Spec] = {s.name: s for s in CATALOGUE}

_KINDS = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}


def family(name: str):
    """An empty metric family for ``name``, with the kind, help text and labels `CATALOGUE` gives it."""
    spec = SPECS[name]
    return _KINDS[spec.kind](spec.name, spec.help, labels=spec.labels)


def single(name: str, value: float):
    """A family of one unlabelled sample."""
    f = family(name)
    f.add_metric([], value)
    return f


class Collector:
    """Turns a `NodeStatus` into the metric families of `CATALOGUE` at scrape time."""

    def __init__(self, status: NodeStatus) -> None:
        self.status = status

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        now = self.status.now()
        hints = self.status.hints(now)
        yield from self._node(now)
        yield from self._clients()
        yield from self._datastore()
        yield from self._peers()
        yield from self._replication(hints)
        yield from self._hints(hints)
        yield from self._ring()
        yield from self._reloads()
        yield from self._pubsub()
        yield from self._gossip()
        yield from self._scaleout()

    def _node(self, now: float) -> Iterable:
        s = self.status
        build = family("dynomite_build_info")
        build.add_metric([__version__, "%s %s" % (platform.python_implementation(), platform.python_version()),
                          s.datacenter, s.rack], 1)
        yield build
        yield single("dynomite_uptime_seconds", s.uptime(now))
        state = family("dynomite_node_state")
        for name in NODE_STATES:
            state.add_metric([name], 1 if name == s.state else 0)
        yield state
        consistency = family("dynomite_consistency")
        for op, live in (("read", s.read_consistency), ("write", s.write_consistency)):
            for level in LEVELS:
                consistency.add_metric([op, level], 1 if level == live else 0)
        yield consistency

    def _clients(self) -> Iterable:
        s = self.status
        m = s.metrics
        yield single("dynomite_client_connections", s.client_connections)
        yield single("dynomite_client_connections_accepted_total", s.connections_accepted)
        yield single("dynomite_client_floods_total", s.client_floods)
        yield single("dynomite_client_flooders_total", s.client_flooders)
        yield single("dynomite_client_flooded", int(s.client_flooded(s.now())))
        requests = family("dynomite_client_requests_total")
        for name, (ok, err) in m.requests.items():
            requests.add_metric([name, "ok"], ok)
            requests.add_metric([name, "error"], err)
        yield requests
        duration = family("dynomite_request_duration_seconds")
        for op, hist in (("read", m.read_latency), ("write", m.write_latency)):
            duration.add_metric([op], hist.cumulative(), hist.total)
        yield duration
        errors = family("dynomite_client_protocol_errors_total")
        for reason, n in m.protocol_errors.items():
            errors.add_metric([reason], n)
        yield errors
        limits = family("dynomite_client_limits_total")
        for reason, n in m.client_limits.items():
            limits.add_metric([reason], n)
        yield limits
        auth = family("dynomite_auth_failures_total")
        for reason, n in m.auth_failures.items():
            auth.add_metric([reason], n)
        yield auth

    def _datastore(self) -> Iterable:
        ds = self.status.datastore()
        yield single("dynomite_datastore_up", 1 if ds.up else 0)
        requests = family("dynomite_datastore_requests_total")
        for result in REQUEST_RESULTS:
            requests.add_metric([result], ds.requests[result])
        yield requests
        duration = family("dynomite_datastore_request_duration_seconds")
        duration.add_metric([], ds.latency.cumulative(), ds.latency.total)
        yield duration
        yield single("dynomite_datastore_in_flight", ds.in_flight)

    def _peers(self) -> Iterable:
        up = family("dynomite_peer_up")
        ejections = family("dynomite_peer_ejections_total")
        tls = family("dynomite_peer_tls")
        refusals = family("dynomite_peer_tls_refusals_total")
        for reason, n in sorted(self.status.metrics.peer_tls_refusals.items()):
            refusals.add_metric([reason], n)
        per_dc: Dict[str, List[int]] = {}
        per_dc_results: Dict[str, Dict[str, int]] = {}
        per_dc_latency: Dict[str, Histogram] = {}
        for link in self.status.peers():
            dc = link.datacenter
            up.add_metric([link.name, dc, link.rack], 1 if link.up else 0)
            ejections.add_metric([link.name], link.ejections)
            tls.add_metric([link.name, dc, link.rack], 1 if link.tls else 0)
            acc = per_dc.setdefault(dc, [0, 0])
            acc[0] += link.in_flight
            acc[1] += link.timeouts
            results = per_dc_results.setdefault(dc, dict.fromkeys(REQUEST_RESULTS, 0))
            for result, n in link.requests.items():
                results[result] += n
            per_dc_latency.setdefault(dc, Histogram()).add(link.latency)
        requests = family("dynomite_peer_requests_total")
        duration = family("dynomite_peer_request_duration_seconds")
        in_flight = family("dynomite_peer_requests_in_flight")
        timeouts = family("dynomite_peer_timeouts_total")
        for dc, (n_in_flight, n_timeouts) in sorted(per_dc.items()):
            in_flight.add_metric([dc], n_in_flight)
            timeouts.add_metric([dc], n_timeouts)
            for result in REQUEST_RESULTS:
                requests.add_metric([dc, result], per_dc_results[dc][result])
            hist = per_dc_latency[dc]
            duration.add_metric([dc], hist.cumulative(), hist.total)
        yield from (up, requests, duration, in_flight, timeouts, ejections, tls, refusals)

    def _replication(self, hints: Dict[str, Dict]) -> Iterable:
        writes = family("dynomite_replication_writes_total")
        for scope, counts in self.status.replica_writes(hints).items():
            for result in ("acked", "failed", "hinted"):
                writes.add_metric([scope, result], counts[result])
        yield writes
        failures = family("dynomite_quorum_failures_total")
        for (op, level), n in self.status.quorum_failures().items():
            failures.add_metric([op, level], n)
        yield failures
        order = family("dynomite_write_order_total")
        for event, n in self.status.write_order().items():
            order.add_metric([event], n)
        yield order
        repair = family("dynomite_repair_keys_total")
        for event, n in self.status.repair_counts().items():
            repair.add_metric([event], n)
        yield repair
        now = self.status.now()
        state = self.status.repair(now)
        running = family("dynomite_repair_running")
        for phase in REPAIR_PHASES:
            running.add_metric([phase], 1 if state["running"] and state["running"]["phase"] == phase else 0)
        yield running
        warming = family("dynomite_warmup_running")
        warming.add_metric([], 1 if state["warmup"] and state["warmup"]["finished"] is None else 0)
        yield warming

    def _hints(self, hints: Dict[str, Dict]) -> Iterable:
        pending = family("dynomite_hints_pending")
        pending_bytes = family("dynomite_hints_pending_bytes")
        oldest = family("dynomite_hints_oldest_age_seconds")
        stored = family("dynomite_hints_stored_total")
        replayed = family("dynomite_hints_replayed_total")
        dropped = family("dynomite_hints_dropped_total")
        for target, stats in sorted(hints.items()):
            pending.add_metric([target], stats["pending"])
            pending_bytes.add_metric([target], stats["pending_bytes"])
            oldest.add_metric([target], stats["oldest_age_seconds"])
            stored.add_metric([target], stats["stored_total"])
            replayed.add_metric([target], stats["replayed_total"])
            for reason in DROP_REASONS:
                dropped.add_metric([target, reason], stats["dropped_total"].get(reason, 0))
        yield from (pending, pending_bytes, oldest, stored, replayed, dropped)

    def _ring(self) -> Iterable:
        counts: Dict[Tuple[str, str, str, str], int] = {}
        for n in self.status.ring():
            for up in ("up", "down"):
                for status in RING_STATUSES:
                    counts.setdefault((n.datacenter, n.rack, up, status), 0)
            key = (n.datacenter, n.rack, "up" if n.up else "down", n.status)
            counts[key] = counts.get(key, 0) + 1
        ring = family("dynomite_ring_nodes")
        for labels, n in sorted(counts.items()):
            ring.add_metric(list(labels), n)
        yield ring

    def _reloads(self) -> Iterable:
        m = self.status.metrics
        reloads = family("dynomite_config_reloads_total")
        for result, n in sorted(m.reloads.items()):
            reloads.add_metric([result], n)
        yield reloads
        if m.last_reload_success is not None:
            yield single("dynomite_config_last_reload_success_timestamp_seconds", m.last_reload_success)


    def _pubsub(self) -> Iterable:
        m = self.status.metrics
        messages = family("dynomite_pubsub_messages_total")
        for event in PUBSUB_EVENTS:
            messages.add_metric([event], m.pubsub[event])
        yield messages
        subscriptions = family("dynomite_pubsub_subscriptions")
        for kind, n in m.pubsub_subscriptions.items():
            subscriptions.add_metric([kind], n)
        yield subscriptions


    def _gossip(self) -> Iterable:
        # empty with gossip off: every event at 0
        yield _each_at(family("dynomite_gossip_events_total"), GOSSIP_EVENTS, self.status.gossip_counts())
        by_status = dict.fromkeys(STATUSES, 0)
        for entry in self.status.gossip().get("entries", {}).values():
            by_status[entry["status"]] = by_status.get(entry["status"], 0) + 1
        entries = family("dynomite_gossip_view_entries")
        for name, n in by_status.items():
            entries.add_metric([name], n)
        yield entries


    def _scaleout(self) -> Iterable:
        # empty with gossip off: every event at 0
        yield _each_at(family("dynomite_scaleout_keys_total"), SCALEOUT_EVENTS, self.status.scaleout_counts())
        phase = self.status.scaleout_phase()
        running = family("dynomite_scaleout_running")
        for name in MOVING_PHASES:
            running.add_metric([name], 1 if name == phase else 0)
        yield running


def make_registry(status: NodeStatus) -> CollectorRegistry:
    """One explicit registry: the node's collector plus process, platform and GC."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(status))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _each_at(metric, labels: Iterable[str], counts: Dict[str, int]):
    """``metric`` with one sample per label of ``labels``, from ``counts`` (0 where it has none)."""
    for label in labels:
        metric.add_metric([label], counts.get(label, 0))
    return metric
