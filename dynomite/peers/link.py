# -*- test-case-name: tests.unit.test_peer -*-
"""
Node-to-node links: the connections this node keeps toward each peer.

The protocol spoken on each connection (handshake, multiplexed requests,
heartbeats) is `dynomite.peers.protocol`; this module decides when and how
many connections there are.  The listener for the connections peers make
to this node is `dynomite.peers.listener`.

`PeerLink` is everything this node holds toward one peer: a few reconnecting
connections, each driven by the shared reconnect machine of
`dynomite.runtime.reconnect` (HANDSHAKING is the peer handshake; a
connection silent for ``peer_down_after`` is *dead* and dropped; the
admin's /peer/reset is *reset*).  Its backoff (0.1 s doubling up to 2 s)
takes the link's injectable jitter; a connection that completes the
handshake resets it.  The link is UP while at least one connection is UP.

Under ``secure_server_option`` the link to a peer in another datacenter
(``datacenter``), rack (``rack``) or any (``all``) dials with mutual TLS
(`dynomite.runtime.tls`): the peer's certificate must be signed by the
cluster CA and name the host dialled, and this node presents its own.  The
certificates are fetched at each dial, so a reload (SIGHUP) applies to new
connections.  A TLS handshake that fails is logged once per reason, like a
REJECT, and counted in `tls_failures_total`.

A link keeps the request counts of its closed connections as totals and adds
those of its live ones on demand; its connections sample latency into the
link's `Histogram`.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Set

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dynomite.config.model import NodeConfig, Seed
from dynomite.stats import Histogram
from dynomite.peers.protocol import LocalNode, PeerProtocol, tick_interval
from dynomite.runtime.reconnect import HANDSHAKING, UP, Backoff, ReconnectingConnection
from dynomite.runtime.tls import ReloadingTLSEndpoint
from dynomite.wire.inflight import Request

__all__ = ["LINK_FAILURE", "PeerLink"]

#: How the errors a peer link makes itself start (unavailable, timed out:
#: `dynomite.peers.protocol`), as opposed to the peer's Redis answering an
#: error: a write whose leader's link failed this way goes to the next leader.
LINK_FAILURE = b"-ERR peer "


class _Slot(ReconnectingConnection):
    """One of a link's connections, reconnecting per `dynomite.runtime.reconnect`."""

    def __init__(self, link: "PeerLink", index: int) -> None:
        ReconnectingConnection.__init__(self, link._endpoint, link._clock, link.backoff,
                                        "peer %s" % link.name)
        self.link = link
        self.index = index

    def build_protocol(self, addr) -> PeerProtocol:
        link = self.link
        protocol = PeerProtocol(link._local, link._clock, self,
                                expected=link.name, timeout=link.timeout, latency=link.latency)
        link._live.add(protocol)
        return protocol

    def up_changed(self, up: bool) -> None:
        self.link._slot_changed()

    def protocol_rejected(self, protocol: PeerProtocol, reason: str) -> None:
        self.link._rejected(reason)

    def protocol_lost(self, protocol: PeerProtocol) -> None:
        if protocol.tls_error is not None and not protocol.is_open and protocol.reject_reason is None:
            self.link.tls_failures_total += 1
            self.link._rejected("TLS handshake failed: %s" % protocol.tls_error)
        self.link._retire(protocol)
        ReconnectingConnection.protocol_lost(self, protocol)


