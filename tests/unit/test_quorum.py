"""Reconciliation of replica replies at each consistency level."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.consistency.quorum import (
    DC_ONE,
    DC_QUORUM,
    DC_SAFE_QUORUM,
    EachQuorum,
    Reconciler,
    quorum,
)

A = b"$1\r\na\r\n"
B = b"$1\r\nb\r\n"
C = b"$1\r\nc\r\n"
DOWN = b"-ERR peer 127.0.0.2:8101 unavailable\r\n"
WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"


class Run:
    """Feed a reconciler a script of ('ok'|'fail', raw) events."""

    def __init__(self, level, total, normalise=None):
        self.out = []
        self.rec = Reconciler(level, total, self.out.append, normalise)
        self.sinks = [self.rec.replica() for _ in range(total)]

    def ok(self, i, raw):
        self.sinks[i].complete(raw)
        return self

    def fail(self, i, raw=DOWN):
        self.sinks[i].fail(raw)
        return self


class QuorumSizeTests(SynchronousTestCase):
    def test_majority_for_any_rack_count(self):
        self.assertEqual([quorum(r) for r in range(1, 8)], [1, 2, 2, 3, 3, 4, 4])


class DcOneTests(SynchronousTestCase):
    def test_first_answer_wins(self):
        r = Run(DC_ONE, 3).fail(0).ok(1, A)
        self.assertEqual(r.out, [A])
        r.ok(2, B)
        self.assertEqual(r.out, [A])

    def test_all_failed_names_level_and_first_reason(self):
        r = Run(DC_ONE, 2).fail(0).fail(1, b"-ERR last\r\n")
        self.assertEqual(
            r.out, [b"-ERR DC_ONE: none of 2 replicas answered (ERR peer 127.0.0.2:8101 unavailable)\r\n"])

    def test_single_replica_failure_passes_through(self):
        r = Run(DC_ONE, 1).fail(0, b"-ERR last\r\n")
        self.assertEqual(r.out, [b"-ERR last\r\n"])

    def test_hinted_replicas_are_explained(self):
        r = Run(DC_ONE, 2).fail(0, b"-HINTED write for x stored as a hint\r\n").fail(1)
        self.assertIn(b"write for x stored as a hint, to be applied when it returns", r.out[0])


class DcQuorumTests(SynchronousTestCase):
    def test_agreeing_pair_answers_before_third(self):
        r = Run(DC_QUORUM, 3).ok(0, A).ok(1, A)
        self.assertEqual(r.out, [A])

    def test_majority_value_wins_over_first(self):
        r = Run(DC_QUORUM, 3).ok(0, B).ok(1, A).ok(2, A)
        self.assertEqual(r.out, [A])

    def test_no_agreement_answers_largest_group_first(self):
        r = Run(DC_QUORUM, 3).ok(0, B).ok(1, A).ok(2, C)
        self.assertEqual(r.out, [B])

    def test_one_failure_still_quorum(self):
        r = Run(DC_QUORUM, 3).fail(0).ok(1, A).ok(2, A)
        self.assertEqual(r.out, [A])

    def test_one_failure_and_disagreement_answers_first(self):
        r = Run(DC_QUORUM, 3).fail(0).ok(1, A).ok(2, B)
        self.assertEqual(r.out, [A])

    def test_too_few_answers_is_an_error_naming_level_and_count(self):
        r = Run(DC_QUORUM, 3).fail(0).ok(1, A).fail(2)
        self.assertEqual(len(r.out), 1)
        self.assertTrue(r.out[0].startswith(b"-ERR DC_QUORUM: 1 of 3 replicas answered, 2 needed"), r.out)
        self.assertIn(b"127.0.0.2:8101 unavailable", r.out[0])

    def test_fails_early_when_quorum_impossible(self):
        r = Run(DC_QUORUM, 3).fail(0).fail(1)
        self.assertEqual(len(r.out), 1)

    def test_redis_errors_are_answers(self):
        r = Run(DC_QUORUM, 3).ok(0, WRONGTYPE).ok(1, WRONGTYPE)
        self.assertEqual(r.out, [WRONGTYPE])

    def test_five_racks(self):
        r = Run(DC_QUORUM, 5).ok(0, A).ok(1, B).ok(2, A)
        self.assertEqual(r.out, [])
        r.ok(3, A)
        self.assertEqual(r.out, [A])


class DcSafeQuorumTests(SynchronousTestCase):
    def test_agreement(self):
        r = Run(DC_SAFE_QUORUM, 3).ok(0, A).ok(1, B).ok(2, A)
        self.assertEqual(r.out, [A])

    def test_three_different_values_is_an_error(self):
        r = Run(DC_SAFE_QUORUM, 3).ok(0, A).ok(1, B).ok(2, C)
        self.assertEqual(r.out, [b"-ERR DC_SAFE_QUORUM: at most 1 of 3 replicas agreed, 2 needed\r\n"])

    def test_disagreement_plus_failure_errors_early(self):
        r = Run(DC_SAFE_QUORUM, 3).ok(0, A).ok(1, B)
        self.assertEqual(r.out, [])
        r.fail(2)
        self.assertEqual(len(r.out), 1)
        self.assertIn(b"at most 1 of 3 replicas agreed", r.out[0])

    def test_normaliser_makes_orders_agree(self):
        norm = lambda raw: tuple(sorted(raw.split(b",")))
        r = Run(DC_SAFE_QUORUM, 3, norm).ok(0, b"x,y").ok(1, b"y,x")
        self.assertEqual(r.out, [b"x,y"])

    def test_exactly_once(self):
        r = Run(DC_SAFE_QUORUM, 3).ok(0, A).ok(1, A).ok(2, A).fail(2)
        self.assertEqual(r.out, [A])


class EachQuorumTests(SynchronousTestCase):
    def make(self):
        out = []
        each = EachQuorum({"dc1": 3, "dc2": 3}, out.append)
        return out, each

    def test_every_dc_agrees(self):
        out, each = self.make()
        for dc in ("dc1", "dc2"):
            each.replica(dc).complete(A)
            each.replica(dc).complete(A)
        self.assertEqual(out, [A])

    def test_one_dc_without_quorum_fails(self):
        out, each = self.make()
        each.replica("dc1").complete(A)
        each.replica("dc1").complete(A)
        each.replica("dc2").fail(DOWN)
        each.replica("dc2").fail(DOWN)
        self.assertEqual(len(out), 1)
        self.assertIn(b"DC_EACH_SAFE_QUORUM in dc2", out[0])

    def test_dcs_disagree(self):
        out, each = self.make()
        for _ in range(2):
            each.replica("dc1").complete(A)
            each.replica("dc2").complete(B)
        self.assertEqual(len(out), 1)
        self.assertIn(b"datacenters disagree", out[0])
