# -*- test-case-name: tests.unit.test_peer -*-
"""
Node-to-node links: the connections this node keeps toward each peer.

The protocol spoken on each connection (handshake, multiplexed requests,
heartbeats) is `dynomite.peers.protocol`; this module decides when and how
many connections there are.  The listener for the connections peers make
to this node is `dynomite.peers.listener`.

`PeerLink` is everything this node holds toward one peer: a few reconnecting
connections, each driven by the transition table `_TRANSITIONS`::

    IDLE --start--> CONNECTING --connected--> HANDSHAKING --ready--> UP
    CONNECTING --failed--> WAITING --retry (backoff)--> CONNECTING
    HANDSHAKING/UP --lost--> WAITING
    HANDSHAKING/UP --dead (silent for peer_down_after)--> DROPPING --lost--> WAITING
    any live state --reset--> RESETTING --lost--> CONNECTING (no backoff)
    any --stop--> STOPPED --start--> CONNECTING

Backoff is 0.1 s doubling up to 2 s, with injectable jitter; a connection
that completes the handshake resets it.  The link is UP while at least one connection is UP.

A link keeps the request counts of its closed connections as totals and adds
those of its live ones on demand; its connections sample latency into the
link's `Histogram`.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dynomite.config.model import NodeConfig, Seed
from dynomite.stats import Histogram
from dynomite.peers.protocol import LocalNode, PeerProtocol, tick_interval
from dynomite.wire.inflight import Request

__all__ = ["PeerLink", "backoff_delay"]


def backoff_delay(failures: int, jitter: Callable[[], float]) -> float:
    """
    Seconds before reconnect attempt number ``failures`` (1, 2, ...):
    0.1 s doubling up to 2 s, scaled by ``0.5 + jitter() / 2`` so that nodes
    restarted together do not reconnect in lockstep.
    """
    base = min(0.1 * 2 ** min(max(failures - 1, 0), 5), 2.0)
    return base * (0.5 + jitter() / 2)


# -- the link toward one peer ---------------------------------------------------

IDLE = "IDLE"
CONNECTING = "CONNECTING"
HANDSHAKING = "HANDSHAKING"
UP = "UP"
WAITING = "WAITING"
DROPPING = "DROPPING"
RESETTING = "RESETTING"
STOPPED = "STOPPED"

#: (state, event) -> (next state, action).  Events not listed are ignored.
_TRANSITIONS: Dict[Tuple[str, str], Tuple[str, Optional[str]]] = {
    (IDLE, "start"): (CONNECTING, "_connect"),
    (CONNECTING, "connected"): (HANDSHAKING, None),
    (CONNECTING, "failed"): (WAITING, "_wait"),
    (CONNECTING, "reset"): (CONNECTING, "_reconnect"),
    (HANDSHAKING, "ready"): (UP, "_ready"),
    (HANDSHAKING, "lost"): (WAITING, "_wait"),
    (HANDSHAKING, "dead"): (DROPPING, "_abort"),
    (HANDSHAKING, "reset"): (RESETTING, "_abort"),
    (UP, "lost"): (WAITING, "_wait"),
    (UP, "dead"): (DROPPING, "_abort"),
    (UP, "reset"): (RESETTING, "_abort"),
    (DROPPING, "lost"): (WAITING, "_wait"),
    (DROPPING, "reset"): (RESETTING, None),
    (RESETTING, "lost"): (CONNECTING, "_connect"),
    (WAITING, "retry"): (CONNECTING, "_connect"),
    (WAITING, "reset"): (CONNECTING, "_reconnect"),
}
for _state in (IDLE, CONNECTING, HANDSHAKING, UP, WAITING, DROPPING, RESETTING):
    _TRANSITIONS[(_state, "stop")] = (STOPPED, "_shutdown")
del _state
_TRANSITIONS[(STOPPED, "start")] = (CONNECTING, "_connect")


class _Slot:
    """One of a link's connections, reconnecting per `_TRANSITIONS`."""

    log = Logger()

    def __init__(self, link: "PeerLink", index: int) -> None:
        self.link = link
        self.index = index
        self.state = IDLE
        self.protocol: Optional[PeerProtocol] = None
        self.failures = 0
        self._attempt: Optional[Deferred] = None
        self._retry_call: Optional[IDelayedCall] = None
        self._factory = _SlotFactory(self)

    def fire(self, event: str) -> None:
        entry = _TRANSITIONS.get((self.state, event))
        if entry is None:
            return
        old = self.state
        self.state, action = entry
        if action is not None:
            getattr(self, action)()
        if (old == UP) != (self.state == UP):
            self.link._slot_changed()

    # -- actions -------------------------------------------------------------

    def _connect(self) -> None:
        self.protocol = None
        d = self._attempt = self.link._endpoint.connect(self._factory)
        d.addCallbacks(self._attempt_done, self._attempt_failed,
                       callbackArgs=(d,), errbackArgs=(d,))

    def _reconnect(self) -> None:
        self._cancel()
        self._connect()

    def _wait(self) -> None:
        self.failures += 1
        delay = backoff_delay(self.failures, self.link._jitter)
        self._retry_call = self.link._clock.callLater(delay, self.fire, "retry")

    def _ready(self) -> None:
        self.failures = 0

    def _abort(self) -> None:
        if self.protocol is not None:
            self.protocol.drop()

    def _shutdown(self) -> None:
        self._cancel()
        self._abort()

    def _cancel(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.cancel()

    # -- endpoint and protocol callbacks -------------------------------------

    def _attempt_done(self, result, d):
        if d is self._attempt:
            self._attempt = None
        return None

    def _attempt_failed(self, failure, d) -> None:
        if d is not self._attempt:
            return None
        self._attempt = None
        self.log.debug("connecting to peer {peer} failed: {why}",
                       peer=self.link.name, why=failure.getErrorMessage())
        self.fire("failed")
        return None

    def protocol_connected(self, protocol: PeerProtocol) -> None:
        if self.state != CONNECTING:
            protocol.drop()
            return
        self.protocol = protocol
        self.fire("connected")

    def protocol_ready(self, protocol: PeerProtocol) -> None:
        if protocol is self.protocol:
            self.fire("ready")

    def protocol_rejected(self, protocol: PeerProtocol, reason: str) -> None:
        self.link._rejected(reason)

    def protocol_lost(self, protocol: PeerProtocol) -> None:
        self.link._retire(protocol)
        if protocol is self.protocol:
            self.protocol = None
            self.fire("lost")


class _SlotFactory(Factory):
    noisy = False

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot

    def buildProtocol(self, addr):
        link = self._slot.link
        protocol = PeerProtocol(link._local, link._clock, self._slot,
                                expected=link.name, timeout=link.timeout, latency=link.latency)
        link._live.add(protocol)
        return protocol


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
    takes the status heartbeats carry.
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
    ) -> None:
        self.peer = peer
        self.name = str(peer.address)
        self.datacenter = peer.datacenter
        self.rack = peer.rack
        self.timeout = timeout
        self._clock = clock
        self._jitter = jitter
        self._on_state = on_state
        self._local = LocalNode(config, requests, membership, name)
        if connect is None:
            self._endpoint = HostnameEndpoint(
                clock, peer.address.host, peer.address.port, timeout=config.peer_down_after)
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
    def admin(self) -> Optional[str]:
        """The peer's admin API address ("host:port"), as it said in WELCOME."""
        for protocol in self._up:
            if protocol.peer_admin:
                return protocol.peer_admin
        return None

    @property
    def state(self) -> str:
        return UP if self._up else "DOWN"

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self._up)

    def start(self) -> None:
        """Connect every connection; keep them connected until `stop`."""
        for slot in self.slots:
            slot.fire("start")
        if not self._ticker.running:
            self._ticker.start(self.tick_interval, now=False)

    def stop(self) -> None:
        """Close every connection and stop reconnecting."""
        if self._ticker.running:
            self._ticker.stop()
        for slot in self.slots:
            slot.fire("stop")

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
            slot.failures = 0
            slot.fire("reset")

    def tick(self, now: float) -> None:
        """Fail overdue requests, drop silent connections, send heartbeats."""
        down_after = self._down_after
        for slot in self.slots:
            protocol = slot.protocol
            if protocol is None or slot.state not in (HANDSHAKING, UP):
                continue
            self.timed_out_total += protocol.expire(now)
            if now - protocol.last_received >= down_after:
                self.dropped_total += 1
                self.log.warn(
                    "peer {peer}: nothing received for {seconds}s; dropping connection {i}",
                    peer=self.name, seconds=down_after, i=slot.index)
                slot.fire("dead")
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
