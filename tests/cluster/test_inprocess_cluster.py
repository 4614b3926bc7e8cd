"""
Routing and quorum in an in-process cluster: several nodes in one reactor,
wired by iosim pumps, each in front of an in-memory datastore.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.placement.hashing import key_hash

from tests.cluster.inprocess import expected_owner, make_cluster, owners

LAYOUT_1DC = {"dc1": {"r1": 2, "r2": 2, "r3": 2}}
LAYOUT_2DC = {"dc1": {"r1": 1, "r2": 1, "r3": 1}, "dc2": {"r1": 1, "r2": 1, "r3": 1}}


def keys(n: int, prefix: str = "key"):
    return [b"%s:%d" % (prefix.encode(), i) for i in range(n)]


class PlacementTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = make_cluster(self, LAYOUT_1DC)

    def test_every_key_on_its_owner_in_every_rack(self):
        for i, key in enumerate(keys(300)):
            node = self.cluster.nodes[i % len(self.cluster.nodes)]
            self.assertEqual(self.cluster.client(node).command("SET", key, b"v"), b"+OK\r\n")
        for key in keys(300):
            holders = owners(self.cluster, key)
            self.assertEqual(sorted(n.rack for n in holders), ["r1", "r2", "r3"])
            for holder in holders:
                self.assertIs(holder, expected_owner(self.cluster, "dc1", holder.rack, key))

    def test_reads_through_every_node(self):
        self.cluster.client(self.cluster.nodes[0]).command("SET", "k", "v")
        for node in self.cluster.nodes:
            self.assertEqual(self.cluster.client(node).command("GET", "k"), b"$1\r\nv\r\n")


class QuorumTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = make_cluster(self, LAYOUT_1DC)
        self.client = self.cluster.client(self.cluster.nodes[0])
        self.client.command("SET", "k", "good")

    def alter(self, rack: str, value: bytes) -> None:
        expected_owner(self.cluster, "dc1", rack, b"k").redis.data[b"k"] = value

    def test_quorum_returns_majority_after_one_replica_altered(self):
        self.alter(self.cluster.nodes[0].rack, b"bad")
        self.client.consistency("DC_QUORUM")
        self.assertEqual(self.client.command("GET", "k"), b"$4\r\ngood\r\n")
        self.client.consistency("DC_ONE")
        self.assertEqual(self.client.command("GET", "k"), b"$3\r\nbad\r\n")

    def test_safe_quorum_three_different_values_is_an_error(self):
        self.alter("r2", b"two")
        self.alter("r3", b"three")
        self.client.consistency("DC_SAFE_QUORUM")
        reply = self.client.command("GET", "k")
        self.assertTrue(reply.startswith(b"-ERR DC_SAFE_QUORUM: at most 1 of 3 replicas agreed"), reply)
        self.assertEqual(self.client.command("PING"), b"+PONG\r\n")

    def test_quorum_writes_acknowledged_by_majority(self):
        self.client.consistency("DC_QUORUM")
        self.assertEqual(self.client.command("SET", "q", "1"), b"+OK\r\n")
        self.assertEqual(len(owners(self.cluster, b"q")), 3)

    def test_quorum_survives_one_rack_down_and_fails_with_two(self):
        self.client.consistency("DC_QUORUM")
        expected_owner(self.cluster, "dc1", "r2", b"k").redis.down = True
        self.assertEqual(self.client.command("GET", "k"), b"$4\r\ngood\r\n")
        expected_owner(self.cluster, "dc1", "r3", b"k").redis.down = True
        reply = self.client.command("GET", "k")
        self.assertTrue(reply.startswith(b"-ERR DC_QUORUM: 1 of 3 replicas answered, 2 needed"), reply)

    def test_unordered_replies_agree(self):
        for rack, order in (("r1", [b"a", b"b"]), ("r2", [b"b", b"a"]), ("r3", [b"a", b"b"])):
            expected_owner(self.cluster, "dc1", rack, b"s").redis.data[b"s"] = list(order)
        self.client.consistency("DC_SAFE_QUORUM")
        self.assertTrue(self.client.command("SMEMBERS", "s").startswith(b"*2\r\n"))


class FailoverTests(SynchronousTestCase):
    def test_dc_one_read_served_by_another_rack_when_owner_unreachable(self):
        cluster = make_cluster(self, LAYOUT_1DC)
        coordinator = cluster.node("dc1", "r1", 0)
        key = next(k for k in keys(100) if expected_owner(cluster, "dc1", "r1", k) is not coordinator)
        client = cluster.client(coordinator)
        client.command("SET", key, "v")
        cluster.isolate(expected_owner(cluster, "dc1", "r1", key))
        self.assertEqual(client.command("GET", key), b"$1\r\nv\r\n")
        # a write at DC_ONE still succeeds with one replica away
        self.assertEqual(client.command("SET", key, "w"), b"+OK\r\n")
        self.assertEqual(client.command("GET", key), b"$1\r\nw\r\n")


class ResumingTests(SynchronousTestCase):
    def test_every_node_reaches_normal(self):
        cluster = make_cluster(self, LAYOUT_1DC)
        self.assertEqual({n.membership.state for n in cluster.nodes}, {"NORMAL"})

    def test_replica_that_must_not_be_read_is_skipped(self):
        # WRITES_ONLY sticks until changed; RESUMING behaves alike but ends by
        # itself once peers hold no hints for the node (tests/test_membership)
        cluster = make_cluster(self, LAYOUT_1DC)
        coordinator = cluster.node("dc1", "r1", 0)
        client = cluster.client(coordinator)
        key = next(k for k in keys(100) if expected_owner(cluster, "dc1", "r1", k) is not coordinator)
        client.command("SET", key, "fresh")
        owner = expected_owner(cluster, "dc1", "r1", key)
        owner.redis.data[key] = b"stale"
        owner.membership.set_state("WRITES_ONLY")
        cluster.settle()  # the state change is sent with a heartbeat at once
        self.assertEqual(coordinator.membership.peer_state(owner.name), "WRITES_ONLY")
        self.assertEqual(client.command("GET", key), b"$5\r\nfresh\r\n")
        client.consistency("DC_QUORUM")
        self.assertEqual(client.command("GET", key), b"$5\r\nfresh\r\n")
        owner.membership.set_state("NORMAL")
        cluster.settle()
        client.consistency("DC_ONE")
        self.assertEqual(client.command("GET", key), b"$5\r\nstale\r\n")


class MultiKeyTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = make_cluster(self, LAYOUT_1DC)
        self.client = self.cluster.client(self.cluster.nodes[0])
        self.keys = keys(12, "mk")
        # the keys must span both nodes of a rack for the test to mean anything
        racks = {expected_owner(self.cluster, "dc1", "r1", k).name for k in self.keys}
        assert len(racks) == 2

    def test_mset_mget_del_exists_across_owners(self):
        args = []
        for i, k in enumerate(self.keys):
            args += [k, b"v%d" % i]
        self.assertEqual(self.client.command("MSET", *args), b"+OK\r\n")
        for k in self.keys:
            self.assertEqual(len(owners(self.cluster, k)), 3)
        reply = self.client.command("MGET", self.keys[3], b"missing", self.keys[0], self.keys[3])
        self.assertEqual(reply, b"*4\r\n$2\r\nv3\r\n$-1\r\n$2\r\nv0\r\n$2\r\nv3\r\n")
        self.assertEqual(self.client.command("EXISTS", *(self.keys + [self.keys[0]])), b":13\r\n")
        self.assertEqual(self.client.command("DEL", *self.keys[:5]), b":5\r\n")
        self.assertEqual(self.client.command("EXISTS", *self.keys), b":7\r\n")

    def test_crossslot_for_other_multi_key_commands(self):
        a, b = self.keys[0], next(
            k for k in self.keys
            if expected_owner(self.cluster, "dc1", "r1", k) is not expected_owner(self.cluster, "dc1", "r1", self.keys[0]))
        self.assertEqual(
            self.client.command("RENAME", a, b),
            b"-CROSSSLOT Keys in request don't hash to the same node\r\n",
        )

    def test_hash_tags_share_owners(self):
        cluster = make_cluster(self, LAYOUT_1DC, hash_tag="{}")
        client = cluster.client(cluster.nodes[0])
        client.command("MSET", "{user1}.a", "1", "{user1}.b", "2", "{user1}.c", "3")
        self.assertEqual(
            {n.name for n in owners(cluster, b"{user1}.a")},
            {n.name for n in owners(cluster, b"{user1}.c")},
        )
        self.assertEqual(key_hash(b"{user1}.a", b"{}"), key_hash(b"user1"))


class KeyspaceTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = make_cluster(self, LAYOUT_1DC)
        self.client = self.cluster.client(self.cluster.nodes[0])
        for k in keys(20, "sk"):
            self.client.command("SET", k, "v")

    def test_scan_walks_every_node_of_the_rack(self):
        seen = []
        cursor = b"0"
        for _ in range(100):
            reply = self.client.command("SCAN", cursor)
            head, rest = reply.split(b"\r\n", 1)
            self.assertEqual(head, b"*2")
            length, rest = rest.split(b"\r\n", 1)
            cursor, rest = rest[:int(length[1:])], rest[int(length[1:]) + 2:]
            seen += [line for line in rest.split(b"\r\n") if line.startswith(b"sk:")]
            if cursor == b"0":
                break
        self.assertEqual(sorted(seen), sorted(keys(20, "sk")))

    def test_dbsize_keys_flushall(self):
        self.assertEqual(self.client.command("DBSIZE"), b":20\r\n")
        self.assertEqual(self.client.command("KEYS", "*").count(b"sk:"), 20)
        self.assertEqual(self.client.command("FLUSHALL"), b"+OK\r\n")
        self.assertEqual(sum(len(n.redis.data) for n in self.cluster.nodes), 0)


class CrossDatacenterTests(SynchronousTestCase):
    def test_writes_reach_every_rack_of_the_other_dc(self):
        cluster = make_cluster(self, LAYOUT_2DC)
        dc1 = cluster.client(cluster.node("dc1", "r1"))
        dc2 = cluster.client(cluster.node("dc2", "r2"))
        self.assertEqual(dc1.command("SET", "from1", "a"), b"+OK\r\n")
        self.assertEqual(dc2.command("SET", "from2", "b"), b"+OK\r\n")
        for key in (b"from1", b"from2"):
            self.assertEqual(len(owners(cluster, key)), 6)

    def test_each_safe_quorum_reads_every_dc(self):
        cluster = make_cluster(self, LAYOUT_2DC)
        client = cluster.client(cluster.node("dc1", "r1"))
        client.command("SET", "k", "v")
        client.consistency("DC_EACH_SAFE_QUORUM")
        self.assertEqual(client.command("GET", "k"), b"$1\r\nv\r\n")
        for rack in ("r1", "r2"):
            cluster.node("dc2", rack).redis.data[b"k"] = b"other"
        reply = client.command("GET", "k")
        self.assertIn(b"datacenters disagree", reply)
