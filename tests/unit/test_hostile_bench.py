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
import random

from twisted.trial.unittest import SynchronousTestCase

from dynomite.bench import hostile
from dynomite.bench.attacker import hostile_payload
from dynomite.bench.hostile import Sample, format_rows, summarize
from dynomite.wire.requests import make_request_parser


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
        self.assertIsNone(by_test["GET"]["ratio"])
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


class CommandLineTests(SynchronousTestCase):
    def test_nonsense_is_refused_before_anything_starts(self):
        for argv in (["--rounds", "0"], ["--wave", "0"], ["-P", "0"], ["--node-python", "old=/nonexistent/python"]):
            with contextlib.redirect_stderr(io.StringIO()) as err:
                e = self.assertRaises(SystemExit, hostile.main, argv)
            self.assertEqual(e.code, 2)
            self.assertRegex(err.getvalue(), "must be at least 1|no such program")
