"""
Integration tests: a real node (``twistd -n dynomite``) in front of a real,
fresh redis-server, driven the way users drive it: redis-py 8 in both
protocols, raw sockets, and signals to the datastore.

Each test asserts behaviour a user would notice.  Nodes are shared between
test classes with the same configuration (see ``harness.FixtureCache``) and
the datastore is flushed directly before every test; tests that hurt their
processes start their own.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry
from twisted.trial import unittest

from tests.integration import harness
from tests.integration.harness import (
    NodeFixture,
    RawConnection,
    decode_reply,
    encode_command,
)

PASSWORD = "s3cret-pw"


class _NodeTestCase(unittest.TestCase):
    """Gives each test ``self.node`` and ``self.redis`` from a shared fixture."""

    node_overrides: Dict[str, Any] = {}

    def setUp(self) -> None:
        overrides = dict(self.node_overrides)
        key = repr(sorted(overrides.items()))

        def factory() -> NodeFixture:
            tmp = tempfile.mkdtemp(prefix="shared-node-", dir=os.getcwd())
            return NodeFixture(tmp, **overrides)

        self.fixture = harness.shared_fixtures.get(key, factory)
        self.fixture.reset()
        self.node = self.fixture.node
        self.redis = self.fixture.redis

    def raw(self, proc: Any = None, timeout: float = 5.0) -> RawConnection:
        conn = (proc or self.node).raw(timeout=timeout)
        self.addCleanup(conn.close)
        return conn

    def client(self, proc: Any = None, **kw: Any) -> redis.Redis:
        c = (proc or self.node).client(**kw)
        self.addCleanup(c.close)
        return c

    def direct(self) -> redis.Redis:
        """A RESP2 client straight to the datastore, bypassing the node."""
        return self.client(self.redis, protocol=2)

    def assertErrorReply(self, raw: bytes, *fragments: str) -> None:
        """``raw`` is an error reply containing every fragment (case-insensitive)."""
        self.assertTrue(raw.startswith(b"-") or raw.startswith(b"!"), f"not an error: {raw!r}")
        text = raw.decode("utf-8", "replace").lower()
        for fragment in fragments:
            self.assertIn(fragment.lower(), text, f"{fragment!r} not in {raw!r}")


# ---------------------------------------------------------------------------
# data types through redis-py, in both protocols


class _DataTypesMixin:
    """The same scenarios for RESP2 (``protocol=2``) and redis-py's default (RESP3)."""

    protocol: Optional[int] = None

    def c(self) -> redis.Redis:
        kw = {} if self.protocol is None else {"protocol": self.protocol}
        return self.client(**kw)  # type: ignore[attr-defined]

    def test_strings(self) -> None:
        r = self.c()
        self.assertTrue(r.set("s", "hello"))
        self.assertEqual(r.get("s"), b"hello")
        self.assertIsNone(r.get("missing"))
        self.assertEqual(r.append("s", " world"), 11)
        self.assertEqual(r.getrange("s", 0, 4), b"hello")
        self.assertEqual(r.strlen("s"), 11)
        self.assertEqual(r.incr("n"), 1)
        self.assertEqual(r.incrby("n", 41), 42)
        self.assertEqual(r.decr("n"), 41)
        self.assertEqual(r.incrbyfloat("f", 1.5), 1.5)
        self.assertTrue(r.setex("e", 100, "v"))
        self.assertTrue(0 < r.ttl("e") <= 100)
        self.assertEqual(r.ttl("s"), -1)
        self.assertIsNone(r.set("s", "other", nx=True))
        self.assertEqual(r.getset("s", "new"), b"hello world")
        self.assertTrue(r.mset({"m1": "a", "m2": "b"}))
        self.assertEqual(r.mget("m1", "missing", "m2"), [b"a", None, b"b"])
        with self.assertRaises(redis.exceptions.ResponseError) as cm:  # type: ignore[attr-defined]
            r.incr("s")
        self.assertIn("not an integer", str(cm.exception))

    def test_hashes(self) -> None:
        r = self.c()
        self.assertEqual(r.hset("h", mapping={"a": "1", "b": "2"}), 2)
        self.assertEqual(r.hgetall("h"), {b"a": b"1", b"b": b"2"})
        self.assertEqual(r.hgetall("nohash"), {})
        self.assertEqual(r.hget("h", "a"), b"1")
        self.assertEqual(r.hmget("h", "a", "x", "b"), [b"1", None, b"2"])
        self.assertEqual(r.hincrby("h", "a", 5), 6)
        self.assertTrue(r.hexists("h", "b"))
        self.assertEqual(r.hdel("h", "b", "x"), 1)
        self.assertEqual(r.hlen("h"), 1)
        self.assertEqual(r.hkeys("h"), [b"a"])

    def test_lists(self) -> None:
        r = self.c()
        self.assertEqual(r.rpush("l", "a", "b", "c"), 3)
        self.assertEqual(r.lpush("l", "z"), 4)
        self.assertEqual(r.lrange("l", 0, -1), [b"z", b"a", b"b", b"c"])
        self.assertEqual(r.llen("l"), 4)
        self.assertEqual(r.lindex("l", 1), b"a")
        self.assertTrue(r.lset("l", 1, "A"))
        self.assertEqual(r.lpop("l"), b"z")
        self.assertEqual(r.rpop("l", 2), [b"c", b"b"])
        self.assertEqual(r.lrange("l", 0, -1), [b"A"])
        self.assertIsNone(r.lpop("nolist"))

    def test_sets(self) -> None:
        r = self.c()
        self.assertEqual(r.sadd("s", "x", "y", "z"), 3)
        self.assertEqual(r.sadd("s", "x"), 0)
        self.assertEqual(r.smembers("s"), {b"x", b"y", b"z"})
        self.assertTrue(r.sismember("s", "y"))
        self.assertFalse(r.sismember("s", "w"))
        self.assertEqual(r.srem("s", "y", "w"), 1)
        self.assertEqual(r.scard("s"), 2)
        self.assertEqual(r.smembers("noset"), set())

    def test_sorted_sets(self) -> None:
        r = self.c()
        self.assertEqual(r.zadd("z", {"m1": 1.5, "m2": 2, "m3": -1}), 3)
        got = r.zrange("z", 0, -1, withscores=True)
        self.assertEqual([tuple(x) for x in got], [(b"m3", -1.0), (b"m1", 1.5), (b"m2", 2.0)])
        score = r.zscore("z", "m1")
        self.assertIsInstance(score, float)
        self.assertEqual(score, 1.5)
        self.assertIsNone(r.zscore("z", "nope"))
        self.assertEqual(r.zincrby("z", 1, "m1"), 2.5)
        self.assertEqual(r.zrank("z", "m1"), 2)
        self.assertEqual(r.zrangebyscore("z", 0, 10), [b"m2", b"m1"])
        self.assertEqual(r.zrevrange("z", 0, 0), [b"m1"])
        self.assertEqual(r.zrem("z", "m3"), 1)
        self.assertEqual(r.zcard("z"), 2)

    def test_generic(self) -> None:
        r = self.c()
        r.set("a", "1")
        r.rpush("b", "x")
        self.assertEqual(r.exists("a", "b", "c"), 2)
        self.assertEqual(r.type("a"), b"string")
        self.assertEqual(r.type("b"), b"list")
        self.assertEqual(r.type("c"), b"none")
        self.assertTrue(r.expire("a", 100))
        self.assertTrue(0 < r.ttl("a") <= 100)
        self.assertTrue(r.persist("a"))
        self.assertEqual(r.ttl("a"), -1)
        self.assertEqual(r.ttl("c"), -2)
        self.assertTrue(r.rename("a", "a2"))
        self.assertEqual(r.get("a2"), b"1")
        self.assertEqual(r.exists("a"), 0)
        self.assertEqual(r.delete("a2", "b", "c"), 2)
        self.assertEqual(r.exists("a2", "b"), 0)
        with self.assertRaises(redis.exceptions.ResponseError) as cm:  # type: ignore[attr-defined]
            r.rename("nokey", "x")
        self.assertIn("no such key", str(cm.exception))

    def test_wrongtype(self) -> None:
        r = self.c()
        r.set("k", "v")
        with self.assertRaises(redis.exceptions.ResponseError) as cm:  # type: ignore[attr-defined]
            r.lpush("k", "x")
        self.assertTrue(str(cm.exception).startswith("WRONGTYPE"), str(cm.exception))
        self.assertEqual(r.get("k"), b"v")

    def test_writes_reach_the_datastore(self) -> None:
        r = self.c()
        r.set("visible", "yes")
        r.hset("hv", "f", "1")
        d = self.direct()  # type: ignore[attr-defined]
        self.assertEqual(d.get("visible"), b"yes")
        self.assertEqual(d.hgetall("hv"), {b"f": b"1"})

    def test_pipeline_of_1000(self) -> None:
        r = self.c()
        p = r.pipeline(transaction=False)
        expected: List[Any] = []
        counter = 0
        items: List[bytes] = []
        for i in range(1000):
            kind = i % 5
            if kind == 0:
                p.set(f"p{i}", f"v{i}")
                expected.append(True)
            elif kind == 1:
                p.get(f"p{i - 1}")
                expected.append(f"v{i - 1}".encode())
            elif kind == 2:
                p.incr("counter")
                counter += 1
                expected.append(counter)
            elif kind == 3:
                p.rpush("plist", i)
                items.append(str(i).encode())
                expected.append(len(items))
            else:
                p.lindex("plist", -1)
                expected.append(items[-1])
        results = p.execute()
        self.assertEqual(len(results), 1000)
        self.assertEqual(results, expected)
        self.assertEqual(r.get("counter"), str(counter).encode())


