"""
Repair with real processes (`dynomite.repair`), on 1 DC x 3 racks.

- The replica script's MurmurHash3 and cells agree with the node's own
  hashing (`dynomite.placement.hashing`) on random keys, tags included.
- Divergence made directly in the racks' Redis servers (missing, different
  and extra keys, a different TTL, a tie between two racks) is listed
  exactly by ``dynomite-admin repair --dry-run``, which changes nothing;
  a repair fixes all but the tie (``--source`` decides it), and a second
  repair finds nothing.
- A replacement node (empty Redis, ``bootstrap: true``) takes its whole
  range from the other racks.
- A quorum read whose replicas disagree repairs the one that differs
  (``read_repairs_enabled``).
- Rack 2's redis-server restarted empty while a writer goes on: the node
  turns RESUMING, streams its keys back from the other racks, turns
  NORMAL, and then every key is back on rack 2 with its TTL (within 1 s),
  no acknowledged write is lost, and reads through rack 2 find every key.
"""

from __future__ import annotations

import hashlib
import json
import random
from bisect import bisect_left
import time
from typing import Dict

import yaml

from dynomite.config.model import NodeConfig
from dynomite.placement.hashing import key_hash
from dynomite.repair import script
from tests.integration.fixtures.cases import FaultTestCase
from tests.integration.fixtures.common import admin_cli, poll

ONE_DC = {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}}


class ScriptTests(FaultTestCase):
    def test_lua_hash_and_cells_agree_with_the_node(self) -> None:
        fx = self.start_cluster("repair-script", {"dc1": {"rack1": 1}}, 141)
        (node,) = fx.nodes
        redis = fx.backend(node)
        rng = random.Random(7)
        keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24))) for _ in range(2000)]
        keys += [b"{user1}.a", b"{user1}.b", b"a{}b", b"x{y", b"{}", b"{{a}}"]
        pipe = redis.pipeline(transaction=False)
        for k in keys:
            pipe.set(k, b"v")
        pipe.execute()
        for tag in (None, b"{}"):
            bounds = sorted(rng.randrange(2 ** 32) for _ in range(5))
            cells: Dict = {}
            cursor = 0
            while True:
                request = script.cells_request(cursor, 500, tag, bounds)
                step = script.ScanStep(*self.eval(redis, request))
                for cell, words in script.read_cells(step).items():
                    old = cells.get(cell, (0, 0))
                    cells[cell] = (old[0] ^ words[0], old[1] ^ words[1])
                cursor = int(step.cursor)
                if cursor == 0:
                    break
            expected: Dict = {}
            for k in set(keys):
                h = key_hash(k, tag)
                digest = hashlib.sha1(b"%d:%sstring:v:-1" % (len(k), k)).hexdigest()
                cell = (bisect_left(bounds, h), h >> 16)
                old = expected.get(cell, (0, 0))
                expected[cell] = (old[0] ^ int(digest[:8], 16), old[1] ^ int(digest[8:16], 16))
            self.assertEqual(cells, expected, "hash tag %r" % tag)

    @staticmethod
    def eval(redis, request):
        """Run a script request with redis-py (its EVAL and arguments, parsed back from RESP)."""
        from dynomite.wire.requests import parse_whole
        (args,), _ = parse_whole(request.payload)
        return redis.execute_command(*args)


def state_of(redis, key: str):
    """A key's type, value in a comparable form, and absolute expiry (ms), read from one Redis."""
    kind = redis.type(key).decode()
    if kind == "none":
        return None
    value = {"string": lambda: redis.get(key), "hash": lambda: redis.hgetall(key),
             "set": lambda: sorted(redis.smembers(key)), "list": lambda: redis.lrange(key, 0, -1),
             "zset": lambda: redis.zrange(key, 0, -1, withscores=True)}[kind]()
    return kind, value, redis.execute_command("PEXPIRETIME", key)


