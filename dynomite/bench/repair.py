# -*- test-case-name: tests.unit.test_bench_repair -*-
"""
``dynomite-bench-repair``: anti-entropy repair of a million keys, timed.

Starts one datacenter of three racks of one node (the benchmark's
``dc_one`` target: ephemeral ports on 127.0.0.x, a temporary directory),
loads ``--keys`` keys (strings, hashes, sets, lists, sorted sets, some with
an expiry; `dynomite.bench.dataset`) straight into every rack's Redis with
pipelines, the same data everywhere, and damages 10% of them on rack 2 or
rack 3 (deleted, value changed, expiry changed), straight in Redis.  Then:

1. a repair through the admin API (``/repair/start``) at the node's
   default ``repair_rate``, while a pipelined client (redis-benchmark
   ``-c 50 -P 16`` SET and GET, as ``dynomite-bench`` runs it) goes
   through the first node; the same client is measured alone before and
   after, and the report gives the ratio during / alone;
2. the same damage again, and a repair with ``rate=0`` (no limit), alone.

After each repair every damaged key is compared on the three Redis servers
directly (the repair script's digests), and a second repair must find no
differing key.  ``/repair`` is polled every `repairwatch.POLL` seconds: the time of
each phase comes from those polls (to a poll's precision), keys compared
per second is what the digest phase scanned over its time, keys repaired
per second the repaired keys over the repairing phase's time.

Last, the digest method (`dynomite.bench.digests`): on rack 1's Redis,
the repair script's cells scan against SCAN + DUMP + PEXPIRETIME with the
hashing in Python, keys/s and CPU per key of each.

Results go to ``.bench/results/repair.json``.  It is opt-in
(``make bench-repair``): the full run takes 15 to 20 minutes here.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dynomite.repair.run import PHASES

from . import clientruns, dataset, digests
from .benchmark import NODE_BASE, Settings, say
from .clientruns import ClientRuns
from .interpreters import cpython
from .repairwatch import Admin, MachineLoad, Poll, finish, start_repair
from .side_bench import cluster_args, cluster_client_settings, cluster_parser, run_side_bench
from .targets import KINDS, NodeTarget

__all__ = ["main", "phase_times", "summarize_throughput", "format_report"]

FULL_KEYS, QUICK_KEYS = 1_000_000, 100_000
#: redis-benchmark requests per measured run
FULL_REQUESTS, QUICK_REQUESTS = 200_000, 50_000
#: a damaged key's expiry is this far ahead of the load (ms)
EXPIRY_AHEAD_MS = 2 * 3600 * 1000


# -- pure parts ---------------------------------------------------------------------


def phase_times(polls: Sequence[Poll], started: float, finished: float) -> Dict[str, float]:
    """
    Seconds spent in each phase seen: a phase begins halfway between the
    last poll of the phase before and its own first poll (the first at
    ``started``), and ends where the next begins (the last at ``finished``).
    """
    starts: List[Tuple[str, float]] = []
    previous: Optional[Poll] = None
    for poll in polls:
        if previous is None or poll[1] != previous[1]:
            at = started if previous is None else (previous[0] + poll[0]) / 2
            starts.append((poll[1], at))
        previous = poll
    times: Dict[str, float] = {}
    for i, (phase, at) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else finished
        times[phase] = round(times.get(phase, 0.0) + max(end - at, 0.0), 3)
    return times


def digest_scanned(polls: Sequence[Poll], result: Dict[str, Any]) -> int:
    """Keys the digest phase scanned: all scanned before the listing, or all if it never listed."""
    for _, phase, scanned, phase_scanned in polls:
        if phase != "digests" and phase != "sizing":
            return scanned - phase_scanned
    return int(result["scanned"])


def repair_figures(polls: Sequence[Poll], result: Dict[str, Any]) -> Dict[str, Any]:
    """A finished repair's figures: phases, keys/s compared and repaired, the counts."""
    wall = result["finished"] - result["started"]
    times = phase_times(polls, result["started"], result["finished"])
    compared = digest_scanned(polls, result)
    repairing = times.get("repairing")
    return {
        "phase": result["phase"], "error": result["error"], "wall_s": round(wall, 3), "phases_s": times,
        "digest_scanned": compared,
        "compared_per_s": round(compared / times["digests"], 1) if times.get("digests") else None,
        "repaired_per_s": round(result["keys_repaired"] / repairing, 1) if repairing else None,
        **{k: result[k] for k in ("keys_total", "scanned", "cells_differing", "keys_differing", "keys_changed",
                                  "keys_repaired", "keys_skipped", "keys_undecided")},
    }


