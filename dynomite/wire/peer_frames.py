# -*- test-case-name: tests.unit.test_peer -*-
"""
Sans-IO framing of the node-to-node protocol: bytes in, frames out.

Every request a coordinator sends to a replica, and every reply, crosses
this module, so it does no I/O, keeps no clock, and parses whole buffers
with one precompiled ``struct`` unpack per frame.  A frame is::

    offset size  field
    0      2     magic            b"DY"
    2      1     version          2
    3      1     type             HELLO, CHALLENGE, AUTH, WELCOME, REJECT,
                                  REQUEST, FORWARD, LEAD, REPLY, PUBLISH,
                                  GOSSIP, PING, PONG
    4      2     flags            bit 0 RESP3, bit 1 write, bit 2 run,
                                  bits 3-4 LEAD's level, bit 5 effect,
                                  bit 6 sequenced, bit 7 replay,
                                  bit 8 PUBLISH's shard channel,
                                  bit 9 transaction,
                                  bit 15 failed
    6      8     request id       unsigned, chosen by the requesting side
    14     1     origin length    0..255
    15     4     payload length   0..max_payload
    19     ...   origin           UTF-8 node name
    ...    ...   payload          raw RESP (REQUEST/FORWARD/REPLY), a ring
                                  position then raw RESP (LEAD), a channel
                                  and a message (PUBLISH), or JSON
                                  (handshake, GOSSIP)

Both lengths sit in the fixed 19-byte header so that one unpack tells the
parser how long the whole frame is; an oversized frame is refused as soon
as its header arrives, before any of its payload is buffered.

A frame still arriving is kept as a list of chunks together with the byte
count it needs, and the chunks are joined once when that count is reached,
so a large payload arriving in small pieces costs linear time.

Handshake frames carry a JSON object; `encode_control` and `decode_control`
build and check them, and `handshake_proof` computes the HMAC-SHA256 proofs
of ``peer_secret`` (see `dynomite.peers.handshake` for the exchange).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from typing import Any, Dict, List, NamedTuple, Sequence

from dynomite.wire.resp import ProtocolError

__all__ = [
    "MAGIC", "VERSION", "HEADER_SIZE", "MAX_PAYLOAD", "MAX_ORIGIN",
    "HELLO", "CHALLENGE", "AUTH", "WELCOME", "REJECT",
    "REQUEST", "FORWARD", "LEAD", "REPLY", "PUBLISH", "GOSSIP", "PING", "PONG", "FRAME_NAMES",
    "FLAG_RESP3", "FLAG_WRITE", "FLAG_RUN", "FLAG_EFFECT", "FLAG_SHARD", "FLAG_FAILED", "LEVEL_SHIFT",
    "LEVEL_MASK", "FLAG_SEQUENCED", "FLAG_REPLAY", "run_payload", "run_count", "lead_payload",
    "lead_position", "sequenced_payload", "payload_sequence", "publish_payload", "publish_parts",
    "FEATURE_PUBLISH", "FEATURE_GOSSIP", "FEATURE_NUMBERED_FORWARD", "FLAG_TRANSACTION", "FLAG_HERE_ONLY", "FLAG_COPY",
    "FLAG_REDIRECTED", "FLAG_HANDOVER",
    "Frame", "PeerFramer", "PeerProtocolError", "FrameTooLarge", "encode_frame",
    "encode_control", "decode_control", "new_nonce", "handshake_proof", "proofs_match",
    "CONNECTING_SIDE", "ACCEPTING_SIDE",
]

MAGIC = 0x4459  # b"DY"
#: 2 since REQUEST/FORWARD may carry a run (FLAG_RUN): a version 1 node would
#: take the count for part of a request, so the versions refuse each other.
#: 3 since writes go to their key's leader (LEAD), which a version 2 node
#: would not know.
VERSION = 3

# Handshake frames (JSON payloads).
HELLO = 1
CHALLENGE = 2
AUTH = 3
WELCOME = 4
REJECT = 5
# Data frames (raw RESP payloads).
REQUEST = 16
FORWARD = 17
REPLY = 18
#: A write (or run of writes) for the receiver to lead: it orders the
#: writes of the key for its whole datacenter (`dynomite.node.leader`).
LEAD = 19
#: A message a client published on the sender: the receiver delivers it to
#: its own subscribers and sends nothing back (`dynomite.node.pubsub_bus`).
#: The version stays 3: a version 3 node without pub/sub would drop the
#: connection on this unknown type, so a node sends PUBLISH only on
#: connections whose WELCOME listed `FEATURE_PUBLISH`
#: (`dynomite.peers.handshake`); older peers simply get no messages.
PUBLISH = 20
#: The cluster view's gossip (`dynomite.peers.gossip`): a JSON object of
#: digests, entries and names wanted; answered by another GOSSIP frame on the
#: same connection, or not at all.  Sent only on connections whose WELCOME
#: listed `FEATURE_GOSSIP` (or whose HELLO carried an entry), like PUBLISH.
GOSSIP = 21
# Heartbeats (empty payload; reserved for node state as JSON).
PING = 32
PONG = 33

FRAME_NAMES: Dict[int, str] = {
    HELLO: "HELLO", CHALLENGE: "CHALLENGE", AUTH: "AUTH", WELCOME: "WELCOME",
    REJECT: "REJECT", REQUEST: "REQUEST", FORWARD: "FORWARD", LEAD: "LEAD", REPLY: "REPLY",
    PUBLISH: "PUBLISH", GOSSIP: "GOSSIP", PING: "PING", PONG: "PONG",
}

#: REQUEST/FORWARD: the client speaks RESP3; execute on a RESP3 connection.
FLAG_RESP3 = 0x0001
#: REQUEST/FORWARD: the command writes.
FLAG_WRITE = 0x0002
#: REQUEST/FORWARD: the payload is a run of pipelined requests
#: (`dynomite.consistency.runs`): a 4-byte big-endian count, then that many requests;
#: the REPLY joins their replies.
FLAG_RUN = 0x0004
#: LEAD: the consistency level the leader answers at, an index (bits 3-4;
#: `dynomite.node.leader` names them).
LEVEL_SHIFT = 3
LEVEL_MASK = 0x0018
#: LEAD: a command whose effect depends on where it runs: the leader runs
#: it once and replicates its effect (`dynomite.commands.effects`).
FLAG_EFFECT = 0x0020
#: REQUEST: the payload starts with the sequence number of its first write
#: from this source (8 bytes), so a replay is applied once
#: (`dynomite.replication.applied_once`).
FLAG_SEQUENCED = 0x0040
#: REQUEST: a write replayed from a hint log; it may have been applied already.
FLAG_REPLAY = 0x0080
#: PUBLISH: the channel is a shard channel (SPUBLISH), not a plain one.
FLAG_SHARD = 0x0100
#: REQUEST/LEAD/FORWARD: the run is a client's transaction (MULTI ... EXEC):
#: applied whole everywhere, never cut (`dynomite.node.transactions`).
FLAG_TRANSACTION = 0x0200
#: LEAD: a watch request for the leader's table of watched keys, or (with
#: FLAG_TRANSACTION) a transaction with the watched versions in front
#: (`dynomite.node.watch`).
FLAG_WATCH = 0x0400
#: LEAD: lead the write for this datacenter only; the coordinator reaches
#: every other datacenter's leader itself (DC_EACH_SAFE_QUORUM).
FLAG_HERE_ONLY = 0x0800
#: LEAD: not a write but a copy of keys of a moving range to its pending
#: replicas, made by the leader in the keys' order (`dynomite.node.leader`).
FLAG_COPY = 0x1000
#: LEAD: sent on by the answer of a node that no longer leads the keys
#: (`dynomite.node.handover.LEADER_MOVED`): lead it, without asking whether
#: this node's view agrees.
FLAG_REDIRECTED = 0x2000
#: LEAD: not a write but a request to hand a moving range over to its new
#: leader (`dynomite.node.handover`), answered once the writes led so far are.
FLAG_HANDOVER = 0x4000
#: REPLY: the payload is an error made by the replica node (its datastore is
#: unavailable, say), not Redis's answer; the requester calls ``sink.fail``.
FLAG_FAILED = 0x8000
# Receivers ignore bits they do not know.

_HEADER = struct.Struct("!HBBHQBI")
HEADER_SIZE = _HEADER.size  # 19
MAX_ORIGIN = 255
#: Largest payload accepted: Redis's own proto-max-bulk-len.
MAX_PAYLOAD = 512 * 1024 * 1024

_RUN_COUNT = struct.Struct("!I")
_SEQUENCE = struct.Struct("!Q")

_pack = _HEADER.pack
_unpack_from = _HEADER.unpack_from
_tuple_new = tuple.__new__


def run_payload(count: int, data: bytes) -> bytes:
    """The payload of a FLAG_RUN frame: ``count`` requests joined in ``data``."""
    return _RUN_COUNT.pack(count) + data


def run_count(payload: bytes) -> int:
    """The request count a FLAG_RUN payload starts with (its requests follow)."""
    if len(payload) < 4:
        raise PeerProtocolError("run payload without a count")
    return _RUN_COUNT.unpack_from(payload)[0]


def lead_payload(position: int, data: bytes) -> bytes:
    """A LEAD request's payload: the ring ``position`` of its keys, then ``data``."""
    return _RUN_COUNT.pack(position) + data


