# -*- test-case-name: tests.unit.test_benchmark -*-
"""
``dynomite-bench``: dynomite nodes against plain Redis, measured in the same run.

Starts, on this machine with ephemeral ports on 127.0.0.x: a plain
redis-server; a single node in front of its redis-server; and a cluster of
one datacenter with three racks of one node at DC_ONE and another at
DC_QUORUM (read and write consistency); and the single node and the DC_ONE
cluster again with TLS (clients on ``tls_listen`` alone, redis-benchmark
``--tls``; ``secure_server_option: all`` between the nodes). Then, for ``--rounds`` rounds, runs
``redis-benchmark -c 50 -d 64 -r 100000 -t set`` and ``-t get`` without
pipelining and with ``-P 16`` against every target in turn, emptying the
target's redis-servers before each SET. All targets run in every round, so
each ratio compares a target with the plain Redis measured minutes apart
at most; the table gives the median of those per-round ratios.

CPU: utime + stime of every node process of a target (from /proc) across
each run, divided by the requests: node CPU µs per operation. The machine's
own counters give how much CPU other processes used meanwhile; a busy
machine (another build, another benchmark) depresses the node's figures
more than plain Redis's, and the report says how busy it was.

The benchmark client, the nodes and the redis-servers share this machine's
cores (two, where this project is developed): the figures are for
comparing, not absolute capacity.

``--interpreter pypy`` runs the nodes under PyPy 3 (see
:mod:`bench.interpreters`); ``--compare-interpreters`` runs CPython and
PyPy nodes in the same rounds and prints them side by side.

Run it as ``dynomite-bench`` or ``python -m bench.benchmark`` from the
project root (``python -m dynomite.bench.benchmark`` works too).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dynomite.launcher.cluster import ClusterError

from . import redisbench, report
from .cpu import CpuSample
from .interpreters import Interpreter, InterpreterError, cpython, for_python, pypy
from .redisbench import BenchmarkError
from .targets import KINDS, NodeTarget, RedisTarget, Target

__all__ = ["Settings", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_JSON = os.path.join(ROOT, ".bench", "results", "latest.json")
#: Plain Redis listens here; node targets take blocks of ten addresses from NODE_BASE.
REDIS_HOST = "127.0.0.101"
NODE_BASE = "127.0.0.111"
JSON_FORMAT = 1

#: (requests without pipelining, requests with pipelining) per test.
FULL_REQUESTS = (20000, 100000)
QUICK_REQUESTS = (4000, 20000)
#: Plain Redis is 4 to 10 times faster than a node: it gets this many times the
#: requests, so its runs last about as long and a burst of other work on the
#: machine is averaged over seconds rather than deciding a half-second run.
REDIS_FACTOR = 4


@dataclass(frozen=True)
class Settings:
    """What one benchmark run does; built from the command line."""

    rounds: int
    requests: int
    pipelined_requests: int
    pipeline: int
    clients: int
    data_size: int
    keyspace: int
    tests: Tuple[str, ...]
    kinds: Tuple[str, ...]
    warmup: float
    redis_benchmark: str
    redis_factor: int = REDIS_FACTOR

    @property
    def pipelines(self) -> Tuple[int, ...]:
        return (1, self.pipeline) if self.pipeline != 1 else (1,)

    def requests_for(self, pipeline: int, target: Optional[Target] = None) -> int:
        """Requests per test at ``pipeline`` depth; plain Redis gets ``redis_factor`` times more."""
        n = self.requests if pipeline == 1 else self.pipelined_requests
        return n * self.redis_factor if target is not None and target.kind.is_redis else n

    def to_json(self) -> Dict[str, Any]:
        return {
            "rounds": self.rounds, "clients": self.clients, "data_size": self.data_size,
            "keyspace": self.keyspace, "tests": list(self.tests), "targets": list(self.kinds),
            "pipelines": list(self.pipelines),
            "requests": {str(p): self.requests_for(p) for p in self.pipelines},
            "redis_requests_factor": self.redis_factor,
            "warmup": self.warmup, "redis_benchmark": self.redis_benchmark,
        }


def say(text: str) -> None:
    """A progress line, on stderr so the tables on stdout stay clean."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# -- one measured run ------------------------------------------------------------------------


