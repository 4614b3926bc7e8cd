"""
Scale-out on the operator's side (issue: online scale-out, item 3): the
/scaleout and /decommission admin paths, /info's ``scaleout`` section,
/cluster_describe's ring status and moving ranges, and the scale-out
metrics, driven as in test_admin: real HTTP requests parsed by a `Site`
over a `StringTransport`, answered from a `NodeStatus` over fake parts.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, Dict, Optional

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.model import Address
from dynomite.ops.admin import HELP, AdminResource, AdminSite
from dynomite.ops.metrics import make_registry
from dynomite.ops.status import NodeStatus
from dynomite.placement.topology import NodeInfo, Topology
from dynomite.scaleout.manager import COUNTED, PHASES

from tests.fakes import FakeLink, FakeNode
from tests.unit.test_admin import TOKEN, Admin

JOINER = "127.0.0.4:8101"
LEAVER = "127.0.0.5:8101"
HALF = 2 ** 31


class FakeScaleOut:
    """What ops reads and starts of a `dynomite.scaleout.manager.ScaleOut`."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTED, 0)
        self.phase = "idle"
        self.operation: Optional[str] = None
        self.refusal: Optional[str] = None
        self.decommissions = 0

    def status(self) -> Dict[str, Any]:
        return {"status": "LEAVING" if self.operation == "leave" else "NORMAL", "tokens": [0],
                "operation": self.operation, "phase": self.phase, "reason": None, "started": 5.0,
                "finished": None, "ranges": [], "dropped": 0, "moving": []}

    def decommission(self) -> Optional[str]:
        self.decommissions += 1
        if self.refusal is not None:
            return self.refusal
        self.operation, self.phase = "leave", "announcing"
        return None


def with_scaleout(node: FakeNode, scaleout: Optional[FakeScaleOut]) -> Admin:
    """An `Admin` over ``node`` whose status view and resource are given ``scaleout``."""
    admin = Admin(node)
    status = NodeStatus(
        config=lambda: node.config, clock=node.clock, settings=node.settings, membership=node.membership,
        topology=lambda: node.topology, datastore=node.datastore, peers=node.peers, outboxes=node.outboxes,
        clients=node.clients, replication=node.replication, metrics=node.metrics, repairs=node.repairs,
        scaleout=scaleout)
    admin.resource = AdminResource(status, node.control, make_registry(status), TOKEN, scaleout=scaleout)
    admin.site = AdminSite(admin.resource)
    return admin


def moving_topology(node: FakeNode) -> None:
    """
    ``node``'s cluster with a node joining rack1 of dc1 (taking 1..2**31
    from this node) and one leaving rack2 (giving 1..2**31 back to
    127.0.0.2), each with a peer link.
    """
    def info(name: str, rack: str, token: int, status: str = "NORMAL", dc: str = "dc1", local: bool = False):
        host, port = name.split(":")
        return NodeInfo(name, dc, rack, Address(host, int(port)), (token,), local, status)

    node.topology = Topology([
        info("127.0.0.1:8101", "rack1", 0, local=True), info(JOINER, "rack1", HALF, "JOINING"),
        info("127.0.0.2:8101", "rack2", 0), info(LEAVER, "rack2", HALF, "LEAVING"),
        info("127.0.0.3:8101", "rack1", 0, dc="dc2"),
    ])
    for name, rack in ((JOINER, "rack1"), (LEAVER, "rack2")):
        host, port = name.split(":")
        node.peers[name] = FakeLink(SimpleNamespace(address=Address(host, int(port)), datacenter="dc1", rack=rack))


def samples(admin: Admin) -> Dict[Any, float]:
    status, body = admin.get("/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


class GossipOffTests(SynchronousTestCase):
    """A node without gossip says scale-out is off, and refuses to leave with the reason."""

    def setUp(self) -> None:
        self.node = FakeNode()
        self.admin = with_scaleout(self.node, None)

    def test_status_paths_say_disabled(self) -> None:
        self.assertEqual(self.admin.json("/scaleout"), {"enabled": False})
        self.assertEqual(self.admin.json("/info")["scaleout"], {"enabled": False})
        self.assertIn("/scaleout", HELP)
        self.assertIn("/decommission", HELP)

    def test_decommission_is_refused_with_400(self) -> None:
        self.assertEqual(self.admin.get("/decommission")[0], 403)
        status, body = self.admin.get("/decommission", token=TOKEN)
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body), {
            "error": "gossip is off on this node (enable_gossip): it cannot leave while serving"})
        self.assertEqual(self.node.control.calls, [])

    def test_metrics_start_at_zero(self) -> None:
        got = samples(self.admin)
        for event in COUNTED:
            self.assertEqual(got[("dynomite_scaleout_keys_total", (("event", event),))], 0)
        running = {labels[0][1]: v for (name, labels), v in got.items() if name == "dynomite_scaleout_running"}
        self.assertEqual(running, dict.fromkeys(
            ["waiting", "announcing", "flushing", "copying", "handing_over", "cutting_over", "cleaning"], 0))


