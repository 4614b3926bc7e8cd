"""
The admin HTTP API (`dynomite.ops.admin`), driven in memory: real HTTP
requests parsed by a twisted.web `Site` over a `StringTransport`, answered
from a `NodeStatus` over fake parts of a node, with changes going to a
recording `INodeControl`.
"""

from __future__ import annotations

import json
from typing import Optional, Tuple

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dynomite import __version__
from dynomite.ops.admin import HELP, AdminResource, AdminSite
from dynomite.ops.metrics import make_registry
from dynomite.node.control import INodeControl

from tests.fakes import FakeNode

TOKEN = "let-me-in"


class Admin:
    """An `AdminResource` over a `FakeNode`, behind a real `Site`."""

    def __init__(self, node: FakeNode, token: Optional[str] = TOKEN) -> None:
        self.node = node
        self.resource = AdminResource(node.status, node.control, make_registry(node.status), token)
        self.site = AdminSite(self.resource)

    def get(self, path: str, token: Optional[str] = None, peer: str = "127.0.0.1") -> Tuple[int, bytes]:
        """(status, body) of ``GET path`` from ``peer``, sent as bytes on a fresh connection."""
        transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        headers = b"Host: admin\r\n"
        if token is not None:
            headers += b"X-Admin-Token: " + token.encode() + b"\r\n"
        protocol.dataReceived(b"GET " + path.encode() + b" HTTP/1.1\r\n" + headers + b"\r\n")
        head, _, body = transport.value().partition(b"\r\n\r\n")
        protocol.connectionLost(None)
        return int(head.split(b" ", 2)[1]), body

    def json(self, path: str, token: Optional[str] = None):
        status, body = self.get(path, token)
        assert status == 200, (path, status, body)
        return json.loads(body)


