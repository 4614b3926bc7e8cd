# -*- test-case-name: tests.unit.test_benchmark -*-
"""
CPU time from /proc: per process (utime + stime of /proc/<pid>/stat, all
its threads) and for the whole machine (/proc/stat), so a run can report
the CPU its node processes spent per operation and how busy the rest of
the machine was meanwhile (other work on the same two cores skews a run).

The parsers take the file's text; :class:`CpuSample` reads the files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

__all__ = ["CLOCK_TICKS", "CpuSample", "parse_machine_stat", "parse_process_stat", "process_cpu"]

#: Kernel clock ticks per second, the unit of /proc CPU times (100 on Linux).
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_process_stat(text: str) -> float:
    """utime + stime, in seconds, from the text of /proc/<pid>/stat."""
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def parse_machine_stat(text: str) -> Tuple[float, float]:
    """(busy, total) CPU seconds of all CPUs together, from the text of /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            total = sum(values[:8])
            return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def process_cpu(pid: int) -> Optional[float]:
    """CPU seconds ``pid`` has used so far, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_process_stat(f.read().decode("ascii", "replace"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def _machine() -> Tuple[float, float]:
    try:
        with open("/proc/stat") as f:
            return parse_machine_stat(f.read())
    except (OSError, ValueError):
        return 0.0, 0.0


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds of some processes and of the machine at one moment."""

    wall: float
    processes: Dict[int, Optional[float]]
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, pids: Iterable[int]) -> CpuSample:
        busy, total = _machine()
        return cls(time.monotonic(), {pid: process_cpu(pid) for pid in pids}, busy, total)

    def used_since(self, before: CpuSample, pids: Iterable[int]) -> Dict[int, float]:
        """CPU seconds each of ``pids`` used between ``before`` and this sample (0 if it died)."""
        used = {}
        for pid in pids:
            a, b = before.processes.get(pid), self.processes.get(pid)
            used[pid] = b - a if a is not None and b is not None else 0.0
        return used

    def machine_since(self, before: CpuSample) -> Tuple[float, float]:
        """(busy, total) CPU seconds of the machine between ``before`` and this sample."""
        return self.machine_busy - before.machine_busy, self.machine_total - before.machine_total