def measure(target: Target, test: str, pipeline: int, requests: int, settings: Settings, round_no: int,
            scratch: str) -> report.Run:
    """Run one redis-benchmark test against ``target``, charging CPU to its processes."""
    host, port = target.client_address
    argv = redisbench.command(
        host, port, test, requests, pipeline, settings.clients, settings.data_size, settings.keyspace,
        program=settings.redis_benchmark, tls_args=target.tls_args,
    )
    node_pids, redis_pids = target.node_pids, target.redis_pids
    pids = node_pids + redis_pids
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    before = CpuSample.take(pids)
    output = redisbench.run(argv, scratch)
    after = CpuSample.take(pids)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    used = after.used_since(before, pids)
    busy, total = after.machine_since(before)
    node_cpu = sum(used[p] for p in node_pids)
    redis_cpu = sum(used[p] for p in redis_pids)
    own = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    result = next((r for r in output.results if r.test.upper() == test.upper()), output.results[0])
    return report.Run(
        round=round_no, target=target.id, kind=target.kind.name,
        interpreter=target.interpreter.name if target.interpreter else None,
        test=test.upper(), pipeline=pipeline, requests=requests, rps=result.rps,
        avg_ms=result.avg_ms, min_ms=result.min_ms, p50_ms=result.p50_ms, p95_ms=result.p95_ms,
        p99_ms=result.p99_ms, max_ms=result.max_ms, wall_s=round(output.wall_s, 3),
        node_cpu_s=round(node_cpu, 3), node_cpu_by_pid={str(p): round(used[p], 3) for p in node_pids},
        redis_cpu_s=round(redis_cpu, 3), client_cpu_s=round(output.cpu_s, 3),
        machine_busy_s=round(busy, 3), machine_total_s=round(total, 3),
        other_cpu_s=round(busy - node_cpu - redis_cpu - output.cpu_s - own, 3),
        keys_after=target.key_counts(),
    )


# -- the whole benchmark ----------------------------------------------------------------------


