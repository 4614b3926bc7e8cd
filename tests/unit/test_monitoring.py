"""
The node's metric families (`dynomite.ops.metrics`), and offline checks of
monitoring/: the Grafana dashboard and its provisioning, the Prometheus
scrape config, the alert rules and their promtool unit tests.

* The collector exports exactly the families of `CATALOGUE`, each with the
  catalogue's kind, help text and labels, and reads the node's live state.

* The dashboard JSON parses, uids and titles are unique, every panel and
  query uses the provisioned datasource, every query filters by the
  dc/rack/instance variables and uses ``$__rate_interval`` for its ranges.
* Every PromQL expression of the dashboard parses (``promtool check rules``
  on a temporary file of recording rules, one per query).
* Every metric name used by the dashboard or the alert rules is one the node
  exports (`dynomite.metrics.EXPORTED_NAMES`, histogram series, ``up`` and
  the default process/python collectors), and the dashboard shows every
  exported family.
* ``promtool check rules``, ``promtool test rules`` and ``promtool check
  config`` pass.

promtool comes from tools/promtool: ``$PROMTOOL``, ``promtool`` on PATH, or
``.cache/promtool/`` extracted from Debian's ``prometheus`` package with
``apt-get download`` + ``dpkg-deb -x``.  When it cannot be obtained the
promtool tests fail (they do not skip): these checks are part of ``make
test``.
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, Iterator, List, Optional, Set, Tuple

import yaml
from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.vocabulary import CONSISTENCY_LEVELS, NODE_STATES
from dynomite.ops.metrics import CATALOGUE, EXPORTED_NAMES, SPECS, Collector
from dynomite.replication.hints import DROP_REASONS

from tests.fakes import FakeNode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MONITORING = os.path.join(ROOT, "monitoring")
DASHBOARDS = os.path.join(MONITORING, "grafana", "dashboards")
DATASOURCES = os.path.join(MONITORING, "grafana", "provisioning", "datasources", "prometheus.yml")
DASHBOARD_PROVIDERS = os.path.join(MONITORING, "grafana", "provisioning", "dashboards", "dynomite.yml")
PROMETHEUS_CONFIG = os.path.join(MONITORING, "prometheus", "prometheus.yml")
RULES = os.path.join(MONITORING, "prometheus", "rules", "dynomite.rules.yml")
RULE_TESTS = os.path.join(MONITORING, "prometheus", "tests", "dynomite.rules.test.yml")
DEMO_CLUSTER = os.path.join(ROOT, "etc", "demo-cluster.yml")
PROMTOOL_HELPER = os.path.join(ROOT, "tools", "promtool")

EXPECTED_ALERTS = {
    "DynomiteDown", "DynomitePeerDown", "DynomiteHintBacklogGrowing", "DynomiteHintsDropped",
    "DynomiteErrorRatio", "DynomiteP99Latency", "DynomiteQuorumFailures", "DynomiteDatastoreDown",
    "DynomiteClientFlood",
}
VARIABLES = ("dc", "rack", "instance")
FILTERS = ('dc=~"$dc"', 'rack=~"$rack"', 'instance=~"$instance"')


# ---------------------------------------------------------------- promtool

_promtool: Dict[str, Tuple[Optional[str], str]] = {}


def promtool(case: SynchronousTestCase) -> str:
    """Path of promtool (obtained once per process), or fail the test saying why."""
    if "result" not in _promtool:
        try:
            proc = subprocess.run([sys.executable, PROMTOOL_HELPER, "--which"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=900, check=False)
            path = proc.stdout.decode().strip() if proc.returncode == 0 else None
            _promtool["result"] = (path, proc.stderr.decode("utf-8", "replace").strip())
        except (OSError, subprocess.TimeoutExpired) as e:
            _promtool["result"] = (None, str(e))
    path, why = _promtool["result"]
    if not path:
        case.fail("promtool is required for the monitoring checks and could not be obtained: %s\n"
                  "Install Debian's `prometheus` package, put promtool on PATH, or set $PROMTOOL." % why)
    return path


def run_promtool(case: SynchronousTestCase, *args: str, context: str = "") -> str:
    command = [promtool(case)] + list(args)
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, check=False)
    output = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        case.fail("`promtool %s` failed (rc=%d):\n%s%s" % (" ".join(args), proc.returncode, output, context))
    return output


# ---------------------------------------------------------------- files

def load_yaml(path: str):
    with open(path) as f:
        return yaml.safe_load(f)


def dashboard_files() -> List[str]:
    return sorted(glob.glob(os.path.join(DASHBOARDS, "*.json")))


def load_dashboards() -> Dict[str, dict]:
    out = {}
    for path in dashboard_files():
        with open(path) as f:
            out[path] = json.load(f)
    return out


def all_panels(panels: List[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def query_panels(dashboard: dict) -> Iterator[dict]:
    return (p for p in all_panels(dashboard.get("panels", [])) if p.get("type") != "row")


def dashboard_targets(dashboard: dict) -> Iterator[Tuple[dict, dict]]:
    for panel in query_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def variable_query(var: dict) -> str:
    query = var.get("query")
    return query.get("query", "") if isinstance(query, dict) else (query or "")


def variable_selector(var: dict) -> Optional[str]:
    """The series selector of a `label_values(selector, label)` query (None for label_values(label))."""
    m = re.match(r"^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", variable_query(var), re.S)
    return m.group(1) if m else None


def provisioned_datasource() -> dict:
    sources = load_yaml(DATASOURCES)["datasources"]
    prom = [d for d in sources if d.get("type") == "prometheus"]
    assert len(prom) == 1, "expected one provisioned prometheus datasource, got %r" % prom
    return prom[0]


def alert_rules() -> List[dict]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


# ---------------------------------------------------------------- PromQL helpers

GRAFANA_RANGES = {"$__rate_interval": "1m", "${__rate_interval}": "1m", "$__interval": "1m",
                  "${__interval}": "1m", "$__range": "1h", "${__range}": "1h"}


def substitute(expr: str) -> str:
    """Grafana variables to something promtool parses: ranges to durations, the rest to `.*`."""
    for name, value in GRAFANA_RANGES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{[^}]*\}|\$[A-Za-z_]\w*", ".*", expr)


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "atan2"}


def metric_names(expr: str) -> Set[str]:
    """Metric names a PromQL expression selects (a small lexer, enough for these files)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    names = set(re.findall(r'__name__\s*=\s*"([^"]*)"', expr))
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery selectors
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def allowed_metric(name: str) -> bool:
    if name in EXPORTED_NAMES or name == "up":
        return True
    if name.startswith(("process_", "python_gc_", "python_info")):
        return True
    histograms = {s.name for s in CATALOGUE if s.kind == "histogram"}
    return any(name == h + suffix for h in histograms for suffix in ("_bucket", "_sum", "_count"))


