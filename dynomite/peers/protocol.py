"""
One node-to-node connection: handshake, then multiplexed requests both ways.

Nodes talk over `dyn_listen` with the frames of `dynomite.peer_framing`.
One connection carries any number of requests in flight in both directions;
each request has an id and its REPLY may come back in any order.

Handshake (the connecting side speaks first; JSON payloads)::

    HELLO {cluster, node, dc, rack, nonce}  -->
                                            <--  REJECT {reason}, close
                                            <--  WELCOME {node}              (no peer_secret)
                                            <--  CHALLENGE {node, nonce}     (peer_secret set)
    AUTH {proof}                            -->
                                            <--  WELCOME {node, proof}  or  REJECT

With ``peer_secret`` both sides prove they know it with HMAC-SHA256 over
the cluster, both node names and both random nonces, under different labels
for each direction, so the secret never crosses the wire, a proof cannot be
replayed, and the accepting side proves itself only to a connector that has
already proved itself.  The accepting side checks the cluster name and asks
``known(name, dc, rack)`` whether it expects that node; the connecting side
checks that WELCOME names the node it meant to reach.  Before the handshake
completes, any other frame ends the connection.

Whoever waits for a reply is a *sink* (``complete(raw)`` / ``fail(raw)``),
as for the datastore.  A REPLY flagged FAILED (the replica could not run
the request) and every local failure (peer down, timeout, connection lost)
reach ``fail``; quorum code counts those as missing replicas.  Unlike the
datastore's in-order matching, a timed-out peer request does not condemn
the connection: replies carry ids, so a late one is simply discarded.

Counting is cheap: a connection bumps plain integers (requests sent are its
last request id; replies, error replies, requests failed when it closed,
requests refused because it was not open), which its owner sums.  Latency
is sampled: every `SAMPLE_EVERY`-th request id remembers the clock reading
its deadline already took; when the REPLY with that id arrives, the time
since is observed (using the clock reading the reply's arrival already
took) into the connection's `Histogram` (its link's, when it has one).  At
most one sample waits per connection; a sample that times out is given up.

The connections a node keeps toward its peers, and the listener that
accepts theirs, are in `dynomite.peer`.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Tuple

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from dynomite.runtime import batching
from dynomite.config.model import NodeConfig
from dynomite.stats import Histogram
from dynomite.wire.replies import ERROR_STARTS
from dynomite.wire.peer_frames import (
    ACCEPTING_SIDE, AUTH, CHALLENGE, CONNECTING_SIDE, FLAG_FAILED, FORWARD, FRAME_NAMES,
    HELLO, PING, PONG, REJECT, REPLY, REQUEST, WELCOME, Frame, PeerFramer, PeerProtocolError,
    decode_control, encode_control, encode_frame, handshake_proof, new_nonce, proofs_match,
)

__all__ = ["LocalNode", "PeerProtocol", "SAMPLE_EVERY", "node_name", "peer_timeout", "tick_interval"]

#: Extra time a peer gets beyond ``timeout``: the datastore's own timeout
#: plus the network, which is longer between datacenters.
SAME_DC_SLACK = 0.2
CROSS_DC_SLACK = 5.0

#: Bytes an unauthenticated peer may make us buffer.
HANDSHAKE_MAX_BYTES = 64 * 1024

_NO_HANDLER = b"-ERR this node does not take peer requests on this connection\r\n"
_HANDLER_FAILED = b"-ERR internal error handling peer request\r\n"

# One request id in SAMPLE_EVERY (a power of two) has its latency measured.
SAMPLE_EVERY = 16
_SAMPLE_MASK = SAMPLE_EVERY - 1


def node_name(config: NodeConfig) -> str:
    """A node's name among its peers: its ``dyn_listen`` as seeds list it."""
    return str(config.dyn_listen)


def peer_timeout(config: NodeConfig, datacenter: str) -> float:
    """Seconds to wait for a peer in ``datacenter`` before failing a request."""
    slack = SAME_DC_SLACK if datacenter == config.datacenter else CROSS_DC_SLACK
    return config.timeout + slack


def tick_interval(heartbeat: float, timeout: float) -> float:
    """How often timeouts and liveness are checked: fine enough for both."""
    return max(0.01, min(0.25, heartbeat / 4, timeout / 10))


