# -*- test-case-name: tests.unit.test_plugin,tests.unit.test_graceful_stop -*-
"""
The service tree of one node, built from a validated `NodeConfig`.

    MultiService "dynomite"
      DatastoreMonitor   txredisapi health checks and INFO
      Datastore          pipelined raw-RESP connections to the local Redis
      _PartsService      opens the hint logs, starts the peer links (NodeParts)
      TimerServices      membership (0.5 s), outboxes (0.05 s), seed provider (gos_interval),
                         gossip rounds (enable_gossip: checked every second or gos_interval)
      peer listener      StreamServerEndpointService(dyn_listen, PeerServerFactory)
      admin listener     StreamServerEndpointService(stats_listen, Site(AdminResource))
      client listener    StreamServerEndpointService(listen, ClientFactory); none without listen
      TLS client listener  the same ClientFactory behind Twisted's TLS, on tls_listen

The node's certificates (`dynomite.runtime.tls.NodeTLS`) are read when the
service is built, so a bad file stops the node at start; the TLS client
listener, the peer listener and the links ask it for the current ones at
each connection, so a SIGHUP reload applies to new connections.

`NodeService.stopService` (SIGTERM) stops gracefully; see `graceful_stop`.

Nothing touches the disk or the network until `startService`: twistd builds
the service before it forks to daemonize, and a file lock taken before the
fork would not be held by the daemon.  The reactor is passed in; nothing
below reaches for the global one.
"""

from __future__ import annotations

import signal
from typing import Callable, Optional

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from dynomite.config.model import Address, NodeConfig
from dynomite.datastore.monitor import DatastoreMonitor
from dynomite.datastore.pool import Datastore
from dynomite.node.assembly import NodeParts
from dynomite.node.client import ClientFactory
from dynomite.runtime.accept import BoundedServerEndpoint
from dynomite.node.control import NodeControl
from dynomite.ops.admin import AdminResource, AdminSite
from dynomite.ops.metrics import make_registry
from dynomite.ops.status import NodeStatus
from dynomite.peers.listener import PeerServerFactory
from dynomite.peers.seeds import SeedPoller, make_source
from dynomite.runtime import logs
from dynomite.runtime.tls import CurrentServer, NodeTLS
from dynomite.runtime.twisted_private import fail_fast

log = Logger()


def server_endpoint(reactor, address: Address, backlog: int):
    """A TCP server endpoint for ``address`` (IPv6 when the host has a colon)."""
    cls = TCP6ServerEndpoint if ":" in address.host else TCP4ServerEndpoint
    return cls(reactor, address.port, backlog=backlog, interface=address.host)


