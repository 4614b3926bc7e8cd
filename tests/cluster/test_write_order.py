"""
One order per key in a datacenter (dynomite.node.leader): whatever
coordinators accept a key's writes, and in whatever order the network
delivers them, every replica applies them in one order, and commands that
may not run twice (SPOP, INCRBYFLOAT) run once, on the leader, and reach
the others as their effect.

The model test drives three clients, one per rack, with random pipelines
of order-sensitive and random commands on a few hot keys, while the
in-process network delivers bytes connection by connection in a random
order; after everything settles the three replicas must hold the same
data.  Without the leader (each coordinator sending to every replica) or
with SPOP replayed as sent, they do not.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands.determinism import again_alike
from dynomite.node.leader import UNKNOWN_OUTCOME
from dynomite.placement.hashing import key_hash
from dynomite.placement.router import leader_turn
from dynomite.runtime import batching

from tests.cluster.inprocess import make_cluster
from tests.cluster.test_runs import pipeline

KEYS = [b"k%d" % i for i in range(6)]


def random_command(rng: random.Random, client: int, step: int):
    key = rng.choice(KEYS)
    value = b"c%d.%d" % (client, step)
    kind = rng.randrange(10)
    if kind == 0:
        return ("SET", b"s" + key, value)
    if kind == 1:
        return ("APPEND", b"s" + key, value)
    if kind == 2:
        return ("INCR", b"n" + key)
    if kind == 3:
        return ("INCRBYFLOAT", b"f" + key, "0.1")
    if kind == 4:
        return ("LPUSH", b"l" + key, value)
    if kind == 5:
        return ("RPUSH", b"l" + key, value)
    if kind == 6:
        return ("LPOP", b"l" + key)
    if kind == 7:
        return ("SADD", b"t" + key, value, b"m%d" % rng.randrange(4))
    if kind == 8:
        return ("SPOP", b"t" + key)
    return ("SREM", b"t" + key, b"m%d" % rng.randrange(4))


class WriteOrderModelTests(SynchronousTestCase):
    """Random concurrent writers through every node leave identical replicas."""

    layout = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}

    def run_model(self, seed: int, steps: int = 60) -> None:
        cluster = make_cluster(self, self.layout)
        rng = random.Random(seed)
        clients = [cluster.client(node) for node in cluster.nodes]
        for step in range(steps):
            c = rng.randrange(len(clients))
            batch = [random_command(rng, c, step) for _ in range(rng.randrange(1, 5))]
            clients[c].send(pipeline(*batch))
            # the network moves some connections' bytes, in a random order
            pumps = list(cluster.pumps)
            for pump, _, _ in rng.sample(pumps, rng.randrange(len(pumps) + 1)):
                pump.pump()
        for _ in range(5):
            cluster.advance(0.1)
        written = 0
        for prefix in (b"s", b"n", b"f", b"l", b"t"):
            for key in KEYS:
                key = prefix + key
                values = {n.name: n.redis.data.get(key) for n in owners_in_every_rack(cluster, key)}
                written += any(v is not None for v in values.values())
                self.assertEqual(len(set(map(repr, values.values()))), 1,
                                 "seed %d: replicas of %r differ: %r" % (seed, key, values))
        self.assertGreater(written, 10, "seed %d: hardly anything was written" % seed)

    def test_random_writers_leave_identical_replicas(self):
        for seed in range(12):
            self.run_model(seed)


class TwoNodesPerRackModelTests(WriteOrderModelTests):
    """The same with two nodes per rack: coordinators that own nothing of a key."""

    layout = {"dc1": {"r1": 2, "r2": 2, "r3": 2}}


def owners_in_every_rack(cluster, key: bytes):
    topology = cluster.nodes[0].topology
    h = key_hash(key)
    return [cluster.by_name[topology.ring(dc, rack).owner(h).name]
            for dc in topology.datacenters for rack in topology.racks(dc)]


class EffectTests(SynchronousTestCase):
    """What runs once, on the leader, and what the others apply."""

    def setUp(self):
        self.cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1, "r3": 1}})
        self.client = self.cluster.client(self.cluster.nodes[0])

    def leader_of(self, key: bytes):
        nodes = sorted(self.cluster.nodes, key=lambda n: n.rack)
        return nodes[leader_turn(key_hash(key), len(nodes))]

    def test_spop_runs_on_the_leader_and_the_others_remove_what_it_popped(self):
        members = [b"m%d" % i for i in range(20)]
        self.client.command("SADD", "s", *members)
        popped = self.client.command("SPOP", "s")
        self.assertTrue(popped.startswith(b"$2\r\nm"), popped)
        leader = self.leader_of(b"s")
        for node in self.cluster.nodes:
            spops = [args for args in node.redis.commands if args[0].upper() == b"SPOP"]
            self.assertEqual(len(spops), 1 if node is leader else 0, node.name)
            self.assertEqual(node.redis.data[b"s"], leader.redis.data[b"s"])
        self.assertNotIn(popped.split(b"\r\n")[1], leader.redis.data[b"s"])
        self.assertEqual([n.coordinator.leader.effects_run for n in self.cluster.nodes],
                         [1 if n is leader else 0 for n in self.cluster.nodes])

    def test_incrbyfloat_reaches_the_others_as_the_leaders_value(self):
        for _ in range(5):
            self.client.command("INCRBYFLOAT", "f", "0.1")
        leader = self.leader_of(b"f")
        for node in self.cluster.nodes:
            self.assertEqual(node.redis.data[b"f"], leader.redis.data[b"f"])
            if node is not leader:
                self.assertEqual(node.redis.commands[-1][0::3], [b"SET", b"KEEPTTL"])

    def test_a_write_another_node_leads_is_acknowledged_where_the_client_reads(self):
        """DC_ONE: the reply waits for this rack's replica, so a read right after sees the write."""
        key = next(b"rw%d" % i for i in range(1000)
                   if self.leader_of(b"rw%d" % i) is not self.cluster.nodes[0])
        self.client.send(pipeline(("SET", key, "v")))
        # only the LEAD has left: the client's rack has not applied it, and no reply yet
        self.assertEqual(self.client.transport.value(), b"")
        self.cluster.settle()
        self.assertEqual(self.client.transport.value(), b"+OK\r\n")
        self.assertEqual(self.cluster.nodes[0].redis.data[key], b"v")

    def test_a_pipelined_read_waits_for_the_write_before_it(self):
        key = next(b"pw%d" % i for i in range(1000)
                   if self.leader_of(b"pw%d" % i) is not self.cluster.nodes[0])
        out = self.client.raw(pipeline(("SET", key, "1"), ("GET", key), ("SET", key, "2"), ("GET", key)))
        self.assertEqual(out, b"+OK\r\n$1\r\n1\r\n+OK\r\n$1\r\n2\r\n")


