"""
The service tree of one node, built from a validated `NodeConfig`.

    MultiService "dynomite"
      DatastoreMonitor   txredisapi health checks and INFO
      Datastore          pipelined raw-RESP connections to the local Redis
      PeerLinks          one reconnecting PeerLink per other node
      peer listener      StreamServerEndpointService(dyn_listen, PeerServerFactory)
      client listener    StreamServerEndpointService(listen, ClientFactory)

The reactor is passed in; nothing below reaches for the global one.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger

from .config import Address, NodeConfig
from .coordinator import Coordinator
from .datastore import Datastore
from .monitor import DatastoreMonitor
from .node import Node
from .peer import PeerLink, PeerServerFactory, peer_timeout
from .server import ClientFactory
from .topology import Topology

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
    """Everything one node runs; `node` is the client request handler."""

    def __init__(self, config: NodeConfig, reactor, connect_peer: Optional[Callable] = None) -> None:
        MultiService.__init__(self)
        self.setName("dynomite")
        self.config = config
        self.topology = Topology.from_config(config)
        self.datastore = Datastore(config, reactor)
        self.monitor = DatastoreMonitor(config.datastore, reactor, on_up=self.datastore.retry_now)
        self.peers: Dict[str, PeerLink] = {}
        self.coordinator = Coordinator(config, self.topology, self.datastore, self.peers)
        self.node = Node(config, self.datastore, self.monitor, reactor, self.coordinator)
        seeds = {str(seed.address): seed for seed in config.dyn_seeds}
        local = self.topology.local
        for info in self.topology.nodes:
            if not info.is_local:
                self.peers[info.name] = PeerLink(
                    config,
                    seeds[info.name],
                    peer_timeout(config, info.datacenter),
                    reactor,
                    connect=connect_peer,
                    handler=self.coordinator,
                    name=local.name,
                )
        self.monitor.setServiceParent(self)
        self.datastore.setServiceParent(self)
        PeerLinks(self.peers).setServiceParent(self)
        if config.dyn_listen is not None:
            self.peer_listener = StreamServerEndpointService(
                server_endpoint(reactor, config.dyn_listen, config.backlog),
                PeerServerFactory(config, self.coordinator, self._known, reactor, name=local.name),
            )
            self.peer_listener._raiseSynchronously = True
            self.peer_listener.setServiceParent(self)
        self.client_listener = StreamServerEndpointService(
            server_endpoint(reactor, config.listen, config.backlog),
            ClientFactory(self.node, reactor),
        )
        # A port we cannot bind is fatal: twistd must exit, not linger.
        self.client_listener._raiseSynchronously = True
        self.client_listener.setServiceParent(self)

    def _known(self, name: str, datacenter: str, rack: str) -> bool:
        node = self.topology.node(name)
        return node is not None and node.datacenter == datacenter and node.rack == rack

    def startService(self) -> None:
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
