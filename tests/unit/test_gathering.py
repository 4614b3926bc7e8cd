"""The clients' runs of writes of one plan, made in one batch, are led as one (dynomite.node.gathering)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.node.gathering import WriteGathering
from dynomite.replication.gathered import GATHERED_MAX_BYTES
from dynomite.runtime import batching
from dynomite.wire.inflight import Request
from dynomite.wire.resp import encode_command

from tests.fakes import RecordingSink as Sink


def run(*keys: bytes, resp: int = 2) -> Request:
    return Request(b"".join(encode_command([b"SET", k, b"v"]) for k in keys), resp, 7, len(keys), True)


class WriteGatheringTests(SynchronousTestCase):

    def setUp(self):
        self.led = []
        self.gathering = WriteGathering(lambda plan, request, sink, normalise: self.led.append(
            (plan, request, sink, normalise)))
        self.plan, self.other_plan = object(), object()

    def test_outside_a_batch_a_run_is_led_at_once(self):
        request, sink = run(b"a"), Sink()
        self.gathering.add(self.plan, request, sink)
        self.assertEqual(self.led, [(self.plan, request, sink, None)])

    def test_runs_of_one_plan_in_one_batch_are_led_as_one_and_answered_apart(self):
        first, second = Sink(), Sink()
        batching.begin()
        self.gathering.add(self.plan, run(b"a", b"b"), first)
        self.gathering.add(self.plan, run(b"c"), second)
        self.assertEqual(self.led, [])
        batching.end()
        [(plan, request, sink, _)] = self.led
        self.assertIs(plan, self.plan)
        self.assertEqual((request.payload, request.count, request.lane), (run(b"a", b"b", b"c").payload, 3, 7))
        sink.complete(b"+OK\r\n-ERR no\r\n:1\r\n")
        sink.fail(b"-ERR lost\r\n")
        sink.hinted(b"-ERR hinted\r\n")
        self.assertEqual(first.calls, [("complete", b"+OK\r\n-ERR no\r\n"), ("fail", b"-ERR lost\r\n"),
                                       ("hinted", b"-ERR hinted\r\n")])
        self.assertEqual(second.calls, [("complete", b":1\r\n"), ("fail", b"-ERR lost\r\n"),
                                        ("hinted", b"-ERR hinted\r\n")])
        self.assertEqual((self.gathering.gathered, self.gathering.led), (2, 1))

    def test_other_plans_resp_versions_comparisons_and_commands_are_led_apart(self):
        batching.begin()
        self.gathering.add(self.plan, run(b"a"), Sink(), None, "set")
        self.gathering.add(self.other_plan, run(b"b"), Sink(), None, "set")
        self.gathering.add(self.plan, run(b"c", resp=3), Sink(), None, "set")
        self.gathering.add(self.plan, run(b"d"), Sink(), len, "set")
        self.gathering.add(self.plan, run(b"e"), Sink(), None, "incr")
        self.gathering.add(self.plan, run(b"f"), Sink(), None, "set")
        batching.end()
        self.assertEqual([(plan, request.count, request.resp, normalise) for plan, request, _, normalise in self.led],
                         [(self.plan, 1, 2, None), (self.plan, 1, 3, None), (self.plan, 1, 2, len),
                          (self.plan, 1, 2, None), (self.plan, 1, 2, None), (self.other_plan, 1, 2, None)])

    def test_flush_leads_what_is_gathered_and_the_batch_end_leads_the_rest(self):
        """What a request that is not a run asks for first: the runs before it are led before it."""
        batching.begin()
        self.gathering.add(self.plan, run(b"a"), Sink())
        self.gathering.flush()
        self.assertEqual(len(self.led), 1)
        self.gathering.flush()
        self.gathering.add(self.plan, run(b"b"), Sink())
        batching.end()
        self.assertEqual([request.payload for _, request, _, _ in self.led], [run(b"a").payload, run(b"b").payload])

    def test_a_run_stops_growing_at_its_size_bound(self):
        big = Request(b"x" * (GATHERED_MAX_BYTES // 2), 2, 7, 1, True)
        batching.begin()
        self.gathering.add(self.plan, run(b"a"), Sink())
        self.gathering.add(self.plan, big, Sink())
        self.gathering.add(self.plan, big, Sink())   # past the bound: the plan's next run
        self.gathering.add(self.plan, run(b"b"), Sink())
        batching.end()
        self.assertEqual([request.payload for _, request, _, _ in self.led],
                         [run(b"a").payload + big.payload, big.payload + run(b"b").payload])

    def test_a_plans_runs_keep_their_order_and_only_consecutive_ones_of_a_command_join(self):
        """A client's LPUSH between two of its SETs of one plan is led between them."""
        batching.begin()
        for key, command in ((b"a", "set"), (b"b", "lpush"), (b"c", "set"), (b"d", "set")):
            self.gathering.add(self.plan, run(key), Sink(), None, command)
        batching.end()
        self.assertEqual([request.payload for _, request, _, _ in self.led],
                         [run(b"a").payload, run(b"b").payload, run(b"c", b"d").payload])
