# -*- test-case-name: tests.unit.test_bench_repair,tests.unit.test_bench_scaleout -*-
"""
The pipelined client of the cluster benchmarks that run something beside
it (``dynomite-bench-repair``, ``dynomite-bench-scaleout``): redis-benchmark
SET and GET runs through one node (`dynomite.bench.benchmark.measure`),
alone or while a repair or a join runs, and the summary of their ops/s,
alone against during.

A sample is one run: its test, ops/s, p99, the other processes' CPU, the
phase of the thing beside it when the run ended, and whether it ran
during that thing (the ``flag`` key: ``during_repair`` in the repair
bench's documents, ``during`` in the others).
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Dict, List, Optional, Sequence

from .benchmark import Settings, measure, say
from .redisbench import BenchmarkError
from .targets import Target

__all__ = ["ClientRuns", "MAX_CLIENT_ERRORS", "format_client_table", "format_machine", "num", "summarize_throughput"]

#: client runs that may fail (and are left out) before the benchmark gives up
MAX_CLIENT_ERRORS = 3


class ClientRuns:
    """The client's runs against ``target`` and every sample taken, alone or during something."""

    def __init__(self, target: Target, settings: Settings, requests: int, workdir: str, what: str,
                 flag: str = "during") -> None:
        self.target = target
        self.settings = settings
        self.requests = requests
        self.workdir = workdir
        self.what = what
        self.flag = flag
        self.samples: List[Dict[str, Any]] = []
        self.errors: List[str] = []

    def warm_up(self) -> None:
        """One run of each test, not kept: a node's first runs after a start are slower."""
        for test in self.settings.tests:
            measure(self.target, test, self.settings.pipeline, self.requests, self.settings, 0, self.workdir)

    def run(self, during: bool, keep_going: Callable[[], bool],
            phase: Callable[[], Optional[str]] = lambda: None, **labels: Any) -> None:
        """
        SET and GET runs while ``keep_going()`` (checked before each); each
        sample notes the phase at its end (``phase()``) and ``labels``.
        A run that ends after ``keep_going()`` turned false during
        something counts for neither.
        """
        failed = 0
        while keep_going():
            for test in self.settings.tests:
                try:
                    run = measure(self.target, test, self.settings.pipeline, self.requests, self.settings, 0,
                                  self.workdir)
                except BenchmarkError as e:
                    # one run lost (a signal from outside, a timeout) leaves the other work to finish
                    self.errors.append(str(e).splitlines()[0])
                    say(f"client {test}: {self.errors[-1]}")
                    failed += 1
                    if failed >= MAX_CLIENT_ERRORS:
                        raise
                    continue
                if during and not keep_going():
                    return
                self.samples.append({"test": test, self.flag: during, "rps": run.rps, "p99_ms": run.p99_ms,
                                     "node_us_per_op": run.node_us_per_op, "other_cpu_s": run.other_cpu_s,
                                     "wall_s": run.wall_s, "phase": phase(), **labels})
                say(f"client {test} {('during the ' + self.what) if during else 'alone':>17}: {run.rps:,.0f} ops/s")

    def alone(self, rounds: int, **labels: Any) -> None:
        """``rounds`` rounds of SET and GET with nothing beside them."""
        left = [rounds]

        def more() -> bool:
            left[0] -= 1
            return left[0] >= 0
        self.run(False, more, **labels)


def summarize_throughput(samples: Sequence[Dict[str, Any]], phases: Sequence[str],
                         flag: str = "during") -> List[Dict[str, Any]]:
    """Per test: the median ops/s alone and during, their ratio, and during by the phase a run ended in."""
    rows = []
    for test in dict.fromkeys(s["test"] for s in samples):
        alone = [s["rps"] for s in samples if s["test"] == test and not s[flag]]
        during = [s["rps"] for s in samples if s["test"] == test and s[flag]]
        a = statistics.median(alone) if alone else None
        d = statistics.median(during) if during else None
        others = [[s.get("other_cpu_s") for s in samples if s["test"] == test and s[flag] is f]
                  for f in (False, True)]
        rows.append({"test": test, "rps_alone": a, "rps_during": d, "runs_alone": len(alone),
                     "runs_during": len(during), "ratio": d / a if a and d is not None else None,
                     "other_cpu_alone_s": _median(others[0]), "other_cpu_during_s": _median(others[1]),
                     "during_by_phase": _by_phase([s for s in samples if s["test"] == test and s[flag]], phases)})
    return rows


def _by_phase(samples: Sequence[Dict[str, Any]], phases: Sequence[str]) -> Dict[str, float]:
    """The median ops/s of the runs that ended in each phase, in phase order."""
    return {phase: statistics.median(s["rps"] for s in samples if s.get("phase") == phase)
            for phase in phases if any(s.get("phase") == phase for s in samples)}


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


# -- presenting ---------------------------------------------------------------------


def num(value: Optional[float], spec: str) -> str:
    """``value`` formatted, or "-" when unknown."""
    return "-" if value is None else format(value, spec)


def format_machine(label: str, machine: Optional[Dict[str, Any]]) -> List[str]:
    """How busy the machine was (`dynomite.bench.repairwatch.MachineLoad`), as one line (none if unknown)."""
    m = machine or {}
    if m.get("machine_busy") is None:
        return []
    return [f"{label}: machine {m['machine_busy']:.0%} busy; CPU s: cluster {m['cluster_cpu_s']},"
            f" this benchmark and its client {m['bench_cpu_s']}, other processes {m['other_cpu_s']}"]


def format_client_table(summary: Sequence[Dict[str, Any]], through: str = "rack 1's node") -> List[str]:
    """`summarize_throughput`'s rows as a table: ops/s alone, during, the ratio, and during by phase."""
    lines = [f"client (redis-benchmark -c 50 -P 16 through {through}), ops/s:",
             f"{'test':<5}{'alone':>10}{'during':>10}{'ratio':>7}   other processes' CPU s per run, alone / during"]
    for row in summary:
        lines.append(f"{row['test']:<5}{num(row['rps_alone'], ',.0f'):>10}{num(row['rps_during'], ',.0f'):>10}"
                     f"{num(row['ratio'], '.2f') + 'x':>7}   {num(row.get('other_cpu_alone_s'), '.1f')}"
                     f" / {num(row.get('other_cpu_during_s'), '.1f')}")
        phases = row.get("during_by_phase") or {}
        if phases:
            lines.append("      during, by the phase a run ended in: "
                         + ", ".join(f"{phase} {rps:,.0f}" for phase, rps in phases.items()))
    return lines