class ReadPathTests(SynchronousTestCase):
    """Paths that only read: answered from the status view."""

    def setUp(self) -> None:
        self.node = FakeNode()
        self.admin = Admin(self.node)

    def test_read_paths(self) -> None:
        info = self.admin.json("/info")
        self.assertEqual((info["dc"], info["rack"], info["state"]), ("dc1", "rack1", "NORMAL"))
        self.assertTrue(info["datastore"]["up"])
        self.assertEqual(self.admin.json("/")["service"], "dynomite")
        self.assertEqual(self.admin.get("/ping"), (200, b"pong\n"))
        self.assertEqual(self.admin.json("/help")["paths"], HELP)
        described = self.admin.json("/cluster_describe")
        server = described["dcs"][0]["racks"][0]["servers"][0]
        self.assertEqual((server["tokens"], server["state"]), ([0], "NORMAL"))
        self.assertEqual(self.admin.json("/get_consistency"),
                         {"read_consistency": "DC_ONE", "write_consistency": "DC_ONE"})
        self.assertEqual(self.admin.json("/get_timeout_factor"), {"timeout_factor": 1})
        self.assertEqual(self.admin.json("/state/get_state"), {"state": "NORMAL"})
        self.assertEqual(self.node.control.calls, [])

    def test_ready_only_in_normal(self) -> None:
        """/ready is Kubernetes readiness: 200 in NORMAL, 503 naming the state otherwise; /ping stays 200."""
        self.assertEqual(self.admin.get("/ready"), (200, b"NORMAL\n"))
        for state in ("RESUMING", "STANDBY", "WRITES_ONLY"):
            self.node.membership.state = state
            self.assertEqual(self.admin.get("/ready"), (503, state.encode() + b"\n"))
            self.assertEqual(self.admin.get("/ping"), (200, b"pong\n"))
        self.node.membership.state = "NORMAL"
        self.node.membership.leaving = True
        self.assertEqual(self.admin.get("/ready"), (503, b"LEAVING\n"))

    def test_info_document(self) -> None:
        """/info reads each part of the node: identity, clients, datastore, peers, replication, hints."""
        node = self.node
        node.clock.advance(42)
        node.clients.clients.add(object())
        node.clients.connections_accepted = 3
        node.metrics.requests["string"][:] = [5, 1]
        node.metrics.write_latency.observe(0.002)
        node.datastore.counts["ok"] = 7
        node.datastore.latency.observe(0.001)
        near, far = node.peers["127.0.0.2:8101"], node.peers["127.0.0.3:8101"]
        near.counts["ok"], far.counts["timeout"], far.timed_out_total = 4, 2, 2
        far.is_up = False
        node.replication.local_writes[:] = [9, 1]
        node.replication.remote_writes[:] = [8, 2]
        node.outboxes["dc:dc2"].pending = 3
        info = self.admin.json("/info")
        self.assertEqual((info["name"], info["version"], info["uptime"]), ("127.0.0.1:8101", __version__, 42))
        self.assertEqual(info["client"], {"connections": 1, "accepted": 3, "floods": 0, "flooders": 0, "flooded": False,
                                          "protocol_errors": {"malformed": 0, "oversize": 0},
                                          "limits": {"maxclients": 0, "idle": 0, "read_timeout": 0,
                                                     "output_buffer": 0, "accept_rate": 0, "flood": 0,
                                                     "flooder": 0},
                                          "requests": {"string": {"ok": 5, "error": 1}}})
        self.assertEqual(info["latency_seconds"]["write"]["count"], 1)
        self.assertEqual(info["datastore"]["requests"]["ok"], 7)
        self.assertEqual(info["datastore"]["address"], "127.0.0.1:6379")
        self.assertEqual(info["datastore"]["latency_seconds"]["samples"], 1)
        self.assertEqual(info["peers"], {"127.0.0.2:8101": "UP", "127.0.0.3:8101": "DOWN"})
        self.assertEqual(info["peer"]["requests"], {"dc1": {"ok": 4, "error": 0, "timeout": 0, "unavailable": 0},
                                                    "dc2": {"ok": 0, "error": 0, "timeout": 2, "unavailable": 0}})
        self.assertEqual(info["peer"]["timeouts"], 2)
        self.assertEqual(info["replication"], {"local_rack": {"acked": 9, "failed": 1},
                                               "remote_dc": {"acked": 8, "failed": 2}})
        self.assertEqual(sorted(info["hints"]), ["127.0.0.1:8101", "127.0.0.2:8101", "127.0.0.3:8101", "dc:dc2"])
        self.assertEqual(info["hints"]["dc:dc2"]["pending"], 3)
        node.metrics.pubsub["published"] = 2
        node.metrics.pubsub_subscriptions["pattern"] = 1
        self.assertEqual(self.admin.json("/info")["pubsub"], {
            "messages": {"published": 2, "received": 0, "delivered": 0, "dropped": 0},
            "subscriptions": {"channel": 0, "pattern": 1, "shard_channel": 0}})

    def test_cluster_describe(self) -> None:
        """Every node by datacenter and rack; this node with its own state, peers UP or DOWN."""
        self.node.membership.state = "STANDBY"
        self.node.peers["127.0.0.3:8101"].is_up = False
        described = self.admin.json("/cluster_describe")
        self.assertEqual([dc["name"] for dc in described["dcs"]], ["dc1", "dc2"])
        rows = [(dc["name"], rack["name"], s["name"], s["state"], s["local"], s["admin"])
                for dc in described["dcs"] for rack in dc["racks"] for s in rack["servers"]]
        self.assertEqual(rows, [
            ("dc1", "rack1", "127.0.0.1:8101", "STANDBY", True, "127.0.0.1:22222"),
            ("dc1", "rack2", "127.0.0.2:8101", "NORMAL", False, "127.0.0.2:22222"),
            ("dc2", "rack1", "127.0.0.3:8101", "DOWN", False, "127.0.0.3:22222"),
        ])

    def test_unknown_path_is_404(self) -> None:
        status, body = self.admin.get("/nope")
        self.assertEqual(status, 404)
        self.assertIn(b"no such path", body)
        self.assertEqual(self.admin.get("/info/more")[0], 404)

    def test_metrics(self) -> None:
        """/metrics renders the registry it was given, in the Prometheus text format."""
        self.node.membership.state = "WRITES_ONLY"
        status, body = self.admin.get("/metrics")
        self.assertEqual(status, 200)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        self.assertEqual(samples[("dynomite_node_state", (("state", "WRITES_ONLY"),))], 1)
        self.assertEqual(samples[("dynomite_datastore_up", ())], 1)
        self.assertTrue(any(name.startswith("process_") for name, _ in samples))


