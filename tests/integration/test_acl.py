"""
ACL users on a real node, compared byte for byte with a real redis-server
7.0 loaded with the same users as an ACL file: AUTH, NOPERM by command,
subcommand and key pattern (single and pipelined requests), HELLO 3 AUTH,
ACL WHOAMI / USERS / LIST / CAT / DRYRUN; the failed-AUTH limit per
client address, seen in ``/metrics``; and the users reloaded on SIGHUP
(connected clients get their user's new rules, a removed or disabled
user's clients are closed).

Each test talks from its own loopback source address (127.0.<n>.<m>),
because failed AUTHs are limited per address.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import tempfile
import urllib.request
from typing import List

import yaml
from twisted.trial import unittest

from dynomite.node import access
from tests.integration.fixtures.cases import NodeTestCase
from tests.integration.fixtures.common import shared, wait_until
from tests.integration.fixtures.processes import NodeFixture, RedisProcess
from tests.integration.fixtures.resp import (
    ConnectionClosed, RawConnection, ReplyReader, encode_command, split_aggregate,
)

USERS = [
    "user alice on >alicepw ~app:* &news.* -@all +@read +@write -@dangerous +acl|whoami",
    "user admin on >adminpw ~* &* +@all",
    "user bob off >bobpw ~* +@all",
]
#: The node's requirepass is Redis's default user with that password.
REDIS_ACL = USERS + ["user default on >defaultpw ~* &* +@all"]

_sources = itertools.count(2)


class _Reference:
    """A redis-server 7.0 with the same users, from an ACL file."""

    def __init__(self) -> None:
        tmp = tempfile.mkdtemp(prefix="acl-redis-", dir=os.getcwd())
        path = os.path.join(tmp, "users.acl")
        with open(path, "w") as f:
            f.write("\n".join(REDIS_ACL) + "\n")
        self.process = RedisProcess(tmpdir=os.path.join(tmp, "redis"), extra_args=["--aclfile", path])
        self.process.start()

    def healthy(self) -> bool:
        return self.process.running()

    def stop(self) -> None:
        self.process.stop()


class _From(RawConnection):
    """A raw connection from a given loopback source address."""

    def __init__(self, host: str, port: int, source: str, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.reader = ReplyReader()
        self._ready: List[bytes] = []


class AclTests(NodeTestCase):
    node_overrides = {"users": USERS, "requirepass": "defaultpw"}

    def setUp(self) -> None:
        super().setUp()
        self.reference = shared.get("acl-reference-redis", _Reference).process
        n = next(_sources)
        self.source = "127.0.%d.%d" % (n // 200 + 20, n % 200 + 2)

    def pair(self):
        """A connection to the node and one to the reference redis-server, from this test's address."""
        conns = [_From(p.host, p.port, self.source) for p in (self.node, self.reference)]
        for c in conns:
            self.addCleanup(c.close)
        return conns

    def assertSame(self, *args) -> bytes:
        """Both answer ``args`` with the same bytes; return them."""
        ours, theirs = (c.command(*args) for c in self.conns)
        self.assertEqual(ours, theirs, args)
        return ours

    def test_auth_and_noperm_as_redis(self):
        self.conns = self.pair()
        self.assertEqual(self.assertSame("GET", "app:1"), b"-NOAUTH Authentication required.\r\n")
        wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        self.assertEqual(self.assertSame("AUTH", "alice", "nope"), wrongpass)
        self.assertEqual(self.assertSame("AUTH", "bob", "bobpw"), wrongpass)   # off
        self.assertEqual(self.assertSame("AUTH", "alice", "alicepw"), b"+OK\r\n")
        self.assertSame("SET", "app:1", "v")
        self.assertEqual(self.assertSame("GET", "app:1"), b"$1\r\nv\r\n")
        noperm_key = b"-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
        self.assertEqual(self.assertSame("SET", "other", "v"), noperm_key)
        self.assertEqual(self.assertSame("MGET", "app:1", "other"), noperm_key)
        self.assertEqual(self.assertSame("FLUSHALL"),
                         b"-NOPERM this user has no permissions to run the 'flushall' command\r\n")
        self.assertEqual(self.assertSame("CLIENT", "LIST"),
                         b"-NOPERM this user has no permissions to run the 'client|list' command\r\n")
        self.assertEqual(self.assertSame("ACL", "LIST"),
                         b"-NOPERM this user has no permissions to run the 'acl|list' command\r\n")
        self.assertEqual(self.assertSame("ACL", "WHOAMI"), b"$5\r\nalice\r\n")
        self.assertEqual(self.assertSame("AUTH", "defaultpw"), b"+OK\r\n")
        self.assertEqual(self.assertSame("ACL", "WHOAMI"), b"$7\r\ndefault\r\n")

    def test_a_pipeline_is_checked_key_by_key(self):
        self.conns = self.pair()
        self.assertSame("AUTH", "alice", "alicepw")
        batch = b"".join(encode_command(*c.split()) for c in [
            "SET app:2 a", "SET app:3 b", "SET secret c", "SET app:4 d", "GET app:2", "GET secret", "GET app:4"])
        replies = []
        for conn in self.conns:
            conn.send(batch)
            replies.append(conn.read_replies(7))
        self.assertEqual(replies[0], replies[1])
        self.assertEqual(replies[0][2][:7], b"-NOPERM")
        self.assertEqual(replies[0][6], b"$1\r\nd\r\n")
        self.assertIsNone(self.redis.client(protocol=2).get("secret"))

    def test_hello_3_auth(self):
        self.conns = self.pair()
        self.assertSame("HELLO", "3", "AUTH", "alice", "nope")
        ours = self.conns[0].command("HELLO", "3", "AUTH", "alice", "alicepw")
        self.assertTrue(ours.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"), ours)
        self.conns[1].command("HELLO", "3", "AUTH", "alice", "alicepw")
        self.assertEqual(self.assertSame("ACL", "WHOAMI"), b"$5\r\nalice\r\n")

    def test_admin_sees_the_users(self):
        self.conns = self.pair()
        self.assertSame("AUTH", "admin", "adminpw")
        self.assertEqual(self.assertSame("ACL", "USERS"),
                         b"*4\r\n$5\r\nadmin\r\n$5\r\nalice\r\n$3\r\nbob\r\n$7\r\ndefault\r\n")
        self.assertSame("ACL", "CAT")
        self.assertSame("ACL", "CAT", "nosuch")
        for args in (["alice", "SET", "k", "v"], ["alice", "GET", "app:1"], ["alice", "FLUSHALL"],
                     ["nobody", "GET", "x"]):
            self.assertSame("ACL", "DRYRUN", *args)
        ours, theirs = (sorted(split_aggregate(c.command("ACL", "LIST"))[1]) for c in self.conns)
        self.assertEqual(len(ours), 4)
        # Redis 7.0 rewrites alice's command rules into its own minimal form; every other line is the same
        self.assertEqual([line for line in ours if b" alice " not in line],
                         [line for line in theirs if b" alice " not in line])
        self.assertTrue(any(b"\r\nuser alice on #" in line for line in ours), ours)

    def test_failed_auths_are_limited_per_address_and_counted(self):
        before = self._metric('dynomite_auth_failures_total{reason="wrongpass"}')
        node = _From(self.node.host, self.node.port, self.source)
        self.addCleanup(node.close)
        for _ in range(access.MAX_FAILURES):
            self.assertEqual(node.command("AUTH", "alice", "guess")[:10], b"-WRONGPASS")
        refused = node.command("AUTH", "alice", "alicepw")
        self.assertTrue(refused.startswith(b"-ERR too many failed authentication attempts"), refused)
        other_source = _From(self.node.host, self.node.port, "127.0.99.%d" % (next(_sources) % 200 + 2))
        self.addCleanup(other_source.close)
        self.assertEqual(other_source.command("AUTH", "alice", "alicepw"), b"+OK\r\n")
        self.assertEqual(self._metric('dynomite_auth_failures_total{reason="wrongpass"}') - before,
                         access.MAX_FAILURES)
        self.assertGreaterEqual(self._metric('dynomite_auth_failures_total{reason="throttled"}'), 1)

    def _metric(self, sample: str) -> float:
        host, port = self.node.stats_address
        with urllib.request.urlopen("http://%s:%d/metrics" % (host, port), timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(sample + " "):
                    return float(line.split()[-1])
        raise AssertionError("%s not in /metrics" % sample)


def metric(node, sample: str) -> float:
    """The value of one sample line of ``node``'s /metrics (0 when absent)."""
    host, port = node.stats_address
    with urllib.request.urlopen("http://%s:%d/metrics" % (host, port), timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
    return 0.0


class AclReloadTests(unittest.TestCase):
    """SIGHUP re-reads ``users``: new AUTHs, connected clients' rules, removed and disabled users."""

    def setUp(self) -> None:
        self.fx = NodeFixture(self.mktemp(), users=USERS, requirepass="defaultpw")
        self.addCleanup(self.fx.stop)
        self.node = self.fx.node

    def login(self, user: str, password: str) -> RawConnection:
        conn = self.node.raw()
        self.addCleanup(conn.close)
        self.assertEqual(conn.command("AUTH", user, password), b"+OK\r\n")
        return conn

    def sighup(self, users: List[str]) -> None:
        with open(self.node.config_path) as f:
            doc = yaml.safe_load(f)
        doc["dyn_o_mite"]["users"] = users
        with open(self.node.config_path, "w") as f:
            yaml.safe_dump(doc, f)
        done = 'dynomite_config_reloads_total{result="success"}'
        before = metric(self.node, done)
        os.kill(self.node.pid, signal.SIGHUP)
        wait_until(lambda: metric(self.node, done) > before, timeout=5, message="reload counted")

    def test_reloaded_users_apply_to_new_auths_and_connected_clients(self) -> None:
        alice = self.login("alice", "alicepw")
        admin = self.login("admin", "adminpw")
        self.assertEqual(alice.command("SET", "app:1", "x"), b"+OK\r\n")
        self.sighup([
            "user alice on >alicepw2 ~app:* &news.* -@all +@read",   # new password, no more writes
            "user bob on >bobpw ~* +@all",                           # was off
            "user carol on >carolpw ~carol:* +@all",                 # new
        ])
        # alice, still connected, has her new rules at her next command
        self.assertEqual(alice.command("SET", "app:1", "y"),
                         b"-NOPERM this user has no permissions to run the 'set' command\r\n")
        self.assertEqual(alice.command("GET", "app:1"), b"$1\r\nx\r\n")
        # admin was removed: its connection is closed
        self.assertTrue(admin.closed_by_peer(timeout=5))
        self.assertRaises(ConnectionClosed, admin.command, "PING")
        fresh = self.node.raw()
        self.addCleanup(fresh.close)
        self.assertEqual(fresh.command("AUTH", "alice", "alicepw")[:10], b"-WRONGPASS")
        self.assertEqual(fresh.command("AUTH", "admin", "adminpw")[:10], b"-WRONGPASS")
        for user, password in (("alice", "alicepw2"), ("bob", "bobpw"), ("carol", "carolpw")):
            self.assertEqual(fresh.command("AUTH", user, password), b"+OK\r\n")
        self.assertEqual(fresh.command("SET", "carol:1", "z"), b"+OK\r\n")

    def test_a_disabled_users_clients_are_closed(self) -> None:
        alice = self.login("alice", "alicepw")
        default = self.login("default", "defaultpw")
        self.sighup(["user alice off >alicepw ~app:* +@all"])
        self.assertTrue(alice.closed_by_peer(timeout=5))
        self.assertEqual(default.command("PING"), b"+PONG\r\n")
        self.assertTrue(self.node.running())
