# -*- test-case-name: tests.unit.test_hostile_bench -*-
"""
``dynomite-bench-hostile``: a well-behaved pipelined client through one
node, with and without a flood of hostile connections against that node.

Starts a single node in front of its redis-server (the benchmark's
``single`` target) and, for ``--rounds`` rounds, runs
``redis-benchmark -c 50 -P 16 -t set`` and ``-t get`` against it twice:
once alone, and once while a companion process
(:mod:`dynomite.bench.attacker`) opens and drops hostile connections
against the same node in waves (random bytes, truncated frames, oversize
bulk and argument counts, half requests held open, resets). The two runs
of a round swap order every round, so neither always goes first. The
report gives, per test, the client's throughput alone and under attack,
the median of the per-round ratios (under attack / alone), how many
hostile connections per second the node took meanwhile, the node's CPU
per operation, and its resident memory before the first attack and at
the end; the node must still serve SET and GET afterwards.  It also
gives what the node's CPU grew by under attack, per hostile connection
(its CPU per operation under attack less alone, times the operations,
over the connections the attacker opened), and what its flood guard did
meanwhile (`dynomite.runtime.flood`, from the node's ``/info``): the
connections it refused at accept as a flooder's (``flooder``), and as
unknown addresses' beyond the rate of a flood from many addresses
(``flood``, ``--attacker-sources``).

``--node-python NAME=PATH`` adds a node run by another venv's Python (an
older checkout installed in its own venv): every node is measured alone
and under attack in the same rounds, in an order that rotates by round,
so two versions of the code compare within one run.  ``--accept-rate N``
sets ``client_accept_rate`` on this checkout's node only (the others keep
their default): with ``--node-python same=<this venv's python>`` the bound
is measured on and off in the same rounds.

The attacker, the benchmark client, the node and its redis-server share
this machine's cores, and real hostile traffic comes from other hosts: an
attacker on equal footing takes CPU from the client whatever the node
does.  So each round runs the attack twice (``--attackers``): ``shared``,
the attacker as any process, and ``capped``, the attacker at nice 19 in a
cgroup of its own held to ``--attacker-cpu`` CPUs (`CpuCap`), which
isolates what the node's own handling costs the client.  Both are
reported, with the CPU the attacker used, and the client's operations per
node CPU second beside its operations per second (how much of the node's
work the flood took, whatever the machine did meanwhile).

It is opt-in (``make bench-hostile``), apart from ``dynomite-bench``, as
it takes minutes of its own.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import signal
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

from .attacker import CpuCap, raise_fd_limit
from .benchmark import NODE_BASE, ROOT, Settings, measure, say
from .interpreters import Interpreter, InterpreterError, cpython, for_python
from .redisbench import BenchmarkError
from .repairwatch import Admin
from .side_bench import run_side_bench, side_parser, side_settings
from .targets import KINDS, NodeTarget

__all__ = ["CAPPED", "SHARED", "Sample", "check", "main", "summarize"]

#: Requests per pipelined run: runs last seconds, so the attack spans many waves.
FULL_REQUESTS, QUICK_REQUESTS = 400000, 100000
#: Open files for this process and the node it starts (a wave, the client's connections, the rest).
FD_LIMIT = 8192
#: How the attacker runs: as any process, or held to a CPU quota at nice 19.
SHARED, CAPPED = "shared", "capped"
#: What the issue's check asks of one run.
CHECK_HOSTILE, CHECK_MEMORY_MB, CHECK_RATIO = 10000, 50.0, 0.9


@dataclass
class Sample:
    """One measured run: a test, alone or under attack, in one round."""

    round: int
    test: str
    attacked: bool
    rps: float
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    node_us_per_op: Optional[float]
    hostile_per_s: float = 0.0      # connections the attacker opened per second of this run
    attacker_cpu_s: float = 0.0
    refused: int = 0                # hostile connections that could not connect
    node: str = "cpython"           # the interpreter (and code) running the node
    requests: int = 0
    opened: int = 0                 # hostile connections the attacker opened during this run
    attacker: str = ""              # SHARED or CAPPED under attack, "" alone
    attacker_seconds: float = 0.0   # how long the attacker ran
    throttled_s: float = 0.0        # how long its CPU quota held it back
    node_flooder: int = 0           # connections the node refused at accept as a flooder's (its counters)
    node_flood: int = 0             # ... and as unknown addresses' beyond a flood's rate


def _mode(sample: Sample) -> str:
    return sample.attacker or (SHARED if sample.attacked else "")


def summarize(samples: Sequence[Sample]) -> List[Dict[str, Any]]:
    """
    Per node, test and attacker: medians alone and under attack, the
    median (min, max) of the per-round ratios of operations per second and
    of operations per node CPU second, the node's CPU per hostile
    connection, and the attacker's CPU (in CPUs: seconds per second).
    """
    rows = []
    keys = dict.fromkeys((s.node, s.test, _mode(s)) for s in samples if s.attacked)
    for node, test, mode in keys:
        alone = {s.round: s for s in samples if s.node == node and s.test == test and not s.attacked}
        attacked = {s.round: s for s in samples if s.node == node and s.test == test and _mode(s) == mode}
        rounds = [r for r in sorted(alone) if r in attacked]
        ratios = [attacked[r].rps / alone[r].rps for r in rounds if alone[r].rps]
        per_cpu = [alone[r].node_us_per_op / attacked[r].node_us_per_op for r in rounds
                   if alone[r].node_us_per_op and attacked[r].node_us_per_op]
        hit = list(attacked.values())
        seconds = sum(s.attacker_seconds for s in hit)
        rows.append({
            "node": node,
            "test": test,
            "attacker": mode,
            "rps_alone": statistics.median(s.rps for s in alone.values()) if alone else None,
            "rps_attacked": statistics.median(s.rps for s in hit) if hit else None,
            "ratio": statistics.median(ratios) if ratios else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "ratio_per_node_cpu": statistics.median(per_cpu) if per_cpu else None,
            "p99_alone_ms": _median([s.p99_ms for s in alone.values()]),
            "p99_attacked_ms": _median([s.p99_ms for s in hit]),
            "node_us_alone": _median([s.node_us_per_op for s in alone.values()]),
            "node_us_attacked": _median([s.node_us_per_op for s in hit]),
            "hostile_per_s": statistics.median(s.hostile_per_s for s in hit) if hit else 0.0,
            "hostile_opened": sum(s.opened for s in hit),
            "node_us_per_hostile": _median([_us_per_hostile(alone[r], attacked[r]) for r in rounds]),
            "attacker_cpu_s": sum(s.attacker_cpu_s for s in hit),
            "attacker_cpus": sum(s.attacker_cpu_s for s in hit) / seconds if seconds else None,
            "attacker_throttled_s": sum(s.throttled_s for s in hit),
            "refused": sum(s.refused for s in hit),
            "node_flooder": sum(s.node_flooder for s in hit),
            "node_flood": sum(s.node_flood for s in hit),
        })
    return rows


def _us_per_hostile(alone: Sample, attacked: Sample) -> Optional[float]:
    """The node's CPU microseconds under attack beyond what the same operations cost alone, per hostile connection."""
    if attacked.node_us_per_op is None or alone.node_us_per_op is None or not attacked.opened:
        return None
    return (attacked.node_us_per_op - alone.node_us_per_op) * attacked.requests / attacked.opened


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def format_rows(rows: Sequence[Dict[str, Any]]) -> str:
    """The report table: one line per node, test and attacker."""
    def num(value: Optional[float], spec: str) -> str:
        return "-" if value is None else format(value, spec)
    width = max([4] + [len(r.get("node", "")) for r in rows])
    lines = [f"{'node':<{width}} {'test':<5} {'attacker':<8} {'alone ops/s':>12} {'attacked ops/s':>15}"
             f" {'ratio':>6} {'(min-max)':>12} {'per node CPU':>12} {'p99 ms alone/attacked':>22}"
             f" {'node µs/op':>13} {'hostile conn/s':>15} {'µs/hostile conn':>16} {'attacker CPUs':>14}"
             f" {'flooder/flood':>14}"]
    for r in rows:
        lines.append(
            f"{r.get('node', ''):<{width}} {r['test']:<5} {r.get('attacker', SHARED):<8}"
            f" {num(r['rps_alone'], ',.0f'):>12} {num(r['rps_attacked'], ',.0f'):>15}"
            f" {num(r['ratio'], '.2f') + 'x':>6} {num(r['ratio_min'], '.2f') + '-' + num(r['ratio_max'], '.2f'):>12}"
            f" {num(r.get('ratio_per_node_cpu'), '.2f') + 'x':>12}"
            f" {num(r['p99_alone_ms'], '.2f') + ' / ' + num(r['p99_attacked_ms'], '.2f'):>22}"
            f" {num(r['node_us_alone'], '.1f') + '/' + num(r['node_us_attacked'], '.1f'):>13}"
            f" {r['hostile_per_s']:>15,.0f} {num(r.get('node_us_per_hostile'), '.0f'):>16}"
            f" {num(r.get('attacker_cpus'), '.2f'):>14}"
            f" {'%d/%d' % (r.get('node_flooder', 0), r.get('node_flood', 0)):>14}")
    return "\n".join(lines)