class DataTypesRESP2Tests(_DataTypesMixin, _NodeTestCase):
    protocol = 2


class DataTypesDefaultProtocolTests(_DataTypesMixin, _NodeTestCase):
    """redis-py 8 defaults: ``HELLO 3`` on connect, RESP3 replies."""

    protocol = None


# ---------------------------------------------------------------------------
# RESP3 on the wire, byte for byte against redis-server


class RESP3WireTests(_NodeTestCase):
    def _populate(self) -> None:
        r = self.client(protocol=2)
        r.hset("h", mapping={"a": "1", "b": "two"})
        r.zadd("z", {"m1": 1.5, "m2": 2, "m3": -3})
        r.sadd("s1", "only")
        r.rpush("l", "x", "y")
        r.set("str", "val")

    def _hello3(self, conn: RawConnection) -> Dict[bytes, Any]:
        raw = conn.command("HELLO", "3")
        self.assertTrue(raw.startswith(b"%"), f"HELLO 3 is not a RESP3 map: {raw[:80]!r}")
        fields = decode_reply(raw)
        self.assertEqual(fields[b"proto"], 3)
        return fields

    def test_replies_equal_redis_after_hello_3(self) -> None:
        self._populate()
        node, direct = self.raw(), self.raw(self.redis)
        self._hello3(node)
        self._hello3(direct)
        commands = [
            ("HGETALL", "h"),
            ("HGETALL", "missing"),
            ("ZRANGE", "z", "0", "-1", "WITHSCORES"),
            ("ZSCORE", "z", "m1"),
            ("ZSCORE", "z", "missing"),
            ("ZINCRBY", "z", "0", "m2"),
            ("SMEMBERS", "s1"),
            ("GET", "missing"),
            ("GET", "str"),
            ("HGET", "h", "nofield"),
            ("LRANGE", "l", "0", "-1"),
            ("EXISTS", "h", "z"),
            ("TYPE", "z"),
            ("PING",),
            ("GET", "l"),  # WRONGTYPE error
        ]
        for cmd in commands:
            got = node.command(*cmd)
            want = direct.command(*cmd)
            self.assertEqual(got, want, f"RESP3 reply differs for {cmd}")
        # the comparison above must really have been RESP3
        self.assertTrue(node.command("HGETALL", "h").startswith(b"%2\r\n"))
        self.assertEqual(node.command("ZSCORE", "z", "m1"), b",1.5\r\n")
        self.assertEqual(node.command("GET", "missing"), b"_\r\n")

    def test_hello_2_switches_back(self) -> None:
        self._populate()
        node, direct = self.raw(), self.raw(self.redis)
        self._hello3(node)
        raw = node.command("HELLO", "2")
        self.assertTrue(raw.startswith(b"*"), f"HELLO 2 is not a flat array: {raw[:80]!r}")
        flat = decode_reply(raw)
        fields = dict(zip(flat[::2], flat[1::2]))
        self.assertEqual(fields[b"proto"], 2)
        for cmd in [("HGETALL", "h"), ("ZSCORE", "z", "m1"), ("GET", "missing"), ("SMEMBERS", "s1")]:
            self.assertEqual(node.command(*cmd), direct.command(*cmd), cmd)
        self.assertEqual(node.command("GET", "missing"), b"$-1\r\n")

    def test_hello_bad_version(self) -> None:
        node = self.raw()
        self.assertErrorReply(node.command("HELLO", "4"), "NOPROTO")
        self.assertEqual(node.command("PING"), b"+PONG\r\n")

    def test_redis_py_default_client_gets_resp3_types(self) -> None:
        self._populate()
        r = self.client()  # redis-py 8 default: HELLO 3
        self.assertEqual(r.hgetall("h"), {b"a": b"1", b"b": b"two"})
        self.assertEqual(r.zscore("z", "m1"), 1.5)
        # below redis-py's response callbacks: a RESP3 double arrives as a float,
        # a RESP2 bulk string would arrive as b"1.5"
        conn = r.connection_pool.get_connection()
        try:
            conn.send_command("ZSCORE", "z", "m1")
            self.assertEqual(conn.read_response(), 1.5)
            conn.send_command("HGETALL", "h")
            self.assertEqual(conn.read_response(), {b"a": b"1", b"b": b"two"})
        finally:
            r.connection_pool.release(conn)


