"""
Tests for dynomite.replication.hints.segments: rolling and deleting segment
files, repairing them after a crash or disk damage, and the fsync policy,
seen through the `HintLog` that uses them.
"""

from __future__ import annotations

import os

from dynomite.replication.hints import RECORD_OVERHEAD
from dynomite.replication.hints.records import MAGIC
from tests.unit.test_hints import RECORD, LogTestCase, command, crash


class SegmentTests(LogTestCase):
    def test_roll_over_and_delete_delivered_segments(self) -> None:
        log = self.open(segment_bytes=2 * RECORD + len(MAGIC))   # two hints per segment
        self.fill(log, 7)
        self.assertEqual(self.segments(log), [1, 3, 5, 7])
        for name in os.listdir(log.path):
            if name.endswith(".hints"):
                self.assertLessEqual(os.path.getsize(os.path.join(log.path, name)),
                                     2 * RECORD + len(MAGIC))
        log.peek(3)
        log.ack(3)
        self.assertEqual(self.segments(log), [3, 5, 7])   # 3 is half delivered
        log.ack(4)
        self.assertEqual(self.segments(log), [5, 7])
        log.ack(7)
        self.assertEqual(self.segments(log), [7])          # still being written
        log.tick(self.clock.seconds())
        self.assertEqual(self.segments(log), [])           # drained: no file left
        self.assertEqual(log.append(0, command(8)), 8)
        self.assertEqual(self.segments(log), [8])
        self.assertEqual(self.seqs(log), [8])

    def test_a_hint_larger_than_a_segment_gets_its_own(self) -> None:
        log = self.open(segment_bytes=200)
        log.append(0, b"x" * 10)
        log.append(0, b"y" * 500)
        log.append(0, b"z" * 10)
        self.assertEqual(self.segments(log), [1, 2, 3])
        self.assertEqual([len(h.payload) for h in log.peek(3)], [10, 500, 10])


class RepairTests(LogTestCase):
    def test_torn_last_record_is_cut_and_nothing_before_it_lost(self) -> None:
        log = self.open(segment_bytes=4 * RECORD + 8)
        self.fill(log, 10)
        path = os.path.join(log.path, "%020d.hints" % 9)
        crash(log)
        size = os.path.getsize(path)
        os.truncate(path, size - 10)        # the crash came mid-append of hint 10
        log = self.open(segment_bytes=4 * RECORD + 8)
        self.assertEqual(self.seqs(log), list(range(1, 10)))
        self.assertEqual(os.path.getsize(path), size - RECORD)
        self.assertEqual(len(self.warnings()), 1)
        self.assertEqual(log.append(0, command(10)), 10)
        log.close()
        log = self.open(segment_bytes=4 * RECORD + 8)
        self.assertEqual(self.seqs(log), list(range(1, 11)))
        self.assertEqual(log.peek(10)[-1].payload, command(10))

    def test_torn_header(self) -> None:
        log = self.open()
        self.fill(log, 3)
        crash(log)
        path = os.path.join(log.path, "%020d.hints" % 1)
        with open(path, "ab") as f:
            f.write(b"\x40\x00")          # two bytes of the next length
        log = self.open()
        self.assertEqual(self.seqs(log), [1, 2, 3])

    def test_garbage_after_the_last_record(self) -> None:
        log = self.open()
        self.fill(log, 3)
        crash(log)
        path = os.path.join(log.path, "%020d.hints" % 1)
        with open(path, "ab") as f:
            f.write(b"\x10\x00\x00\x00garbage, not a record at all" * 3)
        log = self.open()
        self.assertEqual(self.seqs(log), [1, 2, 3])
        self.assertEqual(log.append(0, command(4)), 4)
        self.assertEqual(self.seqs(log), [1, 2, 3, 4])

    def test_crc_mismatch_in_the_last_record(self) -> None:
        log = self.open()
        self.fill(log, 3)
        crash(log)
        path = os.path.join(log.path, "%020d.hints" % 1)
        with open(path, "r+b") as f:
            f.seek(-5, os.SEEK_END)
            f.write(b"X")
        log = self.open()
        self.assertEqual(self.seqs(log), [1, 2])
        self.assertEqual(log.append(0, b"new"), 3)

    def test_crc_mismatch_in_a_sealed_segment(self) -> None:
        """Disk damage in an older segment costs the rest of that segment, not start-up."""
        log = self.open(segment_bytes=4 * RECORD + 8)
        self.fill(log, 12)                  # segments 1, 5, 9
        crash(log)
        path = os.path.join(log.path, "%020d.hints" % 5)
        with open(path, "r+b") as f:
            f.seek(8 + RECORD + RECORD_OVERHEAD + 3)   # inside hint 6's payload
            f.write(b"X")
        log = self.open(segment_bytes=4 * RECORD + 8)
        self.assertEqual(log.pending, 12)   # not known yet: only the last segment is scanned
        self.assertEqual(self.seqs(log), [1, 2, 3, 4, 5, 9, 10, 11, 12])
        self.assertEqual(log.dropped["corrupt"], 3)
        self.assertEqual((log.pending, log.pending_bytes), (9, 9 * RECORD))
        log.ack(12)
        self.assertEqual((log.pending, log.pending_bytes), (0, 0))

    def test_a_file_that_is_not_a_segment(self) -> None:
        log = self.open(segment_bytes=4 * RECORD + 8)
        self.fill(log, 8)                   # segments 1, 5
        crash(log)
        with open(os.path.join(log.path, "%020d.hints" % 1), "r+b") as f:
            f.write(b"NOTHINTS")
        with open(os.path.join(log.path, "%020d.hints" % 9), "wb") as f:
            f.write(b"DYN")                 # a crash while creating segment 9
        log = self.open(segment_bytes=4 * RECORD + 8)
        self.assertEqual(self.seqs(log), [5, 6, 7, 8])
        self.assertEqual(log.dropped["corrupt"], 4)
        self.assertEqual(log.append(0, b"x"), 9)