class LocalNode:
    """
    Who this node is to its peers (cluster, name, datacenter, rack, secret)
    and the handler that serves their requests; shared by its connections.
    """

    __slots__ = ("cluster", "name", "datacenter", "rack", "secret", "admin", "handler", "_config")

    def __init__(self, config: NodeConfig, handler: Any = None, name: Optional[str] = None) -> None:
        self.cluster = config.pool_name
        self.name = name if name is not None else node_name(config)
        self.datacenter = config.datacenter
        self.rack = config.rack
        self.secret = config.peer_secret.encode("utf-8") if config.peer_secret else None
        # where this node's admin API listens; peers learn it from WELCOME so
        # /cluster_describe can tell operators (and dynomite-admin) every node's
        self.admin = str(config.stats_listen)
        self.handler = handler
        self._config = config

    def peer_timeout(self, datacenter: str) -> float:
        return peer_timeout(self._config, datacenter)


class _ReplySink:
    """Answers one incoming request: a REPLY frame with the request's id."""

    __slots__ = ("_protocol", "_id")

    def __init__(self, protocol: "PeerProtocol", request_id: int) -> None:
        self._protocol: Optional[PeerProtocol] = protocol
        self._id = request_id

    def complete(self, raw: bytes) -> None:
        protocol = self._protocol
        if protocol is not None:
            self._protocol = None
            protocol.reply(self._id, 0, raw)

    def fail(self, raw: bytes) -> None:
        protocol = self._protocol
        if protocol is not None:
            self._protocol = None
            protocol.reply(self._id, FLAG_FAILED, raw)