# ---------------------------------------------------------------------------
# binary safety


class BinarySafetyTests(_NodeTestCase):
    def _roundtrip(self, key: bytes, value: bytes, protocol: Optional[int]) -> None:
        kw = {} if protocol is None else {"protocol": protocol}
        r = self.client(**kw)
        self.assertTrue(r.set(key, value))
        self.assertEqual(r.get(key), value)
        self.assertEqual(self.direct().get(key), value, "datastore holds different bytes")

    def test_control_bytes(self) -> None:
        for protocol in (2, None):
            self._roundtrip(b"k\r\n\x00", b"a\r\nb\rc\nd\x00e\r\n", protocol)
            self._roundtrip(b"empty", b"", protocol)

    def test_all_byte_values(self) -> None:
        value = bytes(range(256)) * 4
        for protocol in (2, None):
            self._roundtrip(bytes(range(256)), value, protocol)

    def test_five_megabytes(self) -> None:
        value = random.Random(5).randbytes(5 * 1024 * 1024)
        self._roundtrip(b"big", value, 2)
        r = self.client()
        self.assertEqual(r.strlen("big"), len(value))
        self.assertEqual(r.get("big"), value)

    def test_binary_hash_fields_raw(self) -> None:
        conn = self.raw()
        field, value = b"f\r\n\x00", bytes(range(256))
        self.assertEqual(conn.command("HSET", b"bh", field, value), b":1\r\n")
        self.assertEqual(
            conn.command("HGET", b"bh", field), b"$256\r\n" + value + b"\r\n"
        )


