"""
Tests for scale-out's pure parts and its pieces in the write path:
pending replicas in the topology and plans (dynomite.placement), which
ranges move and where new tokens go (dynomite.scaleout.moves), where a
node starts (manager.initial_place), and the leader's copy in the keys'
order (dynomite.node.leader).
"""

from __future__ import annotations

import json
import os
from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands import lww
from dynomite.config.model import Address
from dynomite.config.vocabulary import DC_ONE, JOINING, LEAVING, LEFT, MAX_TOKEN, NORMAL
from dynomite.node.leader import Leader
from dynomite.peers.gossip import BadGossip, Entry
from dynomite.peers.membership import Membership
from dynomite.placement.hashing import key_hash
from dynomite.placement.router import Router
from dynomite.placement.topology import NodeInfo, Topology
from dynomite.repair.script import (
    ReplicaError, copy_commands, dump_request, keys_of_dump, read_dumped, read_dumped_with_versions)
from dynomite.scaleout.manager import initial_place
from dynomite.scaleout.moves import Move, auto_tokens, busy_rack, kept_ranges, moves_of
from dynomite.wire.inflight import Request
from dynomite.wire.resp import encode_command, encode_commands

from tests.unit.test_leader import FakeOutbox, Sink, SlowRedis

HALF = 2 ** 31
A, B, C, N = "10.0.0.1:8101", "10.0.0.2:8101", "10.0.0.3:8101", "10.0.0.9:8101"


def node(name: str, rack: str, tokens, status: str = NORMAL, local: bool = False, dc: str = "dc1") -> NodeInfo:
    return NodeInfo(name, dc, rack, Address.parse(name), tuple(tokens), local, status)


def three(local: str = A, *more: NodeInfo) -> Topology:
    """1 DC x 3 racks, one node each at token 0, and ``more``."""
    replaced = {n.name for n in more}
    nodes = [n for n in (node(A, "r1", [0]), node(B, "r2", [0]), node(C, "r3", [0]))
             if n.name not in replaced] + list(more)
    return Topology([n if n.name != local else node(n.name, n.rack, n.tokens, n.status, True) for n in nodes])