class GossipOnTests(SynchronousTestCase):
    """A node with gossip: its move on /scaleout and /info, /decommission starting a leave."""

    def setUp(self) -> None:
        self.node = FakeNode()
        self.scaleout = FakeScaleOut()
        self.admin = with_scaleout(self.node, self.scaleout)

    def test_scaleout_and_info_show_the_status(self) -> None:
        expected = dict(self.scaleout.status(), enabled=True)
        self.assertEqual(self.admin.json("/scaleout"), expected)
        self.assertEqual(self.admin.json("/info")["scaleout"], expected)
        self.assertEqual(self.admin.get("/scaleout/more")[0], 404)

    def test_decommission_needs_the_token(self) -> None:
        self.assertEqual(self.admin.get("/decommission")[0], 403)
        self.assertEqual(self.admin.get("/decommission", token="wrong")[0], 403)
        self.assertEqual(self.scaleout.decommissions, 0)

    def test_decommission_starts_a_leave_and_answers_the_status(self) -> None:
        doc = self.admin.json("/decommission", token=TOKEN)
        self.assertEqual(self.scaleout.decommissions, 1)
        self.assertEqual((doc["enabled"], doc["operation"], doc["phase"], doc["status"]),
                         (True, "leave", "announcing", "LEAVING"))
        self.assertEqual(self.admin.get("/decommission/now", token=TOKEN)[0], 404)
        self.assertEqual(self.scaleout.decommissions, 1)

    def test_a_refusal_is_409_with_the_managers_words(self) -> None:
        why = "this node is the last of dc1/rack1: nobody could take its ranges"
        self.scaleout.refusal = why
        status, body = self.admin.get("/decommission", token=TOKEN)
        self.assertEqual((status, json.loads(body)), (409, {"error": why}))
        self.assertEqual(self.scaleout.decommissions, 1)

    def test_counts_and_running_phase(self) -> None:
        self.scaleout.counts.update(scanned=540, copied=266, error=2, dropped=266)
        self.scaleout.phase = "copying"
        got = samples(self.admin)
        self.assertEqual({e: got[("dynomite_scaleout_keys_total", (("event", e),))] for e in COUNTED},
                         {"scanned": 540, "copied": 266, "error": 2, "dropped": 266})
        running = {labels[0][1]: v for (name, labels), v in got.items() if name == "dynomite_scaleout_running"}
        self.assertEqual(running["copying"], 1)
        self.assertEqual(sum(running.values()), 1)
        self.assertEqual(set(running), set(PHASES) - {"idle", "done", "failed"})
        for ended in ("done", "failed", "idle"):
            self.scaleout.phase = ended
            got = samples(self.admin)
            self.assertEqual(sum(v for (name, _), v in got.items() if name == "dynomite_scaleout_running"), 0)


class MovingRingTests(SynchronousTestCase):
    """Nodes joining and leaving in /cluster_describe and dynomite_ring_nodes."""

    def setUp(self) -> None:
        self.node = FakeNode()
        moving_topology(self.node)
        self.admin = with_scaleout(self.node, FakeScaleOut())

    def test_cluster_describe_lists_the_moving_nodes_and_ranges(self) -> None:
        described = self.admin.json("/cluster_describe")
        servers = {s["name"]: (rack["name"], s["status"], s["tokens"], s["admin"])
                   for dc in described["dcs"] for rack in dc["racks"] for s in rack["servers"]}
        self.assertEqual(servers[JOINER], ("rack1", "JOINING", [HALF], "127.0.0.4:22222"))
        self.assertEqual(servers[LEAVER], ("rack2", "LEAVING", [HALF], "127.0.0.5:22222"))
        self.assertEqual(servers["127.0.0.1:8101"][1], "NORMAL")
        moving = {(dc["name"], rack["name"]): rack["moving"] for dc in described["dcs"] for rack in dc["racks"]}
        self.assertEqual(moving, {
            ("dc1", "rack1"): [{"start": 1, "end": HALF, "from": "127.0.0.1:8101", "to": JOINER}],
            ("dc1", "rack2"): [{"start": 1, "end": HALF, "from": LEAVER, "to": "127.0.0.2:8101"}],
            ("dc2", "rack1"): [],
        })

    def test_ring_nodes_by_status(self) -> None:
        self.node.peers[LEAVER].is_up = False
        got = samples(self.admin)
        ring = {tuple(v for _, v in labels): n for (name, labels), n in got.items() if name == "dynomite_ring_nodes"}
        nonzero = {labels: n for labels, n in ring.items() if n}
        self.assertEqual(nonzero, {
            ("dc1", "rack1", "up", "NORMAL"): 1, ("dc1", "rack1", "up", "JOINING"): 1,
            ("dc1", "rack2", "up", "NORMAL"): 1, ("dc1", "rack2", "down", "LEAVING"): 1,
            ("dc2", "rack1", "up", "NORMAL"): 1,
        })
        # every status and link state of every rack is exported, at 0 until it happens
        self.assertEqual(len(ring), 3 * 2 * 3)


