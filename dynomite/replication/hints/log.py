# -*- test-case-name: tests.unit.test_hints -*-
"""
The hint log: the queue of writes one target has not received yet, on disk.

A `HintLog` is an append-only queue of raw RESP commands, one per target,
that survives a restart of the node, SIGKILL included: every append is
written to the operating system before `append` returns, and the
``hints_fsync`` policy decides when it also reaches the disk (``always``:
before the reactor's next turn, so before any reply written in this turn is
sent; ``everysec``: by the next `tick` a second later; ``no``: when the
kernel decides).  The files are `segments.Segments`; their format is in
`records`.

Delivery is at-least-once.  The delivered position is written to ``ack`` at
most once a second (`tick`) and on `close`, so after a crash the hints
delivered since the last write of it are delivered again; fully delivered
segments are deleted as soon as the position passes them.

Hints older than ``window`` seconds are dropped ("window"), and an append
that would take the pending hints past ``max_bytes`` drops the new hint
("overflow"); `truncate` drops everything ("truncated"); records lost to
disk damage are dropped too ("corrupt"), as are appends the disk refuses
("error").  Drops are counted per reason in `dropped` and logged once per
burst with the target and count.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Callable, Deque, Dict, List, Optional

from twisted.logger import Logger

from dynomite.config.vocabulary import FSYNC_POLICIES
from dynomite.replication.hints.records import MAGIC, RECORD_OVERHEAD, Hint, encode, safe_name
from dynomite.replication.hints.segments import Segments

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

__all__ = ["DROP_REASONS", "HintLog", "HintLogError"]

#: Why hints are dropped: the keys of `HintLog.dropped`.
DROP_REASONS = ("window", "overflow", "truncated", "corrupt", "error")

ACK_INTERVAL = 1.0     # seconds between writes of the ack file
BURST_QUIET = 1.0      # a burst of drops ends after this long without one ...
BURST_LOG_EVERY = 10.0  # ... and a long burst is reported this often
EXPIRE_BATCH = 10000   # records checked for the window per call


class HintLogError(Exception):
    """The hint log cannot be opened (its directory is unusable or in use), or is not open."""


class HintLog:
    """
    The durable, ordered hints for one ``target``; see the module docstring.

    ``clock`` provides ``seconds()`` and ``callLater`` (the reactor, or a
    `twisted.internet.task.Clock` in tests); ``window`` is in seconds;
    ``sync`` is the fsync function (injectable to count calls).

    Constructing a log touches no file.  The owner calls `open` in the
    process that will use the log (from ``startService``: twistd builds the
    service, then forks to daemonize, and a lock does not survive a fork),
    `tick` often (every 10-100 ms) and `close` at shutdown; `close` then
    `open` again is allowed.  Until `open`, `pending` is 0 and the queue
    operations raise `HintLogError`.
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
        self._files: Optional[Segments] = None
        self._lock_fd: Optional[int] = None
        # hints in (acked, the files' cursor) are decoded in _ahead
        self._ahead: Deque[Hint] = deque()
        self._acked = self._ack_written = 0
        self._ack_written_at = clock.seconds()
        self._next_seq = 1
        self._pending = self._pending_bytes = 0

    # -- opening ---------------------------------------------------------------

    def open(self) -> None:
        """
        Create the directory, lock it, find and repair the segments, and
        load the delivered position.  Raises `HintLogError` if the
        directory is unusable, another process has the log open, or this
        log is open already.
        """
        if self._files is not None:
            raise HintLogError("hint log %s is already open" % self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
            self._lock_fd = self._lock()
            acked = self._read_ack()
            self._files = files = Segments(self.path, self.fsync, self.segment_bytes, self._clock,
                                           self._sync, self._lost)
            self._load(files, acked, files.open())
        except OSError as e:
            self._close_files()
            raise HintLogError("hint log %s: %s" % (self.path, e.strerror or e)) from None

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

    def _load(self, files: Segments, acked: int, lost: int) -> None:
        """Count what the opened ``files`` hold and put the cursor at the first pending hint."""
        now = self._clock.seconds()
        if lost:
            self._drop("corrupt", lost, now)
        segments = files.segments
        self._ahead.clear()
        self._next_seq = max(acked + 1, 1)
        if segments:
            last = segments[-1]
            self._next_seq = max(self._next_seq, last.first + last.count)
            acked = max(acked, segments[0].first - 1)
        self._pending = sum(s.count for s in segments)
        self._pending_bytes = sum(s.size - len(MAGIC) for s in segments)
        self._acked = 0
        self._advance(acked)
        self._ack_written, self._ack_written_at = self._acked, now

    def _lost(self, records: int, nbytes: int) -> None:
        """The segment files lost ``records`` taking ``nbytes`` to damage: drop them."""
        self._pending -= records
        self._pending_bytes -= nbytes
        if records:
            self._drop("corrupt", records, self._clock.seconds())

    def _opened(self) -> Segments:
        if self._files is None:
            raise HintLogError("hint log %s is not open (open() it first)" % self.path)
        return self._files

    # -- writing ---------------------------------------------------------------

    def append(self, flags: int, payload: bytes) -> Optional[int]:
        """
        Store one write; returns its sequence number, or None if it was
        dropped (over ``max_bytes``, or the disk failed).
        """
        files = self._opened()
        now = self._clock.seconds()
        size = RECORD_OVERHEAD + len(payload)
        if self._pending_bytes + size > self.max_bytes:
            self._drop("overflow", 1, now)
            return None
        seq = self._next_seq
        try:
            files.append(seq, encode(seq, now, flags, payload), now, self._acked)
        except OSError as e:
            self.log.error("hint log {path}: cannot store a hint: {why}", path=self.path,
                           why=e.strerror or e)
            self._drop("error", 1, now)
            return None
        self._next_seq = seq + 1
        self._pending += 1
        self._pending_bytes += size
        self.appended_total += 1
        return seq

    def flush(self) -> None:
        """Make every append so far durable now, whatever the policy."""
        if self._files is not None:
            self._files.flush()

    # -- reading ---------------------------------------------------------------

    def peek(self, n: int, after: Optional[int] = None) -> List[Hint]:
        """
        Up to ``n`` of the oldest pending hints, oldest first, without
        removing them; with ``after``, only hints whose seq is above it (for
        a reader with hints already in flight).  Expired hints are dropped first.
        """
        read = self._opened().read
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
            hint = read()
            if hint is None:
                break
            ahead.append(hint)
            if hint.seq <= floor:
                done += 1
        if done == 0 and n >= len(ahead):
            return list(ahead)
        return [ahead[i] for i in range(done, min(done + n, len(ahead)))]

    def _fill(self, files: Segments, n: int) -> None:
        """Decode up to ``n`` more records into the read-ahead."""
        for _ in range(n):
            hint = files.read()
            if hint is None:
                return
            self._ahead.append(hint)

    def peek_oldest(self) -> Optional[Hint]:
        """The oldest pending hint, not checked against the window (None when not open)."""
        if self._files is None:
            return None
        if not self._ahead:
            self._fill(self._files, 1)
        return self._ahead[0] if self._ahead else None

    # -- delivery and expiry -----------------------------------------------------

    def ack(self, seq: int) -> None:
        """Every hint up to ``seq`` has been delivered: forget it."""
        self._opened()
        self._advance(seq)

    def _advance(self, seq: int, reason: Optional[str] = None) -> int:
        """Remove the hints up to ``seq`` from the head; returns how many."""
        seq = min(seq, self._next_seq - 1)
        if seq <= self._acked:
            return 0
        files = self._opened()
        ahead = self._ahead
        removed = removed_bytes = 0
        while ahead and ahead[0].seq <= seq:
            removed_bytes += ahead.popleft().size
            removed += 1
        while not ahead and files.segments:
            if files.position() > seq:
                break
            passed = files.skip_through(seq)   # the rest of a segment, without reading it
            if passed is not None:
                removed += passed[0]
                removed_bytes += passed[1]
                continue
            hint = files.read()
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
        segments = files.segments
        while len(segments) > 1 and segments[0].last <= seq:
            files.delete(segments[0])
        return removed

    def expire(self, now: float) -> int:
        """Drop hints older than the window (a bounded number per call); returns how many."""
        files = self._files
        if files is None:
            return 0
        cutoff = now - self.window
        dropped = 0
        segments = files.segments
        while len(segments) > 1 and segments[1].first_created is not None \
                and segments[1].first_created < cutoff:
            # everything in segments[0] is older than the first hint of the next one
            if segments[0].last <= self._acked:
                files.delete(segments[0])
            else:
                dropped += self._advance(segments[0].last, "window")
        ahead = self._ahead
        checked = 0
        while checked < EXPIRE_BATCH:
            if not ahead:
                self._fill(files, 256)
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

    def truncate(self) -> int:
        """Drop every pending hint (admin); returns how many."""
        files = self._opened()
        now = self._clock.seconds()
        n = self._pending
        self._ahead.clear()
        files.delete_all()
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
        """Hints stored and not yet delivered (0 until the log is open)."""
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
        files = self._files
        if files is None:
            return
        files.tick(now)
        self.expire(now)
        if files.segments and files.segments[-1].last <= self._acked:
            files.delete_all()   # drained: no file left behind
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
        """Flush (per policy), save the ack position, release the files and the lock."""
        if self._files is None:
            return
        now = self._clock.seconds()
        if self.fsync != "no":
            self._files.flush()
        self._write_ack(now)
        self._log_drops(now, force=True)
        self._close_files()

    def _close_files(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
