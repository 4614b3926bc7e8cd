"""
Errors and faults inside pipelines, through real processes: WRONGTYPE
replies first, last and amid pipelined runs of GETs count as errors, every
request once, in the per-family counters and the latency histogram; and a
replica frozen (SIGSTOP of its redis-server) or killed (SIGKILL of its
node) while pipelined writes are in flight costs no acknowledged write and
no reply out of order.  Uses the traffic, oracle and fixtures of
``test_pipelines``; the fault tests start clusters of their own on
``127.7.<worker>.211`` and ``.221``.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

from dynomite.launcher.cluster import ClusterNode
from tests.integration.fixtures.cluster import ClusterFixture
from tests.integration.fixtures.resp import encode_command
from tests.integration.test_admin import metrics as scrape
from tests.integration.test_pipelines import (
    CONVERGE_TIMEOUT,
    Address,
    _PipelineTestCase,
    cmd,
    consistency,
    exchange,
    joined,
    layout,
    pipelines_cluster,
    single_node,
)


# ---------------------------------------------------------------------------
# per-family accounting of errors inside runs


def requests_total(node: Any) -> Dict[str, float]:
    """The string family's ok and error counts, and how many reads the latency histogram saw."""
    samples = scrape(node)
    name = "dynomite_client_requests_total"
    return {"ok": samples[(name, (("family", "string"), ("result", "ok")))],
            "error": samples[(name, (("family", "string"), ("result", "error")))],
            "reads": samples[("dynomite_request_duration_seconds_count", (("op", "read"),))]}


class ErrorAccountingTests(_PipelineTestCase):
    """WRONGTYPE replies first, last and amid pipelined runs of GETs count as errors, every request once."""

    def check(self, backends: Sequence[Any], stats_node: Any, address: Address,
              preamble: List[Tuple[str, ...]], seed: int) -> None:
        for backend in backends:   # written straight into Redis: not counted by the node
            backend.hset("acct:h", "f", "v")
            backend.mset({f"acct:s{k}": f"v{k}" for k in range(50)})
        rng = random.Random(seed)
        requests, want, errors = [], [], 0
        for run in range(12):
            length = rng.randint(16, 120)
            wrong = {0, length - 1, rng.randrange(length)} if run % 2 else {rng.randrange(length)}
            for i in range(length):
                if i in wrong:
                    requests.append(cmd("GET", "acct:h"))
                    want.append(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
                    errors += 1
                else:
                    k = rng.randrange(50)
                    requests.append(cmd("GET", f"acct:s{k}"))
                    want.append(b"$%d\r\nv%d\r\n" % (len(b"v%d" % k), k))
        gets = len(requests)
        before = requests_total(stats_node)
        got = exchange(address, joined(requests + [cmd("QUIT")]), preamble)
        self.assertSameReplies(requests + [cmd("QUIT")], want + [b"+OK\r\n"], got, "runs of GETs with WRONGTYPE")
        after = requests_total(stats_node)
        self.assertEqual(
            {k: after[k] - before[k] for k in after}, {"ok": gets - errors, "error": errors, "reads": gets},
            f"{gets} GETs, {errors} of them WRONGTYPE: increases of dynomite_client_requests_total"
            f"{{family=string}} and dynomite_request_duration_seconds_count{{op=read}}")

    def test_single_node(self) -> None:
        fx = single_node()
        fx.reset()
        self.check([fx.redis.client(protocol=2)], fx.node, fx.node.address, [], 21)

    def test_cluster_at_dc_quorum(self) -> None:
        fx = pipelines_cluster()
        via = fx.rack_node("dc1", "rack2")
        self.check([fx.backend(n) for n in fx.nodes], via, via.client_address, consistency("DC_QUORUM"), 22)


# ---------------------------------------------------------------------------
# a replica frozen or killed while a pipeline of writes is in flight


class ReplicaFaultTests(_PipelineTestCase):
    """Every pipelined write answers its old value or -ERR while a replica is out; none is lost."""

    def writes_through_a_fault(self, label: str, block: int, stop: Callable[[ClusterNode], None],
                               restore: Callable[[ClusterNode], None], what: str) -> None:
        """
        1 DC x 3 racks at DC_ONE: 3,000 ``SET k new GET`` in 30 writes 0.1 s
        apart through rack 1; rack 2 is faulted before write 8 and restored
        before write 24.  Each reply is the key's distinct old value (so order
        shows) or -ERR, and every acknowledged write reaches all three racks.
        """
        fx = ClusterFixture(layout(label, block))
        self.addCleanup(fx.stop)   # SIGCONT if paused, then stop by PID
        fx.wait_normal(20)
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        count, per_chunk = 3000, 100
        keys = [f"fault:{i}" for i in range(count)]
        old = {k: f"old:{i}" for i, k in enumerate(keys)}
        new = [f"{i}:{random.Random(i).getrandbits(32):08x}" for i in range(count)]
        for n in (r1, r2, r3):
            fx.backend(n).mset(old)
        writes = [encode_command("SET", k, v, "GET") for k, v in zip(keys, new)]
        chunks = [b"".join(writes[i:i + per_chunk]) for i in range(0, count, per_chunk)] + [b"QUIT\r\n"]
        times: Dict[str, float] = {}

        def between(i: int) -> None:
            if i == 8:
                stop(r2)
                times["out"] = time.monotonic()
            if i == 24:
                restore(r2)
                times["back"] = time.monotonic()
            time.sleep(0.1)

        got = exchange(r1.client_address, chunks, consistency("DC_ONE"), between)
        outage = f"{what} for {times['back'] - times['out']:.1f}s"
        self.assertEqual(len(got), count + 1, f"{outage}: one reply per write, and QUIT's")
        bad = [(k, raw) for k, raw in zip(keys, got) if raw != b"$%d\r\n%s\r\n" % (len(old[k]), old[k].encode())
               and not raw.startswith(b"-ERR ")]
        self.assertEqual(bad[:5], [], f"{outage}: {len(bad)} of {count} writes answered neither their old value"
                         f" nor -ERR")
        acked = {k: v for k, v, raw in zip(keys, new, got) if raw[:1] == b"$"}
        self.assertGreater(len(acked), count // 2, f"{outage}: only {len(acked)} of {count} writes acknowledged")
        self.assertGreater((fx.hint_stats(r1, r2) or {}).get("stored_total", 0), 0,
                           f"{outage}: rack 1 kept no hint for rack 2; the fault missed the pipeline")
        wrong = fx.wait_holding([r2, r1, r3], acked, CONVERGE_TIMEOUT)
        if wrong:
            self.fail(f"{outage}: of {len(acked)} acknowledged writes, still missing after {CONVERGE_TIMEOUT}s: "
                      + ", ".join(f"{n}: {len(ks)} e.g. {sorted(ks)[:3]}" for n, ks in sorted(wrong.items()))
                      + "\n" + fx.diagnostics())

    def test_sigstop_of_a_replica_redis(self) -> None:
        self.writes_through_a_fault("pipelines-sigstop", 211, lambda n: n.redis_process.pause(),
                                    lambda n: n.redis_process.resume(), "rack 2's redis-server SIGSTOPped")

    def test_sigkill_of_a_replica_node(self) -> None:
        def restart(n: ClusterNode) -> None:
            n.node_process.spawn()
            n.node_process.wait_ready(20)

        self.writes_through_a_fault("pipelines-sigkill", 221, lambda n: n.node_process.kill(), restart,
                                    "rack 2's node SIGKILLed")
