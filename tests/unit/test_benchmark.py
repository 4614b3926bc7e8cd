"""
Tests for the benchmark command (``dynomite/bench/``).

Unit tests read canned redis-benchmark output and /proc text, and build
the summary and the tables from made-up runs: what the ratios are divided
by, which medians are taken, how the goals are judged. One small real run
(plain Redis and a single node, a few thousand requests, one round) checks
that the command starts its targets, measures them, writes its JSON and
stops every process it started. Nothing here asserts a speed: performance
is what the benchmark reports, not what a test checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from dynomite.bench import benchmark, cpu, redisbench, report
from dynomite.bench.redisbench import TestResult

CSV_7 = (
    '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",'
    '"max_latency_ms"\n'
    '"SET","31645.57","1.095","0.160","1.007","1.967","2.983","5.575"\n'
    '"GET","33444.82","0.955","0.152","0.927","1.447","1.727","4.151"\n'
)

CSV_6 = '"SET","31645.57"\n"GET","33444.82"\n'

# redis-benchmark 7.0 without --csv: progress lines end in \r, the block header follows on the same line.
NORMAL_7 = (
    " \rSET: rps=0.0 (overall: -nan) avg_msec=-nan (overall: -nan)\r          \r====== SET ======\n"
    "  2000 requests completed in 0.13 seconds\n"
    "  50 parallel clients\n"
    "  64 bytes payload\n"
    "\n"
    "Latency by percentile distribution:\n"
    "0.000% <= 0.287 milliseconds (cumulative count 1)\n"
    "100.000% <= 50.047 milliseconds (cumulative count 2000)\n"
    "\n"
    "Summary:\n"
    "  throughput summary: 15267.18 requests per second\n"
    "  latency summary (msec):\n"
    "          avg       min       p50       p95       p99       max\n"
    "        2.784     0.280     0.959     2.999    49.599    50.047\n"
    " \r====== GET ======\n"
    "  2000 requests completed in 0.05 seconds\n"
    "\n"
    "Summary:\n"
    "  throughput summary: 39215.69 requests per second\n"
    "  latency summary (msec):\n"
    "          avg       min       p50       p95       p99       max\n"
    "        0.859     0.248     0.767     1.783     2.655     2.959\n"
)


class RedisBenchmarkOutputTests(SynchronousTestCase):
    """What redis-benchmark prints becomes TestResult rows."""

    def test_csv_of_redis_benchmark_7(self) -> None:
        self.assertEqual(redisbench.parse_csv(CSV_7), [
            TestResult("SET", 31645.57, 1.095, 0.160, 1.007, 1.967, 2.983, 5.575),
            TestResult("GET", 33444.82, 0.955, 0.152, 0.927, 1.447, 1.727, 4.151),
        ])

    def test_csv_ignores_other_lines(self) -> None:
        text = "WARNING: Could not fetch server CONFIG\n" + CSV_7 + "\n"
        self.assertEqual([r.test for r in redisbench.parse_csv(text)], ["SET", "GET"])

    def test_csv_of_redis_benchmark_6_has_no_latencies(self) -> None:
        self.assertEqual(redisbench.parse_csv(CSV_6), [TestResult("SET", 31645.57), TestResult("GET", 33444.82)])

    def test_normal_report(self) -> None:
        self.assertEqual(redisbench.parse_report(NORMAL_7), [
            TestResult("SET", 15267.18, 2.784, 0.280, 0.959, 2.999, 49.599, 50.047),
            TestResult("GET", 39215.69, 0.859, 0.248, 0.767, 1.783, 2.655, 2.959),
        ])

    def test_parse_output_takes_either(self) -> None:
        self.assertEqual(redisbench.parse_output(CSV_7)[0].rps, 31645.57)
        self.assertEqual(redisbench.parse_output(NORMAL_7)[1].p99_ms, 2.655)
        self.assertEqual(redisbench.parse_output("Error from server: ERR unknown command\n"), [])

    def test_command_line(self) -> None:
        self.assertEqual(
            redisbench.command("127.0.0.5", 7000, "SET", 2000, pipeline=16),
            ["redis-benchmark", "-h", "127.0.0.5", "-p", "7000", "-c", "50", "-d", "64", "-r", "100000",
             "-n", "2000", "-t", "set", "-P", "16", "--csv"],
        )
        self.assertNotIn("-P", redisbench.command("127.0.0.5", 7000, "GET", 2000, pipeline=1))


class ProcTests(SynchronousTestCase):
    """CPU seconds from /proc text."""

    def test_process_stat_with_awkward_name(self) -> None:
        # utime 250 and stime 50 ticks; the name holds a space and a ')'.
        fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", "250", "50"] + ["0"] * 39
        text = "4242 (twistd (x) y) " + " ".join(fields) + "\n"
        self.assertEqual(cpu.parse_process_stat(text), 300 / cpu.CLOCK_TICKS)

    def test_machine_stat(self) -> None:
        text = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n"
        busy, total = cpu.parse_machine_stat(text)
        self.assertEqual((busy, total), (160 / cpu.CLOCK_TICKS, 980 / cpu.CLOCK_TICKS))

    def test_own_process(self) -> None:
        self.assertIsInstance(cpu.process_cpu(os.getpid()), float)


def run(round_no: int, target: str, test: str, pipeline: int, rps: float, node_cpu: float = 0.0,
        interpreter: Any = "cpython") -> report.Run:
    kind = target.split("/")[0]
    node = target != "redis"
    return report.Run(
        round=round_no, target=target, kind=kind, interpreter=interpreter if node else None, test=test,
        pipeline=pipeline, requests=1000, rps=rps, p50_ms=1.0 * round_no, p99_ms=2.0 * round_no,
        node_cpu_s=node_cpu, node_cpu_by_pid={"1": node_cpu} if node else {},
        machine_total_s=2.0, other_cpu_s=0.25 * round_no,  # others used 12.5%, 25%, 37.5% of the machine
    )


LABELS = {"redis": "plain redis", "single/cpython": "single node (cpython)", "single/pypy": "single node (pypy)"}


class SummaryTests(SynchronousTestCase):
    """Medians over rounds; ratios to plain Redis of the same round."""

    def setUp(self) -> None:
        self.runs = [
            run(1, "redis", "SET", 1, 100.0), run(1, "single/cpython", "SET", 1, 30.0, node_cpu=0.05),
            run(2, "redis", "SET", 1, 200.0), run(2, "single/cpython", "SET", 1, 50.0, node_cpu=0.04),
            run(3, "redis", "SET", 1, 300.0), run(3, "single/cpython", "SET", 1, 90.0, node_cpu=0.03),
        ]

    def test_ratio_is_median_of_same_round_ratios(self) -> None:
        single = report.summarize(self.runs, LABELS)[1]
        # Per round 0.30, 0.25, 0.30: the median is 0.30, while median/median would be 50/200 = 0.25.
        self.assertEqual(single.ratios, (0.3, 0.25, 0.3))
        self.assertEqual((single.ratio, single.ratio_min, single.ratio_max), (0.3, 0.25, 0.3))
        self.assertEqual(single.rps, 50.0)

    def test_medians_of_latency_and_cpu(self) -> None:
        single = report.summarize(self.runs, LABELS)[1]
        self.assertEqual((single.p50_ms, single.p99_ms), (2.0, 4.0))
        self.assertAlmostEqual(single.node_us_per_op, 40.0)  # 0.04 s over 1000 requests
        self.assertEqual(single.label, "single node (cpython)")

    def test_redis_is_its_own_yardstick(self) -> None:
        redis = report.summarize(self.runs, LABELS)[0]
        self.assertEqual((redis.ratio, redis.node_us_per_op), (1.0, None))

    def test_round_without_redis_is_left_out_of_the_ratio(self) -> None:
        runs = [r for r in self.runs if not (r.target == "redis" and r.round == 3)]
        self.assertEqual(report.summarize(runs, LABELS)[1].ratios, (0.3, 0.25))

    def test_table(self) -> None:
        table = report.format_table(report.summarize(self.runs, LABELS))
        lines = table.splitlines()
        self.assertEqual(lines[0].split(), ["target", "test", "P", "ops/s", "p50", "ms", "p99", "ms", "vs", "redis",
                                            "(min-max)", "node", "CPU", "µs/op", "other", "load"])
        self.assertEqual(lines[1].split(), ["plain", "redis", "SET", "1", "200", "2.00", "4.00", "1.00x",
                                            "1.00-1.00", "-", "25%"])
        self.assertEqual(lines[2].split(), ["single", "node", "(cpython)", "SET", "1", "50", "2.00", "4.00",
                                            "0.30x", "0.25-0.30", "40.0", "25%"])
        # Columns line up: every "x" of the ratio column sits at the same offset.
        self.assertEqual(len({line.index("x ") for line in lines[1:]}), 1)

    def test_comparison_side_by_side(self) -> None:
        runs = self.runs + [
            run(1, "single/pypy", "SET", 1, 60.0, 0.01, "pypy"),
            run(2, "single/pypy", "SET", 1, 100.0, 0.01, "pypy"),
            run(3, "single/pypy", "SET", 1, 150.0, 0.01, "pypy"),
        ]
        lines = report.format_comparison(report.summarize(runs, LABELS), ["cpython", "pypy"]).splitlines()
        self.assertEqual(len(lines), 2)  # header and the single node; plain Redis has no interpreter
        self.assertEqual(lines[1].split(), ["single", "node", "SET", "1", "50", "0.30x", "4.00", "40.0",
                                            "100", "0.50x", "4.00", "10.0", "2.00x"])

    def test_goals(self) -> None:
        runs = self.runs + [run(1, "single/cpython", "GET", 1, 20.0, 0.01), run(1, "redis", "GET", 1, 100.0)]
        checked = report.check_goals(report.summarize(runs, LABELS), ["cpython"])
        ratio = next(g for g in checked if g["metric"] == "ratio" and g["pipeline"] == 1)
        self.assertEqual(ratio["values"], {"SET": 0.3, "GET": 0.2})
        self.assertFalse(ratio["met"])  # GET is below 0.27x
        cpu_goal = next(g for g in checked if g["metric"] == "cpu" and g["pipeline"] == 1)
        self.assertEqual(cpu_goal["values"], {"SET": 40.0, "GET": 10.0})
        self.assertFalse(cpu_goal["met"])  # 40 µs is not under 40
        self.assertEqual([g for g in checked if g["pipeline"] == 16], [])  # nothing measured at P16
        text = report.format_goals(checked)
        self.assertIn("single SET/GET P1 >= 0.27x redis", text)
        self.assertIn("NOT MET", text)

    def test_goal_met(self) -> None:
        runs = [run(1, "redis", "SET", 16, 100.0), run(1, "redis", "GET", 16, 100.0),
                run(1, "single/cpython", "SET", 16, 60.0, 0.001), run(1, "single/cpython", "GET", 16, 55.0, 0.001)]
        checked = report.check_goals(report.summarize(runs, LABELS), ["cpython"])
        self.assertEqual([(g["metric"], g["met"]) for g in checked], [("ratio", True), ("cpu", True)])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except FileNotFoundError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


_SETTINGS = dict(requests=10, pipelined_requests=10, pipeline=16, clients=1, data_size=8, keyspace=10,
                 tests=("set",), warmup=0.0, redis_benchmark="redis-benchmark")


def _other_interpreter():
    from dynomite.bench.interpreters import Interpreter

    return Interpreter("other", sys.executable, "twistd")


class RoundOrderTests(SynchronousTestCase):
    """No interpreter always runs first in a round: the first measured slower on this machine."""

    def test_nodes_alternate_and_redis_leads(self) -> None:
        from dynomite.bench.interpreters import cpython
        from dynomite.bench.benchmark import Benchmark, Settings

        settings = Settings(rounds=2, kinds=("redis", "single", "dc_one"), **_SETTINGS)
        bench = Benchmark(settings, [cpython(), _other_interpreter()], tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, bench.workdir, True)
        bench.plan()
        first = [t.id for t in bench.round_order(1)]
        second = [t.id for t in bench.round_order(2)]
        self.assertEqual(first[0], "redis")
        self.assertEqual(second[0], "redis")
        self.assertEqual(second[1:], first[1:][::-1])
        self.assertEqual(first[1:], ["single/cpython", "dc_one/cpython", "single/other", "dc_one/other"])


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class TwoDatacenterTargetTests(SynchronousTestCase):
    """The two-datacenter targets: run only when named, with the conflicts rule they are for."""

    def test_not_run_by_default(self) -> None:
        from dynomite.bench.targets import KINDS

        self.assertEqual([k for k in KINDS if not KINDS[k].by_default], ["two_dcs", "two_dcs_lww"])
        self.assertEqual((KINDS["two_dcs_lww"].datacenters, KINDS["two_dcs_lww"].conflicts), (2, "last_writer_wins"))

    def test_topology(self) -> None:
        from dynomite.bench.interpreters import cpython
        from dynomite.bench.targets import KINDS, NodeTarget

        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, True)
        plain = NodeTarget(KINDS["two_dcs"], cpython(), tmp, "127.0.0.200")
        lww = NodeTarget(KINDS["two_dcs_lww"], cpython(), tmp, "127.0.0.210")
        self.assertEqual(sorted(n.dc for n in plain.cluster.nodes), ["dc1", "dc2"])
        self.assertEqual(len(lww.cluster.nodes), 2)
        # the default is left out: an older node refuses a key it does not know
        plain_yaml, lww_yaml = (read_text(t.cluster.write_configs()[0]) for t in (plain, lww))
        self.assertNotIn("datacenter_conflicts", plain_yaml)
        self.assertIn("datacenter_conflicts: last_writer_wins", lww_yaml)


class RealRunTests(SynchronousTestCase):
    """The command against real processes: plain Redis and a single node, one short round."""

    def setUp(self) -> None:
        if shutil.which("redis-benchmark") is None:
            self.fail("redis-benchmark is missing: apt-get install redis-tools")
        self.tmp = tempfile.mkdtemp(prefix="test-bench-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_single_node_round(self) -> None:
        path = os.path.join(self.tmp, "out.json")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = benchmark.main([
                "--targets", "single", "--rounds", "1", "-n", "2000", "--pipelined-requests", "4000",
                "--warmup", "0", "--json", path, "--workdir", os.path.join(self.tmp, "work"),
            ])
        self.assertEqual(status, 0, err.getvalue())
        with open(path) as f:
            doc: Dict[str, Any] = json.load(f)
        self.assertTrue(doc["complete"])
        runs: List[Dict[str, Any]] = doc["runs"]
        self.assertEqual(
            sorted((r["target"], r["test"], r["pipeline"]) for r in runs),
            sorted((t, x, p) for t in ("redis", "single/cpython") for x in ("SET", "GET") for p in (1, 16)),
        )
        for r in runs:
            self.assertGreater(r["rps"], 0)
            self.assertIsNotNone(r["p99_ms"])
            self.assertGreater(r["keys_after"][0], 0)  # the SETs reached the redis-server
        node_runs = [r for r in runs if r["target"] != "redis"]
        self.assertGreater(sum(r["node_cpu_s"] for r in node_runs), 0)
        summary = {(s["target"], s["test"], s["pipeline"]): s for s in doc["summary"]}
        self.assertGreater(summary[("single/cpython", "SET", 1)]["ratio"], 0)
        self.assertEqual(summary[("redis", "GET", 16)]["ratio"], 1.0)
        # The table and the progress lines were shown.
        self.assertIn("single node (cpython)", out.getvalue())
        self.assertIn("[8/8] round 1/1", err.getvalue())
        # Every process it started is gone.
        pids = [int(pid) for r in node_runs for pid in r["node_cpu_by_pid"]]
        pids += [pid for t in doc["targets"] for pid in t["pids"]]
        self.assertTrue(pids)
        self.assertEqual([pid for pid in pids if _alive(pid)], [])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "work")))


class HintReplayBenchTests(SynchronousTestCase):
    """dynomite.bench.hint_replay drives a real HintLog and Outbox: a tiny run completes and says so."""

    def test_tiny_run(self) -> None:
        from dynomite.bench import hint_replay

        directory = tempfile.mkdtemp(prefix="hint-bench-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(hint_replay.main(["--hints", "300", "--dir", directory]), 0)
        lines = out.getvalue().splitlines()
        self.assertEqual([line.split()[0] for line in lines[2:6]], ["no", "everysec", "always", "always"])
        self.assertEqual(lines[-1], "target: >= 5000 replays/s")
