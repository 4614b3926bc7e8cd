"""
Tests for SRV seed discovery (dns_provider with dns_seed_type: srv): pod
names to places and tokens (dynomite.peers.seeds.srv_seeds), the provider
over a fake resolver, its keys (dynomite.config.seed_keys), and the reload
path a pod list feeds.
"""

from __future__ import annotations

import yaml
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.names import dns, error
from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.model import ConfigError, NodeConfig
from dynomite.launcher.topology_file import rack_tokens
from dynomite.node.assembly import NodeParts
from dynomite.node.control import NodeControl
from dynomite.peers.seeds import SeedError, SrvSeeds, make_source, parse_pod_name, srv_seeds

from tests.fakes import FakeDatastore, FakeMonitor

SERVICE = "dynomite.prod.svc.cluster.local"
SRV_NAME = "_peer._tcp." + SERVICE


def pods(racks, sizes=2, dc="dc1", port=8101):
    """SRV (target, port) pairs of every pod of ``racks``, ``sizes`` pods each."""
    return [(f"dynomite-{dc}-{rack}-{i}.{SERVICE}.", port) for rack in racks for i in range(sizes)]


def table(seeds):
    return [(str(s.address), s.datacenter, s.rack, s.tokens) for s in seeds]


class PodNameTests(SynchronousTestCase):
    def test_place_from_the_last_three_fields(self) -> None:
        self.assertEqual(parse_pod_name("dynomite-dc1-rack2-1." + SERVICE), ("dc1", "rack2", 1))
        # the application part may hold '-': only the last three fields count
        self.assertEqual(parse_pod_name("my-app-east-1a-12"), ("east", "1a", 12))

    def test_not_a_pod_name(self) -> None:
        for host in ("dynomite-rack1-0", "dynomite-dc1-rack1-x", "dynomite--rack1-0", "10.0.0.1", "a-b-c-"):
            with self.assertRaises(SeedError) as cm:
                parse_pod_name(host)
            self.assertIn("expected a pod name <app>-<datacenter>-<rack>-<ordinal>", str(cm.exception))


class SrvSeedsTests(SynchronousTestCase):
    def test_tokens_follow_the_ordinal_as_rack_tokens_does(self) -> None:
        seeds = srv_seeds(pods(["rack1", "rack2"], 3), (("*", 3),))
        self.assertEqual(len(seeds), 6)
        for s in seeds:
            _, _, ordinal = parse_pod_name(s.address.host)
            self.assertEqual(s.tokens, (rack_tokens(3)[ordinal],))
        self.assertEqual(table(seeds)[:2], [
            (f"dynomite-dc1-rack1-0.{SERVICE}:8101", "dc1", "rack1", (0,)),
            (f"dynomite-dc1-rack1-1.{SERVICE}:8101", "dc1", "rack1", (1431655765,)),
        ])

    def test_sizes_per_rack(self) -> None:
        targets = pods(["rack1"], 1) + pods(["rack2"], 4)
        seeds = srv_seeds(targets, (("rack1", 1), ("rack2", 4)))
        self.assertEqual(sorted(s.tokens[0] for s in seeds if s.rack == "rack2"), rack_tokens(4))
        with self.assertRaises(SeedError) as cm:
            srv_seeds(targets, (("rack2", 4),))
        self.assertIn("rack 'rack1' has no dns_seed_rack_size", str(cm.exception))

    def test_a_rack_missing_a_pod_is_refused(self) -> None:
        """A pod out of DNS (restarting) must not hand its tokens to another pod of its rack."""
        targets = [t for t in pods(["rack1", "rack2"]) if not t[0].startswith("dynomite-dc1-rack2-0.")]
        with self.assertRaises(SeedError) as cm:
            srv_seeds(targets, (("*", 2),))
        self.assertIn("rack dc1/rack2 lacks pod(s) 0", str(cm.exception))

    def test_ordinal_beyond_the_size_and_duplicates(self) -> None:
        with self.assertRaises(SeedError) as cm:
            srv_seeds(pods(["rack1"], 3), (("*", 2),))
        self.assertIn("ordinal 2 is not below rack rack1's size 2", str(cm.exception))
        twice = pods(["rack1"]) + [("other-dc1-rack1-0.x", 8101)]
        with self.assertRaises(SeedError) as cm:
            srv_seeds(twice, (("*", 2),))
        self.assertIn("are both pod 0 of dc1/rack1", str(cm.exception))


class FakeSrvResolver:
    def __init__(self, records) -> None:
        self.records = records
        self.asked = []

    def lookupService(self, name):
        self.asked.append(name)
        if name not in self.records:
            return defer.fail(error.DNSNameError(name))
        answers = [dns.RRHeader(name, dns.SRV, payload=dns.Record_SRV(0, 50, port, target))
                   for target, port in self.records[name]]
        return defer.succeed((answers, [], []))


