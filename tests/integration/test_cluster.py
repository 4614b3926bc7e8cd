"""
Cluster integration tests: where data lands and what whole-keyspace
commands see, on real redis-servers and real nodes started by the local
cluster launcher (``dynomite.launcher``) on their own 127.5.x.y addresses
with ephemeral ports, driven the way users drive them (redis-py 8 in its
default RESP3 and in RESP2, raw sockets).

What is checked is README's "How data is placed and replicated": every
rack holds a full copy, placed by token owner; writes reach other
datacenters; SCAN, KEYS, DBSIZE and RANDOMKEY see one full copy; FLUSHALL
reaches every node; writes acknowledged right after a cold start reach
every replica.  The other cluster modules (``test_cluster_quorum``,
``test_cluster_multikey``, ``test_cluster_failover``) share the same
clusters.

The oracle for placement is computed independently of the nodes, from the
cluster plan's tokens (``key_hash`` and ``Ring``), and replicas are read
and tampered with directly in their own redis-server, never through a
node. Two clusters are started at most (1 DC x 3 racks x 2 nodes, and
2 DCs x 3 racks x 1 node) and shared by the tests (see
``tests/integration/fixtures/cases.py``); each test starts from empty
backends.
"""

from __future__ import annotations

import collections
import time
from typing import Dict, List, Tuple

import redis
from twisted.trial import unittest

from tests.integration.fixtures.cases import COLD, CONVERGE_TIMEOUT, TWO_DCS, ClusterTestCase, sample
from tests.integration.fixtures.cluster import ClusterFixture
from tests.integration.fixtures.common import poll
from tests.integration.fixtures.resp import decode_reply


# ---------------------------------------------------------------------------
# placement and reads (1 DC x 3 racks x 2 nodes)


class PlacementTests(ClusterTestCase):
    """Every rack holds a full copy, each key on its token owner only."""

    def test_writes_land_on_the_token_owner_in_every_rack(self) -> None:
        data = self.write_strings(1000)
        layout = self.expected_layout(data)
        # The oracle spreads keys over every node; otherwise "one node per
        # rack" would be trivially true of a one-node-per-rack placement.
        for name, keys in layout.items():
            self.assertGreater(len(keys), 100, f"{name} owns only {len(keys)} of 1000 keys")

        match = self.prefix + "*"

        def actual() -> Dict[str, set]:
            return {n.name: self.fx.backend_keys(n, match) for n in self.fx.nodes}

        poll(lambda: actual() == layout, CONVERGE_TIMEOUT, interval=0.1)
        held = actual()
        problems = []
        for key in sorted(data):
            for (dc, rack), rack_nodes in self.fx.racks().items():
                holders = [n.name for n in rack_nodes if key in held[n.name]]
                owner = self.fx.owner(key, dc, rack).name
                if holders != [owner]:
                    problems.append(
                        f"{key!r} (hash {self.fx.key_hash(key)}) in {dc}/{rack}: held by"
                        f" {holders or 'no node'}, token owner is {owner}"
                    )
        strays = sorted(k for keys in held.values() for k in keys if k not in data)
        self.assertEqual(strays, [], "keys nobody wrote")
        self.assertEqual(
            problems[:15], [],
            f"{len(problems)} misplaced copies of 1000 keys x 3 racks\n{self.fx.describe()}",
        )
        wrong_values = []
        for n in self.fx.nodes:
            for key, value in self.backend_values(n, sorted(layout[n.name])).items():
                if value != data[key]:
                    wrong_values.append(f"{n.name}: {key!r}={value!r}, want {data[key]!r}")
        self.assertEqual(wrong_values[:10], [], f"{len(wrong_values)} replicas hold a wrong value")

    def test_reads_through_every_node_return_every_value(self) -> None:
        data = self.write_strings(1000)
        self.assertReplicated(data)
        keys = sorted(data)
        for node in self.fx.nodes:
            c = self.client(node)
            pipe = c.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            got = pipe.execute()
            wrong = [(k, v) for k, v in zip(keys, got) if v != data[k]]
            self.assertEqual(wrong[:5], [], f"{len(wrong)} of {len(keys)} GETs through {node.name} wrong")
            # and unpipelined, a sample
            for key in sample(keys, 50, self.rng):
                self.assertEqual(c.get(key), data[key], f"GET {key!r} through {node.name}")
            self.assertIsNone(c.get(self.prefix + "never-written"))


# ---------------------------------------------------------------------------
# two datacenters (2 DCs x 3 racks x 1 node)


