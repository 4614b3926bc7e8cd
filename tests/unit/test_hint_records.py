"""
Tests for dynomite.replication.hints.records: the on-disk format's pure
codec, bytes in and hints out, no files.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.replication.hints import records
from dynomite.replication.hints.records import RECORD_OVERHEAD, Hint, safe_name, target_of


class NamesTests(SynchronousTestCase):
    def test_safe_names_are_reversible_and_flat(self) -> None:
        for target, name in [("127.0.0.2:8101", "127.0.0.2%3A8101"), ("dc:dc2", "dc%3Adc2"),
                             ("a/../b", "a%2F..%2Fb"), (".", "%2E"), ("..", "%2E."),
                             ("[::1]:8101", "%5B%3A%3A1%5D%3A8101")]:
            self.assertEqual(safe_name(target), name)
            self.assertEqual(target_of(name), target)
        self.assertRaises(ValueError, safe_name, "")


class RecordTests(SynchronousTestCase):
    """The record codec on its own: bytes in, hints out, no files."""

    def test_encode_decode(self) -> None:
        data = records.encode(7, 1000.5, 2, b"payload")
        self.assertEqual(len(data), RECORD_OVERHEAD + 7)
        self.assertEqual(records.decode(data, 0, len(data), 7), Hint(7, 1000.5, 2, b"payload"))
        self.assertEqual(records.record_size(data, 0), len(data))
        self.assertEqual(records.created_at(data, 0), 1000.5)

    def test_a_record_is_good_only_whole_intact_and_in_place(self) -> None:
        data = b"xx" + records.encode(7, 1.0, 0, b"abc") + b"yy"
        end = len(data) - 2
        self.assertEqual(records.record_end(data, 2, len(data), 7), end)
        self.assertEqual(records.record_end(data, 2, len(data), 8), -1)         # out of place
        self.assertEqual(records.record_end(data, 2, end - 1, 7), -1)           # torn
        self.assertEqual(records.record_end(data, 2, 2 + records.HEADER_SIZE - 1, 7), -1)
        damaged = data[:end - 1] + b"X" + data[end:]
        self.assertEqual(records.record_end(damaged, 2, len(damaged), 7), -1)   # crc
        self.assertIsNone(records.decode(damaged, 2, len(damaged), 7))

    def test_scan_stops_at_the_first_bad_record(self) -> None:
        good = b"".join(records.encode(seq, 1.0, 0, b"v%d" % seq) for seq in range(5, 9))
        self.assertEqual(records.scan(good, 0, len(good), 5), (len(good), 9))
        self.assertEqual(records.scan(good + b"\x40\x00", 0, len(good) + 2, 5), (len(good), 9))
        self.assertEqual(records.scan(good, 0, len(good), 6), (0, 6))
        third = 2 * (RECORD_OVERHEAD + 2)
        cut = good[:third + 5] + b"X" + good[third + 6:]
        self.assertEqual(records.scan(cut, 0, len(cut), 5), (third, 7))
