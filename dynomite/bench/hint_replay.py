# -*- test-case-name: tests.unit.test_benchmark -*-
"""
Benchmark: how fast a hint log takes hints and an outbox replays them.

Fills a `HintLog` in a temporary directory with SET commands of about 100
bytes, closes it and opens it again (as a restarted node would), then
replays every hint through an `Outbox` with the rate limit lifted to a
target that answers at once, and prints appends/s and replays/s for
each ``hints_fsync`` policy.  "turn" is how many appends share one reactor
turn (under ``always``, one fsync per turn).  Two replay figures: replies
answered inside ``send`` ("sync"), and replies answered in batches after
``send`` returns, as a network would ("async", 100 in flight).

The target for this project is at least 5,000 replays/s (the default
``hint_replay_rate``).  Not a test: run it by hand::

    .venv/bin/python -m dynomite.bench.hint_replay [--hints 100000] [--dir /path/on/the/real/disk]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time

from twisted.internet.task import Clock

from dynomite.replication.hints import HintLog
from dynomite.replication.outbox import DIRECT, Outbox

TARGET = "127.0.0.2:8101"


def command(i: int) -> bytes:
    """A SET of about 100 bytes of RESP."""
    key = b"bench:key:%012d" % i
    value = (b"%016d" % i) * 4
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)


class Replies:
    """A target that answers at once, or collects sinks to answer later."""

    name = TARGET

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.waiting: list = []
        self.delivered = 0

    def available(self) -> bool:
        return True

    def send(self, request, sink) -> None:
        self.delivered += 1
        if self.sync:
            sink.complete(b"+OK\r\n")
        else:
            self.waiting.append(sink)

    def answer_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for sink in waiting:
            sink.complete(b"+OK\r\n")


def fill(directory: str, policy: str, n: int, turn: int, clock: Clock) -> float:
    """Append ``n`` hints, ``turn`` per reactor turn; returns appends/s."""
    log = HintLog(directory, TARGET, policy, clock)
    log.open()
    payloads = [command(i) for i in range(n)]
    start = time.perf_counter()
    for i in range(0, n, turn):
        for payload in payloads[i:i + turn]:
            log.append(0, payload)
        clock.advance(max(0.0, time.time() - clock.seconds()))  # "always" fsyncs here
        log.tick(clock.seconds())                                # "everysec" here
    log.close()
    return n / (time.perf_counter() - start)


def replay(directory: str, policy: str, n: int, sync: bool, clock: Clock):
    """Reopen the log and replay it; returns (open seconds, replays/s)."""
    log = HintLog(directory, TARGET, policy, clock)
    target = Replies(sync)
    box = Outbox(target, log, clock, replay_rate=0)
    start = time.perf_counter()
    box.start()                      # opens the log
    opened = time.perf_counter() - start
    assert log.pending == n, (log.pending, n)
    start = time.perf_counter()
    box.tick(clock.seconds())
    stalled = 0
    while box.state != DIRECT:
        before = box.replayed_total
        target.answer_all()
        box.tick(clock.seconds())
        stalled = stalled + 1 if box.replayed_total == before else 0
        if stalled > 1000:
            raise RuntimeError("replay stopped at %d of %d hints (outbox %s)"
                               % (box.replayed_total, n, box.state))
    elapsed = time.perf_counter() - start
    assert target.delivered == n and log.pending == 0 and box.replayed_total == n
    box.stop()
    return opened, n / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hints", type=int, default=100000)
    parser.add_argument("--dir", default=None, help="where to create the temporary logs")
    args = parser.parse_args(argv)
    n = args.hints
    print("hint log and outbox replay, %d hints of %d bytes (SET)" % (n, len(command(0))))
    print("%-9s %6s %8s %12s %9s %14s %15s" % (
        "fsync", "turn", "hints", "appends/s", "open ms", "replays/s sync", "replays/s async"))
    runs = [("no", 100, n), ("everysec", 100, n), ("always", 100, n),
            ("always", 1, min(n, 2000))]
    for policy, turn, count in runs:
        directory = tempfile.mkdtemp(prefix="hint-bench-", dir=args.dir)
        try:
            clock = Clock()
            clock.advance(time.time())
            appends = fill(directory, policy, count, turn, clock)
            opened, sync_rate = replay(directory, policy, count, True, clock)
            fill(directory + "-2", policy, count, turn, clock)
            _, async_rate = replay(directory + "-2", policy, count, False, clock)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            shutil.rmtree(directory + "-2", ignore_errors=True)
        print("%-9s %6d %8d %12.0f %9.1f %14.0f %15.0f" % (
            policy, turn, count, appends, opened * 1000, sync_rate, async_rate))
    print("target: >= 5000 replays/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