def family_of(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and any(s.name == base and s.kind == "histogram" for s in CATALOGUE):
            return base
    return name


def selectors(expr: str) -> Iterator[Tuple[str, str]]:
    """(metric name, matcher text) for every `name{...}` or bare `name` selector."""
    blocks: List[str] = []

    def keep(m: "re.Match") -> str:
        blocks.append(m.group(0))
        return "{%d}" % (len(blocks) - 1)

    s = re.sub(r"""\{(?:[^}"']|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\}""", keep, expr)
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])\s*(\{\d+\})?(?!\s*\()", s):
        name, block = m.group(1), m.group(2)
        if name.lower() in _KEYWORDS:
            continue
        yield name, blocks[int(block[1:-1])] if block else ""


# ---------------------------------------------------------------- tests

class CollectorTests(SynchronousTestCase):
    """What the collector exports, read from a `NodeStatus` over a `FakeNode`."""

    def setUp(self) -> None:
        self.node = FakeNode()
        self.node.metrics.last_reload_success = 1700000000.0

    def families(self) -> Dict[str, object]:
        return {f.name: f for f in Collector(self.node.status).collect()}

    def samples(self) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in self.families().values() for s in f.samples}

    def test_every_family_is_in_the_catalogue_with_its_help_and_labels(self) -> None:
        exported = set()
        for f in self.families().values():
            name = f.name + "_total" if f.type == "counter" else f.name
            exported.add(name)
            spec = SPECS.get(name)
            self.assertIsNotNone(spec, "%s is exported but not in CATALOGUE" % name)
            self.assertEqual((f.type, f.documentation), (spec.kind, spec.help), name)
            self.assertTrue(f.samples, "%s has no sample" % name)
            for sample in f.samples:
                labels = set(sample.labels) - ({"le"} if spec.kind == "histogram" else set())
                self.assertEqual(labels, set(spec.labels), "%s: %s" % (name, sample))
        self.assertEqual(exported, set(EXPORTED_NAMES))
        self.assertEqual(len(CATALOGUE), len(EXPORTED_NAMES), "a family is listed twice in CATALOGUE")

    def test_node_state_follows_the_node(self) -> None:
        """A node in STANDBY says so (the gauge used to say NORMAL whatever the state)."""
        self.node.membership.state = "STANDBY"
        samples = self.samples()
        self.assertEqual({state: samples[("dynomite_node_state", (("state", state),))] for state in NODE_STATES},
                         {"NORMAL": 0, "STANDBY": 1, "WRITES_ONLY": 0, "RESUMING": 0, "DOWN": 0})

    def test_consistency_is_the_live_one(self) -> None:
        self.node.settings.read_consistency = "DC_QUORUM"
        samples = self.samples()
        live = {(op, level): samples[("dynomite_consistency", (("level", level), ("op", op)))]
                for op in ("read", "write") for level in CONSISTENCY_LEVELS}
        self.assertEqual({k for k, v in live.items() if v}, {("read", "DC_QUORUM"), ("write", "DC_ONE")})
        self.assertEqual(sum(live.values()), 2)

    def test_every_drop_reason_starts_at_zero(self) -> None:
        """All five reasons the hint log drops for, for every target, before the first drop."""
        self.assertEqual(len(DROP_REASONS), 5)
        self.node.outboxes["dc:dc2"].dropped["corrupt"] = 2
        samples = self.samples()
        for target in self.node.outboxes:
            for reason in DROP_REASONS:
                value = samples[("dynomite_hints_dropped_total", (("reason", reason), ("target", target)))]
                self.assertEqual(value, 2 if (target, reason) == ("dc:dc2", "corrupt") else 0)

    def test_replication_scopes(self) -> None:
        """Hints count as hinted writes of their target's scope: another DC, or a rack of this one."""
        self.node.outboxes["127.0.0.2:8101"].stored_total = 3
        self.node.outboxes["127.0.0.3:8101"].stored_total = 5
        self.node.outboxes["dc:dc2"].stored_total = 7
        self.node.replication.remote_writes[:] = [11, 1]
        samples = self.samples()
        writes = {(scope, result): samples[("dynomite_replication_writes_total",
                                            (("result", result), ("scope", scope)))]
                  for scope in ("local_rack", "remote_dc") for result in ("acked", "failed", "hinted")}
        self.assertEqual(writes, {("local_rack", "acked"): 0, ("local_rack", "failed"): 0,
                                  ("local_rack", "hinted"): 3, ("remote_dc", "acked"): 11,
                                  ("remote_dc", "failed"): 1, ("remote_dc", "hinted"): 12})

    def test_ring_and_peers(self) -> None:
        self.node.peers["127.0.0.3:8101"].is_up = False
        samples = self.samples()
        self.assertEqual(samples[("dynomite_ring_nodes", (("ring_dc", "dc1"), ("ring_rack", "rack1"),
                                                          ("state", "up"), ("status", "NORMAL")))], 1)
        self.assertEqual(samples[("dynomite_ring_nodes", (("ring_dc", "dc2"), ("ring_rack", "rack1"),
                                                          ("state", "down"), ("status", "NORMAL")))], 1)
        self.assertEqual(samples[("dynomite_peer_up", (("peer", "127.0.0.3:8101"), ("peer_dc", "dc2"),
                                                       ("peer_rack", "rack1")))], 0)