class Benchmark:
    """Starts the targets, runs the rounds, and keeps every run for the report."""

    def __init__(self, settings: Settings, interpreters: Sequence[Interpreter], workdir: str) -> None:
        self.settings = settings
        self.interpreters = list(interpreters)
        self.workdir = workdir
        self.targets: List[Target] = []
        self.started: List[Target] = []
        self.runs: List[report.Run] = []
        self.warnings: List[str] = []
        self._durations: Dict[Tuple[str, str, int], float] = {}

    def plan(self) -> None:
        """Build the targets (nothing starts yet): plain Redis, then each node kind under each interpreter."""
        self.targets = [RedisTarget(self.workdir, REDIS_HOST)]
        base = ipaddress.IPv4Address(NODE_BASE)
        for interpreter in self.interpreters:
            for name in self.settings.kinds:
                kind = KINDS[name]
                if kind.is_redis:
                    continue
                self.targets.append(NodeTarget(kind, interpreter, self.workdir, str(base)))
                base += 10

    def start(self) -> None:
        for target in self.targets:
            say(f"starting {target.label} ...")
            self.started.append(target)
            target.start()
            target.wait_serving()
            target.flush()

    def stop(self) -> None:
        for target in reversed(self.started):
            try:
                target.stop()
            except Exception as e:  # keep stopping the others
                say(f"could not stop {target.label}: {e}")
        self.started = []

    def warm_up(self) -> None:
        """Untimed runs of every test at every depth (PyPy's JIT, connection pools), then a flush."""
        if self.settings.warmup <= 0:
            return
        for target in self.targets:
            say(f"warming up {target.label} ...")
            for pipeline in self.settings.pipelines:
                requests = max(1, int(self.settings.requests_for(pipeline, target) * self.settings.warmup))
                for test in self.settings.tests:
                    host, port = target.client_address
                    redisbench.run(redisbench.command(
                        host, port, test, requests, pipeline, self.settings.clients, self.settings.data_size,
                        self.settings.keyspace, program=self.settings.redis_benchmark, tls_args=target.tls_args,
                    ), self.workdir)
            target.flush()

    def run_rounds(self) -> None:
        s = self.settings
        total = s.rounds * len(s.pipelines) * len(self.targets) * len(s.tests)
        done = 0
        started = time.monotonic()
        for round_no in range(1, s.rounds + 1):
            for pipeline in s.pipelines:
                for target in self.round_order(round_no):
                    requests = s.requests_for(pipeline, target)
                    target.flush()
                    for test in s.tests:
                        done += 1
                        head = (f"[{done:>{len(str(total))}}/{total}] round {round_no}/{s.rounds}"
                                f"  {target.label}  {test.upper()} P{pipeline}  {requests} requests")
                        run = measure(target, test, pipeline, requests, s, round_no, self.workdir)
                        self.runs.append(run)
                        self._durations.setdefault((target.id, test, pipeline), run.wall_s)
                        self._check_keys(target, run)
                        say(f"{head}: {self._describe(run)}  ({_duration(time.monotonic() - started)},"
                            f" {self._eta(round_no, pipeline, target, test)} left)")

    def round_order(self, round_no: int) -> List[Target]:
        """
        The targets in the order round ``round_no`` runs them: plain Redis
        first (every ratio is to it), then the nodes, in plan order on odd
        rounds and reversed on even ones.  On this 2-core machine whichever
        interpreter runs first in a round measured 10-20% slower than the
        same code running second, so no interpreter may always go first.
        """
        plain = [t for t in self.targets if t.interpreter is None]
        nodes = [t for t in self.targets if t.interpreter is not None]
        return plain + (nodes if round_no % 2 else nodes[::-1])

    def _describe(self, run: report.Run) -> str:
        text = f"{run.rps:,.0f} ops/s"
        base = next((r for r in self.runs if r.target == "redis" and r.round == run.round
                     and r.test == run.test and r.pipeline == run.pipeline), None)
        if base is not None and run.target != "redis":
            text += f", {run.rps / base.rps:.2f}x redis"
        if run.node_us_per_op is not None:
            text += f", node CPU {run.node_us_per_op:.1f} µs/op"
        if run.other_load is not None:
            text += f", other load {run.other_load:.0%}"
        return text

    def _eta(self, round_no: int, pipeline: int, target: Target, test: str) -> str:
        """Time left, from the first round's durations of the runs still to come."""
        s = self.settings
        order = [(p, t.id, x) for p in s.pipelines for t in self.round_order(round_no) for x in s.tests]
        position = order.index((pipeline, target.id, test))
        remaining = order[position + 1:] + order * (s.rounds - round_no)
        known = list(self._durations.values())
        fallback = statistics.mean(known) if known else 0.0
        seconds = sum(self._durations.get((t, x, p), fallback) for p, t, x in remaining)
        return "~" + _duration(seconds)

    def _check_keys(self, target: Target, run: report.Run) -> None:
        """After a SET every redis-server of the target (every rack holds a copy) must hold keys."""
        if run.test != "SET":
            return
        empty = [i for i, n in enumerate(run.keys_after) if n == 0]
        if empty:
            where = ", ".join(f"{target.backends[i][0]}:{target.backends[i][1]}" for i in empty)
            message = (f"round {run.round}: after SET P{run.pipeline} against {target.label},"
                       f" redis-server {where} holds no keys")
            self.warnings.append(message)
            say("WARNING: " + message)

    # -- the report

    def labels(self) -> Dict[str, str]:
        return {t.id: t.label for t in self.targets}

    def document(self, summaries: Sequence[report.Summary], goals: Sequence[Dict[str, Any]],
                 environment: Dict[str, Any], command: Sequence[str], started: str, complete: bool) -> Dict[str, Any]:
        return {
            "format": JSON_FORMAT,
            "command": list(command),
            "started": started,
            "finished": _now(),
            "complete": complete,
            "settings": self.settings.to_json(),
            "environment": environment,
            "targets": [t.describe() for t in self.targets],
            "summary": [s.to_json() for s in summaries],
            "goals": list(goals),
            "warnings": self.warnings,
            "runs": [r.to_json() for r in self.runs],
        }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _loadavg() -> Optional[List[float]]:
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def _git(*args: str) -> str:
    try:
        # --no-optional-locks: reading the status must not rewrite the index.
        return subprocess.run(["git", "--no-optional-locks", "-C", ROOT, *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def environment(settings: Settings, interpreters: Sequence[Interpreter]) -> Dict[str, Any]:
    """What the figures depend on besides the code: the machine, the programs, the commit."""
    redis_server = shutil.which("redis-server") or "redis-server"
    try:
        server_version = subprocess.run([redis_server, "--version"], capture_output=True, text=True,
                                        timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        server_version = ""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_at_start": _loadavg(),
        "redis_benchmark": redisbench.version(settings.redis_benchmark),
        "redis_server": server_version,
        "bench_python": sys.version.split()[0],
        "interpreters": [i.describe() for i in interpreters],
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def write_json(path: str, document: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(document, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def print_report(bench: Benchmark, summaries: Sequence[report.Summary], goals: Sequence[Dict[str, Any]],
                 out: Any = None) -> None:
    out = out or sys.stdout
    s = bench.settings
    requests = ", ".join(f"P{p}: {s.requests_for(p)}" for p in s.pipelines)
    rounds = max((r.round for r in bench.runs), default=0)
    out.write(
        f"\nredis-benchmark -c {s.clients} -d {s.data_size} -r {s.keyspace}, {rounds} round"
        f"{'s' * (rounds != 1)}, requests per test {requests}; {os.cpu_count()} CPUs shared by the client,"
        f" the nodes and the redis-servers\n"
        f"plain Redis runs {s.redis_factor} times as many requests (its runs last about as long as a node's)\n"
        "ops/s, p50, p99 and node CPU: medians over the rounds; vs redis: median of the per-round ratios to plain"
        " Redis (min-max); node CPU: all node processes of the target\n\n"
    )
    out.write(report.format_table(summaries) + "\n")
    names = [i.name for i in bench.interpreters]
    if len(names) > 1:
        out.write("\n" + report.format_comparison(summaries, names) + "\n")
    if goals:
        out.write("\n" + report.format_goals(goals) + "\n")
    loads = [r.other_load for r in bench.runs if r.other_load is not None]
    if loads:
        out.write(
            f"\nother processes on this machine used {statistics.median(loads):.0%} of its CPU during a run"
            f" (median; max {max(loads):.0%})\n"
        )
    for warning in bench.warnings:
        out.write(f"WARNING: {warning}\n")
    out.flush()


# -- the command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dynomite-bench",
        description="Benchmark dynomite nodes against plain Redis measured in the same run: a single node and"
                    " 3-rack clusters at DC_ONE and DC_QUORUM, in clear and over TLS, SET and GET, without and"
                    " with pipelining.",
        epilog="Defaults take 5 to 10 minutes on a 2-core machine; --quick about a minute.",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds; every target runs in every round (default 3)")
    p.add_argument("--quick", action="store_true",
                   help=f"fewer requests: {QUICK_REQUESTS[0]} and {QUICK_REQUESTS[1]} pipelined"
                        f" (default {FULL_REQUESTS[0]} and {FULL_REQUESTS[1]})")
    p.add_argument("-n", "--requests", type=int, metavar="N", help="requests per test without pipelining")
    p.add_argument("--pipelined-requests", type=int, metavar="N", help="requests per test with pipelining")
    p.add_argument("-P", "--pipeline", type=int, default=16, metavar="DEPTH",
                   help="pipeline depth of the pipelined runs (default 16; 1: no pipelined runs)")
    p.add_argument("-c", "--clients", type=int, default=50, help="redis-benchmark connections (default 50)")
    p.add_argument("-d", "--data-size", type=int, default=64, help="value size in bytes (default 64)")
    p.add_argument("-r", "--keyspace", type=int, default=100000, help="random keys (default 100000)")
    p.add_argument("-t", "--tests", default="set,get", help="redis-benchmark tests (default set,get)")
    p.add_argument("--targets", default=",".join(k.name for k in KINDS.values() if k.by_default),
                   help=f"targets among {', '.join(KINDS)} (default all but "
                        f"{', '.join(k.name for k in KINDS.values() if not k.by_default)}; plain redis always runs)")
    p.add_argument("--interpreter", action="append", choices=("cpython", "pypy"),
                   help="Python running the nodes (default cpython; repeat to compare)")
    p.add_argument("--node-python", action="append", metavar="[NAME=]PATH", default=[],
                   help="another Python to run the nodes: its venv's twistd, or a venv made under .bench/")
    p.add_argument("--compare-interpreters", action="store_true",
                   help="nodes under CPython and under PyPy in the same rounds, side by side")
    p.add_argument("--redis-factor", type=int, default=REDIS_FACTOR, metavar="K",
                   help=f"plain Redis runs K times the requests, as it is faster (default {REDIS_FACTOR})")
    p.add_argument("--warmup", type=float, default=0.5, metavar="FRACTION",
                   help="untimed warm-up per target before round 1, as a fraction of the requests (default 0.5)")
    p.add_argument("--json", default=DEFAULT_JSON, metavar="PATH",
                   help="raw results and summary (default .bench/results/latest.json)")
    p.add_argument("--workdir", metavar="DIR", help="configs and logs (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (configs, node and redis logs)")
    p.add_argument("--redis-benchmark", default="redis-benchmark", metavar="PATH", help="redis-benchmark program")
    return p


def settings_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    defaults = QUICK_REQUESTS if args.quick else FULL_REQUESTS
    kinds = [k.strip() for k in args.targets.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"--targets: unknown {', '.join(unknown)}; choose among {', '.join(KINDS)}")
    kinds = ["redis"] + [k for k in KINDS if k in kinds and k != "redis"]
    tests = tuple(t.strip().upper() for t in args.tests.split(",") if t.strip())
    for name, value in (("--rounds", args.rounds), ("--pipeline", args.pipeline), ("--clients", args.clients),
                        ("--requests", args.requests or 1), ("--redis-factor", args.redis_factor), ("--pipelined-requests", args.pipelined_requests or 1)):
        if value < 1:
            parser.error(f"{name} must be at least 1")
    if shutil.which(args.redis_benchmark) is None:
        parser.error(f"{args.redis_benchmark} not found: install redis-tools (apt-get install redis-tools)")
    return Settings(
        rounds=args.rounds,
        requests=args.requests or defaults[0],
        pipelined_requests=args.pipelined_requests or defaults[1],
        pipeline=args.pipeline, clients=args.clients, data_size=args.data_size, keyspace=args.keyspace,
        tests=tests, kinds=tuple(kinds), warmup=args.warmup, redis_benchmark=args.redis_benchmark,
        redis_factor=args.redis_factor,
    )


def interpreters_from(args: argparse.Namespace) -> List[Interpreter]:
    names = list(args.interpreter or [])
    if args.compare_interpreters:
        names = ["cpython", "pypy"] + [n for n in names if n not in ("cpython", "pypy")]
    if not names and not args.node_python:
        names = ["cpython"]
    chosen: List[Interpreter] = []
    for name in dict.fromkeys(names):
        chosen.append(cpython() if name == "cpython" else pypy(ROOT, say))
    for path in args.node_python:
        chosen.append(for_python(path, ROOT, say))
    if len({i.name for i in chosen}) != len(chosen):
        raise InterpreterError("two interpreters share a name; pass each only once")
    return chosen


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``dynomite-bench`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    settings = settings_from(args, parser)
    command = ["dynomite-bench", *(sys.argv[1:] if argv is None else argv)]
    saved = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="dynomite-bench-")
    os.makedirs(workdir, exist_ok=True)
    bench: Optional[Benchmark] = None
    env: Dict[str, Any] = {}
    started = _now()
    status, complete = 1, False
    try:
        interpreters = interpreters_from(args)
        for i in interpreters:
            say(f"nodes run under {i.name}: {i.version} ({i.twistd})")
        bench = Benchmark(settings, interpreters, workdir)
        env = environment(settings, interpreters)
        bench.plan()
        bench.start()
        bench.warm_up()
        bench.run_rounds()
        complete, status = True, 0
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything the benchmark started ...")
        status = 130
    except (ClusterError, BenchmarkError, InterpreterError, RuntimeError, OSError) as e:
        say(f"dynomite-bench: {e}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleanup must not be interrupted half-way
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if bench is not None:
                bench.stop()
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                say(f"kept configs and logs in {workdir}")
        finally:
            signal.signal(signal.SIGINT, saved[0])
            signal.signal(signal.SIGTERM, saved[1])
    if bench is None or not bench.runs:
        return status
    summaries = report.summarize(bench.runs, bench.labels())
    goals = report.check_goals(summaries, [i.name for i in bench.interpreters])
    env["loadavg_at_end"] = _loadavg()
    write_json(args.json, bench.document(summaries, goals, env, command, started, complete))
    print_report(bench, summaries, goals)
    say(f"{'results' if complete else 'partial results (interrupted)'} written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
