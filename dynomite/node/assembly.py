# -*- test-case-name: tests.cluster.test_inprocess_cluster -*-
"""
One node's parts, built and wired in one place.

`NodeParts.build` makes everything that decides what happens to a request
-- the router, the live settings, membership, peer links, targets,
outboxes with their hint logs, the coordinator, the replica side and the
client request handler -- from a validated `NodeConfig`, a clock, a
datastore and a way to dial peers.  Every collaborator is passed to its
constructor; nothing is set on an object after it is made.

Both the twistd service (`dynomite.service`, with real sockets) and the
in-process test cluster (`tests.cluster.inprocess`, with iosim pumps and an
in-memory Redis) build nodes with it, so the tests exercise the production
write path: outboxes and hints included.

A configuration reload goes through `NodeParts.reconfigure`, which adds and
removes peers and the targets and outboxes they need.  With
``enable_gossip`` the parts include a `dynomite.peers.gossiper.Gossiper`
(``gossip``): the links carry its frames, a link that comes UP gossips at
once, and what it learns reaches `reconfigure` through
`dynomite.node.control.NodeControl.apply_gossip` (its listener).

How a write travels through these parts::

    ClientProtocol -> Node (dispatch) -> RunCutter/Router: a Plan
      -> Coordinator.run -> Outbox (per replica) -> Target.send
           LocalRedis -> Datastore                (this node's Redis)
           PeerNode -> PeerLink: REQUEST frame   -> peer's Replica -> its Redis
           RemoteDatacenter -> PeerLink: FORWARD -> entry node's Replica
                                                     -> its Outboxes -> every rack
"""

from __future__ import annotations

import os
import random
from typing import Callable, Dict, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dynomite.config.model import NodeConfig
from dynomite.config.vocabulary import LAST_WRITER_WINS, NORMAL
from dynomite.consistency.hlc import HybridClock
from dynomite.node.coordinator import Coordinator
from dynomite.node.dispatch import Node
from dynomite.node.handover import handover_request
from dynomite.node.keyspace_events import KeyspaceEvents
from dynomite.node.pubsub_bus import PubSubBus
from dynomite.node.versions import Versions
from dynomite.node.replica import Replica
from dynomite.node.settings import LiveSettings
from dynomite.peers.gossiper import Gossiper
from dynomite.peers.link import PeerLink
from dynomite.peers.membership import Membership
from dynomite.peers.protocol import peer_timeout
from dynomite.placement.router import Router
from dynomite.placement.topology import Topology
from dynomite.repair.manager import Repairs
from dynomite.repair.run import ask
from dynomite.replication.hints import HintLog, safe_name
from dynomite.replication.outbox import Outbox
from dynomite.replication.targets import Targets
from dynomite.scaleout.copier import route_writes
from dynomite.scaleout.manager import ScaleOut, initial_place
from dynomite.scaleout.moves import Move
from dynomite.runtime.reconnect import Backoff
from dynomite.runtime.tls import NodeTLS
from dynomite.stats import NodeMetrics
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_HANDOVER, lead_payload

__all__ = ["NodeParts"]