def lead_position(payload: bytes) -> int:
    """The ring position a LEAD payload starts with (its requests follow)."""
    if len(payload) < 4:
        raise PeerProtocolError("lead payload without a ring position")
    return _RUN_COUNT.unpack_from(payload)[0]


def sequenced_payload(sequence: int, data: bytes) -> bytes:
    """A FLAG_SEQUENCED payload: the first write's ``sequence`` number, then ``data``."""
    return _SEQUENCE.pack(sequence) + data


def payload_sequence(payload: bytes) -> int:
    """The sequence number a FLAG_SEQUENCED payload starts with (its writes follow)."""
    if len(payload) < 8:
        raise PeerProtocolError("sequenced payload without a sequence number")
    return _SEQUENCE.unpack_from(payload)[0]


#: What a WELCOME's ``features`` lists when the accepting node takes PUBLISH frames.
FEATURE_PUBLISH = "publish"
#: What a WELCOME's ``features`` lists when the accepting node gossips (``enable_gossip``).
FEATURE_GOSSIP = "gossip"
#: What a WELCOME's ``features`` lists when the accepting node takes numbered
#: FORWARDs (FLAG_SEQUENCED: `dynomite.node.forwarded`); an older node would
#: take the number for part of the first write, so it gets them unnumbered.
FEATURE_NUMBERED_FORWARD = "numbered-forward"