class NodeService(MultiService):
    """
    Everything one node runs: its parts (`dynomite.node.assembly.NodeParts`,
    the same wiring the in-process test cluster uses) plus the sockets,
    timers and signal handler around them.
    """

    def __init__(self, config: NodeConfig, reactor, connect_peer: Optional[Callable] = None) -> None:
        MultiService.__init__(self)
        self.setName("dynomite")
        self._reactor = reactor
        self.tls = tls = NodeTLS.from_config(config)
        datastore = Datastore(config, reactor, tls=tls)
        monitor = DatastoreMonitor(config.datastore, reactor, on_up=self._datastore_answers,
                                   on_restart=self._datastore_restarted,
                                   endpoint=datastore.endpoint, username=config.datastore_username,
                                   password=config.datastore_password)
        self.parts = parts = NodeParts(config, reactor, datastore, monitor, connect_peer=connect_peer, tls=tls,
                                       keyspace_endpoint=datastore.endpoint)
        self.control = NodeControl(parts, is_running=lambda: self.running)
        self.status = NodeStatus(
            config=lambda: parts.config, clock=reactor, settings=parts.settings,
            membership=parts.membership, topology=lambda: parts.topology, datastore=datastore,
            peers=parts.links, outboxes=parts.outboxes, clients=parts.node,
            replication=parts.coordinator, metrics=parts.metrics, repairs=parts.repairs,
            gossip=parts.gossip, scaleout=parts.scaleout,
        )
        self.registry = make_registry(self.status)
        monitor.setServiceParent(self)
        datastore.setServiceParent(self)
        _PartsService(parts).setServiceParent(self)
        self._timer(0.5, self._tick_membership)
        self._timer(0.05, self._tick_outboxes)
        self._timer(1.0, self._tick_repairs)
        self._timer(1.0, self._sweep_clients)
        if config.dyn_listen is not None:
            self.peer_listener = self._listen(
                config.dyn_listen,
                PeerServerFactory(config, parts.replica, parts.membership, self._known, reactor,
                                  name=parts.name, tls=tls, metrics=parts.metrics, gossip=parts.gossip),
            )
        self.admin_listener = self._listen(
            config.stats_listen,
            AdminSite(AdminResource(self.status, self.control, self.registry, config.admin_token,
                                    scaleout=parts.scaleout)),
        )
        clients = ClientFactory(parts.node, reactor)
        self.client_listener = None   # a node with only tls_listen listens for no client in clear
        if config.listen is not None:
            self.client_listener = self._listen(config.listen, clients, bounded=True)
        self.tls_client_listener = None
        if config.tls_listen is not None:
            self.tls_client_listener = self._listen(
                config.tls_listen,
                TLSMemoryBIOFactory(CurrentServer(tls.client_server), False, clients, clock=reactor),
                bounded=True)
        # -- seed provider and graceful stop (dynomite.peers.seeds) --
        self.peer_factory = self.peer_listener.factory if config.dyn_listen is not None else None
        source = make_source(config, reactor)
        self.seed_poller = SeedPoller(source, self.control.apply_seeds) if source is not None else None
        if self.seed_poller is not None:
            self._timer(config.gos_interval, self.seed_poller.poll)
        # -- gossip (dynomite.peers.gossiper): rounds, and what the view learns applied as seeds --
        if parts.gossip is not None:
            parts.gossip.listeners.append(self.control.apply_gossip)
            self._timer(parts.gossip.fast_interval, self._tick_gossip)

    def _timer(self, interval: float, call: Callable[[], None]) -> None:
        timer = TimerService(interval, call)
        timer.clock = self._reactor
        timer.setServiceParent(self)

    def _listen(self, address: Address, factory, bounded: bool = False) -> StreamServerEndpointService:
        backlog = self.parts.config.backlog
        # client ports accept a bounded number per turn (a flood of
        # connections waits in the backlog, not in front of the clients)
        # and, with client_accept_rate (or during a flood), a bounded number per second
        endpoint = (BoundedServerEndpoint(self._reactor, address.port, backlog, address.host,
                                          accept_rate=self.parts.config.client_accept_rate,
                                          on_limited=self._accepts_limited,
                                          guard=self.parts.node.flood_guard) if bounded
                    else server_endpoint(self._reactor, address, backlog))
        service = StreamServerEndpointService(endpoint, factory)
        fail_fast(service)   # a port we cannot bind is fatal: twistd must exit, not linger
        service.setServiceParent(self)
        return service

    def _accepts_limited(self, connections: int, reason: str) -> None:
        """Connections a client port accepted late (a budget spent) or refused (a flooder's), by ``reason``."""
        self.parts.metrics.client_limits[reason] += connections

    def _known(self, name: str, datacenter: str, rack: str) -> bool:
        node = self.parts.topology.node(name)
        return node is not None and node.datacenter == datacenter and node.rack == rack

    def _tick_membership(self) -> None:
        try:
            self.parts.membership.tick(self._reactor.seconds())
        except Exception:
            log.failure("membership tick failed")

    def _tick_gossip(self) -> None:
        try:
            self.parts.gossip.tick(self._reactor.seconds())
        except Exception:
            log.failure("gossip round failed")

    def _tick_repairs(self) -> None:
        try:
            self.parts.repairs.tick(self._reactor.seconds())
        except Exception:
            log.failure("repair tick failed")

    def _tick_outboxes(self) -> None:
        self.parts.tick_outboxes(self._reactor.seconds())

    def _sweep_clients(self) -> None:
        try:
            now = self._reactor.seconds()
            self.parts.node.sweep_clients(now)
            self.parts.node.protocol_error_log.flush(now)
        except Exception:
            log.failure("client sweep failed")

    def _datastore_answers(self) -> None:
        self.parts.datastore_answers()

    def _datastore_restarted(self) -> None:
        self.parts.repairs.redis_restarted()

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        config = self.parts.config
        logs.install()
        self.control.set_log_level(config.log_level)
        for key in config.unused_keys:
            log.warn(
                "{source}: {key}: accepted for Dynomite compatibility, not used by this node",
                source=config.source,
                key=key,
            )
        log.info(
            "dynomite node {name} ({dc}/{rack}) listening on {listen}, datastore {datastore}, {n} peers",
            name=self.parts.name,
            dc=config.datacenter,
            rack=config.rack,
            listen=str(config.listen) if config.listen is not None else "no port in clear",
            datastore=str(config.datastore),
            n=len(self.parts.links),
        )
        if config.tls_listen is not None:
            log.info("TLS clients on {tls_listen} (client certificates: {auth})",
                     tls_listen=str(config.tls_listen), auth=config.tls_auth_clients)
        MultiService.startService(self)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self._reactor.callFromThread(self.control.reload))

    def stopService(self):
        """SIGTERM: `graceful_stop`, then every service in reverse order."""
        d = graceful_stop(self, self._reactor) if self.running else defer.succeed(None)
        d.addErrback(lambda f: log.failure("graceful stop failed; stopping now", f))
        d.addCallback(lambda _: MultiService.stopService(self))
        return d


