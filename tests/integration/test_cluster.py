"""
Cluster integration tests: real redis-servers and real nodes, started by
the local cluster launcher (``dynomite.cluster``) on their own 127.5.x.y
addresses with ephemeral ports, driven the way users drive them (redis-py
8 in its default RESP3 and in RESP2, raw sockets, SIGKILL).

What is checked is README's "How data is placed and replicated" and "What
clients see": every rack holds a full copy, placed by token owner; writes
reach other datacenters; quorum levels reconcile replicas as documented;
split multi-key commands answer as a plain redis-server does; hash tags
keep keys together; whole-keyspace commands see one full copy; a DC_ONE
read survives its owner's death.

The oracle for placement is computed independently of the nodes, from the
cluster plan's tokens (``key_hash`` and ``Ring``), and replicas are read
and tampered with directly in their own redis-server, never through a
node. Two clusters are started at most (1 DC x 3 racks x 2 nodes, and
2 DCs x 3 racks x 1 node) and shared by the tests (see
``tests/cluster_fixtures.py``); each test starts from empty backends.
"""

from __future__ import annotations

import collections
import random
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import redis
from twisted.trial import unittest

from dynomite.launcher.cluster import ClusterNode
from tests.integration import cluster_fixtures as fixtures
from tests.integration.cluster_fixtures import RACKS, TWO_DCS, poll
from tests.integration.harness import RawConnection, decode_reply

#: How long replication (inside a DC, or across DCs) may take to show.
CONVERGE_TIMEOUT = 5.0


class _ClusterTestCase(unittest.SynchronousTestCase):
    """``self.fx``: the shared cluster of ``topology``, all processes up, every backend empty."""

    topology = RACKS

    def setUp(self) -> None:
        self.fx = fixtures.cluster(self.topology)
        self.fx.reset()
        name = self.id().rsplit(".", 1)[-1]
        seed = sum(map(ord, name))
        self.rng = random.Random(seed)
        self.prefix = name.replace("test_", "")[:24] + ":"

    # -- clients ------------------------------------------------------------

    def client(self, node: ClusterNode, consistency: Optional[str] = None, **kw: Any) -> redis.Redis:
        """redis-py client of ``node``; with ``consistency``, one connection switched to that level."""
        if consistency is not None:
            kw["single_connection_client"] = True
        c = self.fx.client(node, **kw)
        self.addCleanup(c.close)
        if consistency is not None:
            reply = c.execute_command("DYNO_CONFIG:CONN_CONSISTENCY", consistency)
            self.assertEqual(reply, b"OK", f"DYNO_CONFIG:CONN_CONSISTENCY {consistency} via {node.name}")
        return c

    def raw(self, node: ClusterNode, consistency: Optional[str] = None, resp: int = 2) -> RawConnection:
        """A raw socket to ``node``; RESP3 after HELLO 3 if asked; at ``consistency`` if given."""
        conn = self.fx.raw(node)
        self.addCleanup(conn.close)
        if resp == 3:
            hello = conn.command("HELLO", "3")
            self.assertTrue(hello.startswith(b"%"), f"HELLO 3 via {node.name} answered {hello[:80]!r}")
        if consistency is not None:
            self.assertEqual(
                conn.command("DYNO_CONFIG:CONN_CONSISTENCY", consistency), b"+OK\r\n",
                f"DYNO_CONFIG:CONN_CONSISTENCY {consistency} via {node.name}",
            )
        return conn

    def backend_raw(self, node: ClusterNode) -> RawConnection:
        conn = self.fx.backend_raw(node)
        self.addCleanup(conn.close)
        return conn

    # -- data ---------------------------------------------------------------

    def write_strings(self, count: int, coordinators: Optional[Sequence[ClusterNode]] = None,
                      prefix: Optional[str] = None) -> Dict[bytes, bytes]:
        """SET ``count`` unique keys, each through a randomly chosen node; key -> value."""
        coordinators = list(coordinators or self.fx.nodes)
        clients = {n.name: self.client(n) for n in coordinators}
        data: Dict[bytes, bytes] = {}
        prefix = self.prefix if prefix is None else prefix
        for i in range(count):
            node = self.rng.choice(coordinators)
            key = f"{prefix}{i}".encode()
            value = f"value-{i}-via-{node.name}".encode()
            reply = clients[node.name].set(key, value)
            self.assertIs(reply, True, f"SET {key!r} through {node.name} answered {reply!r}")
            data[key] = value
        return data

    def expected_layout(self, keys: Iterable[bytes], dc: Optional[str] = None) -> Dict[str, set]:
        """node name -> the keys it must hold (only nodes of ``dc`` if given)."""
        layout: Dict[str, set] = {n.name: set() for n in self.fx.nodes if dc is None or n.dc == dc}
        for key in keys:
            for owner in self.fx.owners(key, dc):
                layout[owner.name].add(key)
        return layout

    def backend_values(self, node: ClusterNode, keys: Sequence[bytes]) -> Dict[bytes, Optional[bytes]]:
        out: Dict[bytes, Optional[bytes]] = {}
        for batch in fixtures.chunks(sorted(keys), 500):
            out.update(zip(batch, self.fx.backend(node).mget(batch)))
        return out

    def wait_replicated(self, data: Dict[bytes, bytes], nodes: Optional[Sequence[ClusterNode]] = None,
                        timeout: float = CONVERGE_TIMEOUT) -> Dict[str, List[str]]:
        """
        Poll until every key of ``data`` has its value in the backend of its
        owner among ``nodes`` (default: every node); return what is still
        wrong per node (empty when all arrived).
        """
        nodes = list(nodes or self.fx.nodes)
        names = {n.name for n in nodes}
        wanted: Dict[str, List[bytes]] = {n.name: [] for n in nodes}
        for key in data:
            for owner in self.fx.owners(key):
                if owner.name in names:
                    wanted[owner.name].append(key)

        def problems() -> Dict[str, List[str]]:
            out: Dict[str, List[str]] = {}
            for n in nodes:
                got = self.backend_values(n, wanted[n.name])
                bad = [f"{k!r}={got[k]!r} (want {data[k]!r})" for k in wanted[n.name] if got[k] != data[k]]
                if bad:
                    out[n.name] = bad
            return out

        poll(lambda: not problems(), timeout, interval=0.1)
        return problems()

    def assertReplicated(self, data: Dict[bytes, bytes], nodes: Optional[Sequence[ClusterNode]] = None,
                         timeout: float = CONVERGE_TIMEOUT, what: str = "writes") -> None:
        wrong = self.wait_replicated(data, nodes, timeout)
        if wrong:
            lines = [f"  {name}: {len(bad)} wrong, e.g. {bad[:3]}" for name, bad in sorted(wrong.items())]
            self.fail(f"{what} not on their owners' backends after {timeout}s:\n" + "\n".join(lines))

    def key_owned_by(self, node: ClusterNode, prefix: str) -> str:
        """A key ``node`` owns in its rack."""
        for i in range(100_000):
            key = f"{prefix}{i}"
            if self.fx.owner(key, node.dc, node.rack) is node:
                return key
        raise AssertionError(f"no key for {node.name}")

    def set_on_replicas(self, key: str, values: Dict[str, Any]) -> None:
        """Write straight into owners' backends: node name -> value."""
        for name, value in values.items():
            self.assertIs(self.fx.backend(self.fx.node(name)).set(key, value), True)

    def assertErrorReply(self, raw: bytes, *fragments: str) -> None:
        self.assertTrue(raw[:1] in (b"-", b"!"), f"expected an error reply, got {raw[:200]!r}")
        for fragment in fragments:
            self.assertIn(fragment.encode(), raw, f"{fragment!r} not in {raw!r}")


