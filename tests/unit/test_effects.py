"""Tests for dynomite.commands.effects: what the other replicas apply for a command run once."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands.determinism import NOT_DETERMINISTIC
from dynomite.commands.effects import plan_effect, pop_effect
from dynomite.wire.resp import encode_command


def effect(*args: bytes, keys=None):
    name = args[0].decode().lower()
    return plan_effect(name, list(args), keys if keys is not None else [args[1]])


class EffectTests(SynchronousTestCase):
    def test_every_command_that_runs_once_has_an_effect(self):
        for name in NOT_DETERMINISTIC:
            self.assertIsNotNone(plan_effect(name, [name.encode(), b"k", b"1", b"2"], [b"k"]), name)
        self.assertIsNone(plan_effect("set", [b"SET", b"k", b"v"], [b"k"]))

    def test_spop_becomes_srem_of_what_was_popped(self):
        one = effect(b"SPOP", b"s")
        self.assertEqual(one.probe, encode_command([b"SPOP", b"s"]))
        self.assertEqual(one.outcome(b"$1\r\na\r\n"), (b"$1\r\na\r\n", [[b"SREM", b"s", b"a"]]))
        self.assertEqual(one.outcome(b"$-1\r\n"), (b"$-1\r\n", []))
        self.assertEqual(one.outcome(b"_\r\n"), (b"_\r\n", []))
        many = effect(b"SPOP", b"s", b"3")
        raw = b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
        self.assertEqual(many.outcome(raw), (raw, [[b"SREM", b"s", b"a", b"bc"]]))
        resp3 = b"~2\r\n$1\r\na\r\n$2\r\nbc\r\n"
        self.assertEqual(many.outcome(resp3)[1], [[b"SREM", b"s", b"a", b"bc"]])
        self.assertEqual(many.outcome(b"*0\r\n"), (b"*0\r\n", []))
        wrong = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        self.assertEqual(many.outcome(wrong), (wrong, []))

    def test_xadd_travels_with_the_id_redis_assigned(self):
        e = effect(b"XADD", b"x", b"*", b"f", b"v")
        self.assertEqual(e.outcome(b"$15\r\n1700000000000-0\r\n")[1],
                         [[b"XADD", b"x", b"1700000000000-0", b"f", b"v"]])
        e = effect(b"XADD", b"x", b"NOMKSTREAM", b"MAXLEN", b"=", b"10", b"5-*", b"f", b"v")
        self.assertEqual(e.outcome(b"$3\r\n5-2\r\n")[1],
                         [[b"XADD", b"x", b"NOMKSTREAM", b"MAXLEN", b"=", b"10", b"5-2", b"f", b"v"]])
        self.assertEqual(e.outcome(b"$-1\r\n")[1], [])

    def test_approximate_trimming_travels_as_the_streams_state(self):
        for args in ([b"XADD", b"x", b"MAXLEN", b"~", b"10", b"*", b"f", b"v"],
                     [b"XADD", b"x", b"MINID", b"~", b"5", b"LIMIT", b"10", b"*", b"f", b"v"],
                     [b"XTRIM", b"x", b"MAXLEN", b"~", b"10"]):
            e = effect(*args)
            self.assertEqual(e.kind, "state", args)
        self.assertEqual(effect(b"XTRIM", b"x", b"MAXLEN", b"10").outcome(b":3\r\n")[1],
                         [[b"XTRIM", b"x", b"MAXLEN", b"10"]])

    def test_float_increments_travel_as_their_result(self):
        self.assertEqual(effect(b"INCRBYFLOAT", b"f", b"0.1").outcome(b"$3\r\n0.3\r\n")[1],
                         [[b"SET", b"f", b"0.3", b"KEEPTTL"]])
        self.assertEqual(effect(b"HINCRBYFLOAT", b"h", b"a", b"0.1").outcome(b"$3\r\n0.3\r\n")[1],
                         [[b"HSET", b"h", b"a", b"0.3"]])
        self.assertEqual(effect(b"HINCRBYFLOAT", b"h", b"a", b"0.1").outcome(b",0.3\r\n")[1],
                         [[b"HSET", b"h", b"a", b"0.3"]])

    def test_a_script_travels_as_the_state_of_its_keys(self):
        e = effect(b"EVAL", b"return redis.call('SPOP', KEYS[1])", b"2", b"a", b"b", keys=[b"a", b"b"])
        self.assertEqual(e.count, 7)
        self.assertEqual(e.probe, b"".join(encode_command(c) for c in (
            [b"MULTI"], list(e.args), [b"DUMP", b"a"], [b"PEXPIRETIME", b"a"],
            [b"DUMP", b"b"], [b"PEXPIRETIME", b"b"], [b"EXEC"])))
        raw = (b"+OK\r\n" + b"+QUEUED\r\n" * 5
               + b"*5\r\n$1\r\nm\r\n$4\r\n\x00\x01\r\n\r\n:1700000000000\r\n$-1\r\n:-2\r\n")
        reply, commands = e.outcome(raw)
        self.assertEqual(reply, b"$1\r\nm\r\n")
        self.assertEqual(commands, [[b"RESTORE", b"a", b"1700000000000", b"\x00\x01\r\n", b"REPLACE", b"ABSTTL"],
                                    [b"DEL", b"b"]])

    def test_a_script_refused_when_queued_replicates_nothing(self):
        e = effect(b"EVALSHA", b"0" * 40, b"1", b"a", keys=[b"a"])
        raw = (b"+OK\r\n-NOSCRIPT No matching script\r\n+QUEUED\r\n+QUEUED\r\n"
               b"-EXECABORT Transaction discarded because of previous errors.\r\n")
        self.assertEqual(e.outcome(raw), (b"-NOSCRIPT No matching script\r\n", []))

    def test_sort_without_store_replicates_nothing(self):
        self.assertEqual(effect(b"SORT", b"l", keys=[b"l"]).outcome(b"*0\r\n"), (b"*0\r\n", []))
        stored = effect(b"SORT", b"l", b"STORE", b"d", keys=[b"l", b"d"])
        self.assertEqual(stored.keys, [b"d"])

    def test_a_pop_tried_by_a_blocking_command_replicates_only_what_it_popped(self):
        e = pop_effect([b"LPOP", b"q"], [b"q"])
        self.assertEqual(e.outcome(b"$-1\r\n"), (b"$-1\r\n", []))
        self.assertEqual(e.outcome(b"_\r\n"), (b"_\r\n", []))
        self.assertEqual(e.outcome(b"$1\r\nx\r\n"), (b"$1\r\nx\r\n", [[b"LPOP", b"q"]]))
