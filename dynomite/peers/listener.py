# -*- test-case-name: tests.unit.test_peer -*-
"""
The ``dyn_listen`` side: accepting the connections peers make to this node.

Each accepted connection speaks `dynomite.peers.protocol`; the listener
keeps the set of them, fails their overdue requests and drops those that
stay silent for ``peer_down_after`` (connecting nodes send heartbeats).
The connections this node makes toward its peers are `dynomite.peers.link`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Set

from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dynomite.config.model import NodeConfig
from dynomite.peers.protocol import LocalNode, PeerProtocol, peer_timeout, tick_interval

__all__ = ["PeerServerFactory"]


class PeerServerFactory(Factory):
    """
    Accepts peer connections on ``dyn_listen``.

    Requests that arrive go to ``requests`` (`IPeerRequests`; None: refuse
    them); the status heartbeats carry comes from and goes to ``membership``
    (`IPeerStatus`; None: report `DEFAULT_STATUS`).  ``known(name, dc,
    rack)`` says whether a node saying HELLO belongs to the cluster.  While
    listening, accepted connections that stay silent for ``peer_down_after``
    are dropped (connectors send heartbeats).
    """

    noisy = False
    log = Logger()

    def __init__(self, config: NodeConfig, requests: Any, membership: Any,
                 known: Callable[[str, str, str], bool], clock,
                 name: Optional[str] = None) -> None:
        self._local = LocalNode(config, requests, membership, name)
        self._known = known
        self._clock = clock
        self._down_after = config.peer_down_after
        self.connections: Set[PeerProtocol] = set()
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock
        self.tick_interval = tick_interval(config.peer_heartbeat_interval,
                                           peer_timeout(config, config.datacenter))
        self.timed_out_total = 0

    @property
    def name(self) -> str:
        return self._local.name

    def buildProtocol(self, addr):
        return PeerProtocol(self._local, self._clock, self, known=self._known)

    def startFactory(self) -> None:
        if not self._ticker.running:
            self._ticker.start(self.tick_interval, now=False)

    def stopFactory(self) -> None:
        """The listener stopped: close the connections it accepted too."""
        if self._ticker.running:
            self._ticker.stop()
        for protocol in list(self.connections):
            protocol.drop()

    def tick(self, now: float) -> None:
        """Fail overdue requests and drop connections silent for too long."""
        for protocol in list(self.connections):
            self.timed_out_total += protocol.expire(now)
            if now - protocol.last_received >= self._down_after:
                self.log.info("peer {peer}: silent for {seconds}s; dropping its connection",
                              peer=protocol.peer_name, seconds=self._down_after)
                protocol.drop()

    def _tick(self) -> None:
        try:
            self.tick(self._clock.seconds())
        except Exception:
            self.log.failure("peer listener housekeeping failed")

    # -- PeerProtocol owner interface ----------------------------------------

    def protocol_connected(self, protocol: PeerProtocol) -> None:
        self.connections.add(protocol)

    def protocol_ready(self, protocol: PeerProtocol) -> None:
        pass

    def protocol_rejected(self, protocol: PeerProtocol, reason: str) -> None:
        pass

    def protocol_lost(self, protocol: PeerProtocol) -> None:
        self.connections.discard(protocol)
