# -*- test-case-name: tests.unit.test_admin,tests.unit.test_monitoring -*-
"""
What the operator side may know about a running node.

`NodeStatus` is a read-only view of one node for the admin API (/info,
/cluster_describe) and the Prometheus `Collector`.  It is built from
explicit collaborators, never from the service itself, so its constructor
is the whole coupling between ops/ and the rest of the node: a new fact on
/info or /metrics is a new method here, fed by an existing collaborator or
by a new, named one.

`dynomite.node.control.INodeControl` is the other direction: every change
an operator makes at run time (node state, consistency, timeout factor, log
level, peer links, hint backlogs, configuration reload).  The admin API
calls it and nothing else, but for /decommission, which starts a leave on
the node's `dynomite.scaleout.manager.ScaleOut` (handed to the resource
beside this view); it never sets attributes on the node's objects.

Both are read or called in the reactor thread, at scrape or request time;
the view copies nothing it does not need and keeps no state of its own.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from dynomite.config.vocabulary import CONSISTENCY_LEVELS, DOWN, NORMAL
from dynomite.stats import Histogram, NodeMetrics

__all__ = ["DatastoreStatus", "MovingRange", "NodeStatus", "PeerStatus", "RingNode"]


class PeerStatus(NamedTuple):
    """One link to another node of the cluster, as it stands now."""

    name: str
    datacenter: str
    rack: str
    up: bool
    state: str
    admin: Optional[str]  # the peer's admin address, once it said it
    in_flight: int
    timeouts: int
    ejections: int
    requests: Dict[str, int]  # result -> requests (stats.REQUEST_RESULTS)
    latency: Histogram
    tls: bool = False  # UP, and every UP connection runs TLS (secure_server_option)


class DatastoreStatus(NamedTuple):
    """The local Redis, as the node's connections to it see it."""

    address: str
    up: bool
    in_flight: int
    timeouts: int
    requests: Dict[str, int]  # result -> requests (stats.REQUEST_RESULTS)
    latency: Histogram


class RingNode(NamedTuple):
    """One node of the ring, with its liveness as this node sees it."""

    name: str
    datacenter: str
    rack: str
    host: str
    port: int
    tokens: Tuple[int, ...]
    local: bool
    up: bool
    state: str  # the local node's own state; NORMAL or DOWN for a peer
    admin: Optional[str]
    #: its place on the ring as this node's topology has it: NORMAL, JOINING or LEAVING (`dynomite.scaleout`)
    status: str = NORMAL


class MovingRange(NamedTuple):
    """An inclusive hash range of one rack whose owner is changing (a node joining or leaving)."""

    datacenter: str
    rack: str
    start: int
    end: int
    source: str  # its owner now
    target: str  # its owner once the move is done


