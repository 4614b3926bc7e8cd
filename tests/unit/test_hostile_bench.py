"""
Tests for ``dynomite-bench-hostile`` (`dynomite.bench.hostile`) and its
attacker (`dynomite.bench.attacker`): the payloads are bad and bounded,
the summary divides each round's run under attack by the same round's run
alone, and the command line refuses nonsense. Nothing here asserts a
speed: the figures are what the benchmark reports.
"""

from __future__ import annotations

import contextlib
import io
import os
import random

from twisted.trial.unittest import SynchronousTestCase

from dynomite.bench import hostile
from dynomite.bench.attacker import SOURCE_BASE, CpuCap, cgroup_cpu_dirs, hostile_payload, source_addresses
from dynomite.bench.hostile import CAPPED, SHARED, Sample, check, format_rows, summarize
from dynomite.wire.requests import make_request_parser


class SourceTests(SynchronousTestCase):
    def test_other_hosts_than_the_clients_loopback_address(self):
        self.assertEqual(source_addresses(1), [SOURCE_BASE])
        many = source_addresses(300)
        self.assertEqual((len(set(many)), many[-1]), (300, "127.100.1.44"))
        self.assertNotIn("127.0.0.1", many)
        self.assertRaises(ValueError, source_addresses, 0)


class PayloadTests(SynchronousTestCase):
    def test_payloads_are_bounded_and_bad_in_every_way(self):
        rng = random.Random(7)
        outcomes = {"error": 0, "incomplete": 0, "parsed": 0}
        for _ in range(3000):
            payload = hostile_payload(rng)
            self.assertTrue(0 < len(payload) <= 60004, len(payload))
            parser = make_request_parser(1024 * 1024)
            parser.feed(payload)
            if parser.error is not None:
                outcomes["error"] += 1
            elif parser.in_request:
                outcomes["incomplete"] += 1   # held open: the node's read deadline is for these
            else:
                outcomes["parsed"] += 1       # inline garbage: an unknown command at most
        self.assertGreater(outcomes["error"], 600, outcomes)
        self.assertGreater(outcomes["incomplete"], 600, outcomes)


def sample(round_no, test, attacked, rps, hostile_per_s=0.0):
    return Sample(round_no, test, attacked, rps, 1.0, 2.0, 3.0, hostile_per_s, 0.5 if attacked else 0.0, 0)


class SummaryTests(SynchronousTestCase):
    def test_ratio_is_the_median_of_per_round_ratios(self):
        samples = [
            sample(1, "SET", False, 100.0), sample(1, "SET", True, 30.0, 1000.0),
            sample(2, "SET", True, 180.0, 1200.0), sample(2, "SET", False, 200.0),
            sample(3, "SET", False, 50.0), sample(3, "SET", True, 40.0, 1100.0),
            sample(1, "GET", False, 300.0),   # a round without its attacked run counts for no ratio
        ]
        by_test = {row["test"]: row for row in summarize(samples)}
        row = by_test["SET"]
        # 0.3, 0.9 and 0.8 round by round: not the ratio of the medians (40 / 100)
        self.assertEqual((row["ratio"], row["ratio_min"], row["ratio_max"]), (0.8, 0.3, 0.9))
        self.assertEqual((row["rps_alone"], row["rps_attacked"], row["hostile_per_s"]), (100.0, 40.0, 1100.0))
        self.assertEqual(row["attacker_cpu_s"], 1.5)
        self.assertNotIn("GET", by_test)   # never attacked: no row to compare
        table = format_rows(summarize(samples))
        self.assertIn("0.80x", table)
        self.assertIn("0.30-0.90", table)