def summarize_throughput(samples: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per test: the median ops/s alone and during the repair, and their ratio (`clientruns.summarize_throughput`)."""
    return clientruns.summarize_throughput(samples, PHASES, "during_repair")


_num = clientruns.num


def format_report(doc: Dict[str, Any]) -> str:
    """The figures as text tables (stdout)."""
    d = doc["damage"]
    lines = [f"{doc['keys']:,} keys on 3 racks, loaded in {doc['load_s']:.1f} s per Redis;"
             f" {d['deleted'] + d['changed'] + d['expiry']:,} damaged on racks 2 and 3"
             f" ({d['deleted']:,} deleted, {d['changed']:,} changed, {d['expiry']:,} expiry moved)", ""]
    head = "".join(f"{p:>11}" for p in PHASES)
    lines.append(f"{'repair':<13}{'wall s':>8}{head}{'compared/s':>12}{'repaired/s':>12}"
                 f"{'differing':>10}{'repaired':>9}{'left':>6}{'2nd run':>8}")
    for r in doc["repairs"]:
        f = r["figures"]
        phases = "".join(f"{_num(f['phases_s'].get(p), '.1f'):>11}" for p in PHASES)
        lines.append(f"{r['name']:<13}{f['wall_s']:>8.1f}{phases}{_num(f['compared_per_s'], ',.0f'):>12}"
                     f"{_num(f['repaired_per_s'], ',.0f'):>12}{f['keys_differing']:>10,}{f['keys_repaired']:>9,}"
                     f"{r['still_differing']:>6,}{r['second_run']['keys_differing']:>8,}")
    for r in doc["repairs"]:
        lines += clientruns.format_machine(f"during {r['name']}", r.get("machine"))
    lines += [""] + clientruns.format_client_table(doc["throughput"]["summary"])
    m = doc["digest_method"]
    lines += ["", f"digest method, one Redis of {m['script']['keys']:,} keys:"]
    for label, key in (("(a) repair script (Lua, in Redis)", "script"),
                       ("(b) SCAN + DUMP + PEXPIRETIME, SHA1 in Python", "dump")):
        x = m[key]
        lines.append(f"{label:<46}{x['keys_per_second']:>10,.0f} keys/s  {x['cpu_us_per_key']:>6.2f} µs CPU/key"
                     f" (redis {x['redis_cpu_s']:.1f} s, client {x['client_cpu_s']:.1f} s)")
    s = m["seed_check"]
    lines.append(f"(a)/(b) keys/s: {_num(m['speed_ratio'], '.2f')}x; hashtable-encoded keys, same data on two"
                 f" servers: {s['dump_differs']} of {s['keys']} DUMP differently,"
                 f" {s['script_digest_differs']} digest differently by the script")
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------------


def still_differing(clients: Sequence[dataset.DirectRedis], keys: Sequence[bytes]) -> int:
    """Keys whose repair-script digests are not the same (or missing) on every Redis."""
    seen = [digests.script_digests(client, keys) for client in clients]
    return sum(1 for k in keys if not seen[0][k] or len({s[k] for s in seen}) > 1)


class RepairBench:
    """The cluster, its Redis servers reached directly, and every figure of one run."""

    def __init__(self, keys: int, requests: int, rounds: int, settings: Settings, workdir: str) -> None:
        self.keys = keys
        self.requests = requests
        self.rounds = rounds
        self.settings = settings
        self.workdir = workdir
        self.target = NodeTarget(KINDS["dc_one"], cpython(), workdir, NODE_BASE)
        self.expiry_ms = int(time.time() * 1000) + EXPIRY_AHEAD_MS
        self.damaged = [dataset.key_name(i) for i, _, _ in dataset.damage_plan(keys)]
        self.client = ClientRuns(self.target, settings, requests, workdir, "repair", "during_repair")

    def repair(self, name: str, rate: Optional[int], clients: Sequence[dataset.DirectRedis],
               admin: Admin, with_client: bool) -> Dict[str, Any]:
        say(f"repair ({name}) ...")
        load = MachineLoad(self.target.node_pids + self.target.redis_pids)
        watch = start_repair(admin, rate)
        if with_client:
            self.client.run(True, lambda: not watch.done, lambda: watch.polls[-1][1] if watch.polls else None)
        result = finish(watch)
        machine = load.since()
        figures = repair_figures(watch.polls, result)
        say(f"repair ({name}): {figures['keys_differing']:,} differing, {figures['keys_repaired']:,} repaired"
            f" in {figures['wall_s']:.1f} s; checking ...")
        left = still_differing(clients, self.damaged)
        second = finish(start_repair(admin, 0))
        return {"name": name, "rate": rate, "with_client": with_client, "figures": figures, "machine": machine,
                "still_differing": left, "second_run": repair_figures([], second)}

    def run(self) -> Dict[str, Any]:
        target = self.target
        clients: List[dataset.DirectRedis] = []
        try:
            say(f"starting {target.label} ...")
            target.start()
            target.wait_serving()
            nodes = target.cluster.nodes
            admin = Admin(nodes[0].stats_address)
            clients = [dataset.DirectRedis(n.redis_address) for n in nodes]
            say(f"loading {self.keys:,} keys into each of {len(clients)} Redis ...")
            began = time.monotonic()
            for client in clients:
                client.send_checked(dataset.load_commands(self.keys, self.expiry_ms))
            load_s = (time.monotonic() - began) / len(clients)
            say("client warm-up ...")
            self.client.warm_up()
            self.client.alone(self.rounds)
            damage = dataset.damage(clients, self.keys, self.expiry_ms)
            repairs = [self.repair("default rate", None, clients, admin, True)]
            self.client.alone(self.rounds)
            dataset.damage(clients, self.keys, self.expiry_ms)
            repairs.append(self.repair("rate=0", 0, clients, admin, False))
            say("digest method: the repair script, then SCAN + DUMP ...")
            bounds = sorted({t for n in nodes for t in n.tokens})
            redis_pid = target.redis_pids[0]
            lua = digests.measure(digests.script_cells, clients[0], redis_pid, bounds)
            dump = digests.measure(digests.dump_cells, clients[0], redis_pid, bounds)
            big = [dataset.key_name(i) for i in range(self.keys) if dataset.key_kind(i) in ("bigset", "bighash")]
            seed = digests.seed_check(clients[0], clients[1], big)
            rate = admin.get("/repair")["rate"]
        finally:
            for client in clients:
                client.close()
            target.stop()
        return {
            "keys": self.keys, "damaged": len(self.damaged), "damage": damage, "load_s": round(load_s, 2),
            "default_rate": rate, "repairs": repairs,
            "throughput": {"settings": self.settings.to_json(), "requests": self.requests,
                           "samples": self.client.samples, "errors": self.client.errors,
                           "summary": summarize_throughput(self.client.samples)},
            "digest_method": {"script": lua, "dump": dump, "seed_check": seed,
                              "speed_ratio": (lua["keys_per_second"] / dump["keys_per_second"]
                                              if dump["keys_per_second"] else None)},
        }


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The command line, with ``keys`` and ``requests`` resolved; exits with usage on nonsense."""
    parser = cluster_parser("dynomite-bench-repair", __doc__.split("\n\n")[1], (FULL_KEYS, QUICK_KEYS),
                            (FULL_REQUESTS, QUICK_REQUESTS), "repair.json")
    return cluster_args(parser, argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``dynomite-bench-repair`` console script; returns the exit status."""
    args = parse_args(argv)
    settings = cluster_client_settings(args)
    document = run_side_bench(args, "dynomite-bench-repair",
                              lambda workdir: RepairBench(args.keys, args.requests, args.rounds, settings,
                                                          workdir).run())
    if document is None:
        return 1
    print(format_report(document))
    say(f"results written to {args.json}")
    healed = all(r["still_differing"] == 0 and r["second_run"]["keys_differing"] == 0 for r in document["repairs"])
    return 0 if healed else 1


if __name__ == "__main__":
    sys.exit(main())
