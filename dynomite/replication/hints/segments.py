# -*- test-case-name: tests.unit.test_hint_segments -*-
"""
The segment files of one hint log: finding and repairing them at open,
appending to the newest and rolling to a new one, deleting delivered ones,
the cursor that reads records in order through a read-ahead buffer, and the
``hints_fsync`` policy.

`Segments` knows files and records, not the queue: which hints are
delivered, expired or counted is `HintLog`'s business (see `log`).  It
tells its owner about records lost to damage through the ``lost``
callback.  The file format is in `records`.

Sequence numbers are contiguous within a segment, so a sealed segment's
record count is the next segment's first seq minus its own, and only the
newest segment is scanned at open.  A crash mid-append leaves a torn last
record: opening keeps every complete record before it and truncates the
rest.  A damaged record found later by the cursor (disk corruption) costs
the rest of its segment, never start-up.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Tuple

from twisted.logger import Logger

from dynomite.replication.hints.records import (
    HEADER_SIZE, MAGIC, RECORD_OVERHEAD, Hint, created_at, decode, record_size, scan,
)

#: The file name ending of a segment (the name before it is the first seq).
SUFFIX = ".hints"
READ_CHUNK = 256 * 1024   # bytes the cursor reads at a time
SYNC_INTERVAL = 1.0       # everysec


class Segment:
    """One segment file: its first seq, how many records it holds and its size."""

    __slots__ = ("first", "path", "count", "size", "first_created")

    def __init__(self, first: int, path: str, count: int, size: int,
                 first_created: Optional[float]) -> None:
        self.first = first
        self.path = path
        self.count = count        # records (sealed: derived from the next segment's name)
        self.size = size          # bytes, MAGIC included
        self.first_created = first_created

    @property
    def last(self) -> int:
        """The seq of its last record."""
        return self.first + self.count - 1


class Segments:
    """
    The segment files in directory ``path``, oldest first in `segments`.

    Appends go to the newest segment, never into a sealed one; ``fsync``
    is the policy and ``sync`` the fsync function.  ``lost(records, bytes)``
    is called when the cursor finds records damaged or missing.
    """

    log = Logger()

    def __init__(self, path: str, fsync: str, segment_bytes: int, clock,
                 sync: Callable[[int], None], lost: Callable[[int, int], None]) -> None:
        self.path = path
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._clock = clock
        self._sync = sync
        self._lost = lost
        self.segments: List[Segment] = []
        self._wfd: Optional[int] = None
        self._dirty = self._dir_dirty = False
        self._flush_call: Optional[Any] = None   # IDelayedCall of the end-of-turn fsync
        self._last_sync = clock.seconds()
        # the cursor: the next record to decode is seq _rseq at byte _roff of _rseg
        self._rseg: Optional[Segment] = None
        self._rfd: Optional[int] = None
        self._roff = 0
        self._rseq = 0
        self._rbuf = b""
        self._rbuf_at = 0

    # -- opening ---------------------------------------------------------------

    def open(self) -> int:
        """
        Find the segments and cut a torn or damaged tail off the newest;
        returns how many records were lost with sealed files that are not
        segments (they are deleted).
        """
        found = []
        for name in os.listdir(self.path):
            if name.endswith(SUFFIX) and name[:-len(SUFFIX)].isdigit():
                found.append((int(name[:-len(SUFFIX)]), os.path.join(self.path, name)))
        found.sort()
        lost = 0
        for i, (first, path) in enumerate(found):
            if i + 1 < len(found):
                count = found[i + 1][0] - first
                seg = self._open_sealed(first, path, count)
                if seg is None:
                    lost += count
            else:
                seg = self._open_last(first, path)
                if seg is not None:   # appends go on here; never into a sealed segment
                    self._wfd = os.open(path, os.O_WRONLY | os.O_APPEND)
            if seg is not None:
                self.segments.append(seg)
        return lost

    def _open_sealed(self, first: int, path: str, count: int) -> Optional[Segment]:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + RECORD_OVERHEAD)
        if head[:len(MAGIC)] != MAGIC:
            self.log.warn("hint log {path}: {file} is not a hint segment; dropping its {count} hints",
                          path=self.path, file=os.path.basename(path), count=count)
            os.unlink(path)
            return None
        created = None
        if len(head) == len(MAGIC) + RECORD_OVERHEAD:
            created = created_at(head, len(MAGIC))
        return Segment(first, path, count, size, created)

    def _open_last(self, first: int, path: str) -> Optional[Segment]:
        """Scan the newest segment; cut a torn or damaged tail off it."""
        with open(path, "rb") as f:
            data = f.read()
        if data[:len(MAGIC)] != MAGIC:
            if data and not MAGIC.startswith(data):
                self.log.warn("hint log {path}: {file} is not a hint segment; removing it",
                              path=self.path, file=os.path.basename(path))
            os.unlink(path)
            return None
        off, seq = scan(data, len(MAGIC), len(data), first)
        if off < len(data):
            self.log.warn(
                "hint log {path}: cut {bytes} bytes of torn or damaged records after hint {seq}"
                " from {file}", path=self.path, bytes=len(data) - off, seq=seq - 1,
                file=os.path.basename(path))
            os.truncate(path, off)
        return Segment(first, path, seq - first, off, created_at(data, len(MAGIC)) if seq > first else None)

    # -- writing ---------------------------------------------------------------

    def append(self, seq: int, record: bytes, now: float, acked: int) -> None:
        """
        Write record ``seq`` (stored at ``now``) to the newest segment, or to
        a new one; ``acked`` is the delivered position.  Raises OSError.
        """
        seg = self.segments[-1] if self._wfd is not None else None
        if seg is None or seg.first + seg.count != seq \
                or (seg.count and seg.size + len(record) > self.segment_bytes):
            seg = self._roll(seq, acked)
        self._write(seg, record)
        seg.size += len(record)
        seg.count += 1
        if seg.first_created is None:
            seg.first_created = now
        self._dirty = True
        if self.fsync == "always" and self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self.flush)

    def _write(self, seg: Segment, record: bytes) -> None:
        assert self._wfd is not None
        done = 0
        try:
            while done < len(record):
                done += os.write(self._wfd, record[done:])
        except OSError:
            if done:
                os.ftruncate(self._wfd, seg.size)
            raise

    def _roll(self, first: int, acked: int) -> Segment:
        """Seal the current segment and start one whose first record is ``first``."""
        self._close_writer()
        if self.segments and (self.segments[-1].count == 0
                              or self.segments[-1].last <= acked):
            self.delete(self.segments[-1])   # nothing left to deliver in it
        path = os.path.join(self.path, "%020d%s" % (first, SUFFIX))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            os.write(fd, MAGIC)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        self._wfd = fd
        seg = Segment(first, path, 0, len(MAGIC), None)
        self.segments.append(seg)
        self._dir_dirty = True
        return seg

    def _close_writer(self) -> None:
        if self._wfd is not None:
            if self._dirty and self.fsync != "no":
                self._sync(self._wfd)
            self._dirty = False
            os.close(self._wfd)
            self._wfd = None

    # -- the fsync policy --------------------------------------------------------

    def flush(self) -> None:
        """Make every append so far durable now, whatever the policy."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        try:
            if self._dirty and self._wfd is not None:
                self._sync(self._wfd)
            self._dirty = False
            if self._dir_dirty:
                self._dir_dirty = False
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    self._sync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            self.log.error("hint log {path}: fsync failed: {why}", path=self.path,
                           why=e.strerror or e)
        self._last_sync = self._clock.seconds()

    def tick(self, now: float) -> None:
        """Periodic: under ``everysec``, fsync once a second if anything was written."""
        if self.fsync == "everysec" and (self._dirty or self._dir_dirty) \
                and now - self._last_sync >= SYNC_INTERVAL:
            self.flush()
            self._last_sync = now

    # -- the cursor --------------------------------------------------------------

    def position(self) -> int:
        """The seq the cursor decodes next (it enters the oldest segment if it is in none)."""
        if self._rseg is None:
            self._enter(self.segments[0])
        return self._rseq

    def skip_through(self, seq: int) -> Optional[Tuple[int, int]]:
        """
        If every record left in the cursor's segment is at or below ``seq``,
        move past them without reading them and return (records, bytes)
        passed; otherwise None.
        """
        seg = self._rseg
        if seg is None or seg.last > seq or self._roff >= seg.size:
            return None
        passed = seg.first + seg.count - self._rseq, seg.size - self._roff
        self._roff, self._rseq = seg.size, seg.first + seg.count
        return passed

    def read(self) -> Optional[Hint]:
        """Decode the record at the cursor and move past it; None at the end of the log."""
        while True:
            seg = self._rseg
            if seg is None:
                if not self.segments:
                    return None
                seg = self._enter(self.segments[0])
            if self._roff >= seg.size:
                nxt = self._segment_after(seg)
                if nxt is None:
                    return None
                self._enter(nxt)
                continue
            avail = seg.size - self._roff
            hint = None
            if avail >= HEADER_SIZE:
                buf, at = self._fetch(self._roff, HEADER_SIZE)
                n = min(avail, record_size(buf, at))
                buf, at = self._fetch(self._roff, n)
                hint = decode(buf, at, at + n, self._rseq)
            if hint is None:
                self._corrupt(seg)
                continue
            self._roff += hint.size
            self._rseq += 1
            return hint

    def _fetch(self, off: int, n: int) -> Tuple[bytes, int]:
        """``n`` bytes of the cursor's segment at ``off``, as (buffer, start)."""
        start = off - self._rbuf_at
        if start < 0 or start + n > len(self._rbuf):
            assert self._rfd is not None
            self._rbuf = os.pread(self._rfd, max(n, READ_CHUNK), off)
            self._rbuf_at, start = off, 0
            if len(self._rbuf) < n:
                self._rbuf = self._rbuf.ljust(n, b"\0")  # shorter than recorded: fails the crc
        return self._rbuf, start

    def _enter(self, seg: Segment) -> Segment:
        if self._rseg is not None:
            lost = self._rseg.first + self._rseg.count - self._rseq
            if lost > 0:  # records the segment should hold but did not
                self._lost(lost, 0)
        self._close_reader()
        self._rseg = seg
        self._rfd = os.open(seg.path, os.O_RDONLY)
        self._roff = len(MAGIC)
        self._rseq = seg.first
        return seg

    def _close_reader(self) -> None:
        if self._rfd is not None:
            os.close(self._rfd)
        self._rseg, self._rfd, self._rbuf, self._rbuf_at = None, None, b"", 0

    def _segment_after(self, seg: Segment) -> Optional[Segment]:
        i = self.segments.index(seg)
        return self.segments[i + 1] if i + 1 < len(self.segments) else None

    def _corrupt(self, seg: Segment) -> None:
        """The cursor met a damaged record: the rest of its segment is lost."""
        self.log.warn("hint log {path}: damaged record at byte {off} of {file}; skipping the"
                      " rest of it", path=self.path, off=self._roff, file=os.path.basename(seg.path))
        lost_bytes = seg.size - self._roff
        self._roff = seg.size
        lost = 0
        if seg is self.segments[-1] and self._wfd is not None:
            lost = seg.first + seg.count - self._rseq
            self._close_writer()   # later appends go to a fresh segment
            seg.count -= lost
        self._lost(lost, lost_bytes)

    # -- deleting and closing ----------------------------------------------------

    def delete(self, seg: Segment) -> None:
        """Delete a segment whose records are all delivered or dropped."""
        if seg is self._rseg:
            self._close_reader()
        if seg is self.segments[-1]:
            self._close_writer()
        self.segments.remove(seg)
        try:
            os.unlink(seg.path)
        except OSError as e:
            self.log.warn("hint log {path}: cannot delete {file}: {why}", path=self.path,
                          file=os.path.basename(seg.path), why=e.strerror or e)

    def delete_all(self) -> None:
        """Delete every segment."""
        self._close_reader()
        for seg in list(self.segments):
            self.delete(seg)

    def close(self) -> None:
        """Release the files, as they are (the owner flushes first if it wants to)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._close_reader()
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