# ---------------------------------------------------------------------------
# 1, 2: placement and reads (1 DC x 3 racks x 2 nodes)


class PlacementTests(_ClusterTestCase):
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
            for key in fixtures.sample(keys, 50, self.rng):
                self.assertEqual(c.get(key), data[key], f"GET {key!r} through {node.name}")
            self.assertIsNone(c.get(self.prefix + "never-written"))


# ---------------------------------------------------------------------------
# 3: two datacenters (2 DCs x 3 racks x 1 node)


class CrossDatacenterTests(_ClusterTestCase):
    """A write through any node reaches every rack of every datacenter."""

    topology = TWO_DCS

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
            for key in fixtures.sample(data, 30, self.rng):
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
# 4: consistency levels (1 DC x 3 racks x 2 nodes)


class QuorumTests(_ClusterTestCase):
    """Per-connection levels and how replica replies are reconciled."""

    def replicated_key(self, owner: ClusterNode, value: bytes) -> str:
        """A key ``owner`` owns in its rack, SET through the cluster and on all three replicas."""
        key = self.key_owned_by(owner, self.prefix + owner.name + ":")
        self.assertIs(self.client(self.fx.nodes[-1]).set(key, value), True)
        self.assertReplicated({key.encode(): value})
        return key

    def test_dc_quorum_read_returns_the_majority_value(self) -> None:
        coordinator = self.fx.node("dc1-rack1-0")
        # One key owned by the coordinator itself (its own Redis), one by its
        # rack neighbour (reached over a peer link).
        for own_owner in self.fx.racks()["dc1", "rack1"]:
            key = self.replicated_key(own_owner, b"majority")
            self.set_on_replicas(key, {own_owner.name: b"stale"})
            # DC_ONE reads the coordinator's rack: it sees the altered replica,
            # so DC_QUORUM below has something to outvote.
            self.assertEqual(self.client(coordinator).get(key), b"stale",
                             f"DC_ONE GET {key!r} via {coordinator.name} should read {own_owner.name}")
            quorum = self.client(coordinator, "DC_QUORUM")
            self.assertEqual(quorum.get(key), b"majority", f"DC_QUORUM GET {key!r} via {coordinator.name}")
            for node in self.fx.nodes:
                self.assertEqual(self.client(node, "DC_QUORUM").get(key), b"majority",
                                 f"DC_QUORUM GET {key!r} via {node.name}")
            # a replica that lost the key is outvoted too
            self.assertEqual(self.fx.backend(own_owner).delete(key), 1)
            self.assertIsNone(self.client(coordinator).get(key))
            self.assertEqual(quorum.get(key), b"majority", f"DC_QUORUM GET {key!r}, {own_owner.name} lost it")

    def test_dc_safe_quorum_without_agreement_is_an_error_and_the_connection_stays(self) -> None:
        owner = self.fx.node("dc1-rack1-1")
        key = self.key_owned_by(owner, self.prefix)
        self.set_on_replicas(key, {o.name: b"value-in-" + o.rack.encode() for o in self.fx.owners(key)})
        good = self.replicated_key(owner, b"agreed")
        for node in (self.fx.node("dc1-rack1-0"), self.fx.node("dc1-rack3-1")):
            conn = self.raw(node, "DC_SAFE_QUORUM")
            reply = conn.command("GET", key)
            self.assertErrorReply(reply, "DC_SAFE_QUORUM")
            self.assertTrue(reply.startswith(b"-ERR"), reply)
            # the connection stays open and usable, at the same level
            self.assertEqual(conn.command("PING"), b"+PONG\r\n")
            self.assertEqual(conn.command("GET", good), b"$6\r\nagreed\r\n")
            self.assertErrorReply(conn.command("GET", key), "DC_SAFE_QUORUM")
            self.assertEqual(conn.command("ECHO", "still here"), b"$10\r\nstill here\r\n")
        # redis-py sees an ordinary ResponseError and keeps its connection
        c = self.client(self.fx.node("dc1-rack2-0"), "DC_SAFE_QUORUM")
        with self.assertRaises(redis.ResponseError) as caught:
            c.get(key)
        self.assertIn("DC_SAFE_QUORUM", str(caught.exception))
        self.assertEqual(c.get(good), b"agreed")

    def test_dc_safe_quorum_with_agreeing_replicas_returns_the_value(self) -> None:
        writer = self.client(self.fx.node("dc1-rack2-1"), "DC_SAFE_QUORUM")
        self.assertIs(writer.set(self.prefix + "k", b"safe"), True)
        self.assertReplicated({(self.prefix + "k").encode(): b"safe"})
        for node in self.fx.nodes:
            self.assertEqual(self.client(node, "DC_SAFE_QUORUM").get(self.prefix + "k"), b"safe",
                             f"DC_SAFE_QUORUM GET via {node.name}")
        # two of three agreeing is a quorum too
        key = self.replicated_key(self.fx.node("dc1-rack1-0"), b"two-agree")
        self.set_on_replicas(key, {self.fx.owner(key, "dc1", "rack3").name: b"odd-one"})
        for node in self.fx.nodes:
            self.assertEqual(self.client(node, "DC_SAFE_QUORUM").get(key), b"two-agree",
                             f"DC_SAFE_QUORUM GET {key!r} via {node.name} with rack3 disagreeing")
        # a missing key is a nil everyone agrees on
        self.assertIsNone(self.client(self.fx.nodes[0], "DC_SAFE_QUORUM").get(self.prefix + "absent"))

    def test_smembers_agrees_under_dc_safe_quorum_whatever_the_member_order(self) -> None:
        key = self.prefix + "set"
        members = [f"member-{i:02d}-{'x' * (i % 7)}" for i in range(64)]
        for owner in self.fx.owners(key):
            order = members[:]
            self.rng.shuffle(order)
            pipe = self.fx.backend(owner).pipeline(transaction=False)
            for m in order:
                pipe.sadd(key, m)
            self.assertEqual(pipe.execute(), [1] * len(members))

        def replica_raws() -> List[bytes]:
            return [self.backend_raw(o).command("SMEMBERS", key) for o in self.fx.owners(key)]

        self.assertGreater(
            len(set(replica_raws())), 1,
            "precondition: the three replicas list the set in the same order, so this test could not fail",
        )
        expected = {m.encode() for m in members}
        for node in self.fx.nodes:
            raws = replica_raws()
            conn = self.raw(node, "DC_SAFE_QUORUM")
            reply = conn.command("SMEMBERS", key)
            self.assertFalse(reply.startswith(b"-"), f"DC_SAFE_QUORUM SMEMBERS via {node.name}: {reply!r}")
            got = decode_reply(reply)
            self.assertEqual(sorted(got), sorted(expected), f"SMEMBERS via {node.name}")
            self.assertIn(reply, raws, "the reply is one replica's own bytes")
            self.assertEqual(self.client(node, "DC_SAFE_QUORUM").smembers(key), expected)

    def test_consistency_command_rejects_unknown_levels_and_keeps_the_connection(self) -> None:
        conn = self.raw(self.fx.nodes[0])
        self.assertErrorReply(conn.command("DYNO_CONFIG:CONN_CONSISTENCY", "NOT_A_LEVEL"))
        self.assertEqual(conn.command("PING"), b"+PONG\r\n")
        self.assertEqual(conn.command("DYNO_CONFIG:CONN_CONSISTENCY", "DC_QUORUM"), b"+OK\r\n")


