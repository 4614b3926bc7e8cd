# -*- test-case-name: tests.unit.test_blocked_bench -*-
"""
``dynomite-bench-blocked``: a pipelined client through one node, with and
without many other clients of that node blocked in BLPOP and XREAD BLOCK.

Starts a single node in front of its redis-server (the benchmark's
``single`` target) and, for ``--rounds`` rounds, runs ``redis-benchmark
-c 50 -P 16 -t set`` and ``-t get`` against it twice: once alone, and once
while ``--blocked`` other connections (half BLPOP, half XREAD BLOCK, with
timeout 0, on keys nobody writes) wait in the node.  The two runs of a
round swap order every round.  The report gives, per test, the client's
throughput alone and beside the blocked clients and the median of the
per-round ratios; the blocked clients must still be blocked (no reply)
when each run ends.  A blocked client costs the node a try of its command
every 20 ms (`dynomite.node.blocking`): that is what the ratio shows.

It is opt-in (``make bench-blocked``), apart from ``dynomite-bench``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .benchmark import NODE_BASE, Settings, measure, say
from .interpreters import cpython
from .side_bench import run_side_bench, side_parser, side_settings
from .targets import KINDS, NodeTarget

__all__ = ["Blocked", "Sample", "blocking_command", "main", "summarize"]

FULL_REQUESTS, QUICK_REQUESTS = 400000, 100000


@dataclass
class Sample:
    """One measured run: a test, alone or beside the blocked clients, in one round."""

    round: int
    test: str
    blocked: bool
    rps: float
    p99_ms: Optional[float]
    node_us_per_op: Optional[float]


def blocking_command(i: int) -> bytes:
    """The request of blocked client ``i``: BLPOP for even ones, XREAD BLOCK for odd ones; timeout 0."""
    if i % 2 == 0:
        args: Tuple[bytes, ...] = (b"BLPOP", b"bench:blocked:list:%d" % i, b"0")
    else:
        args = (b"XREAD", b"BLOCK", b"0", b"STREAMS", b"bench:blocked:stream:%d" % i, b"$")
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class Blocked:
    """``count`` connections to ``address``, each blocked in its command until `close`."""

    def __init__(self, address: Tuple[str, int], count: int) -> None:
        self.sockets: List[socket.socket] = []
        try:
            for i in range(count):
                s = socket.create_connection(address, timeout=10)
                s.sendall(blocking_command(i))
                self.sockets.append(s)
        except OSError:
            self.close()
            raise

    def answered(self) -> int:
        """How many got a reply (a blocked client gets none)."""
        n = 0
        for s in self.sockets:
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    n += 1
            except BlockingIOError:
                pass
            except OSError:
                n += 1
            finally:
                s.setblocking(True)
        return n

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets = []


def summarize(samples: Sequence[Sample]) -> List[Dict[str, Any]]:
    """Per test: medians alone and beside the blocked clients, and the median (min, max) of the per-round ratios."""
    rows = []
    for test in dict.fromkeys(s.test for s in samples):
        alone = {s.round: s for s in samples if s.test == test and not s.blocked}
        beside = {s.round: s for s in samples if s.test == test and s.blocked}
        ratios = [beside[r].rps / alone[r].rps for r in sorted(alone) if r in beside and alone[r].rps]
        rows.append({
            "test": test,
            "rps_alone": statistics.median(s.rps for s in alone.values()) if alone else None,
            "rps_blocked": statistics.median(s.rps for s in beside.values()) if beside else None,
            "ratio": statistics.median(ratios) if ratios else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
        })
    return rows


def format_rows(rows: Sequence[Dict[str, Any]], blocked: int) -> str:
    """The report table: one line per test."""
    def num(value: Optional[float], spec: str) -> str:
        return "-" if value is None else format(value, spec)
    lines = [f"{'test':<5} {'alone ops/s':>12} {f'with {blocked} blocked':>18} {'ratio':>6} {'(min-max)':>12}"]
    for r in rows:
        lines.append(
            f"{r['test']:<5} {num(r['rps_alone'], ',.0f'):>12} {num(r['rps_blocked'], ',.0f'):>18}"
            f" {num(r['ratio'], '.2f') + 'x':>6}"
            f" {num(r['ratio_min'], '.2f') + '-' + num(r['ratio_max'], '.2f'):>12}")
    return "\n".join(lines)


def run(settings: Settings, workdir: str, count: int) -> Dict[str, Any]:
    """Start the node, measure every round alone and beside ``count`` blocked clients; the JSON document."""
    target = NodeTarget(KINDS["single"], cpython(), workdir, NODE_BASE)
    samples: List[Sample] = []
    answered = 0
    try:
        say(f"starting {target.label} ...")
        target.start()
        target.wait_serving()
        pipeline = settings.pipeline
        for test in settings.tests:   # warm-up
            measure(target, test, pipeline, max(1, settings.pipelined_requests // 4), settings, 0, workdir)
        for round_no in range(1, settings.rounds + 1):
            for with_blocked in ((False, True) if round_no % 2 else (True, False)):
                target.flush()
                for test in settings.tests:
                    blocked = Blocked(target.client_address, count) if with_blocked else None
                    try:
                        result = measure(target, test, pipeline, settings.pipelined_requests, settings,
                                         round_no, workdir)
                        if blocked is not None:
                            answered += blocked.answered()
                    finally:
                        if blocked is not None:
                            blocked.close()
                    samples.append(Sample(round_no, test.upper(), with_blocked, result.rps, result.p99_ms,
                                          result.node_us_per_op))
                    say(f"round {round_no}/{settings.rounds}  {test.upper()} P{pipeline}"
                        f" {f'with {count} blocked' if with_blocked else 'alone':>14}: {result.rps:,.0f} ops/s")
        target.check()
    finally:
        target.stop()
    return {"settings": settings.to_json(), "blocked_clients": count, "blocked_answered": answered,
            "samples": [asdict(s) for s in samples], "summary": summarize(samples)}


def _parser() -> argparse.ArgumentParser:
    p = side_parser("dynomite-bench-blocked", __doc__.split("\n\n")[1], QUICK_REQUESTS, FULL_REQUESTS,
                    "blocked.json")
    p.add_argument("--blocked", type=int, default=50, help="blocked clients (default 50)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``dynomite-bench-blocked`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    settings = side_settings(parser, args, QUICK_REQUESTS, FULL_REQUESTS, [("--blocked", args.blocked)])
    document = run_side_bench(args, "dynomite-bench-blocked", lambda workdir: run(settings, workdir, args.blocked))
    if document is None:
        return 1
    print(f"one node, redis-benchmark -c {settings.clients} -P {settings.pipeline}, {settings.requests} requests per run,"
          f" {settings.rounds} rounds; {args.blocked} other clients blocked (half BLPOP, half XREAD BLOCK)")
    print(format_rows(document["summary"], args.blocked))
    print(f"blocked clients answered during the runs: {document['blocked_answered']} (0 expected)")
    say(f"results written to {args.json}")
    return 0 if document["blocked_answered"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
