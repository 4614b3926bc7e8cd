"""
DC_EACH_SAFE_QUORUM writes through every datacenter's leader
(dynomite.node.each_write), in-process: 2 DCs x 3 racks.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.node.leader import UNKNOWN_OUTCOME
from dynomite.placement.hashing import key_hash
from dynomite.placement.router import leader_turn
from tests.cluster.inprocess import make_cluster, owners

LAYOUT_2DC = {"dc1": {"r1": 1, "r2": 1, "r3": 1}, "dc2": {"r1": 1, "r2": 1, "r3": 1}}


def wait(cluster, seconds: float) -> None:
    """Let time pass in heartbeat-sized steps (one big step would time every link out)."""
    for _ in range(int(seconds / 0.25)):
        cluster.advance(0.25)


def leader_in(cluster, dc: str, key: bytes):
    """The key's leader in ``dc``: the owner in the rack its hash picks."""
    racks = ["r1", "r2", "r3"]
    return cluster.node(dc, racks[leader_turn(key_hash(key), len(racks))])


class EachWriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = make_cluster(self, LAYOUT_2DC)
        self.client = self.cluster.client(self.cluster.node("dc1", "r1"))
        self.client.consistency("DC_EACH_SAFE_QUORUM")

    def test_every_datacenter_applies_it_from_its_own_leader(self) -> None:
        for i in range(12):
            key = b"each:%d" % i
            self.assertEqual(self.client.command("SET", key, "v"), b"+OK\r\n")
            self.assertEqual(len(owners(self.cluster, key)), 6)
            for dc in ("dc1", "dc2"):
                leader = leader_in(self.cluster, dc, key)
                for node in self.cluster.nodes:
                    if node.datacenter == dc and node is not leader:
                        # numbered by the leader of its own datacenter (applied-once marks)
                        self.assertIn(b"dyno:applied:" + leader.name.encode(), node.redis.meta,
                                      "%s got %r other than from its leader %s" % (node.name, key, leader.name))

    def test_a_write_is_applied_once_in_each_datacenter(self) -> None:
        for _ in range(3):
            self.assertEqual(self.client.command("INCR", "counter"), b":%d\r\n" % (_ + 1))
        for node in self.cluster.nodes:
            self.assertEqual(node.redis.data[b"counter"], b"3", node.name)

    def test_the_next_leader_takes_it_when_one_is_away(self) -> None:
        key = b"each:away"
        away = leader_in(self.cluster, "dc2", key)
        self.cluster.isolate(away)
        wait(self.cluster, 5)
        self.assertEqual(self.client.command("SET", key, "v"), b"+OK\r\n")
        self.assertEqual(len(owners(self.cluster, key)), 5)
        self.cluster.rejoin(away, 5)
        self.assertEqual(len(owners(self.cluster, key)), 6, "the write did not reach the leader that was away")

    def test_a_datacenter_without_leaders_fails_it_and_gets_it_later(self) -> None:
        dc2 = [n for n in self.cluster.nodes if n.datacenter == "dc2"]
        for node in dc2:
            self.cluster.isolate(node)
        wait(self.cluster, 5)
        reply = self.client.command("SET", "each:later", "v")
        self.assertTrue(reply.startswith(b"-ERR"), reply)
        self.assertIn(b"dc2", reply)
        for node in dc2:
            self.cluster.rejoin(node, 1)
        wait(self.cluster, 10)
        self.assertEqual(len(owners(self.cluster, b"each:later")), 6)

    def test_a_leader_lost_while_leading_hands_it_on(self) -> None:
        coordinator = self.cluster.node("dc1", "r1")
        key = next(b"each:lost:%d" % i for i in range(100)
                   if leader_in(self.cluster, "dc1", b"each:lost:%d" % i) is not coordinator)
        leader = leader_in(self.cluster, "dc1", key)
        self.client.transport.clear()
        self.client.send(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(key), key))
        self.cluster.isolate(leader)          # the LEAD frame is on its way: its link fails
        self.cluster.settle()
        self.assertEqual(self.client.transport.value(), b"+OK\r\n")
        self.assertEqual(coordinator.coordinator.leading.leaders_lost, 1)
        self.assertEqual(len([n for n in owners(self.cluster, key) if n.datacenter == "dc2"]), 3)

    def test_a_leader_lost_while_leading_what_may_not_apply_twice_is_unknown(self) -> None:
        coordinator = self.cluster.node("dc1", "r1")
        key = next(b"each:push:%d" % i for i in range(100)
                   if leader_in(self.cluster, "dc1", b"each:push:%d" % i) is coordinator)
        self.client.transport.clear()
        self.client.send(b"*3\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(key), key))
        # dc2's leader is lost with the LEAD in flight: it may have been applied there
        self.cluster.isolate(leader_in(self.cluster, "dc2", key))
        self.cluster.settle()
        reply = self.client.transport.value()
        self.assertTrue(reply.startswith(b"-ERR "), reply)
        self.assertIn(UNKNOWN_OUTCOME[5:-2], reply)
        self.assertEqual(coordinator.coordinator.leading.leaders_unknown, 1)