class PendingTopologyTests(SynchronousTestCase):

    def test_nothing_moves_without_a_joining_or_leaving_node(self):
        t = three()
        self.assertFalse(t.moving)
        for position in (0, 1, HALF, MAX_TOKEN):
            self.assertEqual(t.pending(position), ())
        self.assertEqual(t.moving_ranges("dc1", "r1"), [])

    def test_a_joining_node_is_pending_for_the_ranges_it_takes(self):
        t = three(A, node(N, "r1", [HALF], JOINING))
        joiner = t.node(N)
        self.assertTrue(t.moving)
        self.assertEqual([n.name for n in t.nodes_in_rack("dc1", "r1")], [A], "not on the current ring")
        self.assertEqual(t.ring("dc1", "r1").owner(5).name, A)
        self.assertEqual(t.pending(1), (joiner,))
        self.assertEqual(t.pending(HALF), (joiner,))
        self.assertEqual(t.pending(0), ())
        self.assertEqual(t.pending(HALF + 1), ())
        self.assertEqual(t.moving_ranges("dc1", "r1"), [(1, HALF, t.node(A), joiner)])
        self.assertEqual(t.moving_ranges("dc1", "r2"), [])
        # a segment never straddles the moving range's bounds
        self.assertIsNot(t.replica_key(HALF), t.replica_key(HALF + 1))

    def test_a_joining_node_without_tokens_moves_nothing(self):
        t = three(A, node(N, "r1", [], JOINING))
        self.assertFalse(t.moving)
        self.assertIsNotNone(t.node(N))

    def test_a_leaving_node_hands_its_ranges_to_its_successor(self):
        t = three(A, node(N, "r1", [HALF], LEAVING))
        self.assertEqual(t.ring("dc1", "r1").owner(5).name, N, "it still owns them")
        self.assertEqual(t.pending(5), (t.node(A),))
        self.assertEqual(t.moving_ranges("dc1", "r1"), [(1, HALF, t.node(N), t.node(A))])

    def test_of_two_moves_in_a_rack_the_older_goes_first(self):
        older = NodeInfo(N, "dc1", "r1", Address.parse(N), (HALF,), False, JOINING, 5)
        younger = NodeInfo("10.0.0.8:8101", "dc1", "r1", Address.parse("10.0.0.8:8101"), (2 ** 30,), False,
                           JOINING, 7)
        t = three(A, older, younger)
        self.assertEqual(t.moving_ranges("dc1", "r1"), [(1, HALF, t.node(A), older)])
        self.assertEqual(moves_of(t, younger.name), [])
        # the younger asks to leave meanwhile: still the older's move alone
        leaving = NodeInfo(B, "dc1", "r1", Address.parse(B), (3 * 2 ** 30,), False, LEAVING, 9)
        t = three(A, older, leaving)
        self.assertEqual([(lo, hi, now.name, later.name) for lo, hi, now, later in t.moving_ranges("dc1", "r1")],
                         [(1, HALF, B, N)])

    def test_the_last_node_of_a_rack_keeps_its_ranges_when_leaving(self):
        t = three(A, node(B, "r2", [0], LEAVING))
        self.assertFalse(t.moving)

    def test_a_left_node_owns_nothing(self):
        t = three(A, node(N, "r1", [HALF], LEFT))
        self.assertEqual(t.ring("dc1", "r1").owner(5).name, A)
        self.assertFalse(t.moving)

    def test_a_joiner_that_knows_only_another_rack_holds_no_ring_of_its_own(self):
        t = Topology([node(N, "r1", [HALF], JOINING, local=True), node(B, "r2", [0])])
        self.assertEqual(t.racks("dc1"), ("r2",))
        self.assertEqual([n.name for n in t.local_replicas(5)], [B])
        self.assertEqual(t.pending(5), ())

    def test_writes_carry_the_pending_replicas_and_reads_do_not(self):
        router = Router(three(A, node(N, "r1", [HALF], JOINING)), None)
        key = next(k for k in (b"k%d" % i for i in range(100)) if 0 < key_hash(k) <= HALF)
        other = next(k for k in (b"k%d" % i for i in range(100)) if key_hash(k) > HALF)
        self.assertEqual([n.name for n in router.route(key, True, DC_ONE).pending], [N])
        self.assertEqual(router.route(other, True, DC_ONE).pending, ())
        self.assertEqual(router.route(key, False, DC_ONE).pending, ())
        self.assertNotIn(N, [n.name for n in router.route(key, True, DC_ONE).local])


