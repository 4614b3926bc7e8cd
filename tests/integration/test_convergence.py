"""
Convergence through real processes (dynomite.node.leader,
dynomite.commands.effects): commands whose effect depends on chance or the
clock, and concurrent writers through every rack, leave every replica of a
key with the same bytes (DUMP) and the same expiry.

Uses the shared 1 DC x 3 racks x 2 nodes cluster of
``tests/integration/fixtures/cases.py``.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Sequence, Tuple

from tests.integration.fixtures.cases import (
    CONVERGE_TIMEOUT, TWO_DCS, ClusterTestCase, FaultTestCase, plain_redis,
)
from tests.integration.fixtures.common import poll, run_together

# A script that pops at random, reads the clock and writes what it found.
SCRIPT = ("local m = redis.call('SPOP', KEYS[1]); local t = redis.call('TIME'); "
          "redis.call('HSET', KEYS[2], 'last', tostring(m), 'at', t[1] .. t[2]); return m")


class ConvergenceTests(ClusterTestCase):
    """Every replica of a key ends with the same DUMP bytes and expiry."""

    def replicas(self, key: str) -> List[Tuple[str, bytes, int]]:
        out = []
        for node in self.fx.owners(key):
            backend = self.fx.backend(node)
            out.append((node.name, backend.dump(key), backend.pexpiretime(key)))
        return out

    def assertConverged(self, keys: Sequence[str], what: str) -> None:
        def differing() -> Dict[str, List[Tuple[str, bytes, int]]]:
            out = {}
            for key in keys:
                seen = self.replicas(key)
                if len({(dump, expiry) for _, dump, expiry in seen}) != 1:
                    out[key] = seen
            return out

        if not poll(lambda: not differing(), CONVERGE_TIMEOUT):
            diff = differing()
            shown = "\n".join(f"  {k}: {v}" for k, v in list(diff.items())[:3])
            self.fail(f"{what}: {len(diff)} of {len(keys)} keys differ between racks, e.g.\n{shown}")

    def nodes(self):
        return [self.fx.rack_node("dc1", f"rack{i}", j) for i in (1, 2, 3) for j in (0, 1)]

    def test_random_and_clock_commands_leave_identical_replicas(self):
        """
        The issue's reproduction: SADD 1..20, SPOP, SPOP 5, XADD *, XADD
        MAXLEN ~, INCRBYFLOAT, HINCRBYFLOAT and a script calling SPOP and
        TIME, on 50 keys each, through every node at DC_ONE.
        """
        nodes = self.nodes()
        keys = []
        for i in range(50):
            c = self.client(nodes[i % len(nodes)])
            s, x, f, h = (f"{self.prefix}{kind}{i}" for kind in ("s", "x", "f", "h"))
            s2, h2 = f"{{{self.prefix}t{i}}}s", f"{{{self.prefix}t{i}}}h"
            c.sadd(s, *range(1, 21))
            c.sadd(s2, *range(1, 21))
            self.assertIsNotNone(c.spop(s))
            self.assertEqual(len(c.spop(s, 5)), 5)
            for n in range(12):
                c.xadd(x, {"f": str(n)}, maxlen=5 if n % 3 else None, approximate=True)
            c.incrbyfloat(f, 0.1)
            c.incrbyfloat(f, 1.0e-7)
            c.hincrbyfloat(h, "field", 0.3)
            c.expire(s, 1000)
            self.assertIsNotNone(c.eval(SCRIPT, 2, s2, h2))
            keys += [s, x, f, h, s2, h2]
        self.assertConverged(keys, "after random, clock and script commands")

    def test_concurrent_pipelined_writers_on_hot_keys(self):
        """Three clients through three racks, pipelining order-sensitive writes to 20 hot keys."""
        rack_nodes = [self.fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3)]
        hot = [f"{{{self.prefix}hot{i}}}" for i in range(20)]

        def write(node, seed: int) -> None:
            c = self.fx.client(node)
            for round_ in range(30):
                p = c.pipeline(transaction=False)
                for j in range(16):
                    key = hot[(seed * 7 + round_ * 3 + j) % len(hot)]
                    value = f"{seed}.{round_}.{j}"
                    p.lpush(key + "l", value)
                    p.append(key + "s", value)
                    p.incr(key + "n")
                    p.set(key + "v", value)
                    p.rpush(key + "l", value)
                    if j % 5 == 0:
                        p.lpop(key + "l")
                p.execute()
            c.close()

        errors = run_together(write, [(node, i) for i, node in enumerate(rack_nodes)])
        self.assertEqual(errors, [])
        keys = [k + suffix for k in hot for suffix in ("l", "s", "n", "v")]
        self.assertConverged(keys, "after three concurrent pipelined writers")
        c = self.client(rack_nodes[0])
        self.assertEqual(sum(int(c.get(k + "n")) for k in hot), 3 * 30 * 16, "every INCR counted once")


def incr_while_frozen(fx, client, keys: Sequence[str], node) -> int:
    """INCR every key, again and again, while ``node`` is frozen with SIGSTOP for three timeouts; how many times."""
    node.node_process.pause()
    paused_at = time.monotonic()
    rounds = 0
    try:
        while time.monotonic() - paused_at < 3 * fx.layout.timeout():
            for key in keys:
                client.incr(key)
            rounds += 1
            time.sleep(0.01)
    finally:
        node.node_process.resume()
    return rounds


class ReplayOnceTests(FaultTestCase):
    """A write whose fate was unknown is replayed, and applied once (dynomite.replication.applied_once)."""

    def test_incr_through_a_replica_frozen_past_the_timeout_counts_once(self):
        """
        1 DC x 3 racks: INCRs through rack 1's node (their leader) while rack
        2's node is frozen with SIGSTOP for three timeouts: the requests it
        had read time out and become hints, it applies them when thawed, and
        the replayed hints are not applied again.
        """
        fx = self.start_cluster("replay-once", {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}}, 131)
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        keys = [k for k in (f"counter{i}" for i in range(200)) if fx.led_by(r1)(k)][:5]
        c = fx.client(r1)
        self.addCleanup(c.close)
        for key in keys:
            c.incr(key)
        rounds = incr_while_frozen(fx, c, keys, r2)
        want = {key: str(1 + rounds) for key in keys}
        self.assertHolding([r1, r2, r3], want, CONVERGE_TIMEOUT, "INCRs through a frozen replica")
        stats = fx.hint_stats(r1, r2)
        self.assertGreater(stats["replayed_total"], 0, f"nothing was replayed to rack 2: {stats}")

    def test_incr_forwarded_to_a_datacenter_frozen_past_the_timeout_counts_once(self):
        """
        2 DCs x 1 rack: INCRs through DC1's node while DC2's node is frozen
        with SIGSTOP for three timeouts: the FORWARDs it had been sent stay
        in its socket, DC1 drops the connection and keeps them as hints; when
        thawed DC2 applies what it had read, and the replays of those are
        answered without being applied again (dynomite.node.forwarded).
        A freeze in which no FORWARD reached DC2's socket before DC1 dropped
        the connection would test nothing, so the freeze is repeated (at
        most three times) until a replay met a write DC2 had read; every
        round must count each INCR once.
        """
        fx = self.start_cluster("forward-once", {"dc1": {"rack1": 1}, "dc2": {"rack1": 1}}, 121)
        sender, entry = fx.rack_node("dc1", "rack1"), fx.rack_node("dc2", "rack1")
        keys = [f"fcounter{i}" for i in range(5)]
        c = fx.client(sender)
        self.addCleanup(c.close)
        for key in keys:
            c.incr(key)
        total = 1
        for _ in range(3):
            total += incr_while_frozen(fx, c, keys, entry)
            want = {key: str(total) for key in keys}
            self.assertHolding([sender, entry], want, CONVERGE_TIMEOUT, "INCRs forwarded to a frozen datacenter")
            order = fx.info(entry)["write_order"]
            # a replay of a write DC2 had applied (skipped), or was applying when the replay came (waited)
            if order["forwards_skipped"] + order["forwards_waited"]:
                return
        self.fail(f"in three freezes no replay reached DC2 for a write it had read: nothing was tested ({order})")


class TransactionTests(ClusterTestCase):
    """MULTI/EXEC through real processes (dynomite.node.transactions), against a plain redis-server."""

    def test_redis_py_transactions_answer_as_redis_and_leave_identical_replicas(self):
        plain = plain_redis()
        plain.reset()
        direct = plain.process.client()
        self.addCleanup(direct.close)
        node = self.client(self.fx.rack_node("dc1", "rack2", 1))
        tag = "{%stx}" % self.prefix
        for target in (direct, node):
            p = target.pipeline(transaction=True)
            p.set(tag + "a", "1").incr(tag + "n").lpush(tag + "l", "x", "y").sadd(tag + "s", *range(10))
            p.get(tag + "a").lrange(tag + "l", 0, -1)
            self.assertEqual(p.execute(), [True, 1, 2, 10, b"1", [b"y", b"x"]])
        p = node.pipeline(transaction=True)
        p.spop(tag + "s", 3).xadd(tag + "x", {"f": "v"}).incrbyfloat(tag + "f", 0.5)
        popped, stream_id, value = p.execute()
        self.assertEqual((len(popped), value), (3, 0.5))
        keys = [tag + k for k in ("a", "n", "l", "s", "x", "f")]
        self.assertConverged(keys, "after transactions with SPOP, XADD * and INCRBYFLOAT")
        one = self.prefix + "one"
        other = next(k for k in (f"{self.prefix}other{i}" for i in range(1000))
                     if self.fx.leaders(k)[0] is not self.fx.leaders(one)[0])
        with self.assertRaises(Exception) as raised:
            node.pipeline(transaction=True).set(one, 1).set(other, 2).execute()
        self.assertIn("hash to the same node", str(raised.exception))   # -CROSSSLOT
        self.assertEqual((node.get(one), node.get(other)), (None, None))

    assertConverged = ConvergenceTests.assertConverged
    replicas = ConvergenceTests.replicas


class BlockingPopTests(ClusterTestCase):
    """Blocking pops through real processes (dynomite.node.blocking), woken from another datacenter."""

    layout = TWO_DCS

    def test_a_push_through_another_datacenter_wakes_a_blocked_pop(self):
        waiter = self.client(self.fx.rack_node("dc1", "rack1"), socket_timeout=30)
        pusher = self.client(self.fx.rack_node("dc2", "rack2"))
        queue = self.prefix + "queue"
        got = []
        thread = threading.Thread(target=lambda: got.append(waiter.blpop([queue], timeout=20)))
        thread.start()
        time.sleep(0.3)
        self.assertEqual(got, [], "BLPOP answered before anything was pushed")
        pusher.rpush(queue, "job1", "job2")
        thread.join(25)
        self.assertEqual(got, [(queue.encode(), b"job1")])
        self.assertConverged([queue], "after a blocking pop across datacenters")
        self.assertEqual(waiter.blpop([queue], timeout=1), (queue.encode(), b"job2"))
        started = time.monotonic()
        self.assertIsNone(waiter.blpop([queue], timeout=1))
        self.assertGreaterEqual(time.monotonic() - started, 0.9)

    def test_bzpopmin_answers_as_redis(self):
        plain = plain_redis()
        plain.reset()
        direct = plain.process.client()
        self.addCleanup(direct.close)
        node = self.client(self.fx.rack_node("dc1", "rack2"))
        key = self.prefix + "z"
        for target in (direct, node):
            target.zadd(key, {"a": 1, "b": 2})
            self.assertEqual(target.bzpopmin([key], timeout=1), (key.encode(), b"a", 1.0))
            self.assertEqual(target.bzpopmax([key], timeout=1), (key.encode(), b"b", 2.0))
            self.assertIsNone(target.bzpopmin([key], timeout=0.2))

    assertConverged = ConvergenceTests.assertConverged
    replicas = ConvergenceTests.replicas
