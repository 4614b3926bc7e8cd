# -*- test-case-name: tests.unit.test_benchmark -*-
"""
From raw runs to the summary, the tables and the goals; no I/O.

A :class:`Run` is one redis-benchmark test (SET or GET at one pipeline
depth) against one target in one round. The summary groups runs by target,
test and pipeline: medians of ops/s, p50, p99 and node CPU per operation,
and the median of the per-round ratios to plain Redis (each run divided by
the plain Redis run of the same round, test and pipeline, so the two were
measured close in time).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from dynomite.launcher.tables import format_table as _format_table

__all__ = [
    "GOALS", "Goal", "Run", "Summary", "check_goals", "format_comparison", "format_goals", "format_table",
    "summarize",
]


@dataclass
class Run:
    """One redis-benchmark test against one target in one round, with the CPU it cost."""

    round: int
    target: str
    kind: str
    interpreter: Optional[str]
    test: str
    pipeline: int
    requests: int
    rps: float
    avg_ms: Optional[float] = None
    min_ms: Optional[float] = None
    p50_ms: Optional[float] = None
    p95_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    max_ms: Optional[float] = None
    wall_s: float = 0.0
    #: utime + stime of every node process of the target, and per PID.
    node_cpu_s: float = 0.0
    node_cpu_by_pid: Dict[str, float] = field(default_factory=dict)
    redis_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    #: The whole machine: busy and available CPU seconds, and what processes
    #: other than the target's and the client's used (other work on this machine).
    machine_busy_s: float = 0.0
    machine_total_s: float = 0.0
    other_cpu_s: float = 0.0
    #: DBSIZE of each of the target's redis-servers after the run.
    keys_after: List[int] = field(default_factory=list)

    @property
    def node_us_per_op(self) -> Optional[float]:
        return self.node_cpu_s * 1e6 / self.requests if self.node_cpu_by_pid else None

    @property
    def redis_us_per_op(self) -> float:
        return self.redis_cpu_s * 1e6 / self.requests

    @property
    def other_load(self) -> Optional[float]:
        """Share of the machine's CPU that other processes used during the run (0..1)."""
        return max(self.other_cpu_s, 0.0) / self.machine_total_s if self.machine_total_s > 0 else None

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["node_cpu_us_per_op"] = _round(self.node_us_per_op, 2)
        data["redis_cpu_us_per_op"] = _round(self.redis_us_per_op, 2)
        data["other_load"] = _round(self.other_load, 4)
        return data


@dataclass(frozen=True)
class Summary:
    """Medians over the rounds for one target, test and pipeline depth."""

    target: str
    label: str
    kind: str
    interpreter: Optional[str]
    test: str
    pipeline: int
    rounds: int
    rps: float
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    ratio: Optional[float]
    ratio_min: Optional[float]
    ratio_max: Optional[float]
    ratios: Tuple[float, ...]
    node_us_per_op: Optional[float]
    redis_us_per_op: float
    other_load: Optional[float]

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["ratios"] = [_round(r, 4) for r in self.ratios]
        for key in ("rps", "p50_ms", "p99_ms", "node_us_per_op", "redis_us_per_op"):
            data[key] = _round(data[key], 3)
        for key in ("ratio", "ratio_min", "ratio_max", "other_load"):
            data[key] = _round(data[key], 4)
        return data


