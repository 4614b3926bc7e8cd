# -*- test-case-name: tests.unit.test_peer -*-
"""
The ``dyn_listen`` side: accepting the connections peers make to this node.

Each accepted connection speaks `dynomite.peers.protocol`; the listener
keeps the set of them, fails their overdue requests and drops those that
stay silent for ``peer_down_after`` (connecting nodes send heartbeats).
The connections this node makes toward its peers are `dynomite.peers.link`.

TLS (``secure_server_option``): one port takes both kinds of peer
connection, and the first byte decides (`_FirstByte`): 0x16 opens a TLS
handshake record, which no peer frame starts with, so the connection is
handed to Twisted's TLS (mutual: the connecting node must present a
certificate signed by the cluster CA); anything else is the peer protocol
in clear.  Which links must be encrypted is only known once the connecting
node says who it is (HELLO): a plaintext HELLO from a node whose link must
run TLS is refused with a REJECT saying so; a TLS one whose certificate
does not name the host of the node it claims to be is refused too.  Every
refusal is counted (``NodeMetrics.peer_tls_refusals``) and logged once per
peer.

Gossip (``gossip``, the node's `dynomite.peers.gossiper.Gossiper`): a node
whose HELLO carries its entry in the cluster view is checked by
``Gossiper.admit`` instead of ``known`` (so a node the topology does not
know yet may join), then by the same TLS rules; once its handshake
completes, the view learns its entry.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Set, Tuple

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from dynomite.config.model import NodeConfig
from dynomite.peers.protocol import LocalNode, PeerProtocol, peer_timeout, tick_interval
from dynomite.runtime.tls import CurrentServer, certificate_mismatch

#: The first byte of a TLS handshake record (a ClientHello).
TLS_HANDSHAKE = b"\x16"

__all__ = ["PeerServerFactory"]


class PeerServerFactory(Factory):
    """
    Accepts peer connections on ``dyn_listen``.

    Requests that arrive go to ``requests`` (`IPeerRequests`; None: refuse
    them); the status heartbeats carry comes from and goes to ``membership``
    (`IPeerStatus`; None: report `DEFAULT_STATUS`).  ``known(name, dc,
    rack)`` says whether a node saying HELLO belongs to the cluster
    (``gossip``: or whether a newcomer may join, see the module docstring).  While
    listening, accepted connections that stay silent for ``peer_down_after``
    are dropped (connectors send heartbeats).
    """

    noisy = False
    log = Logger()

    def __init__(self, config: NodeConfig, requests: Any, membership: Any,
                 known: Callable[[str, str, str], bool], clock,
                 name: Optional[str] = None, tls: Any = None, metrics: Any = None,
                 gossip: Any = None) -> None:
        self._local = LocalNode(config, requests, membership, name, gossip)
        self._gossip = gossip
        self._known = known
        self._tls = tls
        self._option = config.secure_server_option
        self.tls_refusals: Dict[str, int] = (
            metrics.peer_tls_refusals if metrics is not None else dict.fromkeys(TLS_REFUSALS, 0))
        self._logged: Set[Tuple[str, str]] = set()
        self._tls_factory = None
        if tls is not None and tls.peer_server() is not None:
            self._tls_factory = TLSMemoryBIOFactory(CurrentServer(tls.peer_server), False, _InTLS(self),
                                                    clock=clock)
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
        if self._tls_factory is None:
            return self.peer_protocol(addr)
        return _FirstByte(self, addr)

    def peer_protocol(self, addr) -> PeerProtocol:
        """The peer protocol of one accepted connection (in clear, or inside TLS)."""
        protocol = PeerProtocol(self._local, self._clock, self,
                                known=lambda node, dc, rack: self._admit(protocol, node, dc, rack),
                                newcomer=lambda node, dc, rack, entry: self._admit(protocol, node, dc, rack, entry))
        protocol.remote = getattr(addr, "host", None)
        return protocol

    def _admit(self, protocol: PeerProtocol, node: str, dc: str, rack: str, entry: Any = None):
        """The handshake's membership check (gossip's, for a HELLO with an entry), and what TLS asks of this link."""
        if entry is not None and self._gossip is not None:
            verdict = self._gossip.admit(node, dc, rack, entry)
            if verdict is not True:
                return verdict
        elif not self._known(node, dc, rack):
            return False
        if protocol.tls:
            host = node.rpartition(":")[0].strip("[]")
            why = certificate_mismatch(protocol.transport.getPeerCertificate(), host)
            if why is not None:
                return self._refuse("certificate_name", node, "TLS refused: %s" % why)
        elif self._tls is not None and self._tls.peer_encrypted(dc, rack):
            return self._refuse("plaintext", node,
                                "plaintext refused: secure_server_option %s needs TLS between %s/%s and %s/%s"
                                % (self._option, self._local.identity.datacenter,
                                   self._local.identity.rack, dc, rack))
        return True

    def _refuse(self, why: str, peer: str, reason: str) -> str:
        """Count a TLS refusal; log it the first time for this peer."""
        self.tls_refusals[why] += 1
        if (why, peer) not in self._logged:
            self._logged.add((why, peer))
            self.log.warn("refused peer {peer}: {reason}", peer=peer, reason=reason)
        return reason

    def _handshake_failed(self, protocol: PeerProtocol) -> None:
        peer = protocol.peer_name or protocol.remote or "?"
        self._refuse("handshake", peer, "TLS handshake failed: %s" % protocol.tls_error)

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
            if protocol.silent(now, self._down_after):
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
        if protocol.peer_entry is not None and self._gossip is not None:
            self._gossip.learn(protocol.peer_entry)

    def protocol_rejected(self, protocol: PeerProtocol, reason: str) -> None:
        pass

    def protocol_lost(self, protocol: PeerProtocol) -> None:
        self.connections.discard(protocol)
        if protocol.tls_error is not None and not protocol.peer_name:
            self._handshake_failed(protocol)


#: Why the listener refused a peer connection over TLS: plaintext where TLS
#: is required, a failed TLS handshake (no certificate, another CA...), a
#: certificate that does not name the node's host.
TLS_REFUSALS = ("plaintext", "handshake", "certificate_name")


class _InTLS(Factory):
    """The factory Twisted's TLS wraps: peer protocols for connections that started TLS."""

    def __init__(self, listener: PeerServerFactory) -> None:
        self._listener = listener

    def buildProtocol(self, addr):
        return self._listener.peer_protocol(addr)


class _FirstByte(Protocol):
    """
    An accepted connection until its first byte says whether it is TLS;
    then everything goes to the protocol chosen (see the module docstring).
    A connection that sends nothing is dropped after ``peer_down_after``.
    """

    def __init__(self, listener: PeerServerFactory, addr) -> None:
        self._listener = listener
        self._addr = addr
        self._inner: Optional[Protocol] = None
        self._silence: Any = None

    def connectionMade(self) -> None:
        listener = self._listener
        self._silence = listener._clock.callLater(listener._down_after, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            if self._silence is not None and self._silence.active():
                self._silence.cancel()
            listener = self._listener
            if data[:1] == TLS_HANDSHAKE:
                inner = listener._tls_factory.buildProtocol(self._addr)
            else:
                inner = listener.peer_protocol(self._addr)
            self._inner = inner
            inner.makeConnection(self.transport)
        inner.dataReceived(data)

    def connectionLost(self, reason=None) -> None:
        if self._silence is not None and self._silence.active():
            self._silence.cancel()
        if self._inner is not None:
            self._inner.connectionLost(reason)
