# -*- test-case-name: tests.unit.test_bench_repair -*-
"""
What ``dynomite-bench-repair`` watches while a repair runs: the node's
admin API (`Admin`; `Watch` polls ``/repair`` every `POLL` seconds in a
thread while the client runs in the main one) and how busy the machine
was (`MachineLoad`), so that figures from a shared machine can be judged.
"""

from __future__ import annotations

import json
import resource
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .cpu import CpuSample

__all__ = ["Admin", "MachineLoad", "POLL", "Poll", "Watch", "finish", "start_repair"]

#: seconds between two polls of /repair
POLL = 0.25

Poll = Tuple[float, str, int, int]   # (time, phase, scanned, phase_scanned)


# -- how busy the machine was ---------------------------------------------------------


def _own_cpu() -> float:
    """CPU seconds of this process and of its reaped children (redis-benchmark)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


class MachineLoad:
    """From its creation: the machine's busy share, and CPU of the cluster, of this benchmark and of the rest."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.before = CpuSample.take(self.pids)
        self.own = _own_cpu()

    def since(self) -> Dict[str, Any]:
        after = CpuSample.take(self.pids)
        busy, total = after.machine_since(self.before)
        cluster = sum(after.used_since(self.before, self.pids).values())
        own = _own_cpu() - self.own
        return {"machine_busy": round(busy / total, 3) if total > 0 else None, "cluster_cpu_s": round(cluster, 1),
                "bench_cpu_s": round(own, 1), "other_cpu_s": round(busy - cluster - own, 1)}


# -- the admin API ------------------------------------------------------------------


class Admin:
    """GETs of one node's admin API, as JSON."""

    def __init__(self, address: Tuple[str, int]) -> None:
        self.base = "http://%s:%d" % address

    def get(self, path: str) -> Dict[str, Any]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError("%s%s: %s %s" % (self.base, path, e.code, e.read().decode("utf-8", "replace")))


class Watch(threading.Thread):
    """Polls /repair until the repair started at ``started`` ends; its polls and result."""

    def __init__(self, admin: Admin, started: float) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.admin = admin
        self.started = started
        self.polls: List[Poll] = []
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None

    def run(self) -> None:
        try:
            while True:
                doc = self.admin.get("/repair")
                running = doc.get("running")
                if running and running.get("started") == self.started:
                    self.polls.append((time.time(), running["phase"], running["scanned"], running["phase_scanned"]))
                elif (doc.get("last") or {}).get("started") == self.started:
                    self.result = doc["last"]
                    return
                else:
                    self.error = "the repair started at %s is neither running nor the last one" % self.started
                    return
                time.sleep(POLL)
        except (OSError, RuntimeError, ValueError) as e:
            self.error = str(e)

    @property
    def done(self) -> bool:
        return not self.is_alive()


def start_repair(admin: Admin, rate: Optional[int]) -> Watch:
    doc = admin.get("/repair/start" + ("" if rate is None else "?rate=%d" % rate))
    watch = Watch(admin, doc["running"]["started"])
    watch.start()
    return watch


def finish(watch: Watch) -> Dict[str, Any]:
    watch.join()
    if watch.result is None:
        raise RuntimeError("repair: %s" % watch.error)
    if watch.result.get("error"):
        raise RuntimeError("repair failed: %s" % watch.result["error"])
    return watch.result
