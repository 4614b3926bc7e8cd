"""
Against a real redis-server: each relative-time write and its absolute
rewrite (dynomite.commands.determinism) answer the same and leave the same
expiry, so rewriting at the coordinator changes nothing a client sees.
"""

from __future__ import annotations

import time

from twisted.trial import unittest

from dynomite.commands.determinism import absolute
from tests.integration.fixtures.cases import plain_redis

# Slack between running the original and its rewrite, in ms.
SLACK_MS = 1000

# (setup commands, the command; "K" stands for the key)
CASES = [
    ([], "EXPIRE K 100"),
    ([["SET", "K", "v"]], "EXPIRE K 100"),
    ([["SET", "K", "v"]], "EXPIRE K 100 NX"),
    ([["SET", "K", "v", "EX", "50"]], "EXPIRE K 100 LT"),
    ([["SET", "K", "v", "EX", "50"]], "EXPIRE K 100 GT"),
    ([["SET", "K", "v"]], "EXPIRE K -1"),
    ([["SET", "K", "v"]], "PEXPIRE K 100000"),
    ([], "SETEX K 100 v"),
    ([], "PSETEX K 100000 v"),
    ([], "SET K v EX 100"),
    ([["SET", "K", "old"]], "SET K v GET PX 100000"),
    ([["SET", "K", "old"]], "SET K v NX EX 100"),
    ([["SET", "K", "old"]], "SET K v XX EX 100"),
    ([["SET", "K", "v"]], "GETEX K EX 100"),
    ([], "GETEX K PX 100000"),
    ([["LPUSH", "K", "x"]], "SETEX K 100 v"),
    ([["LPUSH", "K", "x"]], "GETEX K EX 100"),
]


class AbsoluteExpiryAgainstRedisTests(unittest.TestCase):
    def setUp(self):
        self.redis = plain_redis()
        self.redis.reset()
        self.conn = self.redis.raw()
        self.addCleanup(self.conn.close)

    def run_case(self, key: str, setup, args):
        for command in setup:
            self.conn.command(*[key if a == "K" else a for a in command])
        reply = self.conn.command(*[key.encode() if a == b"K" else a for a in args])
        return reply, self.conn.command("PTTL", key)

    def pttl(self, raw: bytes) -> int:
        return int(raw[1:-2])

    def test_rewrites_answer_and_expire_like_the_original(self):
        for i, (setup, text) in enumerate(CASES):
            original = [part.encode() for part in text.split()]
            rewritten = list(absolute(original[0].decode().lower(), original, int(time.time() * 1000)))
            self.assertNotEqual(rewritten, original, text)
            reply_a, ttl_a = self.run_case("a%d" % i, setup, original)
            reply_b, ttl_b = self.run_case("b%d" % i, setup, rewritten)
            self.assertEqual(reply_a, reply_b, text)
            if self.pttl(ttl_a) < 0 or self.pttl(ttl_b) < 0:
                self.assertEqual(ttl_a, ttl_b, text)
            else:
                self.assertLess(abs(self.pttl(ttl_a) - self.pttl(ttl_b)), SLACK_MS, text)

    def test_restore_with_a_relative_ttl(self):
        self.conn.command("SET", "src", "value")
        payload = self.conn.command("DUMP", "src")
        blob = payload[payload.index(b"\r\n") + 2:-2]
        original = [b"RESTORE", b"K", b"100000", blob, b"REPLACE"]
        rewritten = list(absolute("restore", original, int(time.time() * 1000)))
        self.assertIn(b"ABSTTL", rewritten)
        reply_a, ttl_a = self.run_case("ra", [], original)
        reply_b, ttl_b = self.run_case("rb", [], rewritten)
        self.assertEqual((reply_a, reply_b), (b"+OK\r\n", b"+OK\r\n"))
        self.assertLess(abs(self.pttl(ttl_a) - self.pttl(ttl_b)), SLACK_MS)