class NodeStatus:
    """
    A read-only view of a running node.

    Every argument is keyword-only and read at call time, never copied, so
    the view follows reloads and state changes:

    ``config``
        a callable returning the current `NodeConfig` (a reload swaps it);
        read for the node's datacenter, rack, datastore and admin addresses.
    ``clock``
        an `IReactorTime`; ``seconds()`` is "now" for uptime and hint ages.
    ``settings``
        the live run-time settings, one object with plain attributes
        ``read_consistency``, ``write_consistency``, ``timeout_factor`` and
        ``log_level``: the values in force, which `dynomite.node.control.INodeControl` changes.
    ``membership``
        whose ``state`` is the node's state (NORMAL, STANDBY, ...).
    ``topology``
        a callable returning the current `Topology` (a reload swaps it).
    ``datastore``
        the local Redis pool: ``is_up``, ``in_flight``, ``timed_out_total``,
        ``request_counts()``, ``latency``.
    ``peers``
        the dict of `PeerLink` by node name (changed in place on reload):
        ``name``, ``datacenter``, ``rack``, ``is_up``, ``state``, ``admin``,
        ``in_flight``, ``timed_out_total``, ``dropped_total``,
        ``request_counts()``, ``latency``.
    ``outboxes``
        the dict of `Outbox` by write target (changed in place on reload):
        ``stats(now)``.  Targets are node names and ``dc:<name>``.
    ``clients``
        what the client side counts: ``clients`` (the open connections),
        ``connections_accepted``, ``started`` (clock seconds at start).
    ``replication``
        the coordinator's replica counters: ``local_writes`` and
        ``remote_writes`` (``[acked, failed]``) and ``quorum_failures``
        (``{(op, level): n}``).
    ``metrics``
        the node's `NodeMetrics` (request counters and latency histograms,
        protocol errors, reloads).
    ``repairs``
        the node's `dynomite.repair.manager.Repairs`: ``status(now)`` (the
        running and last repair, warm-up) and ``counts`` (event -> total).
    ``gossip``
        the node's `dynomite.peers.gossiper.Gossiper` (None: gossip is off):
        ``status()`` (the /info section) and ``counts`` (event -> total).
    ``scaleout``
        the node's `dynomite.scaleout.manager.ScaleOut` (None: gossip is
        off): ``status()`` (the /info section), ``counts`` (event -> total)
        and ``phase``.
    """

    def __init__(self, *, config: Callable[[], Any], clock, settings, membership,
                 topology: Callable[[], Any], datastore, peers: Dict[str, Any], outboxes: Dict[str, Any],
                 clients, replication, metrics: NodeMetrics, repairs, gossip=None, scaleout=None) -> None:
        self._config = config
        self._clock = clock
        self._settings = settings
        self._membership = membership
        self._topology = topology
        self._datastore = datastore
        self._peers = peers
        self._outboxes = outboxes
        self._clients = clients
        self._replication = replication
        self._repairs = repairs
        self._gossip = gossip
        self._scaleout = scaleout
        self.metrics = metrics

    # -- identity and settings ---------------------------------------------------

    def now(self) -> float:
        return self._clock.seconds()

    @property
    def name(self) -> str:
        """This node's name: its peer address, as other nodes list it."""
        return self._topology().local.name

    @property
    def datacenter(self) -> str:
        return self._config().datacenter

    @property
    def rack(self) -> str:
        return self._config().rack

    @property
    def admin_address(self) -> str:
        return str(self._config().stats_listen)

    @property
    def state(self) -> str:
        return self._membership.state

    @property
    def ready_state(self) -> str:
        """What /ready reports: the node's state, or LEAVING once it is stopping."""
        return "LEAVING" if getattr(self._membership, "leaving", False) else self._membership.state

    @property
    def read_consistency(self) -> str:
        return self._settings.read_consistency

    @property
    def write_consistency(self) -> str:
        return self._settings.write_consistency

    @property
    def timeout_factor(self) -> int:
        return self._settings.timeout_factor

    @property
    def log_level(self) -> int:
        return self._settings.log_level

    # -- clients -------------------------------------------------------------------

    def uptime(self, now: float) -> float:
        return now - self._clients.started

    @property
    def client_connections(self) -> int:
        return len(self._clients.clients)

    @property
    def connections_accepted(self) -> int:
        return self._clients.connections_accepted

    @property
    def client_floods(self) -> int:
        """Floods of fruitless connections seen (`dynomite.runtime.flood.FloodGuard`)."""
        guard = self._clients.flood_guard
        return guard.floods if guard is not None else 0

    @property
    def client_flooders(self) -> int:
        """Times an address started being refused for flooding."""
        guard = self._clients.flood_guard
        return guard.flooders if guard is not None else 0

    def client_flooded(self, now: float) -> bool:
        """Whether the client ports accept at a bound for a flood now."""
        guard = self._clients.flood_guard
        return guard is not None and guard.flooding_at(now)

    # -- the local Redis and the peers ---------------------------------------------

    def datastore(self) -> DatastoreStatus:
        ds = self._datastore
        return DatastoreStatus(str(self._config().datastore), ds.is_up, ds.in_flight, ds.timed_out_total,
                               ds.request_counts(), ds.latency)

    def peer_names(self) -> List[str]:
        return sorted(self._peers)

    def peers(self) -> List[PeerStatus]:
        """Every peer link, by name."""
        return [PeerStatus(link.name, link.datacenter, link.rack, link.is_up, link.state, link.admin,
                           link.in_flight, link.timed_out_total, link.dropped_total, link.request_counts(),
                           link.latency, link.tls)
                for _, link in sorted(self._peers.items())]

    def peer_states(self, names: Optional[List[str]] = None) -> Dict[str, str]:
        """Link state (UP, DOWN, ...) of the named peers, or of all."""
        names = self.peer_names() if names is None else names
        return {name: self._peers[name].state for name in names}

    def ring(self) -> List[RingNode]:
        """
        Every node of the cluster, by datacenter, rack and name: those on
        the ring and those JOINING it (a node LEFT is no longer listed).
        """
        topology = self._topology()
        out = []
        for dc in topology.datacenters:
            for rack in topology.racks(dc):
                nodes = list(topology.nodes_in_rack(dc, rack))
                names = {n.name for n in nodes}
                nodes += [n for n in topology.joining_in_rack(dc, rack) if n.name not in names]
                for n in sorted(nodes, key=lambda n: n.name):
                    if n.is_local:
                        up, state, admin = True, self.state, self.admin_address
                    else:
                        link = self._peers.get(n.name)
                        up = link is not None and link.is_up
                        state, admin = (NORMAL if up else DOWN), (link.admin if link is not None else None)
                    out.append(RingNode(n.name, dc, rack, n.address.host, n.address.port, tuple(n.tokens),
                                        n.is_local, up, state, admin, n.status))
        return out

    def moving_ranges(self) -> List[MovingRange]:
        """The hash ranges changing owner in every rack (`Topology.moving_ranges`), by dc, rack and start."""
        topology = self._topology()
        return [MovingRange(dc, rack, start, end, now.name, later.name)
                for dc in topology.datacenters for rack in topology.racks(dc)
                for start, end, now, later in topology.moving_ranges(dc, rack)]

    # -- replication -------------------------------------------------------------

    def hint_targets(self) -> List[str]:
        return sorted(self._outboxes)

    def hints(self, now: float, targets: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
        """The backlog of each write target (all, or those named): `Outbox.stats`."""
        targets = self.hint_targets() if targets is None else targets
        return {target: self._outboxes[target].stats(now) for target in targets}

    def scope(self, target: str) -> str:
        """``remote_dc`` for a datacenter or a node of another one, else ``local_rack``."""
        link = self._peers.get(target)
        remote = target.startswith("dc:") or (link is not None and link.datacenter != self.datacenter)
        return "remote_dc" if remote else "local_rack"

    def replica_writes(self, hints: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, int]]:
        """scope -> acked, failed and hinted writes; ``hints`` is what `hints` returned."""
        r = self._replication
        out = {"local_rack": {"acked": r.local_writes[0], "failed": r.local_writes[1], "hinted": 0},
               "remote_dc": {"acked": r.remote_writes[0], "failed": r.remote_writes[1], "hinted": 0}}
        for target, stats in hints.items():
            out[self.scope(target)]["hinted"] += stats["stored_total"]
        return out

    def repair(self, now: float) -> Dict[str, Any]:
        """The running and the last anti-entropy repair, and warm-up (`dynomite.repair`)."""
        return self._repairs.status(now)

    def repair_counts(self) -> Dict[str, int]:
        """Keys scanned, differing, repaired, streamed by warm-up, read repairs... since start."""
        return dict(self._repairs.counts)

    def gossip(self) -> Dict[str, Any]:
        """The cluster view gossip spreads: version, entries, last round, counts (`dynomite.peers.gossiper`)."""
        if self._gossip is None:
            return {"enabled": False}
        return self._gossip.status()

    def gossip_counts(self) -> Dict[str, int]:
        """Gossip rounds, messages, entries learned, joins refused, bad messages (all 0 when off)."""
        if self._gossip is None:
            return {}
        return dict(self._gossip.counts)

    def scaleout(self) -> Dict[str, Any]:
        """This node's join or leave: status, phase, reason, copy progress (`dynomite.scaleout.manager`)."""
        if self._scaleout is None:
            return {"enabled": False}
        return dict(self._scaleout.status(), enabled=True)

    def scaleout_counts(self) -> Dict[str, int]:
        """Keys scanned, copied, copy errors and keys dropped by this node's moves (empty when off)."""
        if self._scaleout is None:
            return {}
        return dict(self._scaleout.counts)

    def scaleout_phase(self) -> Optional[str]:
        """The phase of this node's move (`dynomite.scaleout.manager.PHASES`), None when gossip is off."""
        return None if self._scaleout is None else self._scaleout.phase

    def write_order(self) -> Dict[str, int]:
        """
        The leader's counts (`dynomite.node.leader`), replays skipped by this
        node's Redis and by it as an entry node, runs gathered.
        """
        r = self._replication
        return {
            "handed_on": r.leading.leaders_lost,
            "leader_lost": r.leading.leaders_unknown,
            "leader_moved": r.leading.leaders_moved,
            "clock_ahead": r.leader.versions.clock.refused if r.leader.versions is not None else 0,
            "effects_run": r.leader.effects_run,
            "effects_unknown": r.leader.effects_unknown,
            "replays_skipped": r.replays_skipped(),
            "runs_gathered": r.gathering.gathered,
            "gathered_led": r.gathering.led,
            "forwards_skipped": r.forwarded.skipped,
            "forwards_waited": r.forwarded.waited,
        }

    def quorum_failures(self) -> Dict[Tuple[str, str], int]:
        """(op, level) -> requests answered -ERR for lack of quorum, for every op and level."""
        failures = self._replication.quorum_failures
        return {(op, level): failures.get((op, level), 0)
                for op in ("read", "write") for level in CONSISTENCY_LEVELS}
