"""
Runs of pipelined requests (dynomite.runs): reconciled as the requests
would be one by one, and carried whole through datastore, outbox and peers.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from dynomite.consistency.quorum import DC_ONE, DC_QUORUM, DC_SAFE_QUORUM, Reconciler
from dynomite.wire.resp import encode_command
from dynomite.consistency.runs import RunReconciler

from tests.cluster.inprocess import expected_owner, make_cluster, owners

REPLIES = [b"+OK\r\n", b"$1\r\na\r\n", b"$1\r\nb\r\n", b"$-1\r\n", b"-WRONGTYPE wrong kind\r\n",
           b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n", b"*2\r\n$1\r\ny\r\n$1\r\nx\r\n"]
DOWN = b"-ERR peer 127.0.0.2:8101 unavailable\r\n"
HINTED = b"-HINTED write for 127.0.0.3:8101 stored as a hint (unavailable)\r\n"


def unordered(raw: bytes) -> object:
    return tuple(sorted(raw.split(b"\r\n"))) if raw.startswith(b"*") else raw


class RunReconcilerModelTests(SynchronousTestCase):
    """A run's outcome is the joined outcomes of its requests reconciled one by one."""

    def check(self, rng: random.Random, level: str) -> None:
        total = rng.choice([1, 2, 3, 5])
        count = rng.randint(2, 6)
        normalise = unordered if rng.random() < 0.5 else None
        # each replica answers the whole run, or fails it
        answers = []
        for _ in range(total):
            if rng.random() < 0.25:
                answers.append(None)
            elif answers and answers[-1] is not None and rng.random() < 0.5:
                answers.append(list(answers[-1]))   # agrees with the previous replica
            else:
                answers.append([rng.choice(REPLIES) for _ in range(count)])
        order = list(range(total))
        rng.shuffle(order)
        failure = rng.choice([DOWN, HINTED])
        settle = (lambda raw: b"-ERR settled\r\n" if raw.startswith(b"-HINTED") else raw)

        got = []
        tally = [0, 0]
        run = RunReconciler(level, total, count, got.append, normalise, tally, settle)
        sinks = [run.replica() for _ in range(total)]
        expected = []
        singles = [Reconciler(level, total, lambda raw, i=i: expected.append((i, settle(raw))), normalise)
                   for i in range(count)]
        for r in order:
            if answers[r] is None:
                sinks[r].fail(failure)
                for rec in singles:
                    if not rec.finished:
                        rec.failure(failure)
            else:
                sinks[r].complete(b"".join(answers[r]))
                for i, rec in enumerate(singles):
                    if not rec.finished:
                        rec.answer(answers[r][i])
        self.assertEqual(len(got), 1, (level, total, count, answers, order))
        self.assertEqual(got[0], b"".join(raw for _, raw in sorted(expected)),
                         (level, total, count, answers, order))
        answered = sum(1 for a in answers if a is not None)
        self.assertEqual(tally, [answered * count, (total - answered) * count])

    def test_random_runs_at_every_level(self):
        rng = random.Random(20261126)
        for _ in range(3000):
            self.check(rng, rng.choice([DC_ONE, DC_QUORUM, DC_SAFE_QUORUM]))

    def test_agreeing_replicas_decide_without_splitting(self):
        got = []
        run = RunReconciler(DC_QUORUM, 3, 2, got.append)
        a, b, _ = run.replica(), run.replica(), run.replica()
        a.complete(b"+OK\r\n+OK\r\n")
        self.assertEqual(got, [])
        b.complete(b"+OK\r\n+OK\r\n")
        self.assertEqual(got, [b"+OK\r\n+OK\r\n"])

    def test_a_replica_with_the_wrong_number_of_replies_counts_as_failed(self):
        got = []
        run = RunReconciler(DC_QUORUM, 3, 2, got.append)
        a, b, c = run.replica(), run.replica(), run.replica()
        a.complete(b"+OK\r\n")
        b.complete(b"+OK\r\n+OK\r\n")
        c.complete(b"+OK\r\n+OK\r\n")
        self.assertEqual(got, [b"+OK\r\n+OK\r\n"])


def pipeline(*commands) -> bytes:
    return b"".join(encode_command([a if isinstance(a, bytes) else str(a).encode() for a in c])
                    for c in commands)


