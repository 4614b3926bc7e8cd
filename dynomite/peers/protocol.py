# -*- test-case-name: tests.unit.test_peer -*-
"""
One node-to-node connection: handshake, then multiplexed requests both ways.

Nodes talk over `dyn_listen` with the frames of `dynomite.wire.peer_frames`.
A new connection first runs the handshake, `dynomite.peers.handshake` (a
Sans-IO machine this protocol feeds and obeys); then it carries any number
of requests in flight in both directions; each request has an id and its
REPLY may come back in any order.

The peer layer owns the framing of a request: `PeerProtocol.request` turns a
`dynomite.wire.inflight.Request` into a frame (its flags, and a run of
several requests as FLAG_RUN with the count in front), and a frame that
arrives is turned back into a `Request` for the node's `IPeerRequests`.
Heartbeats (PING/PONG) carry membership status both ways, from and to the
node's `IPeerStatus` (`dynomite.peers.interfaces`).  A PUBLISH frame
carries a pub/sub message one way, with no reply; it is sent only to a
peer whose WELCOME listed the feature (`publishes`).  GOSSIP frames carry
the cluster view (`dynomite.peers.gossip`) to and from the node's
`dynomite.peers.gossiper.Gossiper`, only on connections that take them
(`gossips`: the WELCOME listed ``gossip``, or the HELLO carried an entry).

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

The connections a node keeps toward its peers are `dynomite.peers.link`;
the listener that accepts theirs is `dynomite.peers.listener`.
"""

from __future__ import annotations

import json
import zlib
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Tuple

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from dynomite.config.model import NodeConfig
from dynomite.config.vocabulary import NORMAL
from dynomite.peers.handshake import (
    DropPeer, Handshake, Identity, Ready, RejectedByPeer, RejectPeer, Step,
)
from dynomite.runtime import batching
from dynomite.runtime.tls import is_tls, tls_failure
from dynomite.stats import Histogram
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import (
    FEATURE_GOSSIP, FEATURE_NUMBERED_FORWARD, FEATURE_PUBLISH, FLAG_FAILED, FLAG_RUN, FLAG_SEQUENCED, FLAG_SHARD,
    FORWARD, FRAME_NAMES, GOSSIP, LEAD, PING, PONG, PUBLISH, REPLY, REQUEST, PeerFramer, PeerProtocolError,
    encode_control, encode_frame, new_nonce, publish_parts, publish_payload, run_count, run_payload,
)
from dynomite.wire.replies import is_error

__all__ = [
    "LocalNode", "PeerProtocol", "SAMPLE_EVERY", "peer_lane", "peer_timeout", "tick_interval",
]

#: Extra time a peer gets beyond ``timeout``: the datastore's own timeout
#: plus the network, which is longer between datacenters.
SAME_DC_SLACK = 0.2
CROSS_DC_SLACK = 5.0

#: Bytes an unauthenticated peer may make us buffer.
HANDSHAKE_MAX_BYTES = 64 * 1024

#: The status a node without membership reports in its heartbeats.
DEFAULT_STATUS = {"state": NORMAL, "hints": 0}

_NO_HANDLER = b"-ERR this node does not take peer requests on this connection\r\n"
_HANDLER_FAILED = b"-ERR internal error handling peer request\r\n"
_BAD_RUN = b"-ERR peer request flagged as a run has no request count\r\n"

# One request id in SAMPLE_EVERY (a power of two) has its latency measured.
SAMPLE_EVERY = 16
_SAMPLE_MASK = SAMPLE_EVERY - 1


def peer_timeout(config: NodeConfig, datacenter: str) -> float:
    """Seconds to wait for a peer in ``datacenter`` before failing a request."""
    slack = SAME_DC_SLACK if datacenter == config.datacenter else CROSS_DC_SLACK
    return config.timeout + slack


def tick_interval(heartbeat: float, timeout: float) -> float:
    """How often timeouts and liveness are checked: fine enough for both."""
    return max(0.01, min(0.25, heartbeat / 4, timeout / 10))