class SrvProviderTests(SynchronousTestCase):
    def test_fetch(self) -> None:
        resolver = FakeSrvResolver({SRV_NAME: pods(["rack1", "rack2"], 2, port=18101)})
        seeds = self.successResultOf(SrvSeeds(SRV_NAME, resolver, (("*", 2),)).fetch())
        self.assertEqual(len(seeds), 4)
        self.assertEqual({s.address.port for s in seeds}, {18101})
        self.assertEqual(resolver.asked, [SRV_NAME])

    def test_a_rack_seen_before_may_not_vanish(self) -> None:
        """A one-pod rack whose pod restarts leaves DNS altogether: its replicas stay where they were."""
        resolver = FakeSrvResolver({SRV_NAME: pods(["rack1", "rack2", "rack3"], 1)})
        source = SrvSeeds(SRV_NAME, resolver, (("*", 1),))
        self.assertEqual(len(self.successResultOf(source.fetch())), 3)
        resolver.records[SRV_NAME] = pods(["rack1", "rack3"], 1)
        failure = self.failureResultOf(source.fetch(), SeedError)
        self.assertIn("rack(s) dc1/rack2 gone from DNS", str(failure.value))
        resolver.records[SRV_NAME] = pods(["rack1", "rack2", "rack3", "rack4"], 1)
        self.assertEqual(len(self.successResultOf(source.fetch())), 4)

    def test_no_records_is_an_error(self) -> None:
        failure = self.failureResultOf(SrvSeeds("_peer._tcp.none", FakeSrvResolver({}), (("*", 2),)).fetch(),
                                       SeedError)
        self.assertIn("no SRV records for _peer._tcp.none", str(failure.value))
        failure = self.failureResultOf(SrvSeeds("x", FakeSrvResolver({"x": []}), (("*", 2),)).fetch(), SeedError)
        self.assertIn("no SRV records for x", str(failure.value))


def pool(**extra):
    doc = {"listen": "0.0.0.0:8102", "dyn_listen": "0.0.0.0:8101", "servers": ["127.0.0.1:6379:1"],
           "tokens": "2147483648", "datacenter": "dc1", "rack": "rack1",
           "dyn_advertise": f"dynomite-dc1-rack1-1.{SERVICE}:8101", "dyn_seed_provider": "dns_provider",
           "dns_seed_name": SRV_NAME, "dns_seed_server": "10.0.0.53:53"}
    doc.update(extra)
    return {"dyn_o_mite": doc}


class KeysTests(SynchronousTestCase):
    def test_srv_with_sizes(self) -> None:
        config = NodeConfig.from_dict(pool(dns_seed_type="SRV", dns_seed_rack_size=2))
        self.assertEqual((config.dns_seed_type, config.dns_seed_rack_size), ("srv", (("*", 2),)))
        config = NodeConfig.from_dict(pool(dns_seed_type="srv", dns_seed_rack_size={"rack1": 2, 3: 1}))
        self.assertEqual(config.dns_seed_rack_size, (("rack1", 2), ("3", 1)))
        source = make_source(config, Clock())
        self.assertIsInstance(source, SrvSeeds)
        self.assertEqual(str(source), f"DNS SRV {SRV_NAME}")
        self.assertEqual(NodeConfig.from_dict(pool()).dns_seed_type, "txt")

    def test_refused(self) -> None:
        cases = [
            ({"dns_seed_type": "srv"}, "dns_seed_rack_size: required with dns_seed_type srv"),
            ({"dns_seed_rack_size": 2}, "dns_seed_rack_size: only read with dns_seed_type srv"),
            ({"dns_seed_type": "mx"}, "dns_seed_type: expected one of txt, srv, got 'mx'"),
            ({"dns_seed_type": "srv", "dns_seed_rack_size": 0}, "expected a positive number of pods, got 0"),
            ({"dns_seed_type": "srv", "dns_seed_rack_size": {}}, "got {}"),
            ({"dns_seed_type": "srv", "dns_seed_rack_size": {"rack1": "two"}}, "rack rack1: expected a positive"),
            ({"dns_seed_type": "srv", "dns_seed_rack_size": {"a b": 1}}, "expected rack names as keys"),
        ]
        for extra, message in cases:
            with self.assertRaises(ConfigError) as cm:
                NodeConfig.from_dict(pool(**extra), source="node.yml")
            self.assertIn(message, str(cm.exception), extra)
            self.assertTrue(str(cm.exception).startswith("node.yml: "), str(cm.exception))


class ApplyPodListTests(SynchronousTestCase):
    """A pod list from SRV: the node finds itself by its advertised name and peers with the rest."""

    def test_pods_become_peers(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            yaml.safe_dump(pool(dns_seed_type="srv", dns_seed_rack_size=2, data_dir=self.mktemp()), f)
        parts = NodeParts(NodeConfig.from_yaml(path), Clock(), FakeDatastore(), FakeMonitor())
        parts.start()
        self.addCleanup(parts.stop)
        control = NodeControl(parts, is_running=lambda: True)
        # no peers before the first list, yet peers may hold hints for it: not readable
        self.assertEqual((len(parts.links), parts.membership.state), (0, "RESUMING"))
        self.assertTrue(control.apply_seeds(srv_seeds(pods(["rack1", "rack2"]), (("*", 2),))))
        self.assertEqual(parts.topology.local.name, f"dynomite-dc1-rack1-1.{SERVICE}:8101")
        self.assertEqual(sorted(parts.links), sorted(f"{t.rstrip('.')}:8101" for t, _ in pods(["rack1", "rack2"])
                                                     if not t.startswith("dynomite-dc1-rack1-1.")))
