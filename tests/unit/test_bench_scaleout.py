"""
Tests for ``dynomite-bench-scaleout`` (`dynomite.bench.scaleout`, what it
watches, `dynomite.bench.joinwatch`, and the client it shares with the
repair bench, `dynomite.bench.clientruns`): the join's phase comes from
the joiner's ``scaleout`` section when it has one and from its gossip
entry and the Redis sizes when not, phase times and rates come out of the
polls as documented, a key is misplaced on any node but its owner, the
command line refuses nonsense, and the report prints what the document
holds.  Nothing here asserts a speed: the figures are what the benchmark
reports.
"""

from __future__ import annotations

import contextlib
import io

from twisted.trial.unittest import SynchronousTestCase

from dynomite.bench import clientruns, scaleout
from dynomite.bench.joinwatch import JoinPoll, every_phase, join_phase
from dynomite.scaleout.manager import PHASES


def _info(status="JOINING", section=None):
    info = {"name": "127.0.0.114:8101",
            "gossip": {"entries": {"127.0.0.114:8101": {"status": status, "tokens": [2 ** 31]},
                                   "127.0.0.111:8101": {"status": "NORMAL", "tokens": [0]}}}}
    if section is not None:
        info["scaleout"] = section
    return info


class JoinPhaseTests(SynchronousTestCase):
    def test_a_joiner_that_does_not_answer_is_starting(self):
        self.assertEqual(join_phase(None, 0, 100, 100), ("starting", None))

    def test_the_scaleout_section_says_the_phase_and_the_copy(self):
        copy = {"copied": 10, "scanned": 40, "to_scan": 100}
        self.assertEqual(join_phase(_info(section={"enabled": True, "phase": "copying", "copy": copy}), 5, 100, 100),
                         ("copying", copy))
        self.assertEqual(join_phase(_info(section={"enabled": True, "phase": "idle"}), 0, 100, 100),
                         ("starting", None))
        self.assertEqual(join_phase(_info("NORMAL", {"enabled": True, "phase": "cleaning"}), 60, 100, 100)[0],
                         "cleaning")

    def test_without_the_section_the_gossip_entry_and_the_sizes_say_it(self):
        self.assertEqual(join_phase(_info("JOINING"), 50, 100, 100)[0], "joining")
        self.assertEqual(join_phase(_info("JOINING", {"enabled": False}), 50, 100, 100)[0], "joining")
        # NORMAL, and rack 1 still holds the moved keys twice: the old owner has not dropped them
        self.assertEqual(join_phase(_info("NORMAL"), 50, 100, 100)[0], "cleaning")
        self.assertEqual(join_phase(_info("NORMAL"), 50, 52, 100)[0], "cleaning")
        # within the slack a client's fresh keys make between racks
        self.assertEqual(join_phase(_info("NORMAL"), 50, 51, 100)[0], "done")
        self.assertEqual(join_phase(_info("NORMAL"), 50, 50, 100)[0], "done")

    def test_phases_in_the_order_of_a_join(self):
        phases = every_phase()
        self.assertEqual(phases[:2], ("starting", "joining"))
        self.assertEqual([p for p in phases if p in PHASES], [p for p in PHASES if p not in ("idle", "done", "failed")])
        self.assertEqual(len(set(phases)), len(phases))


def _poll(at, phase, copied=None, scanned=None, joiner=0):
    return JoinPoll(at, phase, copied, scanned, None if copied is None else 1000, joiner, 1000, 1000)


POLLS = [
    _poll(100.5, "starting"),
    _poll(101.5, "announcing", joiner=3),
    _poll(102.5, "copying", 100, 400, joiner=120),
    _poll(104.5, "copying", 400, 1600, joiner=420),
    _poll(106.5, "copying", 500, 2000, joiner=520),
    _poll(107.5, "cutting_over", 500, 2000, joiner=530),
    _poll(109.5, "cleaning", 500, 2000, joiner=540),
    _poll(110.5, "done", 500, 2000, joiner=540),
]


class FigureTests(SynchronousTestCase):
    def test_phase_times_and_copy_rates(self):
        f = scaleout.join_figures(POLLS, 100.0, 111.0)
        self.assertEqual(f["phases_s"], {"starting": 1.0, "announcing": 1.0, "copying": 5.0, "cutting_over": 1.5,
                                         "cleaning": 1.5, "done": 1.0})
        self.assertEqual((f["copy_phase"], f["copied"], f["scanned"]), ("copying", 500, 2000))
        self.assertEqual((f["copied_per_s"], f["scanned_per_s"]), (100.0, 400.0))
        # the joiner's Redis, emptied before the copy (the keys written while announcing are gone),
        # at the first poll after it
        self.assertEqual((f["joiner_keys_grown"], f["dbsize_per_s"]), (530, 106.0))
        self.assertEqual(f["wall_s"], 11.0)

    def test_without_the_copy_counts_joining_stands_for_the_copy(self):
        polls = [_poll(100.5, "starting"), _poll(101.5, "joining", joiner=0), _poll(103.5, "joining", joiner=300),
                 _poll(104.5, "cleaning", joiner=400), _poll(106.5, "done", joiner=400)]
        f = scaleout.join_figures(polls, 100.0, 107.0)
        self.assertEqual(f["copy_phase"], "joining")
        self.assertIsNone(f["copied"])
        self.assertIsNone(f["copied_per_s"])
        self.assertEqual(f["phases_s"]["joining"], 3.0)
        self.assertEqual(f["dbsize_per_s"], round(400 / 3.0, 1))


