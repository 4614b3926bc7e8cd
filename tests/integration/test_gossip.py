"""
Gossip membership between real node processes (``enable_gossip: true``).

A cluster of three nodes (1 DC x 3 racks) runs; a fourth node, a second
node in rack 1 with its own token, is started later with only rack 2's
node as its seed (and ``bootstrap: true``).  None of the first three is
restarted or has its file edited, yet every one of them lists the new node
UP within a bound derived from ``gos_interval``, a key the new node owns
written through any node lands on its redis-server, /info shows it in
every gossiped view, and the keys of its ranges written before it joined
are copied to it and dropped from their old owner (`dynomite.scaleout`).  A
node whose token clashes with a node of its rack is refused, and the
refusal counted.
"""

from __future__ import annotations

import re
import time
from typing import Any, Dict

from tests.integration.fixtures.cases import FaultTestCase
from tests.integration.fixtures.common import OWN_CLUSTERS_SUBNET, address, poll
from tests.integration.fixtures.joiners import AdminOf, Named, backend_of, start_extra_node
from tests.integration.fixtures.processes import NodeProcess
from dynomite.placement.hashing import key_hash

ONE_DC = {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}}
#: 127.7.<worker>.x block of this module (others use 1-91, 141-245)
BLOCK = 121
#: ms between gossip rounds while the view is quiet
GOS_INTERVAL = 2000


class GossipJoinTests(FaultTestCase):

    def start_node_process(self, host: str, **settings: Any) -> NodeProcess:
        return start_extra_node(self, self.fx, host, **settings)

    def view(self, node) -> Dict[str, Any]:
        doc = self.fx.try_info(node)
        return {} if doc is None else doc["gossip"].get("entries", {})

    def test_a_node_with_one_seed_joins_without_touching_the_others(self) -> None:
        fx = self.start_cluster("gossip", ONE_DC, BLOCK, {"enable_gossip": True, "gos_interval": GOS_INTERVAL})
        first = [fx.rack_node("dc1", "rack%d" % i) for i in (1, 2, 3)]
        pids = [n.node_process.pid for n in first]
        files = {}
        for n in first:
            with open(n.config_path, "rb") as f:
                files[n.name] = f.read()
        seed = fx.rack_node("dc1", "rack2")

        # keys the joiner will own, written before it exists (rack 1's first node holds them)
        old = [k for k in ("old:%d" % i for i in range(100)) if 0 < key_hash(k.encode()) <= 2 ** 31]
        for k in old:
            self.assertTrue(fx.client(first[0]).set(k, "old"))
        joiner = self.start_node_process(address(OWN_CLUSTERS_SUBNET, BLOCK + 3), rack="rack1",
                                          tokens=str(2 ** 31), dyn_seeds=[seed.seed], bootstrap=True)
        name = "%s:%d" % joiner.dyn_address
        started = time.monotonic()
        # the joiner dials its seed at once; then gossip rounds run every second
        # while views change: a few rounds, plus links coming up and the
        # joiner leaving RESUMING (peer_down_after)
        bound = 2 * GOS_INTERVAL / 1000 + 2 * fx.layout.peer_down_after()
        if not poll(lambda: all(fx.peer_state_seen_by(n, Named(name)) == "UP" for n in first), bound):
            self.fail_with("the first three do not all list %s UP after %.1f s" % (name, bound))
        took = time.monotonic() - started
        for n in first:
            self.assertIn(name, self.view(n), n.name)
        joined_view = self.view(AdminOf(joiner))
        self.assertEqual(sorted(joined_view), sorted([fx.peer_name(n) for n in first] + [name]))

        # nobody restarted, no file edited
        self.assertEqual([n.node_process.pid for n in first], pids)
        for n in first:
            with open(n.config_path, "rb") as f:
                self.assertEqual(f.read(), files[n.name], n.config_path)

        # a key the joiner owns in rack 1 (token 2**31: hashes in (0, 2**31]), written through each node
        keys = [k for k in ("gossip:%d" % i for i in range(300)) if 0 < key_hash(k.encode()) <= 2 ** 31]
        backend = backend_of(joiner)
        for i, n in enumerate(first):
            self.assertTrue(fx.client(n).set(keys[i], "v%d" % i))
        if not poll(lambda: all(backend.get(keys[i]) == b"v%d" % i for i in range(3)), fx.layout.timeout() * 3):
            self.fail_with("keys the joiner owns did not land on its redis-server: %r"
                           % [backend.get(k) for k in keys[:3]])
        self.assertLessEqual(took, bound)

        # bootstrap: true made it join (dynomite.scaleout): the keys of its
        # ranges were copied to it, it owns them, and rack 1's first node
        # dropped them once every node knew
        backend = backend_of(joiner)
        if not poll(lambda: all(backend.get(k) == b"old" for k in old), bound + 5 * fx.layout.timeout()):
            self.fail_with("the join did not copy the joiner's ranges: %d of %d keys"
                           % (sum(backend.get(k) == b"old" for k in old), len(old)))
        if not poll(lambda: all(self.view(n).get(name, {}).get("status") == "NORMAL" for n in first), bound):
            self.fail_with("the joiner is not NORMAL in every view: %r" % [self.view(n).get(name) for n in first])
        if not poll(lambda: not fx.backend(first[0]).exists(*(old + keys[:3])), bound + 3 * fx.layout.timeout()):
            self.fail_with("rack 1's first node still holds keys it gave away")
        self.assertEqual(fx.client(first[0]).mget(old[:5]), [b"old"] * 5, "read in rack 1, whose owner is the joiner")

        # a node whose token clashes with rack 2's node is refused by its seed, and counted
        clash = self.start_node_process(address(OWN_CLUSTERS_SUBNET, BLOCK + 4), rack="rack2",
                                        tokens=",".join(map(str, seed.tokens)), dyn_seeds=[first[0].seed])
        clash_name = "%s:%d" % clash.dyn_address
        if not poll(lambda: fx.info(first[0])["gossip"]["counts"]["refused"] > 0, bound):
            self.fail_with("the clashing node was not refused")
        time.sleep(GOS_INTERVAL / 1000)
        for n in first:
            self.assertNotIn(clash_name, fx.info(n)["peers"], n.name)
            self.assertNotIn(clash_name, self.view(n), n.name)
        refused = re.search(r'^dynomite_gossip_events_total\{event="refused"\} ([0-9.]+)$', fx.metrics(first[0]), re.M)
        self.assertIsNotNone(refused)
        self.assertGreaterEqual(float(refused.group(1)), 1)
