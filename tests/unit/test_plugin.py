"""The twistd plugin is discoverable and its options validate the config."""

from __future__ import annotations

import os

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from dynomite import tap

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "etc")


class PluginTests(SynchronousTestCase):
    def test_discovered(self):
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("dynomite", makers)
        self.assertEqual(makers["dynomite"].module, "dynomite.tap")

    def test_options_load_config(self):
        options = tap.Options()
        options.parseOptions(["-c", os.path.join(ETC, "single.yml")])
        self.assertEqual(options.node_config.rack, "rack1")

    def test_bad_config_exits_nonzero(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("dyn_o_mite:\n  listen: 127.0.0.1:8102\n  bogus_key: 1\n")
        options = tap.Options()
        e = self.assertRaises(SystemExit, options.parseOptions, ["-c", path])
        self.assertEqual(e.code, 1)

    def test_check_config_exits_zero(self):
        options = tap.Options()
        e = self.assertRaises(
            SystemExit, options.parseOptions, ["--check-config", "-c", os.path.join(ETC, "single.yml")]
        )
        self.assertEqual(e.code, 0)


class NoDiskBeforeStartTests(SynchronousTestCase):
    """
    twistd builds the service before it forks to daemonize, and a file lock
    does not survive fork: building a node must touch no file (the hint logs'
    lock is taken when the service starts, in the daemon).
    """

    def test_building_the_service_creates_no_hint_file(self):
        from twisted.internet.task import Clock

        from dynomite.service import NodeService
        from tests.fakes import node_config

        data_dir = self.mktemp()
        service = NodeService(node_config(data_dir=data_dir, stats_listen="127.0.0.1:0",
                                          listen="127.0.0.1:0", dyn_listen="127.0.0.1:0"), Clock())
        self.assertFalse(os.path.exists(data_dir))
        self.assertTrue(service.parts.outboxes)
        for outbox in service.parts.outboxes.values():
            self.assertFalse(outbox.started)
