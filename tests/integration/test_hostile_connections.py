"""
10,000 hostile connections against one node: random bytes, truncated
frames, oversize bulk and multibulk lengths, deep nesting, half requests
left open, resets. The node must stay up, its resident memory must grow by
less than 50 MB, and a well-behaved pipelining client must keep getting
correct answers during the attack and after it.

The connections come in waves of `WAVE` open at once (the node's
``maxclients`` leaves room for them and the good client; this process's
file limit is raised to hold them). The good client's throughput under
attack is printed, not asserted (the benchmark measures throughput).
"""

from __future__ import annotations

import itertools
import random
import socket
import struct
import threading
import time
from collections import Counter
from typing import List, Optional

from twisted.trial.unittest import SynchronousTestCase

from dynomite.bench.attacker import _wave, hostile_payload, raise_fd_limit, source_addresses
from tests.integration.fixtures.cases import NodeTestCase
from tests.integration.fixtures.resp import RawConnection, encode_command

TOTAL = 10000
WAVE = 500
MAX_RSS_GROWTH = 50 * 1024 * 1024
MAX_REQUEST_BYTES = 1024 * 1024
PIPELINE = 16


# Enough for a wave, the good client and the fixtures; raised before the
# node starts, so the node (a child of this process) inherits it too.
raise_fd_limit(4 * WAVE + 256)


def _rss(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


class GoodClient(threading.Thread):
    """Pipelines SETs then GETs of its own keys and checks every answer."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.timeout = host, port, timeout
        self.stopping = threading.Event()
        self.rounds = 0
        self.error: Optional[str] = None

    def run(self) -> None:
        try:
            with RawConnection(self.host, self.port, timeout=self.timeout) as conn:
                n = 0
                while not self.stopping.is_set():
                    self.round(conn, n)
                    n += 1
        except Exception as e:   # reported by the test
            self.error = "%s: %s" % (type(e).__name__, e)

    def round(self, conn: RawConnection, n: int) -> None:
        keys = [b"good:%d:%d" % (n, i) for i in range(PIPELINE)]
        conn.send(b"".join(encode_command(b"SET", k, b"v" + k) for k in keys))
        for reply in conn.read_replies(PIPELINE):
            if reply != b"+OK\r\n":
                raise AssertionError("SET answered %r" % reply)
        conn.send(b"".join(encode_command(b"GET", k) for k in keys))
        for k, reply in zip(keys, conn.read_replies(PIPELINE)):
            expected = b"$%d\r\nv%s\r\n" % (len(k) + 1, k)
            if reply != expected:
                raise AssertionError("GET %r answered %r" % (k, reply))
        self.rounds += 1


class HostileConnectionTests(NodeTestCase):
    # the flood guard off: the node takes the whole attack (`dynomite.runtime.accept`)
    node_overrides = {"maxclients": 2 * WAVE, "max_request_bytes": MAX_REQUEST_BYTES, "backlog": 2 * WAVE,
                      "client_flood_accept_rate": 0}

    def attack(self, rng: random.Random, count: int) -> None:
        """``count`` hostile connections, ``WAVE`` at a time."""
        address = self.node.address
        timeout = self.node_timeout() * 5
        reset = struct.pack("ii", 1, 0)
        for start in range(0, count, WAVE):
            socks: List[socket.socket] = []
            for _ in range(min(WAVE, count - start)):
                s = socket.create_connection(address, timeout=timeout)
                s.setblocking(False)
                try:
                    s.send(hostile_payload(rng))
                except (BlockingIOError, ConnectionError):
                    pass   # the node may have cut it already
                if rng.random() < 0.3:   # gone at once, a third of those by reset
                    if rng.random() < 0.3:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
                    s.close()
                else:
                    socks.append(s)
            for s in socks:   # read what the node said (or not), then go
                try:
                    s.recv(65536)
                except (BlockingIOError, ConnectionError):
                    pass
                s.close()

    def test_the_node_survives_and_a_good_client_is_served(self):
        rng = random.Random(15)
        pid = self.node.pid
        self.attack(rng, WAVE)                     # warm up: first allocations are not growth
        before = _rss(pid)
        good = GoodClient(self.node.host, self.node.port, self.node_timeout() * 5)
        good.start()
        started = time.monotonic()
        try:
            self.attack(rng, TOTAL)
        finally:
            during = good.rounds
            elapsed = time.monotonic() - started
            good.stopping.set()
            good.join(self.node_timeout() * 10)
        after = _rss(pid)
        self.assertIsNone(good.error, "the well-behaved client failed under attack")
        self.assertGreater(during, 0, "the well-behaved client got no answer during the attack")
        self.assertTrue(self.node.running(), "the node died")
        self.assertLess(after - before, MAX_RSS_GROWTH,
                        "RSS grew from %d to %d bytes" % (before, after))
        with self.raw() as conn:   # and after
            GoodClient(self.node.host, self.node.port, 5).round(conn, -1)
            self.assertEqual(conn.command("PING"), b"+PONG\r\n")
        print("\n%d hostile connections in %.1f s; good client: %d pipelined ops/s during; "
              "node RSS %.1f -> %.1f MB"
              % (TOTAL, elapsed, during * 2 * PIPELINE / elapsed, before / 2 ** 20, after / 2 ** 20))


class AttackerSourceTests(SynchronousTestCase):
    """The benchmark's attacker spreads one wave over its source addresses (`dynomite.bench.attacker`)."""

    def test_a_wave_comes_from_every_source_in_turn(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.addCleanup(listener.close)
        counts = {"opened": 0, "refused": 0, "bytes": 0}
        socks = _wave("127.0.0.1", listener.getsockname()[1], 30, random.Random(1), counts,
                      itertools.cycle(source_addresses(3)))
        self.addCleanup(lambda: [s.close() for s in socks])
        listener.settimeout(5)
        peers = Counter()
        for _ in range(30):
            conn, (host, _port) = listener.accept()
            conn.close()
            peers[host] += 1
        self.assertEqual(dict(peers), {address: 10 for address in source_addresses(3)})
        self.assertEqual(counts["opened"], 30)
