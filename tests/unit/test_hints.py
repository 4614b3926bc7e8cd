"""
Tests for dynomite.replication.hints: the durable hint log.  No reactor: a
Clock, temp directories, and an fsync that counts its calls.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import sys

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from dynomite.replication.hints import RECORD_OVERHEAD, Hint, HintLog, HintLogError
from dynomite.replication.hints.records import MAGIC
from dynomite.replication.hints.segments import Segments

TARGET = "127.0.0.2:8101"
PAYLOAD = b"*3\r\n$3\r\nSET\r\n$4\r\nk%03d\r\n$20\r\n%020d\r\n"


def command(i: int) -> bytes:
    return PAYLOAD % (i, i)


RECORD = RECORD_OVERHEAD + len(command(0))


class Syncs:
    """An fsync that counts calls on segment files and on directories."""

    def __init__(self) -> None:
        self.files = 0
        self.dirs = 0

    def __call__(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.dirs += 1
        else:
            self.files += 1


def crash(log: HintLog) -> None:
    """Let go of the files as a killed process would: no flush, no ack saved."""
    log._close_files()


class LogTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.dir = self.mktemp()
        self.syncs = Syncs()
        self.events: list = []
        self.patch(HintLog, "log", Logger(observer=self.events.append))
        self.patch(Segments, "log", Logger(observer=self.events.append))
        self.logs: list = []
        self.addCleanup(self._close_all)

    def _close_all(self) -> None:
        for log in self.logs:
            log._close_files()

    def open(self, **kw) -> HintLog:
        args = dict(fsync="no", segment_bytes=1024 * 1024, max_bytes=1024 ** 3, window=3600.0)
        args.update(kw)
        log = HintLog(self.dir, TARGET, args.pop("fsync"), self.clock, sync=self.syncs, **args)
        log.open()
        self.logs.append(log)
        return log

    def fill(self, log: HintLog, n: int, start: int = 1) -> list:
        return [log.append(i % 3, command(i)) for i in range(start, start + n)]

    def segments(self, log: HintLog) -> list:
        return sorted(int(n[:-6]) for n in os.listdir(log.path) if n.endswith(".hints"))

    def seqs(self, log: HintLog, n: int = 10 ** 6) -> list:
        return [h.seq for h in log.peek(n)]

    def warnings(self) -> list:
        return [e for e in self.events if e["log_level"].name == "warn"]

class AppendPeekAckTests(LogTestCase):
    def test_append_returns_increasing_seqs_and_keeps_fields(self) -> None:
        log = self.open()
        self.assertEqual(log.append(1, b"first"), 1)
        self.clock.advance(2.5)
        self.assertEqual(log.append(0, b"second"), 2)
        self.assertEqual(log.peek(5), [Hint(1, 1000.0, 1, b"first"), Hint(2, 1002.5, 0, b"second")])
        self.assertEqual((log.pending, log.pending_bytes), (2, 2 * RECORD_OVERHEAD + 11))
        self.assertEqual(log.appended_total, 2)

    def test_peek_is_oldest_first_and_does_not_remove(self) -> None:
        log = self.open()
        self.fill(log, 5)
        self.assertEqual(self.seqs(log, 3), [1, 2, 3])
        self.assertEqual(self.seqs(log, 3), [1, 2, 3])
        self.assertEqual([h.payload for h in log.peek(2)], [command(1), command(2)])
        self.assertEqual(log.pending, 5)

    def test_peek_after_skips_hints_in_flight(self) -> None:
        log = self.open()
        self.fill(log, 6)
        self.assertEqual([h.seq for h in log.peek(2, after=3)], [4, 5])
        self.assertEqual([h.seq for h in log.peek(10, after=0)], [1, 2, 3, 4, 5, 6])
        self.assertEqual(log.peek(10, after=6), [])
        self.assertEqual([h.seq for h in log.peek(10, after=5)], [6])

    def test_ack_removes_the_head(self) -> None:
        log = self.open()
        self.fill(log, 5)
        log.peek(5)
        log.ack(2)
        self.assertEqual(self.seqs(log), [3, 4, 5])
        self.assertEqual((log.pending, log.pending_bytes, log.acked), (3, 3 * RECORD, 2))
        log.ack(1)   # already delivered: nothing happens
        self.assertEqual(log.pending, 3)
        log.ack(99)  # beyond the tail: everything
        self.assertEqual((log.pending, log.pending_bytes, log.acked), (0, 0, 5))
        self.assertEqual(log.peek(5), [])

    def test_ack_ahead_of_the_reader(self) -> None:
        """Acknowledging hints never peeked skips them on disk."""
        log = self.open(segment_bytes=4 * RECORD + 8)
        self.fill(log, 20)
        log.ack(13)
        self.assertEqual(self.seqs(log), list(range(14, 21)))
        self.assertEqual((log.pending, log.pending_bytes), (7, 7 * RECORD))

    def test_appends_while_reading_are_seen(self) -> None:
        log = self.open()
        self.fill(log, 2)
        self.assertEqual(self.seqs(log), [1, 2])
        self.fill(log, 2, start=3)
        self.assertEqual(self.seqs(log), [1, 2, 3, 4])
        log.ack(4)
        self.fill(log, 1, start=5)
        self.assertEqual(self.seqs(log), [5])

    def test_oldest_age(self) -> None:
        log = self.open()
        self.assertEqual(log.oldest_age(self.clock.seconds()), 0.0)
        self.fill(log, 1)
        self.clock.advance(7)
        self.fill(log, 1, start=2)
        self.assertEqual(log.oldest_age(self.clock.seconds()), 7.0)
        log.ack(1)
        self.assertEqual(log.oldest_age(self.clock.seconds() + 1), 1.0)

    def test_bad_policy(self) -> None:
        self.assertRaises(ValueError, HintLog, self.dir, TARGET, "sometimes", self.clock)


class RestartTests(LogTestCase):
    def test_resumes_after_the_last_ack(self) -> None:
        log = self.open(segment_bytes=3 * RECORD + 8)
        self.fill(log, 10)
        log.ack(4)
        log.close()
        log = self.open(segment_bytes=3 * RECORD + 8)
        self.assertEqual(self.seqs(log), [5, 6, 7, 8, 9, 10])
        self.assertEqual((log.pending, log.pending_bytes, log.acked), (6, 6 * RECORD, 4))
        self.assertEqual(log.append(0, command(11)), 11)
        self.assertEqual(log.peek(10)[-1].payload, command(11))

    def test_after_a_crash_replays_since_the_last_saved_ack(self) -> None:
        """
        The ack position is saved at most once a second: after a crash, the
        hints delivered since are delivered again (at-least-once), never lost.
        """
        log = self.open()
        self.fill(log, 10)
        log.ack(3)
        self.clock.advance(1)
        log.tick(self.clock.seconds())   # saves 3
        log.ack(6)
        crash(log)
        log = self.open()
        self.assertEqual(self.seqs(log), [4, 5, 6, 7, 8, 9, 10])

    def test_everything_delivered_and_deleted(self) -> None:
        log = self.open()
        self.fill(log, 3)
        log.ack(3)
        log.tick(self.clock.seconds() + 1)
        log.close()
        log = self.open()
        self.assertEqual((log.pending, self.segments(log)), (0, []))
        self.assertEqual(log.append(0, b"x"), 4)   # seqs never go back

    def test_ack_saved_but_hints_lost(self) -> None:
        """
        A power loss under fsync "no" can keep the renamed ack file and lose
        the hints it covers: numbering goes on after the ack, in a new segment.
        """
        log = self.open()
        self.fill(log, 3)
        log.ack(3)
        log.close()
        os.truncate(os.path.join(log.path, "%020d.hints" % 1), len(MAGIC))
        log = self.open()
        self.assertEqual(log.pending, 0)
        self.assertEqual(log.append(0, b"after"), 4)
        log.close()
        log = self.open()
        self.assertEqual(log.peek(5), [Hint(4, 1000.0, 0, b"after")])


class OpenTests(LogTestCase):
    """
    The log touches its files only in `HintLog.open`: twistd builds the
    service, then forks to daemonize, and a lock taken before the fork
    would stay with the parent, which exits.
    """

    def test_constructing_touches_no_file(self) -> None:
        log = HintLog(self.dir, TARGET, "always", self.clock, sync=self.syncs)
        self.assertFalse(os.path.exists(self.dir))   # so no lock either
        self.assertEqual((log.pending, log.pending_bytes, log.acked), (0, 0, 0))
        self.assertEqual((log.oldest_age(self.clock.seconds()), log.peek_oldest()), (0.0, None))
        for use in (lambda: log.append(0, b"x"), lambda: log.peek(1), lambda: log.ack(1),
                    log.truncate):
            e = self.assertRaises(HintLogError, use)
            self.assertIn("is not open", str(e))
        log.tick(self.clock.seconds() + 5)
        log.close()
        self.assertFalse(os.path.exists(self.dir))
        log.open()
        self.logs.append(log)
        self.assertTrue(os.path.exists(os.path.join(log.path, "lock")))
        self.assertEqual(log.append(0, b"x"), 1)
        self.assertRaises(HintLogError, log.open)

    def test_close_then_open_again(self) -> None:
        log = self.open()
        self.fill(log, 3)
        log.ack(1)
        log.close()
        self.assertRaises(HintLogError, log.append, 0, b"x")
        log.open()
        self.assertEqual(self.seqs(log), [2, 3])
        self.assertEqual((log.pending, log.pending_bytes, log.acked), (2, 2 * RECORD, 1))
        self.assertEqual(log.append(0, command(4)), 4)

    def open_elsewhere(self) -> bytes:
        """Open the log in another process; what it prints."""
        import dynomite
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(dynomite.__file__)))
        return subprocess.run(
            [sys.executable, "-c",
             "import sys\n"
             "from twisted.internet.task import Clock\n"
             "from dynomite.replication.hints import HintLog, HintLogError\n"
             "try:\n"
             "    HintLog(sys.argv[1], sys.argv[2], 'no', Clock()).open()\n"
             "except HintLogError as e:\n"
             "    print(e)\n"
             "else:\n"
             "    print('opened')\n",
             os.path.abspath(self.dir), TARGET],
            env=env, stdout=subprocess.PIPE, check=True).stdout

    def test_an_open_log_is_locked_against_other_processes(self) -> None:
        log = self.open()
        self.assertIn(b"in use by another process", self.open_elsewhere())
        log.close()
        self.assertEqual(self.open_elsewhere(), b"opened\n")

    def test_the_lock_belongs_to_the_process_that_opens(self) -> None:
        """
        A process builds the log and forks a daemon, which opens it; the
        builder exits.  The daemon holds the lock: this process cannot open
        the log while the daemon lives.
        """
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:   # twistd: makeService, then fork, and the parent exits
            code = 1
            try:
                os.close(ready_r)
                os.close(done_w)
                log = HintLog(self.dir, TARGET, "no", Clock())
                if os.fork() == 0:   # the daemon: startService
                    try:
                        log.open()
                        os.write(ready_w, b"o")
                        os.read(done_r, 1)   # until the test closes done_w
                    finally:
                        os._exit(0)
                code = 0
            finally:
                os._exit(code)
        os.close(ready_w)
        os.close(done_r)
        try:
            self.assertEqual(os.waitpid(pid, 0)[1], 0)
            self.assertEqual(os.read(ready_r, 1), b"o")   # the daemon has the log open
            e = self.assertRaises(HintLogError, self.open)
            self.assertIn("in use by another process", str(e))
        finally:
            os.close(done_w)
            os.read(ready_r, 1)   # end of file: the daemon has exited
            os.close(ready_r)

    def test_in_use_by_another_process(self) -> None:
        log = self.open()
        log.close()
        child = subprocess.Popen(
            [sys.executable, "-c",
             "import fcntl, sys; f = open(sys.argv[1], 'r+'); fcntl.lockf(f, fcntl.LOCK_EX);"
             " print('locked', flush=True); sys.stdin.read()", os.path.join(log.path, "lock")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            self.assertEqual(child.stdout.readline(), b"locked\n")
            e = self.assertRaises(HintLogError, self.open)
            self.assertIn("in use by another process", str(e))
        finally:
            child.stdin.close()
            child.wait()
            child.stdout.close()


_real_write = os.write


class CapTests(LogTestCase):
    def test_hints_older_than_the_window_are_dropped(self) -> None:
        log = self.open(window=10.0)
        self.fill(log, 3)
        self.clock.advance(5)
        self.fill(log, 2, start=4)
        self.clock.advance(6)
        log.tick(self.clock.seconds())
        self.assertEqual(self.seqs(log), [4, 5])
        self.assertEqual((log.pending, log.dropped["window"]), (2, 3))
        self.clock.advance(5)
        self.assertEqual(log.peek(5), [])   # peek never hands out an expired hint
        self.assertEqual((log.pending, log.dropped["window"]), (0, 5))

    def test_window_drops_whole_segments(self) -> None:
        log = self.open(window=10.0, segment_bytes=4 * RECORD + 8)
        for _ in range(5):
            self.fill(log, 4)
            self.clock.advance(4)
        self.assertEqual(len(self.segments(log)), 5)
        log.tick(self.clock.seconds())      # 20 s after the first hint: 1-12 are too old
        self.assertEqual(self.seqs(log), list(range(13, 21)))
        self.assertEqual(log.dropped["window"], 12)
        self.assertEqual(self.segments(log), [13, 17])

    def test_size_cap_drops_new_hints(self) -> None:
        log = self.open(max_bytes=3 * RECORD)
        self.assertEqual(self.fill(log, 5), [1, 2, 3, None, None])
        self.assertEqual((log.pending, log.pending_bytes, log.dropped["overflow"]), (3, 3 * RECORD, 2))
        log.ack(1)
        self.assertEqual(log.append(0, command(6)), 4)

    def test_drops_are_logged_once_per_burst(self) -> None:
        log = self.open(max_bytes=RECORD)
        self.fill(log, 50)
        for _ in range(3):
            self.clock.advance(0.5)
            self.fill(log, 10)
            log.tick(self.clock.seconds())
        self.assertEqual(self.warnings(), [])   # the burst is still going
        self.clock.advance(1)
        log.tick(self.clock.seconds())
        log.tick(self.clock.seconds() + 5)
        (event,) = self.warnings()
        self.assertEqual((event["target"], event["count"], event["reason"]), (TARGET, 79, "overflow"))
        self.assertEqual(log.dropped["overflow"], 79)

    def test_a_long_burst_is_reported_every_10_seconds(self) -> None:
        log = self.open(max_bytes=0)
        for _ in range(25):
            self.fill(log, 1)
            log.tick(self.clock.seconds())
            self.clock.advance(0.5)
        self.assertEqual([e["count"] for e in self.warnings()], [21])

    def test_disk_error_drops_the_hint(self) -> None:
        log = self.open()
        self.fill(log, 1)

        def full(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        os.write = full
        try:
            self.assertIsNone(log.append(0, b"x"))
        finally:
            os.write = _real_write
        self.assertEqual((log.pending, log.dropped["error"]), (1, 1))
        self.assertEqual(log.append(0, command(2)), 2)
        self.assertEqual(self.seqs(log), [1, 2])

    def test_truncate(self) -> None:
        log = self.open(segment_bytes=2 * RECORD + 8)
        self.fill(log, 5)
        log.peek(2)
        self.assertEqual(log.truncate(), 5)
        self.assertEqual((log.pending, log.pending_bytes, self.segments(log)), (0, 0, []))
        self.assertEqual(log.dropped["truncated"], 5)
        (event,) = self.warnings()
        self.assertEqual((event["count"], event["reason"]), (5, "truncated"))
        self.assertEqual(log.append(0, b"x"), 6)
        crash(log)
        log = self.open()
        self.assertEqual(self.seqs(log), [6])


class ModelTests(LogTestCase):
    """
    Seeded random appends, peeks, acks, ticks, restarts, crashes and
    truncations, checked against a list of the pending hints.
    """

    def run_model(self, seed: int) -> None:
        rnd = random.Random(seed)
        self.dir = self.mktemp()
        kw = dict(segment_bytes=rnd.choice([200, 500, 4096]), window=rnd.choice([5.0, 1e9]),
                  max_bytes=rnd.choice([10 ** 9, 2000]))
        log = self.open(fsync=rnd.choice(["no", "everysec", "always"]), **kw)
        model: list = []   # (seq, created, payload) still pending

        def expire() -> None:
            model[:] = [m for m in model if m[1] >= self.clock.seconds() - log.window]

        for step in range(300):
            op = rnd.random()
            if op < 0.45:
                payload = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 120)))
                seq = log.append(rnd.randint(0, 3), payload)
                if seq is not None:
                    self.assertTrue(not model or seq > model[-1][0])
                    model.append((seq, self.clock.seconds(), payload))
            elif op < 0.6:
                n = rnd.randint(1, 20)
                after = rnd.choice(model)[0] if model and rnd.random() < 0.5 else None
                got = [(h.seq, h.payload) for h in log.peek(n, after)]
                expire()
                want = [(m[0], m[2]) for m in model if after is None or m[0] > after][:n]
                self.assertEqual(got, want, (seed, step))
            elif op < 0.75 and model:
                k = rnd.randint(1, len(model))
                log.ack(model[k - 1][0])
                del model[:k]
            elif op < 0.85:
                self.clock.advance(rnd.choice([0, 0.3, 1.0, 3.0]))
                log.tick(self.clock.seconds())
            elif op < 0.9:
                log.close()
                log = self.open(**kw)
            elif op < 0.93:   # crash: hints acked since the ack was saved come back
                crash(log)
                log = self.open(**kw)
                got = [(h.seq, h.created, h.payload) for h in log.peek(10 ** 6)]
                self.assertEqual(got[len(got) - len(model):], model, (seed, step))
                model = got
            elif op < 0.95:
                log.truncate()
                model = []
            log.expire(self.clock.seconds())
            expire()
            self.assertEqual(log.pending, len(model), (seed, step))
            self.assertEqual(log.pending_bytes, sum(RECORD_OVERHEAD + len(m[2]) for m in model))

    def test_random_operations(self) -> None:
        for seed in range(8):
            self.run_model(seed)
