# -*- test-case-name: tests.unit.test_hostile_bench,tests.unit.test_blocked_bench -*-
"""
What the single-node side benchmarks share: their command line and the
`Settings` of their pipelined client.

``dynomite-bench-hostile`` and ``dynomite-bench-blocked`` each measure one
node's pipelined SET/GET client alone and beside something else (hostile
connections, blocked clients): the same redis-benchmark runs as
``dynomite-bench`` (`dynomite.bench.benchmark.measure`), so the same
options, checked the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

from dynomite.launcher.cluster import ClusterError

from .benchmark import DEFAULT_JSON, Settings, say
from .redisbench import BenchmarkError

__all__ = ["cluster_args", "cluster_parser", "run_side_bench", "side_parser", "side_settings"]


def side_parser(prog: str, description: str, quick: int, full: int, results: str) -> argparse.ArgumentParser:
    """The options every side benchmark takes; the caller adds its own."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--quick", action="store_true", help=f"{quick} requests per run (default {full})")
    p.add_argument("-n", "--requests", type=int, metavar="N", help="requests per run")
    p.add_argument("-P", "--pipeline", type=int, default=16, metavar="DEPTH", help="pipeline depth (default 16)")
    p.add_argument("-c", "--clients", type=int, default=50, help="redis-benchmark connections (default 50)")
    p.add_argument("-t", "--tests", default="set,get", help="redis-benchmark tests (default set,get)")
    p.add_argument("--json", default=os.path.join(os.path.dirname(DEFAULT_JSON), results), metavar="PATH",
                   help=f"raw results and summary (default .bench/results/{results})")
    p.add_argument("--workdir", metavar="DIR", help="configs and logs (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    p.add_argument("--redis-benchmark", default="redis-benchmark", metavar="PATH", help="redis-benchmark program")
    return p


def cluster_parser(prog: str, description: str, keys: Tuple[int, int], requests: Tuple[int, int],
                   results: str) -> argparse.ArgumentParser:
    """
    The options of the cluster benchmarks that load keys, then run their
    client beside something (repair, scale-out): ``keys`` and
    ``requests`` are (full, quick) defaults; the caller adds its own.
    """
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--keys", type=int, metavar="N", help=f"keys loaded (default {keys[0]:,})")
    p.add_argument("--quick", action="store_true", help=f"{keys[1]:,} keys, shorter client runs")
    p.add_argument("-n", "--requests", type=int, metavar="N",
                   help=f"redis-benchmark requests per client run (default {requests[0]:,}, quick {requests[1]:,})")
    p.add_argument("--rounds", type=int, default=2, help="SET+GET rounds of the client alone (default 2)")
    p.add_argument("--json", default=os.path.join(os.path.dirname(DEFAULT_JSON), results), metavar="PATH",
                   help=f"results (default .bench/results/{results})")
    p.add_argument("--workdir", metavar="DIR", help="configs and logs (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    p.add_argument("--redis-benchmark", default="redis-benchmark", metavar="PATH", help="redis-benchmark program")
    p.set_defaults(cluster_defaults=(keys, requests))
    return p


def cluster_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """`cluster_parser`'s command line, with ``keys`` and ``requests`` resolved; exits with usage on nonsense."""
    args = parser.parse_args(argv)
    keys, requests = args.cluster_defaults
    args.keys = args.keys if args.keys is not None else keys[1 if args.quick else 0]
    args.requests = args.requests if args.requests is not None else requests[1 if args.quick else 0]
    if args.keys < 1000:
        parser.error("--keys must be at least 1000")
    if args.requests < 1000:
        parser.error("--requests must be at least 1000")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if shutil.which(args.redis_benchmark) is None:
        parser.error(f"{args.redis_benchmark} not found: install redis-tools (apt-get install redis-tools)")
    return args


def side_settings(parser: argparse.ArgumentParser, args: argparse.Namespace, quick: int, full: int,
                  positive: Iterable[Tuple[str, int]] = ()) -> Settings:
    """The pipelined client's settings; a usage error (exit 2) for a bad count or a missing redis-benchmark."""
    for name, value in (("--rounds", args.rounds), ("--pipeline", args.pipeline), ("--clients", args.clients),
                        ("--requests", args.requests or 1), *positive):
        if value < 1:
            parser.error(f"{name} must be at least 1")
    if shutil.which(args.redis_benchmark) is None:
        parser.error(f"{args.redis_benchmark} not found: install redis-tools (apt-get install redis-tools)")
    requests = args.requests or (quick if args.quick else full)
    return Settings(rounds=args.rounds, requests=requests, pipelined_requests=requests, pipeline=args.pipeline,
                    clients=args.clients, data_size=64, keyspace=100000,
                    tests=tuple(t.strip().upper() for t in args.tests.split(",") if t.strip()),
                    kinds=("single",), warmup=0.25, redis_benchmark=args.redis_benchmark)


def cluster_client_settings(args: argparse.Namespace) -> Settings:
    """The pipelined SET/GET client beside a loaded cluster's work (`cluster_args`'s ``requests``)."""
    return Settings(rounds=1, requests=args.requests, pipelined_requests=args.requests, pipeline=16,
                    clients=50, data_size=64, keyspace=100000, tests=("SET", "GET"), kinds=("dc_one",),
                    warmup=0.0, redis_benchmark=args.redis_benchmark)


def run_side_bench(args: argparse.Namespace, prog: str,
                   run: Callable[[str], Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """
    ``run(workdir)`` in ``--workdir`` or a temporary directory (removed
    unless ``--keep``); its document written to ``--json``.  None after an
    error (said on stderr); Ctrl-C exits with 130.
    """
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix=prog + "-")
    os.makedirs(workdir, exist_ok=True)
    try:
        document = run(workdir)
    except (ClusterError, BenchmarkError, RuntimeError, OSError) as e:
        say(f"{prog}: {e}")
        return None
    except KeyboardInterrupt:
        raise SystemExit(130)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(document, f, indent=1)
    return document
