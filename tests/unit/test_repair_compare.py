"""dynomite.repair.compare: scope, differing cells and keys, rechecks and winners."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.values import Address
from dynomite.placement.hashing import key_hash
from dynomite.placement.topology import NodeInfo, Topology
from dynomite.repair.compare import Scope, bitmaps, differing_cells, differing_keys, judge, stable
from tests.repair_fakes import three_racks

A, B, C = b"a" * 40, b"b" * 40, b"c" * 40


class ScopeTests(SynchronousTestCase):
    def test_each_segment_names_one_owner_per_rack(self) -> None:
        topology = Topology([
            NodeInfo("x1", "dc1", "rack1", Address("h", 1), (100,), True),
            NodeInfo("x2", "dc1", "rack1", Address("h", 2), (300,)),
            NodeInfo("y1", "dc1", "rack2", Address("h", 3), (200,)),
            NodeInfo("z1", "dc2", "rack1", Address("h", 4), (0,)),
        ])
        local = Scope(topology, ("dc1",))
        self.assertEqual(local.racks, ("dc1/rack1", "dc1/rack2"))
        self.assertEqual(local.nodes, ("x1", "x2", "y1"))
        self.assertEqual(local.owners[local.segment(150)], ("x2", "y1"))
        self.assertEqual(local.owners[local.segment(50)], ("x1", "y1"))
        self.assertEqual(local.owners[local.segment(250)], ("x2", "y1"))
        self.assertEqual(local.owners[local.segment(400)], ("x1", "y1"))
        everywhere = Scope(topology, ("dc1", "dc2"))
        self.assertEqual(everywhere.racks, ("dc1/rack1", "dc1/rack2", "dc2/rack1"))
        self.assertEqual(everywhere.rack_index("rack2"), 1)
        self.assertIsNone(everywhere.rack_index("rack1"), "ambiguous without its datacenter")
        self.assertEqual(everywhere.rack_index("dc2/rack1"), 2)


class CellTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.scope = Scope(three_racks(), ("dc1",))

    def test_a_cell_differs_when_any_rack_differs_or_lacks_it(self) -> None:
        same = {(0, 5): (1, 2)}
        self.assertEqual(differing_cells(self.scope, {"r1": same, "r2": same, "r3": same}), set())
        # the third rack is the one that differs: a comparison of the first two only misses it
        self.assertEqual(differing_cells(self.scope, {"r1": same, "r2": same, "r3": {(0, 5): (1, 3)}}), {(0, 5)})
        self.assertEqual(differing_cells(self.scope, {"r1": same, "r2": same, "r3": {}}), {(0, 5)})
        self.assertEqual(differing_cells(self.scope, {"r1": {}, "r2": {}, "r3": {(0, 9): (0, 1)}}), {(0, 9)})

    def test_bitmaps_mark_the_buckets_of_each_owner(self) -> None:
        maps = bitmaps(self.scope, {(0, 0), (0, 9), (0, 65535)})
        self.assertEqual(set(maps), {"r1", "r2", "r3"})
        bits = [b for b in range(65536) if maps["r2"][b >> 3] & (1 << (b & 7))]
        self.assertEqual(bits, [0, 9, 65535])


class KeyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.scope = Scope(three_racks(), ("dc1",))

    def cell(self, key: bytes):
        return self.scope.segment(key_hash(key)), key_hash(key) >> 16

    def test_missing_keys_and_only_differing_ones(self) -> None:
        listed = {"r1": {b"k1": A, b"k2": A, b"k3": A}, "r2": {b"k1": A, b"k2": B}, "r3": {b"k1": A, b"k2": A}}
        cells = {self.cell(k) for k in (b"k1", b"k2", b"k3")}
        self.assertEqual(differing_keys(self.scope, listed, cells, None),
                         {b"k2": (A, B, A), b"k3": (A, b"", b"")})

    def test_keys_outside_the_differing_cells_are_left_out(self) -> None:
        listed = {"r1": {b"k3": A}, "r2": {}, "r3": {}}
        segment, bucket = self.cell(b"k3")
        self.assertEqual(differing_keys(self.scope, listed, {(segment, (bucket + 1) % 65536)}, None), {})

    def test_stable_keeps_keys_that_differ_the_same_way_twice(self) -> None:
        first = {b"k1": (A, B, A), b"k2": (A, b"", A), b"k3": (A, B, C)}
        second = {b"k1": (A, B, A), b"k2": (A, A, A), b"k3": (A, C, C)}
        self.assertEqual(stable(first, second), {b"k1": (A, B, A)})


class JudgeTests(SynchronousTestCase):
    def test_majority_wins_and_the_others_lose(self) -> None:
        v = judge(b"k", (A, B, A))
        self.assertEqual((v.winner, v.losers, v.reason), (0, (1,), "majority"))
        v = judge(b"k", (b"", A, A))
        self.assertEqual((v.winner, v.losers, v.reason), (1, (0,), "majority"))

    def test_the_only_copy_is_restored_where_missing(self) -> None:
        v = judge(b"k", (b"", b"", C))
        self.assertEqual((v.winner, v.losers, v.reason), (2, (0, 1), "only copy"))

    def test_a_tie_needs_a_source_rack(self) -> None:
        v = judge(b"k", (A, B, b""))
        self.assertEqual((v.winner, v.losers, v.reason), (None, (), "tie"))
        v = judge(b"k", (A, B, b""), source=1)
        self.assertEqual((v.winner, v.losers, v.reason), (1, (0, 2), "source"))
        # a source missing the key breaks no tie
        self.assertIsNone(judge(b"k", (A, B, b""), source=2).winner)

    def test_a_source_does_not_overrule_a_majority(self) -> None:
        v = judge(b"k", (A, B, A), source=1)
        self.assertEqual((v.winner, v.reason), (0, "majority"))
