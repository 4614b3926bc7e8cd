"""
Read repair and warm-up decisions: dynomite.consistency.read_repair and
dynomite.repair.manager.Repairs with fake replicas and a Clock.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands import lww
from dynomite.consistency.read_repair import Disagreement
from dynomite.repair.manager import RepairBusy, Repairs
from dynomite.repair.run import RepairOptions
from dynomite.wire.resp import encode_command
from tests.fakes import RecordingSink
from tests.repair_fakes import FakeReplicas, three_racks


class DisagreementTests(SynchronousTestCase):
    def test_answers_pass_through_and_a_difference_is_told_once_all_are_in(self) -> None:
        told = []
        watch = Disagreement(3, lambda: told.append(1))
        sinks = [RecordingSink() for _ in range(3)]
        tees = [watch.watch(s) for s in sinks]
        tees[0].complete(b"$1\r\na\r\n")
        tees[1].complete(b"$1\r\nb\r\n")
        self.assertEqual(told, [], "told before the last replica answered")
        tees[2].fail(b"-ERR timeout\r\n")
        self.assertEqual(told, [1])
        self.assertEqual([s.calls for s in sinks], [[("complete", b"$1\r\na\r\n")], [("complete", b"$1\r\nb\r\n")],
                                                   [("fail", b"-ERR timeout\r\n")]])

    def test_same_answers_or_failures_only_are_no_difference(self) -> None:
        told = []
        watch = Disagreement(3, lambda: told.append(1), normalise=lambda raw: bytes(sorted(raw)))
        for tee, raw in zip([watch.watch(RecordingSink()) for _ in range(3)], (b"ab", b"ba", None)):
            tee.complete(raw) if raw else tee.fail(b"-ERR x\r\n")
        self.assertEqual(told, [])


class RepairsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.replicas = FakeReplicas(["r1", "r2", "r3"])
        self.membership = SimpleNamespace(state="NORMAL", unreadable=frozenset(), holds=[],
                                          hold_resuming=lambda hold: self.membership.holds.append(hold))

    def repairs(self, **kw) -> Repairs:
        return Repairs(three_racks, self.replicas.send, self.clock, self.membership, None, 0, 0.0, **kw)

    def test_read_repair_fixes_the_keys_of_the_read(self) -> None:
        repairs = self.repairs()
        self.replicas.put(b"a", b"1")
        self.replicas.put(b"b", b"2")
        self.replicas.data["r3"][b"a"] = (b"stale", -1)
        repairs.read_repair(encode_command([b"MGET", b"a", b"b"]))
        self.clock.advance(1)
        self.assertEqual(self.replicas.data["r3"][b"a"], (b"1", -1))
        self.assertEqual(repairs.counts["read_repairs"], 1)

    def test_read_repairs_are_bounded(self) -> None:
        repairs = self.repairs()
        self.replicas.put(b"a", b"1", on=["r1", "r2"])
        for _ in range(70):
            repairs.read_repair(encode_command([b"GET", b"a"]))
        self.assertEqual(repairs.counts["read_repairs_dropped"], 6)
        self.clock.advance(1)
        self.assertEqual(self.replicas.data["r3"][b"a"], (b"1", -1))

    def test_a_fresh_cluster_marks_itself_and_does_not_warm_up(self) -> None:
        repairs = self.repairs()
        self.clock.advance(5)
        self.replicas.put(b"a", b"1", on=["r2", "r3"])   # clients wrote before this node looked
        for name in ("r2", "r3"):
            self.replicas.markers[name] = 5               # ... and the others marked after it started
        repairs.redis_restarted()
        repairs.tick(self.clock.seconds())
        self.assertIsNone(repairs.warmup)
        self.assertEqual(self.replicas.markers["r1"], 5)
        self.assertTrue(repairs.status(0)["data_set_marked"])

    def test_a_redis_that_lost_its_mark_is_warmed_up(self) -> None:
        repairs = self.repairs()
        for name in ("r1", "r2", "r3"):
            self.replicas.markers[name] = 1
        for i in range(300):
            self.replicas.put(b"k%d" % i, b"v", on=["r2", "r3"])
        repairs.redis_restarted()
        repairs.tick(self.clock.seconds())
        self.assertIsNone(repairs.warmup, "its Redis still has its mark: nothing lost")
        self.replicas.markers["r1"] = 0                   # Redis restarted empty
        self.replicas.put(b"k1", b"newer")                # a client's write, here first, then everywhere
        self.replicas.put(b"k2", b"1", on=["r1"])         # a hint replayed onto the empty key (INCR from 0)
        repairs.redis_restarted()
        repairs.tick(self.clock.seconds())
        self.assertIsNotNone(repairs.warmup)
        self.clock.pump([0.5] * 10)                      # the kept keys are looked at twice
        self.assertEqual(self.membership.holds, [True, False])
        self.assertEqual(len(self.replicas.data["r1"]), 300)
        self.assertEqual(self.replicas.data["r1"][b"k1"], (b"newer", -1), "warm-up overwrote a newer write")
        self.assertEqual(self.replicas.data["r1"][b"k2"], (b"v", -1), "a partial value from a hint stayed")
        self.assertEqual((repairs.warmup.progress.kept, repairs.warmup.progress.kept_repaired), (2, 1))
        self.assertEqual(repairs.counts["streamed"], 298)
        self.assertGreater(self.replicas.markers["r1"], 0)

    def test_a_restarted_node_remembers_its_redis_was_whole(self) -> None:
        path = self.mktemp()
        first = self.repairs(marked_path=path)
        first.redis_restarted()                           # a new node: marks its Redis, files it
        self.assertTrue(self.replicas.markers["r1"])
        for i in range(10):
            self.replicas.put(b"k%d" % i, b"v", on=["r2", "r3"])
        for name in ("r2", "r3"):
            self.replicas.markers[name] = 7
        self.replicas.markers["r1"] = 0                   # node and Redis restart, the Redis empty
        again = self.repairs(marked_path=path)
        again.redis_restarted()
        self.assertEqual(len(self.replicas.data["r1"]), 10)
        fresh = self.repairs(marked_path=self.mktemp())  # a new node meeting the same Redis
        self.replicas.markers["r1"] = 0
        self.replicas.data["r1"].clear()
        fresh.redis_restarted()
        self.assertIsNone(fresh.warmup)
        self.assertEqual(self.replicas.data["r1"], {})

    def test_background_passes_every_interval_one_at_a_time(self) -> None:
        repairs = Repairs(three_racks, self.replicas.send, self.clock, self.membership, None, 0, 60.0)
        self.replicas.put(b"a", b"1", on=["r1", "r2"])
        repairs.tick(30)
        self.assertIsNone(repairs.last)
        self.clock.advance(60)
        repairs.tick(self.clock.seconds())
        self.assertIsNotNone(repairs.current, "no pass after anti_entropy_interval")
        self.assertRaises(RepairBusy, repairs.start, RepairOptions())
        self.clock.pump([0.5] * 10)
        self.assertIsNone(repairs.current)
        self.assertEqual(repairs.last.progress.keys_repaired, 1)
        self.assertEqual(self.replicas.data["r3"][b"a"], (b"1", -1))

    def test_bootstrap_warms_up_from_the_first_readable_source(self) -> None:
        self.membership.unreadable = frozenset({"r2"})
        self.replicas.put(b"x", b"1", on=["r2", "r3"])
        repairs = self.repairs(bootstrap=True)
        repairs.tick(self.clock.seconds())
        self.assertEqual(self.replicas.data["r1"][b"x"], (b"1", -1))
        self.assertEqual(set(repairs.warmup.progress.sources), {"r3"})

    def test_a_failed_warm_up_is_tried_again(self) -> None:
        self.replicas.put(b"x", b"1", on=["r2", "r3"])
        repairs = self.repairs(bootstrap=True)
        self.replicas.down.update({"r2", "r3"})
        repairs.tick(self.clock.seconds())
        self.assertIsNone(repairs.warmup, "no replica answers yet: nothing to stream from")
        self.replicas.down.clear()
        self.replicas.broken.add(b"stream")
        repairs.tick(self.clock.seconds())
        self.assertIn("no replica could stream", repairs.warmup.progress.error)
        self.assertEqual(self.membership.holds[-1], False)
        self.replicas.broken.clear()
        repairs.tick(self.clock.seconds())
        self.assertEqual(self.replicas.data["r1"][b"x"], (b"1", -1))
        self.assertIsNone(repairs.warmup.progress.error)

    def test_a_failing_source_is_replaced(self) -> None:
        self.replicas.down.add("r2")
        self.replicas.put(b"x", b"1", on=["r2", "r3"])
        repairs = self.repairs(bootstrap=True)
        repairs.tick(self.clock.seconds())
        self.assertEqual(self.replicas.data["r1"][b"x"], (b"1", -1))
        self.assertIsNone(repairs.warmup.progress.error)

    def test_with_versions_a_warm_up_merges_them_before_the_data(self) -> None:
        repairs = self.repairs(versions=True)
        for name in ("r1", "r2", "r3"):
            self.replicas.markers[name] = 1
        for i in range(50):
            key = b"k%d" % i
            self.replicas.put(key, b"v", on=["r2", "r3"])
            for name in ("r2", "r3"):
                self.replicas.versions[name][lww.version_key(key)] = (b"0005", 9_000)
        self.replicas.versions["r2"][lww.version_key(b"gone")] = (b"0007", 9_000)   # a delete's tombstone
        repairs.redis_restarted()                         # this node sees its Redis whole once
        repairs.tick(self.clock.seconds())
        self.replicas.markers["r1"] = 0                   # then Redis restarted empty
        self.replicas.versions["r1"][lww.version_key(b"k1")] = (b"0009", 9_500)     # noted meanwhile
        repairs.redis_restarted()
        repairs.tick(self.clock.seconds())
        self.clock.pump([0.5] * 10)
        asked = [mode for _, mode in self.replicas.asked]
        self.assertLess(asked.index(b"merge"), asked.index(b"stream"), asked)
        self.assertEqual(len(self.replicas.data["r1"]), 50)
        held = self.replicas.versions["r1"]
        self.assertEqual(len(held), 51)
        self.assertEqual(held[lww.version_key(b"gone")], (b"0007", 9_000))
        self.assertEqual(held[lww.version_key(b"k1")], (b"0009", 9_500), "a version noted here was undone")
        self.assertEqual(repairs.warmup.progress.versions, 51)

    def test_with_versions_a_key_repaired_gets_the_winners(self) -> None:
        repairs = self.repairs(versions=True)
        self.replicas.put(b"a", b"1")
        for name in ("r1", "r2"):
            self.replicas.versions[name][lww.version_key(b"a")] = (b"0005", 9_000)
        self.replicas.data["r3"][b"a"] = (b"stale", -1)   # and no versions there
        repairs.read_repair(encode_command([b"GET", b"a"]))
        self.clock.advance(1)
        self.assertEqual(self.replicas.data["r3"][b"a"], (b"1", -1))
        self.assertEqual(self.replicas.versions["r3"], {lww.version_key(b"a"): (b"0005", 9_000)})