class ReplayOnceTests(SynchronousTestCase):
    """A write whose fate was unknown is replayed from a hint, and applied once (applied_once)."""

    def test_incr_through_a_replica_that_applied_but_never_answered_counts_once(self):
        cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1, "r3": 1}})
        client = cluster.client(cluster.nodes[0])
        key = b"counter"
        leader = sorted(cluster.nodes, key=lambda n: n.rack)[leader_turn(key_hash(key), 3)]
        replica = next(n for n in cluster.nodes if n is not leader)
        replica.redis.mute = True
        self.assertEqual(client.command("INCR", key), b":1\r\n")
        self.assertEqual(replica.redis.data[key], b"1")        # applied; its answer is lost
        cluster.advance(2.0)                                    # the leader's request times out: a hint
        replica.redis.mute = False
        for _ in range(20):
            cluster.advance(0.5)                                # the hint is replayed
        self.assertEqual(leader.outboxes[replica.name].hints.pending, 0)
        self.assertGreater(leader.outboxes[replica.name].replayed_total, 0, "nothing was replayed")
        self.assertEqual({n.name: n.redis.data[key] for n in cluster.nodes},
                         {n.name: b"1" for n in cluster.nodes})
        self.assertEqual(replica.parts.targets[replica.name].applied_once.skipped, 1)


