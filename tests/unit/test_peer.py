"""
Tests for the node-to-node protocol: framing (dynomite.wire.peer_frames), the
handshake and multiplexed requests (dynomite.peers.protocol), links with
reconnection and heartbeats (dynomite.peers.link) and the dyn_listen side
(dynomite.peers.listener).

No sockets: StringTransport for exact bytes on one side, twisted.test.iosim
to wire two sides together, and a Clock for time.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Dict, List, Optional, Tuple

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dynomite.config.model import Address, NodeConfig, Seed
from dynomite.peers.interfaces import IPeerRequests, IPeerStatus
from dynomite.peers.handshake import node_name
from dynomite.peers.link import PeerLink
from dynomite.peers.listener import PeerServerFactory
from dynomite.peers.protocol import (
    DEFAULT_STATUS, SAMPLE_EVERY, LocalNode, PeerProtocol, peer_lane, peer_timeout,
)
from dynomite.runtime.reconnect import Backoff
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import (
    AUTH, CHALLENGE, FLAG_FAILED, FLAG_RESP3, FLAG_RUN, FLAG_WRITE, FORWARD, FRAME_NAMES, HEADER_SIZE,
    HELLO, MAX_PAYLOAD, PING, PONG, REJECT, REPLY, REQUEST, VERSION, WELCOME, Frame, FrameTooLarge,
    PeerFramer, PeerProtocolError, encode_frame, run_payload,
)
from dynomite.wire.resp import ProtocolError

A = "127.0.0.1:8101"
B = "127.0.0.2:8101"
C = "127.0.0.3:8101"
SECRET = "correct horse battery staple"


def config(host: str = "127.0.0.1", dc: str = "dc1", rack: str = "rack1", **overrides) -> NodeConfig:
    """A node on ``host`` (dyn_listen host:8101); keyword arguments override YAML keys."""
    pool = {
        "listen": f"{host}:8102",
        "dyn_listen": f"{host}:8101",
        "stats_listen": f"{host}:22222",
        "servers": ["127.0.0.1:6379:1"],
        "tokens": "0",
        "datacenter": dc,
        "rack": rack,
        "timeout": 1000,
    }
    pool.update(overrides)
    return NodeConfig.from_dict({"dyn_o_mite": pool}, source="test.yml")


def seed(name: str, dc: str = "dc1", rack: str = "rack2") -> Seed:
    return Seed(Address.parse(name), rack, dc, (0,))


def anyone(name: str, dc: str, rack: str) -> bool:
    return True


class Sink:
    """Collects what a request's sink receives."""

    def __init__(self) -> None:
        self.completed: List[bytes] = []
        self.failed: List[bytes] = []

    def complete(self, raw: bytes) -> None:
        self.completed.append(raw)

    def fail(self, raw: bytes) -> None:
        self.failed.append(raw)

    @property
    def results(self) -> List[bytes]:
        return self.completed + self.failed


@implementer(IPeerRequests)
class Handler:
    """A replica's request handler: records (peer, frame type, request, sink), answers on demand."""

    def __init__(self, echo: bool = False) -> None:
        self.requests: List[Tuple[str, int, Request, object]] = []
        self.published: List[Tuple[str, bytes, bytes, bool]] = []
        self.echo = echo

    def handle_peer_request(self, peer_name, frame_type, request, sink) -> None:
        self.requests.append((peer_name, frame_type, request, sink))
        if self.echo:
            sink.complete(b"+" + request.payload.strip() + b"\r\n")

    def handle_peer_publish(self, peer_name, channel, message, shard) -> None:
        self.published.append((peer_name, channel, message, shard))


@implementer(IPeerStatus)
class Status:
    """Membership as heartbeats see it: a fixed status out, what peers report in."""

    def __init__(self, state: str = "NORMAL", hints: int = 0) -> None:
        self.status = {"state": state, "hints": hints}
        self.asked: List[str] = []
        self.reported: List[Tuple[str, dict]] = []

    def status_for(self, peer: str) -> dict:
        self.asked.append(peer)
        return self.status

    def peer_status(self, peer: str, status: dict) -> None:
        self.reported.append((peer, status))


class Owner:
    """Stands in for a PeerLink slot or the server factory."""

    def __init__(self) -> None:
        self.events: List[Tuple[str, object]] = []

    def protocol_connected(self, protocol) -> None:
        self.events.append(("connected", None))

    def protocol_ready(self, protocol) -> None:
        self.events.append(("ready", protocol.peer_name))

    def protocol_rejected(self, protocol, reason) -> None:
        self.events.append(("rejected", reason))

    def protocol_lost(self, protocol) -> None:
        self.events.append(("lost", None))

    def saw(self, kind: str) -> List[object]:
        return [value for event, value in self.events if event == kind]


class Transport(StringTransport):
    """StringTransport plus the TCP calls a protocol makes."""

    aborted = False

    def setTcpNoDelay(self, enabled) -> None:
        pass

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class Wire(iosim.FakeTransport):
    """An iosim transport that also keeps every byte written, for inspection."""

    def __init__(self, protocol, isServer, log: List[bytes]) -> None:
        iosim.FakeTransport.__init__(self, protocol, isServer)
        self.log = log

    def write(self, data) -> None:
        if not self.disconnecting:
            self.log.append(data)
        iosim.FakeTransport.write(self, data)


def frames_of(data: bytes) -> List[Frame]:
    return PeerFramer().feed(data)


REQ = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"


# -- framing ----------------------------------------------------------------------


