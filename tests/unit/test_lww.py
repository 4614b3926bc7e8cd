"""
Tests for dynomite.commands.lww (which write wins between datacenters),
dynomite.consistency.hlc (the versions) and dynomite.node.versions (what a
leader sends its own datacenter and the others).
"""

from __future__ import annotations

from typing import Dict, List

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands import lww
from dynomite.commands import table as commands
from dynomite.consistency.hlc import MAX_AHEAD_MS, HybridClock, version_ms
from dynomite.node.versions import Versions, versions_of
from dynomite.replication.applied_once import META_DB
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_TRANSACTION
from dynomite.wire.requests import parse_whole
from dynomite.wire.resp import encode_command

from tests.unit.test_determinism import args

#: Bounded and reproducible: the same examples on every run, nothing stored on disk.
FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def version(ms: int, counter: int = 1, node: str = "n") -> bytes:
    return b"%013d%06d@%s" % (ms, counter, node.encode())


class Store:
    """Versions and members as `lww.decide` asks for them."""

    def __init__(self) -> None:
        self.versions: Dict[bytes, Dict[bytes, bytes]] = {}
        self.members: Dict[bytes, tuple] = {}

    def decide(self, check: lww.Check) -> List[List[bytes]]:
        return lww.decide(check, lambda key: dict(self.versions.get(key, {})),
                          lambda key: self.members.get(key, (b"none", [])))


def check(text: str, at: bytes) -> lww.Check:
    command = args(text)
    cmd = commands.resolve(commands.lookup(command[0]), command) or commands.lookup(command[0])
    kind, layout = lww.kind_of(cmd.name, command)
    checked = lww.parse_check(lww.check_command(kind, layout, commands.keys(cmd, command), command, at, 1000))
    assert checked is not None
    return checked


class HybridClockTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.now = [1_700_000_000_000]
        self.clock = HybridClock("a:1", lambda: self.now[0])

    def test_versions_only_go_forward_and_sort_as_bytes(self) -> None:
        first = self.clock.stamp(3)
        self.assertEqual(first, sorted(first))
        self.now[0] -= 5000   # the wall clock stepped back
        later = self.clock.stamp()[0]
        self.assertGreater(later, first[-1])
        self.assertEqual(version_ms(later), 1_700_000_000_000)

    def test_seeing_a_later_version_moves_the_clock_past_it(self) -> None:
        theirs = version(self.now[0] + 100, 7, "b:1")
        self.assertTrue(self.clock.observe(theirs))
        self.assertGreater(self.clock.stamp()[0], theirs)

    def test_a_version_too_far_ahead_is_refused_and_counted(self) -> None:
        ahead = version(self.now[0] + MAX_AHEAD_MS + 1)
        self.assertFalse(self.clock.observe(ahead))
        self.assertEqual(self.clock.refused, 1)
        self.assertEqual(self.clock.ahead_ms(ahead), MAX_AHEAD_MS + 1)
        self.assertLess(self.clock.stamp()[0], ahead)
        self.now[0] += 2
        self.assertTrue(self.clock.observe(ahead))

    def test_the_counter_rolls_into_the_next_millisecond(self) -> None:
        stamps = self.clock.stamp(1_000_001)
        self.assertEqual(version_ms(stamps[-1]), self.now[0] + 1)
        self.assertEqual(stamps[-2:], sorted(stamps[-2:]))


class KindTests(SynchronousTestCase):

    def test_the_lists_name_real_write_commands(self) -> None:
        writes = {c.name for c in commands._TABLE.values() if c.write}
        writes |= {s.name for c in commands._TABLE.values() for s in c.subcommands.values() if s.write}
        self.assertEqual(set(lww._ALWAYS) - writes, set())
        self.assertEqual(set(lww._FIELDS) - writes, set())

    def test_kinds(self) -> None:
        self.assertEqual(lww.kind_of("set", args("SET k v"))[0], lww.KEY)
        self.assertEqual(lww.kind_of("incrby", args("INCRBY k 2"))[0], lww.ALWAYS)
        self.assertEqual(lww.kind_of("hset", args("HSET h f v")), (lww.FIELD, (2, 2, 0)))
        self.assertEqual(lww.kind_of("zadd", args("ZADD z NX CH 1 a 2 b")), (lww.FIELD, (4, 2, 1)))
        self.assertEqual(lww.kind_of("zadd", args("ZADD z XX INCR 1 a"))[0], lww.ALWAYS)

    def test_the_version_database_is_the_marks_one(self) -> None:
        self.assertEqual(lww.VERSION_DB, META_DB)

    def test_a_check_reads_back_and_nothing_else_does(self) -> None:
        c = check("HSET h f v g w", version(5))
        self.assertEqual((c.kind, c.layout, c.keys, c.args), (lww.FIELD, (2, 2, 0), [b"h"], args("HSET h f v g w")))
        self.assertEqual(c.version, version(5))
        self.assertIsNone(lww.parse_check(args("SET k v")))
        self.assertIsNone(lww.parse_check([b"EVAL", b"return 1", b"0"]))
        self.assertIsNone(lww.parse_check([b"EVALSHA", lww.SHA, b"x"]))
        self.assertIsNone(lww.parse_check([b"EVAL", lww.SCRIPT, b"1", b"k"]))
        self.assertEqual(lww.origin(version(5, node="a:1")), b"a:1")


class DecideTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.store = Store()

    def test_a_newer_whole_key_write_wins_and_replaces_the_versions(self) -> None:
        self.store.versions[b"k"] = {b"": version(5), b"fx": version(6)}
        ran = self.store.decide(check("SET k v", version(7)))
        self.assertEqual(ran[0], args("SET k v"))
        self.assertIn([b"HSET", b"dyno:version:k", b"", version(7)], ran)
        self.assertIn([b"DEL", b"dyno:version:k"], ran)
        self.assertEqual(ran[1], [b"SELECT", b"15"])
        self.assertEqual(ran[-1], [b"SELECT", b"0"])

    def test_an_older_whole_key_write_loses_to_any_newer_version_of_the_key(self) -> None:
        self.store.versions[b"k"] = {b"": version(5), b"fx": version(9)}
        self.assertEqual(self.store.decide(check("RPUSH k a", version(7))), [])
        self.assertEqual(self.store.decide(check("RPUSH k a", version(5))), [])   # a tie never wins twice

    def test_a_write_of_several_keys_wins_everywhere_or_nowhere(self) -> None:
        self.store.versions[b"b"] = {b"": version(9)}
        self.assertEqual(self.store.decide(check("MSET a 1 b 2", version(7))), [])
        self.assertEqual(self.store.decide(check("MSET a 1 b 2", version(10)))[0], args("MSET a 1 b 2"))

    def test_members_are_decided_one_by_one(self) -> None:
        self.store.versions[b"h"] = {b"": version(2), b"ff": version(8)}
        ran = self.store.decide(check("HSET h f old g new", version(5)))
        self.assertEqual(ran[0], args("HSET h g new"))
        self.assertEqual(ran[2], [b"HSET", b"dyno:version:h", b"fg", version(5)])
        self.assertEqual(self.store.decide(check("SREM h f", version(1))), [])   # older than the key

    def test_a_member_write_after_options_keeps_them(self) -> None:
        self.store.versions[b"z"] = {b"fa": version(9)}
        ran = self.store.decide(check("ZADD z GT 1 a 2 b", version(5)))
        self.assertEqual(ran[0], args("ZADD z GT 2 b"))

    def test_an_older_delete_removes_only_the_members_older_than_itself(self) -> None:
        self.store.versions[b"h"] = {b"": version(1), b"fa": version(9), b"fb": version(3)}
        self.store.members[b"h"] = (b"hash", [b"a", b"b", b"c"])
        ran = self.store.decide(check("DEL h", version(5)))
        self.assertEqual(ran[0], [b"HDEL", b"h", b"b", b"c"])
        self.assertIn([b"HDEL", b"dyno:version:h", b"fb", b"fc"], ran)
        self.assertIn([b"HSET", b"dyno:version:h", b"", version(5)], ran)

    def test_a_delete_of_several_keys_is_decided_key_by_key(self) -> None:
        self.store.versions[b"b"] = {b"": version(9)}
        ran = self.store.decide(check("DEL a b", version(5)))
        self.assertEqual(ran[0], args("DEL a"))
        self.assertEqual(self.store.decide(check("DEL b", version(6))), [])

    def test_a_commuting_write_is_applied_once_from_its_origin(self) -> None:
        ran = self.store.decide(check("INCRBY n 2", version(5, node="a")))
        self.assertEqual(ran[0], args("INCRBY n 2"))
        self.assertIn([b"HSET", b"dyno:version:n", b"sa", version(5, node="a")], ran)
        self.store.versions[b"n"] = {b"sa": version(5, node="a")}
        self.assertEqual(self.store.decide(check("INCRBY n 2", version(5, node="a"))), [])   # replayed
        self.assertNotEqual(self.store.decide(check("INCRBY n 2", version(4, node="b"))), [])   # another origin
        self.store.versions[b"n"][b""] = version(6)
        self.assertEqual(self.store.decide(check("INCRBY n 2", version(5, node="b"))), [])   # older than a SET

    def test_notes_of_the_writing_datacenter(self) -> None:
        entries = (lww.note_entries(lww.KEY, (0, 0, 0), [b"k"], args("SET k v"), version(3))
                   + lww.note_entries(lww.FIELD, (2, 1, 0), [b"s"], args("SADD s a b"), version(4)))
        self.assertEqual(lww.note_entries(lww.ALWAYS, (0, 0, 0), [b"n"], args("INCR n"), version(3)), [])
        command = lww.notes_command(entries, 50)
        self.assertEqual(command[:5], [b"EVALSHA", lww.NOTE_SHA, b"2", b"k", b"s"])
        self.assertEqual(lww.noted(command), [
            [b"SELECT", b"15"],
            [b"DEL", b"dyno:version:k"], [b"HSET", b"dyno:version:k", b"", version(3)],
            [b"PEXPIRE", b"dyno:version:k", b"50"],
            [b"HSET", b"dyno:version:s", b"fa", version(4)], [b"HSET", b"dyno:version:s", b"fb", version(4)],
            [b"PEXPIRE", b"dyno:version:s", b"50"],
            [b"SELECT", b"0"]])
        self.assertEqual(lww.noted(args("SET k v")), [])


class VersionsTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.versions = Versions(HybridClock("a:1", lambda: 1_700_000_000_000), 60_000)

    def run_of(self, *texts: str, flags: int = 0) -> Request:
        payload = b"".join(encode_command(args(t)) for t in texts)
        return Request(payload, 2, 3, len(texts), True, flags)

    def test_a_run_gets_notes_here_and_checks_elsewhere(self) -> None:
        notes, elsewhere = self.versions.stamp(self.run_of("SET k v", "INCR n", "HSET h f v"))
        sent, _ = parse_whole(elsewhere.payload)
        checks = [lww.parse_check(c) for c in sent]
        self.assertEqual([c.kind for c in checks], [lww.KEY, lww.ALWAYS, lww.FIELD])
        self.assertEqual(checks[1].args, args("INCR n"))
        self.assertLess(checks[0].version, checks[2].version)
        self.assertEqual((elsewhere.count, elsewhere.lane, elsewhere.resp), (3, 3, 2))
        (command,), _ = parse_whole(notes.payload)
        self.assertEqual(notes.count, 1)   # one command for the whole run
        ran = lww.noted(command)
        self.assertIn([b"HSET", b"dyno:version:k", b"", checks[0].version], ran)
        self.assertIn([b"HSET", b"dyno:version:h", b"ff", checks[2].version], ran)

    def test_commuting_writes_get_no_notes_and_go_as_checks_of_their_origin(self) -> None:
        notes, elsewhere = self.versions.stamp(self.run_of("INCRBY n 2", "PFADD p a"))
        self.assertIsNone(notes)
        sent, _ = parse_whole(elsewhere.payload)
        self.assertEqual([lww.parse_check(c).kind for c in sent], [lww.ALWAYS, lww.ALWAYS])
        self.assertEqual(len(versions_of(sent)), 2)

    def test_keyless_writes_are_sent_as_they_are(self) -> None:
        run = self.run_of("FLUSHALL")
        self.assertEqual(self.versions.stamp(run), (None, run))

    def test_a_transaction_gets_notes_and_goes_elsewhere_as_it_is(self) -> None:
        run = self.run_of("MULTI", "SET k v", "EXEC", flags=FLAG_TRANSACTION)
        notes, elsewhere = self.versions.stamp(run)
        self.assertIs(elsewhere, run)
        self.assertIsNotNone(notes)



_values = st.binary(max_size=12)


class CheckEncodingTests(SynchronousTestCase):
    """The leader's and the other datacenter's fast ways with checks say what the plain ones say."""

    @FUZZ
    @given(st.sampled_from([lww.KEY, lww.FIELD, lww.ALWAYS]),
           st.tuples(st.integers(0, 20), st.integers(0, 3), st.integers(0, 2)),
           st.lists(_values, min_size=1, max_size=3), st.lists(_values, min_size=1, max_size=5),
           _values, st.integers(0, 10 ** 12))
    def test_encode_check_is_the_encoded_check_command(self, kind, layout, keys, write, version, ttl) -> None:
        self.assertEqual(lww.encode_check(kind, layout, keys, version, ttl, encode_command(write), len(write)),
                         encode_command(lww.check_command(kind, layout, keys, write, version, ttl)))

    def test_check_version_reads_what_parse_check_reads(self) -> None:
        """Every argument of a check replaced by each of a few others, and the check cut at every length."""
        for keys in ([b"k"], [b"a", b"b"]):
            for kind in (lww.KEY, lww.FIELD, lww.ALWAYS):
                made = lww.check_command(kind, (2, 2, 0), keys, [b"HSET"] + keys + [b"f", b"v"], b"v1", 60_000)
                mutants = [made[:i] for i in range(len(made) + 1)]
                mutants += [made[:i] + [other] + made[i + 1:] for i in range(len(made))
                            for other in (b"-1", b"-4", b"-9", b"0", b"x", b"99", b"key", b"", b"EVALSHA", lww.SHA, lww.RAN_TAG)]
                for mutant in mutants:
                    parsed = lww.parse_check(mutant)
                    self.assertEqual(lww.check_version(mutant), parsed.version if parsed is not None else None,
                                     mutant)