# ---------------------------------------------------------------------------
# 5: split multi-key commands vs a plain redis-server


class MultiKeyDifferentialTests(_ClusterTestCase):
    """MGET/MSET/DEL/EXISTS/UNLINK/TOUCH over keys of different owners answer like Redis."""

    def setUp(self) -> None:
        super().setUp()
        self.plain = fixtures.plain_redis()
        self.plain.reset()
        groups = self.fx.keys_by_replica_set(self.prefix + "k", per_set=4, sets=2)
        # interleave the two owners' keys: k[0] on one replica set, k[1] on the other, ...
        self.keys = [k for pair in zip(*groups) for k in pair]
        self.assertEqual(len({self.fx.replica_set(k) for k in self.keys}), 2)
        self.missing = [self.prefix + "missing-a", self.prefix + "missing-b"]

    def compare(self, commands: Sequence[Sequence[Any]], coordinator: ClusterNode,
                consistency: Optional[str] = None, resp: int = 2) -> None:
        node_conn = self.raw(coordinator, consistency, resp)
        plain_conn = self.plain.raw()
        self.addCleanup(plain_conn.close)
        if resp == 3:
            plain_conn.command("HELLO", "3")
        mismatches = []
        for command in commands:
            want = plain_conn.command(*command)
            got = node_conn.command(*command)
            if got != want:
                mismatches.append(f"  {' '.join(map(str, command))}\n    redis: {want!r}\n    node:  {got!r}")
        self.assertEqual(mismatches, [], f"via {coordinator.name} at {consistency or 'DC_ONE'}, RESP{resp}:\n"
                         + "\n".join(mismatches))

    def scripted(self) -> List[Tuple[Any, ...]]:
        k, m = self.keys, self.missing
        lst = self.prefix + "list"
        return [
            ("MSET", *[x for i, key in enumerate(k) for x in (key, f"v{i}")]),
            ("MGET", *k),
            ("MSET", k[0], "first", k[5], "x", k[0], "second"),  # a duplicate key: the last value wins
            ("MGET", k[0], k[5], m[0], k[0], k[1], m[1], k[7], m[0]),
            ("EXISTS", k[0], k[0], m[0], k[1], k[5], m[1], k[5]),
            ("TOUCH", k[1], k[1], m[0], k[6], k[2]),
            ("RPUSH", lst, "a"),
            ("MGET", k[1], lst, k[2]),  # a list is a nil in MGET
            ("EXISTS", lst, k[3], lst),
            ("DEL", k[0], k[0], m[0], k[1], k[4]),
            ("MGET", k[0], k[1], k[4], k[5]),
            ("UNLINK", k[5], k[5], k[6], m[1]),
            ("DEL", m[0], m[1]),
            ("UNLINK", m[1]),
            ("EXISTS", *k),
            ("TOUCH", m[0], m[1]),
            ("MGET", *k, *m),
            ("MSET", k[7], "", k[6], "7" * 300),
            ("MGET", k[6], k[7]),
            ("DEL", *k, lst, *m),
            ("MGET", *k),
            ("EXISTS", *k),
        ]

    def assertFinalStateMatchesPlain(self) -> None:
        """Each key's owners hold what the plain redis-server holds; other nodes hold nothing."""
        everything = self.keys + self.missing + [self.prefix + "list"]
        with self.plain.raw() as conn:
            want = {k.encode(): decode_reply(conn.command("DUMP", k)) is not None for k in everything}
            values = {k.encode(): decode_reply(conn.command("GET", k)) if want[k.encode()] else None
                      for k in self.keys}

        def state() -> List[str]:
            bad = []
            for key in everything:
                owners = {o.name for o in self.fx.owners(key)}
                for n in self.fx.nodes:
                    has = self.fx.backend(n).exists(key) == 1
                    should = want[key.encode()] and n.name in owners
                    if has != should:
                        bad.append(f"{n.name} {'has' if has else 'lacks'} {key!r}")
                    elif has and key in self.keys and self.fx.backend(n).get(key) != values[key.encode()]:
                        bad.append(f"{n.name}: {key!r} differs")
            return bad

        poll(lambda: not state(), CONVERGE_TIMEOUT, 0.1)
        self.assertEqual(state(), [])

    def test_scripted_sequence_dc_one_resp2(self) -> None:
        self.compare(self.scripted(), self.fx.node("dc1-rack2-0"))
        self.assertFinalStateMatchesPlain()

    def test_scripted_sequence_dc_safe_quorum_resp3(self) -> None:
        self.compare(self.scripted(), self.fx.node("dc1-rack3-1"), "DC_SAFE_QUORUM", resp=3)
        self.assertFinalStateMatchesPlain()

    def test_state_left_by_the_sequence(self) -> None:
        """Stop half-way: the owners of every key hold exactly what Redis holds."""
        self.compare(self.scripted()[:12], self.fx.node("dc1-rack1-1"))
        self.assertFinalStateMatchesPlain()

    def test_random_sequence_matches_redis(self) -> None:
        keys = self.keys + self.missing
        commands: List[Tuple[Any, ...]] = []
        for i in range(300):
            name = self.rng.choice(["MGET", "MSET", "DEL", "EXISTS", "UNLINK", "TOUCH", "MGET", "MSET"])
            chosen = [self.rng.choice(keys) for _ in range(self.rng.randint(1, 7))]
            if name == "MSET":
                commands.append((name, *[x for key in chosen for x in (key, f"r{i}-{key}")]))
            else:
                commands.append((name, *chosen))
        coordinator = self.rng.choice(self.fx.nodes)
        self.compare(commands, coordinator)
        self.assertFinalStateMatchesPlain()

    def test_large_commands_match_redis(self) -> None:
        keys = [f"{self.prefix}big{i}" for i in range(1000)]
        self.assertEqual(len({self.fx.replica_set(k) for k in keys}), 2)
        commands = [
            ("MSET", *[x for i, k in enumerate(keys[::2]) for x in (k, f"{i}" * (i % 50))]),
            ("MGET", *keys, *keys[:10]),
            ("EXISTS", *keys),
            ("TOUCH", *reversed(keys)),
            ("UNLINK", *keys[:300]),
            ("DEL", *keys[250:600]),
            ("MGET", *reversed(keys)),
        ]
        self.compare(commands, self.fx.node("dc1-rack2-1"))

    def test_wrong_arity_errors_match_redis(self) -> None:
        k = self.keys
        commands = [("MGET",), ("MSET",), ("MSET", k[0]), ("MSET", k[0], "v", k[1]), ("DEL",),
                    ("EXISTS",), ("UNLINK",), ("TOUCH",), ("PING",)]
        self.compare(commands, self.fx.node("dc1-rack1-0"))


