"""Tests for dynomite.placement.router: plans, routing tables, fragmenting and coalescing."""

from __future__ import annotations

import dataclasses
import random

from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.vocabulary import (
    CONSISTENCY_LEVELS, DC_EACH_SAFE_QUORUM, DC_ONE, DC_QUORUM, DC_SAFE_QUORUM, MAX_TOKEN,
)
from dynomite.consistency import compare
from dynomite.placement import router
from dynomite.placement.hashing import key_hash
from dynomite.placement.router import Router
from dynomite.placement.topology import Topology

from tests.fakes import node_config

HALF = 2 ** 31


def cluster(dcs=("dc1",), racks=("r1", "r2", "r3"), per_rack=2, hash_tag=None):
    """This node is dc1/r1/first; every other node is a seed."""
    seeds = []
    n = 1
    for dc in dcs:
        for rack in racks:
            for i in range(per_rack):
                n += 1
                if (dc, rack, i) == (dcs[0], racks[0], 0):
                    continue
                seeds.append("127.0.0.%d:8101:%s:%s:%d" % (n, rack, dc, i * (2 ** 32 // per_rack)))
    overrides = dict(dyn_seeds=seeds, dyn_listen="127.0.0.1:8101", datacenter=dcs[0], rack=racks[0])
    if hash_tag:
        overrides["hash_tag"] = hash_tag
    return Topology.from_config(node_config(**overrides))


def key_in_lower_half(prefix=b"k"):
    """A key whose hash is in (0, 2**31]: owned by the second node of each rack."""
    i = 0
    while True:
        key = prefix + b"%d" % i
        if 0 < key_hash(key) <= HALF:
            return key
        i += 1


class PlanTests(SynchronousTestCase):
    def setUp(self):
        self.topology = cluster(dcs=("dc1", "dc2"))
        self.h = key_hash(key_in_lower_half())

    def names(self, nodes):
        return [(n.datacenter, n.rack, n.is_local) for n in nodes]

    def test_dc_one_read_own_rack_first_with_failover(self):
        p = router.plan(self.topology, self.h, False, DC_ONE)
        self.assertEqual([n.rack for n in p.local], ["r1", "r2", "r3"])
        self.assertEqual((p.wait, p.failover, p.remote_dcs), (1, True, ()))
        # the lower half belongs to each rack's second node, not to this one
        self.assertFalse(p.local[0].is_local)

    def test_dc_one_write_all_local_racks_and_remote_async(self):
        p = router.plan(self.topology, self.h, True, DC_ONE)
        self.assertEqual(len(p.local), 3)
        self.assertEqual((p.wait, p.failover, p.remote_dcs), (1, False, ("dc2",)))

    def test_quorum_levels(self):
        for level in (DC_QUORUM, DC_SAFE_QUORUM):
            read = router.plan(self.topology, self.h, False, level)
            write = router.plan(self.topology, self.h, True, level)
            self.assertEqual((read.wait, read.failover, read.remote_dcs), (2, False, ()))
            self.assertEqual((write.wait, write.remote_dcs), (2, ("dc2",)))

    def test_each_safe_quorum_is_synchronous_everywhere(self):
        p = router.plan(self.topology, self.h, True, DC_EACH_SAFE_QUORUM)
        self.assertEqual(sorted(p.each), ["dc1", "dc2"])
        self.assertEqual([n.rack for n in p.each["dc2"]], ["r1", "r2", "r3"])
        self.assertEqual(p.remote_dcs, ())

    def test_owner_is_smallest_token_at_or_above_hash(self):
        p = router.plan(self.topology, 0, False, DC_ONE)
        self.assertTrue(p.local[0].is_local)       # token 0 owns hash 0
        p = router.plan(self.topology, HALF + 1, False, DC_ONE)
        self.assertTrue(p.local[0].is_local)       # wraps around to token 0
        p = router.plan(self.topology, HALF, False, DC_ONE)
        self.assertFalse(p.local[0].is_local)

    def test_quorum_of_five_racks(self):
        t = cluster(racks=("a", "b", "c", "d", "e"), per_rack=1)
        p = router.plan(t, 12345, False, DC_QUORUM)
        self.assertEqual((len(p.local), p.wait), (5, 3))


class SplitTests(SynchronousTestCase):
    def setUp(self):
        self.topology = cluster()
        self.low = key_in_lower_half(b"low")
        self.high = next(b"high%d" % i for i in range(10000) if key_hash(b"high%d" % i) > HALF)

    def test_mget_split_by_replica_set(self):
        args = [b"MGET", self.low, self.high, self.low + b"x" if False else self.low]
        fragments = Router(self.topology, None).split(args, 1, False, DC_ONE)
        self.assertEqual(len(fragments), 2)
        self.assertEqual(fragments[0].positions, [0, 2])
        self.assertEqual(fragments[0].args, [b"MGET", self.low, self.low])
        self.assertEqual(fragments[1].args, [b"MGET", self.high])

    def test_mset_keeps_values_with_keys(self):
        fragments = Router(self.topology, None).split([b"MSET", self.low, b"1", self.high, b"2"], 2, True, DC_ONE)
        self.assertEqual([f.args for f in fragments], [[b"MSET", self.low, b"1"], [b"MSET", self.high, b"2"]])

    def test_coalesce_mget_in_key_order(self):
        fragments = Router(self.topology, None).split([b"MGET", self.high, self.low, self.high], 1, False, DC_ONE)
        replies = [b"*2\r\n$1\r\nh\r\n$-1\r\n", b"*1\r\n$1\r\nl\r\n"]
        self.assertEqual(
            router.coalesce(b"MGET", fragments, replies, 3),
            b"*3\r\n$1\r\nh\r\n$1\r\nl\r\n$-1\r\n",
        )

    def test_coalesce_counts_and_errors(self):
        fragments = Router(self.topology, None).split([b"DEL", self.high, self.low], 1, True, DC_ONE)
        self.assertEqual(router.coalesce(b"DEL", fragments, [b":1\r\n", b":0\r\n"], 2), b":1\r\n")
        self.assertEqual(
            router.coalesce(b"DEL", fragments, [b":1\r\n", b"-ERR x\r\n"], 2), b"-ERR x\r\n"
        )
        self.assertEqual(router.coalesce(b"MSET", fragments, [b"+OK\r\n", b"+OK\r\n"], 2), b"+OK\r\n")

    def test_same_replicas_and_hash_tags(self):
        routes = Router(self.topology, None)
        self.assertIsNone(routes.route_keys([self.low, self.high], False, DC_ONE))
        self.assertIsNotNone(routes.route_keys([self.low, self.low], False, DC_ONE))
        tagged = Router(cluster(hash_tag="{}"), b"{}")
        self.assertIsNotNone(tagged.route_keys([b"{user1}.a", b"{user1}.b"], False, DC_ONE))


class UnorderedTests(SynchronousTestCase):
    def test_smembers_orders_compare_equal(self):
        a = b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n"
        b = b"*2\r\n$1\r\ny\r\n$1\r\nx\r\n"
        self.assertEqual(compare.unordered(a), compare.unordered(b))
        self.assertNotEqual(compare.unordered(a), compare.unordered(b"*1\r\n$1\r\nx\r\n"))

    def test_hgetall_pairs_stay_pairs(self):
        norm = compare.normaliser("hgetall")
        a = b"*4\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n"
        b = b"*4\r\n$1\r\ng\r\n$1\r\n2\r\n$1\r\nf\r\n$1\r\n1\r\n"
        swapped = b"*4\r\n$1\r\nf\r\n$1\r\n2\r\n$1\r\ng\r\n$1\r\n1\r\n"
        self.assertEqual(norm(a), norm(b))
        self.assertNotEqual(norm(a), norm(swapped))
        self.assertIsNone(compare.normaliser("get"))


class RouterTests(SynchronousTestCase):
    """`Router.route` is `plan` at the key's hash, precomputed; same replicas give the same Plan."""

    def test_tables_agree_with_plan_everywhere(self):
        """At every token, either side of it, and at random points, for every kind and level."""
        t = cluster(dcs=("dc1", "dc2"), per_rack=3)
        routes = Router(t, None)
        rng = random.Random(5)
        bounds, _ = t.segments()
        points = {0, MAX_TOKEN} | {p for b in bounds for p in (b - 1, b, b + 1) if 0 <= p <= MAX_TOKEN}
        points |= {rng.randrange(MAX_TOKEN + 1) for _ in range(300)}
        for write in (False, True):
            for level in CONSISTENCY_LEVELS:
                table = routes.table(write, level)
                self.assertIsNone(table.only)
                for h in points:
                    want = router.plan(t, h, write, level)
                    got = table.at(h)
                    self.assertEqual(repr(got), repr(want), (h, write, level))

    def test_route_hashes_the_key_with_its_tag(self):
        t = cluster(hash_tag="{}")
        routes = Router(t, b"{}")
        for i in range(200):
            key = b"{user%d}.profile" % i
            self.assertEqual(repr(routes.route(key, True, DC_QUORUM)),
                             repr(router.plan(t, key_hash(key, b"{}"), True, DC_QUORUM)))

    def test_same_replicas_same_plan_object(self):
        """Run grouping and fragments compare plans by identity: equal replicas must share one Plan."""
        t = cluster()
        routes = Router(t, None)
        plans = {}
        for i in range(500):
            key = b"k%d" % i
            p = routes.route(key, False, DC_QUORUM)
            replicas = t.replica_key(key_hash(key))
            self.assertIs(plans.setdefault(replicas, p), p)
        self.assertEqual(len(plans), 2)   # two nodes per rack, tokens 0 and 2**31

    def test_uniform_topology_needs_no_hash(self):
        """One node per rack: one read plan for every key, and the table says so."""
        t = cluster(per_rack=1)
        table = Router(t, None).table(False, DC_ONE)
        self.assertIsNotNone(table.only)
        self.assertIs(table.at(0), table.at(MAX_TOKEN))

    def test_writes_have_one_plan_per_leading_rack(self):
        """
        A write's leader is the replica of the rack its key's hash picks,
        the same on every node of the datacenter; the others follow in
        sorted rack order.  Keys led by one rack share one plan.
        """
        racks = len(cluster(per_rack=1).racks("dc1"))
        leaders_seen = {}
        base = cluster(per_rack=1)
        for local in base.nodes:
            t = Topology([dataclasses.replace(n, is_local=n is local) for n in base.nodes])
            table = Router(t, None).table(True, DC_ONE)
            self.assertIsNone(table.only)
            self.assertEqual(table.spread, racks)
            for position in (0, 1, 2, 12345, MAX_TOKEN):
                p = table.at(position)
                leaders = [n.name for n in p.leaders]
                self.assertEqual(sorted(leaders), sorted(n.name for n in p.local))
                self.assertEqual(leaders_seen.setdefault(position, leaders), leaders)
                self.assertIs(table.at(position + racks if position + racks <= MAX_TOKEN
                                       else position - racks), p)
        firsts = {tuple(v)[0] for v in leaders_seen.values()}
        self.assertEqual(len(firsts), racks)

    def test_update_routes_over_the_new_topology(self):
        routes = Router(cluster(per_rack=1), None)
        before = routes.route(b"k", False, DC_ONE)
        routes.update(cluster(per_rack=2))
        self.assertIsNone(routes.table(False, DC_ONE).only)
        self.assertIsNot(routes.route(b"k", False, DC_ONE), before)