def check(rows: Sequence[Dict[str, Any]], rss: Dict[str, Optional[float]], alive: bool) -> List[str]:
    """
    The issue's check for one node, item by item: at least
    `CHECK_HOSTILE` hostile connections, memory growth under
    `CHECK_MEMORY_MB`, the node up, and the client at `CHECK_RATIO` of
    alone (its median ratio, and its worst round) under each attacker.
    """
    opened = sum(r["hostile_opened"] for r in rows)
    before, after = rss.get("before_attacks"), rss.get("after")
    growth = after - before if before is not None and after is not None else None
    items = [("%d hostile connections (>= %d)" % (opened, CHECK_HOSTILE), opened >= CHECK_HOSTILE),
             ("memory growth %s MB (< %.0f)" % ("-" if growth is None else "%.0f" % growth, CHECK_MEMORY_MB),
              growth is not None and growth < CHECK_MEMORY_MB),
             ("node up and serving", alive)]
    for r in rows:
        items.append(("%s %s attacker: %.2fx, worst round %.2fx (>= %.1f)" % (
            r["test"], r.get("attacker", SHARED), r["ratio"] or 0.0, r["ratio_min"] or 0.0, CHECK_RATIO),
            r["ratio"] is not None and r["ratio"] >= CHECK_RATIO))
    return ["%s %s" % ("met    " if ok else "NOT met", text) for text, ok in items]