class NodeParts:
    """Everything of one node but its sockets and timers; see the module docstring."""

    log = Logger()

    def __init__(self, config: NodeConfig, clock, datastore, monitor,
                 connect_peer: Optional[Callable] = None, jitter: Callable[[], float] = random.random,
                 metrics: Optional[NodeMetrics] = None, rng: Optional[random.Random] = None,
                 tls: Optional[NodeTLS] = None, keyspace_endpoint=None) -> None:
        self.config = config
        #: the node's certificates (`NodeTLS`); peer links dial with TLS per secure_server_option
        self.tls = tls if tls is not None else NodeTLS.from_config(config)
        self.clock = clock
        self.datastore = datastore
        self.monitor = monitor
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self._connect_peer = connect_peer
        self._jitter = jitter
        self.name = str(Topology.address_of(config))
        #: where scale-out keeps its state across restarts (`dynomite.scaleout.manager`)
        self.scaleout_state = os.path.join(config.data_dir, "scaleout", safe_name(self.name), "state.json")
        status, tokens = (initial_place(config, self.scaleout_state) if config.enable_gossip
                          else (NORMAL, tuple(config.tokens)))
        #: PeerLink per other node, by name (filled below, and by reloads)
        self.links: Dict[str, PeerLink] = {}
        # links of removed peers, open until their requests in flight are answered
        self._retiring: Dict[str, PeerLink] = {}
        #: the cluster view's gossip (``enable_gossip``), None when off
        self.gossip: Optional[Gossiper] = None
        generation = 0
        if config.enable_gossip:
            self.gossip = Gossiper.from_config(config, self.name, self.links, lambda: self.router.topology,
                                               clock, rng, status, tokens)
            generation = self.gossip.view.own.generation
        topology = Topology.from_config(config, status, tokens, generation)
        self.router = Router(topology, config.hash_tag)
        self.settings = LiveSettings(config)
        self.hint_directory = os.path.join(config.data_dir, "hints", safe_name(self.name))
        #: Outbox per target, by target name (filled below, and by reloads)
        self.outboxes: Dict[str, Outbox] = {}
        self.membership = Membership(
            clock, self.name, self.links,
            resume_timeout=config.resume_timeout, settle_time=config.peer_down_after,
            hints_for=self._hints_for,
            resuming=len(topology.nodes) > 1 or config.seed_provider != "simple_provider",
        )
        if self.gossip is not None:
            self.membership.ring_stamp_of = self.gossip.stamp_of
        self.targets = Targets(self.router, datastore, self.links, self.membership)
        self.coordinator = Coordinator(self.router, self.settings, self.targets, self.outboxes,
                                       self.membership, clock, rng)
        #: versions of writes between datacenters (``datacenter_conflicts: last_writer_wins``)
        if config.datacenter_conflicts == LAST_WRITER_WINS:
            self.coordinator.leader.versions = Versions(
                HybridClock(self.name, lambda: int(clock.seconds() * 1000)), int(config.hint_window * 1000))
        #: keyspace notifications of the local Redis (``keyspace_endpoint`` dials it),
        #: started by the first subscription that asks for them
        self.keyspace = None if keyspace_endpoint is None else KeyspaceEvents(
            keyspace_endpoint, clock, lambda channel, message: self.pubsub.notification(channel, message),
            datastore.greeting(2), Backoff(jitter))
        #: pub/sub: this node's subscriptions, messages to and from every other node
        self.pubsub = PubSubBus(self.links, self.metrics, self.keyspace)
        self.replica = Replica(self.router, self.targets, self.coordinator, self.pubsub)
        seeds = {str(seed.address): seed for seed in config.dyn_seeds}
        for info in topology.nodes:
            if not info.is_local:
                self.links[info.name] = self._link(config, seeds[info.name])
        self._add_outboxes()
        self.node = Node(config, self.coordinator, self.membership, self.settings, datastore, monitor,
                         clock, self.metrics, self.pubsub)
        self.membership.listeners.append(self._state_changed)
        #: anti-entropy repair, warm-up and read repair (`dynomite.repair.manager`)
        self.coordinator.leader.copy_source_ok = lambda: self.membership.state == NORMAL
        #: joins and leaves (``enable_gossip``; `dynomite.scaleout.manager`), None when off
        self.scaleout: Optional[ScaleOut] = None
        if self.gossip is not None:
            self.scaleout = ScaleOut(
                self.name, lambda: self.router.topology, route_writes(self.router), self.coordinator.leading.copy,
                self._hand_over, self._send, clock, self.gossip, self.membership, config.hash_tag, config.repair_rate,
                2 * config.timeout, self.scaleout_state, tuple(config.tokens),
                self.coordinator.leader.versions is not None)
        # with gossip, bootstrap means a join (`dynomite.scaleout`), not a warm-up
        self.repairs = Repairs(lambda: self.router.topology, self._send, clock, self.membership,
                               config.hash_tag, config.repair_rate, config.anti_entropy_interval,
                               config.bootstrap and not config.enable_gossip,
                               os.path.join(config.data_dir, "repair", safe_name(self.name), "marked"),
                               self.coordinator.leader.versions is not None)
        if config.read_repairs_enabled:
            self.coordinator.read_repair = self.repairs.read_repair

    @property
    def topology(self) -> Topology:
        return self.router.topology

    # -- building ----------------------------------------------------------

    def _link(self, config: NodeConfig, seed) -> PeerLink:
        return PeerLink(
            config, seed, peer_timeout(config, seed.datacenter) * self.settings.timeout_factor,
            self.clock, connect=self._connect_peer, on_state=self._link_changed,
            requests=self.replica, membership=self.membership, jitter=self._jitter, name=self.name,
            tls=self.tls, gossip=self.gossip,
        )

    def _add_outboxes(self) -> None:
        """An outbox, with its hint log, for every target that has none yet."""
        config = self.config
        for name, target in self.targets.items():
            if name in self.outboxes:
                continue
            hints = HintLog(self.hint_directory, name, config.hints_fsync, self.clock,
                            segment_bytes=config.hint_segment_bytes, max_bytes=config.hints_max_bytes,
                            window=config.hint_window)
            # numbered: a replay is applied once, by a Redis (`dynomite.replication.applied_once`)
            # or by another datacenter's entry node (`dynomite.node.forwarded`)
            self.outboxes[name] = Outbox(target, hints, self.clock, replay_rate=config.hint_replay_rate,
                                         sequenced=True)

    # -- running -----------------------------------------------------------

    def start(self) -> None:
        """Open the hint logs (here, not at build time: twistd builds before it forks) and dial peers."""
        for outbox in self.outboxes.values():
            outbox.start()
        for name, outbox in sorted(self.outboxes.items()):
            if outbox.hints.pending:
                self.log.info("{n} hints for {target} kept from before the restart",
                              n=outbox.hints.pending, target=name)
        for link in self.links.values():
            link.start()
        if self.scaleout is not None:
            self.scaleout.start()

    def _retired(self, name: str, link: PeerLink) -> None:
        if self._retiring.get(name) is link:
            del self._retiring[name]
        link.stop()

    def stop(self) -> None:
        for link in self._retiring.values():
            link.stop()
        self._retiring.clear()
        if self.scaleout is not None:
            self.scaleout.stop()
        if self.keyspace is not None:
            self.keyspace.stop()
        for link in self.links.values():
            link.stop()
        for outbox in self.outboxes.values():
            outbox.stop()

    def tick_outboxes(self, now: float) -> None:
        """Periodic: every outbox's housekeeping and replay."""
        for outbox in list(self.outboxes.values()):
            try:
                outbox.tick(now)
            except Exception:
                self.log.failure("outbox {target} tick failed", target=outbox.target)

    def wake_outboxes(self) -> None:
        for outbox in self.outboxes.values():
            outbox.wake()

    def datastore_answers(self) -> None:
        """The local Redis answers again: reconnect now, replay its hints."""
        self.datastore.retry_now()
        self.outboxes[self.name].wake()

    def set_timeout_factor(self, factor: int) -> None:
        """Scale the datastore and peer timeouts (Dynomite's timeout factor, 1-10)."""
        self.settings.timeout_factor = factor
        self.datastore.timeout = self.config.timeout * factor
        for link in self.links.values():
            link.set_timeout(peer_timeout(self.config, link.datacenter) * factor)

    def _send(self, name: str, request, sink) -> None:
        """Send ``request`` to node ``name``'s Redis (this node's own, or a peer's)."""
        target = self.targets.get(name)
        if target is None:
            sink.fail(b"-ERR no node %s in the topology\r\n" % name.encode("utf-8", "replace"))
        else:
            target.send(request, sink)

    def _hand_over(self, move: Move) -> Deferred:
        """
        Have ``move``'s old owner pass the lead of its range to the new one
        (`dynomite.node.handover`): this node itself when it leaves, else a
        LEAD with FLAG_HANDOVER.  Fires with the answer (an error too).
        """
        if move.source == self.name:
            return self.coordinator.leading.handovers.hand_over(move.start, move.end, move.target).addCallback(
                lambda _: b"+OK\r\n")
        request = Request(lead_payload(move.start, handover_request(move.start, move.end, move.target)),
                          2, 0, 1, True, FLAG_HANDOVER)
        return ask(self._lead_at, move.source, request)

    def _lead_at(self, name: str, request: Request, sink) -> None:
        target = self.targets.get(name)
        if target is None or name == self.name:
            sink.fail(b"-ERR no peer %s in the topology\r\n" % name.encode("utf-8", "replace"))
        else:
            target.lead(request, sink)

    def _hints_for(self, peer: str) -> int:
        outbox = self.outboxes.get(peer)
        return outbox.hints.pending if outbox is not None else 0

    def _link_changed(self, link: PeerLink, up: bool) -> None:
        self.membership.link_changed(link.name)
        if up:
            self.wake_outboxes()
            if self.gossip is not None:
                self.gossip.peer_up(link)

    def _state_changed(self, state: str) -> None:
        """Tell every peer at once, not at the next heartbeat."""
        for link in self.links.values():
            link.heartbeat()

    # -- reloads -------------------------------------------------------------

    def reconfigure(self, config: NodeConfig, topology: Topology, running: bool) -> None:
        """
        Take a reloaded configuration (already checked: only what may change
        without a restart has): peers added and removed, consistency,
        timeouts.
        """
        seeds = {str(seed.address): seed for seed in config.dyn_seeds}
        wanted = {info.name for info in topology.nodes if not info.is_local}
        for name in sorted(set(self.links) - wanted):
            # no new requests; those in flight get their answers (a node
            # that left, say, still answers the writes it was leading:
            # failing them now would have them led twice, by the next leader)
            link = self.links.pop(name)
            self._retiring[name] = link
            self.clock.callLater(peer_timeout(self.config, link.datacenter) * self.settings.timeout_factor,
                                 self._retired, name, link)
            self.log.info("peer {peer} removed", peer=name)
        for name in sorted(wanted - set(self.links)):
            link = self.links[name] = self._link(config, seeds[name])
            if running:
                link.start()
            self.log.info("peer {peer} added", peer=name)
        self.config = config
        self.node.config = config
        placed = _places(self.router.topology)
        self.router.update(topology)
        self.coordinator.leading.handovers.forget(topology)
        if _places(topology) != placed:
            self.coordinator.leading.view_changed()
        self.targets.refresh()
        self._add_outboxes()
        if running:
            for name, outbox in self.outboxes.items():
                if not outbox.started:
                    outbox.start()
        self.settings.read_consistency = config.read_consistency
        self.settings.write_consistency = config.write_consistency
        self.set_timeout_factor(self.settings.timeout_factor)


def _places(topology: Topology) -> tuple:
    """Where every node is on the rings, and in what state: what a key's leader follows from."""
    return tuple(sorted((n.name, n.datacenter, n.rack, n.status, tuple(n.tokens)) for n in topology.nodes))
