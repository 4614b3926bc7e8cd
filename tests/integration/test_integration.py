"""
Integration tests: a real node (``twistd -n dynomite``) in front of a real,
fresh redis-server, driven the way users drive it: redis-py 8 in both
protocols and raw sockets.  Checked here: every data type in RESP2 and
RESP3, RESP3 replies byte for byte against redis-server, binary safety,
and AUTH.

Each test asserts behaviour a user would notice.  Nodes are shared between
test classes with the same configuration (``NodeTestCase`` in
``tests/integration/fixtures/cases.py``) and the datastore is flushed
directly before every test.  ``test_node_commands`` and
``test_node_faults`` cover the rest of the single-node behaviour.
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.integration.fixtures.cases import NodeTestCase
from tests.integration.fixtures.resp import RawConnection, decode_reply


PASSWORD = "s3cret-pw"


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


class DataTypesRESP2Tests(_DataTypesMixin, NodeTestCase):
    """The data-type scenarios with redis-py in RESP2."""

    protocol = 2


class DataTypesDefaultProtocolTests(_DataTypesMixin, NodeTestCase):
    """redis-py 8 defaults: ``HELLO 3`` on connect, RESP3 replies."""

    protocol = None


# ---------------------------------------------------------------------------
# RESP3 on the wire, byte for byte against redis-server


class RESP3WireTests(NodeTestCase):
    """After HELLO 3 the node answers byte for byte what redis-server answers; HELLO 2 switches back."""

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


class BinarySafetyTests(NodeTestCase):
    """Keys and values with every byte value, CRLF, NUL and 5 MB arrive unchanged."""

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


class AuthTests(NodeTestCase):
    """``requirepass``: nothing before AUTH, wrong passwords refused, HELLO with AUTH."""

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