class Attacker:
    """The companion process (`dynomite.bench.attacker`), started and stopped by PID."""

    def __init__(self, host: str, port: int, wave: int, hold: float, seed: int,
                 cap: Optional[CpuCap] = None, sources: int = 1) -> None:
        argv = [sys.executable, "-m", "dynomite.bench.attacker", host, str(port),
                "--wave", str(wave), "--hold", str(hold), "--seed", str(seed), "--sources", str(sources)]
        self.cap = cap
        self._throttled = cap.throttled_s() if cap is not None else 0.0
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     preexec_fn=cap.preexec if cap is not None else None)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.stop()
            raise BenchmarkError(f"the attacker did not open its first wave: {line!r}")

    def stop(self) -> Dict[str, float]:
        """SIGTERM, then its counts (empty if it died)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        lines = out.decode(errors="replace").strip().splitlines()
        counts = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        if self.cap is not None and counts:
            counts["throttled_s"] = round(self.cap.throttled_s() - self._throttled, 3)
        return counts


def _rss_mb(pid: Optional[int]) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, TypeError):
        pass
    return None


def run(settings: Settings, workdir: str, wave: int, hold: float,
        interpreters: Optional[Sequence[Interpreter]] = None, attackers: Sequence[str] = (SHARED,),
        attacker_cpu: float = 0.25, accept_rate: Optional[int] = None, sources: int = 1) -> Dict[str, Any]:
    """
    Start one node per interpreter, measure each every round alone and
    under each of ``attackers``, stop the nodes; the JSON document.
    ``accept_rate`` sets the first node's ``client_accept_rate`` (the
    others, maybe older code, keep their default); ``sources``: the
    addresses the attacker's connections come from.
    """
    base = ipaddress.IPv4Address(NODE_BASE)
    targets = [NodeTarget(KINDS["single"], interpreter, workdir, str(base + 10 * i))
               for i, interpreter in enumerate(interpreters or [cpython()])]
    if accept_rate is not None:
        cluster = targets[0].cluster
        cluster.node_settings = tuple(cluster.node_settings) + (("client_accept_rate", accept_rate),)
    samples: List[Sample] = []
    rss: Dict[str, Dict[str, Optional[float]]] = {}
    alive: Dict[str, bool] = {}
    cap = CpuCap(attacker_cpu, "dynomite-bench-attacker-%d" % os.getpid()) if CAPPED in attackers else None
    modes: List[str] = [""] + list(attackers)
    try:
        if cap is not None:
            say(f"capped attacker: {cap.how}")
        for target in targets:
            say(f"starting {target.label} ...")
            target.start()
            target.wait_serving()
        pipeline = settings.pipeline
        for target in targets:
            for test in settings.tests:   # warm-up
                measure(target, test, pipeline, max(1, settings.pipelined_requests // 4), settings, 0, workdir)
            rss[target.interpreter.name] = {"before_attacks": _rss_mb(target.node_pids[0])}
        for round_no in range(1, settings.rounds + 1):
            shift = (round_no - 1) % len(targets)
            turn = (round_no - 1) % len(modes)
            for target in targets[shift:] + targets[:shift]:
                samples += _measure_round(target, settings, round_no, wave, hold, workdir,
                                          modes[turn:] + modes[:turn], cap, sources)
        for target in targets:
            target.check()   # still serving after the last attack
            name = target.interpreter.name
            rss[name]["after"] = _rss_mb(target.node_pids[0])
            alive[name] = target.cluster.nodes[0].node_process.running()
    finally:
        for target in targets:
            target.stop()
        if cap is not None:
            cap.close()
    return {"settings": settings.to_json(), "wave": wave, "hold_s": hold,
            "attackers": list(attackers), "attacker_cpu": attacker_cpu,
            "capped_attacker": cap.how if cap is not None else None, "accept_rate": accept_rate,
            "attacker_sources": sources,
            "nodes": [t.interpreter.describe() for t in targets],
            "samples": [asdict(s) for s in samples], "summary": summarize(samples),
            "node_rss_mb": rss, "node_alive": alive}


def _limits(target: NodeTarget) -> Dict[str, int]:
    """The node's client limits counters (``/info``): empty if it does not say (older code)."""
    try:
        return dict(Admin(target.cluster.nodes[0].stats_address).get("/info")["client"]["limits"])
    except (OSError, RuntimeError, ValueError, KeyError, TypeError):
        return {}