def _until(clock, done: Callable[[], bool], deadline: float, step: float = 0.01):
    """A Deferred firing True once ``done()`` holds, or False at ``deadline`` (clock seconds)."""
    def check():
        if done():
            return defer.succeed(True)
        if clock.seconds() >= deadline:
            return defer.succeed(False)
        return task.deferLater(clock, step, check)
    return check()


@defer.inlineCallbacks
def graceful_stop(service: NodeService, clock):
    """
    Stop one node without losing what it acknowledged or forwarded:

    1. stop accepting clients; connected ones are read no more, and closed
       once every request read from them is answered, those waiting behind
       a write or a blocked command included (at most ``timeout``; the rest
       are then cut);
    2. wait for the writes forwarded to replicas to be answered or hinted
       (at most ``timeout`` more), then fsync every hint log;
    3. tell every peer this node is leaving (a heartbeat saying so, on each
       connection both ways): they mark it DOWN and hint its writes at
       once; wait until each connection has answered (a PONG comes after
       any request the peer sent before it), at most ``peer_down_after``,
       and until the local Redis has answered what they sent.
    """
    parts = service.parts
    config = parts.config
    if service.client_listener is not None:
        yield service.removeService(service.client_listener)
    if service.tls_client_listener is not None:
        yield service.removeService(service.tls_client_listener)
    node = parts.node
    deadline = clock.seconds() + config.timeout
    for client in list(node.clients):
        client.stop_reading()
    yield _until(clock, lambda: all(c.settled for c in node.clients), deadline)
    for client in list(node.clients):
        client.drain()
    if not (yield _until(clock, lambda: not node.clients, deadline)):
        log.warn("{n} clients still waiting after {s}s; closing them", n=len(node.clients), s=config.timeout)
        for client in list(node.clients):
            client.transport.abortConnection()
    outboxes = parts.outboxes
    yield _until(clock, lambda: not any(o.in_flight for o in outboxes.values()),
                 clock.seconds() + config.timeout)
    for outbox in outboxes.values():
        if outbox.started:
            outbox.hints.flush()
    parts.membership.leaving = True
    protocols = [p for link in parts.links.values() for p in link.connections]
    if service.peer_factory is not None:
        protocols.extend(p for p in service.peer_factory.connections if p.is_open)
    sent = clock.seconds()
    for protocol in protocols:
        protocol.ping()
    yield _until(clock, lambda: all(p.last_received > sent or not p.is_open for p in protocols)
                 and not parts.datastore.in_flight, sent + config.peer_down_after)
    log.info("leaving: clients drained, hints flushed, {n} peer connections told", n=len(protocols))


class _PartsService(Service):
    """Starts the node's parts (hint logs, peer links) with the service, stops them with it."""

    def __init__(self, parts: NodeParts) -> None:
        self.parts = parts

    def startService(self) -> None:
        Service.startService(self)
        self.parts.start()

    def stopService(self):
        Service.stopService(self)
        self.parts.stop()