class WritePathTests(SynchronousTestCase):
    """Paths that change something: the token, validation, and the control they call."""

    def setUp(self) -> None:
        self.node = FakeNode()
        self.admin = Admin(self.node)
        self.control = self.node.control

    def test_the_fake_control_is_an_INodeControl(self) -> None:
        self.assertTrue(verifyObject(INodeControl, self.control))

    def test_mutating_paths_need_the_token(self) -> None:
        self.assertEqual(self.admin.get("/set_consistency/read/dc_quorum")[0], 403)
        self.assertEqual(self.admin.get("/set_consistency/read/dc_quorum", token="wrong")[0], 403)
        self.assertEqual(self.admin.get("/set_consistency/read/dc_quorum?token=wrong")[0], 403)
        self.assertEqual(self.control.calls, [])
        status, body = self.admin.get("/set_consistency/read/dc_quorum", token=TOKEN)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["read_consistency"], "DC_QUORUM")
        self.assertEqual(self.admin.get("/set_consistency/read/bogus", token=TOKEN)[0], 400)
        self.assertEqual(self.admin.get("/set_consistency/sideways/dc_one", token=TOKEN)[0], 400)
        self.assertEqual(self.admin.get("/set_timeout_factor/3?token=" + TOKEN)[0], 200)
        self.assertEqual(self.admin.json("/get_timeout_factor"), {"timeout_factor": 3})
        self.assertEqual(self.admin.get("/set_timeout_factor/11", token=TOKEN)[0], 400)
        self.assertEqual(self.admin.json("/setloglevel/7", token=TOKEN), {"loglevel": 7, "level": "debug"})
        self.assertEqual(self.admin.get("/setloglevel/12", token=TOKEN)[0], 400)
        self.assertEqual(self.control.calls, [("set_consistency", "read", "DC_QUORUM"),
                                              ("set_timeout_factor", 3), ("set_log_level", 7)])

    def test_gossip_paths(self) -> None:
        self.assertEqual(self.admin.json("/gossip"), {"enabled": False})
        self.assertEqual(self.admin.json("/info")["gossip"], {"enabled": False})
        self.assertEqual(self.admin.get("/gossip/remove/10.0.0.9:8101")[0], 403)
        self.assertEqual(self.control.calls, [])
        status, body = self.admin.get("/gossip/remove/10.0.0.9:8101", token=TOKEN)
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body), {"error": "gossip is off on this node (enable_gossip)"})
        self.assertEqual(self.admin.get("/gossip/forget/10.0.0.9:8101", token=TOKEN)[0], 400)
        self.assertEqual(self.control.calls, [("remove_node", "10.0.0.9:8101")])

    def test_no_token_configured_leaves_writes_open_to_loopback_only(self) -> None:
        admin = Admin(self.node, token=None)
        self.assertEqual(admin.json("/set_timeout_factor/2"), {"timeout_factor": 2})
        self.assertEqual(admin.get("/set_timeout_factor/3", peer="127.0.3.4")[0], 200)
        status, body = admin.get("/set_timeout_factor/4", peer="192.0.2.7")
        self.assertEqual(status, 403)
        self.assertIn(b"needs admin_token", body)
        self.assertEqual(admin.get("/get_timeout_factor", peer="192.0.2.7")[0], 200)   # reads stay open
        self.assertEqual(self.control.calls, [("set_timeout_factor", 2), ("set_timeout_factor", 3)])

    def test_info_shows_the_live_consistency(self) -> None:
        """/info and /get_consistency show what /set_consistency set, not the configuration file."""
        self.admin.json("/set_consistency/write/dc_safe_quorum", token=TOKEN)
        self.admin.json("/set_consistency/read/dc_quorum", token=TOKEN)
        info = self.admin.json("/info")
        self.assertEqual((info["read_consistency"], info["write_consistency"]), ("DC_QUORUM", "DC_SAFE_QUORUM"))
        self.assertEqual(self.node.config.read_consistency, "DC_ONE")
        self.assertEqual(self.admin.json("/get_consistency"),
                         {"read_consistency": "DC_QUORUM", "write_consistency": "DC_SAFE_QUORUM"})

    def test_state(self) -> None:
        self.assertEqual(self.admin.json("/state/writes_only", token=TOKEN), {"state": "WRITES_ONLY"})
        self.assertEqual(self.admin.json("/state/get_state"), {"state": "WRITES_ONLY"})
        self.assertEqual(self.admin.json("/info")["state"], "WRITES_ONLY")
        self.assertEqual(self.admin.json("/state/standby", token=TOKEN), {"state": "STANDBY"})
        status, body = self.admin.get("/state/down", token=TOKEN)
        self.assertEqual(status, 400)
        self.assertIn(b"/state/<get_state|normal|standby|writes_only|resuming>", body)
        self.assertEqual(self.admin.get("/state/standby")[0], 403)
        self.assertEqual(self.control.calls, [("set_state", "WRITES_ONLY"), ("set_state", "STANDBY")])

    def test_peer(self) -> None:
        answer = self.admin.json("/peer/down/127.0.0.3:8101", token=TOKEN)
        self.assertEqual(answer, {"peers": {"127.0.0.3:8101": "DOWN"}})
        answer = self.admin.json("/peer/reset/all", token=TOKEN)
        self.assertEqual(answer, {"peers": {"127.0.0.2:8101": "UP", "127.0.0.3:8101": "DOWN"}})
        self.admin.json("/peer/up/127.0.0.3:8101", token=TOKEN)
        status, body = self.admin.get("/peer/down/10.0.0.9:8101", token=TOKEN)
        self.assertEqual(status, 404)
        self.assertIn(b"peers: 127.0.0.2:8101, 127.0.0.3:8101", body)
        self.assertEqual(self.admin.get("/peer/sideways/all", token=TOKEN)[0], 400)
        self.assertEqual(self.control.calls, [
            ("peer_down", "127.0.0.3:8101"), ("peer_reset", "127.0.0.2:8101"), ("peer_reset", "127.0.0.3:8101"),
            ("peer_up", "127.0.0.3:8101"),
        ])

    def test_hints(self) -> None:
        self.node.outboxes["dc:dc2"].pending = 4
        answer = self.admin.json("/hints/dc:dc2/truncate", token=TOKEN)
        self.assertEqual(answer["hints"]["dc:dc2"]["pending"], 0)
        answer = self.admin.json("/hints/all/pause", token=TOKEN)
        self.assertEqual({t: s["state"] for t, s in answer["hints"].items()},
                         dict.fromkeys(self.node.outboxes, "PAUSED"))
        self.admin.json("/hints/127.0.0.2:8101/resume", token=TOKEN)
        status, body = self.admin.get("/hints/10.0.0.9:8101/pause", token=TOKEN)
        self.assertEqual(status, 404)
        self.assertIn(b"no hints for 10.0.0.9:8101", body)
        self.assertEqual(self.admin.get("/hints/all/forget", token=TOKEN)[0], 400)
        targets = sorted(self.node.outboxes)
        self.assertEqual(self.control.calls,
                         [("truncate_hints", "dc:dc2")] + [("pause_hints", t) for t in targets]
                         + [("resume_hints", "127.0.0.2:8101")])