class PeerLink:
    """
    Everything this node holds toward one peer: a few reconnecting, pipelined
    connections and whether the peer is reachable.

    ``connections`` is ``local_peer_connections`` for a peer in this node's
    datacenter, ``remote_peer_connections`` otherwise.  ``connect(address)``
    returns the endpoint to dial (default: TCP by hostname), so tests and an
    in-process cluster can wire nodes together in memory; ``on_state(link,
    up)`` hears every change between UP and DOWN.  ``requests``
    (`IPeerRequests`) serves requests the peer sends back over these
    connections (None: refuse them); ``membership`` (`IPeerStatus`) gives and
    takes the status heartbeats carry; ``gossip`` (the node's `Gossiper`,
    None: off) hears the GOSSIP frames the peer sends.
    """

    log = Logger()

    def __init__(
        self,
        config: NodeConfig,
        peer: Seed,
        timeout: float,
        clock,
        connect: Optional[Callable[[Any], Any]] = None,
        on_state: Optional[Callable[["PeerLink", bool], None]] = None,
        requests: Any = None,
        membership: Any = None,
        jitter: Callable[[], float] = random.random,
        name: Optional[str] = None,
        tls: Any = None,
        gossip: Any = None,
    ) -> None:
        self.peer = peer
        self.name = str(peer.address)
        self.datacenter = peer.datacenter
        self.rack = peer.rack
        self.timeout = timeout
        self._clock = clock
        self.backoff = Backoff(jitter)
        self._on_state = on_state
        self._local = LocalNode(config, requests, membership, name, gossip)
        #: whether this link must run TLS (``secure_server_option``; ``tls`` is the node's `NodeTLS`)
        self.encrypted = tls is not None and connect is None and tls.peer_encrypted(peer.datacenter, peer.rack)
        self.tls_failures_total = 0
        if connect is None:
            self._endpoint = HostnameEndpoint(
                clock, peer.address.host, peer.address.port, timeout=config.peer_down_after)
            if self.encrypted:
                host = peer.address.host
                self._endpoint = ReloadingTLSEndpoint(lambda: tls.peer_client(host), self._endpoint)
        else:
            self._endpoint = connect(peer.address)
        same_dc = peer.datacenter == config.datacenter
        n = config.local_peer_connections if same_dc else config.remote_peer_connections
        self.slots = [_Slot(self, i) for i in range(n)]
        self._up: List[PeerProtocol] = []
        self._heartbeat = config.peer_heartbeat_interval
        self._down_after = config.peer_down_after
        self._next_ping = 0.0
        self._unavailable = b"-ERR peer %s unavailable\r\n" % self.name.encode("utf-8")
        self._last_rejection: Optional[str] = None
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock
        self.tick_interval = tick_interval(self._heartbeat, timeout)
        self.timed_out_total = 0
        self.dropped_total = 0
        # requests failed at once because no connection was UP
        self.unavailable_total = 0
        # connections made and not yet closed; totals of closed ones:
        # sent, replies, error replies, lost, refused (not open)
        self._live: Set[PeerProtocol] = set()
        self._closed = [0, 0, 0, 0, 0]
        # sampled request latency (one request in SAMPLE_EVERY per connection)
        self.latency = Histogram()

    # -- hot path ------------------------------------------------------------

    def send(self, frame_type: int, request: Request, sink) -> None:
        """
        Send ``request`` in a REQUEST or FORWARD frame on connection
        ``request.lane % n`` of the ``n`` UP ones, so the requests of one lane
        to this peer keep their order; fail ``sink`` at once while the peer
        is DOWN.
        """
        up = self._up
        if up:
            up[request.lane % len(up)].request(frame_type, request, sink)
        else:
            self.unavailable_total += 1
            sink.fail(self._unavailable)

    def publish(self, lane: int, channel: bytes, message: bytes, shard: bool) -> bool:
        """
        Send a pub/sub message in one PUBLISH frame on connection ``lane %
        n`` of the ``n`` UP ones that take it (one publisher's messages keep
        their order); False when there is none (the peer is DOWN, or
        predates PUBLISH): the message is not delivered there.
        """
        up = [p for p in self._up if p.publishes]
        if not up:
            return False
        up[lane % len(up)].publish(channel, message, shard)
        return True

    @property
    def gossips(self) -> bool:
        """An UP connection takes GOSSIP frames (the peer gossips too)."""
        return any(p.gossips for p in self._up)

    def gossip(self, payload: bytes) -> bool:
        """Send one GOSSIP frame on the first UP connection that takes it; False when none does."""
        for protocol in self._up:
            if protocol.gossips:
                protocol.send_gossip(payload)
                return True
        return False

    # -- counters ------------------------------------------------------------

    def _retire(self, protocol: PeerProtocol) -> None:
        """A connection closed: keep its counts in the totals."""
        if protocol in self._live:
            self._live.discard(protocol)
            closed = self._closed
            closed[0] += protocol.sent
            closed[1] += protocol.replies
            closed[2] += protocol.errors
            closed[3] += protocol.lost
            closed[4] += protocol.unavailable

    def _totals(self) -> List[int]:
        sent, replies, errors, lost, refused = self._closed
        for p in self._live:
            sent += p.sent
            replies += p.replies
            errors += p.errors
            lost += p.lost
            refused += p.unavailable
        return [sent, replies, errors, lost, refused]

    @property
    def requests_total(self) -> int:
        """Requests sent to this peer, on every connection so far."""
        return self._totals()[0]

    def request_counts(self) -> Dict[str, int]:
        """
        Requests by result: ``ok`` and ``error`` replies (an error is a
        FAILED or error reply, or a request failed when its connection
        closed), ``timeout`` (no reply within the timeout: `timed_out_total`),
        ``unavailable`` (failed at once, no connection UP).
        """
        _, replies, errors, lost, refused = self._totals()
        return {
            "ok": replies - errors,
            "error": errors + lost,
            "timeout": self.timed_out_total,
            "unavailable": self.unavailable_total + refused,
        }

    # -- state ---------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return bool(self._up)

    @property
    def connections(self) -> List[PeerProtocol]:
        """The connections UP now (a graceful stop tells each that this node leaves)."""
        return list(self._up)

    @property
    def admin(self) -> Optional[str]:
        """The peer's admin API address ("host:port"), as it said in WELCOME."""
        for protocol in self._up:
            if protocol.peer_admin:
                return protocol.peer_admin
        return None

    @property
    def tls(self) -> bool:
        """The link is UP and every UP connection runs TLS (as their transports say)."""
        return bool(self._up) and all(p.tls for p in self._up)

    @property
    def state(self) -> str:
        return UP if self._up else "DOWN"

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self._up)

    def start(self) -> None:
        """Connect every connection; keep them connected until `stop`."""
        for slot in self.slots:
            slot.start()
        if not self._ticker.running:
            self._ticker.start(self.tick_interval, now=False)

    def stop(self) -> None:
        """Close every connection and stop reconnecting."""
        if self._ticker.running:
            self._ticker.stop()
        for slot in self.slots:
            slot.stop()

    def heartbeat(self) -> None:
        """Send a heartbeat now (this node's state changed; tell the peer at once)."""
        for protocol in self._up:
            protocol.ping()

    def set_timeout(self, timeout: float) -> None:
        """Change the request timeout of this link's current and future connections."""
        self.timeout = timeout
        for slot in self.slots:
            if slot.protocol is not None:
                slot.protocol.set_timeout(timeout)

    def reset(self) -> None:
        """Drop every connection and reconnect at once (Dynomite's /peer/reset)."""
        for slot in self.slots:
            slot.reset()

    def tick(self, now: float) -> None:
        """Fail overdue requests, drop silent connections, send heartbeats."""
        down_after = self._down_after
        for slot in self.slots:
            protocol = slot.protocol
            if protocol is None or slot.state not in (HANDSHAKING, UP):
                continue
            self.timed_out_total += protocol.expire(now)
            if protocol.silent(now, down_after):
                self.dropped_total += 1
                self.log.warn(
                    "peer {peer}: nothing received for {seconds}s; dropping connection {i}",
                    peer=self.name, seconds=down_after, i=slot.index)
                slot.dead()
        if now >= self._next_ping:
            self._next_ping = now + self._heartbeat
            for protocol in self._up:
                protocol.ping()

    def _tick(self) -> None:
        try:
            self.tick(self._clock.seconds())
        except Exception:
            self.log.failure("peer {peer}: housekeeping failed", peer=self.name)

    def _slot_changed(self) -> None:
        was_up = bool(self._up)
        self._up = [s.protocol for s in self.slots if s.state == UP and s.protocol is not None]
        if was_up == bool(self._up):
            return
        if self._up:
            self._last_rejection = None
            self.log.info("peer {peer} is up", peer=self.name)
        else:
            self.log.warn("peer {peer} is down", peer=self.name)
        if self._on_state is not None:
            try:
                self._on_state(self, bool(self._up))
            except Exception:
                self.log.failure("peer {peer}: state listener failed", peer=self.name)

    def _rejected(self, reason: str) -> None:
        if reason != self._last_rejection:
            self._last_rejection = reason
            self.log.warn("peer {peer} refused this node: {reason}", peer=self.name, reason=reason)