class PromQLHelperTests(SynchronousTestCase):
    """The small PromQL lexer these tests rely on."""

    def test_metric_names(self) -> None:
        expr = ('histogram_quantile(0.99, sum by (op, le) (rate(dynomite_request_duration_seconds_bucket'
                '{dc=~"$dc", op="read"}[$__rate_interval]))) / on (instance) group_left(version) '
                'dynomite_build_info > bool 0.5 or up{job="x"} offset 5m')
        self.assertEqual(metric_names(expr),
                         {"dynomite_request_duration_seconds_bucket", "dynomite_build_info", "up"})

    def test_selectors(self) -> None:
        expr = ('sum by (instance) (rate(a_total{dc=~"$dc", x="b{c}"}[$__rate_interval])) / on (instance) '
                'max_over_time(b[5m:1m]) > bool 0 or time() - c')
        self.assertEqual(list(selectors(expr)), [("a_total", '{dc=~"$dc", x="b{c}"}'), ("b", ""), ("c", "")])

    def test_substitute(self) -> None:
        self.assertEqual(substitute('rate(x{dc=~"$dc", i=~"${instance}"}[$__rate_interval])'),
                         'rate(x{dc=~".*", i=~".*"}[1m])')

    def test_allowed_metric(self) -> None:
        self.assertTrue(allowed_metric("dynomite_request_duration_seconds_bucket"))
        self.assertTrue(allowed_metric("dynomite_client_requests_total"))
        self.assertTrue(allowed_metric("process_resident_memory_bytes"))
        self.assertFalse(allowed_metric("dynomite_client_requests"))
        self.assertFalse(allowed_metric("dynomite_latency_ms"))


class DashboardTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.dashboards = load_dashboards()
        self.assertTrue(self.dashboards, "no dashboards in %s" % DASHBOARDS)

    def test_json_parses_and_is_a_dashboard(self) -> None:
        for path, d in self.dashboards.items():
            self.assertIsInstance(d, dict, path)
            self.assertGreaterEqual(d.get("schemaVersion", 0), 36, path)
            self.assertTrue(list(query_panels(d)), "%s has no panels" % path)
            for panel in query_panels(d):
                self.assertTrue(panel.get("title"), "%s: panel %s has no title" % (path, panel.get("id")))
                self.assertTrue(panel.get("gridPos"), "%s: %s has no gridPos" % (path, panel.get("title")))
                self.assertTrue(panel.get("targets"), "%s: %s has no query" % (path, panel.get("title")))

    def test_uids_and_titles_unique(self) -> None:
        uids = [d.get("uid") for d in self.dashboards.values()]
        titles = [d.get("title") for d in self.dashboards.values()]
        self.assertTrue(all(uids) and all(titles), "every dashboard needs a uid and a title")
        self.assertEqual(len(uids), len(set(uids)), "dashboard uids repeat: %r" % uids)
        self.assertEqual(len(titles), len(set(titles)), "dashboard titles repeat: %r" % titles)
        for path, d in self.dashboards.items():
            self.assertLessEqual(len(d["uid"]), 40, path)
            ids = [p.get("id") for p in all_panels(d["panels"])]
            self.assertEqual(len(ids), len(set(ids)), "%s: panel ids repeat" % path)
            panel_titles = [p["title"] for p in query_panels(d)]
            self.assertEqual(len(panel_titles), len(set(panel_titles)), "%s: panel titles repeat" % path)

    def test_variables(self) -> None:
        for path, d in self.dashboards.items():
            variables = {v["name"]: v for v in d["templating"]["list"]}
            ds = variables.get("datasource")
            self.assertIsNotNone(ds, "%s: no datasource variable" % path)
            self.assertEqual((ds["type"], ds["query"]), ("datasource", "prometheus"), path)
            for name in VARIABLES:
                var = variables.get(name)
                self.assertIsNotNone(var, "%s: no %s variable" % (path, name))
                self.assertEqual(var["type"], "query", "%s: $%s" % (path, name))
                self.assertTrue(variable_query(var).startswith("label_values("), "%s: $%s" % (path, name))
                self.assertTrue(variable_query(var).rstrip().endswith(", %s)" % name),
                                "%s: $%s must list label %s" % (path, name, name))
                self.assertEqual(var["datasource"]["uid"], "${datasource}", "%s: $%s" % (path, name))

    def test_datasources_match_provisioning(self) -> None:
        uid = provisioned_datasource()["uid"]
        for path, d in self.dashboards.items():
            variables = {v["name"]: v for v in d["templating"]["list"]}
            default = variables["datasource"]["current"]["value"]
            self.assertEqual(default, uid, "%s: $datasource defaults to %r, provisioned uid is %r"
                             % (path, default, uid))

            def resolve(ds, where):
                self.assertIsInstance(ds, dict, "%s: %s has no datasource" % (path, where))
                self.assertEqual(ds.get("type"), "prometheus", "%s: %s" % (path, where))
                value = ds.get("uid")
                value = default if value in ("${datasource}", "$datasource") else value
                self.assertEqual(value, uid, "%s: %s uses datasource %r, provisioned uid is %r"
                                 % (path, where, ds.get("uid"), uid))

            for panel in query_panels(d):
                resolve(panel.get("datasource"), "panel %r" % panel["title"])
                for target in panel["targets"]:
                    resolve(target.get("datasource", panel.get("datasource")),
                            "panel %r query %s" % (panel["title"], target.get("refId")))
            for name in VARIABLES:
                resolve(variables[name]["datasource"], "variable $%s" % name)

    def test_queries_filter_by_variables_and_use_rate_interval(self) -> None:
        for path, d in self.dashboards.items():
            for panel, target in dashboard_targets(d):
                expr = target["expr"]
                where = "%s: %r %s: %s" % (os.path.basename(path), panel["title"], target["refId"], expr)
                found = list(selectors(expr))
                self.assertTrue(found, where)
                for name, matchers in found:
                    for f in FILTERS:
                        self.assertIn(f, matchers, "%s\nselector %s lacks %s" % (where, name, f))
                for window in re.findall(r"\[([^\]]*)\]", expr):
                    self.assertEqual(window, "$__rate_interval", "%s\nrange [%s]" % (where, window))

    def test_metric_names_are_exported(self) -> None:
        for path, d in self.dashboards.items():
            exprs = [("%r %s" % (p["title"], t["refId"]), t["expr"]) for p, t in dashboard_targets(d)]
            exprs += [("$" + v["name"], variable_selector(v)) for v in d["templating"]["list"]
                      if variable_selector(v)]
            for where, expr in exprs:
                names = metric_names(expr)
                self.assertTrue(names, "%s: %s selects no metric" % (path, where))
                unknown = sorted(n for n in names if not allowed_metric(n))
                self.assertEqual(unknown, [], "%s: %s uses metrics the node does not export: %s\n(%s)"
                                 % (os.path.basename(path), where, unknown, expr))

    def test_every_exported_family_is_on_the_dashboard(self) -> None:
        used: Set[str] = set()
        for d in self.dashboards.values():
            for _, target in dashboard_targets(d):
                used |= {family_of(n) for n in metric_names(target["expr"])}
        missing = sorted(EXPORTED_NAMES - used)
        self.assertEqual(missing, [], "exported metric families no dashboard panel shows: %s" % missing)

    def test_required_panels(self) -> None:
        d = self.dashboards[os.path.join(DASHBOARDS, "dynomite-overview.json")]
        exprs = " ".join(t["expr"] for _, t in dashboard_targets(d))
        for q in ("0.5", "0.99", "0.999"):
            self.assertIn("histogram_quantile(%s, sum by (op, le) (rate(dynomite_request_duration_seconds_bucket"
                          % q, exprs)
        for needle in ("sum by (family, result) (rate(dynomite_client_requests_total",
                       "sum by (dc, scope, result) (rate(dynomite_replication_writes_total",
                       "dynomite_peer_up", "dynomite_hints_oldest_age_seconds", "dynomite_ring_nodes",
                       "sum by (instance, result) (rate(dynomite_datastore_requests_total",
                       "sum by (instance, le) (rate(dynomite_datastore_request_duration_seconds_bucket",
                       "sum by (dc, peer_dc, result) (rate(dynomite_peer_requests_total",
                       "sum by (dc, peer_dc, le) (rate(dynomite_peer_request_duration_seconds_bucket"):
            self.assertIn(needle, exprs)

    def test_exprs_parse_as_promql(self) -> None:
        rules, where = [], {}
        for path, d in self.dashboards.items():
            for panel, target in dashboard_targets(d):
                record = "dashboard:%s:panel%s_%s" % (re.sub(r"\W", "_", d["uid"]), panel["id"], target["refId"])
                rules.append({"record": record, "expr": substitute(target["expr"])})
                where[record] = "%s panel %r query %s: %s" % (os.path.basename(path), panel["title"],
                                                               target["refId"], target["expr"])
            for var in d["templating"]["list"]:
                selector = variable_selector(var)
                if selector:
                    record = "dashboard:%s:var_%s" % (re.sub(r"\W", "_", d["uid"]), var["name"])
                    rules.append({"record": record, "expr": substitute(selector)})
        records = [r["record"] for r in rules]
        self.assertEqual(len(records), len(set(records)))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dashboard-queries.rules.yml")
            with open(path, "w") as f:
                yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
            output = run_promtool(self, "check", "rules", path,
                                  context="\nrecording rules are the dashboard's queries:\n"
                                  + "\n".join("  %s = %s" % kv for kv in sorted(where.items())))
        self.assertIn("SUCCESS: %d rules found" % len(rules), output)


