"""
Tests for ``dynomite-bench-repair`` (`dynomite.bench.repair`) and its data
(`dynomite.bench.dataset`, `dynomite.bench.digests`): the data set holds
every type, the damage touches 10% of the keys on one rack each, phase
times and rates come out of the polls as documented, the command line
refuses nonsense, and the report prints what the document holds.  Nothing
here asserts a speed: the figures are what the benchmark reports.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from dynomite.bench import dataset, digests, repair
from dynomite.wire.requests import parse_whole


class DataSetTests(SynchronousTestCase):
    def test_every_type_is_loaded_and_one_key_in_seven_expires(self):
        n = 2000
        commands = []
        total = 0
        for payload, count in dataset.load_commands(n, 123456, batch=300):
            parsed, _ = parse_whole(payload)
            self.assertEqual(len(parsed), count)
            total += count
            commands.extend(parsed)
        self.assertEqual(total, len(commands))
        verbs = Counter(c[0] for c in commands)
        self.assertEqual(set(verbs), {b"SET", b"HSET", b"SADD", b"RPUSH", b"ZADD", b"PEXPIREAT"})
        self.assertEqual(verbs[b"PEXPIREAT"], len(range(0, n, 7)))
        written = {c[1] for c in commands}
        self.assertEqual(written, {dataset.key_name(i) for i in range(n)})
        kinds = Counter(dataset.key_kind(i) for i in range(n))
        self.assertEqual(kinds["bigset"], 2)
        self.assertEqual(kinds["bighash"], 2)
        big = [c for c in commands if c[1] == dataset.key_name(503)][0]
        self.assertEqual(len(big) - 2, dataset.BIG)   # more than 128 members: hashtable-encoded

    def test_the_damage_is_ten_percent_on_one_rack_each_in_every_way(self):
        plan = list(dataset.damage_plan(100000))
        self.assertEqual(len(plan), 10000)
        self.assertEqual(len({i for i, _, _ in plan}), 10000)
        self.assertEqual(Counter(rack for _, rack, _ in plan), {1: 5000, 2: 5000})
        by_damage = Counter(what for _, _, what in plan)
        self.assertEqual(set(by_damage), set(dataset.DAMAGES))
        self.assertTrue(max(by_damage.values()) - min(by_damage.values()) <= 2, by_damage)
        changed = {dataset.key_kind(i) for i, _, what in plan if what == "changed"}
        self.assertEqual(changed, {"string", "hash", "set", "list", "zset", "bigset", "bighash"})

    def test_a_value_change_keeps_the_expiry_and_an_expiry_change_moves_it(self):
        string = [i for i in range(1000) if dataset.key_kind(i) == "string"][0]
        (cmd,) = dataset.damage_commands(string, "changed", 1000)
        self.assertEqual((cmd[0], cmd[-1]), (b"SET", b"KEEPTTL"))
        (cmd,) = dataset.damage_commands(3, "expiry", 1000)
        self.assertEqual(cmd, [b"PEXPIREAT", dataset.key_name(3), b"%d" % (1000 + dataset.EXPIRY_SHIFT_MS)])
        self.assertEqual(dataset.damage_commands(3, "deleted", 1000), [[b"DEL", dataset.key_name(3)]])


class DumpDigestTests(SynchronousTestCase):
    def test_the_dump_digest_covers_name_value_and_expiry(self):
        base = digests.dump_digest(b"k", b"dump", -1)
        self.assertEqual(len(base), 2)
        self.assertTrue(all(0 <= w < 2 ** 32 for w in base))
        self.assertNotEqual(base, digests.dump_digest(b"k", b"dump", 5))
        self.assertNotEqual(base, digests.dump_digest(b"k", b"dumq", -1))
        self.assertNotEqual(base, digests.dump_digest(b"k2", b"dump", -1))
        import hashlib
        self.assertEqual(base, struct.unpack(">II", hashlib.sha1(b"1:kdump:-1").digest()[:8]))


POLLS = [
    (100.5, "digests", 1000, 1000),
    (101.5, "digests", 9000, 9000),
    (102.5, "listing", 9500, 500),
    (103.5, "rechecking", 12000, 0),
    (104.5, "repairing", 12000, 100),
    (105.5, "repairing", 12000, 400),
]
RESULT = {"phase": "done", "error": None, "started": 100.0, "finished": 106.0, "keys_total": 9000,
          "scanned": 12000, "cells_differing": 30, "keys_differing": 510, "keys_changed": 10,
          "keys_repaired": 500, "keys_skipped": 0, "keys_undecided": 0}


class FigureTests(SynchronousTestCase):
    def test_phases_begin_halfway_between_polls(self):
        self.assertEqual(repair.phase_times(POLLS, 100.0, 106.0),
                         {"digests": 2.0, "listing": 1.0, "rechecking": 1.0, "repairing": 2.0})
        self.assertEqual(repair.phase_times([], 100.0, 106.0), {})

    def test_compared_and_repaired_per_second(self):
        figures = repair.repair_figures(POLLS, RESULT)
        self.assertEqual(figures["digest_scanned"], 9000)
        self.assertEqual(figures["compared_per_s"], 4500.0)
        self.assertEqual(figures["repaired_per_s"], 250.0)
        self.assertEqual(figures["wall_s"], 6.0)
        self.assertEqual(figures["keys_differing"], 510)

    def test_a_run_that_never_listed_compared_everything_it_scanned(self):
        polls = [(100.5, "sizing", 0, 0), (101.0, "digests", 700, 700)]
        self.assertEqual(repair.digest_scanned(polls, dict(RESULT, scanned=900)), 900)

    def test_throughput_ratio_is_during_over_alone_per_test(self):
        samples = [{"test": "SET", "during_repair": False, "rps": 100.0, "other_cpu_s": 1.0},
                   {"test": "SET", "during_repair": False, "rps": 120.0, "other_cpu_s": 3.0},
                   {"test": "SET", "during_repair": True, "rps": 55.0, "other_cpu_s": 0.5, "phase": "repairing"},
                   {"test": "SET", "during_repair": True, "rps": 45.0, "other_cpu_s": 0.5, "phase": "digests"},
                   {"test": "SET", "during_repair": True, "rps": 65.0, "other_cpu_s": 0.5, "phase": "repairing"},
                   {"test": "GET", "during_repair": False, "rps": 200.0}]
        rows = {r["test"]: r for r in repair.summarize_throughput(samples)}
        self.assertEqual(rows["SET"]["rps_alone"], 110.0)
        self.assertEqual(rows["SET"]["ratio"], 0.5)
        self.assertEqual((rows["SET"]["runs_alone"], rows["SET"]["runs_during"]), (2, 3))
        self.assertEqual(rows["SET"]["during_by_phase"], {"digests": 45.0, "repairing": 60.0})
        self.assertEqual((rows["SET"]["other_cpu_alone_s"], rows["SET"]["other_cpu_during_s"]), (2.0, 0.5))
        self.assertIsNone(rows["GET"]["ratio"])


def _document():
    figures = repair.repair_figures(POLLS, RESULT)
    second = repair.repair_figures([], dict(RESULT, keys_differing=0, keys_repaired=0))
    method = {"keys": 9000, "cells": 30, "seconds": 1.0, "keys_per_second": 9000.0, "redis_cpu_s": 0.5,
              "client_cpu_s": 0.25, "cpu_us_per_key": 83.3}
    return {
        "keys": 3000, "damaged": 300, "load_s": 0.5,
        "damage": {"deleted": 100, "changed": 100, "expiry": 100, "rack2": 150, "rack3": 150},
        "repairs": [{"name": "default rate", "rate": None, "with_client": True, "figures": figures,
                     "still_differing": 0, "second_run": second,
                     "machine": {"machine_busy": 0.875, "cluster_cpu_s": 50.0, "bench_cpu_s": 10.0,
                                 "other_cpu_s": 30.0}}],
        "throughput": {"summary": repair.summarize_throughput(
            [{"test": "SET", "during_repair": False, "rps": 1000.0},
             {"test": "SET", "during_repair": True, "rps": 800.0, "phase": "listing"}])},
        "digest_method": {"script": method, "dump": dict(method, keys_per_second=4500.0), "speed_ratio": 2.0,
                          "seed_check": {"keys": 6, "dump_differs": 3, "script_digest_differs": 0}},
    }


class ReportTests(SynchronousTestCase):
    def test_the_report_shows_every_figure(self):
        text = repair.format_report(_document())
        self.assertIn("3,000 keys on 3 racks", text)
        self.assertIn("100 deleted, 100 changed, 100 expiry moved", text)
        row = [line for line in text.splitlines() if line.startswith("default rate")][0]
        self.assertEqual(row.split()[2:], ["6.0", "-", "2.0", "1.0", "1.0", "2.0", "4,500", "250", "510", "500",
                                           "0", "0"])
        self.assertIn("SET       1,000       800  0.80x   - / -", text)
        self.assertIn("during, by the phase a run ended in: listing 800", text)
        self.assertIn("during default rate: machine 88% busy; CPU s: cluster 50.0, this benchmark and its client 10.0,"
                      " other processes 30.0", text)
        self.assertIn("(a)/(b) keys/s: 2.00x", text)
        self.assertIn("3 of 6 DUMP differently, 0 digest differently by the script", text)


class CommandLineTests(SynchronousTestCase):
    def refused(self, *argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as caught:
            repair.parse_args(list(argv))
        self.assertEqual(caught.exception.code, 2)
        return err.getvalue()

    def test_defaults_and_quick(self):
        args = repair.parse_args(["--redis-benchmark", "sh"])
        self.assertEqual((args.keys, args.requests, args.rounds), (1_000_000, 200_000, 2))
        self.assertTrue(args.json.endswith("repair.json"))
        args = repair.parse_args(["--quick", "--redis-benchmark", "sh"])
        self.assertEqual((args.keys, args.requests), (100_000, 50_000))
        args = repair.parse_args(["--quick", "--keys", "5000", "-n", "2000", "--redis-benchmark", "sh"])
        self.assertEqual((args.keys, args.requests), (5000, 2000))

    def test_nonsense_is_refused(self):
        self.assertIn("--keys must be at least 1000", self.refused("--keys", "10", "--redis-benchmark", "sh"))
        self.assertIn("--requests", self.refused("-n", "0", "--redis-benchmark", "sh"))
        self.assertIn("--rounds", self.refused("--rounds", "0", "--redis-benchmark", "sh"))
        self.assertIn("not found", self.refused("--redis-benchmark", "/nonexistent/redis-benchmark"))
