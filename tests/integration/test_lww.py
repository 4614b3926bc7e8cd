"""
Last writer wins between datacenters (dynomite.commands.lww) with real
processes: the Lua script decides as its Python twin does on a real
redis-server, and two writers in two datacenters writing the same keys at
once leave every backend of both datacenters with the same bytes.  A node
that joins takes the versions of the keys it takes; a Redis restarted
empty gets its versions back, tombstones included, merged field by field;
a key repaired gets the winner's versions.
"""

from __future__ import annotations

import json
import random
from typing import Dict, List, Sequence, Tuple

from dynomite.commands import lww
from dynomite.commands import table as commands
from dynomite.config.model import NodeConfig
from dynomite.placement.hashing import key_hash
from dynomite.repair import script
from dynomite.wire.requests import parse_whole

from tests.integration.fixtures.cases import CONVERGE_TIMEOUT, FaultTestCase
from tests.integration.fixtures.common import OWN_CLUSTERS_SUBNET, address, admin_cli, poll, run_together
from tests.integration.fixtures.joiners import backend_of, start_extra_node

#: 127.7.<worker>.x blocks: the join test's cluster, then its joiner (+3); the warm-up tests'
JOIN_BLOCK, WARM_BLOCK, MERGE_BLOCK, REPAIR_BLOCK = 101, 111, 115, 117


def version(ms: int, counter: int = 1, node: str = "n:1") -> bytes:
    return b"%013d%06d@%s" % (ms, counter, node.encode())


def check_of(args: Sequence[bytes], at: bytes) -> List[bytes]:
    cmd = commands.lookup(args[0])
    cmd = commands.resolve(cmd, args) or cmd
    kind, layout = lww.kind_of(cmd.name, args)
    return lww.check_command(kind, layout, commands.keys(cmd, args), args, at, 60_000)


def state_of(redis, key: str):
    """
    A key's value and expiry as a client sees them.  Not DUMP's bytes: the
    members of a hash or set written from two datacenters at once were
    added in different orders there, and a set's hash table orders its
    members by a seed of each Redis process.
    """
    kind = redis.type(key)
    value = {b"string": lambda: redis.get(key), b"list": lambda: redis.lrange(key, 0, -1),
             b"hash": lambda: sorted(redis.hgetall(key).items()), b"set": lambda: sorted(redis.smembers(key)),
             }.get(kind, lambda: None)()
    return kind, value, redis.pexpiretime(key)


class ScriptTests(FaultTestCase):
    """The Lua script and `lww.decide` run the same commands from the same state."""

    def test_the_script_decides_as_decide(self) -> None:
        # the node loads the script into its Redis (EVALSHA finds it there)
        fx = self.start_cluster("lww-script", {"dc1": {"rack1": 1}}, 231, {"datacenter_conflicts": "last_writer_wins"})
        (node,) = fx.nodes
        redis = fx.backend(node)
        rng = random.Random(11)
        members = [b"a", b"b", b"c"]
        shapes = [
            lambda: [b"SET", b"k", b"v%d" % rng.randrange(9)],
            lambda: [b"DEL", rng.choice([b"k", b"h", b"t"])],
            lambda: [b"DEL", b"h", b"t"],
            lambda: [b"HSET", b"h", rng.choice(members), b"x", rng.choice(members), b"y"],
            lambda: [b"HDEL", b"h", rng.choice(members)],
            lambda: [b"SADD", b"t", rng.choice(members)],
            lambda: [b"SREM", b"t", rng.choice(members)],
            lambda: [b"INCRBY", b"n", b"2"],
            lambda: [b"MSET", b"k", b"m", b"j", b"m"],
        ]
        for step in range(300):
            args = rng.choice(shapes)()
            at = version(1000 + rng.randrange(40), rng.randrange(3) + 1, rng.choice(["a:1", "b:1"]))
            check = lww.parse_check(check_of(args, at))
            keys = check.keys
            state = {key: self.versions(redis, key) for key in keys}
            expected = lww.decide(check, lambda key: state[key], lambda key: self.members(redis, key))
            answering = check_of(args, at)   # answering the commands it ran, not their count
            answering[answering.index(b"dyno:lww:1")] = lww.RAN_TAG
            ran = redis.execute_command(*answering)
            self.assertEqual([[bytes(a) for a in c] for c in ran], expected, "step %d: %r at %r" % (step, args, at))

    def test_the_note_script_records_what_noted_says(self) -> None:
        fx = self.start_cluster("lww-notes", {"dc1": {"rack1": 1}}, 251, {"datacenter_conflicts": "last_writer_wins"})
        (node,) = fx.nodes
        redis = fx.backend(node)
        rng = random.Random(5)
        expected: Dict[bytes, Dict[bytes, bytes]] = {}
        for step in range(100):
            entries = []
            for _ in range(rng.randrange(1, 4)):
                key = rng.choice([b"a", b"b", b"c"])
                at = version(2000 + step, rng.randrange(5) + 1)
                if rng.random() < 0.5:
                    entries.append((b"key", key, at, []))
                else:
                    entries.append((b"field", key, at, rng.sample([b"x", b"y", b"z"], rng.randrange(1, 3))))
            redis.execute_command(*lww.notes_command(entries, 60_000))
            for command in lww.noted(lww.notes_command(entries, 60_000)):
                name, where = command[0], command[1] if len(command) > 1 else None
                if name == b"DEL":
                    expected.pop(where, None)
                elif name == b"HSET":
                    expected.setdefault(where, {})[command[2]] = command[3]
            for key in (b"a", b"b", b"c"):
                self.assertEqual(self.versions(redis, key), expected.get(lww.version_key(key), {}), step)

    @staticmethod
    def versions(redis, key: bytes) -> Dict[bytes, bytes]:
        redis.execute_command("SELECT", lww.VERSION_DB)
        try:
            return {bytes(f): bytes(v) for f, v in redis.hgetall(lww.version_key(key)).items()}
        finally:
            redis.execute_command("SELECT", 0)

    @staticmethod
    def members(redis, key: bytes) -> Tuple[bytes, List[bytes]]:
        kind = redis.type(key)
        names = {b"hash": redis.hkeys, b"set": redis.smembers,
                 b"zset": lambda k: redis.zrange(k, 0, -1)}.get(kind)
        return kind, sorted(names(key)) if names else []


