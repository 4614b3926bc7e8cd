"""
The admin HTTP API, /metrics and SIGHUP reloads, against a running node
(real redis-server, real twistd process), with a real HTTP client: one
smoke test of the wiring, and the reloads.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request

import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ResponseError
from twisted.trial import unittest

from dynomite import __version__

from tests.integration.fixtures.common import wait_until
from tests.integration.fixtures.processes import NodeFixture

TOKEN = "let-me-in"


def get(node, path: str, token: str = None):
    """(status, body) of GET http://stats_listen/path."""
    host, port = node.stats_address
    request = urllib.request.Request("http://%s:%d%s" % (host, port, path))
    if token is not None:
        request.add_header("X-Admin-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metrics(node) -> dict:
    """{(sample name, sorted labels): value} from /metrics."""
    status, body = get(node, "/metrics")
    assert status == 200, status
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class AdminSmokeTests(unittest.TestCase):
    """
    The admin API wired into a real node: what it reads and changes is the
    node's own (every path's behaviour is tested in memory in
    tests.unit.test_admin).
    """

    def setUp(self):
        self.fx = NodeFixture(self.mktemp(), admin_token=TOKEN)
        self.addCleanup(self.fx.stop)
        self.node = self.fx.node

    def test_smoke(self):
        status, body = get(self.node, "/info")
        self.assertEqual(status, 200)
        info = json.loads(body)
        self.assertEqual((info["dc"], info["rack"], info["state"]), ("dc1", "rack1", "NORMAL"))
        self.assertTrue(info["datastore"]["up"])
        described = json.loads(get(self.node, "/cluster_describe")[1])
        server = described["dcs"][0]["racks"][0]["servers"][0]
        self.assertEqual((server["tokens"], server["state"]), ([0], "NORMAL"))
        self.assertEqual(get(self.node, "/set_consistency/read/dc_quorum")[0], 403)
        status, body = get(self.node, "/set_consistency/read/dc_quorum", token=TOKEN)
        self.assertEqual((status, json.loads(body)["read_consistency"]), (200, "DC_QUORUM"))
        self.assertEqual(json.loads(get(self.node, "/info")[1])["read_consistency"], "DC_QUORUM")
        self.assertEqual(get(self.node, "/set_timeout_factor/3?token=" + TOKEN)[0], 200)
        self.assertEqual(json.loads(get(self.node, "/get_timeout_factor")[1]), {"timeout_factor": 3})
        self.assertEqual(get(self.node, "/setloglevel/7", token=TOKEN)[0], 200)
        self.assertEqual(json.loads(get(self.node, "/info")[1])["log_level"], 7)

        # node states change what clients may do
        client = self.node.client(protocol=2)
        self.addCleanup(client.close)
        client.set("k", "v")
        self.assertEqual(get(self.node, "/state/writes_only", token=TOKEN)[0], 200)
        self.assertEqual(json.loads(get(self.node, "/state/get_state")[1]), {"state": "WRITES_ONLY"})
        self.assertTrue(client.set("k", "w"))
        with self.assertRaises(ResponseError) as e:
            client.get("k")
        self.assertIn("WRITES_ONLY", str(e.exception))
        self.assertEqual(metrics(self.node)[("dynomite_node_state", (("state", "WRITES_ONLY"),))], 1)
        get(self.node, "/state/standby", token=TOKEN)
        with self.assertRaises(ResponseError) as e:
            client.set("k", "x")
        self.assertIn("STANDBY", str(e.exception))
        self.assertTrue(client.ping())
        get(self.node, "/state/normal", token=TOKEN)
        self.assertEqual(client.get("k"), b"w")

        # metrics move with traffic
        before = metrics(self.node)
        for i in range(25):
            client.set("k%d" % i, "v")
            client.get("k%d" % i)
        with self.assertRaises(ResponseError):
            client.execute_command("LPUSH", "k0", "x")  # WRONGTYPE
        after = metrics(self.node)
        ok = ("dynomite_client_requests_total", (("family", "string"), ("result", "ok")))
        self.assertEqual(after[ok] - before.get(ok, 0), 50)
        err = ("dynomite_client_requests_total", (("family", "list"), ("result", "error")))
        self.assertEqual(after[err] - before.get(err, 0), 1)
        reads = ("dynomite_request_duration_seconds_count", (("op", "read"),))
        self.assertEqual(after[reads] - before.get(reads, 0), 25)
        self.assertEqual(after[("dynomite_datastore_up", ())], 1)
        # the local Redis saw the 50 commands (and maybe the client's handshake) and one error reply
        ds_ok = ("dynomite_datastore_requests_total", (("result", "ok"),))
        ds_err = ("dynomite_datastore_requests_total", (("result", "error"),))
        self.assertGreaterEqual(after[ds_ok] - before[ds_ok], 50)
        self.assertEqual(after[ds_err] - before[ds_err], 1)
        for result in ("timeout", "unavailable"):
            self.assertEqual(after[("dynomite_datastore_requests_total", (("result", result),))], 0)
        ds_samples = ("dynomite_datastore_request_duration_seconds_count", ())
        self.assertGreaterEqual(after[ds_samples] - before[ds_samples], 1)  # one request in 16 is timed
        self.assertEqual(after[ds_samples],
                         after[("dynomite_datastore_request_duration_seconds_bucket", (("le", "+Inf"),))])
        datastore = json.loads(get(self.node, "/info")[1])["datastore"]
        self.assertGreaterEqual(datastore["requests"]["ok"], 50)
        self.assertEqual(datastore["requests"]["error"], 1)
        self.assertGreater(datastore["latency_seconds"]["p99"], 0)
        self.assertGreaterEqual(datastore["latency_seconds"]["p99"], datastore["latency_seconds"]["p50"])
        self.assertEqual(after[("dynomite_client_connections", ())], 1)
        [build] = [dict(labels) for name, labels in after if name == "dynomite_build_info"]
        self.assertEqual((build["node_dc"], build["node_rack"], build["version"]), ("dc1", "rack1", __version__))
        self.assertTrue(any(name.startswith("process_") for name, _ in after))


class ReloadTests(unittest.TestCase):
    def setUp(self):
        self.fx = NodeFixture(self.mktemp())
        self.addCleanup(self.fx.stop)
        self.node = self.fx.node

    def rewrite(self, **changes):
        with open(self.node.config_path) as f:
            doc = yaml.safe_load(f)
        doc["dyn_o_mite"].update(changes)
        with open(self.node.config_path, "w") as f:
            yaml.safe_dump(doc, f)

    def reloads(self, result: str) -> float:
        return metrics(self.node).get(("dynomite_config_reloads_total", (("result", result),)), 0)

    def test_good_file_applies(self):
        self.rewrite(read_consistency="DC_QUORUM", timeout=2500, log_level=6)
        os.kill(self.node.pid, signal.SIGHUP)
        wait_until(lambda: self.reloads("success") == 1, timeout=5, message="reload counted")
        consistency = json.loads(get(self.node, "/get_consistency")[1])
        self.assertEqual(consistency["read_consistency"], "DC_QUORUM")
        self.assertIn("configuration reloaded", self.node.log_text())
        self.assertEqual(json.loads(get(self.node, "/info")[1])["log_level"], 6)
        self.assertTrue(self.node.client(protocol=2).ping())

    def test_bad_file_is_refused_and_running_config_kept(self):
        self.rewrite(read_consistency="DC_SOMETIMES")
        os.kill(self.node.pid, signal.SIGHUP)
        wait_until(lambda: self.reloads("failure") == 1, timeout=5, message="failed reload counted")
        self.assertEqual(json.loads(get(self.node, "/get_consistency")[1])["read_consistency"], "DC_ONE")
        self.assertIn("read_consistency", self.node.log_text())
        self.assertTrue(self.node.running())
        client = self.node.client(protocol=2)
        self.addCleanup(client.close)
        self.assertTrue(client.set("still", "serving"))

    def test_identity_change_needs_restart(self):
        self.rewrite(rack="rack9")
        os.kill(self.node.pid, signal.SIGHUP)
        wait_until(lambda: self.reloads("failure") == 1, timeout=5, message="failed reload counted")
        self.assertIn("changing it needs a restart", self.node.log_text())