class FramerTests(SynchronousTestCase):
    """Sans-IO framing: bytes in, frames out, byte-exact payloads."""

    def sample(self) -> List[Frame]:
        frames = []
        for i, ftype in enumerate(sorted(FRAME_NAMES)):
            payload = b"" if ftype in (PING, PONG) else b"payload-%d\r\n" % i
            frames.append(Frame(ftype, FLAG_RESP3 | FLAG_WRITE if ftype == REQUEST else i,
                                2**64 - 1 - i, "127.0.0.%d:8101" % i, payload))
        frames.append(Frame(REPLY, FLAG_FAILED, 5, "", b"-ERR x\r\n"))
        frames.append(Frame(REQUEST, 0, 6, "n\u00f6de", b""))
        return frames

    def encoded(self, frames) -> bytes:
        return b"".join(encode_frame(*f) for f in frames)

    def test_header_layout(self) -> None:
        """The documented layout, so that other implementations can interoperate."""
        data = encode_frame(REQUEST, FLAG_RESP3 | FLAG_WRITE, 258, "n1", b"*1\r\n$4\r\nPING\r\n")
        self.assertEqual(HEADER_SIZE, 19)
        self.assertEqual(
            data,
            b"DY\x03\x10\x00\x03" + struct.pack("!Q", 258) + b"\x02" + struct.pack("!I", 14)
            + b"n1" + b"*1\r\n$4\r\nPING\r\n",
        )

    def test_every_type_whole(self) -> None:
        for frame in self.sample():
            framer = PeerFramer()
            self.assertEqual(framer.feed(encode_frame(*frame)), [frame], FRAME_NAMES[frame.type])
            self.assertEqual(framer.buffered, 0)

    def test_byte_by_byte(self) -> None:
        frames = self.sample()
        data = self.encoded(frames)
        framer = PeerFramer()
        got: List[Frame] = []
        ends = set()
        for i in range(len(data)):
            out = framer.feed(data[i:i + 1])
            if out:
                ends.add(i)
            got.extend(out)
        self.assertEqual(got, frames)
        self.assertEqual(len(ends), len(frames), "each frame completes on its last byte")
        self.assertEqual(framer.buffered, 0)

    def test_many_in_one_chunk(self) -> None:
        frames = [Frame(REPLY, 0, i, "", b"$%d\r\n%s\r\n" % (len(str(i)), str(i).encode()))
                  for i in range(1000)]
        self.assertEqual(frames_of(self.encoded(frames)), frames)

    def test_chunk_ending_mid_header_and_mid_payload(self) -> None:
        frames = self.sample()
        data = self.encoded(frames)
        framer = PeerFramer()
        got = []
        for cut in (3, HEADER_SIZE + 5, 100, 101, len(data)):
            got.extend(framer.feed(data[:cut]))
            data = data[cut:]
        got.extend(framer.feed(data))
        self.assertEqual(got, frames)

    def test_payload_bytes_untouched(self) -> None:
        """Payloads are relayed byte for byte, including CR/LF and NUL."""
        payload = bytes(range(256)) * 3
        self.assertEqual(frames_of(encode_frame(REPLY, 0, 1, "", payload))[0].payload, payload)

    def test_five_megabytes_in_one_kilobyte_chunks(self) -> None:
        payload = random.Random(7).randbytes(5 * 1024 * 1024)
        data = encode_frame(REQUEST, 0, 1, A, payload) + encode_frame(PING, 0, 0, "", b"")
        framer = PeerFramer()
        got = []
        for i in range(0, len(data), 1024):
            got.extend(framer.feed(data[i:i + 1024]))
            if not got:
                self.assertEqual(framer.buffered, min(i + 1024, len(data)))
        self.assertEqual([f.type for f in got], [REQUEST, PING])
        self.assertEqual(got[0].payload, payload)

    def test_errors_are_protocol_errors(self) -> None:
        self.assertTrue(issubclass(PeerProtocolError, ProtocolError))
        self.assertTrue(issubclass(FrameTooLarge, PeerProtocolError))

    def test_bad_magic(self) -> None:
        data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
        e = self.assertRaises(PeerProtocolError, PeerFramer().feed, data)
        self.assertIn("bad magic", str(e))

    def test_bad_version(self) -> None:
        data = bytearray(encode_frame(PING, 0, 0, "", b""))
        data[2] = 1   # before runs
        e = self.assertRaises(PeerProtocolError, PeerFramer().feed, bytes(data))
        self.assertEqual(str(e), "unsupported peer protocol version 1")

    def test_unknown_type(self) -> None:
        data = bytearray(encode_frame(PING, 0, 0, "", b""))
        data[3] = 99
        e = self.assertRaises(PeerProtocolError, PeerFramer().feed, bytes(data))
        self.assertEqual(str(e), "unknown peer frame type 99")

    def test_origin_not_utf8(self) -> None:
        data = encode_frame(REQUEST, 0, 1, "ab", REQ).replace(b"ab", b"\xff\xfe", 1)
        self.assertRaises(PeerProtocolError, PeerFramer().feed, data)

    def test_bad_frame_after_good_ones(self) -> None:
        """The error surfaces even when valid frames precede it in the chunk."""
        data = encode_frame(PING, 0, 0, "", b"") + b"GET key\r\n" + b"x" * 20
        self.assertRaises(PeerProtocolError, PeerFramer().feed, data)

    def test_too_large_refused_on_header(self) -> None:
        """An oversized frame is refused as soon as its header arrives."""
        header = struct.pack("!HBBHQBI", 0x4459, VERSION, REQUEST, 0, 1, 0, MAX_PAYLOAD + 1)
        self.assertEqual(len(header), HEADER_SIZE)
        e = self.assertRaises(FrameTooLarge, PeerFramer().feed, header)
        self.assertIn(str(MAX_PAYLOAD), str(e))
        # exactly at the cap is fine (only the header is checked here)
        ok = struct.pack("!HBBHQBI", 0x4459, VERSION, REQUEST, 0, 1, 0, MAX_PAYLOAD)
        framer = PeerFramer()
        self.assertEqual(framer.feed(ok), [])
        self.assertEqual(framer.buffered, HEADER_SIZE)

    def test_custom_cap(self) -> None:
        framer = PeerFramer(max_payload=10)
        self.assertEqual(len(framer.feed(encode_frame(REPLY, 0, 1, "", b"0123456789"))), 1)
        self.assertRaises(FrameTooLarge, framer.feed, encode_frame(REPLY, 0, 2, "", b"0123456789A"))

    def test_encode_refuses_long_origin(self) -> None:
        self.assertRaises(ValueError, encode_frame, REQUEST, 0, 1, "x" * 256, b"")
        self.assertEqual(frames_of(encode_frame(REQUEST, 0, 1, "x" * 255, b""))[0].origin, "x" * 255)


# -- handshake --------------------------------------------------------------------


class Pair:
    """A connecting and an accepting PeerProtocol wired by an iosim pump."""

    def __init__(self, client_config: NodeConfig, server_config: NodeConfig, expected: str = B,
                 known=anyone, client_handler=None, server_handler=None,
                 client_status=None, server_status=None) -> None:
        self.clock = Clock()
        self.wire: List[bytes] = []
        self.client_owner = Owner()
        self.server_owner = Owner()
        self.client_handler = client_handler or Handler()
        self.server_handler = server_handler or Handler()
        client_local = LocalNode(client_config, self.client_handler, client_status)
        server_local = LocalNode(server_config, self.server_handler, server_status)
        self.client, self.server, self.pump = iosim.connectedServerAndClient(
            lambda: PeerProtocol(server_local, self.clock, self.server_owner, known=known),
            lambda: PeerProtocol(client_local, self.clock, self.client_owner,
                                 expected=expected, timeout=1.2),
            clientTransportFactory=lambda p: Wire(p, False, self.wire),
            serverTransportFactory=lambda p: Wire(p, True, self.wire),
            clock=self.clock,
        )

    def flush(self) -> None:
        self.pump.flush()

    def frame_types(self) -> List[str]:
        return [FRAME_NAMES[f.type] for chunk in self.wire for f in frames_of(chunk)]


