# -*- test-case-name: tests.unit.test_bench_scaleout -*-
"""
``dynomite-bench-scaleout``: a node joins a loaded rack while a client runs.

Starts one datacenter of three racks of one node with gossip on (the
benchmark's ``dc_one`` target, ``enable_gossip`` and a one-second
``gos_interval``), loads ``--keys`` keys (`dynomite.bench.dataset`)
straight into every rack's Redis, and measures a pipelined client
(redis-benchmark ``-c 50 -P 16`` SET and GET through rack 1's node, as
``dynomite-bench-repair`` runs it) alone.  Then a second node joins rack 1
by gossip (``bootstrap: true``, ``tokens: auto``: it takes half the ring
of rack 1; one seed, rack 2's node) while the same client runs, until the
join is done: the moved keys copied, the cut-over, the old owner's copies
dropped (`dynomite.scaleout.manager`).

The join is polled every `joinwatch.POLL` seconds (`JoinWatch`): the time
of each phase comes from those polls; keys/s copied is what the joiner's
copy counted over the copying phase (and, from its Redis, how fast its
DBSIZE grew meanwhile); the client's throughput during the join is given
as a ratio of alone, and by the phase each run ended in.  Afterwards every
key of rack 1's two Redis servers is checked to be on its owner only, and
every loaded key to be on its owner.

``--rate`` runs the whole (a new cluster each time) at each
``repair_rate`` listed (keys scanned per second on each source; 0: no
limit).  Results go to ``.bench/results/scaleout.json``; it is opt-in
(``make bench-scaleout``).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set

from dynomite.placement.hashing import key_hash
from dynomite.placement.ring import Ring

from . import dataset, repair
from .benchmark import NODE_BASE, Settings, say
from .clientruns import ClientRuns, format_client_table, format_machine, num, summarize_throughput
from .interpreters import cpython
from .joinwatch import POLL, JoinPoll, Joiner, JoinWatch, every_phase
from .repairwatch import MachineLoad
from .side_bench import cluster_args, cluster_client_settings, cluster_parser, run_side_bench
from .targets import KINDS, NodeTarget

__all__ = ["main", "join_figures", "placement", "parse_args", "format_report"]

FULL_KEYS, QUICK_KEYS = 200_000, 50_000
FULL_REQUESTS, QUICK_REQUESTS = 200_000, 50_000
#: every node's settings: gossip on, a round a second (the default, 30 s, would make a join wait minutes)
GOSSIP = {"enable_gossip": True, "gos_interval": 1000}
#: the write timeout of the nodes (ms): the cut-over waits twice that before the cleaning
TIMEOUT_MS = 5000
#: misplaced or missing keys named in the report
EXAMPLES = 5
#: SCAN step when listing a Redis server's keys
SCAN_COUNT = 2000


# -- pure parts ---------------------------------------------------------------------


def join_figures(polls: Sequence[JoinPoll], started: float, finished: float) -> Dict[str, Any]:
    """
    A finished join's figures: seconds per phase (`repair.phase_times`),
    keys copied and their rate over the copying phase (the copy's count;
    ``joining`` stands for it when the node showed no phases), and how
    fast the joiner's DBSIZE grew over that phase, from zero (its Redis
    is emptied before the copy) to the first poll after it.
    """
    times = repair.phase_times(polls, started, finished)
    copying = "copying" if "copying" in times else "joining"
    at = [i for i, p in enumerate(polls) if p.phase == copying]
    copied = max((p.copied for p in polls if p.copied is not None), default=None)
    scanned = max((p.scanned for p in polls if p.scanned is not None), default=None)
    seconds = times.get(copying)
    grown = None
    if at:
        # from nothing: the copy starts on an emptied Redis (the flushing phase, or a new one)
        grown = polls[at[-1] + 1].joiner_keys if at[-1] + 1 < len(polls) else polls[at[-1]].joiner_keys
    return {
        "wall_s": round(finished - started, 3), "phases_s": times, "copy_phase": copying,
        "copied": copied, "scanned": scanned, "joiner_keys_grown": grown,
        "copied_per_s": round(copied / seconds, 1) if copied is not None and seconds else None,
        "scanned_per_s": round(scanned / seconds, 1) if scanned is not None and seconds else None,
        "dbsize_per_s": round(grown / seconds, 1) if grown is not None and seconds else None,
        "joiner_keys": polls[-1].joiner_keys if polls else None,
        "source_keys": polls[-1].source_keys if polls else None,
    }


def placement(held: Dict[str, Set[bytes]], owner: Callable[[bytes], str], expected: Iterable[bytes]) -> Dict[str, Any]:
    """
    Whether every key lives on exactly its owner: ``held`` is each node's
    keys, ``owner(key)`` its owner; a key on a node not its owner is
    misplaced (a key on two nodes is), an ``expected`` key not on its
    owner is missing.
    """
    misplaced = [(key, name) for name, keys in sorted(held.items()) for key in keys if owner(key) != name]
    checked = 0
    missing = []
    for key in expected:
        checked += 1
        if key not in held.get(owner(key), ()):
            missing.append(key)
    return {"keys_held": {name: len(keys) for name, keys in sorted(held.items())}, "checked": checked,
            "misplaced": len(misplaced), "missing": len(missing),
            "misplaced_examples": ["%s on %s" % (k.decode("utf-8", "replace"), n) for k, n in misplaced[:EXAMPLES]],
            "missing_examples": [k.decode("utf-8", "replace") for k in missing[:EXAMPLES]]}


def format_report(doc: Dict[str, Any]) -> str:
    """The figures as text tables (stdout)."""
    joins = doc["joins"]
    seen = {p for j in joins for p in j["figures"]["phases_s"]}
    phases = [p for p in every_phase() if p in seen]
    lines = [f"{doc['keys']:,} keys on 3 racks (1 DC x 3 racks x 1 node), loaded in {doc['load_s']:.1f} s per Redis;"
             f" a second node joins rack 1 (tokens: auto), write timeout {doc['timeout_ms']} ms", ""]
    head = "".join(f"{p:>13}" for p in phases)
    lines.append(f"{'join':<16}{'wall s':>8}{head}{'copied':>9}{'copied/s':>10}{'scanned/s':>10}{'DBSIZE/s':>10}"
                 f"{'misplaced':>10}{'missing':>8}")
    for j in joins:
        f, p = j["figures"], j["placement"]
        cells = "".join(f"{num(f['phases_s'].get(ph), '.1f'):>13}" for ph in phases)
        lines.append(f"{j['name']:<16}{f['wall_s']:>8.1f}{cells}{num(f['copied'], ',d'):>9}"
                     f"{num(f['copied_per_s'], ',.0f'):>10}{num(f['scanned_per_s'], ',.0f'):>10}"
                     f"{num(f['dbsize_per_s'], ',.0f'):>10}"
                     f"{p['misplaced']:>10,}{p['missing']:>8,}")
    for j in joins:
        p = j["placement"]
        held = ", ".join(f"{name} {n:,}" for name, n in p["keys_held"].items())
        lines.append(f"{j['name']}: tokens {j['tokens']}; rack 1 holds {held}; {p['checked']:,} loaded keys checked"
                     + "".join(f"; e.g. {e}" for e in (p["misplaced_examples"] + p["missing_examples"])[:3]))
        lines += format_machine(f"during {j['name']}", j.get("machine"))
    for j in joins:
        lines += ["", f"{j['name']}: " + format_client_table(j["throughput"]["summary"])[0]]
        lines += format_client_table(j["throughput"]["summary"])[1:]
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------------


def held_keys(client: dataset.DirectRedis) -> Set[bytes]:
    """Every key of one Redis server (SCAN)."""
    keys: Set[bytes] = set()
    cursor = b"0"
    while True:
        cursor, batch = client.call(b"SCAN", cursor, b"COUNT", b"%d" % SCAN_COUNT)
        keys.update(batch)
        if cursor == b"0":
            return keys


class ScaleOutBench:
    """One join at each rate, each on a new cluster, and every figure."""

    def __init__(self, keys: int, requests: int, rounds: int, rates: Sequence[Optional[int]], settings: Settings,
                 workdir: str) -> None:
        self.keys = keys
        self.requests = requests
        self.rounds = rounds
        self.rates = list(rates)
        self.settings = settings
        self.workdir = workdir
        self.load_s: List[float] = []

    def bound(self, rate: Optional[int], settings: Dict[str, Any]) -> float:
        """
        Seconds a join may take: its source's keys (the loaded ones and the
        client's) scanned twice (copy, then drop) at ``rate``, plus time for
        the announcement and the cut-over, from the configured times.
        """
        scanned = 2 * (self.keys + self.settings.keyspace)
        per_second = rate if rate else 2000
        gossip_s = settings["gos_interval"] / 1000
        return scanned / per_second * 2 + 20 * gossip_s + 10 * TIMEOUT_MS / 1000

    def join(self, index: int, rate: Optional[int]) -> Dict[str, Any]:
        name = "default rate" if rate is None else f"rate={rate}"
        workdir = os.path.join(self.workdir, "join%d" % index)
        target = NodeTarget(KINDS["dc_one"], cpython(), workdir, NODE_BASE, TIMEOUT_MS, GOSSIP)
        cluster = target.cluster
        rack1, rack2 = cluster.node("dc1", "rack1"), cluster.node("dc1", "rack2")
        host = str(ipaddress.IPv4Address(NODE_BASE) + len(cluster.nodes))
        joiner_settings: Dict[str, Any] = {"bootstrap": True, "tokens": "auto"}
        if rate is not None:
            joiner_settings["repair_rate"] = rate
        joiner = Joiner(cluster, "dc1", "rack1", host, rack2, joiner_settings, twistd=target.interpreter.twistd)
        client = ClientRuns(target, self.settings, self.requests, workdir, "join")
        clients: List[dataset.DirectRedis] = []
        try:
            say(f"{name}: starting {target.label} with gossip ...")
            target.start()
            target.wait_serving()
            clients = [dataset.DirectRedis(n.redis_address) for n in cluster.nodes]
            say(f"{name}: loading {self.keys:,} keys into each of {len(clients)} Redis ...")
            began = time.monotonic()
            for c in clients:
                c.send_checked(dataset.load_commands(self.keys, int(time.time() * 1000) + repair.EXPIRY_AHEAD_MS))
            self.load_s.append((time.monotonic() - began) / len(clients))
            say(f"{name}: client warm-up ...")
            client.warm_up()
            client.alone(self.rounds)
            say(f"{name}: a node joins rack 1 ...")
            watch = JoinWatch(joiner, rack1.redis_address, rack2.redis_address, self.bound(rate, GOSSIP))
            watch.start()   # from the joiner's first process spawned: its "starting" phase
            try:
                joiner.start()
            except BaseException:
                watch.halt()
                raise
            load = MachineLoad(target.node_pids + target.redis_pids + joiner.pids)
            client.run(True, lambda: not watch.done, lambda: watch.phase)
            watch.join()
            machine = load.since()
            if watch.error is not None:
                raise RuntimeError(f"{name}: {watch.error}; the joiner's log:\n"
                                   + joiner.node.node_process.log_tail(30))
            figures = join_figures(watch.polls, watch.started, watch.finished or time.time())
            say(f"{name}: joined in {figures['wall_s']:.1f} s; checking where every key of rack 1 is ...")
            tokens = watch.tokens()
            ring = Ring([(t, rack1.name) for t in rack1.tokens] + [(t, joiner.node.name) for t in tokens])
            with dataset.DirectRedis(joiner.node.redis_address) as joined:
                held = {rack1.name: held_keys(clients[0]), joiner.node.name: held_keys(joined)}
            checked = placement(held, lambda key: ring.owner(key_hash(key)),
                                (dataset.key_name(i) for i in range(self.keys)))
        finally:
            for c in clients:
                c.close()
            joiner.stop()
            target.stop()
        return {"name": name, "rate": rate, "tokens": list(tokens), "figures": figures, "placement": checked,
                "machine": machine, "polls": [list(p) for p in watch.polls],
                "throughput": {"samples": client.samples, "errors": client.errors,
                               "summary": summarize_throughput(client.samples, every_phase())}}

    def run(self) -> Dict[str, Any]:
        joins = [self.join(i, rate) for i, rate in enumerate(self.rates)]
        return {"keys": self.keys, "load_s": round(sum(self.load_s) / len(self.load_s), 2),
                "timeout_ms": TIMEOUT_MS, "gossip": GOSSIP, "poll_s": POLL, "requests": self.requests,
                "settings": self.settings.to_json(), "joins": joins}


def _rates(text: str) -> List[Optional[int]]:
    """``--rate``: comma-separated keys/s (0: no limit; ``default``: the node's own)."""
    rates: List[Optional[int]] = []
    for part in text.split(","):
        part = part.strip()
        if part == "default":
            rates.append(None)
        elif part.isdigit():
            rates.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"{part!r} is neither a number of keys/s nor 'default'")
    return rates


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The command line, with ``keys`` and ``requests`` resolved; exits with usage on nonsense."""
    parser = cluster_parser("dynomite-bench-scaleout", __doc__.split("\n\n")[1], (FULL_KEYS, QUICK_KEYS),
                            (FULL_REQUESTS, QUICK_REQUESTS), "scaleout.json")
    parser.add_argument("--rate", type=_rates, default=[None], metavar="R[,R...]",
                        help="repair_rate of the joiner, keys scanned/s per source (0: no limit; default: the"
                             " node's own); one join, on a new cluster, per value")
    return cluster_args(parser, argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``dynomite-bench-scaleout`` console script; returns the exit status."""
    args = parse_args(argv)
    settings = cluster_client_settings(args)
    document = run_side_bench(args, "dynomite-bench-scaleout",
                              lambda workdir: ScaleOutBench(args.keys, args.requests, args.rounds, args.rate,
                                                            settings, workdir).run())
    if document is None:
        return 1
    print(format_report(document))
    say(f"results written to {args.json}")
    placed = all(j["placement"]["misplaced"] == 0 and j["placement"]["missing"] == 0 for j in document["joins"])
    return 0 if placed else 1


if __name__ == "__main__":
    sys.exit(main())
