"""
Tests for dynomite.commands.determinism: which writes replay as sent, and
relative times made absolute when the coordinator accepts a write.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands import table as commands
from dynomite.commands.determinism import (
    ABSOLUTE_TIME, AS_IS, BLOCKING, NOT_DETERMINISTIC, NOT_SERVED, absolute, longest_as_is,
)

NOW = 1_700_000_000_123


def args(text: str):
    return [part.encode() for part in text.split()]


class ClassesTests(SynchronousTestCase):
    """Every write command of Redis 7.0 says how it replicates, once."""

    def write_commands(self):
        names = set()
        for cmd in commands._TABLE.values():
            if cmd.write:
                names.add(cmd.name)
            names.update(sub.name for sub in cmd.subcommands.values() if sub.write)
        return names

    def test_every_write_command_is_classified(self):
        classes = (AS_IS, ABSOLUTE_TIME, NOT_DETERMINISTIC, BLOCKING, NOT_SERVED)
        known = set().union(*classes)
        self.assertEqual(self.write_commands() - known, set())

    def test_classes_are_disjoint_and_name_real_commands(self):
        classes = (AS_IS, ABSOLUTE_TIME, NOT_DETERMINISTIC, BLOCKING, NOT_SERVED)
        self.assertEqual(sum(len(c) for c in classes), len(set().union(*classes)))
        every = {c.name for c in commands._TABLE.values()}
        every |= {s.name for c in commands._TABLE.values() for s in c.subcommands.values()}
        self.assertEqual(set().union(*classes) - every, set())

    def test_what_the_node_refuses_is_not_served(self):
        for name in NOT_SERVED:
            parent, _, sub = name.partition("|")
            cmd = commands.lookup(parent.encode())
            if sub:
                cmd = cmd.subcommands[sub.encode()]
            self.assertEqual(cmd.route, commands.UNSUPPORTED, name)


class AbsoluteTests(SynchronousTestCase):
    """Each relative-time form becomes its absolute twin at ``NOW``."""

    def check(self, before: str, after: str) -> None:
        self.assertEqual(absolute(before.split()[0].lower(), args(before), NOW), args(after))

    def test_expire_and_pexpire(self):
        self.check("EXPIRE k 10", "PEXPIREAT k %d" % (NOW + 10000))
        self.check("EXPIRE k 10 NX", "PEXPIREAT k %d NX" % (NOW + 10000))
        self.check("EXPIRE k -5", "PEXPIREAT k %d" % (NOW - 5000))
        self.check("PEXPIRE k 1500 GT", "PEXPIREAT k %d GT" % (NOW + 1500))

    def test_setex_and_psetex(self):
        self.check("SETEX k 10 v", "SET k v PXAT %d" % (NOW + 10000))
        self.check("PSETEX k 250 v", "SET k v PXAT %d" % (NOW + 250))

    def test_set_options(self):
        self.check("SET k v EX 10", "SET k v PXAT %d" % (NOW + 10000))
        self.check("set k v nx px 7", "set k v nx PXAT %d" % (NOW + 7))
        self.check("SET k v GET EX 3 XX", "SET k v GET PXAT %d XX" % (NOW + 3000))

    def test_getex(self):
        self.check("GETEX k EX 2", "GETEX k PXAT %d" % (NOW + 2000))
        self.check("GETEX k PX 2", "GETEX k PXAT %d" % (NOW + 2))

    def test_restore(self):
        self.check("RESTORE k 5000 blob REPLACE", "RESTORE k %d blob REPLACE ABSTTL" % (NOW + 5000))

    def test_what_is_already_absolute_or_timeless_stays(self):
        for text in ("SET k v", "SET k v NX", "SET k v KEEPTTL", "SET k v PXAT 5", "SET k v EXAT 5",
                     "GETEX k", "GETEX k PERSIST", "GETEX k EXAT 9", "RESTORE k 0 blob",
                     "RESTORE k 99 blob ABSTTL", "PEXPIREAT k 5", "INCR k"):
            self.check(text, text)

    def test_what_redis_refuses_is_left_to_redis(self):
        """Redis's own error, not a rewritten command that might succeed."""
        for text in ("EXPIRE k abc", "EXPIRE k 1.5", "EXPIRE k +5", "EXPIRE k 99999999999999999999",
                     "SETEX k 0 v", "SETEX k -1 v", "PSETEX k 0 v", "SETEX k x v",
                     "SET k v EX 0", "SET k v EX -3", "SET k v EX", "SET k v EX 5 PX 5",
                     "SET k v EX 5 KEEPTTL", "GETEX k EX 0", "GETEX k EX 1 PERSIST",
                     "RESTORE k -1 blob", "RESTORE k x blob"):
            self.check(text, text)


class RunsTests(SynchronousTestCase):
    """A request that carries a relative time never travels in the client's own bytes."""

    def test_longest_as_is(self):
        self.assertEqual(longest_as_is("set"), 3)
        self.assertEqual(longest_as_is("getex"), 2)
        for name in ("expire", "pexpire", "setex", "psetex", "restore"):
            self.assertEqual(longest_as_is(name), 0)
        self.assertIsNone(longest_as_is("incr"))

    def test_every_rewritten_command_is_bounded_for_runs(self):
        for name in ABSOLUTE_TIME:
            self.assertIsNotNone(longest_as_is(name), name)
