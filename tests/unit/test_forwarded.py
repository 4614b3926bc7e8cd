"""What an entry node remembers of the numbered FORWARDs it applied (dynomite.node.forwarded)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.node.forwarded import APPLIED, NEW, WAITING, ForwardedOnce

from tests.fakes import RecordingSink as Sink


class ForwardedOnceTests(SynchronousTestCase):

    def setUp(self):
        self.table = ForwardedOnce(max_ranges=4)

    def test_a_write_is_new_then_in_flight_then_applied(self):
        self.assertEqual(self.table.classify("a", 10), NEW)
        self.table.sending("a", [10, 11])
        self.assertEqual([self.table.classify("a", n) for n in (10, 11, 12)], [WAITING, WAITING, NEW])
        self.table.applied("a", [10, 11], b"+OK\r\n")
        self.assertEqual([self.table.classify("a", n) for n in (9, 10, 11, 12)], [NEW, APPLIED, APPLIED, NEW])
        self.assertEqual(self.table.classify("b", 10), NEW)   # numbers are per sender

    def test_a_replay_waits_for_the_write_in_flight_and_gets_its_outcome(self):
        ok, failed = Sink(), Sink()
        self.table.sending("a", [1, 2])
        self.table.wait("a", 1, ok)
        self.table.wait("a", 2, failed)
        self.table.applied("a", [1], b":5\r\n")
        self.table.failed("a", [2], b"-ERR lost\r\n")
        self.assertEqual((ok.calls, failed.calls), ([("complete", b":5\r\n")], [("fail", b"-ERR lost\r\n")]))
        self.assertEqual((self.table.classify("a", 1), self.table.classify("a", 2)), (APPLIED, NEW))
        self.assertEqual(self.table.waited, 2)

    def test_consecutive_numbers_merge_into_one_range_whatever_their_order(self):
        for number in (5, 7, 6, 3, 4, 8, 8):
            self.table.applied("a", [number], b"+OK\r\n")
        self.assertEqual(self.table.ranges("a"), [[3, 9]])

    def test_the_oldest_ranges_are_forgotten_first(self):
        for number in (10, 20, 30, 40, 50):
            self.table.applied("a", [number], b"+OK\r\n")
        self.assertEqual(self.table.ranges("a"), [[20, 21], [30, 31], [40, 41], [50, 51]])
        self.assertEqual(self.table.classify("a", 10), NEW)

    def test_what_a_sender_sends_next_is_new_without_looking_number_by_number(self):
        self.assertTrue(self.table.all_new("a", 5))
        self.table.sending("a", [5, 6, 7])
        self.assertFalse(self.table.all_new("a", 7))
        self.assertTrue(self.table.all_new("a", 8))
        self.table.applied("a", [5, 6, 7], b"+OK\r\n")
        self.assertFalse(self.table.all_new("a", 6))
        self.assertTrue(self.table.all_new("b", 0))