class ProvisioningTests(SynchronousTestCase):

    def test_datasource(self) -> None:
        doc = load_yaml(DATASOURCES)
        self.assertEqual(doc["apiVersion"], 1)
        ds = provisioned_datasource()
        self.assertTrue(ds["uid"] and ds["name"] and ds["url"].startswith("http"))
        self.assertEqual(ds["access"], "proxy")

    def test_dashboard_provider(self) -> None:
        doc = load_yaml(DASHBOARD_PROVIDERS)
        self.assertEqual(doc["apiVersion"], 1)
        providers = doc["providers"]
        self.assertEqual(len(providers), 1)
        p = providers[0]
        self.assertEqual(p["type"], "file")
        self.assertTrue(p["name"] and p["options"]["path"])


class PrometheusConfigTests(SynchronousTestCase):

    def expected_targets(self) -> Dict[str, Tuple[str, str]]:
        """host:22222 -> (dc, rack) for etc/demo-cluster.yml, in file order from addresses.base."""
        demo = load_yaml(DEMO_CLUSTER)
        address = ipaddress.IPv4Address(demo.get("addresses", {}).get("base", "127.0.0.11"))
        out = {}
        for dc, racks in demo["datacenters"].items():
            for rack, count in racks.items():
                for _ in range(count):
                    out["%s:22222" % address] = (dc, rack)
                    address += 1
        return out

    def test_scrape_config_matches_demo_cluster(self) -> None:
        config = load_yaml(PROMETHEUS_CONFIG)
        jobs = [j for j in config["scrape_configs"] if j["job_name"] == "dynomite"]
        self.assertEqual(len(jobs), 1)
        job = jobs[0]
        self.assertEqual(job.get("metrics_path", "/metrics"), "/metrics")
        got = {}
        for static in job["static_configs"]:
            for target in static["targets"]:
                self.assertNotIn(target, got, "target %s listed twice" % target)
                got[target] = (static["labels"]["dc"], static["labels"]["rack"])
        self.assertEqual(got, self.expected_targets())

    def test_rule_files_cover_the_rules(self) -> None:
        config = load_yaml(PROMETHEUS_CONFIG)
        base = os.path.dirname(PROMETHEUS_CONFIG)
        matched = {os.path.abspath(p) for pattern in config["rule_files"]
                   for p in glob.glob(os.path.join(base, pattern))}
        self.assertIn(os.path.abspath(RULES), matched)

    def test_promtool_check_config(self) -> None:
        output = run_promtool(self, "check", "config", PROMETHEUS_CONFIG)
        self.assertIn("SUCCESS", output)


