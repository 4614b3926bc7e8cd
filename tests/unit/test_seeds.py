"""
Tests for dynomite.peers.seeds: reading Dynomite's seed lists, the DNS and
florida providers over fakes, the poller, and the reload path it feeds
(NodeControl.apply_seeds).
"""

from __future__ import annotations


import yaml
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.names import dns, error
from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.model import NodeConfig
from dynomite.node.assembly import NodeParts
from dynomite.node.control import NodeControl
from dynomite.peers.seeds import (
    DnsSeeds, FloridaSeeds, SeedError, SeedPoller, florida_url, parse_florida, parse_seed_text,
    parse_txt_records,
)

from tests.fakes import FakeDatastore, FakeMonitor


def names(seeds):
    return [str(s.address) for s in seeds]


class ParseTests(SynchronousTestCase):
    def test_dynomite_text(self) -> None:
        seeds = parse_seed_text("10.0.0.1:8101:r1:dc1:0|[fd00::2]:8101:r2:dc1:1,2\n")
        self.assertEqual(names(seeds), ["10.0.0.1:8101", "[fd00::2]:8101"])
        self.assertEqual(seeds[1].tokens, (1, 2))

    def test_bad_entry_names_it(self) -> None:
        e = self.assertRaises(SeedError, parse_seed_text, "10.0.0.1:8101:r1:dc1:0|nonsense")
        self.assertIn("'nonsense'", str(e))

    def test_txt_records_filtered_by_addresses(self) -> None:
        texts = ["host=10.0.0.1 port=8101 rack=r1 dc=dc1 tokens=0",
                 "host=10.0.0.9 rack=r2 dc=dc1 tokens=0",          # no A record: not there
                 "host=fd00::3 rack=r3 dc=dc1 tokens=5",
                 "host=node-4.dyn.svc rack=r4 dc=dc1 tokens=0",    # a name: always counts
                 "10.0.0.5:8101:r5:dc1:0"]                          # Dynomite's form
        seeds = parse_txt_records(texts, {"10.0.0.1", "fd00::3", "10.0.0.5"})
        self.assertEqual(names(seeds), ["10.0.0.1:8101", "[fd00::3]:8101", "node-4.dyn.svc:8101",
                                        "10.0.0.5:8101"])
        self.assertEqual(len(parse_txt_records(texts, set())), 5)

    def test_txt_record_missing_field(self) -> None:
        e = self.assertRaises(SeedError, parse_txt_records, ["host=10.0.0.1 rack=r1 tokens=0"], set())
        self.assertIn("missing dc", str(e))

    def test_florida_bodies(self) -> None:
        self.assertEqual(names(parse_florida(b"a:1:r:d:0|b:1:r2:d:0")), ["a:1", "b:1"])
        self.assertEqual(names(parse_florida(b'"a:1:r:d:0|b:1:r2:d:0"')), ["a:1", "b:1"])
        self.assertEqual(names(parse_florida(b'["a:1:r:d:0", "b:1:r2:d:0"]')), ["a:1", "b:1"])
        self.assertRaises(SeedError, parse_florida, b'{"seeds": 1}')

    def test_florida_url_from_dynomite_env(self) -> None:
        config = NodeConfig.from_dict({"d": {"listen": "127.0.0.1:1", "servers": ["127.0.0.1:2"], "tokens": 0}})
        self.assertEqual(florida_url(config, {}), "http://127.0.0.1:8080/REST/v1/admin/get_seeds")
        env = {"DYNOMITE_FLORIDA_IP": "10.1.1.1", "DYNOMITE_FLORIDA_PORT": "9090",
               "DYNOMITE_FLORIDA_REQUEST": "GET /seeds HTTP/1.0\r\nHost: x\r\n\r\n"}
        self.assertEqual(florida_url(config, env), "http://10.1.1.1:9090/seeds")


class FakeResolver:
    """Answers lookupText/lookupAddress/lookupIPV6Address from tables; a missing name is NXDOMAIN."""

    def __init__(self) -> None:
        self.txt, self.a, self.aaaa = {}, {}, {}

    def _answer(self, table, name, rtype, record):
        if name not in table:
            return defer.fail(error.DNSNameError(name))
        return defer.succeed(([dns.RRHeader(name, rtype, payload=record(v)) for v in table[name]], [], []))

    def lookupText(self, name):
        return self._answer(self.txt, name, dns.TXT, lambda v: dns.Record_TXT(v.encode()))

    def lookupAddress(self, name):
        return self._answer(self.a, name, dns.A, dns.Record_A)

    def lookupIPV6Address(self, name):
        return self._answer(self.aaaa, name, dns.AAAA, dns.Record_AAAA)


