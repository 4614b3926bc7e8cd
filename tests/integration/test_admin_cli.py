"""
Tests for ``dynomite-admin`` (dynomite.cli.admin).

Unit tests (no sockets): addresses, ring shares, key
owners for a given /cluster_describe document, ops/s from two /info
samples, status rows, argument errors, and whole commands run through
``main`` against a fake admin client.

Integration tests: a real cluster (1 DC x 2 racks x 1 node, real
redis-server and twistd processes, ephemeral ports on 127.0.6.x, an
admin_token) started once for the module by ``dynomite.launcher.cluster.Cluster``
and stopped, by PID, at interpreter exit (trial does not call setUpClass);
``main([...])`` runs in-process with stdout and stderr captured.
"""

from __future__ import annotations

import atexit
import io
import json
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import redis
from twisted.trial.unittest import SynchronousTestCase

from dynomite.cli.admin import main as admin_main
from dynomite.cli.admin.client import AdminClient, AdminError, join_address, parse_address
from dynomite.cli.admin.main import main, parse_args
from dynomite.cli.admin.views import (
    describe_nodes,
    hash_owners,
    ops_per_second,
    request_count,
    ring_table,
    status_row,
)
from dynomite.launcher.cluster import Cluster
from dynomite.placement.hashing import key_hash

MAX = 2**32 - 1
TOKEN = "adm1n-t0ken"


def server(name: str, tokens: List[int], state: str = "NORMAL", admin: Optional[str] = None,
           local: bool = False) -> Dict[str, Any]:
    host, port = name.split(":")
    return {"name": name, "host": host, "port": int(port), "tokens": tokens, "state": state,
            "local": local, "admin": admin}


#: 2 DCs: dc1 with a rack of two nodes and a rack of one, dc2 with one rack of one node.
DESCRIBE = {
    "dcs": [
        {"name": "dc1", "racks": [
            {"name": "r1", "servers": [
                server("10.0.0.1:8101", [0], admin="10.0.0.1:22222", local=True),
                server("10.0.0.2:8101", [2**31], admin="0.0.0.0:22222"),
            ]},
            {"name": "r2", "servers": [server("10.0.0.3:8101", [0], state="DOWN")]},
        ]},
        {"name": "dc2", "racks": [
            {"name": "r1", "servers": [server("10.0.1.1:8101", [1000], admin="127.0.0.1:22222")]},
        ]},
    ]
}


def owner_by_hand(tokens: Dict[str, List[int]], h: int) -> str:
    """The node with the smallest token >= h, else the one with the smallest token (an independent oracle)."""
    pairs = sorted((t, name) for name, ts in tokens.items() for t in ts)
    for t, name in pairs:
        if t >= h:
            return name
    return pairs[0][1]


def info(name: str, requests: int = 0, p99: Tuple[float, float] = (0.0, 0.0), **extra: Any) -> Dict[str, Any]:
    """A small /info document."""
    doc = {
        "name": name, "dc": "dc1", "rack": "r1", "state": "NORMAL",
        "peers": {"a": "UP", "b": "DOWN", "c": "UP"},
        "client": {"requests": {"read": {"ok": requests, "error": 0}, "other": {"ok": 0, "error": 0}}},
        "datastore": {"up": True},
        "latency_seconds": {
            "read": {"p50": 0.0, "p99": p99[0], "p999": p99[0], "count": 1 if p99[0] else 0},
            "write": {"p50": 0.0, "p99": p99[1], "p999": p99[1], "count": 1 if p99[1] else 0},
        },
        "hints": {},
    }
    doc.update(extra)
    return doc