# ---------------------------------------------------------------------------
# AUTH


class AuthTests(_NodeTestCase):
    node_overrides = {"requirepass": PASSWORD}

    def test_commands_before_auth_are_refused(self) -> None:
        conn = self.raw()
        self.assertErrorReply(conn.command("SET", "k", "v"), "NOAUTH")
        self.assertTrue(conn.command("GET", "k").startswith(b"-NOAUTH"))
        self.assertIsNone(self.direct().get("k"), "write went through without AUTH")

    def test_wrong_password(self) -> None:
        conn = self.raw()
        self.assertTrue(conn.command("AUTH", "nope").startswith(b"-WRONGPASS"))
        self.assertTrue(conn.command("AUTH", "default", "nope").startswith(b"-WRONGPASS"))
        self.assertTrue(conn.command("GET", "k").startswith(b"-NOAUTH"))

    def test_right_password(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("AUTH", PASSWORD), b"+OK\r\n")
        self.assertEqual(conn.command("SET", "k", "v"), b"+OK\r\n")
        self.assertEqual(conn.command("GET", "k"), b"$1\r\nv\r\n")
        other = self.raw()
        self.assertEqual(other.command("AUTH", "default", PASSWORD), b"+OK\r\n")
        self.assertEqual(other.command("GET", "k"), b"$1\r\nv\r\n")

    def test_redis_py_with_password(self) -> None:
        for kw in ({"protocol": 2}, {}):
            r = self.client(password=PASSWORD, **kw)
            self.assertTrue(r.set("k", "v"))
            self.assertEqual(r.get("k"), b"v")
            self.assertEqual(r.hgetall("none"), {})
        # redis-py retries failed connections with backoff; one try is enough here
        once = {"retry": Retry(NoBackoff(), 0)}
        for kw in ({"protocol": 2}, {}):
            with self.assertRaises(redis.exceptions.AuthenticationError):
                self.client(**once, **kw).get("k")
            with self.assertRaises(redis.exceptions.AuthenticationError):
                self.client(password="wrong", **once, **kw).get("k")

    def test_hello_3_with_auth_and_setname(self) -> None:
        conn = self.raw()
        raw = conn.command("HELLO", "3", "AUTH", "default", PASSWORD, "SETNAME", "x")
        self.assertTrue(raw.startswith(b"%"), raw[:80])
        self.assertEqual(decode_reply(raw)[b"proto"], 3)
        self.assertEqual(conn.command("CLIENT", "GETNAME"), b"$1\r\nx\r\n")
        conn.command("HSET", "h", "f", "v")
        self.assertEqual(conn.command("HGETALL", "h"), b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n")

    def test_hello_3_with_wrong_auth(self) -> None:
        conn = self.raw()
        self.assertTrue(
            conn.command("HELLO", "3", "AUTH", "default", "bad").startswith(b"-WRONGPASS")
        )
        self.assertTrue(conn.command("GET", "k").startswith(b"-NOAUTH"))


# ---------------------------------------------------------------------------
# commands the node answers itself, inline commands, unsupported commands


class NodeCommandTests(_NodeTestCase):
    def test_inline_commands(self) -> None:
        conn = self.raw()
        conn.send(b"PING\r\n")
        self.assertEqual(conn.read_reply(), b"+PONG\r\n")
        conn.send(b"SET a b\r\n")
        self.assertEqual(conn.read_reply(), b"+OK\r\n")
        conn.send(b"GET a\r\n")
        self.assertEqual(conn.read_reply(), b"$1\r\nb\r\n")
        conn.send(b"PING\r\nGET a\r\n")  # pipelined inline
        self.assertEqual(conn.read_replies(2), [b"+PONG\r\n", b"$1\r\nb\r\n"])

    def test_echo_and_ping(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("ECHO", "hello"), b"$5\r\nhello\r\n")
        self.assertEqual(conn.command("PING", "msg"), b"$3\r\nmsg\r\n")

    def test_select(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("SELECT", "0"), b"+OK\r\n")
        self.assertErrorReply(conn.command("SELECT", "1"))
        self.assertEqual(conn.command("PING"), b"+PONG\r\n")
        self.assertEqual(self.client(protocol=2, db=0).ping(), True)

    def test_client_subcommands(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("CLIENT", "GETNAME"), b"$-1\r\n")
        self.assertEqual(conn.command("CLIENT", "SETNAME", "myname"), b"+OK\r\n")
        self.assertEqual(conn.command("CLIENT", "GETNAME"), b"$6\r\nmyname\r\n")
        self.assertTrue(re.fullmatch(rb":\d+\r\n", conn.command("CLIENT", "ID")))
        other = self.raw()
        self.assertNotEqual(conn.command("CLIENT", "ID"), other.command("CLIENT", "ID"))
        self.assertEqual(conn.command("CLIENT", "SETINFO", "LIB-NAME", "mylib"), b"+OK\r\n")
        self.assertEqual(conn.command("CLIENT", "SETINFO", "LIB-VER", "1.2.3"), b"+OK\r\n")

    def test_command_introspection(self) -> None:
        conn = self.raw()
        count = decode_reply(conn.command("COMMAND", "COUNT"))
        self.assertIsInstance(count, int)
        self.assertGreater(count, 100)
        info = decode_reply(conn.command("COMMAND", "INFO", "get"))
        self.assertEqual(len(info), 1)
        self.assertEqual(info[0][0], b"get")
        self.assertEqual(info[0][1], 2)  # arity
        docs_raw = conn.command("COMMAND", "DOCS", "get")
        self.assertTrue(docs_raw.startswith(b"*"), docs_raw[:80])
        docs = decode_reply(docs_raw)
        self.assertTrue(docs == [] or b"get" in docs, docs)
        self.assertEqual(conn.command("PING"), b"+PONG\r\n")

    def test_info(self) -> None:
        info = decode_reply(self.raw().command("INFO")).decode()
        self.assertIn("# Dynomite", info)
        self.assertIn("# Server", info)
        self.assertRegex(info, r"redis_version:7\.")
        parsed = self.client(protocol=2).info()
        self.assertIn("redis_version", parsed)

    def test_config_get(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("CONFIG", "GET", "save"), b"*0\r\n")
        self.assertEqual(self.client(protocol=2).config_get("save"), {})

    def test_time(self) -> None:
        t = decode_reply(self.raw().command("TIME"))
        self.assertEqual(len(t), 2)
        self.assertLess(abs(int(t[0]) - time.time()), 60)
        self.assertTrue(0 <= int(t[1]) < 1_000_000)

    def test_dbsize_flushdb_flushall(self) -> None:
        conn = self.raw()
        for k in ("a", "b", "c"):
            conn.command("SET", k, "1")
        self.assertEqual(conn.command("DBSIZE"), b":3\r\n")
        self.assertEqual(conn.command("FLUSHDB"), b"+OK\r\n")
        self.assertEqual(conn.command("DBSIZE"), b":0\r\n")
        self.assertEqual(self.direct().dbsize(), 0)
        conn.command("SET", "d", "1")
        self.assertEqual(conn.command("FLUSHALL"), b"+OK\r\n")
        self.assertEqual(conn.command("DBSIZE"), b":0\r\n")
        self.assertEqual(self.direct().dbsize(), 0)

    def test_quit(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("QUIT"), b"+OK\r\n")
        self.assertTrue(conn.closed_by_peer(2.0), "QUIT did not close the connection")

    def test_unsupported_commands(self) -> None:
        conn = self.raw()
        for cmd in (("SUBSCRIBE", "chan"), ("BLPOP", "l", "0"), ("MULTI",), ("MONITOR",)):
            self.assertErrorReply(conn.command(*cmd), "unsupported command")
            self.assertEqual(conn.command("PING"), b"+PONG\r\n", f"after {cmd}")
        # nothing half-started: a SET after MULTI runs immediately
        self.assertEqual(conn.command("SET", "k", "v"), b"+OK\r\n")
        self.assertEqual(self.direct().get("k"), b"v")

    def test_unknown_command(self) -> None:
        conn = self.raw()
        self.assertErrorReply(conn.command("NOSUCHCOMMAND", "a", "b"))
        self.assertEqual(conn.command("PING"), b"+PONG\r\n")


# ---------------------------------------------------------------------------
# malformed and oversized input


class MalformedInputTests(_NodeTestCase):
    def test_protocol_error_closes_only_that_connection(self) -> None:
        before = self.raw()
        self.assertEqual(before.command("SET", "k", "v"), b"+OK\r\n")
        bad = self.raw()
        bad.send(b"*1\r\n$x\r\n")
        reply = bad.read_reply()
        self.assertTrue(reply.startswith(b"-ERR Protocol error"), reply)
        self.assertTrue(bad.closed_by_peer(2.0), "connection left open after a protocol error")
        self.assertEqual(before.command("GET", "k"), b"$1\r\nv\r\n")
        self.assertEqual(self.raw().command("PING"), b"+PONG\r\n")

    def test_bad_multibulk_length(self) -> None:
        bad = self.raw()
        bad.send(b"*abc\r\n")
        self.assertTrue(bad.read_reply().startswith(b"-ERR Protocol error"))
        self.assertTrue(bad.closed_by_peer(2.0))
        self.assertEqual(self.raw().command("PING"), b"+PONG\r\n")


class OversizedRequestTests(_NodeTestCase):
    node_overrides = {"max_request_bytes": 1024}

    def test_oversized_request_is_refused(self) -> None:
        before = self.raw()
        self.assertEqual(before.command("PING"), b"+PONG\r\n")
        bad = self.raw()
        bad.send(encode_command("SET", "big", "x" * 2048))
        reply = bad.read_reply()
        self.assertErrorReply(reply, "Protocol error")
        sizes = [int(n) for n in re.findall(rb"\d+", reply)]
        self.assertTrue(any(n >= 1024 for n in sizes), f"error does not name the size: {reply!r}")
        self.assertTrue(bad.closed_by_peer(2.0), "connection left open after oversized request")
        self.assertIsNone(self.direct().get("big"))
        self.assertEqual(before.command("PING"), b"+PONG\r\n")
        ok = self.raw()
        self.assertEqual(ok.command("SET", "small", "y" * 500), b"+OK\r\n")
        self.assertEqual(self.direct().get("small"), b"y" * 500)


# ---------------------------------------------------------------------------
# backpressure


class BackpressureTests(_NodeTestCase):
    """A client that pipelines without reading must not grow the node's memory."""

    COUNT = 200_000
    VALUE = b"v" * 2048  # unbounded buffering would hold ~410 MB of replies
    RSS_LIMIT = 200 * 1024 * 1024

    def test_pipelining_without_reading(self) -> None:
        self.client(protocol=2).set("big", self.VALUE)
        reply = b"$%d\r\n%s\r\n" % (len(self.VALUE), self.VALUE)
        request = encode_command("GET", "big") * self.COUNT

        sock = socket.create_connection(self.node.address, timeout=120)
        self.addCleanup(sock.close)
        pid = self.node.pid
        peak = [harness.rss_bytes(pid)]
        stop = threading.Event()

        def monitor() -> None:
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], harness.rss_bytes(pid))
                except (OSError, harness.HarnessError):
                    return
                time.sleep(0.05)

        sent = threading.Event()
        errors: List[BaseException] = []

        def writer() -> None:
            try:
                sock.sendall(request)
            except BaseException as e:  # reported by the main thread
                errors.append(e)
            sent.set()

        threads = [threading.Thread(target=monitor), threading.Thread(target=writer)]
        for t in threads:
            t.daemon = True
            t.start()
        self.addCleanup(stop.set)

        # Give the node time to buffer everything it would buffer.
        time.sleep(3.0)
        other = self.raw(timeout=2)
        for i in range(5):
            t0 = time.monotonic()
            self.assertEqual(other.command("SET", f"o{i}", "x"), b"+OK\r\n")
            self.assertEqual(other.command("GET", f"o{i}"), b"$1\r\nx\r\n")
            self.assertLess(time.monotonic() - t0, 1.0, "other client stalled")
        mid_peak = peak[0]

        # Now read everything and check every reply byte.
        total = self.COUNT * len(reply)
        pattern = reply * (65536 // len(reply) + 3)
        received = 0
        sock.settimeout(30)
        while received < total:
            chunk = sock.recv(min(65536, total - received))
            if not chunk:
                self.fail(f"node closed the connection after {received} of {total} bytes")
            off = received % len(reply)
            if chunk != pattern[off:off + len(chunk)]:
                bad = next(j for j in range(len(chunk)) if chunk[j] != pattern[off + j])
                self.fail(
                    f"reply #{(received + bad) // len(reply)} of {self.COUNT} is not the value: "
                    f"{chunk[bad:bad + 120]!r}"
                )
            received += len(chunk)
        self.assertTrue(sent.wait(30), "writer never finished")
        stop.set()
        self.assertEqual(errors, [])
        self.assertEqual(received, total)
        self.assertLess(
            peak[0], self.RSS_LIMIT,
            f"node RSS peaked at {peak[0] >> 20} MB (at {mid_peak >> 20} MB before reading)",
        )
        self.assertEqual(other.command("PING"), b"+PONG\r\n")


# ---------------------------------------------------------------------------
# datastore failures (each test owns its processes)


class DatastoreFailureTests(unittest.TestCase):
    TIMEOUT_MS = 1000

    def _fixture(self) -> NodeFixture:
        fx = NodeFixture(self.mktemp(), timeout=self.TIMEOUT_MS)
        self.addCleanup(fx.stop)
        return fx

    def _timed(self, conn: RawConnection, *cmd: Any) -> tuple:
        t0 = time.monotonic()
        reply = conn.command(*cmd)
        return reply, time.monotonic() - t0

    def test_redis_killed_and_restarted(self) -> None:
        fx = self._fixture()
        bound = self.TIMEOUT_MS / 1000 + 1.0
        node_pid = fx.node.pid
        conn = fx.node.raw(timeout=10)
        self.addCleanup(conn.close)
        burst = fx.node.raw(timeout=10)
        self.addCleanup(burst.close)
        self.assertEqual(conn.command("SET", "k", "before"), b"+OK\r\n")

        n = 5000
        burst.send(b"".join(encode_command("SET", f"b{i}", "x") for i in range(n)))
        fx.redis.kill()
        t0 = time.monotonic()
        replies = burst.read_replies(n, timeout=bound + 5)
        elapsed = time.monotonic() - t0
        for r in replies:
            if r != b"+OK\r\n":
                self.assertIn(b"datastore unavailable", r, r)
                self.assertTrue(r.startswith(b"-"), r)
        self.assertLess(elapsed, bound, "pipelined replies took too long after the kill")

        # clients keep looping while the datastore is down
        down_until = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < down_until:
            reply, took = self._timed(conn, "SET", "k", f"down{i}")
            self.assertTrue(reply.startswith(b"-"), reply)
            self.assertIn(b"datastore unavailable", reply)
            self.assertLess(took, bound)
            i += 1
            time.sleep(0.05)

        fx.redis.start()
        deadline = time.monotonic() + 10
        while True:
            reply, took = self._timed(conn, "SET", "k", "after")
            self.assertLess(took, bound)
            if reply == b"+OK\r\n":
                break
            self.assertIn(b"datastore unavailable", reply)
            if time.monotonic() > deadline:
                self.fail(f"node did not recover within 10 s: {reply!r}")
            time.sleep(0.1)
        self.assertEqual(conn.command("GET", "k"), b"$5\r\nafter\r\n")
        self.assertEqual(fx.redis.client(protocol=2).get("k"), b"after")
        self.assertTrue(fx.node.running())
        self.assertEqual(fx.node.pid, node_pid)
        fresh = fx.node.client(protocol=2)
        self.addCleanup(fresh.close)
        self.assertEqual(fresh.get("k"), b"after")

    def test_redis_paused(self) -> None:
        fx = self._fixture()
        conn = fx.node.raw(timeout=10)
        self.addCleanup(conn.close)
        self.assertEqual(conn.command("SET", "k", "v"), b"+OK\r\n")
        fx.redis.pause()
        self.addCleanup(fx.redis.resume)
        paused_at = time.monotonic()
        reply, took = self._timed(conn, "GET", "k")
        self.assertTrue(reply.startswith(b"-"), reply)
        self.assertLess(took, self.TIMEOUT_MS / 1000 + 0.6)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - paused_at)))
        fx.redis.resume()
        deadline = time.monotonic() + 10
        while True:
            reply, took = self._timed(conn, "GET", "k")
            self.assertLess(took, self.TIMEOUT_MS / 1000 + 1.0)
            if reply == b"$1\r\nv\r\n":
                break
            self.assertTrue(reply.startswith(b"-"), f"wrong reply after resume: {reply!r}")
            if time.monotonic() > deadline:
                self.fail(f"node did not recover after SIGCONT: {reply!r}")
            time.sleep(0.1)
        # replies are still matched to the right requests
        self.assertEqual(conn.command("SET", "k2", "w"), b"+OK\r\n")
        self.assertEqual(conn.command("GET", "k"), b"$1\r\nv\r\n")
        self.assertEqual(conn.command("GET", "k2"), b"$1\r\nw\r\n")