def publish_payload(channel: bytes, message: bytes) -> bytes:
    """A PUBLISH frame's payload: the channel's length, the channel, then the message."""
    return _RUN_COUNT.pack(len(channel)) + channel + message


def publish_parts(payload: bytes):
    """The (channel, message) of a PUBLISH payload; `PeerProtocolError` if it is cut short."""
    if len(payload) < 4:
        raise PeerProtocolError("publish payload without a channel length")
    end = 4 + _RUN_COUNT.unpack_from(payload)[0]
    if end > len(payload):
        raise PeerProtocolError("publish payload shorter than its channel")
    return payload[4:end], payload[end:]


class PeerProtocolError(ProtocolError):
    """Bytes from a peer that are not a valid frame; the connection must go."""


class FrameTooLarge(PeerProtocolError):
    """A frame announces a payload above the framer's cap."""


class Frame(NamedTuple):
    """One decoded frame; ``payload`` is the exact bytes that were sent."""

    type: int
    flags: int
    request_id: int
    origin: str
    payload: bytes


# Origins are a handful of node names: encode each once.
_ORIGINS: Dict[str, bytes] = {"": b""}


def _encode_origin(origin: str) -> bytes:
    o = origin.encode("utf-8")
    if len(o) > MAX_ORIGIN:
        raise ValueError("origin node name longer than 255 bytes")
    if len(_ORIGINS) < 1024:
        _ORIGINS[origin] = o
    return o


def encode_frame(frame_type: int, flags: int, request_id: int, origin: str, payload: bytes) -> bytes:
    """
    The bytes of one frame.

    Raises ``ValueError`` for an origin longer than 255 bytes in UTF-8 and
    ``struct.error`` for out-of-range numbers.
    """
    o = _ORIGINS.get(origin)
    if o is None:
        o = _encode_origin(origin)
    return _pack(MAGIC, VERSION, frame_type, flags, request_id, len(o), len(payload)) + o + payload