class PlacementTests(SynchronousTestCase):
    def owner(self, key):
        return "a" if key < b"m" else "b"

    def test_every_key_on_its_owner_only(self):
        got = scaleout.placement({"a": {b"apple", b"kiwi"}, "b": {b"pear"}}, self.owner, [b"apple", b"pear"])
        self.assertEqual((got["misplaced"], got["missing"], got["checked"]), (0, 0, 2))
        self.assertEqual(got["keys_held"], {"a": 2, "b": 1})

    def test_a_key_left_on_its_old_owner_is_misplaced(self):
        got = scaleout.placement({"a": {b"apple", b"pear"}, "b": {b"pear"}}, self.owner, [b"apple", b"pear"])
        self.assertEqual((got["misplaced"], got["missing"]), (1, 0))
        self.assertEqual(got["misplaced_examples"], ["pear on a"])

    def test_a_loaded_key_on_no_node_or_only_the_wrong_one_is_missing(self):
        got = scaleout.placement({"a": {b"apple", b"pear"}, "b": set()}, self.owner, [b"apple", b"pear", b"plum"])
        self.assertEqual((got["misplaced"], got["missing"]), (1, 2))
        self.assertEqual(got["missing_examples"], ["pear", "plum"])


class ThroughputTests(SynchronousTestCase):
    def test_ratio_is_during_over_alone_and_by_phase(self):
        samples = [{"test": "SET", "during": False, "rps": 100.0, "phase": None},
                   {"test": "SET", "during": True, "rps": 40.0, "phase": "copying"},
                   {"test": "SET", "during": True, "rps": 80.0, "phase": "cleaning"},
                   {"test": "SET", "during": True, "rps": 60.0, "phase": "copying"}]
        (row,) = clientruns.summarize_throughput(samples, every_phase())
        self.assertEqual((row["rps_alone"], row["rps_during"], row["ratio"]), (100.0, 60.0, 0.6))
        self.assertEqual(list(row["during_by_phase"].items()), [("copying", 50.0), ("cleaning", 80.0)])


def _document():
    figures = scaleout.join_figures(POLLS, 100.0, 111.0)
    checked = scaleout.placement({"dc1-rack1-0": {b"apple"}, "joiner": {b"pear"}},
                                 lambda k: "dc1-rack1-0" if k < b"m" else "joiner", [b"apple", b"pear"])
    summary = clientruns.summarize_throughput(
        [{"test": "SET", "during": False, "rps": 1000.0}, {"test": "SET", "during": True, "rps": 700.0,
                                                            "phase": "copying"}], every_phase())
    return {"keys": 3000, "load_s": 0.5, "timeout_ms": 5000,
            "joins": [{"name": "rate=0", "rate": 0, "tokens": [2 ** 31], "figures": figures, "placement": checked,
                       "machine": {"machine_busy": 0.5, "cluster_cpu_s": 20.0, "bench_cpu_s": 4.0,
                                   "other_cpu_s": 1.0},
                       "throughput": {"summary": summary}}]}


class ReportTests(SynchronousTestCase):
    def test_the_report_shows_every_figure(self):
        text = scaleout.format_report(_document())
        self.assertIn("3,000 keys on 3 racks", text)
        head = [line for line in text.splitlines() if line.startswith("join ")][0]
        self.assertEqual(head.split()[3:9], ["starting", "announcing", "copying", "cutting_over", "cleaning", "copied"])
        row = [line for line in text.splitlines() if line.startswith("rate=0 ")][0]
        self.assertEqual(row.split()[1:], ["11.0", "1.0", "1.0", "5.0", "1.5", "1.5", "500", "100", "400", "106",
                                           "0", "0"])
        self.assertIn("rate=0: tokens [2147483648]; rack 1 holds dc1-rack1-0 1, joiner 1; 2 loaded keys checked",
                      text)
        self.assertIn("during rate=0: machine 50% busy", text)
        self.assertIn("SET       1,000       700  0.70x", text)
        self.assertIn("during, by the phase a run ended in: copying 700", text)


class CommandLineTests(SynchronousTestCase):
    def refused(self, *argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as caught:
            scaleout.parse_args(list(argv) + ["--redis-benchmark", "sh"])
        self.assertEqual(caught.exception.code, 2)
        return err.getvalue()

    def test_defaults_and_quick(self):
        args = scaleout.parse_args(["--redis-benchmark", "sh"])
        self.assertEqual((args.keys, args.requests, args.rounds, args.rate), (200_000, 200_000, 2, [None]))
        self.assertTrue(args.json.endswith("scaleout.json"))
        args = scaleout.parse_args(["--quick", "--redis-benchmark", "sh"])
        self.assertEqual((args.keys, args.requests), (50_000, 50_000))

    def test_rates(self):
        args = scaleout.parse_args(["--rate", "0, 5000,default", "--redis-benchmark", "sh"])
        self.assertEqual(args.rate, [0, 5000, None])

    def test_nonsense_is_refused(self):
        self.assertIn("'fast' is neither a number", self.refused("--rate", "fast"))
        self.assertIn("is neither a number", self.refused("--rate", "-5"))
        self.assertIn("--keys must be at least 1000", self.refused("--keys", "10"))
        self.assertIn("--rounds", self.refused("--rounds", "0"))
