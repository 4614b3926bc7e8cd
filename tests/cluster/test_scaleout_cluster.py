"""
Scale-out in an in-process cluster: a node joins a rack under writes and
takes its ranges with their data, then leaves again (issue: online
scale-out).  Every key ends on exactly its owner in each rack, with the
value every other rack holds; no read of an existing key answers nil.
"""

from __future__ import annotations

from typing import Callable, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from dynomite.node.handover import leader_moved
from dynomite.placement.hashing import key_hash
from dynomite.repair.manager import RepairBusy
from dynomite.repair.run import RepairOptions
from dynomite.repair.script import dump_request

from tests.cluster.inprocess import InProcessCluster, InProcessNode, make_cluster

GOS_INTERVAL = 1.0
STEP = 0.25
NEW = "10.0.0.10:8101"


class Load:
    """A client that writes and reads through every node in turn, and keeps what it expects."""

    def __init__(self, cluster: InProcessCluster, nodes: List[InProcessNode]) -> None:
        self.cluster = cluster
        self.clients = [cluster.client(n) for n in nodes]
        self.expected: Dict[bytes, object] = {}
        self.turn = 0
        self.nil_reads: List[bytes] = []

    def _client(self):
        self.turn += 1
        return self.clients[self.turn % len(self.clients)]

    def write(self, count: int) -> None:
        for _ in range(count):
            i = self.turn
            if i % 3 == 0:
                key = b"list%d" % (i % 40)
                assert self._client().command("RPUSH", key, b"e%d" % i).startswith(b":")
                self.expected.setdefault(key, []).append(b"e%d" % i)   # type: ignore[union-attr]
            else:
                key = b"k%d" % (i % 500)
                reply = self._client().command("SET", key, b"v%d" % i)
                assert reply == b"+OK\r\n", reply
                self.expected[key] = b"v%d" % i

    def read(self, count: int) -> None:
        strings = sorted(k for k, v in self.expected.items() if isinstance(v, bytes))
        for j in range(count):
            key = strings[(self.turn * 7 + j) % len(strings)]
            reply = self._client().command("GET", key)
            if reply == b"$-1\r\n":
                self.nil_reads.append(key)


def wait_for(cluster: InProcessCluster, done: Callable[[], bool], bound: float, load: Load) -> None:
    waited = 0.0
    while not done():
        if waited >= bound:
            raise AssertionError("not done after %.2f s" % bound)
        load.write(20)
        load.read(10)
        cluster.advance(STEP)
        waited += STEP


class ScaleOutTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.cluster = make_cluster(self, {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}},
                                    enable_gossip=True, gos_interval=int(GOS_INTERVAL * 1000))
        self.first = list(self.cluster.nodes)
        self.load = Load(self.cluster, self.first)
        self.load.write(1500)
        self.cluster.advance(STEP)

    def join(self) -> InProcessNode:
        cluster = self.cluster
        seed = cluster.node("dc1", "rack2")
        entry = "%s:rack2:dc1:%d" % (seed.name, seed.config.tokens[0])
        new = cluster.add_node(NEW, "dc1", "rack1", 2 ** 31, [entry], bootstrap=True)
        self.load.clients.append(cluster.client(new))
        wait_for(cluster, lambda: new.parts.scaleout.phase == "done", 60.0, self.load)
        cluster.advance(1.0)
        return new

    def check_placement(self, nodes: List[InProcessNode]) -> None:
        """Every expected key on exactly its owner in each rack, with the value expected."""
        topology = self.first[1].parts.topology
        for key, value in sorted(self.load.expected.items()):
            for rack in ("rack1", "rack2", "rack3"):
                owner = topology.ring("dc1", rack).owner(key_hash(key)).name
                holders = [n.name for n in nodes if n.rack == rack and key in n.redis.data]
                self.assertEqual(holders, [owner], (key, rack))
                held = self.cluster.by_name[owner].redis.data[key]
                self.assertEqual(held, value, (key, rack))
        self.assertEqual(self.load.nil_reads, [])

    def test_a_node_joins_under_writes_and_takes_its_ranges(self) -> None:
        new = self.join()
        for node in self.first + [new]:
            self.assertEqual(node.parts.topology.node(NEW).status, "NORMAL", node.name)
        rack1 = self.first[0].parts.topology.ring("dc1", "rack1")
        self.assertEqual(sorted(n.name for n in rack1.owners()), sorted([NEW, self.first[0].name]))
        self.check_placement(self.first + [new])
        status = new.parts.scaleout.status()
        self.assertEqual(status["phase"], "done")
        self.assertGreater(status["copy"]["copied"], 0)
        self.assertGreater(status["dropped"], 0)

    def test_a_node_leaves_and_gives_its_ranges_back(self) -> None:
        new = self.join()
        self.assertIsNone(new.parts.scaleout.decommission())
        self.assertIn("under way", new.parts.scaleout.decommission())
        wait_for(self.cluster, lambda: new.parts.scaleout.phase == "done", 60.0, self.load)
        self.cluster.advance(2.0)
        for node in self.first:
            self.assertIsNone(node.parts.topology.node(NEW), node.name)
        self.load.clients.pop()
        self.check_placement(self.first)

    def test_only_the_keys_leader_copies_them(self) -> None:
        cluster = self.cluster
        seed = cluster.node("dc1", "rack2")
        entry = "%s:rack2:dc1:%d" % (seed.name, seed.config.tokens[0])
        new = cluster.add_node(NEW, "dc1", "rack1", 2 ** 31, [entry], bootstrap=True)
        wait_for(cluster, lambda: new.parts.scaleout.phase == "copying", 30.0, self.load)
        router = self.first[0].parts.router
        moving = [k for k in (b"k%d" % i for i in range(500)) if router.route(k, True, "DC_ONE").pending]
        plan = router.route(moving[0], True, "DC_ONE")
        leader = cluster.by_name[plan.leaders[0].name]
        other = next(n for n in self.first if n is not leader)
        answers = []

        class Answer:
            complete = fail = answers.append

        other.parts.replica._copy(dump_request(moving[:1]), Answer)
        self.assertEqual(answers, [leader_moved(leader.name)])
        apart = next(k for k in moving if router.route(k, True, "DC_ONE") is not plan)
        leader.parts.replica._copy(dump_request([moving[0], apart]), Answer)
        self.assertEqual(answers[1], b"-ERR copy of keys with different replicas here\r\n")
        leader.parts.replica._copy(dump_request(moving[:1]), Answer)
        cluster.settle()
        self.assertEqual(answers[2], b":1\r\n")
        # a repair's restores would bypass the leaders: none while a range moves
        with self.assertRaises(RepairBusy):
            leader.parts.repairs.start(RepairOptions())

    def test_a_second_join_in_a_rack_waits_for_the_first(self) -> None:
        cluster = self.cluster
        seed = cluster.node("dc1", "rack2")
        entry = "%s:rack2:dc1:%d" % (seed.name, seed.config.tokens[0])
        first = cluster.add_node(NEW, "dc1", "rack1", 2 ** 31, [entry], bootstrap=True)
        cluster.advance(STEP)
        second = cluster.add_node("10.0.0.11:8101", "dc1", "rack1", 2 ** 30, [entry], bootstrap=True)
        self.load.clients += [cluster.client(first), cluster.client(second)]
        waited = []

        def first_done() -> bool:
            if second.parts.scaleout.phase == "waiting" and "one move per rack" in (second.parts.scaleout.reason or ""):
                waited.append(second.parts.scaleout.reason)
            self.assertNotIn(second.parts.scaleout.phase, ("copying", "cutting_over"),
                             "the second join moves while the first is under way: %s %s / %s %s" % (
                                 first.parts.scaleout.phase, first.parts.gossip.view.own,
                                 second.parts.scaleout.phase, second.parts.gossip.view.own))
            return first.parts.scaleout.phase == "done"

        wait_for(cluster, first_done, 60.0, self.load)
        self.assertTrue(waited, "the second join said why it waits")
        self.assertIn(NEW, waited[0])
        wait_for(cluster, lambda: second.parts.scaleout.phase == "done", 60.0, self.load)
        cluster.advance(1.0)
        rack1 = self.first[0].parts.topology.ring("dc1", "rack1")
        self.assertEqual(sorted(n.name for n in rack1.owners()),
                         sorted([self.first[0].name, NEW, "10.0.0.11:8101"]))
        self.check_placement(self.first + [first, second])

    def test_a_node_down_at_the_announcement_gets_the_copy_again(self) -> None:
        """Back, it may lead writes before it learns of the move: once it knows, the copy runs again."""
        cluster = self.cluster
        away = cluster.node("dc1", "rack3")
        cluster.isolate(away)
        self.load.clients = self.load.clients[:2]   # through rack 1 and 2, while rack 3 is cut off
        seed = cluster.node("dc1", "rack2")
        entry = "%s:rack2:dc1:%d" % (seed.name, seed.config.tokens[0])
        new = cluster.add_node(NEW, "dc1", "rack1", 2 ** 31, [entry], bootstrap=True, repair_rate=50)
        wait_for(cluster, lambda: new.parts.scaleout.phase == "copying", 30.0, self.load)
        self.assertEqual(new.parts.membership.peer_state(away.name), "DOWN")
        cluster.rejoin(away)
        wait_for(cluster, lambda: new.parts.scaleout.phase == "done", 120.0, self.load)
        cluster.advance(1.0)
        self.assertEqual(new.parts.scaleout.status()["copy_runs"], 2)
        self.check_placement(self.first + [new])

    def test_the_last_node_of_a_rack_cannot_leave(self) -> None:
        self.assertEqual(self.first[0].parts.scaleout.decommission(),
                         "this node is the last of dc1/rack1: nobody could take its ranges")