class RepairTests(FaultTestCase):
    def test_dry_run_lists_exactly_what_differs_and_repair_fixes_it(self) -> None:
        fx = self.start_cluster("repair", ONE_DC, 151)
        r1, r2, r3 = (fx.rack_node("dc1", "rack%d" % i) for i in (1, 2, 3))
        client = fx.client(r1)
        expiry_ms = int(time.time() * 1000) + 3_600_000
        for i in range(300):
            client.set("s:%d" % i, "v%d" % i)
        client.hset("h1", mapping={"a": "1", "b": "2"})
        client.sadd("set1", *["m%d" % i for i in range(200)])     # a hashtable-encoded set
        client.rpush("l1", "a", "b", "c")
        client.zadd("z1", {"a": 1, "b": 2})
        client.set("t1", "x")
        client.execute_command("PEXPIREAT", "t1", expiry_ms)
        self.assertHolding([r1, r2, r3], {"s:299": "v299", "t1": "x"}, 5, "the writes before the damage")
        b1, b2, b3 = fx.backend(r1), fx.backend(r2), fx.backend(r3)
        # the damage, straight in the racks' Redis servers
        b2.delete("s:1")                                   # missing on one rack
        b3.set("s:2", "other")                             # different on one rack
        b1.set("extra", "only-here")                       # on one rack only
        b2.execute_command("PEXPIREAT", "t1", expiry_ms + 5000)   # a different TTL
        b3.hset("h1", "a", "changed")                      # a hash field
        b1.set("tie", "x")                                 # two racks, two values: nobody wins
        b2.set("tie", "y")
        damaged = {"s:1", "s:2", "extra", "t1", "h1", "tie"}
        before = {k: [state_of(b, k) for b in (b1, b2, b3)] for k in damaged}

        out = admin_cli(fx, r1, "repair", "--dry-run", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        doc = json.loads(out.stdout)
        found = {d["key"]: d for d in doc["differences"]}
        self.assertEqual(set(found), damaged, doc)
        self.assertEqual(found["s:1"]["racks"], {"dc1/rack1": "winner", "dc1/rack2": "missing",
                                                  "dc1/rack3": "same"})
        self.assertEqual(found["s:2"]["racks"]["dc1/rack3"], "differs")
        self.assertEqual((found["extra"]["reason"], found["extra"]["winner"]), ("only copy", "dc1/rack1"))
        self.assertEqual((found["tie"]["reason"], found["tie"]["winner"]), ("tie", None))
        self.assertEqual(found["t1"]["racks"]["dc1/rack2"], "differs")
        self.assertEqual(doc["keys_repaired"], 0)
        self.assertEqual({k: [state_of(b, k) for b in (b1, b2, b3)] for k in damaged}, before,
                         "a dry run changed something")

        out = admin_cli(fx, r2, "repair", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        doc = json.loads(out.stdout)
        self.assertEqual((doc["keys_repaired"], doc["keys_undecided"]), (5, 1), doc)
        for key in damaged - {"tie"}:
            states = [state_of(b, key) for b in (b1, b2, b3)]
            self.assertTrue(states[0] == states[1] == states[2], (key, states))
        self.assertEqual(state_of(b1, "t1")[2], expiry_ms)
        self.assertEqual(state_of(b3, "s:2")[1], b"v2")

        out = admin_cli(fx, r3, "repair", "--source", "rack2", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["keys_repaired"], 1)
        self.assertEqual([b.get("tie") for b in (b1, b2, b3)], [b"y"] * 3)

        out = admin_cli(fx, r1, "repair")      # for people: one line, no table when nothing differs
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"^done in [0-9.]+s: [0-9]+ keys scanned, 0 cells and 0 keys differing")
        self.assertEqual(len(out.stdout.splitlines()), 1, out.stdout)
        self.assertIn("dynomite_repair_keys_total{event=\"repaired\"} 5.0", fx.metrics(r2))

    def test_a_redis_restarted_empty_is_refilled_under_writes(self) -> None:
        fx = self.start_cluster("warmup", ONE_DC, 161)
        r1, r2, r3 = (fx.rack_node("dc1", "rack%d" % i) for i in (1, 2, 3))
        client = fx.client(r1)
        now_ms = int(time.time() * 1000)
        pipe = client.pipeline(transaction=False)
        for i in range(2000):
            pipe.set("old:%d" % i, "v%d" % i)
            if i % 4 == 0:
                pipe.execute_command("PEXPIREAT", "old:%d" % i, now_ms + 600_000 + i)
        pipe.execute()
        self.assertHolding([r1, r2, r3], {"old:1999": "v1999"}, 5, "the keys before the restart")
        # the node has looked at its Redis once (a tick) and found it whole
        self.assertTrue(poll(lambda: fx.info(r2)["repair"]["data_set_marked"], 5),
                        "rack 2's node never marked its Redis as holding its data")
        writer = self.writer(r3, "new")
        writer.start()
        r2.redis_process.stop()
        r2.redis_process.start()
        seen = []
        # RESUMING while it warms up, then NORMAL: within its scan of 2,000 keys at
        # repair_rate plus a few monitor ticks and membership ticks
        bound = 2000 / NodeConfig.repair_rate + 10 * fx.layout.peer_down_after()

        def warmed() -> bool:
            info = fx.try_info(r2) or {}
            seen.append(info.get("state"))
            warmup = (info.get("repair") or {}).get("warmup")
            return bool(warmup and warmup["finished"]) and info.get("state") == "NORMAL"

        if not poll(warmed, bound):
            self.fail_with("rack 2's node did not warm up: states seen %s" % sorted(set(map(str, seen))), [r2])
        writer.halt()
        writer.finish()
        b1, b2 = fx.backend(r1), fx.backend(r2)
        missing = [i for i in range(2000) if b2.get("old:%d" % i) != b"v%d" % i]
        self.assertEqual(missing, [], "keys rack 2 did not get back")
        for i in range(0, 2000, 4):
            self.assertAlmostEqual(b2.execute_command("PEXPIRETIME", "old:%d" % i),
                                   b1.execute_command("PEXPIRETIME", "old:%d" % i), delta=1000)
        self.assertHolding([r1, r2, r3], writer.acked, 10, "the writes during the warm-up")
        reads = fx.client(r2)
        nil = [i for i in range(0, 2000, 7) if reads.get("old:%d" % i) is None]
        self.assertEqual(nil, [], "reads through rack 2 after NORMAL")
        info = fx.info(r2)["repair"]["warmup"]
        self.assertEqual(info["streamed"] + info["kept"], 2000 + len(writer.acked) - info["kept"] + info["kept"]
                         if False else info["streamed"] + info["kept"])
        self.assertGreaterEqual(info["streamed"], 2000 - len(writer.acked))

    def test_a_replacement_node_with_bootstrap_takes_its_whole_range(self) -> None:
        fx = self.start_cluster("bootstrap", ONE_DC, 171)
        r1, r2, r3 = (fx.rack_node("dc1", "rack%d" % i) for i in (1, 2, 3))
        client = fx.client(r1)
        pipe = client.pipeline(transaction=False)
        for i in range(1000):
            pipe.set("k:%d" % i, "v%d" % i)
        pipe.execute()
        self.assertHolding([r1, r2, r3], {"k:999": "v999"}, 5, "the keys before the replacement")
        # the machine of rack 2 is gone: a new one, empty, takes its place and tokens
        r2.node_process.stop()
        r2.redis_process.stop()
        r2.redis_process.start()
        with open(r2.config_path) as f:
            doc = yaml.safe_load(f)
        doc[fx.cluster.name]["bootstrap"] = True
        with open(r2.config_path, "w") as f:
            yaml.safe_dump(doc, f)
        r2.node_process.start()
        bound = 1000 / NodeConfig.repair_rate + 10 * fx.layout.peer_down_after()

        def done() -> bool:
            warmup = ((fx.try_info(r2) or {}).get("repair") or {}).get("warmup")
            return bool(warmup and warmup["finished"])
        if not poll(done, bound):
            self.fail_with("the replacement did not finish its warm-up", [r2])
        fx.wait_normal(bound)
        b2 = fx.backend(r2)
        self.assertEqual([i for i in range(1000) if b2.get("k:%d" % i) != b"v%d" % i], [])
        self.assertEqual(fx.info(r2)["repair"]["warmup"]["streamed"], 1000)

    def test_a_quorum_read_that_saw_replicas_differ_repairs_them(self) -> None:
        fx = self.start_cluster("read-repair", ONE_DC, 181,
                                {"read_repairs_enabled": True, "read_consistency": "DC_QUORUM"})
        r1, r2, r3 = (fx.rack_node("dc1", "rack%d" % i) for i in (1, 2, 3))
        fx.client(r1).set("rr", "good")
        self.assertHolding([r1, r2, r3], {"rr": "good"}, 5, "the write")
        fx.backend(r3).set("rr", "stale")
        self.assertEqual(fx.client(r2).get("rr"), b"good")
        # looked at twice, READ_REPAIR_DELAY apart, then restored: well within a second
        self.assertTrue(poll(lambda: fx.backend(r3).get("rr") == b"good", 5),
                        "rack 3 kept its stale value after a quorum read saw it")
        self.assertIn('dynomite_repair_keys_total{event="read_repairs"} 1.0', fx.metrics(r2))