class TwoWritersTests(FaultTestCase):
    """Two clients, one per datacenter, pipelining writes of the same 20 keys at once."""

    def test_two_writers_in_two_datacenters_leave_identical_backends(self) -> None:
        self.start_cluster("lww-writers", {"dc1": {"rack1": 1, "rack2": 1}, "dc2": {"rack1": 1, "rack2": 1}}, 241,
                           {"datacenter_conflicts": "last_writer_wins"})
        self.prefix = "lww:"
        writers = [self.fx.rack_node("dc1", "rack1"), self.fx.rack_node("dc2", "rack2")]
        hot = ["{%shot%d}" % (self.prefix, i) for i in range(20)]

        def write(node, side: int) -> None:
            c = self.fx.client(node)
            for round_ in range(25):
                p = c.pipeline(transaction=False)
                for j, key in enumerate(hot):
                    value = "%d.%d.%d" % (side, round_, j)
                    p.set(key + "v", value)
                    p.append(key + "s", value)
                    p.rpush(key + "l", value)
                    if j % 4 == side:
                        p.lpop(key + "l")
                    p.hset(key + "h", mapping={"f%d" % side: value, "both": value})
                    p.sadd(key + "t", "m%d.%d" % (side, round_ % 3))
                    p.incrby(key + "n", side + 1)
                    if round_ % 7 == side:
                        p.delete(key + "v")
                p.execute()
            c.close()

        errors = run_together(write, [(node, i) for i, node in enumerate(writers)])
        self.assertEqual(errors, [])
        keys = [k + suffix for k in hot for suffix in ("v", "s", "l", "h", "t", "n")]

        def differing():
            out = {}
            for key in keys:
                seen = [(n.name, state_of(self.fx.backend(n), key)) for n in self.fx.owners(key)]
                if len({repr(state) for _, state in seen}) != 1:
                    out[key] = seen
            return out

        if not poll(lambda: not differing(), 4 * CONVERGE_TIMEOUT):
            diff = differing()
            self.fail("%d of %d keys differ, e.g. %r" % (len(diff), len(keys), list(diff.items())[:2]))
        c = self.fx.client(writers[0])
        for key in hot:
            # commuting writes of both sides all count, members of both sides all stay
            self.assertEqual(int(c.get(key + "n")), 25 * (1 + 2), key)
            self.assertEqual(sorted(c.hkeys(key + "h")), [b"both", b"f0", b"f1"], key)
            self.assertEqual(len(c.smembers(key + "t")), 6, key)


