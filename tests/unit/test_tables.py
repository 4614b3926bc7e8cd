"""
Tests for dynomite.launcher.tables: the one table and hash-range format of
``dynomite-cluster``, ``dynomite-admin`` and ``dynomite-bench``.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.vocabulary import MAX_TOKEN as MAX
from dynomite.launcher.tables import cell, format_ranges, format_table


class CellTests(SynchronousTestCase):
    def test_values(self) -> None:
        """None, booleans and floats read the same in every table."""
        self.assertEqual([cell(v) for v in (None, True, False, 1.5, 2, "x", "")],
                         ["-", "yes", "no", "1.50", "2", "x", ""])


class TableTests(SynchronousTestCase):
    def test_aligned_left_with_header(self) -> None:
        table = format_table(["DC", "NODE", "UP"], [["dc1", "10.0.0.1:8101", True], ["dc10", "x", None]])
        self.assertEqual(table, "DC    NODE           UP\n"
                                "dc1   10.0.0.1:8101  yes\n"
                                "dc10  x              -")

    def test_no_trailing_spaces_and_floats(self) -> None:
        table = format_table(["A", "NOTE"], [[1.5, ""], [2.25, "why"]])
        self.assertEqual(table, "A     NOTE\n1.50\n2.25  why")
        self.assertEqual(format_table(["ONLY"], []), "ONLY")

    def test_right_aligned_columns(self) -> None:
        """Numbers line up on their last digit, the header too; text stays left."""
        table = format_table(("name", "ops/s", "note"), [("a", "1,000", "x"), ("bbb", "5", "")], right={1})
        self.assertEqual(table, "name  ops/s  note\n"
                                "a     1,000  x\n"
                                "bbb       5")

    def test_short_rows(self) -> None:
        """A row with fewer cells than headers leaves the rest blank."""
        self.assertEqual(format_table(["A", "B"], [["x"], ["y", "zz"]]), "A  B\nx\ny  zz")


class RangeTests(SynchronousTestCase):
    def test_format_ranges(self) -> None:
        self.assertEqual(format_ranges([(0, MAX)]), "all")
        self.assertEqual(format_ranges([(0, 0), (2**31 + 1, MAX)]), "2147483649..4294967295, 0")
        self.assertEqual(format_ranges([(1, 2**31)]), "1..2147483648")

    def test_lists_as_from_json(self) -> None:
        """The admin API's [start, end] lists read like tuples, in ring order."""
        self.assertEqual(format_ranges([[0, MAX]]), "all")
        self.assertEqual(format_ranges([[0, 20], [2**31 + 1, MAX], [21, 30]]),
                         "21..30, 2147483649..4294967295, 0..20")
        self.assertEqual(format_ranges([]), "")
