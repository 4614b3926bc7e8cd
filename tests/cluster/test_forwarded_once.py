"""
A FORWARD whose answer was lost is replayed by its sender, and the entry
node, which applied it, does not apply it again (dynomite.node.forwarded).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dynomite.placement.hashing import key_hash
from dynomite.placement.router import leader_turn
from dynomite.replication.outbox import DIRECT
from dynomite.replication.targets import dc_target_name
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_REPLAY, FLAG_SEQUENCED, FORWARD, sequenced_payload
from dynomite.wire.resp import encode_command

from tests.cluster.inprocess import make_cluster
from tests.fakes import RecordingSink as Sink


class ForwardedOnceTests(SynchronousTestCase):

    def setUp(self):
        self.cluster = make_cluster(self, {"dc1": {"r1": 1}, "dc2": {"r1": 1}})
        self.sender = self.cluster.node("dc1", "r1")
        self.entry = self.cluster.node("dc2", "r1")
        self.outbox = self.sender.outboxes[dc_target_name("dc2")]

    def lost_answer(self, *command) -> None:
        """
        ``command`` reaches the entry and is applied there, and its answer
        is lost with the connection: the sender keeps the FORWARD as a hint
        and replays it once the link is back.
        """
        self.cluster.hold(self.sender, self.entry)
        self.cluster.client(self.sender).command(*command)
        [pump] = [p for p, source, target in self.cluster.pumps
                  if (source, target) == (self.sender, self.entry)]
        self.assertTrue(pump.pump(), "no FORWARD left")    # delivered: the entry applies it and answers
        self.assertEqual(len(self.outbox._direct), 1)
        pump.serverIO.getOutBuffer()                       # the answer is lost on the way back
        self.cluster.release(self.sender, self.entry)
        self.cluster.cut([self.sender], [self.entry])      # and the connection with it
        self.assertGreater(self.outbox.hints.pending, 0, "the sender hinted nothing")
        self.cluster.mend()
        for _ in range(60):
            self.cluster.advance(0.5)                      # links come back, the sender replays its hint
            if self.outbox.state == DIRECT and self.outbox.hints.pending == 0:
                break
        self.assertEqual((self.outbox.state, self.outbox.hints.pending), (DIRECT, 0))
        self.assertGreater(self.outbox.replayed_total, 0, "nothing was replayed")

    def test_an_incr_replayed_after_a_lost_answer_counts_once(self):
        self.lost_answer("INCR", "n")
        self.assertEqual(self.sender.redis.data[b"n"], b"1")
        self.assertEqual(self.entry.redis.data[b"n"], b"1")
        self.assertGreater(self.entry.parts.replica.forwarded.skipped, 0)

    def test_an_rpush_replayed_after_a_lost_answer_is_pushed_once(self):
        self.lost_answer("RPUSH", "l", "x")
        self.assertEqual(self.entry.redis.data[b"l"], [b"x"])


class OlderEntryTests(SynchronousTestCase):
    def test_an_entry_that_predates_numbered_forwards_gets_the_writes_alone(self):
        cluster = make_cluster(self, {"dc1": {"r1": 1}, "dc2": {"r1": 1}})
        sender, entry = cluster.node("dc1", "r1"), cluster.node("dc2", "r1")
        seen = []
        handle = entry.parts.replica.handle_peer_request

        def watched(peer_name, frame_type, request, sink):
            seen.append(request.flags & FLAG_SEQUENCED)
            handle(peer_name, frame_type, request, sink)

        entry.parts.replica.handle_peer_request = watched
        for protocol in sender.peers[entry.name].connections:
            protocol.numbered_forwards = False   # as a node from before them: no number in front
        cluster.client(sender).command("RPUSH", "l", "x")
        cluster.settle()
        self.assertEqual((seen, entry.redis.data[b"l"]), ([0], [b"x"]))
        for protocol in sender.peers[entry.name].connections:
            protocol.numbered_forwards = True
        cluster.client(sender).command("RPUSH", "l", "y")
        cluster.settle()
        self.assertEqual((seen, entry.redis.data[b"l"]), ([0, FLAG_SEQUENCED], [b"x", b"y"]))


class ReplayWhileInFlightTests(SynchronousTestCase):
    """A replay that reaches the entry while the write is still being applied there waits for it."""

    def test_the_replay_gets_the_outcome_of_the_write_in_flight(self):
        cluster = make_cluster(self, {"dc1": {"r1": 1}, "dc2": {"r1": 1, "r2": 1}})
        sender, entry, leader = cluster.node("dc1", "r1"), cluster.node("dc2", "r1"), cluster.node("dc2", "r2")
        key = next(b"w%d" % i for i in range(1000) if leader_turn(key_hash(b"w%d" % i), 2) == 1)
        write = encode_command([b"INCR", key])
        original, replay = Sink(), Sink()
        cluster.hold(entry, leader)   # the entry's LEAD waits on the way
        replica = entry.parts.replica
        replica.handle_peer_request(sender.name, FORWARD,
                                    Request(sequenced_payload(77, write), 2, 0, 1, True, FLAG_SEQUENCED), original)
        replica.handle_peer_request(sender.name, FORWARD,
                                    Request(sequenced_payload(77, write), 2, 0, 1, True,
                                            FLAG_SEQUENCED | FLAG_REPLAY), replay)
        self.assertEqual((original.calls, replay.calls, replica.forwarded.waited), ([], [], 1))
        cluster.release(entry, leader)
        self.assertEqual([kind for kind, _ in original.calls + replay.calls], ["complete", "complete"])
        self.assertEqual((entry.redis.data[key], leader.redis.data[key]), (b"1", b"1"))



#: Bounded and reproducible: the same examples on every run, nothing stored on disk.
FUZZ = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_writes = st.lists(st.sampled_from([encode_command([b"INCR", b"h"]), encode_command([b"RPUSH", b"q", b"x"]),
                                    encode_command([b"SET", b"s", b"v"]), b"*1\r\n$4\r\nPING\r\n",
                                    b"garbage\r\n", b"*2\r\n$3\r\nGET\r\n"]), min_size=0, max_size=4)


class HostileForwardTests(SynchronousTestCase):
    """Whatever FORWARD a peer sends, numbered or not, the entry answers it once and keeps serving."""

    def setUp(self):
        self.cluster = make_cluster(self, {"dc1": {"r1": 1}, "dc2": {"r1": 1}})
        self.sender, self.entry = self.cluster.node("dc1", "r1"), self.cluster.node("dc2", "r1")

    @FUZZ
    @given(_writes, st.integers(-1, 3), st.one_of(st.none(), st.integers(0, 40)), st.booleans(),
           st.one_of(st.none(), st.binary(max_size=10)))
    def test_every_forward_is_answered_once(self, writes, count_error, number, replay, garbage):
        payload = b"".join(writes)
        flags = 0
        if number is not None:
            flags |= FLAG_SEQUENCED | (FLAG_REPLAY if replay else 0)
            # the number in front, or bytes of any length where it should be
            head = sequenced_payload(number, b"") if garbage is None else garbage
            payload = head + payload
        sink = Sink()
        request = Request(payload, 2, 0, max(1, len(writes) + count_error), True, flags)
        self.entry.parts.replica.handle_peer_request(self.sender.name, FORWARD, request, sink)
        self.cluster.settle()
        self.assertEqual(len(sink.calls), 1, sink.calls)
        self.assertEqual(self.cluster.client(self.entry).command("PING"), b"+PONG\r\n")