class JoinTests(FaultTestCase):
    """A node joining a datacenter takes the versions of the keys it takes, not only their data: tombstones too."""

    def test_a_joining_node_gets_the_versions_of_the_keys_it_takes(self) -> None:
        fx = self.start_cluster("lww-join", {"dc1": {"rack1": 1}, "dc2": {"rack1": 1}}, JOIN_BLOCK,
                                {"datacenter_conflicts": "last_writer_wins", "enable_gossip": True,
                                 "gos_interval": 1000})
        one = fx.rack_node("dc1", "rack1")
        source = fx.backend(one)
        keys = [b"lwwjoin:%d" % i for i in range(200)]
        pipe = fx.client(one).pipeline(transaction=False)
        for i, key in enumerate(keys):
            if i % 2:
                pipe.set(key, b"v")
            else:
                pipe.hset(key, mapping={b"a": b"1", b"b": b"2"})
        deleted = set(keys[::3])   # what is left of them is their tombstone
        for key in sorted(deleted):
            pipe.delete(key)
        pipe.execute()
        # the keys the joiner takes: tokens 0 and 2**31 in rack 1, so the hashes 1..2**31
        moved = [key for key in keys if 0 < key_hash(key) <= 2 ** 31]
        self.assertTrue(deleted.intersection(moved))
        self.assertTrue(poll(lambda: all(ScriptTests.versions(source, key) for key in moved), CONVERGE_TIMEOUT),
                        "every key written has versions on its owner, a deleted one its tombstone")
        versions = {key: ScriptTests.versions(source, key) for key in moved}

        joiner = start_extra_node(self, fx, address(OWN_CLUSTERS_SUBNET, JOIN_BLOCK + 3), datacenter="dc1",
                                  rack="rack1", tokens=str(2 ** 31), dyn_seeds=[one.seed], bootstrap=True)
        target = backend_of(joiner)
        bound = 10 * (1 + fx.layout.peer_down_after()) + 4 * fx.layout.timeout()

        def missing() -> List[bytes]:
            return [key for key in moved if target.exists(key) == (key in deleted)
                    or ScriptTests.versions(target, key) != versions[key]]

        if not poll(lambda: not missing(), bound, 0.5):
            wrong = missing()
            self.fail("%d of %d moved keys without their data or versions after %.0f s, e.g. %r: %r" % (
                len(wrong), len(moved), bound, wrong[0], ScriptTests.versions(target, wrong[0])))
        target.execute_command("SELECT", lww.VERSION_DB)
        try:
            self.assertGreater(target.pttl(lww.version_key(moved[0])), 0, "versions keep their expiry")
        finally:
            target.execute_command("SELECT", 0)


def all_versions(redis) -> Dict[bytes, Dict[bytes, bytes]]:
    """Every version hash of a Redis (database 15), by name."""
    redis.execute_command("SELECT", lww.VERSION_DB)
    try:
        names = [bytes(n) for n in redis.scan_iter(match=lww.version_key(b"") + b"*", count=1000)]
        return {name: {bytes(f): bytes(v) for f, v in redis.hgetall(name).items()} for name in names}
    finally:
        redis.execute_command("SELECT", 0)