# ---------------------------------------------------------------------------
# 6: hash tags (hash_tag: "{}")


class HashTagTests(_ClusterTestCase):
    """Keys with the same tag share a node; multi-key commands need one owner."""

    def tags_on_both_owners(self) -> List[str]:
        """Two tags with different owners (one per node of each rack)."""
        found: Dict[Tuple[str, ...], str] = {}
        for i in range(10_000):
            found.setdefault(self.fx.replica_set(f"user{i}"), f"user{i}")
            if len(found) == 2:
                return list(found.values())
        raise AssertionError("no tags on two owners")

    def untagged_pair(self, same_owner: bool) -> Tuple[str, str]:
        a = self.prefix + "plain-a"
        for i in range(10_000):
            b = f"{self.prefix}plain-b{i}"
            if (self.fx.replica_set(a) == self.fx.replica_set(b)) == same_owner:
                return a, b
        raise AssertionError("no pair")

    def test_tagged_keys_share_a_backend_in_every_rack(self) -> None:
        tags = [f"user{i}" for i in range(1, 17)]
        owner_sets = {self.fx.replica_set(t) for t in tags}
        self.assertEqual(len(owner_sets), 2, "precondition: the tags cover both nodes of each rack")
        writer = self.client(self.fx.node("dc1-rack2-1"))
        data = {}
        for tag in tags:
            for suffix in ("a", "b", "c"):
                key = f"{{{tag}}}.{suffix}".encode()
                self.assertIs(writer.set(key, tag), True)
                data[key] = tag.encode()
        self.assertReplicated(data)
        scattered = 0
        for tag in tags:
            keys = [f"{{{tag}}}.{s}" for s in ("a", "b", "c")]
            for (dc, rack), rack_nodes in self.fx.racks().items():
                holders = {n.name for n in rack_nodes for k in keys if self.fx.backend(n).exists(k)}
                self.assertEqual(holders, {self.fx.owner(tag, dc, rack).name},
                                 f"keys of tag {tag!r} in {dc}/{rack}")
            # without the tag the keys would not all be on one node
            scattered += len({self.fx.owner(k, "dc1", "rack1", tagged=False).name for k in keys}) > 1
        self.assertGreater(scattered, 0, "precondition: untagged, some of these keys would be split")

    def test_multi_key_commands_on_tagged_keys_work(self) -> None:
        for tag in self.tags_on_both_owners():
            t = "{%s}" % tag
            coordinator = self.fx.node("dc1-rack3-0")
            conn = self.raw(coordinator)
            self.assertEqual(conn.command("SET", t + ".a", "hello"), b"+OK\r\n")
            self.assertEqual(conn.command("RENAME", t + ".a", t + ".c"), b"+OK\r\n")
            self.assertEqual(conn.command("GET", t + ".c"), b"$5\r\nhello\r\n")
            self.assertEqual(conn.command("EXISTS", t + ".a"), b":0\r\n")
            self.assertEqual(conn.command("SADD", t + ".s1", "x", "y", "z"), b":3\r\n")
            self.assertEqual(conn.command("SADD", t + ".s2", "y"), b":1\r\n")
            self.assertEqual(conn.command("SMOVE", t + ".s1", t + ".s2", "z"), b":1\r\n")
            self.assertEqual(conn.command("SINTERSTORE", t + ".dst", t + ".s1", t + ".s2"), b":1\r\n")
            self.assertEqual(conn.command("SMEMBERS", t + ".dst"), b"*1\r\n$1\r\ny\r\n")
            self.assertEqual(conn.command("MSETNX", t + ".n1", "1", t + ".n2", "2"), b":1\r\n")
            # every rack's owner of the tag ran them
            for owner in self.fx.owners(tag):
                b = self.fx.backend(owner)

                def applied() -> bool:
                    return (b.get(t + ".c") == b"hello" and not b.exists(t + ".a")
                            and b.smembers(t + ".s2") == {b"y", b"z"} and b.smembers(t + ".dst") == {b"y"}
                            and b.get(t + ".n2") == b"2")

                self.assertTrue(poll(applied, CONVERGE_TIMEOUT), f"tag {tag!r} on {owner.name}: {b.keys()}")

    def test_multi_key_commands_across_owners_answer_crossslot(self) -> None:
        a, b = self.untagged_pair(same_owner=False)
        conn = self.raw(self.fx.node("dc1-rack1-0"))
        self.assertEqual(conn.command("SET", a, "1"), b"+OK\r\n")
        self.assertEqual(conn.command("SADD", a + "-set", "m"), b":1\r\n")
        c, d = a + "-set", None
        for i in range(10_000):  # a set key on the other owner
            d = f"{self.prefix}other-set{i}"
            if self.fx.replica_set(d) != self.fx.replica_set(c):
                break
        attempts = [
            ("RENAME", a, b),
            ("SMOVE", c, d, "m"),
            ("SINTERSTORE", d, c, c),
            ("SINTERSTORE", c, c, d),
            ("MSETNX", a, "1", b, "2"),
        ]
        for command in attempts:
            reply = conn.command(*command)
            self.assertTrue(reply.startswith(b"-CROSSSLOT"), f"{command}: {reply!r}")
        self.assertEqual(conn.command("PING"), b"+PONG\r\n")
        self.assertEqual(conn.command("GET", a), b"$1\r\n1\r\n", "nothing was renamed")
        self.assertEqual(conn.command("EXISTS", b), b":0\r\n")
        # keys that happen to share their owners need no tag
        e, f = self.untagged_pair(same_owner=True)
        self.assertEqual(conn.command("SET", e, "v"), b"+OK\r\n")
        self.assertEqual(conn.command("RENAME", e, f), b"+OK\r\n")
        self.assertEqual(conn.command("GET", f), b"$1\r\nv\r\n")