# ---------------------------------------------------------------------------
# configuration checking


class ConfigCheckTests(unittest.TestCase):
    def _write(self, tmp: str, name: str, config: Dict[str, Any]) -> str:
        os.makedirs(tmp, exist_ok=True)
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            yaml.safe_dump({"dyn_o_mite": config}, f)
        return path

    def _twistd(self, argv: List[str], cwd: str) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30
            )
        finally:
            self._reap_daemon(cwd)
        return proc

    def _reap_daemon(self, cwd: str) -> None:
        """If a twistd daemonized anyway, stop the PID it wrote, and fail."""
        pidfile = os.path.join(cwd, "twistd.pid")
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                pid = int(f.read().strip())
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
            self.fail(f"twistd daemonized (pid {pid}) instead of only checking the config")

    def _config(self, **extra: Any) -> Dict[str, Any]:
        return harness.node_config(redis_address=("127.0.0.1", harness.free_port()), **extra)

    def _one_line_naming(self, output: str, path: str, key: str) -> None:
        self.assertNotIn("Traceback", output)
        lines = [
            line for line in output.splitlines()
            if key in line and (path in line or os.path.basename(path) in line)
        ]
        self.assertTrue(lines, f"no line names both {path!r} and {key!r}:\n{output}")

    def test_check_config_good(self) -> None:
        tmp = os.path.abspath(self.mktemp())
        config = self._config()
        path = self._write(tmp, "good.yml", config)
        proc = self._twistd([harness.TWISTD, "dynomite", "--check-config", "-c", path], tmp)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        with self.assertRaises(OSError):
            harness.ping_raw("127.0.0.1", int(config["listen"].rsplit(":", 1)[1]))

    def test_check_config_unknown_key(self) -> None:
        tmp = os.path.abspath(self.mktemp())
        path = self._write(tmp, "bad.yml", self._config(bogus_option=1))
        proc = self._twistd([harness.TWISTD, "dynomite", "--check-config", "-c", path], tmp)
        self.assertNotEqual(proc.returncode, 0)
        self._one_line_naming((proc.stdout + proc.stderr).decode(), path, "bogus_option")

    def test_check_config_bad_value(self) -> None:
        tmp = os.path.abspath(self.mktemp())
        path = self._write(tmp, "bad.yml", self._config(timeout="soon"))
        proc = self._twistd([harness.TWISTD, "dynomite", "--check-config", "-c", path], tmp)
        self.assertNotEqual(proc.returncode, 0)
        self._one_line_naming((proc.stdout + proc.stderr).decode(), path, "timeout")

    def test_start_with_bad_config(self) -> None:
        tmp = os.path.abspath(self.mktemp())
        path = self._write(tmp, "bad.yml", self._config(bogus_option=1))
        log = os.path.join(tmp, "node.log")
        proc = self._twistd(
            [harness.TWISTD, "-n", "--pidfile=", "--logfile", log, "dynomite", "-c", path], tmp
        )
        self.assertNotEqual(proc.returncode, 0)
        output = (proc.stdout + proc.stderr).decode()
        if os.path.exists(log):
            with open(log) as f:
                output += f.read()
        self._one_line_naming(output, path, "bogus_option")