class PipelineOrderTests(SynchronousTestCase):
    """
    A client's pipelined reads see exactly the writes it sent before them:
    neither less (a read waits for the writes before it) nor more (a write
    waits for the reads before it, since its leader's copy could reach a
    replica before the read), at DC_QUORUM, its bytes cut anywhere and the
    network delivering them in a random order.
    """

    def test_reads_see_the_writes_before_them_and_no_later_one(self):
        keys = [b"k%d" % i for i in range(6)]
        for seed in range(30):
            cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1, "r3": 1}})
            rng = random.Random(seed)
            client = cluster.client(cluster.nodes[seed % 3])
            client.consistency("DC_QUORUM")
            client.transport.clear()
            commands, replies, model = [], [], {}
            for r in range(5):
                value = b"" if r % 2 else b"v%d" % r
                commands.append(("MSET",) + tuple(x for k in keys for x in (k, value)))
                replies.append(b"+OK\r\n")
                model.update((k, value) for k in keys)
                for k in rng.sample(keys, 3):
                    commands.append(("GET", k))
                    replies.append(b"$%d\r\n%s\r\n" % (len(model[k]), model[k]))
                for k in rng.sample(keys, 2):
                    commands.append(("SET", k, b"w%d" % r))
                    replies.append(b"+OK\r\n")
                    model[k] = b"w%d" % r
            data = pipeline(*commands)
            pos = 0
            while pos < len(data):
                n = rng.choice([1, 2, 3, 5, 8, 13, 40, 100])
                client.send(data[pos:pos + n])
                pos += n
                pumps = list(cluster.pumps)
                for pump, _, _ in rng.sample(pumps, rng.randrange(len(pumps) + 1)):
                    pump.pump()
            cluster.settle()
            self.assertEqual(client.transport.value(), b"".join(replies), "seed %d" % seed)


class GatheredRunsTests(SynchronousTestCase):
    """
    Runs of writes wait for the end of their batch, to be led with the
    other clients' runs of their plan (`dynomite.node.gathering`); a
    request that is not a run never overtakes them.
    """

    def setUp(self):
        self.cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1, "r3": 1}})
        self.client = self.cluster.client(self.cluster.nodes[0])

    def test_a_later_write_that_is_not_a_run_is_led_after_the_runs_before_it(self):
        # INCRBYFLOAT runs once on its leader; SET ... EX is made absolute: neither is a run
        out = self.client.raw(pipeline(("SET", "f", "1"), ("INCRBYFLOAT", "f", "0.5"),
                                       ("SET", "e", "1"), ("SET", "e", "2", "EX", "100")))
        self.assertEqual(out, b"+OK\r\n$3\r\n1.5\r\n+OK\r\n+OK\r\n")
        self.cluster.settle()
        for node in self.cluster.nodes:
            self.assertEqual((node.redis.data[b"f"], node.redis.data[b"e"]), (b"1.5", b"2"), node.name)

    def test_a_clients_runs_of_one_plan_keep_their_order_whatever_their_commands(self):
        cluster = make_cluster(self, {"dc1": {"r1": 1}})
        client = cluster.client(cluster.nodes[0])
        out = client.raw(pipeline(("SET", "x", "1"), ("LPUSH", "l", "a"), ("SET", "l", "b"), ("SET", "y", "2")))
        self.assertEqual(out, b"+OK\r\n:1\r\n+OK\r\n+OK\r\n")
        self.assertEqual(cluster.nodes[0].redis.data[b"l"], b"b")

    def test_runs_of_two_clients_in_one_batch_are_led_as_one(self):
        other = self.cluster.client(self.cluster.nodes[0])
        gathering = self.cluster.nodes[0].coordinator.gathering
        batching.begin()
        self.client.send(pipeline(*[("SET", "a%d" % i, "x") for i in range(12)]))
        other.send(pipeline(*[("SET", "b%d" % i, "y") for i in range(12)]))
        batching.end()
        self.cluster.settle()
        self.assertEqual(self.client.transport.value(), b"+OK\r\n" * 12)
        self.assertEqual(other.transport.value(), b"+OK\r\n" * 12)
        self.assertLess(gathering.led, gathering.gathered)
        for node in self.cluster.nodes:
            self.assertEqual(node.redis.data[b"a3"], b"x")
            self.assertEqual(node.redis.data[b"b11"], b"y")