# ---------------------------------------------------------------------------
# 7: whole-keyspace commands


class KeyspaceTests(_ClusterTestCase):
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


class FlushAllTests(_ClusterTestCase):
    """FLUSHALL through one node empties every backend of every datacenter."""

    topology = TWO_DCS

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


# ---------------------------------------------------------------------------
# 8: failover


class FailoverTests(_ClusterTestCase):
    """A read survives the death of its own rack's owner."""

    def test_reads_survive_a_killed_owner(self) -> None:
        victim = self.fx.node("dc1-rack1-1")
        neighbour = self.fx.node("dc1-rack1-0")
        keys = [self.key_owned_by(victim, f"{self.prefix}{i}:") for i in range(5)]
        data = {k.encode(): f"v-{k}".encode() for k in keys}
        writer = self.client(self.fx.node("dc1-rack2-0"))
        for k, v in data.items():
            self.assertIs(writer.set(k, v), True)
        self.assertReplicated(data)
        # Mark where a failed-over read comes from: the other racks' copies.
        for k in keys[:1]:
            for owner in self.fx.owners(k):
                if owner.rack != "rack1":
                    self.set_on_replicas(k, {owner.name: b"from-" + owner.rack.encode()})

        victim.node_process.kill()
        self.addCleanup(self.fx.ensure_running)  # even if an assertion below fails
        self.assertFalse(victim.node_process.running())

        one = self.client(neighbour)
        started = time.monotonic()
        self.assertIn(one.get(keys[0]), (b"from-rack2", b"from-rack3"),
                      f"DC_ONE GET through {neighbour.name} with {victim.name} (rack1 owner) killed")
        for k in keys[1:]:
            self.assertEqual(one.get(k), data[k.encode()], f"DC_ONE GET {k!r} through {neighbour.name}")
        self.assertLess(time.monotonic() - started, 3.0, "failover reads took the slow path")

        for node in (neighbour, self.fx.node("dc1-rack2-1"), self.fx.node("dc1-rack3-0")):
            quorum = self.client(node, "DC_QUORUM")
            for k in keys[1:]:
                self.assertEqual(quorum.get(k), data[k.encode()], f"DC_QUORUM GET {k!r} through {node.name}")
        # writes at DC_ONE are still acknowledged by the racks that are up
        self.assertIs(one.set(keys[1], b"while-down"), True)
        self.assertEqual(self.client(neighbour, "DC_QUORUM").get(keys[1]), b"while-down")

        victim.node_process.start()
        self.fx.wait_connected()
        # back in service: it answers, and reads of its keys in rack1 work again
        back = self.client(victim)
        self.assertEqual(back.get(keys[2]), data[keys[2].encode()])
        self.assertTrue(self.fx.healthy())

    def test_reads_survive_a_dead_redis_behind_the_owner(self) -> None:
        owner = self.fx.node("dc1-rack1-1")
        key = self.key_owned_by(owner, self.prefix)
        self.assertIs(self.client(owner).set(key, "x"), True)
        self.assertReplicated({key.encode(): b"x"})
        for o in self.fx.owners(key):
            if o.rack != "rack1":
                self.set_on_replicas(key, {o.name: b"from-" + o.rack.encode()})
        owner.redis_process.kill()
        self.addCleanup(self.fx.restart, owner)  # whatever happens below, the next test gets a fresh pair
        # through the owner itself (its own Redis is gone) and through its rack neighbour
        for node in (owner, self.fx.node("dc1-rack1-0")):
            self.assertIn(self.client(node).get(key), (b"from-rack2", b"from-rack3"),
                          f"DC_ONE GET through {node.name} with {owner.name}'s redis-server killed")

        # The same Redis comes back: the node reconnects by itself, and from
        # then on every write through any node reaches it again.
        owner.redis_process.start()
        clients = {n.name: self.client(n, protocol=2) for n in self.fx.nodes}
        counter = iter(range(1_000_000))

        def lands(via: ClusterNode) -> bool:
            value = b"%d" % next(counter)
            clients[via.name].set(key, value)
            return poll(lambda: self.fx.backend(owner).get(key) == value, 1.0, 0.02)

        self.assertTrue(poll(lambda: all(lands(n) for n in self.fx.nodes), 5.0, 0.1),
                        f"writes do not reach {owner.name} 5s after its redis-server came back")
        lost = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            lost.extend(n.name for n in self.fx.nodes if not lands(n))
        self.assertEqual(lost, [], f"after recovering, writes through these nodes missed {owner.name}")

    def test_quorum_writes_survive_a_killed_replica(self) -> None:
        victim = self.fx.node("dc1-rack2-1")
        key = self.key_owned_by(victim, self.prefix)
        victim.node_process.kill()
        self.addCleanup(self.fx.ensure_running)
        for level in ("DC_QUORUM", "DC_SAFE_QUORUM"):
            c = self.client(self.fx.node("dc1-rack1-0"), level)
            self.assertIs(c.set(key, level), True, f"{level} SET with one of three replicas down")
            self.assertEqual(c.get(key), level.encode())
        others = [o for o in self.fx.owners(key) if o is not victim]
        self.assertEqual([self.fx.backend(o).get(key) for o in others], [b"DC_SAFE_QUORUM"] * 2)

    def test_reads_survive_a_paused_owner(self) -> None:
        """A hung owner (SIGSTOP) costs a DC_ONE read one timeout; a quorum read nothing."""
        victim = self.fx.node("dc1-rack1-0")
        neighbour = self.fx.node("dc1-rack1-1")
        key = self.key_owned_by(victim, self.prefix)
        self.assertIs(self.client(neighbour).set(key, "p"), True)
        self.assertReplicated({key.encode(): b"p"})
        one = self.client(neighbour)
        quorum = self.client(neighbour, "DC_QUORUM")
        victim.node_process.pause()
        self.addCleanup(self.fx.ensure_running)
        timeout = self.fx.topology["node"]["timeout"] / 1000
        started = time.monotonic()
        self.assertEqual(quorum.get(key), b"p", f"DC_QUORUM GET through {neighbour.name}, {victim.name} paused")
        self.assertLess(time.monotonic() - started, 2.0, "DC_QUORUM waited for the paused replica")
        started = time.monotonic()
        self.assertEqual(one.get(key), b"p", f"DC_ONE GET through {neighbour.name}, {victim.name} paused")
        self.assertLess(time.monotonic() - started, timeout + 1.5, "DC_ONE failover took longer than one timeout")

    def test_quorum_reads_survive_a_killed_owner_in_another_rack(self) -> None:
        victim = self.fx.node("dc1-rack3-0")
        key = self.key_owned_by(victim, self.prefix)
        self.assertIs(self.client(self.fx.node("dc1-rack1-0")).set(key, "q"), True)
        self.assertReplicated({key.encode(): b"q"})
        victim.node_process.kill()
        self.addCleanup(self.fx.ensure_running)
        for node in self.fx.nodes:
            if node is victim:
                continue
            self.assertEqual(self.client(node, "DC_QUORUM").get(key), b"q", f"DC_QUORUM via {node.name}")
            self.assertEqual(self.client(node, "DC_SAFE_QUORUM").get(key), b"q",
                             f"DC_SAFE_QUORUM via {node.name}")