class NodeComparisonTests(SynchronousTestCase):
    def test_each_node_gets_its_rows_and_its_cpu_per_hostile_connection(self):
        def run(node, attacked, rps, us_per_op, opened=0):
            return Sample(1, "SET", attacked, rps, 1.0, 2.0, us_per_op, 1000.0 if attacked else 0.0, 0.5, 0,
                          node, 100000, opened)
        samples = [run("before", False, 100.0, 3.0), run("before", True, 50.0, 8.0, 2000),
                   run("cpython", False, 100.0, 3.0), run("cpython", True, 80.0, 4.0, 2000)]
        rows = {row["node"]: row for row in summarize(samples)}
        self.assertEqual((rows["before"]["ratio"], rows["cpython"]["ratio"]), (0.5, 0.8))
        # (8 - 3) µs/op over 100,000 operations, for 2,000 connections
        self.assertEqual(rows["before"]["node_us_per_hostile"], 250.0)
        self.assertEqual(rows["cpython"]["node_us_per_hostile"], 50.0)
        table = format_rows(summarize(samples))
        self.assertIn("before", table)
        self.assertIn("250", table)

    def test_what_the_flood_guard_did_is_summed_per_row(self):
        def run(round_no, attacked, refused=0, late=0):
            return Sample(round_no, "SET", attacked, 100.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0, "cpython", 100000, 0,
                          SHARED if attacked else "", 1.0, 0.0, refused, late)
        rows = summarize([run(1, False), run(1, True, 900, 3), run(2, False), run(2, True, 800, 0)])
        self.assertEqual((rows[0]["node_flooder"], rows[0]["node_flood"]), (1700, 3))
        self.assertIn("1700/3", format_rows(rows))


class AttackerModeTests(SynchronousTestCase):
    def samples(self):
        def run(round_no, mode, rps, us_per_op, cpu_s=0.0, opened=0):
            return Sample(round_no, "SET", bool(mode), rps, 1.0, 2.0, us_per_op, opened / 2.0, cpu_s, 0,
                          "cpython", 100000, opened, mode, 2.0 if mode else 0.0)
        return [run(1, "", 100.0, 3.0), run(1, SHARED, 70.0, 4.0, 0.6, 5000), run(1, CAPPED, 95.0, 3.3, 0.4, 4000),
                run(2, CAPPED, 92.0, 3.0, 0.5, 4200), run(2, "", 100.0, 3.0), run(2, SHARED, 60.0, 5.0, 0.8, 5200)]

    def test_each_attacker_is_compared_with_the_same_rounds_alone(self):
        rows = {row["attacker"]: row for row in summarize(self.samples())}
        self.assertEqual(set(rows), {SHARED, CAPPED})
        shared, capped = rows[SHARED], rows[CAPPED]
        self.assertEqual((shared["ratio_min"], shared["ratio_max"]), (0.6, 0.7))
        self.assertEqual((capped["ratio_min"], capped["ratio_max"]), (0.92, 0.95))
        # operations per node CPU second: 3/4 and 3/5 for shared, 3/3.3 and 3/3 capped
        self.assertAlmostEqual(shared["ratio_per_node_cpu"], (0.75 + 0.6) / 2)
        self.assertAlmostEqual(capped["ratio_per_node_cpu"], (3 / 3.3 + 1.0) / 2)
        # CPU seconds over the seconds the attacker ran: in CPUs
        self.assertAlmostEqual(shared["attacker_cpus"], 1.4 / 4.0)
        self.assertEqual(capped["hostile_opened"], 8200)
        table = format_rows(summarize(self.samples()))
        self.assertIn(CAPPED, table)
        self.assertIn("0.95x", table)   # the per node CPU median for the capped attacker
        self.assertIn("0.35", table)

    def test_the_check_says_what_is_met_and_what_is_not(self):
        rows = summarize(self.samples())
        lines = check(rows, {"before_attacks": 60.0, "after": 70.0}, True)
        self.assertIn("met     18400 hostile connections (>= 10000)", lines)
        self.assertIn("met     memory growth 10 MB (< 50)", lines)
        self.assertIn("met     node up and serving", lines)
        self.assertIn("met     SET capped attacker: 0.94x, worst round 0.92x (>= 0.9)", lines)
        self.assertIn("NOT met SET shared attacker: 0.65x, worst round 0.60x (>= 0.9)", lines)
        capped = [row for row in rows if row["attacker"] == CAPPED]
        lines = check(capped, {"before_attacks": 60.0, "after": 115.0}, False)
        self.assertIn("NOT met 8200 hostile connections (>= 10000)", lines)
        self.assertIn("NOT met memory growth 55 MB (< 50)", lines)
        self.assertIn("NOT met node up and serving", lines)


