# -*- test-case-name: tests.unit.test_benchmark -*-
"""
Running ``redis-benchmark`` and reading what it prints.

The parsers do no I/O: they take the text redis-benchmark wrote and return
:class:`TestResult` rows, so they are tested on canned output. Two formats
are understood:

* ``--csv`` (what the benchmark uses). redis-benchmark 7 prints a header
  ``"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
  "p95_latency_ms","p99_latency_ms","max_latency_ms"`` and one row per test;
  redis-benchmark 6 prints ``"SET","31645.57"`` rows without a header or
  latencies (those come back as None).
* The normal report (no ``--csv``, no ``-q``): ``====== SET ======`` blocks
  with ``throughput summary: N requests per second`` and a ``latency
  summary (msec):`` table.

redis-benchmark stops at the first error reply with a non-zero status
(``Error from server: ...``), so a run that returns results saw none.
"""

from __future__ import annotations

import csv
import os
import re
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = [
    "BenchmarkError",
    "RunOutput",
    "TestResult",
    "command",
    "parse_csv",
    "parse_output",
    "parse_report",
    "run",
    "version",
]

#: CSV columns of redis-benchmark 7 and the TestResult field each fills.
_CSV_FIELDS = {
    "rps": "rps",
    "avg_latency_ms": "avg_ms",
    "min_latency_ms": "min_ms",
    "p50_latency_ms": "p50_ms",
    "p95_latency_ms": "p95_ms",
    "p99_latency_ms": "p99_ms",
    "max_latency_ms": "max_ms",
}


class BenchmarkError(Exception):
    """redis-benchmark failed, or printed nothing this module can read."""


@dataclass(frozen=True)
class TestResult:
    """One test (``SET``, ``GET``) of one redis-benchmark run; latencies in milliseconds."""

    test: str
    rps: float
    avg_ms: Optional[float] = None
    min_ms: Optional[float] = None
    p50_ms: Optional[float] = None
    p95_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    max_ms: Optional[float] = None


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None


def parse_csv(text: str) -> List[TestResult]:
    """The rows of ``redis-benchmark --csv`` output; lines that are not CSV rows are ignored."""
    results = []
    header: Optional[List[str]] = None
    for row in csv.reader(line for line in text.splitlines() if line.startswith('"')):
        if not row:
            continue
        if row[0] == "test":
            header = row
            continue
        if len(row) < 2 or _number(row[1]) is None:
            continue
        values: Dict[str, Optional[float]] = {}
        for name, value in zip(header or ["test", "rps"], row):
            field = _CSV_FIELDS.get(name)
            if field:
                values[field] = _number(value)
        rps = values.pop("rps")
        assert rps is not None
        results.append(TestResult(test=row[0], rps=rps, **values))
    return results


_BLOCK = re.compile(r"^====== (.+?) ======\s*$", re.M)
_THROUGHPUT = re.compile(r"throughput summary:\s*([0-9.]+) requests per second")
_LATENCY = re.compile(r"latency summary \(msec\):\s*\n\s*avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([0-9.\s]+)")


def parse_report(text: str) -> List[TestResult]:
    """The tests of redis-benchmark's normal (non-CSV, non-quiet) report."""
    results = []
    # Progress lines end in \r and the block header follows on the same line.
    blocks = _BLOCK.split(text.replace("\r", "\n"))
    # split() gives [before, name1, body1, name2, body2, ...]
    for name, body in zip(blocks[1::2], blocks[2::2]):
        throughput = _THROUGHPUT.search(body)
        if not throughput:
            continue
        latencies: List[Optional[float]] = [None] * 6
        latency = _LATENCY.search(body)
        if latency:
            found = [_number(v) for v in latency.group(1).split()[:6]]
            latencies[:len(found)] = found
        results.append(TestResult(name.strip(), float(throughput.group(1)), *latencies))
    return results


