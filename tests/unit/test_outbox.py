"""
Tests for dynomite.replication.outbox: ordered delivery to one target, hinting while it
is away, throttled in-order replay.  A Clock, a temp directory and a fake
target whose replies the test sends.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.replication.gathered import GATHERED_MAX_BYTES
from dynomite.replication.hints import HintLog
from dynomite.runtime import batching
from dynomite.replication.outbox import (
    BACKLOG, DIRECT, PAUSED, REPLAYING, RETRY_MIN, Outbox, is_hinted,
)
from dynomite.wire.inflight import REPLAY_LANE, Request
from dynomite.wire.peer_frames import FLAG_REPLAY, FLAG_SEQUENCED, payload_sequence, sequenced_payload

from tests.fakes import RecordingSink

TARGET = "127.0.0.2:8101"
OK = b"+OK\r\n"
DOWN = b"-ERR peer 127.0.0.2:8101 unavailable\r\n"


def w(i: int) -> bytes:
    return b"*3\r\n$3\r\nSET\r\n$2\r\nk%d\r\n$1\r\nv\r\n" % i if i < 10 else b"SET k%d v\r\n" % i


class Target:
    """The peer: records what it is sent; replies automatically or when told."""

    name = TARGET

    def __init__(self) -> None:
        self.up = True
        self.auto = False      # complete every request at once
        self.refuse = False    # fail every request at once (DOWN while looking up)
        self.received: list = []
        self.pins: list = []
        self.waiting: list = []

    def available(self) -> bool:
        return self.up

    def send(self, request: Request, sink) -> None:
        if self.refuse:
            sink.fail(DOWN)
            return
        self.received.append(request.payload)
        self.pins.append(request.lane)
        if self.auto:
            sink.complete(OK)
        else:
            self.waiting.append(sink)

    def reply(self, n: int = 1, raw: bytes = OK) -> None:
        for _ in range(n):
            self.waiting.pop(0).complete(raw)

    def fail(self, n: int = 1) -> None:
        for _ in range(n):
            self.waiting.pop(0).fail(b"-ERR peer timed out\r\n")


class Sink(RecordingSink):
    """A caller that understands hinted writes."""

    @property
    def kind(self) -> str:
        (call,) = self.calls
        return call[0]


class OutboxTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.dir = self.mktemp()
        self.target = Target()
        self.logs: list = []
        self.addCleanup(lambda: [log._close_files() for log in self.logs])

    def outbox(self, rate=0, in_flight=100, **kw) -> Outbox:
        args = dict(segment_bytes=64 * 1024, max_bytes=1024 ** 3, window=3600.0)
        args.update(kw)
        log = HintLog(self.dir, TARGET, "no", self.clock, **args)
        self.logs.append(log)
        box = Outbox(self.target, log, self.clock, replay_rate=rate, max_in_flight=in_flight)
        box.start()
        return box

    def submit(self, box: Outbox, *ids: int) -> list:
        sinks = []
        for i in ids:
            sink = Sink()
            box.submit(Request(w(i)), sink)
            sinks.append(sink)
        return sinks

    def tick(self, box: Outbox, seconds: float = 0.0) -> None:
        self.clock.advance(seconds)
        box.tick(self.clock.seconds())


class DirectTests(OutboxTestCase):
    def test_up_and_empty_goes_straight_out(self) -> None:
        box = self.outbox()
        (sink,) = self.submit(box, 1)
        self.assertEqual(self.target.received, [w(1)])
        self.assertEqual(sink.calls, [])
        self.target.reply(raw=b":1\r\n")
        self.assertEqual(sink.calls, [("complete", b":1\r\n")])
        self.assertEqual((box.state, box.hints.pending, box.hints.appended_total), (DIRECT, 0, 0))

    def test_direct_writes_keep_their_pin_and_replays_use_one(self) -> None:
        box = self.outbox()
        self.target.auto = True
        box.submit(Request(w(1), lane=7), Sink())
        box.submit(Request(w(2), lane=8), Sink())
        self.target.up = False
        box.submit(Request(w(3), lane=7), Sink())
        box.submit(Request(w(4), lane=8), Sink())
        self.target.up = True
        self.tick(box)
        self.assertEqual(self.target.received, [w(1), w(2), w(3), w(4)])
        self.assertEqual(self.target.pins, [7, 8, REPLAY_LANE, REPLAY_LANE])

    def test_down_target_gets_hints(self) -> None:
        box = self.outbox()
        self.target.up = False
        sinks = self.submit(box, 1, 2, 3)
        self.assertEqual(self.target.received, [])
        self.assertEqual([s.kind for s in sinks], ["hinted"] * 3)
        self.assertTrue(is_hinted(sinks[0].calls[0][1]))
        self.assertEqual((box.state, box.hints.pending), (BACKLOG, 3))

    def test_the_hinted_reply_names_the_target(self) -> None:
        box = self.outbox()
        self.target.up = False
        sink = Sink()
        box.submit(Request(w(1)), sink)
        ((kind, raw),) = sink.calls
        self.assertEqual(kind, "hinted")
        self.assertTrue(is_hinted(raw), raw)
        self.assertEqual(raw, b"-HINTED write for %s stored as a hint (unavailable)\r\n"
                         % TARGET.encode())

    def test_the_hinted_reply_says_why(self) -> None:
        box = self.outbox()
        s1, s2 = self.submit(box, 1, 2)
        self.target.fail()                  # -ERR peer timed out
        self.assertEqual(s1.calls, [("hinted", b"-HINTED write for %s stored as a hint"
                                               b" (peer timed out)\r\n" % TARGET.encode())])
        (s3,) = self.submit(box, 3)
        self.assertEqual(s3.calls, s1.calls)

    def test_failed_direct_write_is_hinted_with_those_sent_after_it(self) -> None:
        box = self.outbox()
        s1, s2 = self.submit(box, 1, 2)
        self.target.fail()                  # 1 times out; 2 is still in flight
        self.assertEqual(s1.kind, "hinted")
        self.assertEqual(box.state, BACKLOG)
        self.assertEqual([h.payload for h in box.hints.peek(10)], [w(1), w(2)])
        (s3,) = self.submit(box, 3)         # joins the backlog
        self.assertEqual(s3.kind, "hinted")
        self.target.reply()                 # 2 made it after all: the caller hears so
        self.assertEqual(s2.calls, [("complete", OK)])
        self.assertEqual(self.target.received, [w(1), w(2)])
        self.target.auto = True
        self.tick(box, RETRY_MIN)
        self.assertEqual(self.target.received, [w(1), w(2), w(1), w(2), w(3)])
        self.assertEqual(box.state, DIRECT)

    def test_a_write_answered_out_of_order_is_replayed_after_an_earlier_failure(self) -> None:
        """
        2 is answered before 1, then 1 fails: 2 goes to the log after 1, so
        the replay leaves the target with 2 applied last, as accepted.
        """
        box = self.outbox()
        s1, s2 = self.submit(box, 1, 2)
        self.target.waiting.pop(1).complete(OK)
        self.assertEqual(s2.calls, [("complete", OK)])
        self.target.fail()
        self.assertEqual(s1.kind, "hinted")
        self.assertEqual([h.payload for h in box.hints.peek(10)], [w(1), w(2)])

    def test_direct_write_failing_at_once_is_hinted(self) -> None:
        box = self.outbox()
        self.target.refuse = True           # is_up said yes, the link said no
        (sink,) = self.submit(box, 1)
        self.assertEqual(sink.kind, "hinted")
        self.assertEqual((box.state, box.hints.pending), (BACKLOG, 1))

    def test_writes_in_flight_are_kept_in_order_when_the_target_goes_down(self) -> None:
        box = self.outbox()
        s1, s2 = self.submit(box, 1, 2)
        self.target.up = False
        (s3,) = self.submit(box, 3)
        self.assertEqual([h.payload for h in box.hints.peek(10)], [w(1), w(2), w(3)])
        self.target.fail(2)                 # the connection is lost
        self.assertEqual([s1.kind, s2.kind, s3.kind], ["hinted"] * 3)
        self.assertEqual(box.hints.pending, 3)

    def test_hint_log_full_fails_the_write(self) -> None:
        box = self.outbox(max_bytes=0)
        self.target.up = False
        (sink,) = self.submit(box, 1)
        ((kind, raw),) = sink.calls
        self.assertEqual(kind, "fail")
        self.assertFalse(is_hinted(raw))
        self.assertEqual(box.stats(self.clock.seconds())["dropped_total"]["overflow"], 1)


class RunTests(OutboxTestCase):
    """A run of writes goes out whole, and is hinted write by write."""

    def test_a_run_goes_out_as_one_delivery(self) -> None:
        box = self.outbox()
        sink = Sink()
        box.submit(Request(w(1) + w(2) + w(3), lane=5, count=3), sink)
        self.assertEqual(self.target.received, [w(1) + w(2) + w(3)])
        self.target.reply(raw=OK * 3)
        self.assertEqual(sink.calls, [("complete", OK * 3)])

    def test_a_run_for_a_down_target_is_hinted_write_by_write(self) -> None:
        box = self.outbox()
        self.target.up = False
        sink = Sink()
        box.submit(Request(w(1) + w(2) + w(3), lane=5, count=3), sink)
        self.assertEqual(sink.kind, "hinted")
        self.assertEqual(box.hints.pending, 3)
        self.target.up = True
        self.target.auto = True
        self.tick(box)
        self.assertEqual(self.target.received, [w(1), w(2), w(3)])
        self.assertEqual(box.state, DIRECT)

    def test_a_failed_run_is_spilled_in_order_with_the_writes_around_it(self) -> None:
        box = self.outbox()
        first, run, last = Sink(), Sink(), Sink()
        box.submit(Request(w(1)), first)
        box.submit(Request(w(2) + w(3), lane=0, count=2), run)
        box.submit(Request(w(4)), last)
        self.target.fail(3)
        self.assertEqual([first.kind, run.kind, last.kind], ["hinted"] * 3)
        self.assertEqual(box.hints.pending, 4)
        self.target.received.clear()
        self.target.auto = True
        self.tick(box, 1.0)
        self.assertEqual(self.target.received, [w(1), w(2), w(3), w(4)])


class GatheredTests(OutboxTestCase):
    """Writes submitted during one batch leave together, and each submitter gets its own replies."""

    def test_a_batch_is_one_delivery_per_lane_and_protocol(self) -> None:
        box = self.outbox()
        a, b, c = Sink(), Sink(), Sink()
        batching.begin()
        box.submit(Request(w(1)), a)
        box.submit(Request(w(2) + w(3), count=2), b)
        box.submit(Request(w(4), resp=3), c)
        self.assertEqual(self.target.received, [])
        batching.end()
        self.assertEqual(self.target.received, [w(1) + w(2) + w(3), w(4)])
        self.target.reply(raw=OK * 3)
        self.target.reply(raw=b":1\r\n")
        self.assertEqual((a.calls, b.calls, c.calls),
                         ([("complete", OK)], [("complete", OK * 2)], [("complete", b":1\r\n")]))

    def test_a_gathered_run_stops_growing_at_its_size_bound(self) -> None:
        """Past GATHERED_MAX_BYTES a run leaves, in its place, and the next one starts (a frame stays bounded)."""
        box = self.outbox()
        big = Request(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n" % (
            GATHERED_MAX_BYTES // 2, b"x" * (GATHERED_MAX_BYTES // 2)))
        batching.begin()
        box.submit(Request(w(1)), Sink())
        box.submit(big, Sink())
        self.assertEqual(self.target.received, [])
        box.submit(big, Sink())
        self.assertEqual(self.target.received, [w(1) + big.payload])
        box.submit(Request(w(2)), Sink())
        batching.end()
        self.assertEqual(self.target.received, [w(1) + big.payload, big.payload + w(2)])

    def test_replies_are_split_back_by_count(self) -> None:
        box = self.outbox()
        a, b = Sink(), Sink()
        batching.begin()
        box.submit(Request(w(1) + w(2), count=2), a)
        box.submit(Request(w(3)), b)
        batching.end()
        self.target.reply(raw=b":1\r\n$1\r\nx\r\n-ERR no\r\n")
        self.assertEqual((a.calls, b.calls),
                         ([("complete", b":1\r\n$1\r\nx\r\n")], [("complete", b"-ERR no\r\n")]))

    def test_a_failed_batch_is_hinted_for_each_and_keeps_its_place(self) -> None:
        box = self.outbox()
        first, a, b = Sink(), Sink(), Sink()
        box.submit(Request(w(1)), first)
        batching.begin()
        box.submit(Request(w(2)), a)
        self.target.fail()              # the first write fails while the batch gathers:
        # what was gathered is hinted behind it, never sent from the failure
        box.submit(Request(w(3)), b)    # hinted at once: behind what was gathered
        batching.end()
        self.assertEqual(self.target.waiting, [])
        self.assertEqual([first.kind, a.kind, b.kind], ["hinted"] * 3)
        self.target.received.clear()
        self.target.auto = True
        self.tick(box, 1.0)
        self.assertEqual(self.target.received, [w(1), w(2), w(3)])


class NumberedTests(OutboxTestCase):
    """An outbox for a Redis numbers its writes, so that a replay is applied once (applied_once)."""

    def numbered_outbox(self) -> Outbox:
        log = HintLog(self.dir, TARGET, "no", self.clock, segment_bytes=64 * 1024,
                      max_bytes=1024 ** 3, window=3600.0)
        self.logs.append(log)
        box = Outbox(self.target, log, self.clock, replay_rate=0, sequenced=True)
        box.start()
        self.target.flags = []
        send = self.target.send

        def record(request, sink):
            self.target.flags.append(request.flags)
            send(request, sink)

        self.target.send = record
        return box

    def test_runs_take_one_number_per_write_and_hints_keep_theirs(self) -> None:
        box = self.numbered_outbox()
        box.submit(Request(w(1) + w(2), count=2, write=True), Sink())
        box.submit(Request(w(3), write=True), Sink())
        first = payload_sequence(self.target.received[0])
        self.assertEqual(payload_sequence(self.target.received[1]), first + 2)
        self.assertEqual(self.target.received, [sequenced_payload(first, w(1) + w(2)),
                                                sequenced_payload(first + 2, w(3))])
        self.assertTrue(all(f & FLAG_SEQUENCED and not f & FLAG_REPLAY for f in self.target.flags))
        self.target.fail(2)                    # fate unknown: both spilled to the log
        self.target.received.clear()
        self.target.flags.clear()
        self.target.auto = True
        self.tick(box, 1.0)
        self.assertEqual(self.target.received, [sequenced_payload(first + i, w(i + 1)) for i in range(3)])
        self.assertTrue(all(f & FLAG_SEQUENCED and f & FLAG_REPLAY for f in self.target.flags))

    def test_numbers_grow_across_a_restart(self) -> None:
        box = self.numbered_outbox()
        box.submit(Request(w(1), write=True), Sink())
        before = payload_sequence(self.target.received[-1])
        self.clock.advance(0.001)
        again = self.numbered_outbox()
        again.submit(Request(w(2), write=True), Sink())
        self.assertGreater(payload_sequence(self.target.received[-1]), before)


class ReplayTests(OutboxTestCase):
    def test_replays_in_order_then_goes_direct(self) -> None:
        box = self.outbox()
        self.target.up = False
        self.submit(box, 1, 2, 3)
        self.tick(box, 1)
        self.assertEqual(box.state, BACKLOG)
        self.target.up = True
        self.target.auto = True
        box.wake()
        self.assertEqual(self.target.received, [w(1), w(2), w(3)])
        self.assertEqual((box.state, box.hints.pending, box.replayed_total), (DIRECT, 0, 3))
        self.submit(box, 4)
        self.assertEqual(self.target.received[-1], w(4))
        self.assertEqual(box.hints.pending, 0)

    def test_writes_during_replay_join_the_back(self) -> None:
        box = self.outbox(in_flight=2)
        self.target.up = False
        self.submit(box, 1, 2, 3, 4)
        self.target.up = True
        self.tick(box)
        self.assertEqual((box.state, self.target.received), (REPLAYING, [w(1), w(2)]))
        during = self.submit(box, 5, 6)
        self.assertEqual([s.kind for s in during], ["hinted"] * 2)
        self.target.reply()
        self.submit(box, 7)
        while self.target.waiting:
            self.target.reply()
        self.assertEqual(box.state, DIRECT)
        self.submit(box, 8)
        self.target.reply()
        self.assertEqual(self.target.received, [w(i) for i in range(1, 9)])
        self.assertEqual(box.replayed_total, 7)

    def test_in_flight_window_and_in_order_acks(self) -> None:
        box = self.outbox(in_flight=100)
        self.target.up = False
        self.submit(box, *range(1000))
        self.target.up = True
        self.tick(box)
        self.assertEqual(len(self.target.received), 100)
        self.tick(box, 1)
        self.assertEqual(len(self.target.received), 100)   # the window is full
        second = self.target.waiting.pop(1)
        second.complete(OK)                 # out of order: nothing can be acked yet
        self.assertEqual((box.hints.acked, len(self.target.received)), (0, 100))
        self.target.reply()                 # the first: 1 and 2 are acked
        self.assertEqual((box.hints.acked, box.hints.pending), (2, 998))
        self.assertEqual(len(self.target.received), 102)
        self.target.reply(10)
        self.assertEqual((box.hints.acked, len(self.target.received)), (12, 112))

    def test_replay_throttle(self) -> None:
        """At 5,000/s, 10,000 hints take about 2 s of clock (a 0.1 s burst first)."""
        box = self.outbox(rate=5000)
        self.target.up = False
        for i in range(10000):
            box.submit(Request(b"SET k%d v\r\n" % i), Sink())
        self.target.up = True
        self.target.auto = True
        start = self.clock.seconds()
        self.tick(box)
        self.assertEqual(len(self.target.received), 500)
        sent_at_1s = None
        while box.state == REPLAYING:
            self.tick(box, 0.01)
            if sent_at_1s is None and self.clock.seconds() - start >= 1.0 - 1e-9:
                sent_at_1s = len(self.target.received)
        elapsed = self.clock.seconds() - start
        self.assertTrue(1.85 <= elapsed <= 1.95, elapsed)
        self.assertTrue(5450 <= sent_at_1s <= 5550, sent_at_1s)
        self.assertEqual(self.target.received[-1], b"SET k9999 v\r\n")
        self.assertEqual((box.state, box.replayed_total), (DIRECT, 10000))

    def test_failure_stops_replay_and_retries_later(self) -> None:
        box = self.outbox(in_flight=3)
        self.target.up = False
        self.submit(box, 1, 2, 3, 4, 5)
        self.target.up = True
        self.tick(box)
        self.target.reply()
        self.target.fail()                  # hint 2 fails
        self.assertEqual(box.state, BACKLOG)
        self.assertEqual(self.target.received, [w(1), w(2), w(3), w(4)])
        self.target.reply(2)                # late replies of the stopped round: ignored
        self.assertEqual(box.hints.acked, 1)
        self.tick(box, RETRY_MIN / 2)
        self.assertEqual(len(self.target.received), 4)
        self.target.auto = True
        self.tick(box, RETRY_MIN / 2)
        self.assertEqual(self.target.received[4:], [w(2), w(3), w(4), w(5)])
        self.assertEqual((box.state, box.hints.pending), (DIRECT, 0))

    def test_back_off_doubles_while_replay_keeps_failing(self) -> None:
        box = self.outbox()
        self.target.up = False
        self.submit(box, 1)
        self.target.up = True
        self.target.refuse = True
        self.tick(box)
        attempts = []
        for _ in range(40):
            before = box._retry_at
            self.tick(box, 0.25)
            if box._retry_at != before:
                attempts.append(self.clock.seconds())
        gaps = [round(b - a, 2) for a, b in zip(attempts, attempts[1:])]
        self.assertEqual(gaps[:3], [1.0, 2.0, 4.0])

    def test_target_down_during_replay(self) -> None:
        box = self.outbox(in_flight=2)
        self.target.up = False
        self.submit(box, 1, 2, 3)
        self.target.up = True
        self.tick(box)
        self.target.up = False
        self.tick(box)
        self.assertEqual(box.state, BACKLOG)
        self.target.fail(2)
        self.target.up = True
        self.target.auto = True
        self.tick(box)
        self.assertEqual(self.target.received, [w(1), w(2), w(1), w(2), w(3)])
        self.assertEqual(box.state, DIRECT)

    def test_expired_hints_are_not_replayed(self) -> None:
        box = self.outbox(window=10.0)
        self.target.up = False
        self.submit(box, 1, 2)
        self.tick(box, 5)
        self.submit(box, 3)
        self.tick(box, 6)
        self.target.up = True
        self.target.auto = True
        self.tick(box)
        self.assertEqual(self.target.received, [w(3)])
        self.assertEqual(box.stats(self.clock.seconds())["dropped_total"]["window"], 2)


class RandomScheduleTests(OutboxTestCase):
    """
    Seeded random schedules of writes, outages, failures, replies (in order
    or not), pauses and restarts against a target that applies what it
    receives unless the request fails.  Afterwards every write a caller was
    told was applied or hinted has been applied, and the last application
    of each write is in acceptance order (so the last write to a key wins).
    """

    def run_schedule(self, seed: int) -> None:
        rnd = random.Random(seed)
        self.dir = self.mktemp()
        in_order = seed % 2 == 0
        applied: list = []
        waiting: list = []
        up = [True]

        class RandomTarget:
            name = TARGET

            def send(self, request: Request, sink) -> None:
                if not up[0] and rnd.random() < 0.8:
                    sink.fail(DOWN)
                    return
                outcome = rnd.choice(["ok"] * 30 + ["lost", "applied, then timed out"])
                if outcome != "lost":
                    applied.append(int(request.payload))
                waiting.append((sink, outcome))

            def available(self) -> bool:
                return up[0]

        def answer() -> None:
            sink, outcome = waiting.pop(0 if in_order else rnd.randrange(len(waiting)))
            if outcome == "ok":
                sink.complete(OK)
            else:
                sink.fail(b"-ERR peer timed out\r\n")

        def make() -> Outbox:
            log = HintLog(self.dir, TARGET, "no", self.clock,
                          segment_bytes=rnd.choice([300, 65536]), window=1e9)
            self.logs.append(log)
            box = Outbox(RandomTarget(), log, self.clock,
                         replay_rate=rnd.choice([0, 50]), max_in_flight=rnd.choice([1, 3, 100]))
            box.start()
            return box

        box = make()
        sinks: dict = {}
        unanswered_at_restart: set = set()
        for _ in range(400):
            op = rnd.random()
            if op < 0.35:
                i = len(sinks) + 1
                sinks[i] = Sink()
                box.submit(Request(b"%d" % i), sinks[i])
            elif op < 0.6 and waiting:
                answer()
            elif op < 0.7:
                up[0] = not up[0]
            elif op < 0.85:
                self.tick(box, rnd.choice([0.01, 0.1, 0.6]))
            elif op < 0.88:
                box.pause()
            elif op < 0.92:
                box.resume()
            elif op < 0.93:   # restart: requests in flight are answered to nobody
                waiting.clear()
                unanswered_at_restart |= {i for i, s in sinks.items() if not s.calls}
                box.hints.close()
                box = make()
        up[0] = True
        box.resume()
        while box.state != DIRECT or waiting or box.hints.pending:
            if waiting:
                answer()
            else:
                self.tick(box, 0.6)
        for i, sink in sinks.items():
            self.assertLessEqual(len(sink.calls), 1, (seed, i))
            if i not in unanswered_at_restart:
                self.assertIn(sink.kind, ("complete", "hinted"), (seed, i))
                self.assertIn(i, applied, (seed, i))
        last = {i: pos for pos, i in enumerate(applied)}
        order = sorted(last, key=last.__getitem__)
        self.assertEqual(order, sorted(order), seed)

    def test_random_schedules(self) -> None:
        for seed in range(8):
            self.run_schedule(seed)


class AdminTests(OutboxTestCase):
    def test_pause_holds_everything_and_resume_replays(self) -> None:
        box = self.outbox()
        self.target.auto = True
        box.pause()
        self.assertEqual(box.state, PAUSED)
        sinks = self.submit(box, 1, 2)
        self.tick(box, 1)
        self.assertEqual((self.target.received, [s.kind for s in sinks]), ([], ["hinted"] * 2))
        box.resume()
        self.assertEqual(self.target.received, [w(1), w(2)])
        self.assertEqual(box.state, DIRECT)

    def test_pause_during_replay(self) -> None:
        box = self.outbox(in_flight=1)
        self.target.up = False
        self.submit(box, 1, 2, 3)
        self.target.up = True
        self.tick(box)
        box.pause()
        self.target.reply()                 # the reply of a paused round is not counted
        self.tick(box, 5)
        self.assertEqual((len(self.target.received), box.hints.pending), (1, 3))
        self.target.auto = True
        box.resume()
        self.assertEqual(self.target.received, [w(1), w(1), w(2), w(3)])

    def test_truncate(self) -> None:
        box = self.outbox(in_flight=2)
        self.target.up = False
        self.submit(box, 1, 2, 3)
        self.target.up = True
        self.tick(box)
        self.assertEqual(box.truncate(), 3)
        self.assertEqual(box.state, DIRECT)
        self.target.reply(2)                # late replies change nothing
        stats = box.stats(self.clock.seconds())
        self.assertEqual((stats["pending"], stats["dropped_total"]["truncated"]), (0, 3))
        self.assertEqual(stats["replayed_total"], 0)
        self.submit(box, 4)
        self.assertEqual(self.target.received[-1], w(4))

    def test_truncate_while_down(self) -> None:
        box = self.outbox()
        self.target.up = False
        self.submit(box, 1, 2)
        box.truncate()
        self.assertEqual(box.state, BACKLOG)   # still down
        self.target.up = True
        self.tick(box)
        self.assertEqual((box.state, self.target.received), (DIRECT, []))

    def test_stats(self) -> None:
        box = self.outbox()
        self.target.up = False
        self.submit(box, 1, 2)
        self.clock.advance(3)
        stats = box.stats(self.clock.seconds())
        self.assertEqual(set(stats), {"pending", "pending_bytes", "oldest_age_seconds",
                                      "stored_total", "replayed_total", "dropped_total", "state"})
        self.assertEqual(stats["pending"], 2)
        self.assertEqual(stats["pending_bytes"], box.hints.pending_bytes)
        self.assertGreater(stats["pending_bytes"], len(w(1)) + len(w(2)))
        self.assertEqual(stats["oldest_age_seconds"], 3.0)
        self.assertEqual((stats["stored_total"], stats["replayed_total"]), (2, 0))
        self.assertEqual(stats["dropped_total"], {"window": 0, "overflow": 0, "truncated": 0,
                                                  "corrupt": 0, "error": 0})
        self.assertEqual(stats["state"], BACKLOG)


class RestartTests(OutboxTestCase):
    def test_pending_hints_start_in_backlog(self) -> None:
        box = self.outbox()
        self.target.up = False
        self.submit(box, 1, 2, 3)
        box.hints.close()
        self.target.up = True
        self.target.auto = True
        box = self.outbox()
        self.assertEqual((box.state, box.hints.pending), (BACKLOG, 3))
        (sink,) = self.submit(box, 4)       # joins the backlog even though the target is up
        self.assertEqual(sink.kind, "hinted")
        self.tick(box)
        self.assertEqual(self.target.received, [w(1), w(2), w(3), w(4)])
        self.assertEqual(box.state, DIRECT)

    def test_empty_log_starts_direct(self) -> None:
        box = self.outbox()
        box.hints.close()
        self.assertEqual(self.outbox().state, DIRECT)