class CrossDatacenterTests(ClusterTestCase):
    """A write through any node reaches every rack of every datacenter."""

    layout = TWO_DCS

    def check_replicates(self, source: str, target: str) -> None:
        writers = self.fx.dc_nodes(source)
        data = self.write_strings(300, writers)
        started = time.monotonic()
        # One node per rack: every backend of the other DC holds every key.
        wrong = self.wait_replicated(data, self.fx.dc_nodes(target))
        took = time.monotonic() - started
        if wrong:
            lines = [f"  {name}: {len(bad)} of {len(data)} missing or wrong, e.g. {bad[:3]}"
                     for name, bad in sorted(wrong.items())]
            self.fail(
                f"writes through {source} nodes did not reach every {target} backend within"
                f" {CONVERGE_TIMEOUT}s:\n" + "\n".join(lines) + "\n" + self.fx.describe()
            )
        self.assertLess(took, CONVERGE_TIMEOUT)
        self.assertReplicated(data, self.fx.dc_nodes(source), what=f"writes in {source}")
        for node in self.fx.dc_nodes(target):
            c = self.client(node)
            for key in sample(data, 30, self.rng):
                self.assertEqual(c.get(key), data[key], f"GET {key!r} through {node.name}")

    def test_writes_through_dc1_reach_every_dc2_backend(self) -> None:
        self.check_replicates("dc1", "dc2")

    def test_writes_through_dc2_reach_every_dc1_backend(self) -> None:
        self.check_replicates("dc2", "dc1")

    def test_each_safe_quorum_writes_are_synchronous_in_every_dc(self) -> None:
        c = self.client(self.fx.node("dc1-rack1-0"), "DC_EACH_SAFE_QUORUM")
        for i in range(20):
            key = f"{self.prefix}{i}"
            self.assertIs(c.set(key, b"each"), True)
            # acknowledged: a safe quorum (2 of 3 racks) holds it in each DC already
            for dc in self.fx.datacenters:
                holders = [n.name for n in self.fx.dc_nodes(dc) if self.fx.backend(n).get(key) == b"each"]
                self.assertGreaterEqual(len(holders), 2, f"{key!r} acknowledged but in {dc} only on {holders}")
        self.assertReplicated({f"{self.prefix}{i}".encode(): b"each" for i in range(20)})
        self.assertEqual(c.get(f"{self.prefix}3"), b"each")
        reader = self.client(self.fx.node("dc2-rack3-0"), "DC_EACH_SAFE_QUORUM")
        self.assertEqual(reader.get(f"{self.prefix}3"), b"each")
        # the datacenters disagree: an error naming the level, and the connection stays
        key = f"{self.prefix}4"
        for n in self.fx.dc_nodes("dc2"):
            self.fx.backend(n).set(key, b"other")
        with self.assertRaises(redis.ResponseError) as caught:
            reader.get(key)
        self.assertIn("DC_EACH_SAFE_QUORUM", str(caught.exception))
        self.assertEqual(reader.get(f"{self.prefix}3"), b"each")

    def test_deletes_and_overwrites_reach_the_other_dc(self) -> None:
        data = self.write_strings(50, self.fx.dc_nodes("dc1"))
        self.assertReplicated(data)
        keys = sorted(data)
        c = self.client(self.fx.node("dc2-rack2-0"))
        for key in keys[:25]:
            self.assertEqual(c.delete(key), 1)
        for key in keys[25:]:
            self.assertIs(c.set(key, b"new"), True)
        gone = set(keys[:25])
        dc1 = self.fx.dc_nodes("dc1")

        def done() -> bool:
            for n in dc1:
                values = self.backend_values(n, keys)
                if any(values[k] is not None for k in gone) or any(values[k] != b"new" for k in keys[25:]):
                    return False
            return True

        self.assertTrue(poll(done, CONVERGE_TIMEOUT, 0.1),
                        f"DEL/SET through dc2 not applied in every dc1 backend: "
                        f"{[(n.name, self.backend_values(n, keys[23:27])) for n in dc1]}")


# ---------------------------------------------------------------------------
# whole-keyspace commands