def _round(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(value, digits)


def _median(values: Iterable[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: Sequence[Run], labels: Dict[str, str], baseline: str = "redis") -> List[Summary]:
    """
    One :class:`Summary` per target, test and pipeline, in the order first
    run. Ratios need the ``baseline`` target's run of the same round, test
    and pipeline; rounds without one are left out of the ratio.
    """
    base = {(r.round, r.test, r.pipeline): r.rps for r in runs if r.target == baseline}
    groups: Dict[Tuple[str, str, int], List[Run]] = {}
    for r in runs:
        groups.setdefault((r.target, r.test, r.pipeline), []).append(r)
    summaries = []
    for (target, test, pipeline), group in groups.items():
        ratios = tuple(
            r.rps / base[(r.round, test, pipeline)] for r in group if base.get((r.round, test, pipeline))
        )
        first = group[0]
        summaries.append(Summary(
            target=target, label=labels.get(target, target), kind=first.kind, interpreter=first.interpreter,
            test=test, pipeline=pipeline, rounds=len(group),
            rps=statistics.median(r.rps for r in group),
            p50_ms=_median(r.p50_ms for r in group),
            p99_ms=_median(r.p99_ms for r in group),
            ratio=statistics.median(ratios) if ratios else None,
            ratio_min=min(ratios) if ratios else None,
            ratio_max=max(ratios) if ratios else None,
            ratios=ratios,
            node_us_per_op=_median(r.node_us_per_op for r in group),
            redis_us_per_op=statistics.median(r.redis_us_per_op for r in group),
            other_load=_median(r.other_load for r in group),
        ))
    return summaries


# -- presenting ----------------------------------------------------------------------


def _fmt(value: Optional[float], spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _ratio(s: Summary) -> str:
    return _fmt(s.ratio, ".2f") + "x" if s.ratio is not None else "-"


def _range(s: Summary) -> str:
    if s.ratio_min is None or s.ratio_max is None or len(s.ratios) < 2:
        return ""
    return f"{s.ratio_min:.2f}-{s.ratio_max:.2f}"


def format_table(summaries: Sequence[Summary]) -> str:
    """
    The main table: one line per target, test and pipeline depth. "other
    load" is the median share of the machine's CPU that processes outside
    the benchmark used during the runs: a busy machine widens the range.
    """
    header = ("target", "test", "P", "ops/s", "p50 ms", "p99 ms", "vs redis", "(min-max)", "node CPU µs/op",
              "other load")
    rows = []
    for s in summaries:
        rows.append((
            s.label, s.test, str(s.pipeline), f"{s.rps:,.0f}", _fmt(s.p50_ms, ".2f"), _fmt(s.p99_ms, ".2f"),
            _ratio(s), _range(s), _fmt(s.node_us_per_op, ".1f"), _fmt(s.other_load, ".0%"),
        ))
    return _format_table(header, rows, right={2, 3, 4, 5, 6, 8, 9})


def format_comparison(summaries: Sequence[Summary], interpreters: Sequence[str]) -> str:
    """Node targets side by side, one column group per interpreter, and the last one's speed-up over the first."""
    by_key: Dict[Tuple[str, str, int], Dict[str, Summary]] = {}
    labels: Dict[str, str] = {}
    for s in summaries:
        if s.interpreter is None:
            continue
        by_key.setdefault((s.kind, s.test, s.pipeline), {})[s.interpreter] = s
        labels[s.kind] = s.label.rsplit(" (", 1)[0]
    header = ["target", "test", "P"]
    for name in interpreters:
        header += [f"{name} ops/s", "vs redis", "p99 ms", "CPU µs/op"]
    first, last = interpreters[0], interpreters[-1]
    header.append(f"{last}/{first}")
    rows = []
    for (kind, test, pipeline), group in by_key.items():
        row = [labels[kind], test, str(pipeline)]
        for name in interpreters:
            one = group.get(name)
            row += ([f"{one.rps:,.0f}", _ratio(one), _fmt(one.p99_ms, ".2f"), _fmt(one.node_us_per_op, ".1f")]
                    if one else ["-"] * 4)
        a, b = group.get(first), group.get(last)
        row.append(f"{b.rps / a.rps:.2f}x" if a and b and a.rps else "-")
        rows.append(tuple(row))
    return _format_table(header, rows, right=range(2, len(header)))


# -- goals ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A target from issue 6, checked on the summaries: every listed test must meet it."""

    kind: str
    tests: Tuple[str, ...]
    pipeline: int
    metric: str  # "ratio" (at least) or "cpu" (µs per op, below)
    limit: float
    dynomite: str = ""  # Dynomite (C) on the same kind of machine, as issue 6 reports it

    @property
    def text(self) -> str:
        what = "/".join(self.tests)
        if self.metric == "ratio":
            return f"{self.kind} {what} P{self.pipeline} >= {self.limit:g}x redis"
        return f"{self.kind} {what} P{self.pipeline} node CPU < {self.limit:g} µs/op"

    def value(self, s: Summary) -> Optional[float]:
        return s.ratio if self.metric == "ratio" else s.node_us_per_op

    def met_by(self, value: float) -> bool:
        return value >= self.limit if self.metric == "ratio" else value < self.limit


GOALS: Tuple[Goal, ...] = (
    Goal("single", ("SET", "GET"), 1, "ratio", 0.27, "0.65-0.76x"),
    Goal("single", ("SET", "GET"), 16, "ratio", 0.5, "0.34-0.57x"),
    Goal("dc_quorum", ("SET", "GET"), 16, "ratio", 0.12, "0.05-0.07x"),
    Goal("dc_one", ("SET",), 16, "ratio", 0.15, "0.06x"),
    Goal("single", ("SET", "GET"), 1, "cpu", 40.0),
    Goal("single", ("SET", "GET"), 16, "cpu", 5.0),
)


def check_goals(summaries: Sequence[Summary], interpreters: Sequence[str]) -> List[Dict[str, Any]]:
    """Each goal per interpreter: the measured values per test and whether all meet it (None: not measured)."""
    index = {(s.kind, s.interpreter, s.test, s.pipeline): s for s in summaries}
    results = []
    for goal in GOALS:
        for name in interpreters:
            values: Dict[str, float] = {}
            for test in goal.tests:
                s = index.get((goal.kind, name, test, goal.pipeline))
                value = goal.value(s) if s is not None else None
                if value is not None:
                    values[test] = value
            if not values:
                continue
            met = len(values) == len(goal.tests) and all(goal.met_by(v) for v in values.values())
            results.append({
                "goal": goal.text, "interpreter": name, "kind": goal.kind, "pipeline": goal.pipeline,
                "metric": goal.metric, "limit": goal.limit, "values": {k: round(v, 4) for k, v in values.items()},
                "met": met, "dynomite": goal.dynomite or None,
            })
    return results


def format_goals(checked: Sequence[Dict[str, Any]]) -> str:
    """The goals of issue 6 and where this run stands."""
    rows = []
    for g in checked:
        unit = "x" if g["metric"] == "ratio" else " µs"
        measured = ", ".join(f"{t} {v:.2f}{unit}" if unit == "x" else f"{t} {v:.1f}{unit}"
                             for t, v in g["values"].items())
        rows.append((g["goal"], g["interpreter"], measured, "met" if g["met"] else "NOT MET", g["dynomite"] or ""))
    return _format_table(("goal (issue 6)", "interpreter", "measured", "", "Dynomite (C)"), rows)
