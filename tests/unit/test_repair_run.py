"""
dynomite.repair.run and warmup with fake replicas (tests.repair_fakes) and a
Clock: phases, rechecks, the compare-and-set restore, the rate limit.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.repair.compare import Scope
from dynomite.repair.run import RepairOptions, RepairRun
from tests.repair_fakes import FakeReplicas, three_racks, two_dcs


def keys(n: int):
    return [b"k%d" % i for i in range(n)]


class RepairRunTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.replicas = FakeReplicas(["r1", "r2", "r3"])
        for key in keys(200):
            self.replicas.put(key, b"v" + key, 1_000 if key == b"k7" else -1)
        self.counts = {}

    def start(self, hash_tag=None, **options) -> RepairRun:
        options.setdefault("rate", 0)
        options.setdefault("count", 50)
        run = RepairRun(Scope(three_racks(), ("dc1",)), self.replicas.send, self.clock, hash_tag,
                        RepairOptions(**options), lambda e, n: self.counts.__setitem__(e, self.counts.get(e, 0) + n))
        self.result = []
        run.run().addBoth(self.result.append)
        return run

    def finish(self, seconds: float = 10.0):
        for _ in range(int(seconds * 10)):
            if self.result:
                break
            self.clock.advance(0.1)
        self.assertTrue(self.result, "the run did not end")
        return self.result[0]

    def damage(self) -> None:
        data = self.replicas.data
        del data["r2"][b"k1"]                          # missing on one rack
        data["r3"][b"k2"] = (b"other", -1)            # different on one rack
        data["r1"][b"extra"] = (b"x", -1)             # on one rack only
        data["r2"][b"k7"] = (b"vk7", 2_000)           # a different expiry
        data["r1"][b"tie"] = (b"x", -1)               # a tie
        data["r2"][b"tie"] = (b"y", -1)

    def test_nothing_differs(self) -> None:
        self.start()
        p = self.finish()
        self.assertEqual((p.phase, p.scanned, p.cells_differing, p.keys_differing), ("done", 600, 0, 0))
        self.assertNotIn((("r1", b"keys")), self.replicas.asked, "listed keys although no cell differed")

    def test_dry_run_finds_each_difference_and_changes_nothing(self) -> None:
        self.damage()
        before = {name: dict(d) for name, d in self.replicas.data.items()}
        self.start(dry_run=True)
        p = self.finish()
        found = {d["key"]: d for d in p.differences}
        self.assertEqual(set(found), {"k1", "k2", "extra", "k7", "tie"})
        self.assertEqual(found["k1"]["racks"], {"dc1/rack1": "winner", "dc1/rack2": "missing", "dc1/rack3": "same"})
        self.assertEqual(found["tie"]["winner"], None)
        self.assertEqual(self.replicas.data, before)
        self.assertEqual((p.keys_repaired, p.keys_undecided), (0, 1))

    def test_repair_restores_the_winner_and_a_second_finds_nothing(self) -> None:
        self.damage()
        self.start()
        p = self.finish()
        self.assertEqual((p.keys_repaired, p.keys_undecided, p.keys_skipped), (4, 1, 0))
        data = self.replicas.data
        for key in (b"k1", b"k2", b"extra", b"k7"):
            self.assertTrue(data["r1"][key] == data["r2"][key] == data["r3"][key], key)
        self.assertEqual(data["r2"][b"k7"], (b"vk7", 1_000))
        self.assertEqual(self.counts["repaired"], 4)
        self.start(source="rack2")
        self.assertEqual(self.finish().keys_repaired, 1)
        self.assertEqual([data[n][b"tie"] for n in ("r1", "r2", "r3")], [(b"y", -1)] * 3)
        self.start()
        p = self.finish()
        self.assertEqual((p.cells_differing, p.keys_differing), (0, 0))

    def test_a_key_written_between_two_looks_drops_out(self) -> None:
        self.damage()

        def write_lands() -> None:       # a write in flight has reached rack 2, not yet the others
            self.replicas.put(b"k1", b"new", on=["r2"])
        self.replicas.hooks[b"digest"] = write_lands
        self.start()
        p = self.finish()
        self.assertEqual(p.keys_changed, 1)
        self.assertNotIn("k1", {d["key"] for d in p.differences})
        self.assertEqual(self.replicas.data["r2"][b"k1"], (b"new", -1), "a newer write was repaired away")

    def test_a_write_after_the_last_look_is_never_overwritten(self) -> None:
        self.damage()

        def write_lands() -> None:       # after the fetch, before the restore
            self.replicas.data["r2"][b"k1"] = (b"client", -1)
        self.replicas.hooks[b"fetch"] = write_lands
        self.start()
        p = self.finish()
        self.assertEqual(p.keys_skipped, 1)
        self.assertEqual(self.replicas.data["r2"][b"k1"], (b"client", -1))

    def test_a_cell_whose_keys_take_several_scan_steps(self) -> None:
        # 200 keys of one hash tag: one cell, four SCAN steps of 50 on each replica
        self.replicas = FakeReplicas(["r1", "r2", "r3"], hash_tag=b"{}")
        for i in range(200):
            self.replicas.put(b"{one}:%03d" % i, b"v")
        self.replicas.data["r3"][b"{one}:010"] = (b"other", -1)
        self.start(hash_tag=b"{}")
        p = self.finish()
        self.assertEqual((p.cells_differing, p.keys_differing, p.keys_repaired), (1, 1, 1))

    def test_rechecks_wait_between_looks(self) -> None:
        self.damage()
        self.start(recheck_delay=2.0, rounds=2)
        self.clock.advance(3.9)
        self.assertEqual(self.result, [])
        self.assertEqual(self.finish().keys_repaired, 4)

    def test_the_rate_limits_each_replica_scan(self) -> None:
        self.start(rate=100)      # 200 keys per replica: two seconds of scanning
        self.clock.advance(1.0)
        self.assertEqual(self.result, [])
        p = self.finish()
        self.assertEqual(p.phase, "done")
        self.assertGreaterEqual(self.clock.seconds(), 1.5)

    def test_an_unreachable_replica_fails_the_run(self) -> None:
        self.replicas.down.add("r3")
        self.start()
        p = self.finish()
        self.assertEqual(p.phase, "failed")
        self.assertIn("r3", p.error)

    def test_cancel_stops_after_the_current_step(self) -> None:
        run = self.start(rate=100)
        run.cancelled = True
        self.assertEqual(self.finish().phase, "cancelled")

    def test_a_source_must_be_a_rack_in_scope(self) -> None:
        self.assertRaises(ValueError, self.start, source="rack9")


class AcrossDatacentersTests(SynchronousTestCase):
    def test_every_datacenter_or_only_the_local_one(self) -> None:
        clock = Clock()
        replicas = FakeReplicas(["a1", "a2", "b1", "b2"])
        for i in range(50):
            replicas.put(b"k%d" % i, b"v")
        del replicas.data["b2"][b"k3"]
        results = []
        local = RepairRun(Scope(two_dcs(), ("dc1",)), replicas.send, clock, None, RepairOptions(rate=0))
        local.run().addCallback(results.append)
        clock.pump([0.5] * 10)
        self.assertEqual((results[0].cells_differing, results[0].keys_repaired), (0, 0))
        self.assertNotIn(("b2", b"cells"), replicas.asked, "a local repair scanned another datacenter")
        everywhere = RepairRun(Scope(two_dcs(), ("dc1", "dc2")), replicas.send, clock, None, RepairOptions(rate=0))
        everywhere.run().addCallback(results.append)
        clock.pump([0.5] * 10)
        self.assertEqual(results[1].keys_repaired, 1)
        self.assertEqual(results[1].differences[0]["racks"]["dc2/rack2"], "missing")
        self.assertEqual(replicas.data["b2"][b"k3"], (b"v", -1))