def peer_lane(peer_name: str) -> int:
    """
    The lane of the requests a peer sends this node: the same integer for
    that peer on every connection and in every process, so its requests
    reach the local Redis in the order it sent them.
    """
    return zlib.crc32(peer_name.encode("utf-8"))


class LocalNode:
    """
    Who this node is to its peers (`Identity`) and the collaborators that
    serve them: ``requests`` (`IPeerRequests`, None: refuse their requests)
    and ``membership`` (`IPeerStatus`, None: report `DEFAULT_STATUS`) and
    ``gossip`` (the node's `Gossiper`, None: gossip is off); shared by its
    connections.
    """

    __slots__ = ("identity", "name", "requests", "membership", "gossip", "_config")

    def __init__(self, config: NodeConfig, requests: Any = None, membership: Any = None,
                 name: Optional[str] = None, gossip: Any = None) -> None:
        self.identity = Identity.from_config(config, name)
        self.name = self.identity.name
        self.requests = requests
        self.membership = membership
        self.gossip = gossip
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
    accepting side's membership check, and ``newcomer`` its check of a
    node that says HELLO with its gossip entry.  ``nonce`` makes the
    handshake's random nonces (injectable for tests).
    """

    log = Logger()
    #: The frames an open connection accepts, and what handles them.
    _OPEN: Dict[int, Callable[["PeerProtocol", Any], None]] = {}

    def __init__(self, local: LocalNode, clock, owner, expected: Optional[str] = None,
                 timeout: Optional[float] = None,
                 known: Optional[Callable[[str, str, str], bool]] = None,
                 latency: Optional[Histogram] = None,
                 nonce: Optional[Callable[[], str]] = None,
                 newcomer: Optional[Callable[[str, str, str, Any], Any]] = None) -> None:
        batching.BatchedWriter.__init__(self)
        self._local = local
        self._clock = clock
        self._owner = owner
        self.connecting = expected is not None
        gossip = local.gossip
        self._handshake = Handshake(local.identity, expected, known, nonce if nonce is not None else new_nonce,
                                    gossip.hello_entry if gossip is not None else None,
                                    newcomer if gossip is not None else None)
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
        self._open = False
        self._closing = False
        self.state = "HANDSHAKING"
        self.last_received = 0.0
        # whether the last liveness check found this connection silent (`silent`)
        self._seen_silent = False
        self.late_replies = 0
        self.reject_reason: Optional[str] = None
        self.peer_name: Optional[str] = None
        self.peer_datacenter: Optional[str] = None
        self.peer_admin: Optional[str] = None
        #: whether this connection runs TLS (seen from its transport), and the
        #: TLS error that ended it, if one did
        self.tls = False
        self.tls_error: Optional[str] = None
        self.remote: Optional[str] = None  # the connecting host, on the accepting side
        #: the peer takes PUBLISH frames (its WELCOME said so; connecting side)
        self.publishes = False
        #: the peer takes numbered FORWARDs (its WELCOME said so); to others they go unnumbered
        self.numbered_forwards = False
        #: the peer takes GOSSIP frames; its entry, as its HELLO carried it (accepting side)
        self.gossips = False
        self.peer_entry: Optional[Dict[str, Any]] = None
        self._lane = 0
        self._timeout = timeout
        self._timed_out = self._unavailable = b"-ERR peer unavailable\r\n"
        if expected is not None:
            self._set_peer(expected, None)

    # -- state ---------------------------------------------------------------

    def _set_peer(self, name: str, datacenter: Optional[str]) -> None:
        self.peer_name = name
        self.peer_datacenter = datacenter
        self._lane = peer_lane(name)
        if self._timeout is None and datacenter is not None:
            self._timeout = self._local.peer_timeout(datacenter)
        bname = name.encode("utf-8")
        self._unavailable = b"-ERR peer %s unavailable\r\n" % bname
        if self._timeout is not None:
            self._timed_out = b"-ERR peer %s timed out after %d ms\r\n" % (
                bname, round(self._timeout * 1000))

    def _close(self) -> None:
        self._closing = True
        self._open = False
        self.state = "CLOSED"

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
        self.tls = is_tls(self.transport)
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            nodelay(True)
        self._owner.protocol_connected(self)
        if not self._closing:
            self._follow(self._handshake.start())

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
                if not self._open:
                    self._follow(self._handshake.receive(frame))
                    continue
                handler = self._OPEN.get(frame.type)
                if handler is None:
                    self._violation("unexpected %s frame (connection open)" % FRAME_NAMES[frame.type])
                    return
                handler(self, frame)
        finally:
            batching.end()
        if not self._open and self._framer.buffered > HANDSHAKE_MAX_BYTES:
            self._violation("handshake frame too large")

    def connectionLost(self, reason=None) -> None:
        if self.tls:
            self.tls_error = tls_failure(reason)
        self._close()
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

    def request(self, frame_type: int, request: Request, sink) -> int:
        """
        Send ``request`` as a REQUEST, FORWARD or LEAD frame (one frame for a run
        of several); its REPLY goes to ``sink``.  Returns the request id (0
        if the connection is not open, in which case ``sink`` has already
        failed).  The frame's origin is this node.
        """
        if not self._open:
            self.unavailable += 1
            sink.fail(self._unavailable)
            return 0
        if frame_type == FORWARD and request.flags & FLAG_SEQUENCED and not self.numbered_forwards:
            # a node from before numbered FORWARDs: it gets the writes alone (at least once there)
            request = Request.from_flags(request.flags & ~FLAG_SEQUENCED, request.payload[8:], request.lane,
                                         request.count)
        self._last_id = rid = self._last_id + 1
        self._sinks[rid] = sink
        now = self._clock.seconds()
        self._deadlines.append((now + self._timeout, rid))
        if not rid & _SAMPLE_MASK and not self._sample_id:
            self._sample_id = rid
            self._sample_at = now
        count = request.count
        if count > 1:
            frame = encode_frame(frame_type, request.flags | FLAG_RUN, rid, self._local.name,
                                 run_payload(count, request.payload))
        else:
            frame = encode_frame(frame_type, request.flags, rid, self._local.name, request.payload)
        self.write_batched(frame)
        return rid

    def publish(self, channel: bytes, message: bytes, shard: bool) -> None:
        """Send a PUBLISH frame (no reply comes); the caller checked `publishes`."""
        self.write_batched(encode_frame(PUBLISH, FLAG_SHARD if shard else 0, 0, self._local.name,
                                        publish_payload(channel, message)))

    def send_gossip(self, payload: bytes) -> None:
        """Send a GOSSIP frame (the caller checked `gossips`, or answers one that came)."""
        if self._open:
            self.write_batched(encode_frame(GOSSIP, 0, 0, self._local.name, payload))

    def accepts_writes(self) -> bool:
        return not self._closing

    def silent(self, now: float, down_after: float) -> bool:
        """
        Whether nothing came for ``down_after`` seconds, at this check and
        at the one before.  Checks run from a timer, and the reactor polls
        between two of them: a node stalled for a while (a GC pause, a
        frozen VM, SIGSTOP) finds every connection silent at its first
        check, though bytes may be waiting in their sockets; it reads them
        before it judges, instead of dropping live peers and the requests
        they sent.
        """
        silent = now - self.last_received >= down_after
        seen, self._seen_silent = self._seen_silent, silent
        return silent and seen

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
        """This node's status for the peer (membership's, or `DEFAULT_STATUS`)."""
        membership = self._local.membership
        if self.peer_name is None:
            return b""
        if membership is None:
            return encode_control(DEFAULT_STATUS)
        return encode_control(membership.status_for(self.peer_name))

    def _note_status(self, frame) -> None:
        """Hand the status a peer sent with PING/PONG to membership; bad ones are ignored."""
        membership = self._local.membership
        if membership is None or not frame.payload or self.peer_name is None:
            return
        try:
            status = json.loads(frame.payload)
        except ValueError:
            return
        if isinstance(status, dict):
            membership.peer_status(self.peer_name, status)

    def drop(self) -> None:
        """Close at once; in-flight requests fail when the loss is reported."""
        if not self._closing:
            self._close()
            self.transport.abortConnection()

    # -- requests in ---------------------------------------------------------

    def reply(self, request_id: int, flags: int, raw: bytes) -> None:
        """Send the REPLY to request ``request_id``; ignored once closing."""
        if not self._closing:
            self.write_batched(encode_frame(REPLY, flags, request_id, "", raw))

    def _on_request(self, frame) -> None:
        sink = _ReplySink(self, frame.request_id)
        requests = self._local.requests
        if requests is None:
            sink.fail(_NO_HANDLER)
            return
        payload = frame.payload
        count = 1
        if frame.flags & FLAG_RUN:
            try:
                count = run_count(payload)
            except PeerProtocolError:
                sink.fail(_BAD_RUN)
                return
            payload = payload[4:]
        request = Request.from_flags(frame.flags, payload, self._lane, count)
        try:
            requests.handle_peer_request(self.peer_name, frame.type, request, sink)
        except Exception:
            self.log.failure("peer request handler failed")
            sink.fail(_HANDLER_FAILED)

    def _on_publish(self, frame) -> None:
        requests = self._local.requests
        if requests is None:
            return
        try:
            channel, message = publish_parts(frame.payload)
        except PeerProtocolError as e:
            self._violation(str(e))
            return
        try:
            requests.handle_peer_publish(self.peer_name, channel, message, bool(frame.flags & FLAG_SHARD))
        except Exception:
            self.log.failure("peer publish handler failed")

    def _on_gossip(self, frame) -> None:
        gossip = self._local.gossip
        if gossip is None:
            return
        try:
            gossip.received(self, frame.payload)
        except Exception:
            self.log.failure("gossip handler failed")

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
                if is_error(frame.payload):
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

    # -- the handshake -------------------------------------------------------

    def _follow(self, step: Step) -> None:
        """Write what the handshake says to send, then act on its decision."""
        for frame in step.send:
            self.transport.write(encode_frame(*frame))
        decision = step.decision
        if decision is None:
            return
        if isinstance(decision, Ready):
            if not self.connecting:
                self._set_peer(decision.peer, decision.datacenter)
            self.peer_admin = decision.admin
            self.publishes = FEATURE_PUBLISH in decision.features
            self.numbered_forwards = FEATURE_NUMBERED_FORWARD in decision.features
            self.peer_entry = decision.entry
            self.gossips = self._local.gossip is not None and (
                FEATURE_GOSSIP in decision.features or decision.entry is not None)
            self._open = True
            self.state = "OPEN"
            self._owner.protocol_ready(self)
        elif isinstance(decision, RejectPeer):
            self.log.warn("refused peer connection: {reason}", reason=decision.reason)
            self._close()
            self.transport.loseConnection()
        elif isinstance(decision, RejectedByPeer):
            self.reject_reason = decision.reason
            self._close()
            self._owner.protocol_rejected(self, decision.reason)
            self.transport.loseConnection()
        elif isinstance(decision, DropPeer):
            self._drop_violating(decision.reason)

    def _violation(self, reason: str) -> None:
        """The peer broke the protocol: the handshake decides (refuse or drop), or drop it."""
        if self._closing:
            return
        if not self._open:
            self._follow(self._handshake.fail(reason))
        else:
            self._drop_violating(reason)

    def _drop_violating(self, reason: str) -> None:
        self.log.warn("dropping peer connection to {peer}: {reason}",
                      peer=self.peer_name, reason=reason)
        self.drop()


PeerProtocol._OPEN = {
    REQUEST: PeerProtocol._on_request,
    FORWARD: PeerProtocol._on_request,
    LEAD: PeerProtocol._on_request,
    REPLY: PeerProtocol._on_reply,
    PUBLISH: PeerProtocol._on_publish,
    GOSSIP: PeerProtocol._on_gossip,
    PING: PeerProtocol._on_ping,
    PONG: PeerProtocol._on_pong,
}