def _measure_round(target: NodeTarget, settings: Settings, round_no: int, wave: int, hold: float,
                   workdir: str, modes: Sequence[str], cap: Optional[CpuCap], sources: int = 1) -> List[Sample]:
    """
    One round on one node: each test alone ("") and under each attacker
    of ``modes``, in that order (the caller rotates it by round).
    """
    samples = []
    host, port = target.client_address
    name = target.interpreter.name
    for mode in modes:
        target.flush()
        for test in settings.tests:
            limits = _limits(target) if mode else {}
            attacker = (Attacker(host, port, wave, hold, seed=round_no, cap=cap if mode == CAPPED else None,
                                 sources=sources) if mode else None)
            result = measure(target, test, settings.pipeline, settings.pipelined_requests, settings, round_no,
                             workdir)
            counts = attacker.stop() if attacker is not None else {}
            after = _limits(target) if mode else {}
            seconds = counts.get("seconds") or 0.0
            opened = int(counts.get("opened", 0))
            samples.append(Sample(
                round_no, test.upper(), bool(mode), result.rps, result.p50_ms, result.p99_ms,
                result.node_us_per_op, opened / seconds if seconds else 0.0,
                counts.get("cpu_s", 0.0), int(counts.get("refused", 0)), name, settings.pipelined_requests,
                opened, mode, seconds, counts.get("throttled_s", 0.0),
                after.get("flooder", 0) - limits.get("flooder", 0), after.get("flood", 0) - limits.get("flood", 0)))
            say(f"round {round_no}/{settings.rounds}  {name} {test.upper()} P{settings.pipeline}"
                f" {mode + ' attacker' if mode else 'alone':>15}: {result.rps:,.0f} ops/s"
                + (f", {samples[-1].hostile_per_s:,.0f} hostile connections/s,"
                   f" attacker {counts.get('cpu_s', 0.0) / seconds if seconds else 0.0:.2f} CPUs" if mode else ""))
    return samples