class PeerProtocol(Protocol, batching.BatchedWriter):
    """
    One peer connection, either side of it: handshake, then requests both ways.

    The *owner* (a `PeerLink` connection slot, or the `PeerServerFactory`)
    hears of it through ``protocol_connected``, ``protocol_ready``,
    ``protocol_rejected`` and ``protocol_lost``.  ``expected`` (the name of
    the node dialled) makes this the connecting side; ``known`` is the
    accepting side's membership check.
    """

    log = Logger()
    _TABLES: Dict[str, Dict[int, Callable[..., None]]] = {}

    def __init__(self, local: LocalNode, clock, owner, expected: Optional[str] = None,
                 timeout: Optional[float] = None,
                 known: Optional[Callable[[str, str, str], bool]] = None,
                 latency: Optional[Histogram] = None) -> None:
        batching.BatchedWriter.__init__(self)
        self._local = local
        self._clock = clock
        self._owner = owner
        self._known = known
        self.connecting = expected is not None
        self._framer = PeerFramer()
        self._sinks: Dict[int, Any] = {}
        self._deadlines: Deque[Tuple[float, int]] = deque()
        self._last_id = 0  # also the number of requests sent
        # plain counters (see the module docstring); the PeerLink sums them
        self.replies = 0
        self.errors = 0
        self.lost = 0
        self.unavailable = 0
        self._latency = latency if latency is not None else Histogram()
        self._sample_id = 0  # id of the sampled request, 0: none
        self._sample_at = 0.0
        self._nonce = ""
        self._peer_nonce = ""
        self._open = False
        self._closing = False
        self.last_received = 0.0
        self.late_replies = 0
        self.reject_reason: Optional[str] = None
        self.peer_name: Optional[str] = None
        self.peer_datacenter: Optional[str] = None
        self.peer_admin: Optional[str] = None
        self._timeout = timeout
        self._timed_out = self._unavailable = b"-ERR peer unavailable\r\n"
        if expected is not None:
            self._set_peer(expected, None)
        self._enter("NEW")

    # -- state ---------------------------------------------------------------

    def _enter(self, state: str) -> None:
        self.state = state
        self._table = self._TABLES[state]
        self._open = state == "OPEN"

    def _set_peer(self, name: str, datacenter: Optional[str]) -> None:
        self.peer_name = name
        self.peer_datacenter = datacenter
        if self._timeout is None and datacenter is not None:
            self._timeout = self._local.peer_timeout(datacenter)
        bname = name.encode("utf-8")
        self._unavailable = b"-ERR peer %s unavailable\r\n" % bname
        if self._timeout is not None:
            self._timed_out = b"-ERR peer %s timed out after %d ms\r\n" % (
                bname, round(self._timeout * 1000))

    @property
    def is_open(self) -> bool:
        """The handshake completed and the connection is not closing."""
        return self._open

    @property
    def in_flight(self) -> int:
        """Requests sent on this connection still waiting for a reply."""
        return len(self._sinks)

    @property
    def sent(self) -> int:
        """Requests sent on this connection (ids are 1, 2, ...)."""
        return self._last_id

    # -- Twisted -------------------------------------------------------------

    def connectionMade(self) -> None:
        self.last_received = self._clock.seconds()
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            nodelay(True)
        self._owner.protocol_connected(self)
        if self._closing:
            return
        local = self._local
        if self.connecting:
            self._nonce = new_nonce()
            self._send_control(HELLO, {
                "cluster": local.cluster, "node": local.name, "dc": local.datacenter,
                "rack": local.rack, "nonce": self._nonce,
            })
            self._enter("HELLO_SENT")
        else:
            self._enter("AWAIT_HELLO")

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_received = self._clock.seconds()
        try:
            frames = self._framer.feed(data)
        except PeerProtocolError as e:
            self._violation(str(e))
            return
        batching.begin()
        try:
            for frame in frames:
                if self._closing:
                    return
                handler = self._table.get(frame.type)
                if handler is None:
                    self._violation("unexpected %s frame (%s)" % (
                        FRAME_NAMES[frame.type], "connection open" if self._open else "handshake"))
                    return
                handler(self, frame)
        finally:
            batching.end()
        if not self._open and self._framer.buffered > HANDSHAKE_MAX_BYTES:
            self._violation("handshake frame too large")

    def connectionLost(self, reason=None) -> None:
        self._closing = True
        self._enter("CLOSED")
        sinks = self._sinks
        self._sinks = {}
        self._deadlines.clear()
        self.lost += len(sinks)
        self._sample_id = 0
        self._owner.protocol_lost(self)
        unavailable = self._unavailable
        for sink in sinks.values():
            sink.fail(unavailable)

    # -- requests out --------------------------------------------------------

    def request(self, frame_type: int, flags: int, payload: bytes, sink,
                origin: Optional[str] = None) -> int:
        """
        Send a REQUEST or FORWARD carrying raw RESP ``payload``; its REPLY goes
        to ``sink``.  Returns the request id (0 if the connection is not
        open, in which case ``sink`` has already failed).  ``origin`` is the
        node that accepted the client's request (default: this node).
        """
        if not self._open:
            self.unavailable += 1
            sink.fail(self._unavailable)
            return 0
        self._last_id = rid = self._last_id + 1
        self._sinks[rid] = sink
        now = self._clock.seconds()
        self._deadlines.append((now + self._timeout, rid))
        if not rid & _SAMPLE_MASK and not self._sample_id:
            self._sample_id = rid
            self._sample_at = now
        self.write_batched(encode_frame(
            frame_type, flags, rid, self._local.name if origin is None else origin, payload))
        return rid

    def accepts_writes(self) -> bool:
        return not self._closing

    def set_timeout(self, timeout: float) -> None:
        """Requests sent from now on get ``timeout`` seconds (the admin timeout factor)."""
        self._timeout = timeout

    def expire(self, now: float) -> int:
        """Fail requests whose deadline has passed; returns how many."""
        deadlines = self._deadlines
        sinks = self._sinks
        expired = 0
        while deadlines and deadlines[0][0] <= now:
            rid = deadlines.popleft()[1]
            sink = sinks.pop(rid, None)
            if sink is not None:
                expired += 1
                if rid == self._sample_id:
                    self._sample_id = 0
                sink.fail(self._timed_out)
        return expired

    def ping(self) -> None:
        """Send a heartbeat carrying this node's status; the peer answers PONG with its own."""
        if self._open:
            self.transport.write(encode_frame(PING, 0, 0, "", self._status()))

    def _status(self) -> bytes:
        """This node's status for the peer (membership), or nothing."""
        status_for = getattr(self._local.handler, "status_for", None)
        if status_for is None or self.peer_name is None:
            return b""
        return encode_control(status_for(self.peer_name))

    def _note_status(self, frame) -> None:
        """Hand the status a peer sent with PING/PONG to membership; bad ones are ignored."""
        note = getattr(self._local.handler, "peer_status", None)
        if note is None or not frame.payload or self.peer_name is None:
            return
        try:
            status = json.loads(frame.payload)
        except ValueError:
            return
        if isinstance(status, dict):
            note(self.peer_name, status)

    def drop(self) -> None:
        """Close at once; in-flight requests fail when the loss is reported."""
        if not self._closing:
            self._closing = True
            self._open = False
            self.transport.abortConnection()

    # -- requests in ---------------------------------------------------------

    def reply(self, request_id: int, flags: int, raw: bytes) -> None:
        """Send the REPLY to request ``request_id``; ignored once closing."""
        if not self._closing:
            self.write_batched(encode_frame(REPLY, flags, request_id, "", raw))

    def _on_request(self, frame) -> None:
        sink = _ReplySink(self, frame.request_id)
        handler = self._local.handler
        if handler is None:
            sink.fail(_NO_HANDLER)
            return
        try:
            handler.handle_peer_request(
                self.peer_name, frame.type, frame.flags, frame.origin, frame.payload, sink)
        except Exception:
            self.log.failure("peer request handler failed")
            sink.fail(_HANDLER_FAILED)

    def _on_reply(self, frame) -> None:
        sinks = self._sinks
        rid = frame.request_id
        sink = sinks.pop(rid, None)
        if sink is None:
            self.late_replies += 1
            return
        self.replies += 1
        if rid == self._sample_id:
            self._sample_id = 0
            # dataReceived read the clock as this reply arrived
            self._latency.observe(self.last_received - self._sample_at)
        deadlines = self._deadlines
        while deadlines and deadlines[0][1] not in sinks:
            deadlines.popleft()
        try:
            if frame.flags & FLAG_FAILED:
                self.errors += 1
                sink.fail(frame.payload)
            else:
                if frame.payload[:1] in ERROR_STARTS:
                    self.errors += 1
                sink.complete(frame.payload)
        except Exception:
            self.log.failure("peer reply sink failed")

    def _on_ping(self, frame) -> None:
        self._note_status(frame)
        self.transport.write(encode_frame(PONG, 0, frame.request_id, "", self._status()))

    def _on_pong(self, frame) -> None:
        # dataReceived has noted that the peer is alive
        self._note_status(frame)

    # -- handshake: accepting side -------------------------------------------

    def _on_hello(self, frame) -> None:
        hello = self._decode(frame, ("cluster", "node", "dc", "rack", "nonce"))
        if hello is None:
            return
        local = self._local
        node, dc, rack = hello["node"], hello["dc"], hello["rack"]
        if hello["cluster"] != local.cluster:
            self._reject("cluster %r is not this node's cluster %r" % (hello["cluster"], local.cluster))
        elif self._known is None or not self._known(node, dc, rack):
            self._reject("node %s (%s/%s) is not a known peer of %s" % (node, dc, rack, local.name))
        else:
            self._set_peer(node, dc)
            self._peer_nonce = hello["nonce"]
            if local.secret is None:
                self._welcome({"node": local.name, "admin": local.admin})
            else:
                self._nonce = new_nonce()
                self._send_control(CHALLENGE, {"node": local.name, "nonce": self._nonce})
                self._enter("CHALLENGED")

    def _on_auth(self, frame) -> None:
        auth = self._decode(frame, ("proof",))
        if auth is None:
            return
        local = self._local
        secret = local.secret
        assert secret is not None and self.peer_name is not None
        expected = handshake_proof(secret, CONNECTING_SIDE, local.cluster, self.peer_name,
                                   local.name, self._peer_nonce, self._nonce)
        if not proofs_match(expected, auth["proof"]):
            self._reject("authentication failed (peer_secret differs)")
            return
        self._welcome({"node": local.name, "admin": local.admin, "proof": handshake_proof(
            secret, ACCEPTING_SIDE, local.cluster, self.peer_name, local.name,
            self._peer_nonce, self._nonce)})

    def _welcome(self, body: Dict[str, str]) -> None:
        self._send_control(WELCOME, body)
        self._enter("OPEN")
        self._owner.protocol_ready(self)

    def _reject(self, reason: str) -> None:
        self.log.warn("refused peer connection: {reason}", reason=reason)
        self._send_control(REJECT, {"reason": reason})
        self._closing = True
        self._enter("CLOSED")
        self.transport.loseConnection()

    # -- handshake: connecting side ------------------------------------------

    def _on_challenge(self, frame) -> None:
        challenge = self._decode(frame, ("node", "nonce"))
        if challenge is None:
            return
        local = self._local
        assert self.peer_name is not None
        if challenge["node"] != self.peer_name:
            self._violation("reached %s instead of %s" % (challenge["node"], self.peer_name))
        elif local.secret is None:
            self._violation("peer %s requires peer_secret, which this node lacks" % self.peer_name)
        else:
            self._peer_nonce = challenge["nonce"]
            self._send_control(AUTH, {"proof": handshake_proof(
                local.secret, CONNECTING_SIDE, local.cluster, local.name, self.peer_name,
                self._nonce, self._peer_nonce)})
            self._enter("AUTH_SENT")

    def _on_welcome(self, frame) -> None:
        welcome = self._decode(frame, ("node",))
        if welcome is None:
            return
        local = self._local
        assert self.peer_name is not None
        if welcome["node"] != self.peer_name:
            self._violation("reached %s instead of %s" % (welcome["node"], self.peer_name))
            return
        admin = welcome.get("admin")
        self.peer_admin = admin if isinstance(admin, str) else None
        if local.secret is not None:
            expected = handshake_proof(local.secret, ACCEPTING_SIDE, local.cluster, local.name,
                                       self.peer_name, self._nonce, self._peer_nonce)
            if self.state != "AUTH_SENT" or not proofs_match(expected, welcome.get("proof")):
                self._violation("peer %s did not prove it knows peer_secret" % self.peer_name)
                return
        self._enter("OPEN")
        self._owner.protocol_ready(self)

    def _on_reject(self, frame) -> None:
        rejection = self._decode(frame, ("reason",))
        if rejection is None:
            return
        self.reject_reason = rejection["reason"]
        self._closing = True
        self._enter("CLOSED")
        self._owner.protocol_rejected(self, rejection["reason"])
        self.transport.loseConnection()

    # -- helpers -------------------------------------------------------------

    def _send_control(self, frame_type: int, body: Dict[str, str]) -> None:
        self.transport.write(encode_frame(frame_type, 0, 0, self._local.name, encode_control(body)))

    def _decode(self, frame: Frame, fields: Tuple[str, ...]) -> Optional[Dict[str, Any]]:
        """A handshake frame's JSON object, or None after refusing the peer."""
        try:
            return decode_control(frame, fields)
        except PeerProtocolError as e:
            self._violation(str(e))
            return None

    def _violation(self, reason: str) -> None:
        """The peer broke the protocol: refuse it (handshake) or drop it."""
        if self._closing:
            return
        if not self.connecting and not self._open:
            self._reject(reason)
            return
        self.log.warn("dropping peer connection to {peer}: {reason}",
                      peer=self.peer_name, reason=reason)
        self.drop()


_OPEN = {
    REQUEST: PeerProtocol._on_request,
    FORWARD: PeerProtocol._on_request,
    REPLY: PeerProtocol._on_reply,
    PING: PeerProtocol._on_ping,
    PONG: PeerProtocol._on_pong,
}
#: Which frames each handshake state accepts, and what handles them.
PeerProtocol._TABLES = {
    "NEW": {},
    # accepting side
    "AWAIT_HELLO": {HELLO: PeerProtocol._on_hello},
    "CHALLENGED": {AUTH: PeerProtocol._on_auth},
    # connecting side
    "HELLO_SENT": {
        CHALLENGE: PeerProtocol._on_challenge,
        WELCOME: PeerProtocol._on_welcome,
        REJECT: PeerProtocol._on_reject,
    },
    "AUTH_SENT": {WELCOME: PeerProtocol._on_welcome, REJECT: PeerProtocol._on_reject},
    # both
    "OPEN": _OPEN,
    "CLOSED": {},
}
