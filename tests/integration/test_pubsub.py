"""
Pub/sub through a cluster of real processes (the shared 2 DCs x 3 racks
cluster of ``tests/integration/fixtures/cases.py``): replies byte for byte
as a plain redis-server gives them, in RESP2 (subscriber mode) and RESP3
(pushes on a connection that keeps serving commands); 1,000 messages
published on random nodes of both datacenters reach every subscription on
every node exactly once; PUBLISH and PUBSUB NUMSUB answer for the node
asked; RESET leaves subscriber mode.
"""

from __future__ import annotations

import collections
import socket
from typing import Any, List, Sequence, Tuple

from tests.integration.fixtures.cases import CONVERGE_TIMEOUT, TWO_DCS, ClusterTestCase, plain_redis
from tests.integration.fixtures.resp import RawConnection, decode_reply, encode_command

#: (command, replies it gets); both sides get the same script on one connection.
SCRIPT: List[Tuple[Tuple[Any, ...], int]] = [
    (("UNSUBSCRIBE",), 1),
    (("SUBSCRIBE", "a", "b", "a"), 3),
    (("PSUBSCRIBE", "h*", "[ab]"), 2),
    (("SSUBSCRIBE", "s1"), 1),
    (("PING",), 1),
    (("PING", "there"), 1),
    (("GET", "k"), 1),
    (("SET", "k", "v"), 1),
    (("OBJECT", "ENCODING", "k"), 1),
    (("UNSUBSCRIBE", "b", "zz"), 2),
    (("PUNSUBSCRIBE", "h*"), 1),
    (("SUNSUBSCRIBE",), 1),
    (("SUNSUBSCRIBE",), 1),
    (("PUNSUBSCRIBE",), 1),
    (("UNSUBSCRIBE",), 1),
    (("PUNSUBSCRIBE",), 1),
    (("PING",), 1),
    (("SUBSCRIBE", "a"), 1),
    (("RESET",), 1),
    (("PING",), 1),
    (("PUBSUB", "NUMSUB", "a"), 1),
    (("PUBSUB", "HELP"), 1),
    (("PUBSUB", "NOPE"), 1),
    (("PUBSUB", "NUMPAT", "x"), 1),
]


def replies(conn: RawConnection, script: Sequence[Tuple[Tuple[Any, ...], int]]) -> List[bytes]:
    out = []
    for command, n in script:
        conn.send(encode_command(*command))
        out.extend(conn.read_replies(n))
    return out


