"""
Blocking pops through an in-process cluster (dynomite.node.blocking): they
wait at the node, a push through another node wakes them, what they pop is
replicated like any write, and a client that leaves takes nothing with it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.node.blocking import POLL_INTERVAL

from tests.cluster.inprocess import make_cluster
from tests.cluster.test_runs import pipeline
from tests.cluster.test_write_order import owners_in_every_rack

LAYOUT = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}


class BlockingTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = make_cluster(self, LAYOUT, hash_tag="{}")
        self.waiter = self.cluster.client(self.cluster.nodes[0])
        self.pusher = self.cluster.client(self.cluster.nodes[1])

    def wait(self, seconds: float) -> None:
        steps = int(seconds / POLL_INTERVAL) + 1
        for _ in range(steps):
            self.cluster.advance(POLL_INTERVAL)

    def test_a_push_through_another_node_wakes_the_waiter_and_the_pop_is_replicated(self):
        self.assertEqual(self.waiter.raw(pipeline(("BLPOP", "q1", "q2", "0"))), b"")
        self.wait(0.1)
        self.assertEqual(self.waiter.transport.value(), b"")          # still waiting
        self.assertEqual(self.pusher.command("RPUSH", "q2", "a", "b"), b":2\r\n")
        self.wait(0.1)
        self.assertEqual(self.waiter.transport.value(), b"*2\r\n$2\r\nq2\r\n$1\r\na\r\n")
        for node in owners_in_every_rack(self.cluster, b"q2"):
            self.assertEqual(node.redis.data[b"q2"], [b"b"])

    def test_a_timeout_answers_nil_and_keeps_the_connection(self):
        self.waiter.raw(pipeline(("BRPOP", "empty", "0.5")))
        self.wait(0.3)
        self.assertEqual(self.waiter.transport.value(), b"")
        self.wait(0.4)
        self.assertEqual(self.waiter.transport.value(), b"*-1\r\n")
        self.assertEqual(self.waiter.command("PING"), b"+PONG\r\n")

    def test_later_requests_of_a_blocked_client_wait_for_it(self):
        self.waiter.raw(pipeline(("BLPOP", "q", "0"), ("PING",), ("RPUSH", "q", "mine")))
        self.wait(0.1)
        self.assertEqual(self.waiter.transport.value(), b"")
        self.pusher.command("RPUSH", "q", "x")
        self.wait(0.1)
        self.assertEqual(self.waiter.transport.value(),
                         b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n+PONG\r\n:1\r\n")

    def test_a_client_that_leaves_while_blocked_takes_nothing(self):
        self.waiter.raw(pipeline(("BLPOP", "q", "0")))
        self.wait(0.1)
        self.waiter.protocol.connectionLost(None)
        self.pusher.command("RPUSH", "q", "kept")
        self.wait(0.2)
        for node in owners_in_every_rack(self.cluster, b"q"):
            self.assertEqual(node.redis.data[b"q"], [b"kept"])

    def test_bad_timeouts_are_refused_as_redis_refuses_them(self):
        self.assertEqual(self.waiter.command("BLPOP", "q", "soon"),
                         b"-ERR timeout is not a float or out of range\r\n")
        self.assertEqual(self.waiter.command("BLPOP", "q", "-1"), b"-ERR timeout is negative\r\n")

    def test_blmove_moves_once_something_arrives(self):
        self.waiter.raw(pipeline(("BLMOVE", "{t}src", "{t}dst", "LEFT", "RIGHT", "0")))
        self.pusher.command("RPUSH", "{t}src", "job")
        self.wait(0.1)
        self.assertEqual(self.waiter.transport.value(), b"$3\r\njob\r\n")
