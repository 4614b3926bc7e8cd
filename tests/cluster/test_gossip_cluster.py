"""
Gossip membership in an in-process cluster (enable_gossip): a node started
with one seed joins a running cluster without any other node being
restarted or edited; a node whose token clashes is refused.
"""

from __future__ import annotations

from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from dynomite.placement.hashing import key_hash

from tests.cluster.inprocess import InProcessCluster, InProcessNode, make_cluster

#: gos_interval of these clusters, in seconds
GOS_INTERVAL = 5.0
#: a joining node is known everywhere within two rounds at the slowest pace
#: (it gossips at once with each link that comes UP, and fast after a change)
JOIN_BOUND = 2 * GOS_INTERVAL
STEP = 0.25

NEW = "10.0.0.10:8101"
CLASH = "10.0.0.11:8101"


def wait_for(cluster: InProcessCluster, done: Callable[[], bool], bound: float) -> float:
    """Advance the cluster's clock until ``done()``; the seconds it took, or fail past ``bound``."""
    waited = 0.0
    while not done():
        if waited >= bound:
            raise AssertionError("not done after %.2f s" % bound)
        cluster.advance(STEP)
        waited += STEP
    return waited


def lists_up(node: InProcessNode, name: str) -> bool:
    link = node.parts.links.get(name)
    return node.parts.topology.node(name) is not None and link is not None and link.is_up


class GossipJoinTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.cluster = make_cluster(self, {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}},
                                    enable_gossip=True, gos_interval=int(GOS_INTERVAL * 1000))
        self.first = list(self.cluster.nodes)
        self.parts_before = [n.parts for n in self.first]
        self.configs_before = [(n.config.dyn_seeds, n.config.tokens) for n in self.first]
        self.seed = self.cluster.node("dc1", "rack2")
        seed = "%s:rack2:dc1:%d" % (self.seed.name, self.seed.config.tokens[0])
        self.new = self.cluster.add_node(NEW, "dc1", "rack1", 2 ** 31, [seed])

    def test_a_node_with_one_seed_joins_and_owns_its_keys(self) -> None:
        cluster, new = self.cluster, self.new
        self.assertEqual(len(new.config.dyn_seeds), 1)
        took = wait_for(cluster, lambda: all(lists_up(n, NEW) and lists_up(new, n.name) for n in self.first),
                        JOIN_BOUND)
        # nobody restarted: the same parts, the same configured seeds and tokens
        self.assertEqual([n.parts for n in self.first], self.parts_before)
        self.assertEqual([(n.config.source, n.config.tokens) for n in self.first],
                         [("inprocess.yml", c[1]) for c in self.configs_before])
        # every node holds the same view: four members
        for node in self.first + [new]:
            self.assertEqual(sorted(node.parts.gossip.view.entries), sorted(n.name for n in self.first + [new]),
                             node.name)
            self.assertEqual(len(node.parts.topology.nodes), 4)
        # a key the new node owns in rack1, written through every node, lands on it
        rack1 = self.first[0].parts.topology.ring("dc1", "rack1")
        keys = [b"k%d" % i for i in range(200)]
        owned = [k for k in keys if rack1.owner(key_hash(k)).name == NEW]
        self.assertTrue(owned)
        for i, node in enumerate(self.first):
            key = owned[i]
            client = cluster.client(node)
            self.assertEqual(client.command("SET", key, b"v%d" % i), b"+OK\r\n")
            cluster.advance(STEP)
            self.assertEqual(new.redis.data.get(key), b"v%d" % i, "written through %s" % node.name)
            self.assertNotIn(key, self.first[0].redis.data, "rack1's other node does not own it")
        self.assertLessEqual(took, JOIN_BOUND)

    def test_a_clashing_token_is_refused_and_counted(self) -> None:
        cluster = self.cluster
        wait_for(cluster, lambda: all(lists_up(n, NEW) for n in self.first), JOIN_BOUND)
        # a second node in rack2 with the token of rack2's node, seeded by rack1's
        via = self.first[0]
        seed = "%s:rack1:dc1:%d" % (via.name, via.config.tokens[0])
        clash = cluster.add_node(CLASH, "dc1", "rack2", self.seed.config.tokens[0], [seed])
        cluster.advance(JOIN_BOUND)
        for node in self.first + [self.new]:
            self.assertIsNone(node.parts.topology.node(CLASH), node.name)
            self.assertNotIn(CLASH, node.parts.gossip.view.entries, node.name)
        self.assertGreater(via.parts.gossip.counts["refused"], 0)
        self.assertFalse(clash.parts.links[via.name].is_up)
        self.assertEqual(clash.parts.links[via.name]._last_rejection,
                         "gossip: node %s refused: token 0 in dc1/rack2 is owned by %s" % (CLASH, self.seed.name))

    def test_an_operator_removes_a_node_that_is_gone(self) -> None:
        cluster = self.cluster
        wait_for(cluster, lambda: all(lists_up(n, NEW) for n in self.first), JOIN_BOUND)
        cluster.isolate(self.new)
        cluster.advance(STEP)
        for node in self.first:
            self.assertIsNotNone(node.parts.topology.node(NEW), "DOWN is not removal")
        with self.assertRaises(ValueError):
            self.first[0].control.remove_node(self.first[0].name)
        with self.assertRaises(LookupError):
            self.first[0].control.remove_node("10.9.9.9:8101")
        self.first[0].control.remove_node(NEW)
        wait_for(cluster, lambda: all(n.parts.topology.node(NEW) is None and NEW not in n.parts.links
                                      for n in self.first), JOIN_BOUND)
        for node in self.first:
            self.assertEqual(node.parts.gossip.view.entries[NEW].status, "LEFT")
            self.assertEqual(len(node.parts.topology.nodes), 3)