class Captured:
    """stdout and stderr of one ``main`` call."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"<exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}>"


def run(case: SynchronousTestCase, *argv: str) -> Captured:
    out, err = io.StringIO(), io.StringIO()
    case.patch(sys, "stdout", out)
    case.patch(sys, "stderr", err)
    try:
        code = main(list(argv))
    finally:
        case.patch(sys, "stdout", sys.__stdout__)
        case.patch(sys, "stderr", sys.__stderr__)
    return Captured(code, out.getvalue(), err.getvalue())


# -- pure parts ----------------------------------------------------------------------------


class AddressTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_address("127.0.0.11:22222"), ("127.0.0.11", 22222))
        self.assertEqual(parse_address("node1"), ("node1", 22222))
        self.assertEqual(parse_address("[::1]:8080"), ("::1", 8080))
        self.assertEqual(parse_address("::1"), ("::1", 22222))
        for bad in ("", ":80", "host:", "host:0", "host:70000", "host:x", "[::1", "[::1]x"):
            self.assertRaises(ValueError, parse_address, bad)

    def test_join(self) -> None:
        self.assertEqual(join_address("10.0.0.1", 1), "10.0.0.1:1")
        self.assertEqual(join_address("::1", 1), "[::1]:1")


class DescribeTests(SynchronousTestCase):
    def test_admin_addresses(self) -> None:
        nodes = {n["name"]: n for n in describe_nodes(DESCRIBE, asked="gateway:9999")}
        self.assertEqual(list(nodes), ["10.0.0.1:8101", "10.0.0.2:8101", "10.0.0.3:8101", "10.0.1.1:8101"])
        # the node asked is reached where it was asked
        self.assertEqual(nodes["10.0.0.1:8101"]["admin"], "gateway:9999")
        # 0.0.0.0 means "every address": use the node's own host
        self.assertEqual(nodes["10.0.0.2:8101"]["admin"], "10.0.0.2:22222")
        # a DOWN peer has no known admin address, and says why
        self.assertIsNone(nodes["10.0.0.3:8101"]["admin"])
        self.assertIn("DOWN", nodes["10.0.0.3:8101"]["why"])
        # a loopback admin API of a non-loopback node would be this host's own node
        self.assertIsNone(nodes["10.0.1.1:8101"]["admin"])
        self.assertIn("loopback", nodes["10.0.1.1:8101"]["why"])
        self.assertEqual((nodes["10.0.1.1:8101"]["dc"], nodes["10.0.1.1:8101"]["rack"]), ("dc2", "r1"))

    def test_malformed(self) -> None:
        e = self.assertRaises(AdminError, describe_nodes, {"dcs": [{"name": "dc1"}]})
        self.assertIn("unexpected /cluster_describe", str(e))


class RingTests(SynchronousTestCase):
    def test_shares_and_ranges(self) -> None:
        rows = {(r["dc"], r["rack"], r["node"]): r for r in ring_table(DESCRIBE)}
        a = rows["dc1", "r1", "10.0.0.1:8101"]
        b = rows["dc1", "r1", "10.0.0.2:8101"]
        self.assertEqual(a["ranges"], [[0, 0], [2**31 + 1, MAX]])
        self.assertEqual(b["ranges"], [[1, 2**31]])
        self.assertEqual((a["share_percent"], b["share_percent"]), (50.0, 50.0))
        self.assertEqual(rows["dc1", "r2", "10.0.0.3:8101"]["ranges"], [[0, MAX]])
        self.assertEqual(rows["dc1", "r2", "10.0.0.3:8101"]["share_percent"], 100.0)
        self.assertEqual(rows["dc1", "r2", "10.0.0.3:8101"]["state"], "DOWN")
        self.assertEqual(rows["dc2", "r1", "10.0.1.1:8101"]["ranges"], [[0, MAX]])

    def test_vnodes_and_merging(self) -> None:
        doc = {"dcs": [{"name": "d", "racks": [{"name": "r", "servers": [
            server("1.1.1.1:1", [10, 20, 3 * 2**30]), server("1.1.1.2:1", [2**30, 2**31]),
        ]}]}]}
        rows = {r["node"]: r for r in ring_table(doc)}
        # 10 and 20 are adjacent tokens of one node: one range 0..20
        # ... and 3 * 2**30 follows 2**31 + 1..3 * 2**30, merged with the wrap-around above it
        self.assertEqual(rows["1.1.1.1:1"]["ranges"], [[0, 20], [2**31 + 1, MAX]])
        self.assertEqual(rows["1.1.1.2:1"]["ranges"], [[21, 2**31]])
        self.assertAlmostEqual(sum(r["share_percent"] for r in rows.values()), 100.0)
        self.assertAlmostEqual(rows["1.1.1.2:1"]["share_percent"], 100.0 * (2**31 - 20) / 2**32)

    def test_shares_always_add_up(self) -> None:
        for tokens in ([0], [5, 6, 7], [MAX], [0, MAX], [123, 2**31, 4000000000]):
            doc = {"dcs": [{"name": "d", "racks": [{"name": "r", "servers": [
                server("1.1.1.%d:1" % i, [t]) for i, t in enumerate(tokens)]}]}]}
            rows = ring_table(doc)
            self.assertAlmostEqual(sum(r["share_percent"] for r in rows), 100.0)
            pieces = sorted(tuple(p) for r in rows for p in r["ranges"])
            self.assertEqual((pieces[0][0], pieces[-1][1]), (0, MAX), tokens)
            for (_, hi), (lo, _) in zip(pieces, pieces[1:]):
                self.assertEqual(lo, hi + 1, tokens)

    def test_duplicate_tokens(self) -> None:
        doc = {"dcs": [{"name": "d", "racks": [{"name": "r", "servers": [
            server("1.1.1.1:1", [5]), server("1.1.1.2:1", [5])]}]}]}
        e = self.assertRaises(AdminError, ring_table, doc)
        self.assertIn("rack d/r", str(e))


class HashTests(SynchronousTestCase):
    def test_owner_in_every_rack(self) -> None:
        r1 = {"10.0.0.1:8101": [0], "10.0.0.2:8101": [2**31]}
        for key in (b"foo", b"bar", b"user:1", b"", b"\xff\x00"):
            doc = hash_owners(DESCRIBE, key)
            h = key_hash(key)
            self.assertEqual(doc["hash"], h)
            self.assertEqual(
                [(o["dc"], o["rack"], o["node"]) for o in doc["owners"]],
                [("dc1", "r1", owner_by_hand(r1, h)), ("dc1", "r2", "10.0.0.3:8101"),
                 ("dc2", "r1", "10.0.1.1:8101")],
            )
            self.assertEqual(doc["owners"][0]["token"], r1[doc["owners"][0]["node"]][0])
            self.assertEqual(doc["owners"][1]["state"], "DOWN")

    def test_hash_tag(self) -> None:
        a = hash_owners(DESCRIBE, b"{user1}.a", b"{}")
        b = hash_owners(DESCRIBE, b"{user1}.b", b"{}")
        self.assertEqual(a["hash"], key_hash(b"user1"))
        self.assertEqual(a["owners"], b["owners"])
        self.assertEqual(a["hash_tag"], "{}")
        self.assertNotEqual(hash_owners(DESCRIBE, b"{user1}.a")["hash"], a["hash"])


class NumbersTests(SynchronousTestCase):
    def test_ops_per_second(self) -> None:
        self.assertEqual(ops_per_second(100, 350, 2.5), 100.0)
        self.assertEqual(ops_per_second(7, 7, 1.0), 0.0)
        self.assertIsNone(ops_per_second(500, 3, 1.0))  # restarted in between
        self.assertIsNone(ops_per_second(1, 2, 0.0))

    def test_request_count(self) -> None:
        doc = {"client": {"requests": {"read": {"ok": 5, "error": 1}, "write": {"ok": 3, "error": 0}}}}
        self.assertEqual(request_count(doc), 9)
        self.assertEqual(request_count({"client": {"requests": {}}}), 0)
        self.assertEqual(request_count({}), 0)

    def test_status_row(self) -> None:
        node = {"dc": "dc1", "rack": "r1", "name": "n1", "admin": "h:1", "why": None}
        before = (info("n1", requests=10), 100.0)
        after = (info("n1", requests=40, p99=(0.002, 0.05),
                      hints={"x": {"pending": 3}, "y": {"pending": 4}}), 101.5)
        row = status_row(node, before, after)
        self.assertEqual(
            {k: row[k] for k in ("state", "ops_per_second", "hint_backlog", "datastore_up", "peers_up",
                                 "peers_total", "error")},
            {"state": "NORMAL", "ops_per_second": 20.0, "hint_backlog": 7, "datastore_up": True,
             "peers_up": 2, "peers_total": 3, "error": None},
        )
        self.assertAlmostEqual(row["p99_ms"], 50.0)
        self.assertIsNone(status_row(node, None, before)["ops_per_second"])  # one sample: no rate
        self.assertIsNone(status_row(node, None, before)["p99_ms"])  # no requests yet

    def test_status_row_shows_warm_up_and_repair_progress(self) -> None:
        node = {"dc": "dc1", "rack": "r1", "name": "n1", "admin": "h:1", "why": None}
        doc = info("n1")
        doc["repair"] = {"warmup": {"finished": None, "scanned": 500, "to_scan": 1000,
                                    "keys_per_second": 250.0, "eta_seconds": 2.0}, "running": None}
        self.assertEqual(status_row(node, None, (doc, 1.0))["work"],
                         "warming up [##########..........]  50% 500/1000 keys 250/s ETA 2s")
        doc["repair"] = {"warmup": {"finished": 3.0}, "running": {
            "phase": "digests", "phase_scanned": 10, "phase_to_scan": 0, "keys_per_second": 0.0,
            "eta_seconds": None}}
        self.assertEqual(status_row(node, None, (doc, 1.0))["work"], "repair digests [....................]"
                                                                      "   0% 10/0 keys")
        self.assertIsNone(status_row(node, None, (info("n1"), 1.0))["work"])

    def test_status_row_down(self) -> None:
        node = {"dc": "dc1", "rack": "r1", "name": "n1", "admin": None, "why": "admin address unknown"}
        row = status_row(node)
        self.assertEqual((row["state"], row["error"]), ("DOWN", "admin address unknown"))
        row = status_row(dict(node, admin="h:1"), error="connection refused")
        self.assertEqual((row["state"], row["error"], row["ops_per_second"]), ("DOWN", "connection refused", None))
        row = status_row(dict(node, admin="h:1"), None, (info("n2"), 1.0))
        self.assertEqual(row["state"], "DOWN")
        self.assertIn("answered as node n2", row["error"])


class ArgumentTests(SynchronousTestCase):
    def assertUsage(self, *argv: str, message: str) -> None:
        result = run(self, *argv)
        self.assertEqual(result.code, 2, result)
        self.assertIn(message, result.err)
        self.assertEqual(result.out, "")

    def test_usage_errors(self) -> None:
        self.assertUsage(message="the following arguments are required")
        self.assertUsage("bogus", message="invalid choice: 'bogus'")
        self.assertUsage("consistency", "read", message="give both read|write and LEVEL")
        self.assertUsage("consistency", "read", "dc_most", message="expected one of dc_one")
        self.assertUsage("consistency", "sideways", "dc_one", message="invalid choice: 'sideways'")
        self.assertUsage("hash", message="KEY")
        self.assertUsage("hash", "k", "--hash-tag", "{", message="exactly two characters")
        self.assertUsage("hints", "all", "explode", message="invalid choice: 'explode'")
        self.assertUsage("hints", message="NODE")
        self.assertUsage("--node", "host:99999", "ring", message="--node: expected HOST:PORT")
        self.assertUsage("--timeout", "0", "ring", message="seconds > 0")
        self.assertUsage("status", "--interval", "-1", message="between 0 and 3600")

    def test_help(self) -> None:
        result = run(self, "--help")
        self.assertEqual(result.code, 0)
        self.assertIn("status", result.out)

    def test_defaults_environment_and_options_after_the_command(self) -> None:
        args = parse_args(["status"], environ={})
        self.assertEqual((args.node, args.token, args.json, args.timeout, args.interval),
                         ("127.0.0.11:22222", None, False, 5.0, 1.0))
        args = parse_args(["ring"], environ={"DYNOMITE_ADMIN": "10.1.1.1", "DYNOMITE_ADMIN_TOKEN": "t"})
        self.assertEqual((args.node, args.token), ("10.1.1.1:22222", "t"))
        args = parse_args(["--node", "a:1", "consistency", "--json", "--token", "x", "write", "DC_quorum",
                           "--timeout", "2"], environ={"DYNOMITE_ADMIN": "b:2"})
        self.assertEqual((args.node, args.token, args.json, args.timeout, args.which, args.level),
                         ("a:1", "x", True, 2.0, "write", "DC_QUORUM"))
        args = parse_args(["hints", "all", "pause"], environ={})
        self.assertEqual((args.target_node, args.action, args.target), ("all", "pause", "all"))


# -- whole commands against a fake client ---------------------------------------------------------


class FakeClient:
    """Answers GETs from a table ``{(address, path): document or AdminError}``; records calls."""

    def __init__(self, answers: Dict[Tuple[str, str], Any], token: Optional[str] = None) -> None:
        self.answers = answers
        self.token = token
        self.calls: List[Tuple[str, str, bool]] = []

    def get(self, address: str, path: str, mutating: bool = False) -> Any:
        self.calls.append((address, path, mutating))
        answer = self.answers.get((address, path), AdminError(f"{address}: connection refused",
                                                              reason="connection refused"))
        if isinstance(answer, AdminError):
            raise answer
        return answer


class FakeCommandTests(SynchronousTestCase):
    """``main`` end to end with the HTTP client replaced: DOWN nodes, 403s and output shapes."""

    def use(self, answers: Dict[Tuple[str, str], Any]) -> List[FakeClient]:
        made: List[FakeClient] = []

        def factory(timeout: float, token: Optional[str]) -> FakeClient:
            made.append(FakeClient(answers, token))
            return made[-1]

        self.patch(admin_main, "AdminClient", factory)
        return made

    def test_status_shows_unreachable_nodes_as_down(self) -> None:
        self.use({
            ("10.0.0.1:22222", "/cluster_describe"): DESCRIBE,
            ("10.0.0.1:22222", "/info"): info("10.0.0.1:8101", requests=5),
        })
        result = run(self, "--node", "10.0.0.1", "status", "--interval", "0")
        self.assertEqual(result.code, 1, result)
        lines = result.out.splitlines()
        self.assertEqual(lines[0].split(), ["DC", "RACK", "NODE", "STATE", "OPS/S", "P99", "MS", "HINTS",
                                            "DATASTORE", "PEERS", "NOTE"])
        self.assertEqual(lines[1].split()[:10], ["dc1", "r1", "10.0.0.1:8101", "NORMAL", "-", "-", "0", "up",
                                                 "2/3"])
        self.assertRegex(lines[2], r"^dc1 +r1 +10\.0\.0\.2:8101 +DOWN .* connection refused$")
        self.assertRegex(lines[3], r"10\.0\.0\.3:8101 +DOWN .* admin address unknown: the peer link to it is DOWN")
        self.assertRegex(lines[4], r"10\.0\.1\.1:8101 +DOWN .* loopback")
        self.assertEqual(result.err.count("\n"), 1)
        self.assertIn("dynomite-admin: 3 of 4 nodes could not be read; first: node 10.0.0.2:8101", result.err)
        self.assertNotIn("Traceback", result.err)

    def test_unreachable_seed_node(self) -> None:
        self.use({})
        result = run(self, "--node", "10.9.9.9:1", "ring")
        self.assertEqual((result.code, result.out), (1, ""))
        self.assertEqual(result.err, "dynomite-admin: cannot read the cluster from 10.9.9.9:1: connection refused\n")

    def test_consistency_403_is_one_clear_line(self) -> None:
        refused = AdminError("x: refused (403): this needs the cluster's admin token; pass --token",
                             403, "refused (403): this needs the cluster's admin token; pass --token")
        describe = {"dcs": [{"name": "dc1", "racks": [
            {"name": "r1", "servers": [server("10.0.0.1:8101", [0], admin="10.0.0.1:22222", local=True)]},
            {"name": "r2", "servers": [server("10.0.0.2:8101", [0], admin="10.0.0.2:22222")]}]}]}
        path = "/set_consistency/read/dc_quorum"
        made = self.use({("10.0.0.1:22222", "/cluster_describe"): describe,
                         ("10.0.0.1:22222", path): refused, ("10.0.0.2:22222", path): refused})
        result = run(self, "--node", "10.0.0.1:22222", "consistency", "read", "dc_quorum")
        self.assertEqual(result.code, 1, result)
        self.assertEqual(result.err, "dynomite-admin: 2 of 2 nodes were not changed: refused (403): this needs"
                                     " the cluster's admin token; pass --token\n")
        self.assertIn(("10.0.0.2:22222", path, True), made[0].calls)

    def test_hints_unknown_node(self) -> None:
        self.use({("10.0.0.1:22222", "/cluster_describe"): DESCRIBE})
        result = run(self, "--node", "10.0.0.1", "hints", "10.0.0.9:8101", "pause")
        self.assertEqual(result.code, 1)
        self.assertIn("no node 10.0.0.9:8101 in the cluster (nodes: 10.0.0.1:8101, ", result.err)

    def test_hints_table(self) -> None:
        describe = {"dcs": [{"name": "dc1", "racks": [
            {"name": "r1", "servers": [server("10.0.0.1:8101", [0], admin="10.0.0.1:22222", local=True)]},
            {"name": "r2", "servers": [server("10.0.0.2:8101", [0], admin="10.0.0.2:22222")]}]}]}
        stats = {"pending": 3, "pending_bytes": 120, "oldest_age_seconds": 1.5, "state": "paused"}
        made = self.use({
            ("10.0.0.1:22222", "/cluster_describe"): describe,
            ("10.0.0.1:22222", "/hints/all/pause"): {"hints": {"10.0.0.2:8101": stats}},
            ("10.0.0.2:22222", "/hints/all/pause"): {"hints": {}},
        })
        result = run(self, "--node", "10.0.0.1", "--token", "t", "hints", "all", "pause")
        self.assertEqual(result.code, 0, result)
        self.assertEqual([line.split() for line in result.out.splitlines()], [
            ["NODE", "TARGET", "STATE", "PENDING", "BYTES", "OLDEST", "S", "NOTE"],
            ["10.0.0.1:8101", "10.0.0.2:8101", "paused", "3", "120", "1.50", "paused"],
            ["10.0.0.2:8101", "-", "-", "-", "-", "-", "no", "hint", "targets"],
        ])
        self.assertEqual(made[-1].token, "t")
        self.assertEqual(sorted(c for c in made[-1].calls if c[2]),
                         [("10.0.0.1:22222", "/hints/all/pause", True), ("10.0.0.2:22222", "/hints/all/pause", True)])

    def test_ring_and_hash_json(self) -> None:
        self.use({("10.0.0.1:22222", "/cluster_describe"): DESCRIBE})
        ring = run(self, "--node", "10.0.0.1", "ring", "--json")
        self.assertEqual(ring.code, 0, ring)
        racks = ring.json()["racks"]
        self.assertEqual([(r["dc"], r["rack"], len(r["nodes"])) for r in racks],
                         [("dc1", "r1", 2), ("dc1", "r2", 1), ("dc2", "r1", 1)])
        text = run(self, "--node", "10.0.0.1", "ring")
        self.assertIn("2147483649..4294967295, 0  50.00%", text.out)
        doc = run(self, "--node", "10.0.0.1", "hash", "{a}b", "--hash-tag", "{}", "--json").json()
        self.assertEqual((doc["key"], doc["hash"], len(doc["owners"])), ("{a}b", key_hash(b"a"), 3))


# -- a real cluster -------------------------------------------------------------------------------

_CLUSTER: List[Cluster] = []


def shared_cluster(case: SynchronousTestCase) -> Cluster:
    """1 DC x 2 racks x 1 node with an admin_token, started on first use, stopped at exit."""
    if not _CLUSTER:
        topology = {"cluster": "admcli", "datacenters": {"dc1": {"rack1": 1, "rack2": 1}},
                    "node": {"admin_token": TOKEN, "timeout": 2000}}
        cluster = Cluster.from_topology(topology, case.mktemp(), ports="auto", base_address="127.0.6.1")

        def stop() -> None:
            cluster.stop()
            cluster.remove_files()

        atexit.register(stop)
        cluster.start()
        _CLUSTER.append(cluster)
    return _CLUSTER[0]


def admin_address(node) -> str:
    return "%s:%d" % node.stats_address


def wait_ready(cluster: Cluster, timeout: float = 30.0) -> None:
    """Until the first node describes every node NORMAL with a known admin address."""
    client = AdminClient(timeout=2.0)
    deadline = time.monotonic() + timeout
    nodes: List[Dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            nodes = describe_nodes(client.get(admin_address(cluster.nodes[0]), "/cluster_describe"))
        except AdminError:
            nodes = []
        if len(nodes) == len(cluster.nodes) and all(n["state"] == "NORMAL" and n["admin"] for n in nodes):
            return
        time.sleep(0.1)
    raise AssertionError(f"cluster not ready within {timeout} s: {nodes}")


class ClusterTests(SynchronousTestCase):
    """``main`` against a running cluster of two nodes."""

    def setUp(self) -> None:
        self.cluster = shared_cluster(self)
        wait_ready(self.cluster)
        self.first, self.second = self.cluster.nodes
        self.node = admin_address(self.first)

    def admin(self, *argv: str) -> Captured:
        return run(self, "--node", self.node, *argv)

    def peer_name(self, node) -> str:
        return "%s:%d" % node.peer_address

    def test_status(self) -> None:
        # traffic on the first node while status samples, so ops/s and p99 have something to show
        stop = threading.Event()
        client = redis.Redis(*self.first.client_address, socket_timeout=5)
        self.addCleanup(client.close)

        def traffic() -> None:
            while not stop.is_set():
                client.set("admin-cli", "x")

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        try:
            result = self.admin("status", "--interval", "0.5", "--json")
        finally:
            stop.set()
            thread.join(5)
        self.assertEqual(result.code, 0, result)
        rows = {r["name"]: r for r in result.json()["nodes"]}
        self.assertEqual(set(rows), {self.peer_name(n) for n in self.cluster.nodes})
        for n in self.cluster.nodes:
            row = rows[self.peer_name(n)]
            self.assertEqual((row["dc"], row["rack"], row["state"], row["datastore_up"], row["peers_up"],
                              row["peers_total"], row["hint_backlog"], row["error"]),
                             (n.dc, n.rack, "NORMAL", True, 1, 1, 0, None))
            self.assertEqual(row["admin"], admin_address(n))
        busy = rows[self.peer_name(self.first)]
        self.assertGreater(busy["ops_per_second"], 0)
        self.assertGreater(busy["p99_ms"], 0)

        text = self.admin("status", "--interval", "0.1")
        self.assertEqual(text.code, 0, text)
        lines = text.out.splitlines()
        self.assertEqual(lines[0].split()[:4], ["DC", "RACK", "NODE", "STATE"])
        self.assertEqual(len(lines), 3)
        for line in lines[1:]:
            self.assertRegex(line, r"^dc1 +rack[12] +127\.0\.6\.[12]:\d+ +NORMAL +\d+\.\d +.* up +1/1$")

    def test_status_with_a_hung_node(self) -> None:
        proc = self.second.node_process
        proc.pause()
        try:
            result = self.admin("--timeout", "0.5", "status", "--interval", "0")
        finally:
            proc.resume()
        self.assertEqual(result.code, 1, result)
        self.assertRegex(result.out, r"127\.0\.6\.2:\d+ +DOWN .*(no answer within 0\.5 s|peer link to it is DOWN)")
        self.assertRegex(result.out, r"127\.0\.6\.1:\d+ +NORMAL")
        self.assertEqual(result.err.count("\n"), 1, result)
        self.assertNotIn("Traceback", result.err)

    def test_unreachable_node(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.6.1", 0))
            port = s.getsockname()[1]
        result = run(self, "--node", f"127.0.6.1:{port}", "status")
        self.assertEqual((result.code, result.out), (1, ""))
        self.assertEqual(result.err.count("\n"), 1)
        self.assertIn(f"cannot read the cluster from 127.0.6.1:{port}: connection refused", result.err)

    def test_ring(self) -> None:
        result = self.admin("ring")
        self.assertEqual(result.code, 0, result)
        lines = result.out.splitlines()
        self.assertEqual(lines[0].split(), ["DC", "RACK", "NODE", "TOKENS", "RANGES", "SHARE"])
        self.assertRegex(lines[1], r"^dc1 +rack1 +127\.0\.6\.1:\d+ +0 +all +100\.00%$")
        self.assertRegex(lines[2], r"^dc1 +rack2 +127\.0\.6\.2:\d+ +0 +all +100\.00%$")
        racks = self.admin("ring", "--json").json()["racks"]
        self.assertEqual([(r["rack"], r["nodes"][0]["share_percent"]) for r in racks],
                         [("rack1", 100.0), ("rack2", 100.0)])

    def test_hash(self) -> None:
        result = self.admin("hash", "greeting")
        self.assertEqual(result.code, 0, result)
        self.assertIn(f"key 'greeting'  hash {key_hash(b'greeting')}", result.out)
        doc = self.admin("--json", "hash", "greeting").json()
        self.assertEqual([(o["rack"], o["node"], o["token"]) for o in doc["owners"]],
                         [(n.rack, self.peer_name(n), 0) for n in self.cluster.nodes])

    def test_consistency_round_trip(self) -> None:
        self.addCleanup(run, self, "--node", self.node, "--token", TOKEN, "consistency", "read", "dc_one")
        shown = self.admin("consistency", "--json")
        self.assertEqual(shown.code, 0, shown)
        self.assertEqual({(r["read_consistency"], r["write_consistency"]) for r in shown.json()["nodes"]},
                         {("DC_ONE", "DC_ONE")})

        refused = self.admin("consistency", "read", "dc_quorum")
        self.assertEqual(refused.code, 1, refused)
        self.assertEqual(refused.err.count("\n"), 1)
        self.assertIn("2 of 2 nodes were not changed: refused (403): this needs the cluster's admin token",
                      refused.err)
        wrong = self.admin("--token", "nope", "consistency", "read", "dc_quorum")
        self.assertEqual(wrong.code, 1)
        self.assertIn("the admin token was not accepted", wrong.err)

        changed = self.admin("--token", TOKEN, "consistency", "read", "dc_quorum")
        self.assertEqual(changed.code, 0, changed)
        self.assertEqual(changed.err, "")
        shown = self.admin("consistency")
        self.assertEqual(shown.code, 0, shown)
        rows = [line.split() for line in shown.out.splitlines()]
        self.assertEqual(rows[0], ["DC", "RACK", "NODE", "READ", "WRITE", "NOTE"])
        self.assertEqual([row[3:] for row in rows[1:]], [["DC_QUORUM", "DC_ONE"]] * 2)

    def test_hints(self) -> None:
        refused = self.admin("hints", "all", "pause")
        self.assertEqual(refused.code, 1, refused)
        self.assertIn("admin token", refused.err)

        name = self.peer_name(self.second)
        result = self.admin("--token", TOKEN, "--json", "hints", name, "pause")
        self.assertEqual(result.code, 0, result)
        [node] = result.json()["nodes"]
        self.assertEqual((node["name"], node["error"]), (name, None))
        # hint targets come from /info; with none yet, a named target is a clear 404
        targets = sorted(AdminClient().get(admin_address(self.second), "/info").get("hints") or {})
        if targets:
            self.assertEqual(sorted(node["hints"]), targets)
            resumed = self.admin("--token", TOKEN, "hints", name, "resume", "--target", targets[0])
            self.assertEqual(resumed.code, 0, resumed)
            self.assertIn(targets[0], resumed.out)
        else:
            self.assertEqual(node["hints"], {})
            missing = self.admin("--token", TOKEN, "hints", name, "pause", "--target", "nowhere")
            self.assertEqual(missing.code, 1, missing)
            self.assertEqual(missing.err, f"dynomite-admin: node {name}: HTTP 404: no hints for nowhere"
                                          " (this node has no hint targets)\n")
        every = self.admin("--token", TOKEN, "hints", "all", "resume")
        self.assertEqual(every.code, 0, every)
        for n in self.cluster.nodes:
            self.assertIn(self.peer_name(n), every.out)