class FsyncTests(LogTestCase):
    def test_always_syncs_once_per_reactor_turn(self) -> None:
        log = self.open(fsync="always")
        self.fill(log, 3)
        self.assertEqual((self.syncs.files, self.syncs.dirs), (0, 0))
        self.clock.advance(0)               # the turn ends
        self.assertEqual((self.syncs.files, self.syncs.dirs), (1, 1))   # + the new segment's name
        self.fill(log, 2, start=4)
        self.clock.advance(0)
        self.assertEqual((self.syncs.files, self.syncs.dirs), (2, 1))
        self.clock.advance(0)
        self.assertEqual(self.syncs.files, 2)   # nothing new, no sync

    def test_flush_now(self) -> None:
        log = self.open(fsync="always")
        self.fill(log, 1)
        log.flush()
        self.clock.advance(0)
        self.assertEqual(self.syncs.files, 1)

    def test_everysec(self) -> None:
        log = self.open(fsync="everysec")
        start = self.clock.seconds()
        self.fill(log, 3)
        self.clock.advance(0)
        log.tick(start + 0.5)
        self.assertEqual(self.syncs.files, 0)
        log.tick(start + 1.0)
        self.assertEqual((self.syncs.files, self.syncs.dirs), (1, 1))
        self.fill(log, 1, start=4)
        log.tick(start + 1.5)
        log.tick(start + 1.9)
        self.assertEqual(self.syncs.files, 1)
        log.tick(start + 2.0)
        log.tick(start + 3.0)               # nothing appended since
        self.assertEqual(self.syncs.files, 2)

    def test_no(self) -> None:
        log = self.open(fsync="no", segment_bytes=2 * RECORD + 8)
        self.fill(log, 5)
        self.clock.advance(0)
        log.tick(self.clock.seconds() + 5)
        log.close()
        self.assertEqual((self.syncs.files, self.syncs.dirs), (0, 0))

    def test_a_sealed_segment_is_synced(self) -> None:
        log = self.open(fsync="everysec", segment_bytes=2 * RECORD + 8)
        self.fill(log, 3)                   # rolls once
        self.assertEqual(self.syncs.files, 1)

    def test_close_syncs(self) -> None:
        log = self.open(fsync="everysec")
        self.fill(log, 1)
        log.close()
        self.assertEqual(self.syncs.files, 1)