class LiveScaleOutTests(SynchronousTestCase):
    """
    The admin paths over a real `ScaleOut` in an in-process cluster (1 DC x
    2 racks, gossip on; `tests.cluster.inprocess`): a node joins rack1,
    then leaves it through /decommission.  The status view and resource
    are wired as `dynomite.service.NodeService` wires them.
    """

    def admin(self, node) -> Admin:
        parts = node.parts
        fake = FakeNode()
        status = NodeStatus(
            config=lambda: parts.config, clock=self.cluster.clock, settings=parts.settings,
            membership=parts.membership, topology=lambda: parts.topology, datastore=fake.datastore,
            peers=parts.links, outboxes=parts.outboxes, clients=parts.node, replication=parts.coordinator,
            metrics=parts.metrics, repairs=parts.repairs, gossip=parts.gossip, scaleout=parts.scaleout)
        admin = Admin(fake)
        admin.resource = AdminResource(status, fake.control, make_registry(status), TOKEN, scaleout=parts.scaleout)
        admin.site = AdminSite(admin.resource)
        return admin

    def until(self, done, bound: float) -> None:
        waited = 0.0
        while not done():
            self.assertLess(waited, bound, "not done after %.2f s" % bound)
            self.cluster.advance(0.25)
            waited += 0.25

    def test_join_then_decommission_through_the_admin_api(self) -> None:
        from tests.cluster.inprocess import make_cluster
        self.cluster = cluster = make_cluster(self, {"dc1": {"rack1": 1, "rack2": 1}}, enable_gossip=True,
                                              gos_interval=1000)
        first, seed = cluster.node("dc1", "rack1"), cluster.node("dc1", "rack2")
        client = cluster.client(first)
        for i in range(300):
            self.assertEqual(client.command("SET", b"k%d" % i, b"v"), b"+OK\r\n")
        new = cluster.add_node("10.0.0.9:8101", "dc1", "rack1", HALF,
                               ["%s:rack2:dc1:%d" % (seed.name, seed.config.tokens[0])], bootstrap=True)
        mine, theirs = self.admin(new), self.admin(first)
        self.until(lambda: mine.json("/scaleout")["status"] == "JOINING" and
                   theirs.json("/cluster_describe")["dcs"][0]["racks"][0]["moving"], 30.0)
        rack1 = theirs.json("/cluster_describe")["dcs"][0]["racks"][0]
        self.assertEqual({s["name"]: s["status"] for s in rack1["servers"]},
                         {first.name: "NORMAL", new.name: "JOINING"})
        self.assertEqual(rack1["moving"], [{"start": 1, "end": HALF, "from": first.name, "to": new.name}])
        self.until(lambda: mine.json("/scaleout")["phase"] == "done", 60.0)
        doc = mine.json("/info")["scaleout"]
        self.assertEqual((doc["enabled"], doc["operation"], doc["status"]), (True, "join", "NORMAL"))
        self.assertGreater(doc["copy"]["copied"], 0)
        copied = samples(mine)[("dynomite_scaleout_keys_total", (("event", "copied"),))]
        self.assertEqual(copied, doc["copy"]["copied"])

        left = mine.json("/decommission", token=TOKEN)
        self.assertEqual((left["operation"], left["status"]), ("leave", "LEAVING"))
        status, body = mine.get("/decommission", token=TOKEN)
        self.assertEqual(status, 409)
        self.assertEqual(json.loads(body)["error"], "a leave is under way (%s)" % mine.json("/scaleout")["phase"])
        self.until(lambda: first.parts.topology.node(new.name).status == "LEAVING", 10.0)
        status, body = theirs.get("/decommission", token=TOKEN)
        self.assertEqual(status, 409)
        self.assertIn("one move per rack at a time: ", json.loads(body)["error"])
        running = samples(mine)
        self.assertEqual(sum(v for (name, _), v in running.items() if name == "dynomite_scaleout_running"), 1)
        self.until(lambda: mine.json("/scaleout")["phase"] == "done", 60.0)
        self.assertEqual(mine.json("/scaleout")["status"], "LEFT")
