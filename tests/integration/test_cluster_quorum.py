"""
Consistency levels through a cluster of real processes: per-connection
levels (``DYNO_CONFIG:CONN_CONSISTENCY``), how DC_QUORUM and
DC_SAFE_QUORUM reconcile replicas that disagree, and RESP3 replies
(maps, sets, doubles) through coordinators and peers, compared with each
replica's own bytes.  Uses the shared 1 DC x 3 racks x 2 nodes cluster of
``tests/integration/fixtures/cases.py``.
"""

from __future__ import annotations

from typing import Any, List

import redis

from dynomite.launcher.cluster import ClusterNode
from tests.integration.fixtures.cases import CONVERGE_TIMEOUT, ClusterTestCase
from tests.integration.fixtures.common import poll
from tests.integration.fixtures.resp import decode_reply


# ---------------------------------------------------------------------------
# consistency levels (1 DC x 3 racks x 2 nodes)


class QuorumTests(ClusterTestCase):
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
# RESP3 through the cluster


class RESP3Tests(ClusterTestCase):
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