class MovesTests(SynchronousTestCase):

    def test_a_joiner_takes_and_a_leaver_gives(self):
        t = three(A, node(N, "r1", [HALF], JOINING))
        self.assertEqual(moves_of(t, N), [Move(1, HALF, A, N)])
        self.assertEqual(moves_of(t, A), [])
        t = three(A, node(N, "r1", [HALF], LEAVING))
        self.assertEqual(moves_of(t, N), [Move(1, HALF, N, A)])

    def test_auto_tokens_split_the_largest_range(self):
        self.assertEqual(auto_tokens([0]), (HALF,))
        self.assertEqual(auto_tokens([0, HALF]), (3 * 2 ** 30,))
        self.assertEqual(auto_tokens([100, 200]), ((200 + (100 + 2 ** 32 - 200) // 2) % 2 ** 32,))
        self.assertEqual(auto_tokens([]), (MAX_TOKEN // 2,))
        self.assertEqual(len(auto_tokens([0], 3)), 3)

    def test_one_move_per_rack(self):
        def entry(name, rack, status, tokens, generation=1):
            return Entry(name, name, "dc1", rack, tuple(tokens), status, generation, 1)

        me = entry(N, "r1", JOINING, [HALF], generation=5)
        self.assertIsNone(busy_rack([entry(A, "r1", NORMAL, [0]), me], me))
        self.assertIsNone(busy_rack([entry(B, "r2", JOINING, [HALF]), me], me), "another rack")
        self.assertIn("LEAVING", busy_rack([entry(B, "r1", LEAVING, [7]), me], me))
        # two joins at once: the older goes on, the younger waits
        self.assertIn(B, busy_rack([entry(B, "r1", JOINING, [7], generation=4), me], me))
        self.assertIsNone(busy_rack([entry(B, "r1", JOINING, [7], generation=6), me], me))
        # a joiner still choosing its tokens does not hold the rack
        self.assertIsNone(busy_rack([entry(B, "r1", JOINING, [], generation=1), me], me))

    def test_kept_ranges_are_the_current_and_future_ones(self):
        t = three(A, node(N, "r1", [HALF]))
        self.assertEqual(kept_ranges(t, A), [(0, 0), (HALF + 1, MAX_TOKEN)])
        self.assertEqual(kept_ranges(t, N), [(1, HALF)])
        # while N joins, A keeps everything it still owns
        moving = kept_ranges(three(A, node(N, "r1", [HALF], JOINING)), A)
        for position in (0, 5, HALF, HALF + 5, MAX_TOKEN):
            self.assertTrue(any(lo <= position <= hi for lo, hi in moving), position)


class FakeConfig:
    def __init__(self, tokens, bootstrap: bool, gossip: bool = True) -> None:
        self.tokens = tokens
        self.bootstrap = bootstrap
        self.enable_gossip = gossip


class InitialPlaceTests(SynchronousTestCase):

    def setUp(self):
        self.path = os.path.join(self.mktemp(), "state.json")

    def save(self, state):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            json.dump(state, f)

    def test_a_member_starts_normal_and_a_new_node_joins(self):
        self.assertEqual(initial_place(FakeConfig((5,), False), self.path), (NORMAL, (5,)))
        self.assertEqual(initial_place(FakeConfig((5,), True), self.path), (JOINING, ()))
        self.assertEqual(initial_place(FakeConfig((), True), self.path), (JOINING, ()))

    def test_a_restart_goes_on_where_the_state_file_says(self):
        self.save({"operation": "join", "tokens": [HALF]})
        self.assertEqual(initial_place(FakeConfig((), True), self.path), (JOINING, (HALF,)))
        self.save({"operation": "join", "tokens": [HALF], "done": True})
        self.assertEqual(initial_place(FakeConfig((), True), self.path), (NORMAL, (HALF,)))
        self.save({"operation": "leave"})
        self.assertEqual(initial_place(FakeConfig((5,), False), self.path), (LEAVING, (5,)))
        self.save({"operation": "leave", "done": True})
        self.assertEqual(initial_place(FakeConfig((5,), False), self.path), (LEFT, (5,)))

    def test_an_unreadable_state_file_is_no_state(self):
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w") as f:
            f.write("{not json")
        self.assertEqual(initial_place(FakeConfig((5,), False), self.path), (NORMAL, (5,)))


class RingStatusWireTests(SynchronousTestCase):

    def test_only_a_joining_entry_may_have_no_tokens(self):
        body = Entry(N, N, "dc1", "r1", (), JOINING, 1, 1).to_json()
        self.assertEqual(Entry.from_json(body).tokens, ())
        body["status"] = NORMAL
        self.assertRaises(BadGossip, Entry.from_json, body)

    def test_a_seed_from_gossip_carries_the_status(self):
        self.assertEqual(Entry(N, N, "dc1", "r1", (HALF,), JOINING, 1, 1).seed().status, JOINING)

    def test_heartbeats_say_which_entry_of_the_receiver_the_sender_holds(self):
        membership = Membership(Clock(), A, {B: object()}, resume_timeout=10, settle_time=1)
        self.assertNotIn("ring", membership.status_for(B))
        membership.ring_stamp_of = {B: (7, 3)}.get
        self.assertEqual(membership.status_for(B)["ring"], [7, 3])
        membership.peer_status(B, {"state": NORMAL, "hints": 0, "ring": [7, 4]})
        self.assertEqual(membership.ring_seen(B), (7, 4))
        membership.peer_status(B, {"state": NORMAL, "hints": 0, "ring": ["x", True]})
        self.assertIsNone(membership.ring_seen(B))


def dumped(*items) -> bytes:
    """A dump-mode answer: (key, dump) or (key,) for a missing key."""
    parts = []
    for item in items:
        if len(item) == 1:
            parts.append(b"*1\r\n$%d\r\n%s\r\n" % (len(item[0]), item[0]))
        else:
            key, dump = item
            parts.append(b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n:-1\r\n" % (len(key), key, len(dump), dump))
    return b"*%d\r\n" % len(parts) + b"".join(parts)


class LeaderCopyTests(SynchronousTestCase):
    """The leader of key k, in rack r1 of 1 DC x 3 racks; N joins r1 and takes k."""

    def setUp(self):
        self.topology = three(A, node(N, "r1", [HALF], JOINING))
        self.router = Router(self.topology, None)
        self.key = next(k for k in (b"k%d" % i for i in range(300))
                        if 0 < key_hash(k) <= HALF and self.router.route(k, True, DC_ONE).leaders[0].name == A)
        self.plan = self.router.route(self.key, True, DC_ONE)
        self.log: List = []
        self.outboxes = {n.name: FakeOutbox(n.name, self.log) for n in self.topology.nodes}
        self.redis = SlowRedis()
        self.leader = Leader(
            A, {A: self.redis}, self.outboxes,
            reconciler=None, settler=lambda write, level: (lambda raw: raw),
            hint_said_plainly=lambda sink: sink, clock=Clock(),
            remote_tally=[0, 0], local_tally=[0, 0], outcomes=None,
        )

    def rpush(self, element: bytes, resp: int = 2) -> Sink:
        client = Sink()
        request = Request(encode_command([b"RPUSH", self.key, element]), resp, 1, 1, True)
        self.leader.lead(self.plan, request, client, DC_ONE, self.plan.local[0])
        return client

    def to_joiner(self):
        return [(payload, sink) for name, payload, sink in self.log if name == N]

    def test_writes_reach_the_pending_replica_and_the_answer_waits_for_it(self):
        client = self.rpush(b"a")
        (payload, sink), = self.to_joiner()
        self.assertEqual(payload, encode_command([b"RPUSH", self.key, b"a"]))
        here = next(s for name, _, s in self.log if name == A)
        here.complete(b":1\r\n")
        self.assertEqual(client.replies, [], "the pending replica has not answered")
        sink.complete(b":1\r\n")
        self.assertEqual(client.replies, [b":1\r\n"])

    def test_a_write_led_while_a_copy_is_read_reaches_the_joiner_after_the_copy(self):
        self.rpush(b"a")
        copier = Sink()
        self.leader.copy(self.plan, dump_request([self.key]), copier)
        self.rpush(b"b")   # led after the copy's read was sent: it is not in the copy
        (probe, probe_sink), = self.redis.pending
        self.assertEqual(probe.lane, self.plan.lane)
        probe_sink.complete(dumped((self.key, b"DUMP-OF-a")))
        got = [payload for payload, _ in self.to_joiner()]
        self.assertEqual(got, [
            encode_command([b"RPUSH", self.key, b"a"]),
            encode_command(copy_commands([(self.key, b"DUMP-OF-a", -1)])[0]),
            encode_command([b"RPUSH", self.key, b"b"]),
        ])
        for _, sink in self.to_joiner()[1:2]:
            sink.complete(b"+OK\r\n")
        self.assertEqual(copier.replies, [b":1\r\n"])

    def test_a_copy_goes_in_the_resp_version_of_the_keys_writes(self):
        self.rpush(b"a", resp=3)
        self.leader.copy(self.plan, dump_request([self.key]), Sink())
        (probe, probe_sink), = self.redis.pending
        self.assertEqual(probe.resp, 3)

    def test_a_missing_key_is_deleted_on_the_joiner(self):
        self.leader.copy(self.plan, dump_request([self.key]), Sink())
        (_, probe_sink), = self.redis.pending
        probe_sink.complete(dumped((self.key,)))
        self.assertEqual([payload for payload, _ in self.to_joiner()], [encode_command([b"DEL", self.key])])

    def test_no_copy_where_nothing_moves_or_from_a_stale_source(self):
        still = self.router.route(next(k for k in (b"k%d" % i for i in range(300)) if key_hash(k) > HALF),
                                  True, DC_ONE)
        refused = Sink()
        self.leader.copy(still, dump_request([b"x"]), refused)
        self.assertIn(b"no range", refused.replies[0][1])
        self.leader.copy_source_ok = lambda: False
        stale = Sink()
        self.leader.copy(self.plan, dump_request([self.key]), stale)
        self.assertIn(b"cannot be the source", stale.replies[0][1])
        self.assertEqual(self.redis.pending, [])

    def test_the_dump_answer_is_read_key_by_key(self):
        self.assertEqual(read_dumped(dumped((b"a", b"D")), ), [(b"a", b"D", -1)])
        self.assertEqual(read_dumped(dumped((b"a",))), [(b"a", None, 0)])
        self.assertEqual(copy_commands([(b"a", b"D", 5000)]), [(b"RESTORE", b"a", b"5000", b"D", b"REPLACE", b"ABSTTL")])

    def test_with_versions_between_datacenters_the_copy_carries_them(self):
        self.leader.versions = object()   # writes are versioned (copy only asks whether)
        copier = Sink()
        self.leader.copy(self.plan, dump_request([self.key, b"gone"]), copier)
        (probe, probe_sink), = self.redis.pending
        self.assertEqual(probe.payload, dump_request([self.key, b"gone"], versions=True).payload)
        # the key and its versions (absolute expiry 9000); no key "gone", nor versions of it
        probe_sink.complete(b"*2\r\n" + dumped((self.key, b"DUMP-OF-a"), (b"gone",))
                            + b"*2\r\n*2\r\n$9\r\nDUMP-OF-V\r\n:9000\r\n*0\r\n")
        (payload, sink), = self.to_joiner()
        self.assertEqual(payload, encode_commands([
            (b"RESTORE", self.key, b"0", b"DUMP-OF-a", b"REPLACE"), (b"DEL", b"gone"),
            (b"SELECT", b"15"),
            (b"RESTORE", lww.version_key(self.key), b"9000", b"DUMP-OF-V", b"REPLACE", b"ABSTTL"),
            (b"DEL", lww.version_key(b"gone")), (b"SELECT", b"0")]))
        sink.complete(b"+OK\r\n" * 6)
        self.assertEqual(copier.replies, [b":6\r\n"])   # the commands the copy ran

    def test_a_dump_answer_without_its_versions_is_refused(self):
        with self.assertRaises(ReplicaError):
            read_dumped_with_versions(dumped((b"a", b"D")))
        with self.assertRaises(ReplicaError):
            read_dumped_with_versions(b"*2\r\n" + dumped((b"a", b"D")) + b"*0\r\n")
        self.assertEqual(read_dumped_with_versions(b"*2\r\n" + dumped((b"a", b"D")) + b"*1\r\n*0\r\n"),
                         ([(b"a", b"D", -1)], [None]))

    def test_the_keys_of_a_dump_are_read_back(self):
        self.assertEqual(keys_of_dump(dump_request([b"a", b"b"])), [b"a", b"b"])
        self.assertEqual(keys_of_dump(dump_request([b"a"], versions=True)), [b"a"])
        other_script = Request(encode_command([b"EVAL", b"return 1", b"1", b"a", b"dump"]))
        self.assertEqual(keys_of_dump(other_script), [b"a"])
        for wrong in ([b"EVAL", b"s", b"2", b"a", b"dump"], [b"EVAL", b"s", b"1", b"a", b"digest"],
                      [b"GET", b"s", b"1", b"a", b"dump"], [b"EVAL", b"s", b"x", b"a", b"dump"],
                      [b"EVAL", b"s", b"-1", b"dump"]):
            self.assertEqual(keys_of_dump(Request(encode_command(wrong))), [], wrong)
        self.assertEqual(keys_of_dump(Request(b"*1\r\n$3\r\nGE")), [])