class KeyspaceTests(ClusterTestCase):
    """SCAN, KEYS, DBSIZE and RANDOMKEY see one full copy; FLUSHALL reaches every node."""

    def populate(self) -> Tuple[set, set, set]:
        strings = self.write_strings(300, prefix=self.prefix + "str:")
        hashes, sets = set(), set()
        c = self.client(self.fx.node("dc1-rack2-0"))
        for i in range(50):
            h, s = f"{self.prefix}hash:{i}".encode(), f"{self.prefix}set:{i}".encode()
            c.hset(h, mapping={"f": i})
            c.sadd(s, "m")
            hashes.add(h)
            sets.add(s)
        total = len(strings) + len(hashes) + len(sets)
        self.assertTrue(poll(lambda: self.fx.backend_total() == 3 * total, CONVERGE_TIMEOUT, 0.1),
                        f"backends hold {self.fx.backend_total()} keys, want {3 * total}")
        return set(strings), hashes, sets

    def test_scan_returns_every_key(self) -> None:
        strings, hashes, sets = self.populate()
        everything = strings | hashes | sets
        for node in self.fx.nodes:
            c = self.client(node)
            seen = list(c.scan_iter(count=10))
            self.assertEqual(set(seen) - everything, set(), f"SCAN via {node.name}: unknown keys")
            self.assertEqual(everything - set(seen), set(), f"SCAN via {node.name}: missing keys")
            self.assertEqual(set(c.scan_iter(match=self.prefix + "hash:*", count=10)), hashes,
                             f"SCAN MATCH via {node.name}")
            self.assertEqual(set(c.scan_iter(count=10, _type="set")), sets, f"SCAN TYPE set via {node.name}")
            self.assertEqual(set(c.scan_iter(match=self.prefix + "str:1*", count=10, _type="string")),
                             {k for k in strings if k.startswith((self.prefix + "str:1").encode())},
                             f"SCAN MATCH TYPE via {node.name}")
            self.assertEqual(set(c.scan_iter(match=self.prefix + "hash:*", _type="string", count=10)), set())

    def test_scan_cursor_walks_the_whole_rack_in_resp2(self) -> None:
        strings, hashes, sets = self.populate()
        conn = self.raw(self.fx.node("dc1-rack1-1"))
        cursor, seen, calls = b"0", [], 0
        while True:
            reply = decode_reply(conn.command("SCAN", cursor, "COUNT", "10"))
            self.assertIsInstance(reply, list, reply)
            cursor, batch = reply
            seen.extend(batch)
            calls += 1
            self.assertLess(calls, 2000, "SCAN never returned cursor 0")
            if cursor == b"0":
                break
        self.assertEqual(set(seen), strings | hashes | sets)
        self.assertGreater(calls, 10, "COUNT 10 over 400 keys takes many calls")
        self.assertErrorReply(conn.command("SCAN", "not-a-cursor"))

    def test_keys_dbsize_and_randomkey(self) -> None:
        strings, hashes, sets = self.populate()
        everything = strings | hashes | sets
        for node in self.fx.nodes:
            c = self.client(node)
            listed = c.keys("*")
            dupes = [k for k, n in collections.Counter(listed).items() if n > 1]
            self.assertEqual(dupes, [], f"KEYS * via {node.name} lists keys twice")
            self.assertEqual(set(listed), everything, f"KEYS * via {node.name}")
            self.assertEqual(set(c.keys(self.prefix + "set:*")), sets, f"KEYS pattern via {node.name}")
            self.assertEqual(c.dbsize(), len(everything), f"DBSIZE via {node.name}")
            for _ in range(10):
                key = c.randomkey()
                self.assertIn(key, everything, f"RANDOMKEY via {node.name}")
        # an empty cluster: nil, 0, nothing
        for n in self.fx.nodes:
            self.fx.backend(n).flushall()
        c = self.client(self.fx.nodes[3])
        self.assertIsNone(c.randomkey())
        self.assertEqual(c.dbsize(), 0)
        self.assertEqual(c.keys("*"), [])
        self.assertEqual(list(c.scan_iter(count=10)), [])

    def test_randomkey_finds_the_only_key_on_another_node(self) -> None:
        key = self.key_owned_by(self.fx.node("dc1-rack1-1"), self.prefix)
        self.assertIs(self.client(self.fx.node("dc1-rack1-1")).set(key, "1"), True)
        self.assertReplicated({key.encode(): b"1"})
        c = self.client(self.fx.node("dc1-rack1-0"))  # owns nothing in its rack
        for _ in range(10):
            self.assertEqual(c.randomkey(), key.encode())


class FlushAllTests(ClusterTestCase):
    """FLUSHALL through one node empties every backend of every datacenter."""

    layout = TWO_DCS

    def test_flushall_through_one_node_empties_every_backend(self) -> None:
        data = self.write_strings(100)
        self.assertReplicated(data)
        self.assertEqual(self.fx.backend_total(), 600)
        self.assertIs(self.client(self.fx.node("dc2-rack3-0")).flushall(), True)
        counts = {n.name: self.fx.backend(n).dbsize() for n in self.fx.nodes}
        self.assertEqual(counts, {n.name: 0 for n in self.fx.nodes})
        c = self.client(self.fx.node("dc1-rack1-0"))
        self.assertEqual(c.dbsize(), 0)
        self.assertIsNone(c.get(next(iter(data))))


class ColdStartTests(unittest.SynchronousTestCase):
    """What a user sees right after ``dynomite-cluster up`` says the cluster is up."""

    def test_writes_acknowledged_right_after_start_reach_every_replica(self) -> None:
        # A cluster of its own: the shared ones are warmed up before any test.
        fx = ClusterFixture(COLD)
        self.addCleanup(fx.stop)
        data: Dict[bytes, bytes] = {}
        for node in fx.nodes:
            c = fx.client(node, protocol=2)
            self.addCleanup(c.close)
            for i in range(10):
                key, value = f"cold:{node.name}:{i}".encode(), f"v{i}".encode()
                self.assertIs(c.set(key, value), True, f"SET through {node.name} right after start")
                data[key] = value

        def missing() -> List[str]:
            return [f"{k.decode()} on {o.name}" for k in sorted(data) for o in fx.owners(k)
                    if fx.backend(o).get(k) != data[k]]

        poll(lambda: not missing(), CONVERGE_TIMEOUT, 0.1)
        lost = missing()
        self.assertEqual(
            lost[:6], [],
            f"{len(lost)} of {3 * len(data)} replica copies of writes acknowledged (+OK, DC_ONE) right after"
            f" Cluster.start() returned never arrived (waited {CONVERGE_TIMEOUT}s): nodes answer PING and"
            f" acknowledge writes before their peer links are up, and the writes for the peers not yet"
            f" connected are dropped",
        )
