# -*- test-case-name: tests.unit.test_hints -*-
"""
Durable hint logs: the writes one target (a peer node or a remote
datacenter) has not received yet, kept on local disk until it has.

A `HintLog` is an append-only queue of raw RESP commands, one per target,
that survives a restart of the node, SIGKILL included: every append is
written to the operating system before `append` returns, and the
``hints_fsync`` policy decides when it also reaches the disk (``always``:
before the reactor's next turn, so before any reply written in this turn is
sent; ``everysec``: by the next `tick` a second later; ``no``: when the
kernel decides).

On disk, one directory per target under ``data_dir``::

    <data_dir>/<target, %-escaped>/
        00000000000000000001.hints   segments, named after their first seq;
        00000000000000100213.hints   MAGIC then records, rolled at segment_bytes
        ack                          highest delivered seq (text, replaced by rename)
        lock                         held (lockf) while a process has the log open

    record = crc32:u32 | length:u32 seq:u64 created:f64 flags:u32 payload
             (little-endian; the crc covers everything after it; length
             counts what follows it)

Sequence numbers are contiguous within a segment, so a sealed segment's
record count is the next segment's first seq minus its own, and only the
newest segment is scanned when the log opens.  A crash mid-append leaves a
torn last record: opening keeps every complete record before it and
truncates the rest.  A damaged record found later (disk corruption) costs
the rest of its segment, counted as dropped ("corrupt"), never start-up.

Delivery is at-least-once.  The delivered position is written to ``ack`` at
most once a second (`tick`) and on `close`, so after a crash the hints
delivered since the last write of it are delivered again; fully delivered
segments are deleted as soon as the position passes them.

Hints older than ``window`` seconds are dropped ("window"), and an append
that would take the pending hints past ``max_bytes`` drops the new hint
("overflow"); `truncate` drops everything ("truncated").  Drops are counted
per reason in `dropped` and logged once per burst with the target and count.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from twisted.logger import Logger

from dynomite.config.vocabulary import FSYNC_POLICIES
from dynomite.replication.hints.records import (
    HEADER_SIZE, MAGIC, RECORD_OVERHEAD, Hint, created_at, decode, encode, record_size, safe_name,
    scan, target_of,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DROP_REASONS", "FSYNC_POLICIES", "RECORD_OVERHEAD", "Hint", "HintLog", "HintLogError",
    "safe_name", "target_of",
]

DROP_REASONS = ("window", "overflow", "truncated", "corrupt", "error")

SUFFIX = ".hints"

READ_CHUNK = 256 * 1024
ACK_INTERVAL = 1.0     # seconds between writes of the ack file
SYNC_INTERVAL = 1.0    # everysec
BURST_QUIET = 1.0      # a burst of drops ends after this long without one ...
BURST_LOG_EVERY = 10.0  # ... and a long burst is reported this often
EXPIRE_BATCH = 10000   # records checked for the window per call


class HintLogError(Exception):
    """The hint log cannot be opened (its directory is unusable or in use)."""


class _Segment:
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
        return self.first + self.count - 1


class HintLog:
    """
    The durable, ordered hints for one ``target``; see the module docstring.

    ``clock`` provides ``seconds()`` and ``callLater`` (the reactor, or a
    `twisted.internet.task.Clock` in tests); ``window`` is in seconds;
    ``sync`` is the fsync function (injectable to count calls).  The owner
    calls `tick` often (every 10-100 ms) and `close` at shutdown.
    """

    log = Logger()

    def __init__(self, directory: str, target: str, fsync: str, clock,
                 segment_bytes: int = 64 * 1024 * 1024, max_bytes: int = 1024 ** 3,
                 window: float = 3 * 3600.0, sync: Callable[[int], None] = os.fsync) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError("fsync must be one of %s, got %r" % (", ".join(FSYNC_POLICIES), fsync))
        self.target = target
        self.path = os.path.join(directory, safe_name(target))
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.window = window
        self._clock = clock
        self._sync = sync
        self.dropped: Dict[str, int] = {reason: 0 for reason in DROP_REASONS}
        self.appended_total = 0
        self._unlogged: Dict[str, int] = {}
        self._burst_start = self._last_drop = 0.0
        self._segments: List[_Segment] = []
        self._wfd: Optional[int] = None
        self._dirty = self._dir_dirty = False
        self._flush_call: Optional[Any] = None   # IDelayedCall of the end-of-turn fsync
        self._lock_fd: Optional[int] = None
        now = clock.seconds()
        self._last_sync = self._ack_written_at = now
        # reader: records in (acked, _rseq) are decoded in _ahead
        self._ahead: Deque[Hint] = deque()
        self._rseg: Optional[_Segment] = None
        self._rfd: Optional[int] = None
        self._roff = 0
        self._rseq = 0
        self._rbuf = b""
        self._rbuf_at = 0
        try:
            os.makedirs(self.path, exist_ok=True)
            self._lock_fd = self._lock()
            self._acked = self._read_ack()
            self._open_segments()
        except OSError as e:
            self._close_files()
            raise HintLogError("hint log %s: %s" % (self.path, e.strerror or e)) from None
        self._ack_written = self._acked

    # -- opening ---------------------------------------------------------------

    def _lock(self) -> int:
        fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise HintLogError("hint log %s is in use by another process"
                                   " (do two nodes share data_dir?)" % self.path) from None
        return fd

    def _read_ack(self) -> int:
        try:
            with open(os.path.join(self.path, "ack"), "rb") as f:
                return max(0, int(f.read().strip() or b"0"))
        except FileNotFoundError:
            return 0
        except ValueError:
            self.log.warn("hint log {path}: unreadable ack file; replaying every hint", path=self.path)
            return 0

    def _open_segments(self) -> None:
        """Find the segments, repair a torn tail, and put the reader at the first pending hint."""
        found = []
        for name in os.listdir(self.path):
            if name.endswith(SUFFIX) and name[:-len(SUFFIX)].isdigit():
                found.append((int(name[:-len(SUFFIX)]), os.path.join(self.path, name)))
        found.sort()
        for i, (first, path) in enumerate(found):
            if i + 1 < len(found):
                seg = self._open_sealed(first, path, found[i + 1][0] - first)
            else:
                seg = self._open_last(first, path)
                if seg is not None:   # appends go on here; never into a sealed segment
                    self._wfd = os.open(path, os.O_WRONLY | os.O_APPEND)
            if seg is not None:
                self._segments.append(seg)
        self._next_seq = max(self._acked + 1, 1)
        if self._segments:
            last = self._segments[-1]
            self._next_seq = max(self._next_seq, last.first + last.count)
            self._acked = max(self._acked, self._segments[0].first - 1)
        self._pending = sum(s.count for s in self._segments)
        self._pending_bytes = sum(s.size - len(MAGIC) for s in self._segments)
        acked, self._acked = self._acked, 0
        self._advance(acked)

    def _open_sealed(self, first: int, path: str, count: int) -> Optional[_Segment]:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + RECORD_OVERHEAD)
        if head[:len(MAGIC)] != MAGIC:
            self.log.warn("hint log {path}: {file} is not a hint segment; dropping its {count} hints",
                          path=self.path, file=os.path.basename(path), count=count)
            self._drop("corrupt", count, self._clock.seconds())
            os.unlink(path)
            return None
        created = None
        if len(head) == len(MAGIC) + RECORD_OVERHEAD:
            created = created_at(head, len(MAGIC))
        return _Segment(first, path, count, size, created)

    def _open_last(self, first: int, path: str) -> Optional[_Segment]:
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
        return _Segment(first, path, seq - first, off, created_at(data, len(MAGIC)) if seq > first else None)

    # -- writing ---------------------------------------------------------------

    def append(self, flags: int, payload: bytes) -> Optional[int]:
        """
        Store one write; returns its sequence number, or None if it was
        dropped (over ``max_bytes``, or the disk failed).
        """
        now = self._clock.seconds()
        size = RECORD_OVERHEAD + len(payload)
        if self._pending_bytes + size > self.max_bytes:
            self._drop("overflow", 1, now)
            return None
        seq = self._next_seq
        record = encode(seq, now, flags, payload)
        try:
            seg = self._segments[-1] if self._wfd is not None else None
            if seg is None or seg.first + seg.count != seq \
                    or (seg.count and seg.size + size > self.segment_bytes):
                seg = self._roll(seq)
            self._write(seg, record)
        except OSError as e:
            self.log.error("hint log {path}: cannot store a hint: {why}", path=self.path,
                           why=e.strerror or e)
            self._drop("error", 1, now)
            return None
        seg.size += size
        seg.count += 1
        if seg.first_created is None:
            seg.first_created = now
        self._next_seq = seq + 1
        self._pending += 1
        self._pending_bytes += size
        self.appended_total += 1
        self._dirty = True
        if self.fsync == "always" and self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self.flush)
        return seq

    def _write(self, seg: _Segment, record: bytes) -> None:
        assert self._wfd is not None
        done = 0
        try:
            while done < len(record):
                done += os.write(self._wfd, record[done:])
        except OSError:
            if done:
                os.ftruncate(self._wfd, seg.size)
            raise

    def _roll(self, first: int) -> _Segment:
        """Seal the current segment and start one whose first record is ``first``."""
        self._close_writer()
        if self._segments and (self._segments[-1].count == 0
                               or self._segments[-1].last <= self._acked):
            self._delete(self._segments[-1])   # nothing left to deliver in it
        path = os.path.join(self.path, "%020d%s" % (first, SUFFIX))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            os.write(fd, MAGIC)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        self._wfd = fd
        seg = _Segment(first, path, 0, len(MAGIC), None)
        self._segments.append(seg)
        self._dir_dirty = True
        return seg

    def _close_writer(self) -> None:
        if self._wfd is not None:
            if self._dirty and self.fsync != "no":
                self._sync(self._wfd)
            self._dirty = False
            os.close(self._wfd)
            self._wfd = None

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

    # -- reading ---------------------------------------------------------------

    def peek(self, n: int, after: Optional[int] = None) -> List[Hint]:
        """
        Up to ``n`` of the oldest pending hints, oldest first, without
        removing them; with ``after``, only hints whose seq is above it (for
        a reader with hints already in flight).  Expired hints are dropped first.
        """
        self.expire(self._clock.seconds())
        ahead = self._ahead
        floor = self._acked if after is None else max(after, self._acked)
        done = 0
        if ahead and ahead[0].seq <= floor:
            done = floor - ahead[0].seq + 1   # hints at or below floor: seqs are usually contiguous
            if not (done <= len(ahead) and ahead[done - 1].seq == floor
                    and (done == len(ahead) or ahead[done].seq > floor)):
                done = sum(1 for h in ahead if h.seq <= floor)
        while len(ahead) - done < n:
            hint = self._read_record()
            if hint is None:
                break
            ahead.append(hint)
            if hint.seq <= floor:
                done += 1
        if done == 0 and n >= len(ahead):
            return list(ahead)
        return [ahead[i] for i in range(done, min(done + n, len(ahead)))]

    def _read_record(self) -> Optional[Hint]:
        """Decode the record at the reader and move past it; None at the end of the log."""
        while True:
            seg = self._rseg
            if seg is None:
                if not self._segments:
                    return None
                seg = self._enter_segment(self._segments[0])
            if self._roff >= seg.size:
                nxt = self._segment_after(seg)
                if nxt is None:
                    return None
                self._enter_segment(nxt)
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
        """``n`` bytes of the reader's segment at ``off``, as (buffer, start)."""
        start = off - self._rbuf_at
        if start < 0 or start + n > len(self._rbuf):
            assert self._rfd is not None
            self._rbuf = os.pread(self._rfd, max(n, READ_CHUNK), off)
            self._rbuf_at, start = off, 0
            if len(self._rbuf) < n:
                self._rbuf = self._rbuf.ljust(n, b"\0")  # shorter than recorded: fails the crc
        return self._rbuf, start

    def _enter_segment(self, seg: _Segment) -> _Segment:
        if self._rseg is not None:
            lost = self._rseg.first + self._rseg.count - self._rseq
            if lost > 0:  # records the segment should hold but did not
                self._pending -= lost
                self._drop("corrupt", lost, self._clock.seconds())
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

    def _segment_after(self, seg: _Segment) -> Optional[_Segment]:
        i = self._segments.index(seg)
        return self._segments[i + 1] if i + 1 < len(self._segments) else None

    def _corrupt(self, seg: _Segment) -> None:
        """The reader met a damaged record: the rest of its segment is lost."""
        self.log.warn("hint log {path}: damaged record at byte {off} of {file}; skipping the"
                      " rest of it", path=self.path, off=self._roff, file=os.path.basename(seg.path))
        self._pending_bytes -= seg.size - self._roff
        self._roff = seg.size
        if seg is self._segments[-1] and self._wfd is not None:
            lost = seg.first + seg.count - self._rseq
            self._close_writer()   # later appends go to a fresh segment
            seg.count -= lost
            self._pending -= lost
            self._drop("corrupt", lost, self._clock.seconds())

    # -- delivery and expiry -----------------------------------------------------

    def ack(self, seq: int) -> None:
        """Every hint up to ``seq`` has been delivered: forget it."""
        self._advance(seq)

    def _advance(self, seq: int, reason: Optional[str] = None) -> int:
        """Remove the hints up to ``seq`` from the head; returns how many."""
        seq = min(seq, self._next_seq - 1)
        if seq <= self._acked:
            return 0
        ahead = self._ahead
        removed = removed_bytes = 0
        while ahead and ahead[0].seq <= seq:
            removed_bytes += ahead.popleft().size
            removed += 1
        while not ahead and self._segments:
            seg = self._rseg or self._enter_segment(self._segments[0])
            if self._rseq > seq:
                break
            if seg.last <= seq and self._roff < seg.size:   # jump over the rest of it
                removed += seg.first + seg.count - self._rseq
                removed_bytes += seg.size - self._roff
                self._roff, self._rseq = seg.size, seg.first + seg.count
                continue
            hint = self._read_record()
            if hint is None:
                break
            if hint.seq > seq:
                ahead.append(hint)
            else:
                removed += 1
                removed_bytes += hint.size
        self._acked = seq
        self._pending -= removed
        self._pending_bytes -= removed_bytes
        if reason is not None and removed:
            self._drop(reason, removed, self._clock.seconds())
        while len(self._segments) > 1 and self._segments[0].last <= seq:
            self._delete(self._segments[0])
        return removed

    def _delete(self, seg: _Segment) -> None:
        if seg is self._rseg:
            self._close_reader()
        if seg is self._segments[-1]:
            self._close_writer()
        self._segments.remove(seg)
        try:
            os.unlink(seg.path)
        except OSError as e:
            self.log.warn("hint log {path}: cannot delete {file}: {why}", path=self.path,
                          file=os.path.basename(seg.path), why=e.strerror or e)

    def expire(self, now: float) -> int:
        """Drop hints older than the window (a bounded number per call); returns how many."""
        cutoff = now - self.window
        dropped = 0
        segments = self._segments
        while len(segments) > 1 and segments[1].first_created is not None \
                and segments[1].first_created < cutoff:
            # everything in segments[0] is older than the first hint of the next one
            if segments[0].last <= self._acked:
                self._delete(segments[0])
            else:
                dropped += self._advance(segments[0].last, "window")
        ahead = self._ahead
        checked = 0
        while checked < EXPIRE_BATCH:
            if not ahead:
                self._fill(256)
            if not ahead or ahead[0].created >= cutoff:
                break
            last = ahead[0].seq
            for hint in ahead:
                if hint.created >= cutoff:
                    break
                last = hint.seq
                checked += 1
            dropped += self._advance(last, "window")
        return dropped

    def _fill(self, n: int) -> None:
        """Decode up to ``n`` more records into the read-ahead."""
        for _ in range(n):
            hint = self._read_record()
            if hint is None:
                return
            self._ahead.append(hint)

    def peek_oldest(self) -> Optional[Hint]:
        """The oldest pending hint, not checked against the window."""
        if not self._ahead:
            self._fill(1)
        return self._ahead[0] if self._ahead else None

    def truncate(self) -> int:
        """Drop every pending hint (admin); returns how many."""
        now = self._clock.seconds()
        n = self._pending
        self._ahead.clear()
        self._close_reader()
        for seg in list(self._segments):
            self._delete(seg)
        self._acked = self._next_seq - 1
        self._pending = self._pending_bytes = 0
        if n:
            self._drop("truncated", n, now)
            self._log_drops(now, force=True)
        self._write_ack(now)
        return n

    # -- state -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Hints stored and not yet delivered."""
        return self._pending

    @property
    def pending_bytes(self) -> int:
        """Bytes those hints take on disk."""
        return self._pending_bytes

    @property
    def acked(self) -> int:
        """The highest delivered (or dropped) seq."""
        return self._acked

    def oldest_age(self, now: float) -> float:
        """Seconds since the oldest pending hint was stored (0 when none)."""
        hint = self.peek_oldest()
        return 0.0 if hint is None else max(0.0, now - hint.created)

    # -- housekeeping ----------------------------------------------------------

    def tick(self, now: float) -> None:
        """Periodic: fsync (everysec), save the ack position, expire, report drops."""
        if self.fsync == "everysec" and (self._dirty or self._dir_dirty) \
                and now - self._last_sync >= SYNC_INTERVAL:
            self.flush()
            self._last_sync = now
        self.expire(now)
        if self._segments and self._segments[-1].last <= self._acked:
            for seg in list(self._segments):   # drained: no file left behind
                self._delete(seg)
        if self._acked != self._ack_written and now - self._ack_written_at >= ACK_INTERVAL:
            self._write_ack(now)
        self._log_drops(now)

    def _write_ack(self, now: float) -> None:
        path = os.path.join(self.path, "ack")
        try:
            with open(path + ".tmp", "wb") as f:
                f.write(b"%d\n" % self._acked)
            os.replace(path + ".tmp", path)
        except OSError as e:
            self.log.warn("hint log {path}: cannot save the ack position: {why}",
                          path=self.path, why=e.strerror or e)
            return
        self._ack_written, self._ack_written_at = self._acked, now

    def _drop(self, reason: str, n: int, now: float) -> None:
        self.dropped[reason] += n
        if not self._unlogged:
            self._burst_start = now
        self._unlogged[reason] = self._unlogged.get(reason, 0) + n
        self._last_drop = now

    def _log_drops(self, now: float, force: bool = False) -> None:
        """Log the drops of a burst once it ends (or every 10 s while it lasts)."""
        if not self._unlogged or not (force or now - self._last_drop >= BURST_QUIET
                                      or now - self._burst_start >= BURST_LOG_EVERY):
            return
        for reason, count in sorted(self._unlogged.items()):
            self.log.warn("hints for {target}: dropped {count} ({reason})",
                          target=self.target, count=count, reason=reason)
        self._unlogged = {}

    def close(self) -> None:
        """Flush (per policy), save the ack position, release the files."""
        now = self._clock.seconds()
        if self.fsync != "no":
            self.flush()
        elif self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._write_ack(now)
        self._log_drops(now, force=True)
        self._close_files()

    def _close_files(self) -> None:
        self._close_reader()
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