class ColdStartTests(unittest.SynchronousTestCase):
    """What a user sees right after ``dynomite-cluster up`` says the cluster is up."""

    def test_writes_acknowledged_right_after_start_reach_every_replica(self) -> None:
        # A cluster of its own: the shared ones are warmed up before any test.
        fx = fixtures.ClusterFixture(fixtures.COLD, wait_connected=False)
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


# ---------------------------------------------------------------------------
# 9: RESP3 through the cluster


class RESP3Tests(_ClusterTestCase):
    """redis-py 8's default protocol through coordinators and peers."""

    def test_hgetall_returns_a_dict_through_every_node(self) -> None:
        writer = self.client(self.fx.node("dc1-rack1-0"), protocol=3)
        key = self.prefix + "h"
        mapping = {f"field-{i}".encode(): f"value-{i}".encode() for i in range(10)}
        self.assertEqual(writer.hset(key, mapping=mapping), 10)
        self.assertTrue(poll(lambda: all(self.fx.backend(o).hlen(key) == 10 for o in self.fx.owners(key)),
                             CONVERGE_TIMEOUT), "HSET did not reach every replica")
        for node in self.fx.nodes:
            c = self.client(node)  # redis-py's default: RESP3
            got = c.hgetall(key)
            self.assertIsInstance(got, dict)
            self.assertEqual(got, mapping, f"HGETALL via {node.name}")
            raw = self.raw(node, resp=3).command("HGETALL", key)
            self.assertTrue(raw.startswith(b"%10\r\n"), f"RESP3 HGETALL via {node.name} is a map: {raw[:40]!r}")
            self.assertEqual(self.raw(node, resp=3).command("SMEMBERS", self.prefix + "none"), b"~0\r\n")

    def replica_raws(self, key: str, read: str) -> List[bytes]:
        """Each replica's own raw RESP3 reply to ``read key``, straight from its Redis."""
        raws = []
        for owner in self.fx.owners(key):
            conn = self.backend_raw(owner)
            conn.command("HELLO", "3")
            raws.append(conn.command(read, key))
        return raws

    def write_in_different_orders(self, key: str, write: Any, read: str) -> None:
        """``write(pipeline)`` on each replica (each shuffles on its own), so ``read`` lists it in different orders."""
        for owner in self.fx.owners(key):
            pipe = self.fx.backend(owner).pipeline(transaction=False)
            write(pipe)
            pipe.execute()
        self.assertGreater(len(set(self.replica_raws(key, read))), 1,
                           f"precondition: the replicas list {key!r} in the same order")

    def assertReplicaBytes(self, node: ClusterNode, key: str, read: str, level: str = "DC_SAFE_QUORUM") -> None:
        """A RESP3 quorum read through ``node`` answers one replica's own bytes."""
        # Read the replicas just before: a set or hash in the middle of a
        # rehash changes order with every lookup.
        raws = self.replica_raws(key, read)
        raw = self.raw(node, level, resp=3).command(read, key)
        self.assertIn(raw, raws, f"{level} RESP3 {read} via {node.name} is not any replica's reply")

    def check_quorum_hash(self, fields: int) -> None:
        key = f"{self.prefix}h{fields}"
        mapping = {f"f{i:03d}": f"v{i}" for i in range(fields)}

        def write(pipe) -> None:
            items = list(mapping.items())
            self.rng.shuffle(items)
            for f, v in items:
                pipe.hset(key, f, v)

        self.write_in_different_orders(key, write, "HGETALL")
        want = {f.encode(): v.encode() for f, v in mapping.items()}
        for node in self.fx.nodes:
            for level in ("DC_QUORUM", "DC_SAFE_QUORUM"):
                for protocol in (3, 2):
                    c = self.client(node, level, protocol=protocol)
                    what = f"{level} RESP{protocol} via {node.name}, {fields} fields"
                    self.assertEqual(c.hgetall(key), want, f"HGETALL {what}")
                    self.assertEqual(sorted(c.hkeys(key)), sorted(want), f"HKEYS {what}")
                    self.assertEqual(sorted(c.hvals(key)), sorted(want.values()), f"HVALS {what}")
            self.assertReplicaBytes(node, key, "HGETALL")

    def test_quorum_reads_of_small_hashes_agree(self) -> None:
        self.check_quorum_hash(12)  # listpack: insertion order

    def test_quorum_reads_of_large_hashes_agree(self) -> None:
        self.check_quorum_hash(300)  # hashtable

    def test_quorum_reads_of_sets_agree(self) -> None:
        key = self.prefix + "s"
        members = [f"m{i}" for i in range(40)]

        def write(pipe) -> None:
            order = members[:]
            self.rng.shuffle(order)
            for m in order:
                pipe.sadd(key, m)

        self.write_in_different_orders(key, write, "SMEMBERS")
        other = self.prefix + "other"
        for owner in self.fx.owners(other):
            self.fx.backend(owner).sadd(other, *members[::2])
        for node in self.fx.nodes:
            raw = self.raw(node, "DC_SAFE_QUORUM", resp=3).command("SMEMBERS", key)
            self.assertTrue(raw.startswith(b"~40\r\n"), f"RESP3 SMEMBERS via {node.name} is a set: {raw[:20]!r}")
            self.assertReplicaBytes(node, key, "SMEMBERS")
            c = self.client(node, "DC_SAFE_QUORUM")
            self.assertEqual(c.smembers(key), {m.encode() for m in members}, f"SMEMBERS via {node.name}")
            self.assertEqual(c.sinter(key, other), {m.encode() for m in members[::2]}, f"SINTER via {node.name}")

    def test_resp2_and_resp3_clients_see_the_same_data(self) -> None:
        c3 = self.client(self.fx.node("dc1-rack2-1"), "DC_SAFE_QUORUM", protocol=3)
        c2 = self.client(self.fx.node("dc1-rack3-0"), "DC_SAFE_QUORUM", protocol=2)
        self.assertEqual(c3.hset(self.prefix + "h", mapping={"a": 1, "b": 2}), 2)
        self.assertEqual(c2.hgetall(self.prefix + "h"), {b"a": b"1", b"b": b"2"})
        self.assertEqual(c3.zadd(self.prefix + "z", {"x": 1.5}), 1)
        self.assertEqual(c2.zscore(self.prefix + "z", "x"), 1.5)
        self.assertEqual(c3.zscore(self.prefix + "z", "x"), 1.5)
        self.assertEqual([tuple(x) for x in c3.zrange(self.prefix + "z", 0, -1, withscores=True)], [(b"x", 1.5)])
        self.assertEqual([tuple(x) for x in c2.zrange(self.prefix + "z", 0, -1, withscores=True)], [(b"x", 1.5)])
