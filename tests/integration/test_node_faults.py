"""
A real node when things go wrong around it: a client that pipelines
without reading (the node's memory stays bounded and other clients are
served), and its redis-server killed, restarted or frozen with SIGSTOP
(clients get errors within the configured ``timeout``, and the node
recovers by itself).  The failure tests start processes of their own.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, List

from twisted.trial import unittest

from tests.integration.fixtures.cases import NodeTestCase
from tests.integration.fixtures.common import FixtureError, rss_bytes
from tests.integration.fixtures.processes import NodeFixture
from tests.integration.fixtures.resp import RawConnection, encode_command


# ---------------------------------------------------------------------------
# backpressure


class BackpressureTests(NodeTestCase):
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
        peak = [rss_bytes(pid)]
        stop = threading.Event()

        def monitor() -> None:
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], rss_bytes(pid))
                except (OSError, FixtureError):
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
        # Another client is answered before the node's datastore timeout would
        # have fired: queued behind the unread pipeline, it would get a timeout
        # error, or its reply after one.
        timeout = self.node_timeout()
        other = self.raw(timeout=2 * timeout)
        for i in range(5):
            t0 = time.monotonic()
            self.assertEqual(other.command("SET", f"o{i}", "x"), b"+OK\r\n")
            self.assertEqual(other.command("GET", f"o{i}"), b"$1\r\nx\r\n")
            self.assertLess(time.monotonic() - t0, timeout,
                            f"other client stalled for longer than the node's timeout ({timeout:g} s)")
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
    """
    The datastore killed or frozen under a node: every reply comes within
    two of the node's ``timeout`` (one to fire, one more of slack for a
    loaded machine), and the node recovers by itself.
    """

    TIMEOUT_MS = 1000
    #: Seconds within which every reply must come, whatever the datastore does.
    BOUND = 2 * TIMEOUT_MS / 1000

    def _fixture(self) -> NodeFixture:
        fx = NodeFixture(self.mktemp(), timeout=self.TIMEOUT_MS)
        self.addCleanup(fx.stop)
        return fx

    def _timed(self, conn: RawConnection, *cmd: Any) -> tuple:
        t0 = time.monotonic()
        reply = conn.command(*cmd)
        return reply, time.monotonic() - t0

    def _until(self, conn: RawConnection, cmd: tuple, wanted: bytes, meanwhile: bytes, why: str) -> None:
        """Send ``cmd`` until it answers ``wanted`` (each answer within the bound, others holding ``meanwhile``)."""
        deadline = time.monotonic() + 10
        while True:
            reply, took = self._timed(conn, *cmd)
            self.assertLess(took, self.BOUND)
            if reply == wanted:
                return
            self.assertIn(meanwhile, reply)
            if time.monotonic() > deadline:
                self.fail(f"{why}: {reply!r}")
            time.sleep(0.1)

    def test_redis_killed_and_restarted(self) -> None:
        fx = self._fixture()
        bound = self.BOUND
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
        down_until = time.monotonic() + 1.5 * self.TIMEOUT_MS / 1000
        i = 0
        while time.monotonic() < down_until:
            reply, took = self._timed(conn, "SET", "k", f"down{i}")
            self.assertTrue(reply.startswith(b"-"), reply)
            self.assertIn(b"datastore unavailable", reply)
            self.assertLess(took, bound)
            i += 1
            time.sleep(0.05)

        fx.redis.start()
        self._until(conn, ("SET", "k", "after"), b"+OK\r\n", b"datastore unavailable",
                    "node did not recover within 10 s")
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
        self.assertLess(took, self.BOUND, "no reply within the node's timeout while the datastore is frozen")
        time.sleep(max(0.0, self.BOUND - (time.monotonic() - paused_at)))
        fx.redis.resume()
        self._until(conn, ("GET", "k"), b"$1\r\nv\r\n", b"-", "node did not recover after SIGCONT")
        # replies are still matched to the right requests (a write that
        # meets the datastore's connections still coming back is kept as a
        # hint and answered so: it is written again until acknowledged)
        self._until(conn, ("SET", "k2", "w"), b"+OK\r\n", b"datastore unavailable",
                    "writes not acknowledged 10 s after SIGCONT")
        self.assertEqual(conn.command("GET", "k"), b"$1\r\nv\r\n")
        self.assertEqual(conn.command("GET", "k2"), b"$1\r\nw\r\n")