class AlertRuleTests(SynchronousTestCase):

    def test_expected_alerts_with_labels_and_annotations(self) -> None:
        rules = alert_rules()
        names = [r["alert"] for r in rules]
        self.assertEqual(len(names), len(set(names)), "alert names repeat")
        self.assertEqual(set(names), EXPECTED_ALERTS)
        for rule in rules:
            self.assertIn(rule.get("labels", {}).get("severity"), ("critical", "warning"), rule["alert"])
            annotations = rule.get("annotations", {})
            for key in ("summary", "description"):
                for label in VARIABLES:
                    self.assertIn("$labels.%s" % label, annotations.get(key, ""),
                                  "%s: %s must name the %s" % (rule["alert"], key, label))

    def test_alert_exprs_use_exported_metrics(self) -> None:
        for rule in alert_rules():
            names = metric_names(rule["expr"])
            self.assertTrue(names, rule["alert"])
            unknown = sorted(n for n in names if not allowed_metric(n))
            self.assertEqual(unknown, [], "%s uses metrics the node does not export: %s" % (rule["alert"], unknown))

    def test_thresholds(self) -> None:
        rules = {r["alert"]: r for r in alert_rules()}
        compact = {k: re.sub(r"\s+", "", r["expr"]) for k, r in rules.items()}
        self.assertEqual(rules["DynomiteDown"]["for"], "1m")
        self.assertIn("up{", compact["DynomiteDown"])
        self.assertEqual(rules["DynomitePeerDown"]["for"], "2m")
        self.assertEqual(rules["DynomiteHintBacklogGrowing"]["for"], "10m")
        self.assertIn("dynomite_hints_pending>10000", compact["DynomiteHintBacklogGrowing"])
        self.assertIn("deriv(dynomite_hints_pending[10m])>0", compact["DynomiteHintBacklogGrowing"])
        self.assertIn("increase(dynomite_hints_dropped_total[5m])>0", compact["DynomiteHintsDropped"])
        self.assertIn(">0.01", compact["DynomiteErrorRatio"])
        self.assertIn("histogram_quantile(0.99", compact["DynomiteP99Latency"])
        self.assertIn(">0.05", compact["DynomiteP99Latency"])
        self.assertEqual(rules["DynomiteP99Latency"]["for"], "5m")
        self.assertIn("increase(dynomite_quorum_failures_total[5m])>0", compact["DynomiteQuorumFailures"])

    def test_every_alert_has_firing_and_quiet_unit_tests(self) -> None:
        doc = load_yaml(RULE_TESTS)
        fires, quiet = set(), set()
        for case in doc["tests"]:
            for t in case.get("alert_rule_test", []):
                (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
        self.assertEqual(EXPECTED_ALERTS - fires, set(), "alerts never expected to fire")
        self.assertEqual(EXPECTED_ALERTS - quiet, set(), "alerts never expected to stay quiet")

    def test_promtool_check_rules(self) -> None:
        output = run_promtool(self, "check", "rules", RULES)
        self.assertIn("SUCCESS: %d rules found" % len(EXPECTED_ALERTS), output)

    def test_promtool_test_rules(self) -> None:
        output = run_promtool(self, "test", "rules", RULE_TESTS)
        self.assertIn("SUCCESS", output)