def _parser() -> argparse.ArgumentParser:
    p = side_parser("dynomite-bench-hostile", __doc__.split("\n\n")[1], QUICK_REQUESTS, FULL_REQUESTS,
                    "hostile.json")
    p.add_argument("--wave", type=int, default=500, help="hostile connections open at once (default 500)")
    p.add_argument("--hold", type=float, default=0.2, help="seconds each wave is held open (default 0.2)")
    p.add_argument("--attackers", default=f"{SHARED},{CAPPED}", metavar="MODE[,MODE]",
                   help=f"how the attacker runs, each every round: {SHARED} (as any process), {CAPPED}"
                        f" (at nice 19 in a cgroup held to --attacker-cpu CPUs); default both")
    p.add_argument("--attacker-cpu", type=float, default=0.25, metavar="CPUS",
                   help="the capped attacker's CPU quota, in CPUs (default 0.25)")
    p.add_argument("--attacker-sources", type=int, default=1, metavar="N",
                   help="loopback addresses the hostile connections come from (default 1: one hostile host;"
                        " many spread a flood so that no address alone floods)")
    p.add_argument("--accept-rate", type=int, metavar="N",
                   help="client_accept_rate of this checkout's node (default: the node's default);"
                        " --node-python nodes keep theirs")
    p.add_argument("--node-python", action="append", metavar="[NAME=]PATH", default=[],
                   help="also measure a node run by this Python (another checkout's venv), in the same rounds")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``dynomite-bench-hostile`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    settings = side_settings(parser, args, QUICK_REQUESTS, FULL_REQUESTS, [("--wave", args.wave)])
    attackers = [m.strip() for m in args.attackers.split(",") if m.strip()]
    if not attackers or any(m not in (SHARED, CAPPED) for m in attackers):
        parser.error(f"--attackers: {SHARED}, {CAPPED} or both, not {args.attackers!r}")
    if args.accept_rate is not None and args.accept_rate < 0:
        parser.error("--accept-rate must be at least 0")
    if not 1 <= args.attacker_sources <= 65536:
        parser.error("--attacker-sources must be between 1 and 65536")
    if not 0.01 <= args.attacker_cpu <= 64:
        parser.error("--attacker-cpu must be between 0.01 and 64 CPUs")
    try:
        interpreters = [cpython()] + [for_python(spec, ROOT, say) for spec in args.node_python]
    except InterpreterError as e:
        parser.error(str(e))
    if len({i.name for i in interpreters}) != len(interpreters):
        parser.error("two nodes share a name: give each --node-python its own NAME=")
    raise_fd_limit(FD_LIMIT)   # before the node starts: it inherits it (maxclients is 10,000)
    document = run_side_bench(args, "dynomite-bench-hostile", lambda workdir: run(
        settings, workdir, args.wave, args.hold, interpreters, attackers, args.attacker_cpu, args.accept_rate,
        args.attacker_sources))
    if document is None:
        return 1
    print(f"one node, redis-benchmark -c {settings.clients} -P {settings.pipeline}, {settings.requests} requests per run,"
          f" {settings.rounds} rounds; attacker: waves of {args.wave} hostile connections held {args.hold}s,"
          f" from {args.attacker_sources} address{'es' if args.attacker_sources > 1 else ''}")
    if document["capped_attacker"]:
        print(f"capped attacker: {document['capped_attacker']}")
    print(format_rows(document["summary"]))
    for name, memory in document["node_rss_mb"].items():
        before, after = memory.get("before_attacks"), memory.get("after")
        print(f"{name} node resident memory: {before or 0:.0f} MB before the first attack, {after or 0:.0f} MB"
              f" at the end; node {'up and serving' if document['node_alive'].get(name) else 'DOWN'}")
        rows = [r for r in document["summary"] if r["node"] == name]
        for line in check(rows, memory, document["node_alive"].get(name, False)):
            print(f"  {name}: {line}")
    say(f"results written to {args.json}")
    return 0 if all(document["node_alive"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
