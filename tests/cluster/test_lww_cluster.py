"""
Two datacenters writing the same keys at once end with the same data
(dynomite.commands.lww): random writers through every node of both
datacenters, the network delivering bytes in a random order and links
dropping and coming back; once everything is delivered every replica in
both datacenters holds the same value of every key, and members written
from one side only are never lost.  A version too far ahead is refused and
applied once the clock has caught up.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands import lww
from dynomite.consistency.hlc import MAX_AHEAD_MS
from dynomite.placement.hashing import key_hash
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FORWARD
from dynomite.wire.resp import encode_command

from tests.cluster.inprocess import make_cluster
from tests.cluster.test_runs import pipeline

LAYOUT = {"dc1": {"r1": 1, "r2": 1}, "dc2": {"r1": 1, "r2": 1}}
LWW = {"datacenter_conflicts": "last_writer_wins"}
KEYS = [b"%d" % i for i in range(4)]


def random_command(rng: random.Random, client: int, step: int):
    key = rng.choice(KEYS)
    value = b"c%d.%d" % (client, step)
    kind = rng.randrange(11)
    if kind == 0:
        return ("SET", b"s" + key, value)
    if kind == 1:
        return ("DEL", rng.choice((b"s", b"l", b"h", b"t")) + key)
    if kind == 2:
        return ("RPUSH", b"l" + key, value)
    if kind == 3:
        return ("LPOP", b"l" + key)
    if kind in (4, 5):
        return ("HSET", b"h" + key, b"f%d" % rng.randrange(3), value)
    if kind == 6:
        return ("HDEL", b"h" + key, b"f%d" % rng.randrange(3))
    if kind == 7:
        return ("SADD", b"t" + key, b"m%d" % rng.randrange(4))
    if kind == 8:
        return ("SREM", b"t" + key, b"m%d" % rng.randrange(4))
    if kind == 9:
        return ("INCRBY", b"n" + key, b"%d" % rng.randrange(1, 9))
    return ("APPEND", b"s" + key, value)


def owners(cluster, key: bytes):
    topology = cluster.nodes[0].topology
    h = key_hash(key)
    return [cluster.by_name[topology.ring(dc, rack).owner(h).name]
            for dc in topology.datacenters for rack in topology.racks(dc)]


def comparable(value):
    if isinstance(value, dict):
        return sorted(value.items())
    if isinstance(value, list) and type(value).__name__ == "_Set":
        return sorted(value)
    return value


class TwoDatacenterModelTests(SynchronousTestCase):
    """
    Planted bugs that fail it: another datacenter applying writes as they
    come (no check), a check that ignores member versions, or a replayed
    commuting write applied again.  (Leaders of one datacenter failing over
    are another matter: `tests.cluster.test_write_order`.)
    """

    def run_model(self, seed: int, steps: int = 80) -> None:
        cluster = make_cluster(self, LAYOUT, **LWW)
        rng = random.Random(seed)
        clients = [cluster.client(node) for node in cluster.nodes]
        one = [n for n in cluster.nodes if n.datacenter == "dc1"]
        other = [n for n in cluster.nodes if n.datacenter == "dc2"]
        apart = False
        for step in range(steps):
            c = rng.randrange(len(clients))
            batch = [random_command(rng, c, step) for _ in range(rng.randrange(1, 4))]
            clients[c].send(pipeline(*batch))
            # the network moves some connections' bytes, in a random order
            pumps = list(cluster.pumps)
            for pump, _, _ in rng.sample(pumps, rng.randrange(len(pumps) + 1)):
                pump.pump()
            # and the datacenters lose each other now and then, writes in flight
            if not apart and rng.random() < 0.08:
                cluster.cut(one, other)
                apart = True
            elif apart and rng.random() < 0.15:
                cluster.mend()
                apart = False
            cluster.advance(0.01) if rng.random() < 0.2 else cluster.clock.advance(0.001)
        cluster.mend()
        for _ in range(40):
            cluster.advance(0.5)
        written = 0
        for prefix in (b"s", b"l", b"h", b"t", b"n"):
            for key in KEYS:
                key = prefix + key
                values = {n.name: comparable(n.redis.data.get(key)) for n in owners(cluster, key)}
                written += any(v is not None for v in values.values())
                self.assertEqual(len(set(map(repr, values.values()))), 1,
                                 "seed %d: replicas of %r differ: %r" % (seed, key, values))
        self.assertGreater(written, 10, "seed %d: hardly anything was written" % seed)

    def test_random_writers_in_two_datacenters_leave_identical_replicas(self) -> None:
        for seed in range(16):
            self.run_model(seed)


class MembersTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.cluster = make_cluster(self, LAYOUT, **LWW)
        self.one = self.cluster.node("dc1", "r1")
        self.two = self.cluster.node("dc2", "r1")

    def everywhere(self, key: bytes):
        return {n.name: comparable(n.redis.data.get(key)) for n in owners(self.cluster, key)}

    def test_members_written_at_once_from_both_sides_all_stay(self) -> None:
        cluster = self.cluster
        cluster.client(self.one).send(pipeline(("HSET", "h", "a", "1"), ("SADD", "t", "x")))
        cluster.client(self.two).send(pipeline(("HSET", "h", "b", "2"), ("SADD", "t", "y")))
        for _ in range(4):
            cluster.advance(0.5)
        self.assertEqual(set(map(repr, self.everywhere(b"h").values())), {repr([(b"a", b"1"), (b"b", b"2")])})
        self.assertEqual(set(map(repr, self.everywhere(b"t").values())), {repr([b"x", b"y"])})

    def test_of_two_overwrites_at_once_the_later_wins_everywhere(self) -> None:
        cluster = self.cluster
        cluster.client(self.one).send(pipeline(("SET", "k", "first")))
        cluster.clock.advance(0.002)
        cluster.client(self.two).send(pipeline(("SET", "k", "second")))
        for _ in range(4):
            cluster.advance(0.5)
        self.assertEqual(set(self.everywhere(b"k").values()), {b"second"})
        # the versions are out of sight of clients: database 15
        self.assertEqual(self.cluster.client(self.one).command("DBSIZE"), b":1\r\n")
        self.assertIn(lww.version_key(b"k"), self.one.redis.versions)

    def test_a_version_too_far_ahead_waits_until_the_clock_catches_up(self) -> None:
        cluster = self.cluster
        ahead = b"%013d%06d@far" % (int(cluster.clock.seconds() * 1000) + MAX_AHEAD_MS + 200, 1)
        command = lww.check_command(lww.KEY, (0, 0, 0), [b"k"], [b"SET", b"k", b"future"], ahead, 60_000)
        answers = []

        class Sink:
            complete = fail = answers.append

        replica = self.two.parts.replica
        replica.handle_peer_request(self.one.name, FORWARD, Request(encode_command(command), write=True), Sink)
        cluster.settle()
        self.assertTrue(answers[0].startswith(b"-ERR a write's version is"), answers)
        self.assertEqual(self.two.parts.coordinator.leader.versions.clock.refused, 1)
        self.assertNotIn(b"k", self.two.redis.data)
        cluster.clock.advance((MAX_AHEAD_MS + 300) / 1000)
        replica.handle_peer_request(self.one.name, FORWARD, Request(encode_command(command), write=True), Sink)
        cluster.settle()
        self.assertFalse(answers[1].startswith(b"-"), answers[1])
        self.assertEqual({n.redis.data.get(b"k") for n in owners(cluster, b"k") if n.datacenter == "dc2"},
                         {b"future"})


class JoinTests(SynchronousTestCase):
    """A node that joins a datacenter takes the versions of the keys it takes, tombstones included (`Leader.copy`)."""

    def test_a_late_older_write_loses_on_the_joiner_as_on_the_others(self) -> None:
        cluster = make_cluster(self, {"dc1": {"r1": 1}, "dc2": {"r1": 1}}, enable_gossip=True,
                               gos_interval=1000, **LWW)
        one, two = cluster.node("dc1", "r1"), cluster.node("dc2", "r1")
        keys = [b"j%d" % i for i in range(40)]
        cluster.client(one).send(pipeline(*(("SET", key, "new") for key in keys)))
        cluster.advance(0.5)
        deleted = keys[::3]   # their tombstones (a DEL's version) are all that is left of them
        cluster.client(one).send(pipeline(*(("DEL", key) for key in deleted)))
        cluster.advance(0.5)
        entry = "%s:r1:dc1:%d" % (one.name, one.config.tokens[0])
        new = cluster.add_node("10.0.0.10:8101", "dc1", "r1", 2 ** 31, [entry], bootstrap=True)
        for _ in range(240):
            if new.parts.scaleout.phase == "done":
                break
            cluster.advance(0.25)
        self.assertEqual(new.parts.scaleout.phase, "done")
        copy = new.parts.scaleout.status()["copy"]
        self.assertLessEqual(copy["scanned"], copy["to_scan"], "the tombstones' scan is not the keys' progress")
        moved = [key for key in keys if 0 < key_hash(key) <= 2 ** 31]
        self.assertTrue(moved)
        answers = []

        class Sink:
            complete = fail = answers.append

        for key in moved:
            # a write from dc2 older than the one every replica holds, late
            held = new.redis.versions.get(lww.version_key(key), {}).get(b"", b"%013d" % 0)
            older = b"%013d%06d@late" % (int(held[:13]) - 5, 1)
            check = lww.check_command(lww.KEY, (0, 0, 0), [key], [b"SET", key, b"old"], older, 60_000)
            one.parts.replica.handle_peer_request(two.name, FORWARD, Request(encode_command(check), write=True),
                                                  Sink)
        cluster.settle()
        self.assertEqual(len(answers), len(moved))
        expected = {key: None if key in deleted else b"new" for key in moved}
        self.assertTrue(any(v is None for v in expected.values()), "a deleted key moved")
        self.assertEqual({key: new.redis.data.get(key) for key in moved}, expected)
        self.assertEqual({key: two.redis.data.get(key) for key in moved}, expected)