class PeerFramer:
    """
    Split a byte stream into `Frame`\\ s.

    ``feed`` returns every frame completed by the new bytes, in order, and
    raises `PeerProtocolError` (or `FrameTooLarge`) at the first invalid
    header: bad magic, unknown version or type, origin not UTF-8, payload
    above ``max_payload``.  After an error the stream cannot be resynchronised
    and the framer must not be fed again.
    """

    __slots__ = ("max_payload", "_chunks", "_buffered", "_need", "_origins")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._chunks: List[bytes] = []
        self._buffered = 0
        self._need = 0
        # Origins are a handful of node names: decode each once.
        self._origins: Dict[bytes, str] = {b"": ""}

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return self._buffered

    def feed(self, data: bytes) -> List[Frame]:
        """Add bytes from the stream; return the frames they complete."""
        if self._chunks:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
            self._buffered = 0
        frames: List[Frame] = []
        append = frames.append
        end = len(data)
        pos = 0
        need = HEADER_SIZE
        while end - pos >= HEADER_SIZE:
            magic, version, ftype, flags, rid, olen, plen = _unpack_from(data, pos)
            if magic != MAGIC or version != VERSION or ftype not in FRAME_NAMES:
                raise self._bad_header(magic, version, ftype)
            if plen > self.max_payload:
                raise FrameTooLarge(
                    "peer frame payload of %d bytes exceeds the %d byte limit" % (plen, self.max_payload)
                )
            start = pos + HEADER_SIZE
            body = start + olen
            stop = body + plen
            if stop > end:
                need = stop - pos
                break
            if olen:
                raw_origin = data[start:body]
                origin = self._origins.get(raw_origin)
                if origin is None:
                    origin = self._decode_origin(raw_origin)
            else:
                origin = ""
            append(_tuple_new(Frame, (ftype, flags, rid, origin, data[body:stop])))
            pos = stop
        if pos < end:
            rest = data[pos:] if pos else data
            self._chunks = [rest]
            self._buffered = len(rest)
            self._need = need
        return frames

    def _decode_origin(self, raw: bytes) -> str:
        try:
            origin = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PeerProtocolError("peer frame origin is not UTF-8") from None
        if len(self._origins) < 1024:
            self._origins[raw] = origin
        return origin

    @staticmethod
    def _bad_header(magic: int, version: int, ftype: int) -> PeerProtocolError:
        if magic != MAGIC:
            return PeerProtocolError("not a peer frame (bad magic 0x%04x)" % magic)
        if version != VERSION:
            return PeerProtocolError("unsupported peer protocol version %d" % version)
        return PeerProtocolError("unknown peer frame type %d" % ftype)


# -- handshake messages ------------------------------------------------------------

#: Labels that make the two directions' proofs different, so neither side
#: can be used as an oracle for the other's proof.
CONNECTING_SIDE = "dynomite-py peer v1: connecting node"
ACCEPTING_SIDE = "dynomite-py peer v1: accepting node"


def encode_control(body: Dict[str, str]) -> bytes:
    """The JSON payload of a handshake frame."""
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode_control(frame: Frame, fields: Sequence[str]) -> Dict[str, Any]:
    """
    The JSON object of a handshake frame, whose ``fields`` must be present
    as non-empty printable strings; `PeerProtocolError` otherwise.
    """
    try:
        body = json.loads(frame.payload)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not all(
        isinstance(body.get(f), str) and body[f] and body[f].isprintable() for f in fields
    ):
        raise PeerProtocolError("malformed %s frame" % FRAME_NAMES[frame.type])
    return body


def new_nonce() -> str:
    """A fresh random challenge (128 bits, hex)."""
    return os.urandom(16).hex()


def handshake_proof(secret: bytes, side: str, cluster: str, connecting: str, accepting: str,
                    connecting_nonce: str, accepting_nonce: str) -> str:
    """
    HMAC-SHA256 under ``secret`` of everything the handshake agreed on:
    which side proves, the cluster, both node names and both nonces.
    """
    transcript = json.dumps([side, cluster, connecting, accepting, connecting_nonce, accepting_nonce])
    return hmac.new(secret, transcript.encode("utf-8"), hashlib.sha256).hexdigest()


def proofs_match(expected: str, received: Any) -> bool:
    """Constant-time comparison of a proof with whatever the peer sent."""
    return isinstance(received, str) and hmac.compare_digest(
        expected.encode("ascii"), received.encode("utf-8"))