class LostLeaderTests(SynchronousTestCase):
    """
    A write whose leader's link fails after the write left for it may have
    been applied and sent on: led again by the next leader it could apply
    twice (SET ... GET answering its own value, an RPUSH pushed twice). It
    is answered -ERR, unless applying it twice changes nothing.
    """

    def setUp(self):
        self.cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1, "r3": 1}})
        self.here = self.cluster.nodes[0]
        self.client = self.cluster.client(self.here)

    def lost_during(self, *command) -> bytes:
        key = command[1]
        leader = sorted(self.cluster.nodes, key=lambda n: n.rack)[leader_turn(key_hash(key), 3)]
        self.assertIsNot(leader, self.here)
        self.client.transport.clear()
        self.client.send(pipeline(command))   # the LEAD is on its way, not delivered
        self.cluster.isolate(leader)
        self.cluster.settle()
        return self.client.transport.value()

    def key_led_elsewhere(self, prefix: bytes) -> bytes:
        return next(prefix + b"%d" % i for i in range(1000)
                    if sorted(self.cluster.nodes, key=lambda n: n.rack)[leader_turn(key_hash(prefix + b"%d" % i), 3)]
                    is not self.here)

    def test_a_write_that_may_not_run_twice_is_answered_unknown(self):
        key = self.key_led_elsewhere(b"g")
        self.assertEqual(self.lost_during("RPUSH", key, "x"), UNKNOWN_OUTCOME)
        self.assertEqual(self.here.parts.coordinator.leading.leaders_unknown, 1)

    def test_a_plain_set_goes_to_the_next_leader(self):
        key = self.key_led_elsewhere(b"s")
        self.assertEqual(self.lost_during("SET", key, "v"), b"+OK\r\n")
        self.assertEqual(self.here.redis.data[key], b"v")
        self.assertEqual(self.here.parts.coordinator.leading.leaders_lost, 1)

    def test_a_gathered_set_run_still_goes_to_the_next_leader_beside_another_clients_incr(self):
        """Only runs of one command join (`dynomite.node.gathering`): an INCR does not hold a SET back."""
        key = self.key_led_elsewhere(b"s")
        counter = next(b"n%d" % i for i in range(1000) if self.leader_of(b"n%d" % i) is self.leader_of(key))
        self.assertIs(self.here.parts.router.route(key, True, "DC_ONE"),
                      self.here.parts.router.route(counter, True, "DC_ONE"), "not one plan: nothing joins")
        other = self.cluster.client(self.here)
        self.client.transport.clear()
        batching.begin()
        self.client.send(pipeline(("SET", key, "v")))
        other.send(pipeline(("INCR", counter)))
        batching.end()                                   # both LEADs are on their way, not delivered
        self.cluster.isolate(self.leader_of(key))
        self.cluster.settle()
        self.assertEqual(self.client.transport.value(), b"+OK\r\n")
        self.assertEqual(other.transport.value(), UNKNOWN_OUTCOME)

    def leader_of(self, key: bytes):
        return sorted(self.cluster.nodes, key=lambda n: n.rack)[leader_turn(key_hash(key), 3)]

    def test_only_plain_set_and_mset_apply_twice_alike(self):
        self.assertTrue(again_alike([[b"SET", b"k", b"v", b"PX", b"5"], [b"MSET", b"a", b"1"]]))
        for args in ([b"SET", b"k", b"v", b"GET"], [b"SET", b"k", b"v", b"nx"], [b"DEL", b"k"],
                     [b"INCR", b"k"], [b"HSET", b"h", b"f", b"v"]):
            self.assertFalse(again_alike([args]), args)
