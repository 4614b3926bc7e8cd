"""
Relative expiries become absolute where a write is accepted, so every
replica, and a hint replayed later, expires the key at the same moment
(dynomite.commands.determinism, through the coordinator).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.cluster.inprocess import expected_owner, make_cluster

LAYOUT = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}


class AbsoluteExpiryTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = make_cluster(self, LAYOUT)
        self.coordinator = self.cluster.node("dc1", "r1")
        self.client = self.cluster.client(self.coordinator)

    def now_ms(self) -> int:
        return int(self.cluster.clock.seconds() * 1000)

    def last_commands(self, key: bytes):
        return [[args for args in node.redis.commands if args[1:2] == [key]][-1]
                for node in self.cluster.nodes]

    def test_every_replica_gets_the_same_absolute_time(self):
        at = self.now_ms() + 100000
        self.assertEqual(self.client.command("SET", "k", "v", "EX", "100"), b"+OK\r\n")
        self.assertEqual(self.last_commands(b"k"), [[b"SET", b"k", b"v", b"PXAT", b"%d" % at]] * 3)
        at = self.now_ms() + 5000
        self.assertEqual(self.client.command("SETEX", "k", "5", "w"), b"+OK\r\n")
        self.assertEqual(self.last_commands(b"k"), [[b"SET", b"k", b"w", b"PXAT", b"%d" % at]] * 3)

    def test_pipelined_relative_expiries_are_rewritten_too(self):
        """SET ... EX cannot travel in a run of the client's own bytes."""
        at = self.now_ms() + 7000
        out = self.client.raw(b"SET a 1\r\nSET b 2 EX 7\r\nSET c 3\r\n"
                              b"*3\r\n$3\r\nSET\r\n$1\r\nd\r\n$1\r\n4\r\n"
                              b"*5\r\n$3\r\nSET\r\n$1\r\ne\r\n$1\r\n5\r\n$2\r\nPX\r\n$4\r\n7000\r\n")
        self.assertEqual(out, b"+OK\r\n" * 5)
        self.assertEqual(self.last_commands(b"b"), [[b"SET", b"b", b"2", b"PXAT", b"%d" % at]] * 3)
        self.assertEqual(self.last_commands(b"e"), [[b"SET", b"e", b"5", b"PXAT", b"%d" % at]] * 3)

    def test_a_hint_replayed_later_keeps_the_original_expiry(self):
        self.client.command("SET", "k", "v")
        away = expected_owner(self.cluster, "dc1", "r2", b"k")
        self.cluster.isolate(away)
        at = self.now_ms() + 60000
        self.assertEqual(self.client.command("EXPIRE", "k", "60"), b":1\r\n")
        self.cluster.advance(30)               # the replica is away for 30 s
        self.cluster.rejoin(away)
        self.assertEqual(self.last_commands(b"k"), [[b"PEXPIREAT", b"k", b"%d" % at]] * 3)