class TwoLeavesTests(SynchronousTestCase):
    """Both nodes of a rack asked to leave at the same moment, before gossip could tell either."""

    def test_the_rack_keeps_a_node_and_every_key(self) -> None:
        cluster = make_cluster(self, {"dc1": {"rack1": 2, "rack2": 1}},
                               enable_gossip=True, gos_interval=int(GOS_INTERVAL * 1000))
        load = Load(cluster, list(cluster.nodes))
        load.write(600)
        cluster.advance(STEP)
        one, two = cluster.node("dc1", "rack1", 0), cluster.node("dc1", "rack1", 1)
        self.assertIsNone(one.parts.scaleout.decommission())
        self.assertIsNone(two.parts.scaleout.decommission())
        load.clients = [cluster.client(cluster.node("dc1", "rack2"))]
        wait_for(cluster, lambda: one.parts.scaleout.finished is not None and two.parts.scaleout.finished is not None,
                 60.0, load)
        cluster.advance(2.0)
        outcomes = sorted((n.parts.scaleout.phase, n.parts.scaleout.reason or "") for n in (one, two))
        self.assertEqual([phase for phase, _ in outcomes], ["done", "failed"])
        self.assertIn("is the last of dc1/rack1", outcomes[1][1])
        stayed = one if one.parts.scaleout.phase == "failed" else two
        self.assertEqual(stayed.parts.gossip.view.own.status, "NORMAL")
        ring = cluster.node("dc1", "rack2").parts.topology.ring("dc1", "rack1")
        self.assertEqual([n.name for n in ring.owners()], [stayed.name])
        for key, value in sorted(load.expected.items()):
            self.assertEqual(stayed.redis.data.get(key), value, key)
        self.assertEqual(load.nil_reads, [])