class HandshakeTests(SynchronousTestCase):

    def test_success(self) -> None:
        known_calls = []

        def known(name, dc, rack):
            known_calls.append((name, dc, rack))
            return True

        pair = Pair(config("127.0.0.1", rack="rack1"), config("127.0.0.2", rack="rack2"), known=known)
        self.assertTrue(pair.client.is_open)
        self.assertTrue(pair.server.is_open)
        self.assertEqual(known_calls, [(A, "dc1", "rack1")])
        self.assertEqual(pair.client_owner.saw("ready"), [B])
        self.assertEqual(pair.server_owner.saw("ready"), [A])
        self.assertEqual((pair.server.peer_name, pair.server.peer_datacenter), (A, "dc1"))
        self.assertEqual(pair.frame_types(), ["HELLO", "WELCOME"])

    def test_success_with_secret_is_mutual_and_secret_stays_home(self) -> None:
        pair = Pair(config("127.0.0.1", peer_secret=SECRET), config("127.0.0.2", peer_secret=SECRET))
        self.assertTrue(pair.client.is_open)
        self.assertTrue(pair.server.is_open)
        self.assertEqual(pair.frame_types(), ["HELLO", "CHALLENGE", "AUTH", "WELCOME"])
        wire = b"".join(pair.wire)
        self.assertNotIn(SECRET.encode(), wire)
        self.assertNotIn(SECRET.encode().hex().encode(), wire)

    def test_wrong_cluster(self) -> None:
        server = NodeConfig.from_dict({"other_pool": {
            "listen": "127.0.0.2:8102", "dyn_listen": B, "stats_listen": "127.0.0.2:22222",
            "servers": ["127.0.0.1:6379"], "tokens": "0", "datacenter": "dc1"}})
        pair = Pair(config("127.0.0.1"), server)
        self.assertFalse(pair.client.is_open)
        self.assertEqual(pair.client_owner.saw("ready"), [])
        self.assertEqual(pair.server_owner.saw("ready"), [])
        (reason,) = pair.client_owner.saw("rejected")
        self.assertIn("cluster 'dyn_o_mite' is not this node's cluster 'other_pool'", reason)
        self.assertEqual(pair.frame_types(), ["HELLO", "REJECT"])
        self.assertEqual(len(pair.client_owner.saw("lost")), 1)
        self.assertEqual(len(pair.server_owner.saw("lost")), 1)

    def test_unknown_node(self) -> None:
        pair = Pair(config("127.0.0.1"), config("127.0.0.2"), known=lambda n, d, r: n != A)
        (reason,) = pair.client_owner.saw("rejected")
        self.assertEqual(reason, "node %s (dc1/rack1) is not a known peer of %s" % (A, B))
        self.assertFalse(pair.server.is_open)

    def test_bad_secret(self) -> None:
        pair = Pair(config("127.0.0.1", peer_secret="wrong one"),
                    config("127.0.0.2", peer_secret=SECRET))
        self.assertFalse(pair.client.is_open)
        self.assertFalse(pair.server.is_open)
        self.assertEqual(pair.client_owner.saw("rejected"), ["authentication failed (peer_secret differs)"])
        self.assertEqual(pair.frame_types(), ["HELLO", "CHALLENGE", "AUTH", "REJECT"])
        wire = b"".join(pair.wire)
        self.assertNotIn(SECRET.encode(), wire)
        self.assertNotIn(b"wrong one", wire)

    def test_secret_on_server_only(self) -> None:
        """A node without the secret cannot join; it gives up at the challenge."""
        pair = Pair(config("127.0.0.1"), config("127.0.0.2", peer_secret=SECRET))
        self.assertFalse(pair.client.is_open)
        self.assertFalse(pair.server.is_open)
        self.assertEqual(pair.frame_types(), ["HELLO", "CHALLENGE"])
        self.assertEqual(pair.client_owner.saw("ready"), [])

    def test_secret_on_client_only(self) -> None:
        """The connector does not trust a peer that did not prove it knows the secret."""
        pair = Pair(config("127.0.0.1", peer_secret=SECRET), config("127.0.0.2"))
        self.assertFalse(pair.client.is_open)
        self.assertEqual(pair.client_owner.saw("ready"), [])
        self.assertEqual(len(pair.client_owner.saw("lost")), 1)

    def test_forged_welcome_proof(self) -> None:
        """A WELCOME whose proof does not match is refused even with a secret on both sides."""
        clock = Clock()
        owner = Owner()
        protocol = PeerProtocol(LocalNode(config("127.0.0.1", peer_secret=SECRET)),
                                clock, owner, expected=B, timeout=1.2)
        transport = Transport()
        protocol.makeConnection(transport)
        protocol.dataReceived(encode_frame(
            CHALLENGE, 0, 0, B, b'{"node":"%s","nonce":"%s"}' % (B.encode(), b"ab" * 16)))
        self.assertEqual([f.type for f in frames_of(transport.value())], [HELLO, AUTH])
        protocol.dataReceived(encode_frame(
            WELCOME, 0, 0, B, b'{"node":"%s","proof":"%s"}' % (B.encode(), b"00" * 32)))
        self.assertTrue(transport.aborted)
        self.assertFalse(protocol.is_open)
        self.assertEqual(owner.saw("ready"), [])

    def test_replayed_auth_refused(self) -> None:
        """A recorded AUTH is worthless on a new connection: the challenge differs."""
        pair = Pair(config("127.0.0.1", peer_secret=SECRET), config("127.0.0.2", peer_secret=SECRET))
        recorded = [c for c in pair.wire if frames_of(c)[0].type in (HELLO, AUTH)]
        self.assertEqual(len(recorded), 2)
        owner = Owner()
        server = PeerServerFactory(config("127.0.0.2", peer_secret=SECRET), Handler(), None, anyone, Clock())
        protocol = server.buildProtocol(None)
        protocol._owner = owner
        transport = Transport()
        protocol.makeConnection(transport)
        protocol.dataReceived(recorded[0])
        protocol.dataReceived(recorded[1])
        types = [f.type for f in frames_of(transport.value())]
        self.assertEqual(types, [CHALLENGE, REJECT])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(owner.saw("ready"), [])

    def test_welcome_from_wrong_node(self) -> None:
        """Dialled 127.0.0.9 but the node there is 127.0.0.2: not the peer we meant."""
        pair = Pair(config("127.0.0.1"), config("127.0.0.2"), expected="127.0.0.9:8101")
        self.assertFalse(pair.client.is_open)
        self.assertEqual(pair.client_owner.saw("ready"), [])
        self.assertEqual(len(pair.client_owner.saw("lost")), 1)

    def test_request_before_handshake_refused_by_server(self) -> None:
        handler = Handler()
        factory = PeerServerFactory(config("127.0.0.2"), handler, None, anyone, Clock())
        protocol = factory.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        protocol.dataReceived(encode_frame(REQUEST, 0, 1, A, REQ))
        (frame,) = frames_of(transport.value())
        self.assertEqual(frame.type, REJECT)
        self.assertIn(b"unexpected REQUEST frame (handshake)", frame.payload)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(handler.requests, [])
        # nothing more is read from it
        protocol.dataReceived(encode_frame(HELLO, 0, 0, A, b"{}"))
        self.assertEqual(len(frames_of(transport.value())), 1)

    def test_request_before_welcome_dropped_by_client(self) -> None:
        handler = Handler()
        protocol = PeerProtocol(LocalNode(config("127.0.0.1"), handler), Clock(), Owner(),
                                expected=B, timeout=1.2)
        transport = Transport()
        protocol.makeConnection(transport)
        protocol.dataReceived(encode_frame(REQUEST, 0, 1, B, REQ))
        self.assertTrue(transport.aborted)
        self.assertEqual(handler.requests, [])

    def test_malformed_hello(self) -> None:
        for payload in (b"not json", b"[]", b'{"cluster":"dyn_o_mite"}',
                        b'{"cluster":"dyn_o_mite","node":1,"dc":"dc1","rack":"r","nonce":"n"}'):
            factory = PeerServerFactory(config("127.0.0.2"), Handler(), None, anyone, Clock())
            protocol = factory.buildProtocol(None)
            transport = Transport()
            protocol.makeConnection(transport)
            protocol.dataReceived(encode_frame(HELLO, 0, 0, A, payload))
            (frame,) = frames_of(transport.value())
            self.assertEqual((frame.type, frame.payload), (REJECT, b'{"reason":"malformed HELLO frame"}'))
            self.assertTrue(transport.disconnecting)

    def test_garbage_before_handshake(self) -> None:
        factory = PeerServerFactory(config("127.0.0.2"), Handler(), None, anyone, Clock())
        protocol = factory.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"*1\r\n$4\r\nPING\r\n" + b"\0" * 20)
        (frame,) = frames_of(transport.value())
        self.assertEqual(frame.type, REJECT)
        self.assertTrue(transport.disconnecting)

    def test_unauthenticated_peer_cannot_make_us_buffer_much(self) -> None:
        factory = PeerServerFactory(config("127.0.0.2"), Handler(), None, anyone, Clock())
        protocol = factory.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        data = encode_frame(HELLO, 0, 0, A, b" " * (1024 * 1024))
        for i in range(0, 70 * 1024, 1024):
            protocol.dataReceived(data[i:i + 1024])
        (frame,) = frames_of(transport.value())
        self.assertEqual(frame.type, REJECT)
        self.assertIn(b"handshake frame too large", frame.payload)


