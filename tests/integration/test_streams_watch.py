"""
XREAD (BLOCK), XREADGROUP, WATCH and WAIT through the shared 1 DC x 3
racks x 2 nodes cluster of real processes (dynomite.node.streams,
dynomite.node.watch): replies as a plain redis-server gives them, a
blocked XREAD woken by an XADD through another node, XREADGROUP leaving
identical stream bytes (DUMP) on every rack, WATCH conflicts from clients
of other nodes.
"""

from __future__ import annotations

import threading
import time
from typing import Any, List, Sequence, Tuple

from tests.integration.fixtures.cases import CONVERGE_TIMEOUT, ClusterTestCase, plain_redis
from tests.integration.fixtures.common import poll
from tests.integration.fixtures.resp import RawConnection, encode_command

#: (command, replies); deterministic (explicit IDs), so byte for byte as Redis.
STREAM_SCRIPT: List[Tuple[Any, ...]] = [
    ("XADD", "{s}a", "1-1", "f", "1"),
    ("XADD", "{s}a", "2-1", "f", "2"),
    ("XADD", "{s}b", "5-0", "g", "x"),
    ("XREAD", "STREAMS", "{s}a", "0"),
    ("XREAD", "COUNT", "1", "STREAMS", "{s}a", "{s}b", "0", "0"),
    ("XREAD", "STREAMS", "{s}a", "$"),
    ("XREAD", "STREAMS", "{s}a"),
    ("XREAD", "BLOCK", "-1", "STREAMS", "{s}a", "0"),
    ("XREAD", "BLOCK", "x", "STREAMS", "{s}a", "0"),
    ("XREAD", "NOPE", "STREAMS", "{s}a", "0"),
    ("XREAD", "BLOCK", "50", "STREAMS", "{s}a", "$"),
    ("XREAD", "BLOCK", "50", "STREAMS", "{s}a", "2-1"),
    ("XGROUP", "CREATE", "{s}a", "g", "0"),
    ("XREADGROUP", "GROUP", "g", "c1", "COUNT", "1", "STREAMS", "{s}a", ">"),
    ("XREADGROUP", "GROUP", "g", "c1", "STREAMS", "{s}a", "0"),
    ("XREADGROUP", "GROUP", "g", "c2", "NOACK", "STREAMS", "{s}a", ">"),
    ("XREADGROUP", "GROUP", "g", "c2", "STREAMS", "{s}a", ">"),
    ("XREADGROUP", "GROUP", "g", "c2", "BLOCK", "50", "STREAMS", "{s}a", ">"),
    ("XREADGROUP", "GROUP", "nogroup", "c", "STREAMS", "{s}a", ">"),
    ("XREADGROUP", "GROUP", "g", "c1", "STREAMS", "{s}a"),
    ("XACK", "{s}a", "g", "1-1"),
    ("XPENDING", "{s}a", "g"),
    ("MULTI",),
    ("XREAD", "COUNT", "1", "STREAMS", "{s}a", "0"),
    ("XADD", "{s}a", "3-1", "f", "3"),
    ("XREADGROUP", "GROUP", "g", "c3", "BLOCK", "1000", "STREAMS", "{s}a", ">"),
    ("EXEC",),
    ("MULTI",),
    ("XREAD", "BLOCK", "1000", "STREAMS", "{s}a", "$"),
    ("EXEC",),
    ("WATCH", "{s}w"),
    ("MULTI",),
    ("WATCH", "{s}w"),
    ("SET", "{s}w", "1"),
    ("EXEC",),
    ("WATCH", "{s}w"),
    ("UNWATCH",),
    ("MULTI",),
    ("GET", "{s}w"),
    ("EXEC",),
]


def run_script(conn: RawConnection, script: Sequence[Tuple[Any, ...]]) -> List[bytes]:
    out = []
    for command in script:
        conn.send(encode_command(*command))
        out.extend(conn.read_replies(1))
    return out