class DnsSeedsTests(SynchronousTestCase):
    def test_txt_and_address_records(self) -> None:
        resolver = FakeResolver()
        resolver.txt["dyn.test"] = ["host=10.0.0.1 rack=r1 dc=dc1 tokens=0",
                                    "host=10.0.0.2 rack=r2 dc=dc1 tokens=0",
                                    "host=fd00::3 rack=r3 dc=dc1 tokens=0"]
        resolver.a["dyn.test"] = ["10.0.0.1"]
        resolver.aaaa["dyn.test"] = ["fd00::3"]
        seeds = self.successResultOf(DnsSeeds("dyn.test", resolver).fetch())
        self.assertEqual(names(seeds), ["10.0.0.1:8101", "[fd00::3]:8101"])

    def test_no_txt_is_an_error(self) -> None:
        failure = self.failureResultOf(DnsSeeds("nothing.test", FakeResolver()).fetch(), SeedError)
        self.assertIn("no TXT records for nothing.test", str(failure.value))


class PollerTests(SynchronousTestCase):
    def test_applies_changes_only_and_survives_failures(self) -> None:
        answers = [defer.succeed((b"a:1:r:d:0",)), defer.fail(OSError("refused")),
                   defer.succeed((b"a:1:r:d:0",)), defer.succeed((b"b:1:r:d:0",))]
        applied = []

        class Source:
            def fetch(self):
                return answers.pop(0).addCallback(lambda body: parse_florida(body[0]))

        poller = SeedPoller(Source(), lambda seeds: applied.append(names(seeds)) or True)
        for _ in range(4):
            self.successResultOf(poller.poll())
        self.assertEqual(applied, [["a:1"], ["b:1"]])
        self.assertEqual((poller.polls, poller.failures), (4, 1))

    def test_florida_non_200(self) -> None:
        source = FloridaSeeds("http://x/seeds", lambda url: defer.succeed((500, b"oops")))
        self.failureResultOf(source.fetch(), SeedError)


class ApplySeedsTests(SynchronousTestCase):
    """A provider's list goes through the reload path: peers added and removed as on SIGHUP."""

    def setUp(self) -> None:
        self.path = self.mktemp()
        pool = {"listen": "127.0.0.1:8102", "dyn_listen": "0.0.0.0:8101", "servers": ["127.0.0.1:6379:1"],
                "tokens": "0", "datacenter": "dc1", "rack": "rack1", "data_dir": self.mktemp(),
                "dyn_seed_provider": "dns_provider",
                "dyn_seeds": ["10.0.0.1:8101:rack1:dc1:0", "10.0.0.2:8101:rack2:dc1:0"]}
        with open(self.path, "w") as f:
            yaml.safe_dump({"dyn_o_mite": pool}, f)
        self.parts = NodeParts(NodeConfig.from_yaml(self.path), Clock(), FakeDatastore(), FakeMonitor())
        self.parts.start()
        self.addCleanup(self.parts.stop)
        self.control = NodeControl(self.parts, is_running=lambda: True)

    def test_peers_follow_the_list_and_the_name_stays(self) -> None:
        self.assertEqual(self.parts.name, "10.0.0.1:8101")
        self.assertEqual(sorted(self.parts.links), ["10.0.0.2:8101"])
        seeds = parse_seed_text("10.0.0.1:8101:rack1:dc1:0|10.0.0.3:8101:rack3:dc1:0|10.0.0.4:8101:rack2:dc1:0")
        self.assertTrue(self.control.apply_seeds(seeds))
        self.assertEqual(sorted(self.parts.links), ["10.0.0.3:8101", "10.0.0.4:8101"])
        self.assertEqual(self.parts.topology.local.name, "10.0.0.1:8101")
        # a list without this node keeps its name
        self.assertTrue(self.control.apply_seeds(parse_seed_text("10.0.0.3:8101:rack3:dc1:0")))
        self.assertEqual(self.parts.topology.local.name, "10.0.0.1:8101")
        self.assertEqual(sorted(self.parts.links), ["10.0.0.3:8101"])
        # SIGHUP keeps the provider's peers, not the file's static ones
        self.assertTrue(self.control.reload())
        self.assertEqual(sorted(self.parts.links), ["10.0.0.3:8101"])

    def test_contradicting_list_is_refused(self) -> None:
        clash = parse_seed_text("10.0.0.1:8101:rack1:dc1:0|10.0.0.9:8101:rack1:dc1:0")
        self.assertFalse(self.control.apply_seeds(clash))
        self.assertEqual(sorted(self.parts.links), ["10.0.0.2:8101"])