# -- requests on one connection ---------------------------------------------------


class RequestTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.pair = Pair(config("127.0.0.1"), config("127.0.0.2"))
        self.client = self.pair.client
        self.server = self.pair.server
        self.handler = self.pair.server_handler
        self.assertTrue(self.client.is_open)

    def test_handler_gets_type_and_request_and_replies_same_id(self) -> None:
        """The frame carries the request's version and kind; the server decodes it back."""
        sink = Sink()
        rid = self.client.request(REQUEST, Request(REQ, resp=3, lane=99, write=True), sink)
        other = Sink()
        self.client.request(FORWARD, Request(b"*1\r\n$4\r\nPING\r\n"), other)
        self.pair.flush()
        sent = [f for chunk in self.pair.wire for f in frames_of(chunk) if f.type in (REQUEST, FORWARD)]
        self.assertEqual([(f.flags, f.origin, f.payload) for f in sent],
                         [(FLAG_RESP3 | FLAG_WRITE, A, REQ), (0, A, b"*1\r\n$4\r\nPING\r\n")])
        (peer, ftype, request, reply), (peer2, ftype2, request2, reply2) = self.handler.requests
        # the lane is the server's for that peer, not the one the sender used
        self.assertEqual((peer, ftype, request.payload, request.resp, request.write, request.count,
                          request.lane), (A, REQUEST, REQ, 3, True, 1, peer_lane(A)))
        self.assertEqual((peer2, ftype2, request2.resp, request2.write, request2.count),
                         (A, FORWARD, 2, False, 1))
        del self.pair.wire[:]
        reply.complete(b"$5\r\nvalue\r\n")
        reply2.fail(b"-ERR datastore unavailable\r\n")
        self.pair.flush()
        self.assertEqual([(f.type, f.request_id, f.flags) for f in frames_of(b"".join(self.pair.wire))],
                         [(REPLY, rid, 0), (REPLY, rid + 1, FLAG_FAILED)])
        self.assertEqual((sink.completed, sink.failed), ([b"$5\r\nvalue\r\n"], []))
        self.assertEqual((other.completed, other.failed), ([], [b"-ERR datastore unavailable\r\n"]))

    def test_reply_sink_answers_once(self) -> None:
        sink = Sink()
        self.client.request(REQUEST, Request(REQ), sink)
        self.pair.flush()
        reply = self.handler.requests[0][3]
        reply.complete(b"+first\r\n")
        reply.complete(b"+second\r\n")
        reply.fail(b"-ERR third\r\n")
        self.pair.flush()
        self.assertEqual(sink.results, [b"+first\r\n"])
        self.assertEqual(self.client.late_replies, 0)

    def test_thousand_in_flight_answered_out_of_order(self) -> None:
        sinks = [Sink() for _ in range(1000)]
        for i, sink in enumerate(sinks):
            self.client.request(REQUEST, Request(b"*2\r\n$3\r\nGET\r\n$%d\r\n%d\r\n" % (len(str(i)), i)), sink)
        self.assertEqual(self.client.in_flight, 1000)
        self.pair.flush()
        requests = list(self.handler.requests)
        self.assertEqual(len(requests), 1000)
        random.Random(1).shuffle(requests)
        for n, (_, _, request, reply) in enumerate(requests):
            reply.complete(b"+" + request.payload.split(b"\r\n")[-2] + b"\r\n")
            if n % 97 == 0:
                self.pair.flush()
        self.pair.flush()
        for i, sink in enumerate(sinks):
            self.assertEqual(sink.results, [b"+%d\r\n" % i])
        self.assertEqual(self.client.in_flight, 0)

    def test_requests_both_ways_on_one_connection(self) -> None:
        """The accepting side may send requests too; the connector's handler serves them."""
        self.pair.client_handler.echo = True
        self.handler.echo = True
        to_server, to_client = Sink(), Sink()
        self.client.request(REQUEST, Request(b"ping-a\r\n"), to_server)
        self.server.request(REQUEST, Request(b"ping-b\r\n"), to_client)
        self.pair.flush()
        self.assertEqual(to_server.completed, [b"+ping-a\r\n"])
        self.assertEqual(to_client.completed, [b"+ping-b\r\n"])
        self.assertEqual(self.pair.client_handler.requests[0][0], B)

    def test_timeout_discards_late_reply_and_keeps_connection(self) -> None:
        sink = Sink()
        self.client.request(REQUEST, Request(REQ), sink)
        self.pair.flush()
        self.pair.clock.advance(1.1)
        self.assertEqual(self.client.expire(self.pair.clock.seconds()), 0)
        self.pair.clock.advance(0.1)
        self.assertEqual(self.client.expire(self.pair.clock.seconds()), 1)
        self.assertEqual(sink.failed, [b"-ERR peer 127.0.0.2:8101 timed out after 1200 ms\r\n"])
        self.handler.requests[0][3].complete(b"+late\r\n")
        self.pair.flush()
        self.assertEqual(sink.results, [b"-ERR peer 127.0.0.2:8101 timed out after 1200 ms\r\n"])
        self.assertEqual(self.client.late_replies, 1)
        self.assertTrue(self.client.is_open)
        again = Sink()
        self.client.request(REQUEST, Request(REQ), again)
        self.pair.flush()
        self.handler.requests[1][3].complete(b"+fresh\r\n")
        self.pair.flush()
        self.assertEqual(again.completed, [b"+fresh\r\n"])

    def test_answered_requests_do_not_pile_up_for_the_sweeper(self) -> None:
        for _ in range(100):
            self.client.request(REQUEST, Request(REQ), Sink())
        self.pair.flush()
        for request in self.handler.requests:
            request[3].complete(b"+OK\r\n")
        self.pair.flush()
        self.assertEqual(len(self.client._deadlines), 0)

    def test_connection_lost_fails_in_flight(self) -> None:
        sinks = [Sink() for _ in range(3)]
        for sink in sinks:
            self.client.request(REQUEST, Request(REQ), sink)
        self.pair.flush()
        answered = self.handler.requests[0][3]
        self.server.transport.loseConnection()
        self.pair.flush()
        for sink in sinks:
            self.assertEqual(sink.results, [b"-ERR peer 127.0.0.2:8101 unavailable\r\n"])
        self.assertEqual(self.pair.client_owner.saw("lost"), [None])
        # a reply to a connection that is gone goes nowhere, quietly
        answered.complete(b"+OK\r\n")
        later = Sink()
        self.assertEqual(self.client.request(REQUEST, Request(REQ), later), 0)
        self.assertEqual(later.failed, [b"-ERR peer 127.0.0.2:8101 unavailable\r\n"])

    def test_handler_error_fails_that_request_only(self) -> None:
        class Broken:
            def handle_peer_request(self, *args):
                raise RuntimeError("bug")

        self.server._local.requests = Broken()
        sink = Sink()
        self.client.request(REQUEST, Request(REQ), sink)
        self.pair.flush()
        self.assertEqual(sink.failed, [b"-ERR internal error handling peer request\r\n"])
        self.assertTrue(self.client.is_open)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_ping_answered_with_pong(self) -> None:
        del self.pair.wire[:]
        self.client.ping()
        self.pair.flush()
        self.assertEqual(self.pair.frame_types(), ["PING", "PONG"])

    def test_a_run_travels_as_one_frame_and_arrives_as_one_request(self) -> None:
        """The peer layer frames a run (FLAG_RUN, count in front) and unframes it."""
        runs = b"*1\r\n$4\r\nPING\r\n" * 3
        sink = Sink()
        self.client.request(REQUEST, Request(runs, count=3, write=True), sink)
        self.pair.flush()
        (frame,) = [f for chunk in self.pair.wire for f in frames_of(chunk) if f.type == REQUEST]
        self.assertEqual((frame.flags, frame.payload), (FLAG_RUN | FLAG_WRITE, run_payload(3, runs)))
        ((_, _, request, reply),) = self.handler.requests
        self.assertEqual((request.payload, request.count, request.write), (runs, 3, True))
        reply.complete(b"+PONG\r\n" * 3)
        self.pair.flush()
        self.assertEqual(sink.completed, [b"+PONG\r\n" * 3])

    def test_malformed_run_prefix_answers_an_error(self) -> None:
        """A FLAG_RUN frame too short for its count fails that request; the connection stays."""
        del self.pair.wire[:]
        self.client.write_batched(encode_frame(REQUEST, FLAG_RUN, 77, A, b"ab"))
        self.client.flush_batched()
        self.pair.flush()
        self.assertEqual(self.handler.requests, [])
        replies = [f for chunk in self.pair.wire for f in frames_of(chunk) if f.type == REPLY]
        self.assertEqual([(f.request_id, f.flags) for f in replies], [(77, FLAG_FAILED)])
        self.assertTrue(replies[0].payload.startswith(b"-ERR "))
        self.assertTrue(self.server.is_open)
        sink = Sink()
        self.client.request(REQUEST, Request(REQ), sink)
        self.pair.flush()
        self.assertEqual(len(self.handler.requests), 1)

    def test_lane_is_stable_per_peer(self) -> None:
        """One peer's requests share one lane on every connection; another peer gets another."""
        other = Pair(config("127.0.0.1"), config("127.0.0.2"))
        third = Pair(config("127.0.0.3"), config("127.0.0.2"))
        for pair in (self.pair, other, third):
            pair.client.request(REQUEST, Request(REQ, lane=5), Sink())
            pair.client.request(REQUEST, Request(REQ, lane=6), Sink())
            pair.flush()
        lanes = [{r[2].lane for r in pair.server_handler.requests} for pair in (self.pair, other, third)]
        self.assertEqual(lanes[0], lanes[1])
        self.assertEqual(len(lanes[0]), 1)
        self.assertNotEqual(lanes[0], lanes[2])
        self.assertEqual(lanes[0], {peer_lane(A)})

    def test_without_requests_collaborator_requests_are_refused(self) -> None:
        self.server._local.requests = None
        sink = Sink()
        self.client.request(REQUEST, Request(REQ), sink)
        self.pair.flush()
        self.assertEqual(sink.failed, [b"-ERR this node does not take peer requests on this connection\r\n"])

    def test_heartbeats_carry_membership_status_both_ways(self) -> None:
        client_status, server_status = Status("NORMAL", 3), Status("WRITES_ONLY", 0)
        pair = Pair(config("127.0.0.1"), config("127.0.0.2"),
                    client_status=client_status, server_status=server_status)
        pair.client.ping()
        pair.flush()
        self.assertEqual(client_status.asked, [B])
        self.assertEqual(server_status.asked, [A])
        self.assertEqual(server_status.reported, [(A, {"state": "NORMAL", "hints": 3})])
        self.assertEqual(client_status.reported, [(B, {"state": "WRITES_ONLY", "hints": 0})])

    def test_without_membership_heartbeats_say_normal(self) -> None:
        status = Status()
        pair = Pair(config("127.0.0.1"), config("127.0.0.2"), client_status=status)
        del pair.wire[:]
        pair.client.ping()
        pair.flush()
        pong = [f for chunk in pair.wire for f in frames_of(chunk) if f.type == PONG]
        self.assertEqual([json.loads(f.payload) for f in pong], [DEFAULT_STATUS])
        self.assertEqual(status.reported, [(B, {"state": "NORMAL", "hints": 0})])

    def test_doubles_provide_the_collaborator_interfaces(self) -> None:
        self.assertTrue(verifyObject(IPeerRequests, Handler()))
        self.assertTrue(verifyObject(IPeerStatus, Status()))

    def test_malformed_frame_on_open_connection_drops_it(self) -> None:
        sink = Sink()
        self.client.request(REQUEST, Request(REQ), sink)
        self.pair.flush()
        self.server.transport.write(b"garbage that is not a frame")
        self.pair.flush()
        self.assertFalse(self.client.is_open)
        self.assertEqual(sink.failed, [b"-ERR peer 127.0.0.2:8101 unavailable\r\n"])