class StreamAndWatchTests(ClusterTestCase):
    def nodes(self):
        return [self.fx.rack_node("dc1", f"rack{i}", j) for i in (1, 2, 3) for j in (0, 1)]

    def compare(self, script, resp: int) -> None:
        plain = plain_redis().raw()
        self.addCleanup(plain.close)
        plain.command("FLUSHALL")
        if resp == 3:
            plain.command("HELLO", "3")
        want = run_script(plain, script)
        node = self.raw(self.fx.nodes[0], resp=resp)
        # replies are compared here, not staleness: at DC_ONE a write whose
        # read target was hinted is acknowledged by another rack, and the
        # next read may miss it (README, consistency levels); quorum writes
        # and reads always overlap
        self.assertEqual(node.command("DYNO_CONFIG:CONN_CONSISTENCY", "DC_QUORUM"), b"+OK\r\n")
        got = run_script(node, script)
        mismatches = ["  %r\n    redis: %r\n    node:  %r" % (c, w, g)
                      for c, w, g in zip(script, want, got) if w != g]
        self.assertEqual(mismatches, [], "RESP%d:\n" % resp + "\n".join(mismatches))

    def test_replies_as_redis_resp2(self):
        self.compare(STREAM_SCRIPT, 2)

    def test_replies_as_redis_resp3(self):
        self.compare(STREAM_SCRIPT, 3)

    def test_xread_block_is_woken_by_an_xadd_through_another_node(self):
        first, other = self.nodes()[0], self.nodes()[3]
        key = self.prefix + "s"
        adder = self.client(other)
        adder.xadd(key, {"old": "1"}, id="1-0")
        reader = self.raw(first)
        reader.send(encode_command("XREAD", "BLOCK", "0", "STREAMS", key, "$"))
        # the blocked client's node still serves another client meanwhile
        time.sleep(0.2)
        self.assertEqual(self.client(first).ping(), True)
        adder.xadd(key, {"new": "2"}, id="2-0")
        reply = reader.read_replies(1)[0]
        self.assertIn(b"2-0", reply)
        self.assertNotIn(b"1-0", reply, "$ is the last ID when XREAD arrived")

    def test_xread_block_times_out_with_null(self):
        conn = self.raw(self.nodes()[2])
        started = time.monotonic()
        self.assertEqual(conn.command("XREAD", "BLOCK", "300", "STREAMS", self.prefix + "none", "$"),
                         b"*-1\r\n")
        self.assertGreaterEqual(time.monotonic() - started, 0.3)

    def test_streams_of_several_replica_sets_answer_crossslot(self):
        conn = self.raw(self.nodes()[0])
        keys = [f"{self.prefix}{i}" for i in range(30)]
        reply = conn.command("XREAD", "STREAMS", *keys, *["0"] * len(keys))
        self.assertEqual(reply, b"-CROSSSLOT Keys in request don't hash to the same node\r\n")

    def test_xreadgroup_leaves_identical_streams_on_every_rack(self):
        key = "{%sg}s" % self.prefix
        nodes = self.nodes()
        c = self.client(nodes[0])
        for i in range(30):
            c.xadd(key, {"n": str(i)}, id=f"{i + 1}-0")
        c.xgroup_create(key, "grp", id="0")
        for i, node in enumerate(nodes * 2):
            cli = self.client(node)
            got = cli.xreadgroup("grp", f"consumer{i % 3}", {key: ">"}, count=2, noack=(i % 4 == 3))
            self.assertTrue(got, node.name)
            # some acknowledged, some re-read from the consumer's own history
            if i % 3 == 0:
                cli.xack(key, "grp", got[0][1][0][0])
            else:
                cli.xreadgroup("grp", f"consumer{i % 3}", {key: "0"}, count=1)
        pipe = self.client(nodes[3]).pipeline(transaction=True)      # inside MULTI too
        pipe.xreadgroup("grp", "inmulti", {key: ">"}, count=1)
        pipe.xadd(key, {"n": "multi"}, id="50-0")
        self.assertEqual(len(pipe.execute()), 2)
        self.client(nodes[5]).xreadgroup("grp", "late", {key: ">"})   # the rest
        blocked = self.raw(nodes[5])
        blocked.send(encode_command("XREADGROUP", "GROUP", "grp", "late", "BLOCK", "0", "STREAMS", key, ">"))
        time.sleep(0.1)
        c.xadd(key, {"n": "last"}, id="100-0")
        self.assertIn(b"100-0", blocked.read_replies(1)[0])

        def dumps():
            return {self.fx.backend(node).dump(key) for node in self.fx.owners(key)}

        self.assertTrue(poll(lambda: len(dumps()) == 1, CONVERGE_TIMEOUT),
                        "stream bytes differ between racks after XREADGROUP through every node")
        self.assertEqual(len(self.fx.owners(key)), 3)

    def test_watch_conflict_from_a_client_of_another_node(self):
        nodes = self.nodes()
        key = "{%sw}k" % self.prefix
        a, b = self.raw(nodes[0]), self.client(nodes[4])
        for changer in (b, None):
            self.assertEqual(a.command("WATCH", key), b"+OK\r\n")
            if changer is not None:
                changer.set(key, "theirs")
            a.send(encode_command("MULTI") + encode_command("SET", key, "mine") + encode_command("EXEC"))
            replies = a.read_replies(3)
            if changer is not None:
                self.assertEqual(replies[2], b"*-1\r\n")
                self.assertEqual(b.get(key), b"theirs")
            else:
                self.assertEqual(replies[2], b"*1\r\n+OK\r\n")
                self.assertEqual(b.get(key), b"mine")

    def test_watch_with_redis_py_optimistic_lock(self):
        """redis-py's transaction(func, *watches) retries until nobody changed the key between."""
        nodes = self.nodes()
        key = "{%sc}n" % self.prefix
        self.client(nodes[0]).set(key, 0)
        errors: List[BaseException] = []

        def increment(node, times):
            c = self.client(node)
            try:
                for _ in range(times):
                    def bump(pipe):
                        value = int(pipe.get(key))
                        pipe.multi()
                        pipe.set(key, value + 1)
                    c.transaction(bump, key)
            except BaseException as e:   # reported below
                errors.append(e)

        threads = [threading.Thread(target=increment, args=(node, 20)) for node in nodes[:4]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        # the last EXEC was acknowledged by its own rack: another rack's read may lag (DC_ONE)
        self.assertTrue(poll(lambda: int(self.client(nodes[5]).get(key)) == 80, CONVERGE_TIMEOUT),
                        "no increment lost: %s" % self.client(nodes[5]).get(key))

    def test_wait_answers_a_clear_error(self):
        reply = self.raw(self.nodes()[0]).command("WAIT", "1", "0")
        self.assertTrue(reply.startswith(b"-ERR WAIT is not served"), reply)
