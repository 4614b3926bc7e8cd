"""dynomite.node.watch_table: versions of watched keys at their leader."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.node.watch_table import WatchTable
from dynomite.wire.resp import encode_command


def versions(table, keys):
    return dict(zip(keys, table.watch(keys)))


class WatchTableTests(SynchronousTestCase):
    def test_nothing_is_kept_or_parsed_while_nobody_watches(self):
        table = WatchTable(incarnation=b"i")
        self.assertFalse(table.active)
        held = versions(table, [b"a"])
        self.assertTrue(table.active)
        table.release([b"a"])
        self.assertFalse(table.active)
        self.assertFalse(table.unchanged(b"i", held), "a released key is no longer vouched for")

    def test_a_write_of_a_watched_key_moves_its_version_only(self):
        table = WatchTable(incarnation=b"i")
        held = versions(table, [b"a", b"b"])
        table.touched(encode_command([b"SET", b"c", b"1"]))
        self.assertTrue(table.unchanged(b"i", held))
        table.touched(encode_command([b"MSET", b"x", b"1", b"b", b"2"]))
        self.assertFalse(table.unchanged(b"i", held))
        self.assertTrue(table.unchanged(b"i", {b"a": held[b"a"]}))

    def test_flushall_and_unparsable_writes_move_everything(self):
        for payload in (encode_command([b"FLUSHALL"]), b"garbage"):
            table = WatchTable(incarnation=b"i")
            held = versions(table, [b"a"])
            table.touched(payload)
            self.assertFalse(table.unchanged(b"i", held), payload)

    def test_another_incarnation_is_refused(self):
        table = WatchTable(incarnation=b"i")
        held = versions(table, [b"a"])
        self.assertFalse(table.unchanged(b"j", held))

    def test_an_evicted_key_added_again_never_matches_an_old_version(self):
        table = WatchTable(limit=1, incarnation=b"i")
        held = versions(table, [b"a"])
        versions(table, [b"b"])            # evicts a
        table.touched(encode_command([b"SET", b"a", b"1"]))   # not counted: a is not in the table
        versions(table, [b"a"])            # a again, with a new version
        self.assertFalse(table.unchanged(b"i", held))

    def test_serve_and_admit(self):
        table = WatchTable(incarnation=b"i")
        reply = table.serve(encode_command([b"DYNO_WATCH", b"a"]))
        self.assertEqual(reply, b"$3\r\ni 1\r\n")
        self.assertEqual(table.serve(encode_command([b"DYNO_UNWATCH", b"i", b"a", b"1"])), b":1\r\n")
        self.assertEqual(table.serve(b"*1\r\n$4\r\nNOPE\r\n"), b"-ERR malformed watch request\r\n")