def parse_output(text: str) -> List[TestResult]:
    """Whichever of the two formats ``text`` is in."""
    return parse_csv(text) or parse_report(text)


def command(
    host: str,
    port: int,
    test: str,
    requests: int,
    pipeline: int = 1,
    clients: int = 50,
    data_size: int = 64,
    keyspace: int = 100000,
    program: str = "redis-benchmark",
    tls_args: Sequence[str] = (),
) -> List[str]:
    """The redis-benchmark command line for one test against ``host:port`` (``tls_args``: ``--tls ...``)."""
    argv = [
        program, "-h", host, "-p", str(port), "-c", str(clients), "-d", str(data_size),
        "-r", str(keyspace), "-n", str(requests), "-t", test.lower(),
    ]
    if pipeline != 1:
        argv += ["-P", str(pipeline)]
    return argv + list(tls_args) + ["--csv"]


@dataclass(frozen=True)
class RunOutput:
    """What one redis-benchmark process did: its results, wall and CPU time, and its stderr."""

    results: Tuple[TestResult, ...]
    wall_s: float
    cpu_s: float
    stderr: str


#: stderr lines redis-benchmark prints that say nothing about the run (a node does not serve CONFIG).
_NOISE = ("WARNING: Could not fetch server CONFIG",)


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def run(argv: Sequence[str], output_dir: str, timeout: float = 600.0) -> RunOutput:
    """
    Run redis-benchmark once and parse its output.

    The process gets its own session (a terminal's Ctrl-C reaches only the
    benchmark, which then ends this run) and is killed if this call is
    interrupted or ``timeout`` passes. Its CPU time comes from ``wait4``.
    Raises :class:`BenchmarkError` with its output when it fails.
    """
    out_path = os.path.join(output_dir, "redis-benchmark.out")
    err_path = os.path.join(output_dir, "redis-benchmark.err")
    # Signals are blocked around the fork so an interrupt cannot leave an
    # unrecorded child; the child unblocks them before exec.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, preexec_fn=_unblock_signals,
            )
    except OSError as e:
        raise BenchmarkError(f"cannot run {argv[0]}: {e.strerror or e}") from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    started = time.monotonic()
    try:
        status, usage = _wait(proc, timeout)
    except BaseException:
        _kill(proc)
        raise
    wall = time.monotonic() - started
    with open(out_path, "rb") as f:
        stdout = f.read().decode("utf-8", "replace")
    with open(err_path, "rb") as f:
        stderr = "\n".join(
            line for line in f.read().decode("utf-8", "replace").splitlines()
            if line.strip() and not line.startswith(_NOISE)
        )
    if status is None:
        raise BenchmarkError(f"{' '.join(argv)} did not finish in {timeout:.0f} s; killed it")
    if status != 0:
        raise BenchmarkError(f"{' '.join(argv)} exited with status {status}:\n{(stdout + stderr).strip()[-2000:]}")
    results = parse_output(stdout)
    if not results:
        raise BenchmarkError(f"{' '.join(argv)} printed no result:\n{(stdout + stderr).strip()[-2000:]}")
    return RunOutput(tuple(results), wall, usage.ru_utime + usage.ru_stime if usage else 0.0, stderr)


def _wait(proc: subprocess.Popen, timeout: float) -> Tuple[Optional[int], Optional[resource.struct_rusage]]:
    """Reap ``proc`` with its resource usage; (None, None) if it runs past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            code = os.waitstatus_to_exitcode(status)
            proc.returncode = code  # reaped here, not by Popen
            return code, usage
        if time.monotonic() >= deadline:
            _kill(proc)
            return None, None
        time.sleep(0.02)  # a poll, not a busy loop: the benchmark shares two cores


def _kill(proc: subprocess.Popen) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass


def version(program: str = "redis-benchmark") -> str:
    """``redis-benchmark 7.0.15`` or the like; empty if it cannot be run."""
    try:
        return subprocess.run([program, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