MOUNTINFO_V1 = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
CGROUP_V1 = "4:memory:/job/7\n2:cpu,cpuacct:/job/7\n0::/job/7\n"
MOUNTINFO_V2 = "29 23 0:26 /outer /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


class CgroupTests(SynchronousTestCase):
    def test_finds_its_own_cgroup_in_each_cpu_hierarchy(self):
        self.assertEqual(cgroup_cpu_dirs(MOUNTINFO_V1, CGROUP_V1),
                         [(1, "/sys/fs/cgroup/cpu,cpuacct/job/7"), (2, "/sys/fs/cgroup/unified/job/7")])
        # a namespaced mount shows the part of the path below its root
        self.assertEqual(cgroup_cpu_dirs(MOUNTINFO_V2, "0::/outer/session\n"), [(2, "/sys/fs/cgroup/session")])
        self.assertEqual(cgroup_cpu_dirs("", CGROUP_V1), [])

    def test_v1_quota_is_written_and_the_cgroup_removed(self):
        parent = self.mktemp()
        os.makedirs(parent)
        cap = CpuCap(0.25, "attacker", base=[(1, parent)])
        directory = os.path.join(parent, "attacker")
        self.assertEqual(cap.directory, directory)
        with open(os.path.join(directory, "cpu.cfs_quota_us")) as f:
            self.assertEqual(f.read(), "25000")
        self.assertIn("cgroup v1", cap.how)
        self.assertIn("nice 19", cap.how)
        with open(os.path.join(directory, "cpu.stat"), "w") as f:
            f.write("nr_periods 10\nnr_throttled 4\nthrottled_time 1500000000\n")
        self.assertEqual(cap.throttled_s(), 1.5)
        for name in os.listdir(directory):   # a real cgroup's files go with its directory
            os.remove(os.path.join(directory, name))
        cap.close()
        self.assertFalse(os.path.exists(directory))

    def test_v2_quota_goes_in_cpu_max(self):
        parent = self.mktemp()
        os.makedirs(os.path.join(parent, "attacker"))
        for name, text in (("cgroup.controllers", "cpuset cpu io memory pids\n"), ("cgroup.subtree_control", ""),
                           ("attacker/cpu.max", "max 100000\n")):
            with open(os.path.join(parent, name), "w") as f:
                f.write(text)
        cap = CpuCap(0.5, "attacker", base=[(2, parent)])
        with open(os.path.join(parent, "attacker", "cpu.max")) as f:
            self.assertEqual(f.read(), "50000 100000")
        self.assertIn("cgroup v2", cap.how)

    def test_without_a_cpu_controller_it_says_nice_only(self):
        parent = self.mktemp()
        os.makedirs(parent)
        with open(os.path.join(parent, "cgroup.controllers"), "w") as f:
            f.write("memory pids\n")
        cap = CpuCap(0.25, "attacker", base=[(2, parent)])
        self.assertIsNone(cap.directory)
        self.assertTrue(cap.how.startswith("nice 19 only"), cap.how)
        self.assertFalse(os.path.exists(os.path.join(parent, "attacker")))
        self.assertEqual(cap.throttled_s(), 0.0)


class CommandLineTests(SynchronousTestCase):
    def test_nonsense_is_refused_before_anything_starts(self):
        for argv in (["--rounds", "0"], ["--wave", "0"], ["-P", "0"], ["--node-python", "old=/nonexistent/python"],
                     ["--attackers", "friendly"], ["--attackers", ""], ["--attacker-cpu", "0"],
                     ["--attacker-sources", "0"]):
            with contextlib.redirect_stderr(io.StringIO()) as err:
                e = self.assertRaises(SystemExit, hostile.main, argv)
            self.assertEqual(e.code, 2)
            self.assertRegex(err.getvalue(), "must be at least 1|no such program|--attackers: shared, capped|between")