class WarmUpTests(FaultTestCase):
    """A Redis restarted empty gets its versions back with its data (`dynomite.repair.warmup`)."""

    def test_the_merge_keeps_the_newer_version_of_each_field(self) -> None:
        fx = self.start_cluster("lww-merge", {"dc1": {"rack1": 1}}, MERGE_BLOCK)
        redis = fx.backend(fx.nodes[0])
        redis.execute_command("SELECT", lww.VERSION_DB)
        try:
            redis.hset(b"theirs", mapping={b"": b"0005", b"fa": b"0009", b"fb": b"0002", b"s@x": b"0007"})
            redis.pexpireat(b"theirs", 4_000_000_000_000)
            redis.hset(b"mine", mapping={b"": b"0006", b"fb": b"0001"})
            redis.pexpireat(b"mine", 3_000_000_000_000)
            dump = redis.dump(b"theirs")
        finally:
            redis.execute_command("SELECT", 0)
        request = script.merge_versions_request([(b"mine", dump, 4_000_000_000_000),
                                                 (b"absent", dump, 4_000_000_000_000)])
        (args,), _ = parse_whole(request.payload)
        self.assertEqual(redis.execute_command(*args), 2)
        redis.execute_command("SELECT", lww.VERSION_DB)
        try:
            self.assertEqual(redis.hgetall(b"mine"), {b"": b"0006", b"fa": b"0009", b"fb": b"0002", b"s@x": b"0007"})
            self.assertEqual(redis.hgetall(b"absent"), redis.hgetall(b"theirs"))
            self.assertEqual(redis.execute_command("PEXPIRETIME", b"mine"), 4_000_000_000_000)
            self.assertEqual(redis.execute_command("PEXPIRETIME", b"absent"), 4_000_000_000_000)
            self.assertFalse(redis.exists(b"dyno:merging"))
        finally:
            redis.execute_command("SELECT", 0)

    def test_a_redis_restarted_empty_gets_its_versions_back(self) -> None:
        fx = self.start_cluster("lww-warm", {"dc1": {"rack1": 1, "rack2": 1}, "dc2": {"rack1": 1}}, WARM_BLOCK,
                                {"datacenter_conflicts": "last_writer_wins"})
        r1, r2 = fx.rack_node("dc1", "rack1"), fx.rack_node("dc1", "rack2")
        pipe = fx.client(r1).pipeline(transaction=False)
        for i in range(300):
            key = "lwwwarm:%d" % i
            [lambda: pipe.set(key, "v"), lambda: pipe.hset(key, mapping={"a": "1", "b": "2"}),
             lambda: pipe.incrby(key, 3), lambda: pipe.delete(key)][i % 4]()
        pipe.execute()
        b1, b2 = fx.backend(r1), fx.backend(r2)
        # every key has versions, a deleted one its tombstone; but the INCRBYs: a
        # commuting write is noted only where it comes from another datacenter
        self.assertTrue(poll(lambda: len(all_versions(b1)) == 225, CONVERGE_TIMEOUT), len(all_versions(b1)))
        expected = all_versions(b1)
        self.assertTrue(poll(lambda: all_versions(b2) == expected, CONVERGE_TIMEOUT), "rack 2 noted them too")
        self.assertTrue(poll(lambda: fx.info(r2)["repair"]["data_set_marked"], 5),
                        "rack 2's node never marked its Redis as holding its data")
        r2.redis_process.stop()
        r2.redis_process.start()
        bound = 2 * 300 / NodeConfig.repair_rate + 10 * fx.layout.peer_down_after()

        def warmed() -> bool:
            info = fx.try_info(r2) or {}
            warmup = (info.get("repair") or {}).get("warmup")
            return bool(warmup and warmup["finished"]) and info.get("state") == "NORMAL"

        if not poll(warmed, bound):
            self.fail_with("rack 2's node did not warm up within %.0f s" % bound, [r2])
        got = all_versions(b2)
        wrong = sorted(name for name in expected if got.get(name) != expected[name])
        self.assertEqual(wrong, [], "version hashes rack 2 did not get back, e.g. %r" % (wrong[:1],))
        self.assertEqual(fx.info(r2)["repair"]["warmup"]["versions"], 225)


class RepairTests(FaultTestCase):
    """A key anti-entropy repair restores gets the winner's versions too (`dynomite.repair.run`)."""

    def test_a_repaired_key_gets_its_versions_back(self) -> None:
        fx = self.start_cluster("lww-repair", {"dc1": {"rack1": 1, "rack2": 1}, "dc2": {"rack1": 1}}, REPAIR_BLOCK,
                                {"datacenter_conflicts": "last_writer_wins"})
        r1, r2 = fx.rack_node("dc1", "rack1"), fx.rack_node("dc1", "rack2")
        b1, b2 = fx.backend(r1), fx.backend(r2)
        keys = [b"lwwrepair:%d" % i for i in range(60)]
        pipe = fx.client(r1).pipeline(transaction=False)
        for key in keys:
            pipe.set(key, b"v")
        pipe.execute()
        self.assertTrue(poll(lambda: all(ScriptTests.versions(b2, key) for key in keys), CONVERGE_TIMEOUT))
        lost = keys[::6]
        b2.delete(*lost)   # the damage: keys lost on rack 2 with their versions
        b2.execute_command("SELECT", lww.VERSION_DB)
        b2.delete(*[lww.version_key(key) for key in lost])
        b2.execute_command("SELECT", 0)
        out = admin_cli(fx, r1, "repair", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["keys_repaired"], len(lost), out.stdout)
        self.assertEqual([b2.get(key) for key in lost], [b"v"] * len(lost))
        wrong = [key for key in lost if ScriptTests.versions(b2, key) != ScriptTests.versions(b1, key)]
        self.assertEqual(wrong, [], "keys repaired on rack 2 without their versions")
