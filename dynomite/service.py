"""
The service tree of one node, built from a validated `NodeConfig`.

    MultiService "dynomite"
      DatastoreMonitor   txredisapi health checks and INFO
      Datastore          pipelined raw-RESP connections to the local Redis
      client listener    StreamServerEndpointService(listen, ClientFactory)

The reactor is passed in; nothing below reaches for the global one.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger

from .config import Address, NodeConfig
from .coordinator import Coordinator
from .datastore import Datastore
from .monitor import DatastoreMonitor
from .node import Node
from .server import ClientFactory
from .topology import Topology

log = Logger()


def server_endpoint(reactor, address: Address, backlog: int):
    """A TCP server endpoint for ``address`` (IPv6 when the host has a colon)."""
    cls = TCP6ServerEndpoint if ":" in address.host else TCP4ServerEndpoint
    return cls(reactor, address.port, backlog=backlog, interface=address.host)


class NodeService(MultiService):
    """Everything one node runs; `node` is the request handler."""

    def __init__(self, config: NodeConfig, reactor) -> None:
        MultiService.__init__(self)
        self.setName("dynomite")
        self.config = config
        self.datastore = Datastore(config, reactor)
        self.monitor = DatastoreMonitor(config.datastore, reactor, on_up=self.datastore.retry_now)
        self.topology = Topology.from_config(config)
        self.coordinator = Coordinator(config, self.topology, self.datastore, {})
        self.node = Node(config, self.datastore, self.monitor, reactor, self.coordinator)
        self.monitor.setServiceParent(self)
        self.datastore.setServiceParent(self)
        self.client_listener = StreamServerEndpointService(
            server_endpoint(reactor, config.listen, config.backlog),
            ClientFactory(self.node, reactor),
        )
        # A port we cannot bind is fatal: twistd must exit, not linger.
        self.client_listener._raiseSynchronously = True
        self.client_listener.setServiceParent(self)

    def startService(self) -> None:
        for key in self.config.unused_keys:
            log.warn(
                "{source}: {key}: accepted for Dynomite compatibility, not used by this node",
                source=self.config.source,
                key=key,
            )
        log.info(
            "dynomite node {dc}/{rack} listening on {listen}, datastore {datastore}",
            dc=self.config.datacenter,
            rack=self.config.rack,
            listen=str(self.config.listen),
            datastore=str(self.config.datastore),
        )
        MultiService.startService(self)
