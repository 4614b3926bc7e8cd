"""
Tests for dynomite.node.control: the one way a running node is changed
(admin writes and SIGHUP reloads), acting on the node's parts and on the
live settings everything else reads.
"""

from __future__ import annotations

import yaml
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dynomite.config.model import NodeConfig
from dynomite.node.assembly import NodeParts
from dynomite.node.control import INodeControl, NodeControl

from tests.fakes import FakeDatastore, FakeMonitor


class ControlTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.pool = {
            "listen": "127.0.0.1:8102", "dyn_listen": "127.0.0.1:8101", "servers": ["127.0.0.1:6379:1"],
            "tokens": "0", "datacenter": "dc1", "rack": "rack1", "timeout": 1000,
            "data_dir": self.mktemp(),
            "dyn_seeds": ["127.0.0.2:8101:rack2:dc1:0"],
        }
        self.write()
        self.datastore = FakeDatastore()
        self.parts = NodeParts(NodeConfig.from_yaml(self.path), Clock(), self.datastore, FakeMonitor())
        self.parts.start()
        self.addCleanup(self.parts.stop)
        self.control = NodeControl(self.parts, is_running=lambda: False)

    def write(self, **changes) -> None:
        self.pool.update(changes)
        with open(self.path, "w") as f:
            yaml.safe_dump({"dyn_o_mite": self.pool}, f)

    def test_provides_the_interface(self):
        self.assertTrue(verifyObject(INodeControl, self.control))

    def test_consistency_is_the_live_setting_the_coordinator_uses(self):
        self.control.set_consistency("read", "DC_QUORUM")
        self.assertEqual(self.parts.settings.read_consistency, "DC_QUORUM")
        self.assertEqual(self.parts.coordinator.level(_Session(), False), "DC_QUORUM")
        self.assertRaises(ValueError, self.control.set_consistency, "read", "DC_MANY")

    def test_state(self):
        self.control.set_state("STANDBY")
        self.assertEqual(self.parts.membership.state, "STANDBY")
        self.assertRaises(ValueError, self.control.set_state, "DOWN")

    def test_timeout_factor_scales_datastore_and_peers(self):
        self.control.set_timeout_factor(3)
        self.assertEqual(self.parts.settings.timeout_factor, 3)
        self.assertAlmostEqual(self.datastore.timeout, 3.0)
        (link,) = self.parts.links.values()
        self.assertAlmostEqual(link.timeout, 3 * (1.0 + 0.2))

    def test_hints(self):
        target = "127.0.0.2:8101"
        self.control.pause_hints(target)
        self.assertEqual(self.parts.outboxes[target].state, "PAUSED")
        self.assertEqual(self.control.truncate_hints(target), 0)
        self.control.resume_hints(target)
        self.assertNotEqual(self.parts.outboxes[target].state, "PAUSED")

    def test_reload_applies_consistency_and_new_peers(self):
        self.write(read_consistency="DC_QUORUM",
                   dyn_seeds=["127.0.0.2:8101:rack2:dc1:0", "127.0.0.3:8101:rack3:dc1:0"])
        self.assertTrue(self.control.reload())
        self.assertEqual(self.parts.settings.read_consistency, "DC_QUORUM")
        self.assertEqual(sorted(self.parts.links), ["127.0.0.2:8101", "127.0.0.3:8101"])
        self.assertIn("127.0.0.3:8101", self.parts.outboxes)
        self.assertEqual(len(self.parts.router.topology.nodes), 3)
        self.assertEqual(self.parts.metrics.reloads["success"], 1)

    def test_reload_refuses_a_change_that_needs_a_restart(self):
        self.write(listen="127.0.0.1:9999", read_consistency="DC_QUORUM")
        self.assertFalse(self.control.reload())
        self.assertEqual(self.parts.settings.read_consistency, "DC_ONE")
        self.assertEqual(self.parts.metrics.reloads["failure"], 1)


class _Session:
    read_consistency = None
    write_consistency = None


class GossipControlTests(SynchronousTestCase):
    """What gossip learns is added to the configured seeds, and survives a SIGHUP reload."""

    def setUp(self):
        from dynomite.config.values import Address, Seed

        self.path = self.mktemp()
        self.pool = {
            "listen": "127.0.0.1:8102", "dyn_listen": "127.0.0.1:8101", "servers": ["127.0.0.1:6379:1"],
            "tokens": "0", "datacenter": "dc1", "rack": "rack1", "timeout": 1000, "enable_gossip": True,
            "data_dir": self.mktemp(), "dyn_seeds": ["127.0.0.2:8101:rack2:dc1:0"],
        }
        self.write()
        self.parts = NodeParts(NodeConfig.from_yaml(self.path), Clock(), FakeDatastore(), FakeMonitor())
        self.parts.start()
        self.addCleanup(self.parts.stop)
        self.control = NodeControl(self.parts, is_running=lambda: False)
        self.learned = Seed(Address("127.0.0.3", 8101), "rack3", "dc1", (0,))

    def write(self, **changes) -> None:
        self.pool.update(changes)
        with open(self.path, "w") as f:
            yaml.safe_dump({"dyn_o_mite": self.pool}, f)

    def test_learned_peers_are_added_and_kept_by_a_reload(self):
        self.assertTrue(self.control.apply_gossip((self.learned,), frozenset()))
        self.assertEqual(sorted(self.parts.links), ["127.0.0.2:8101", "127.0.0.3:8101"])
        self.write(dyn_seeds=["127.0.0.2:8101:rack2:dc1:0", "127.0.0.4:8101:rack2:dc1:7"])
        self.assertTrue(self.control.reload())
        self.assertEqual(sorted(self.parts.links), ["127.0.0.2:8101", "127.0.0.3:8101", "127.0.0.4:8101"])

    def test_nodes_gone_leave_even_when_configured(self):
        self.control.apply_gossip((self.learned,), frozenset({"127.0.0.2:8101"}))
        self.assertEqual(sorted(self.parts.links), ["127.0.0.3:8101"])

    def test_a_learned_clash_is_refused_and_the_peers_kept(self):
        from dynomite.config.values import Address, Seed

        clash = Seed(Address("127.0.0.5", 8101), "rack2", "dc1", (0,))
        self.assertFalse(self.control.apply_gossip((clash,), frozenset()))
        self.assertEqual(sorted(self.parts.links), ["127.0.0.2:8101"])
        self.assertIsNone(self.control.learned)
        self.flushLoggedErrors()

    def test_remove_node(self):
        self.assertRaises(LookupError, self.control.remove_node, "127.0.0.9:8101")
        self.parts.gossip.learn({"name": "127.0.0.3:8101", "addr": "127.0.0.3:8101", "dc": "dc1",
                                 "rack": "rack3", "tokens": [0], "status": "NORMAL", "gen": 1, "ver": 1})
        self.assertIn("127.0.0.3:8101", self.parts.gossip.view.entries)
        self.control.remove_node("127.0.0.3:8101")
        self.assertEqual(self.parts.gossip.view.entries["127.0.0.3:8101"].status, "LEFT")
        self.assertRaises(ValueError, self.control.remove_node, "127.0.0.1:8101")