# -- links ----------------------------------------------------------------------


class Network:
    """
    Nodes in one process: ``connect(address)`` gives an endpoint that wires
    the caller to whatever PeerServerFactory listens there, through iosim.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.listening: Dict[str, PeerServerFactory] = {}
        self.pumps: List[iosim.IOPump] = []
        self.cut: set = set()
        self.attempts: List[Tuple[float, str]] = []
        self.wire: List[bytes] = []

    def listen(self, factory: PeerServerFactory) -> PeerServerFactory:
        self.listening[factory.name] = factory
        factory.doStart()
        return factory

    def connect(self, address: Address) -> "_Endpoint":
        return _Endpoint(self, str(address))

    def flush(self) -> None:
        for _ in range(1000):
            moved = False
            for pump in list(self.pumps):
                if pump in self.cut:
                    pump.clientIO.stream = []
                    pump.serverIO.stream = []
                if pump.pump():
                    moved = True
            if not moved:
                return
        raise AssertionError("network does not settle")

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Let time pass in small steps, delivering bytes in between."""
        self.flush()
        end = self.clock.seconds() + seconds
        while self.clock.seconds() + step <= end + 1e-9:
            self.clock.advance(step)
            self.flush()
        if end > self.clock.seconds():
            self.clock.advance(end - self.clock.seconds())
            self.flush()


