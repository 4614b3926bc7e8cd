"""
The service tree of one node, built from a validated `NodeConfig`.

    MultiService "dynomite"
      DatastoreMonitor   txredisapi health checks and INFO
      Datastore          pipelined raw-RESP connections to the local Redis
      PeerLinks          one reconnecting PeerLink per other node
      peer listener      StreamServerEndpointService(dyn_listen, PeerServerFactory)
      admin listener     StreamServerEndpointService(stats_listen, Site(AdminResource))
      client listener    StreamServerEndpointService(listen, ClientFactory)

The reactor is passed in; nothing below reaches for the global one.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable, Dict, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger

from dynomite.runtime import logs
from dynomite.ops.admin import AdminResource, AdminSite
from dynomite.config.model import Address, ConfigError, NodeConfig
from dynomite.node.coordinator import Coordinator
from dynomite.datastore.pool import Datastore
from dynomite.peers.membership import Membership
from dynomite.replication.hints import HintLog, safe_name
from dynomite.ops.metrics import make_registry
from dynomite.stats import NodeMetrics
from dynomite.replication.outbox import Outbox
from dynomite.wire.peer_frames import FLAG_RESP3, REQUEST
from dynomite.datastore.monitor import DatastoreMonitor
from dynomite.node.dispatch import Node
from dynomite.peers.link import PeerLink, PeerServerFactory, peer_timeout
from dynomite.node.client import ClientFactory
from dynomite.placement.topology import Topology

log = Logger()


def server_endpoint(reactor, address: Address, backlog: int):
    """A TCP server endpoint for ``address`` (IPv6 when the host has a colon)."""
    cls = TCP6ServerEndpoint if ":" in address.host else TCP4ServerEndpoint
    return cls(reactor, address.port, backlog=backlog, interface=address.host)


class PeerLinks(Service):
    """Starts and stops the links to every other node of the cluster."""

    def __init__(self, links: Dict[str, PeerLink]) -> None:
        self.links = links

    def startService(self) -> None:
        Service.startService(self)
        for link in self.links.values():
            link.start()

    def stopService(self):
        Service.stopService(self)
        for link in self.links.values():
            link.stop()


class NodeService(MultiService):
    """
    Everything one node runs; `node` is the client request handler.

    It also holds what operators change at run time (node state, timeout
    factor, log level) and reloads the configuration file on SIGHUP.
    """

    def __init__(self, config: NodeConfig, reactor, connect_peer: Optional[Callable] = None) -> None:
        MultiService.__init__(self)
        self.setName("dynomite")
        self.config = config
        self.clock = reactor
        self._reactor = reactor
        self._connect_peer = connect_peer
        self.timeout_factor = 1
        self.log_level = config.log_level
        self.metrics = NodeMetrics()
        self.outboxes: Dict[str, object] = {}
        self.topology = Topology.from_config(config)
        self.datastore = Datastore(config, reactor)
        self.monitor = DatastoreMonitor(config.datastore, reactor, on_up=self._datastore_answers)
        self.peers: Dict[str, PeerLink] = {}
        self.coordinator = Coordinator(config, self.topology, self.datastore, self.peers)
        self.node = Node(config, self.datastore, self.monitor, reactor, self.coordinator, self.metrics)
        seeds = {str(seed.address): seed for seed in config.dyn_seeds}
        for info in self.topology.nodes:
            if not info.is_local:
                self.peers[info.name] = self._make_link(config, seeds[info.name])
        self.membership = Membership(
            reactor, self.topology.local.name, self.peers,
            resume_timeout=config.resume_timeout, settle_time=config.peer_down_after,
            hints_for=self._hints_for,
        )
        self._build_outboxes(config)
        self.membership.listeners.append(self._state_changed)
        self._state_changed(self.membership.state)
        self.coordinator.membership = self.membership
        self._membership_timer = TimerService(0.5, self._tick_membership)
        self._membership_timer.clock = reactor
        self._membership_timer.setServiceParent(self)
        self.registry = make_registry(self)
        self.monitor.setServiceParent(self)
        self.datastore.setServiceParent(self)
        PeerLinks(self.peers).setServiceParent(self)
        local = self.topology.local
        if config.dyn_listen is not None:
            self.peer_listener = self._listen(
                config.dyn_listen,
                PeerServerFactory(config, self.coordinator, self._known, reactor, name=local.name),
            )
        self.admin_listener = self._listen(
            config.stats_listen, AdminSite(AdminResource(self, config.admin_token))
        )
        self.client_listener = self._listen(config.listen, ClientFactory(self.node, reactor))

    # -- outboxes and hints ---------------------------------------------------

    def _build_outboxes(self, config: NodeConfig) -> None:
        """
        One outbox per write target: this node's own Redis, each peer (peers
        of other DCs receive writes directly only under DC_EACH_SAFE_QUORUM),
        and each remote DC.  Their hint logs live under
        ``data_dir/hints/<this node>/``, so nodes sharing a data_dir never mix.
        """
        self._hint_directory = os.path.join(
            config.data_dir, "hints", safe_name(self.topology.local.name))
        self._ensure_outboxes()
        self.coordinator.outboxes = self.outboxes
        self._hint_timer = TimerService(0.05, self._tick_outboxes)
        self._hint_timer.clock = self._reactor
        self._hint_timer.setServiceParent(self)

    def _ensure_outboxes(self) -> None:
        """Create the outboxes the current topology needs (at start, and after a reload)."""
        config = self.config
        local = self.topology.local
        targets = {local.name: (self._deliver_local, lambda: self.datastore.is_up)}
        for name in self.peers:
            targets[name] = (self._deliver_peer(name), self._writable(name))
        for dc in self.topology.remote_datacenters:
            targets["dc:" + dc] = (self._deliver_dc(dc), self._dc_reachable(dc))
        for target, (deliver, is_up) in targets.items():
            if target in self.outboxes:
                continue
            log = HintLog(self._hint_directory, target, config.hints_fsync, self._reactor,
                          segment_bytes=config.hint_segment_bytes, max_bytes=config.hints_max_bytes,
                          window=config.hint_window)
            self.outboxes[target] = Outbox(target, log, deliver, is_up, self._reactor,
                                           replay_rate=config.hint_replay_rate)

    def _deliver_local(self, flags: int, payload: bytes, sink, pin: int = 0, count: int = 1) -> None:
        self.datastore.send(pin, 3 if flags & FLAG_RESP3 else 2, payload, sink, count)

    def _deliver_peer(self, name: str):
        def deliver(flags: int, payload: bytes, sink, pin: int = 0, count: int = 1) -> None:
            self.coordinator.send_to_peer(name, REQUEST, flags, payload, sink, pin, count)

        return deliver

    def _deliver_dc(self, dc: str):
        def deliver(flags: int, payload: bytes, sink, pin: int = 0, count: int = 1) -> None:
            self.coordinator.deliver_to_dc(dc, flags, payload, sink, pin, count)

        return deliver

    def _writable(self, name: str):
        return lambda: self.membership.writable(name)

    def _dc_reachable(self, dc: str):
        return lambda: self.coordinator.dc_reachable(dc)

    def _tick_outboxes(self) -> None:
        now = self.clock.seconds()
        for outbox in list(self.outboxes.values()):
            try:
                outbox.tick(now)
            except Exception:
                log.failure("outbox {target} tick failed", target=outbox.target)

    def _wake_outboxes(self) -> None:
        for outbox in self.outboxes.values():
            outbox.wake()

    def _listen(self, address: Address, factory) -> StreamServerEndpointService:
        service = StreamServerEndpointService(
            server_endpoint(self._reactor, address, self.config.backlog), factory
        )
        # A port we cannot bind is fatal: twistd must exit, not linger.
        service._raiseSynchronously = True
        service.setServiceParent(self)
        return service

    def _make_link(self, config: NodeConfig, seed) -> PeerLink:
        return PeerLink(
            config,
            seed,
            peer_timeout(config, seed.datacenter) * self.timeout_factor,
            self._reactor,
            connect=self._connect_peer,
            on_state=self._link_changed,
            handler=self.coordinator,
            name=self.topology.local.name,
        )

    def _link_changed(self, link: PeerLink, up: bool) -> None:
        self.membership.link_changed(link.name)
        if up:
            self._wake_outboxes()

    def _known(self, name: str, datacenter: str, rack: str) -> bool:
        node = self.topology.node(name)
        return node is not None and node.datacenter == datacenter and node.rack == rack

    # -- run-time changes --------------------------------------------------

    @property
    def state(self) -> str:
        return self.membership.state

    def set_state(self, state: str) -> None:
        """Dynomite's node states: NORMAL, STANDBY, WRITES_ONLY, RESUMING."""
        self.membership.set_state(state)

    def _state_changed(self, state: str) -> None:
        self.node.state = state
        for link in self.peers.values():
            link.heartbeat()

    def _tick_membership(self) -> None:
        try:
            self.membership.tick(self.clock.seconds())
        except Exception:
            log.failure("membership tick failed")

    def _datastore_answers(self) -> None:
        self.datastore.retry_now()
        outbox = self.outboxes.get(self.topology.local.name)
        if outbox is not None:
            outbox.wake()

    def _hints_for(self, peer: str) -> int:
        outbox = self.outboxes.get(peer)
        return outbox.stats(self.clock.seconds())["pending"] if outbox is not None else 0

    def set_timeout_factor(self, factor: int) -> None:
        """Scale the datastore and peer timeouts (Dynomite's timeout factor, 1-10)."""
        self.timeout_factor = factor
        self.datastore.timeout = self.config.timeout * factor
        for link in self.peers.values():
            link.set_timeout(peer_timeout(self.config, link.datacenter) * factor)

    def set_log_level(self, verbosity: int) -> str:
        self.log_level = verbosity
        return logs.set_verbosity(verbosity)

    def reload(self) -> bool:
        """
        Re-read the configuration file (SIGHUP).  Consistency, timeouts and
        seeds change in place; a change that needs a restart, or an invalid
        file, is refused with a log line and the running configuration kept.
        """
        try:
            new = NodeConfig.from_yaml(self.config.source)
            fixed = [key for key in RESTART_KEYS if getattr(new, key) != getattr(self.config, key)]
            if fixed:
                raise ConfigError(new.source, fixed[0], "changing it needs a restart")
            topology = Topology.from_config(new)
        except ConfigError as e:
            self.metrics.reloads["failure"] += 1
            log.error("configuration reload refused, keeping the running one: {error}", error=str(e))
            return False
        seeds = {str(seed.address): seed for seed in new.dyn_seeds}
        wanted = {info.name for info in topology.nodes if not info.is_local}
        for name in sorted(set(self.peers) - wanted):
            self.peers.pop(name).stop()
            log.info("peer {peer} removed", peer=name)
        for name in sorted(wanted - set(self.peers)):
            link = self.peers[name] = self._make_link(new, seeds[name])
            if self.running:
                link.start()
            log.info("peer {peer} added", peer=name)
        self.config = new
        self.topology = topology
        self._ensure_outboxes()
        self.coordinator.topology = topology
        self.coordinator.config = new
        self.coordinator.read_consistency = new.read_consistency
        self.coordinator.write_consistency = new.write_consistency
        self.node.config = new
        self.set_timeout_factor(self.timeout_factor)
        self.set_log_level(new.log_level)
        self.metrics.reloads["success"] += 1
        self.metrics.last_reload_success = time.time()
        log.info("configuration reloaded from {source}", source=new.source)
        return True

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        logs.install()
        self.set_log_level(self.config.log_level)
        for key in self.config.unused_keys:
            log.warn(
                "{source}: {key}: accepted for Dynomite compatibility, not used by this node",
                source=self.config.source,
                key=key,
            )
        log.info(
            "dynomite node {name} ({dc}/{rack}) listening on {listen}, datastore {datastore}, {n} peers",
            name=self.topology.local.name,
            dc=self.config.datacenter,
            rack=self.config.rack,
            listen=str(self.config.listen),
            datastore=str(self.config.datastore),
            n=len(self.peers),
        )
        MultiService.startService(self)
        for target, outbox in sorted(self.outboxes.items()):
            if outbox.hints.pending:
                log.info("{n} hints for {target} kept from before the restart",
                         n=outbox.hints.pending, target=target)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self._reactor.callFromThread(self.reload))


    def stopService(self):
        d = MultiService.stopService(self)
        for outbox in self.outboxes.values():
            outbox.hints.close()
        return d


# Keys whose change needs a restart: they define the node's identity and
# its listeners.
RESTART_KEYS = (
    "pool_name", "listen", "dyn_listen", "stats_listen", "datastore", "datacenter", "rack",
    "tokens", "hash_tag", "datastore_connections", "local_peer_connections", "remote_peer_connections",
    "data_dir", "hints_fsync", "hint_window", "hints_max_bytes", "hint_segment_bytes", "hint_replay_rate",
)