class InProcessRunTests(SynchronousTestCase):
    """Runs through real PeerLinks between in-process nodes."""

    def setUp(self):
        self.cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1, "r3": 1}})
        self.node = self.cluster.nodes[0]
        self.client = self.cluster.client(self.node)

    def peer_requests(self) -> int:
        return sum(link.requests_total for link in self.node.peers.values())

    def test_a_pipeline_of_writes_is_one_request_per_replica(self):
        """
        The writes this node leads go as one run to each other rack; those
        other racks lead go as one LEAD run to each of them.
        """
        before = self.peer_requests()
        sets = [("SET", "k%d" % i, "v%d" % i) for i in range(50)]
        replies = self.client.raw(pipeline(*sets))
        self.assertEqual(replies, b"+OK\r\n" * 50)
        self.assertEqual(self.peer_requests() - before, 4)
        for i in range(50):
            self.assertEqual(len(owners(self.cluster, b"k%d" % i)), 3)

    def test_quorum_run_with_one_replica_disagreeing_is_decided_per_request(self):
        self.client.raw(pipeline(*[("SET", "k%d" % i, "good") for i in range(10)]))
        stale = expected_owner(self.cluster, "dc1", "r2", b"k3")
        stale.redis.data[b"k3"] = b"bad"
        self.client.consistency("DC_QUORUM")
        replies = self.client.raw(pipeline(*[("GET", "k%d" % i) for i in range(10)]))
        self.assertEqual(replies, b"$4\r\ngood\r\n" * 10)
        self.client.consistency("DC_SAFE_QUORUM")
        expected_owner(self.cluster, "dc1", "r3", b"k3").redis.data[b"k3"] = b"other"
        replies = self.client.raw(pipeline(*[("GET", "k%d" % i) for i in range(10)]))
        self.assertEqual(replies.count(b"$4\r\ngood\r\n"), 9)
        self.assertIn(b"-ERR DC_SAFE_QUORUM: at most 1 of 3 replicas agreed", replies)

    def test_mixed_pipeline_keeps_its_order(self):
        commands = ([("SET", "a%d" % i, i) for i in range(5)] + [("PING",)]
                    + [("GET", "a%d" % i) for i in range(5)] + [("MGET", "a0", "a4")]
                    + [("SET", "a1", "x"), ("SET", "a1", "y"), ("NOSUCH",), ("GET", "a1")])
        replies = self.client.raw(pipeline(*commands))
        self.assertEqual(replies, b"+OK\r\n" * 5 + b"+PONG\r\n"
                         + b"".join(b"$1\r\n%d\r\n" % i for i in range(5))
                         + b"*2\r\n$1\r\n0\r\n$1\r\n4\r\n"
                         + b"+OK\r\n+OK\r\n"
                         + b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n"
                         + b"$1\r\ny\r\n")

    def test_a_run_to_an_unreachable_replica_fails_there_only(self):
        away = expected_owner(self.cluster, "dc1", "r3", b"x")
        self.cluster.isolate(away)
        replies = self.client.raw(pipeline(*[("SET", "h%d" % i, "v") for i in range(20)]))
        self.assertEqual(replies, b"+OK\r\n" * 20)
        for i in range(20):
            self.assertEqual(len(owners(self.cluster, b"h%d" % i)), 2)
            self.assertNotIn(b"h%d" % i, away.redis.data)

    def test_a_run_every_replica_fails_gets_one_error_per_request(self):
        for node in self.cluster.nodes:
            node.redis.down = True
        replies = self.client.raw(pipeline(*[("SET", "f%d" % i, "v") for i in range(4)]))
        self.assertEqual(replies.count(b"-ERR DC_ONE: none of 3 replicas answered"), 4, replies)
        self.assertEqual(replies.count(b"\r\n"), 4)


class InProcessTwoDatacenterRunTests(SynchronousTestCase):
    def test_a_run_reaches_every_rack_of_the_other_datacenter(self):
        cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1}, "dc2": {"r1": 2, "r2": 1}})
        client = cluster.client(cluster.node("dc1", "r1"))
        replies = client.raw(pipeline(*[("SET", "x%d" % i, "v%d" % i) for i in range(30)]))
        self.assertEqual(replies, b"+OK\r\n" * 30)
        cluster.settle()
        for i in range(30):
            key = b"x%d" % i
            for rack in ("r1", "r2"):
                self.assertEqual(expected_owner(cluster, "dc2", rack, key).redis.data.get(key),
                                 b"v%d" % i)

    def test_the_entry_node_applies_a_forwarded_run_as_runs(self):
        cluster = make_cluster(self, {"dc1": {"r1": 1}, "dc2": {"r1": 1, "r2": 1}})
        entry = cluster.node("dc2", "r1")
        other = cluster.node("dc2", "r2")
        before = entry.peers[other.name].requests_total
        client = cluster.client(cluster.node("dc1", "r1"))
        self.assertEqual(client.raw(pipeline(*[("SET", "y%d" % i, "w") for i in range(25)])),
                         b"+OK\r\n" * 25)
        cluster.settle()
        # one run of the writes the entry leads, one LEAD run of the others'
        self.assertEqual(entry.peers[other.name].requests_total - before, 2)
        for node in (entry, other):
            self.assertEqual(sum(1 for i in range(25) if node.redis.data.get(b"y%d" % i) == b"w"), 25)


class RunsFollowSessionChangesTests(SynchronousTestCase):
    def test_a_consistency_change_in_the_middle_of_a_pipeline_applies_to_what_follows(self):
        cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1}, "dc2": {"r1": 1, "r2": 1}})
        client = cluster.client(cluster.node("dc1", "r1"))
        client.raw(pipeline(*[("SET", "e%d" % i, "v") for i in range(4)]))
        cluster.settle()
        expected_owner(cluster, "dc2", "r1", b"e2").redis.data[b"e2"] = b"other"
        replies = client.raw(pipeline(
            ("GET", "e0"), ("GET", "e1"),
            ("DYNO_CONFIG:CONN_CONSISTENCY", "DC_EACH_SAFE_QUORUM"),
            ("GET", "e0"), ("GET", "e1"), ("GET", "e2"), ("GET", "e3"),
            ("DYNO_CONFIG:CONN_CONSISTENCY", "DC_ONE"),
            ("GET", "e2"), ("GET", "e3")))
        self.assertEqual(replies.count(b"$1\r\nv\r\n"), 7, replies)
        self.assertEqual(replies.count(b"+OK\r\n"), 2)
        self.assertEqual(replies.count(b"-ERR DC_EACH_SAFE_QUORUM"), 1, replies)

    def test_requests_after_auth_in_the_same_read_run_authenticated(self):
        cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1}}, requirepass="secret")
        client = cluster.client(cluster.node("dc1", "r1"))
        replies = client.raw(pipeline(("SET", "a", "1"), ("AUTH", "secret"),
                                      *[("SET", "k%d" % i, "v") for i in range(5)]))
        self.assertEqual(replies, b"-NOAUTH Authentication required.\r\n" + b"+OK\r\n" * 6)