class _Endpoint:
    def __init__(self, network: Network, name: str) -> None:
        self.network = network
        self.name = name

    def connect(self, factory):
        net = self.network
        net.attempts.append((net.clock.seconds(), self.name))
        server_factory = net.listening.get(self.name)
        if server_factory is None:
            return fail(Failure(ConnectionRefusedError()))
        client = factory.buildProtocol(None)
        server = server_factory.buildProtocol(None)
        pump = iosim.connect(server, Wire(server, True, net.wire), client, Wire(client, False, net.wire),
                             greet=False, clock=net.clock)
        net.pumps.append(pump)
        return succeed(client)


class LinkTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = Network(self.clock)
        self.handler_b = Handler()
        self.states: List[Tuple[PeerLink, bool]] = []

    def serve(self, host: str = "127.0.0.2", handler=None, known=anyone, **overrides) -> PeerServerFactory:
        factory = PeerServerFactory(config(host, rack="rack2", **overrides),
                                    handler or self.handler_b, None, known, self.clock)
        return self.net.listen(factory)

    def link(self, peer: str = B, dc: str = "dc1", timeout: Optional[float] = None, **overrides) -> PeerLink:
        cfg = config("127.0.0.1", **overrides)
        link = PeerLink(cfg, seed(peer, dc=dc), timeout or peer_timeout(cfg, dc), self.clock,
                        connect=self.net.connect, on_state=lambda l, up: self.states.append((l, up)),
                        jitter=lambda: 1.0)
        self.addCleanup(link.stop)
        return link

    def test_down_until_handshake_then_up(self) -> None:
        self.serve()
        link = self.link()
        self.assertEqual(link.state, "DOWN")
        link.start()
        self.assertFalse(link.is_up, "connected but not handshaken yet")
        self.net.flush()
        self.assertTrue(link.is_up)
        self.assertEqual(link.state, "UP")
        self.assertEqual(self.states, [(link, True)])

    def test_send_while_down_fails_at_once(self) -> None:
        link = self.link()
        sink = Sink()
        link.send(REQUEST, Request(REQ, lane=3), sink)
        self.assertEqual(sink.failed, [b"-ERR peer 127.0.0.2:8101 unavailable\r\n"])
        link.start()  # nobody listens
        sink = Sink()
        link.send(REQUEST, Request(REQ), sink)
        self.assertEqual(sink.failed, [b"-ERR peer 127.0.0.2:8101 unavailable\r\n"])

    def test_send_and_reply(self) -> None:
        self.serve()
        link = self.link()
        link.start()
        self.net.flush()
        sink = Sink()
        link.send(FORWARD, Request(REQ, lane=7, write=True), sink)
        self.net.flush()
        ((peer, ftype, request, reply),) = self.handler_b.requests
        self.assertEqual((peer, ftype, request.payload, request.write, request.resp),
                         (A, FORWARD, REQ, True, 2))
        # the origin is the linking node itself
        (forward,) = [f for chunk in self.net.wire for f in frames_of(chunk) if f.type == FORWARD]
        self.assertEqual((forward.origin, forward.flags), (A, FLAG_WRITE))
        reply.complete(b":1\r\n")
        self.net.flush()
        self.assertEqual(sink.completed, [b":1\r\n"])

    def test_reconnect_with_backoff(self) -> None:
        link = self.link()
        link.start()
        self.assertEqual(len(self.net.attempts), 1)
        # 0.1 s doubling, capped at 2 s (jitter pinned to its maximum)
        for delay in (0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0):
            attempts = len(self.net.attempts)
            self.clock.advance(delay - 0.001)
            self.assertEqual(len(self.net.attempts), attempts, delay)
            self.clock.advance(0.002)
            self.assertEqual(len(self.net.attempts), attempts + 1, delay)
        self.assertFalse(link.is_up)
        self.serve()
        self.net.advance(2.0)
        self.assertTrue(link.is_up)
        self.assertEqual(len(self.net.attempts), 9)
        # success resets the backoff: after a loss, the next try comes 0.1 s later
        self.net.pumps[-1].serverIO.loseConnection()
        self.net.flush()
        self.assertFalse(link.is_up)
        self.clock.advance(0.099)
        self.assertEqual(len(self.net.attempts), 9)
        self.clock.advance(0.002)
        self.net.flush()
        self.assertEqual(len(self.net.attempts), 10)
        self.assertTrue(link.is_up)
        self.assertEqual([up for _, up in self.states], [True, False, True])

    def test_backoff_jitter(self) -> None:
        link = self.link()  # jitter pinned to its maximum
        self.assertEqual([link.backoff.delay(n) for n in range(1, 8)],
                         [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
        self.assertEqual(Backoff(lambda: 0.0).delay(1), 0.05)

    def test_rejected_link_stays_down_and_retries(self) -> None:
        self.serve(known=lambda name, dc, rack: False)
        link = self.link()
        link.start()
        self.net.advance(1.0)
        self.assertFalse(link.is_up)
        self.assertEqual(self.states, [])
        self.assertGreater(len(self.net.attempts), 3)

    def test_heartbeats_keep_idle_link_up(self) -> None:
        server = self.serve()
        link = self.link()
        link.start()
        self.net.advance(10.0, step=0.25)
        self.assertTrue(link.is_up)
        self.assertEqual(len(self.net.attempts), 1)
        self.assertEqual(len(server.connections), 1)
        pings = [f for chunk in self.net.wire for f in frames_of(chunk) if f.type == PING]
        self.assertGreaterEqual(len(pings), 9)

    def test_heartbeat_loss_drops_connection_after_down_after(self) -> None:
        server = self.serve()
        link = self.link(timeout=10.0)  # longer than down_after: the drop fails it
        link.start()
        self.net.flush()
        self.assertTrue(link.is_up)
        sink = Sink()
        link.send(REQUEST, Request(REQ), sink)
        self.net.flush()
        self.net.cut.add(self.net.pumps[0])  # the network between them goes silent
        cut_at = self.clock.seconds()
        self.net.advance(2.9, step=0.05)
        self.assertTrue(link.is_up)
        while link.is_up:
            self.net.advance(0.05)
        # silent at two checks in a row (`PeerProtocol.silent`)
        self.assertLessEqual(self.clock.seconds() - cut_at, 3.0 + 2 * link.tick_interval + 0.05)
        self.assertEqual(self.states, [(link, True), (link, False)])
        self.assertEqual(sink.failed, [b"-ERR peer 127.0.0.2:8101 unavailable\r\n"])
        # the link reconnects (over a fresh, working connection) and is UP again
        self.net.advance(0.5)
        self.assertTrue(link.is_up)
        self.assertEqual(self.states, [(link, True), (link, False), (link, True)])
        self.assertEqual(len(self.net.attempts), 2)
        self.assertEqual(len(server.connections), 1)

    def test_server_drops_silent_connection(self) -> None:
        server = self.serve()
        protocol = server.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        self.assertEqual(server.connections, {protocol})
        self.clock.advance(2.5)
        self.assertFalse(transport.aborted)
        for _ in range(4):
            self.clock.advance(0.25)
        self.assertTrue(transport.aborted)

    def test_a_node_stalled_past_down_after_reads_what_waits_before_it_judges(self) -> None:
        """After a stall (GC, frozen VM, SIGSTOP) the first check finds every connection silent: not yet a drop."""
        server = self.serve()
        protocol = server.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        self.clock.advance(10.0)            # the stall: the overdue check runs once
        self.assertFalse(transport.aborted)
        protocol.dataReceived(b"")          # the reactor polls: what waited in the socket is read
        protocol.last_received = self.clock.seconds()
        self.clock.advance(0.25)
        self.assertFalse(transport.aborted, "a live peer was dropped after the stall")
        for _ in range(14):
            self.clock.advance(0.25)        # silent for real: two checks in a row
        self.assertTrue(transport.aborted)

    def test_timeout_through_link_keeps_connection(self) -> None:
        self.serve()
        link = self.link(timeout=0.5)
        link.start()
        self.net.flush()
        sink = Sink()
        link.send(REQUEST, Request(REQ), sink)
        self.net.advance(0.6)
        self.assertEqual(sink.failed, [b"-ERR peer 127.0.0.2:8101 timed out after 500 ms\r\n"])
        self.assertEqual(link.timed_out_total, 1)
        self.handler_b.requests[0][3].complete(b"+late\r\n")
        self.net.flush()
        self.assertEqual(sink.results, [b"-ERR peer 127.0.0.2:8101 timed out after 500 ms\r\n"])
        self.assertTrue(link.is_up)
        self.assertEqual(len(self.net.attempts), 1)

    def test_pinning(self) -> None:
        server = self.serve()
        link = self.link(local_peer_connections=3)
        link.start()
        self.net.flush()
        self.assertEqual(len(server.connections), 3)
        for pin in range(12):
            link.send(REQUEST, Request(b"%d" % pin, lane=pin), Sink())
        self.net.flush()
        connection_of = {}
        for request in self.handler_b.requests:
            connection_of[int(request[2].payload)] = request[3]._protocol
        for pin in range(12):
            self.assertIs(connection_of[pin], connection_of[pin % 3])
        self.assertEqual(len({id(connection_of[p]) for p in range(3)}), 3)
        # with one connection gone, pins spread over the two left, still stably
        self.net.pumps[0].clientIO.loseConnection()
        self.net.flush()
        self.assertTrue(link.is_up)
        del self.handler_b.requests[:]
        for pin in range(6):
            link.send(REQUEST, Request(b"%d" % pin, lane=pin), Sink())
        self.net.flush()
        connection_of = {int(r[2].payload): r[3]._protocol for r in self.handler_b.requests}
        self.assertEqual(len({id(c) for c in connection_of.values()}), 2)
        for pin in range(6):
            self.assertIs(connection_of[pin], connection_of[pin % 2])

    def test_cross_dc_link_uses_remote_connections(self) -> None:
        self.serve(host="127.0.0.3", dc="dc2")
        cfg = config("127.0.0.1", local_peer_connections=3, remote_peer_connections=2)
        self.assertEqual(peer_timeout(cfg, "dc2"), 6.0)
        self.assertAlmostEqual(peer_timeout(cfg, "dc1"), 1.2)
        link = PeerLink(cfg, seed(C, dc="dc2"), peer_timeout(cfg, "dc2"), self.clock,
                        connect=self.net.connect)
        self.addCleanup(link.stop)
        link.start()
        self.net.flush()
        self.assertTrue(link.is_up)
        self.assertEqual(len(self.net.listening[C].connections), 2)

    def test_reset_drops_and_reconnects_at_once(self) -> None:
        server = self.serve()
        link = self.link(local_peer_connections=2)
        link.start()
        self.net.flush()
        before = set(server.connections)
        sink = Sink()
        link.send(REQUEST, Request(REQ), sink)
        link.reset()
        self.assertFalse(link.is_up)
        self.net.flush()  # no time passes
        self.assertTrue(link.is_up)
        self.assertEqual(sink.failed, [b"-ERR peer 127.0.0.2:8101 unavailable\r\n"])
        self.assertEqual(len(server.connections), 2)
        self.assertFalse(before & server.connections)
        self.assertEqual([up for _, up in self.states], [True, False, True])

    def test_reset_while_waiting_retries_now(self) -> None:
        link = self.link()
        link.start()
        self.net.advance(3.5, step=0.01)
        attempts = len(self.net.attempts)
        self.serve()
        link.reset()
        self.net.flush()
        self.assertTrue(link.is_up)
        self.assertEqual(len(self.net.attempts), attempts + 1)

    def test_stop(self) -> None:
        server = self.serve()
        link = self.link()
        link.start()
        self.net.flush()
        link.stop()
        self.assertFalse(link.is_up)
        self.net.advance(5.0)
        self.assertEqual(len(self.net.attempts), 1)
        self.assertEqual(server.connections, set())
        self.assertEqual([up for _, up in self.states], [True, False])
        # a stopped link can be started again
        link.start()
        self.net.flush()
        self.assertTrue(link.is_up)

    def test_listener_stop_closes_accepted_connections(self) -> None:
        server = self.serve()
        link = self.link()
        link.start()
        self.net.flush()
        server.doStop()
        self.net.flush()
        self.assertFalse(link.is_up)
        self.assertEqual(server.connections, set())

    def test_peers_with_secret(self) -> None:
        self.serve(peer_secret=SECRET)
        link = self.link(peer_secret=SECRET)
        link.start()
        self.net.flush()
        self.assertTrue(link.is_up)
        self.assertNotIn(SECRET.encode(), b"".join(self.net.wire))
        wrong = self.link(peer_secret="nope")
        wrong.start()
        self.net.advance(1.0)
        self.assertFalse(wrong.is_up)

    def test_node_name_is_dyn_listen(self) -> None:
        self.assertEqual(node_name(config("127.0.0.2")), B)


class LinkCounterTests(SynchronousTestCase):
    """Peer requests counted by result, latency sampled by request id."""

    setUp = LinkTests.setUp
    serve = LinkTests.serve
    link = LinkTests.link

    def up_link(self) -> PeerLink:
        self.serve()
        link = self.link()
        link.start()
        self.net.flush()
        self.assertTrue(link.is_up)
        return link

    def test_every_result_starts_at_zero(self) -> None:
        link = self.link()
        self.assertEqual(link.request_counts(), {"ok": 0, "error": 0, "timeout": 0, "unavailable": 0})
        self.assertEqual((link.requests_total, link.latency.count), (0, 0))

    def test_unavailable_counted(self) -> None:
        link = self.link()
        link.send(REQUEST, Request(REQ), Sink())
        link.send(REQUEST, Request(REQ), Sink())
        self.assertEqual(link.request_counts()["unavailable"], 2)
        self.assertEqual(link.requests_total, 0)

    def test_replies_counted_ok_and_error(self) -> None:
        link = self.up_link()
        for _ in range(4):
            link.send(REQUEST, Request(REQ), Sink())
        self.net.flush()
        replies = [r[3] for r in self.handler_b.requests]
        replies[0].complete(b"+OK\r\n")
        replies[1].complete(b"$1\r\nx\r\n")
        replies[2].complete(b"-WRONGTYPE no\r\n")
        replies[3].fail(b"-ERR datastore unavailable\r\n")
        self.net.flush()
        self.assertEqual(link.requests_total, 4)
        self.assertEqual(link.request_counts(), {"ok": 2, "error": 2, "timeout": 0, "unavailable": 0})

    def test_timeouts_counted(self) -> None:
        link = self.up_link()
        link.send(REQUEST, Request(REQ), Sink())
        self.net.advance(link.timeout + 0.5)
        counts = link.request_counts()
        self.assertEqual((counts["timeout"], counts["ok"], counts["error"]), (1, 0, 0))

    def test_counts_survive_closed_connections(self) -> None:
        link = self.up_link()
        for _ in range(3):
            link.send(REQUEST, Request(REQ), Sink())
        self.net.flush()
        self.handler_b.requests[0][3].complete(b"+OK\r\n")
        self.net.flush()
        for pump in self.net.pumps:
            pump.serverIO.loseConnection()
        self.net.flush()
        self.assertFalse(link.is_up)
        # the two still waiting failed when their connection closed
        self.assertEqual(link.requests_total, 3)
        self.assertEqual(link.request_counts(), {"ok": 1, "error": 2, "timeout": 0, "unavailable": 0})
        self.net.advance(0.5)
        self.assertTrue(link.is_up)
        link.send(REQUEST, Request(REQ), Sink())
        self.net.flush()
        self.handler_b.requests[-1][3].complete(b"+OK\r\n")
        self.net.flush()
        self.assertEqual(link.requests_total, 4)
        self.assertEqual(link.request_counts()["ok"], 2)

    def test_latency_sampled_by_request_id(self) -> None:
        link = self.up_link()
        for _ in range(SAMPLE_EVERY - 1):
            link.send(REQUEST, Request(REQ), Sink())
        self.clock.advance(0.5)
        link.send(REQUEST, Request(REQ), Sink())  # request id 16, sent at +0.5: the sample
        self.net.flush()
        replies = [r[3] for r in self.handler_b.requests]
        self.assertEqual(len(replies), SAMPLE_EVERY)
        self.clock.advance(0.03)
        # replies come back in any order; only id 16's is timed
        for reply in replies[:-1]:
            reply.complete(b"+OK\r\n")
        self.net.flush()
        self.assertEqual(link.latency.count, 0)
        self.clock.advance(0.01)
        replies[-1].complete(b"+OK\r\n")
        self.net.flush()
        self.assertEqual(link.latency.count, 1)
        self.assertAlmostEqual(link.latency.total, 0.04)
        self.assertEqual(link.latency.quantile(0.5), 0.05)

    def test_timed_out_sample_is_given_up(self) -> None:
        link = self.up_link()
        for _ in range(SAMPLE_EVERY):
            link.send(REQUEST, Request(REQ), Sink())
        self.net.flush()
        [protocol] = [p for p in link._live if p.sent]
        self.assertEqual(protocol._sample_id, SAMPLE_EVERY)
        self.net.advance(link.timeout + 0.5)
        self.assertEqual(protocol._sample_id, 0)
        self.assertEqual(link.request_counts()["timeout"], SAMPLE_EVERY)
        # late replies are not timed; the next sample (id 32) is
        for request in self.handler_b.requests:
            request[3].complete(b"+late\r\n")
        self.net.flush()
        self.assertEqual(link.latency.count, 0)
        for _ in range(SAMPLE_EVERY):
            link.send(REQUEST, Request(REQ), Sink())
        self.net.flush()
        self.clock.advance(0.002)
        for request in self.handler_b.requests[SAMPLE_EVERY:]:
            request[3].complete(b"+OK\r\n")
        self.net.flush()
        self.assertEqual(link.latency.count, 1)
        self.assertAlmostEqual(link.latency.total, 0.002)