class PubSubTests(ClusterTestCase):
    layout = TWO_DCS

    def connect(self, node, resp: int) -> RawConnection:
        return self.raw(node, resp=resp)

    def compare(self, script, resp: int) -> None:
        plain = plain_redis().raw()
        self.addCleanup(plain.close)
        if resp == 3:
            plain.command("HELLO", "3")
        node = self.fx.nodes[0]
        want = replies(plain, script)
        got = replies(self.connect(node, resp), script)
        mismatches = ["  %r\n    redis: %r\n    node:  %r" % (w_c, w, g)
                      for w_c, w, g in zip([c for c, n in script for _ in range(n)], want, got) if w != g]
        self.assertEqual(mismatches, [], "RESP%d:\n" % resp + "\n".join(mismatches))

    def test_replies_as_redis_resp2(self):
        self.compare(SCRIPT, 2)

    def test_replies_as_redis_resp3(self):
        self.compare(SCRIPT, 3)

    def test_messages_as_redis(self):
        """What a subscriber receives, and PUBLISH's count, byte for byte (one node: local count)."""
        node = self.fx.nodes[0]
        for resp in (2, 3):
            plain_sub, plain_pub = plain_redis().raw(), plain_redis().raw()
            self.addCleanup(plain_sub.close)
            self.addCleanup(plain_pub.close)
            if resp == 3:
                plain_sub.command("HELLO", "3")
            sides = []
            for sub, pub in ((plain_sub, plain_pub), (self.connect(node, resp), self.connect(node, 2))):
                sub.send(encode_command("SUBSCRIBE", "m") + encode_command("PSUBSCRIBE", "m*")
                         + encode_command("SSUBSCRIBE", "m"))
                sub.read_replies(3)
                counts = [pub.command("PUBLISH", "m", "hello"), pub.command("SPUBLISH", "m", "x" * 300),
                          pub.command("PUBLISH", "nothing", "y")]
                sides.append((counts, sub.read_replies(3)))
            self.assertEqual(sides[1], sides[0], "RESP%d" % resp)

    def test_resp3_own_message_before_publish_reply(self):
        node = self.fx.nodes[0]
        for conn in (self.plain3(), self.connect(node, 3)):
            conn.command("SUBSCRIBE", "me")
            conn.send(encode_command("PUBLISH", "me", "x"))
            self.assertEqual(conn.read_replies(2), [b">3\r\n$7\r\nmessage\r\n$2\r\nme\r\n$1\r\nx\r\n", b":1\r\n"])

    def plain3(self) -> RawConnection:
        conn = plain_redis().raw()
        self.addCleanup(conn.close)
        conn.command("HELLO", "3")
        return conn

    def test_thousand_messages_reach_every_node_exactly_once(self):
        """1,000 messages published on random nodes of both DCs; every subscription gets each once."""
        subscribers = []
        for node in self.fx.nodes:
            for resp in (2, 3):
                sub = self.connect(node, resp)
                sub.send(encode_command("SUBSCRIBE", "jobs") + encode_command("PSUBSCRIBE", "jo*"))
                sub.read_replies(2)
                subscribers.append((node, resp, sub))
        publishers = [self.connect(node, self.rng.choice((2, 3))) for node in self.fx.nodes]
        sent = []
        for i in range(1000):
            publisher = self.rng.choice(publishers)
            message = b"msg-%d" % i
            self.assertEqual(publisher.command("PUBLISH", "jobs", message), b":4\r\n",
                             "two subscriptions on each of 2 connections of the node")
            sent.append(message)
        expected = collections.Counter()
        for message in sent:
            expected[(b"message", b"jobs", message)] += 1
            expected[(b"pmessage", b"jo*", b"jobs", message)] += 1
        for node, resp, sub in subscribers:
            got = collections.Counter()
            for raw in sub.read_replies(2000, timeout=CONVERGE_TIMEOUT):
                self.assertEqual(raw[:1], b"*" if resp == 2 else b">")
                got[tuple(decode_reply(raw))] += 1
            self.assertEqual(got, expected, "subscriber of %s, RESP%d" % (node.name, resp))
            with self.assertRaises(socket.timeout, msg="nothing more, no duplicate"):
                sub.read_reply(timeout=0.3)
        for node in self.fx.nodes:
            info = self.client(node).info("dynomite")
            self.assertEqual(info["pubsub_messages_dropped"], 0)

    def test_numsub_and_channels_are_the_nodes_own(self):
        first, second = self.fx.nodes[0], self.fx.nodes[-1]
        self.connect(first, 2).command("SUBSCRIBE", "here")
        asked_first = self.connect(first, 2)
        asked_second = self.connect(second, 2)
        self.assertEqual(asked_first.command("PUBSUB", "NUMSUB", "here"), b"*2\r\n$4\r\nhere\r\n:1\r\n")
        self.assertEqual(asked_second.command("PUBSUB", "NUMSUB", "here"), b"*2\r\n$4\r\nhere\r\n:0\r\n")
        self.assertEqual(asked_first.command("PUBSUB", "CHANNELS"), b"*1\r\n$4\r\nhere\r\n")
        self.assertEqual(asked_second.command("PUBLISH", "here", "x"), b":0\r\n")

    def test_reset_leaves_subscriber_mode(self):
        conn = self.connect(self.fx.nodes[1], 2)
        conn.command("SUBSCRIBE", "r")
        self.assertTrue(conn.command("GET", "k").startswith(b"-ERR Can't execute 'get'"))
        self.assertEqual(conn.command("RESET"), b"+RESET\r\n")
        self.assertEqual(conn.command("GET", "k"), b"$-1\r\n")
        self.assertEqual(self.connect(self.fx.nodes[1], 2).command("PUBLISH", "r", "x"), b":0\r\n")

    def test_keyspace_notifications_reach_subscribers_of_the_owner(self):
        key = self.prefix + "watched"
        owner = self.fx.owner(key, "dc1", "rack1")
        other_racks = [n for n in self.fx.dc_nodes("dc1") if n.rack != "rack1"]
        for node in [owner] + other_racks:
            backend = self.backend_raw(node)
            self.assertEqual(backend.command("CONFIG", "SET", "notify-keyspace-events", "K$"), b"+OK\r\n")
            self.addCleanup(lambda b=backend: b.command("CONFIG", "SET", "notify-keyspace-events", ""))
        watcher = self.connect(owner, 2)
        self.assertEqual(watcher.command("PSUBSCRIBE", "__keyspace@0__:%s*" % self.prefix),
                         b"*3\r\n$10\r\npsubscribe\r\n$%d\r\n__keyspace@0__:%s*\r\n:1\r\n"
                         % (len(self.prefix) + 16, self.prefix.encode()))
        channel = ("__keyspace@0__:" + key).encode()
        # the node subscribes to its Redis on demand; writes until the first notification shows
        writer = self.connect(self.fx.nodes[-1], 2)
        got = None
        for _ in range(int(CONVERGE_TIMEOUT / 0.25)):
            self.assertEqual(writer.command("SET", key, "v"), b"+OK\r\n")
            try:
                got = decode_reply(watcher.read_reply(timeout=0.25))
                break
            except socket.timeout:
                continue
        self.assertEqual(got, [b"pmessage", ("__keyspace@0__:%s*" % self.prefix).encode(), channel, b"set"])
        # a node of another rack holds a replica too: its own Redis notifies its subscribers
        replica_node = other_racks[0]
        elsewhere = self.connect(replica_node, 3)
        elsewhere.command("SUBSCRIBE", channel)
        for _ in range(int(CONVERGE_TIMEOUT / 0.25)):
            writer.command("APPEND", key, "x")
            try:
                self.assertEqual(decode_reply(elsewhere.read_reply(timeout=0.25)),
                                 [b"message", channel, b"append"])
                break
            except socket.timeout:
                continue
        else:
            self.fail("no notification through %s" % replica_node.name)
