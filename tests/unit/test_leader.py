"""
Tests for dynomite.node.leader: the order a leader hands a key's writes
to the other replicas in, around a command that runs once.
"""

from __future__ import annotations

from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands.effects import plan_effect
from dynomite.config.vocabulary import DC_ONE, DC_QUORUM
from dynomite.node.leader import EVERY_RACK, LEAD_LEVELS, Leader, lead_flags, lead_level
from dynomite.placement.router import Router
from dynomite.replication.outbox import DIRECT
from dynomite.wire.inflight import Request
from dynomite.wire.resp import encode_command

from tests.unit.test_router import cluster


class FakeOutbox:
    state = DIRECT

    def __init__(self, name: str, log: List) -> None:
        self.name = name
        self.log = log

    def submit(self, request, sink) -> None:
        self.log.append((self.name, request.payload, sink))

    def flush_batched(self) -> None:
        pass


class SlowRedis:
    """This node's Redis: answers when the test says so."""

    def __init__(self) -> None:
        self.pending = []

    def available(self) -> bool:
        return True

    def send(self, request, sink) -> None:
        self.pending.append((request, sink))


class Sink:
    def __init__(self) -> None:
        self.replies = []

    def complete(self, raw):
        self.replies.append(raw)

    def fail(self, raw):
        self.replies.append(("failed", raw))

    hinted = fail


class LeaderTests(SynchronousTestCase):
    def setUp(self):
        topology = cluster(per_rack=1)
        self.router = Router(topology, None)
        self.local = topology.local.name
        self.log: List = []
        self.outboxes = {n.name: FakeOutbox(n.name, self.log) for n in topology.nodes}
        self.redis = SlowRedis()
        self.leader = Leader(
            self.local, {self.local: self.redis}, self.outboxes,
            reconciler=None, settler=lambda write, level: (lambda raw: raw),
            hint_said_plainly=lambda sink: sink, clock=Clock(),
            remote_tally=[0, 0], local_tally=[0, 0], outcomes=None,
        )
        self.plan = self.router.route(b"s", True, DC_ONE)

    def write(self, *args: bytes) -> Request:
        return Request(encode_command(list(args)), 2, 1, 1, True)

    def test_writes_after_an_effect_wait_for_it_to_reach_the_others(self):
        """SPOP, then SADD of the same member: every other replica gets SREM first, then SADD."""
        spop = [b"SPOP", b"s"]
        self.leader.lead(self.plan, self.write(*spop), Sink(), DC_ONE, self.plan.local[0],
                         effect=plan_effect("spop", spop, [b"s"]))
        self.leader.lead(self.plan, self.write(b"SADD", b"s", b"m1"), Sink(), DC_ONE, self.plan.local[0])
        others = [n.name for n in self.plan.local if n.name != self.local]
        # this node's Redis got SPOP (straight, it runs it) and SADD; the others nothing yet
        self.assertEqual([(name, payload) for name, payload, _ in self.log],
                         [(self.local, encode_command([b"SADD", b"s", b"m1"]))])
        (request, sink), = self.redis.pending
        sink.complete(b"$2\r\nm1\r\n")
        for other in others:
            got = [payload for name, payload, _ in self.log if name == other]
            self.assertEqual(got, [encode_command([b"SREM", b"s", b"m1"]),
                                   encode_command([b"SADD", b"s", b"m1"])], other)

    def test_an_effect_whose_leader_fails_releases_what_follows(self):
        spop = [b"SPOP", b"s"]
        client = Sink()
        self.leader.lead(self.plan, self.write(*spop), client, DC_ONE, self.plan.local[0],
                         effect=plan_effect("spop", spop, [b"s"]))
        self.leader.lead(self.plan, self.write(b"SET", b"s", b"x"), Sink(), DC_ONE, self.plan.local[0])
        (request, sink), = self.redis.pending
        sink.fail(b"-ERR datastore unavailable\r\n")
        self.assertEqual(client.replies, [("failed", b"-ERR datastore unavailable\r\n")])
        self.assertEqual(self.leader.effects_unknown, 1)
        self.assertEqual(len([1 for name, _, _ in self.log if name != self.local]), 2)

    def test_a_leader_whose_redis_has_a_backlog_refuses_what_runs_once(self):
        self.outboxes[self.local].state = "BACKLOG"
        client = Sink()
        self.leader.lead(self.plan, self.write(b"SPOP", b"s"), client, DC_QUORUM, None,
                         effect=plan_effect("spop", [b"SPOP", b"s"], [b"s"]))
        self.assertEqual(client.replies[0][0], "failed")
        self.assertIn(b"runs once", client.replies[0][1])
        self.assertEqual(self.redis.pending, [])

    def test_levels_travel_in_the_flags(self):
        for level in LEAD_LEVELS:
            for effect in (False, True):
                self.assertEqual(lead_level(lead_flags(level, effect)), level)
        self.assertIn(EVERY_RACK, LEAD_LEVELS)
