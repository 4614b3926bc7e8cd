# -*- test-case-name: tests.unit.test_bench_scaleout -*-
"""
What ``dynomite-bench-scaleout`` starts and watches beside its cluster: the
joining node (`Joiner`: its own redis-server and ``twistd`` node, planned
as the launcher plans a cluster's nodes, one address after them) and the
join's progress (`JoinWatch`: a thread polling the joiner's ``/info`` and
the rack's Redis servers every `POLL` seconds while the client runs in
the main one).

The join's phase is the joiner's ``scaleout`` section of ``/info`` when
the node has one (`dynomite.scaleout.manager.PHASES`, and its copy's
counts); a node without it still shows the join in its own gossip entry
(JOINING, then NORMAL) and in its Redis, so then the phases are coarser
(`FALLBACK_PHASES`, see `join_phase`) and keys copied is the joiner's
DBSIZE.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import yaml

from dynomite.launcher.cluster import Cluster, ClusterNode, free_ports
from dynomite.launcher.processes import NodeProcess, RedisProcess, stop_all, wait_all_ready
from dynomite.scaleout.manager import PHASES

from .repairwatch import Admin
from .targets import call

__all__ = ["FALLBACK_PHASES", "JoinPoll", "JoinWatch", "Joiner", "POLL", "join_phase", "every_phase"]

#: seconds between two polls of the joiner
POLL = 0.25
#: the phases told from the joiner's gossip entry and the Redis servers' sizes alone
FALLBACK_PHASES = ("starting", "joining", "cleaning", "done")
#: a rack holds no more keys than another rack plus this share when its old owner has dropped what it gave
CLEANED_SLACK = 0.01

Address = Tuple[str, int]


class JoinPoll(NamedTuple):
    """One look at the join: when, its phase, the copy's counts (None unknown), the Redis servers' sizes."""

    at: float
    phase: str
    copied: Optional[int]
    scanned: Optional[int]
    to_scan: Optional[int]
    joiner_keys: int
    source_keys: int
    reference_keys: int


def every_phase() -> Tuple[str, ...]:
    """Every phase of work a poll may show, in the order a join goes through them (not ``done``, ``failed``)."""
    ordered = FALLBACK_PHASES[:2] + PHASES[1:] + FALLBACK_PHASES[2:]
    return tuple(p for p in dict.fromkeys(ordered) if p not in ("idle", "done", "failed"))


def join_phase(info: Optional[Dict[str, Any]], joiner_keys: int, source_keys: int,
               reference_keys: int) -> Tuple[str, Optional[Dict[str, Any]]]:
    """
    The join's phase and its copy's progress (None unknown) from the
    joiner's ``/info`` (None: it does not answer yet): its ``scaleout``
    section when it has one; else its own gossip entry (JOINING:
    ``joining``; NORMAL: ``cleaning`` while its rack holds more keys than
    the reference rack, by more than `CLEANED_SLACK`, then ``done``).
    """
    if info is None:
        return "starting", None
    section = info.get("scaleout")
    if isinstance(section, dict) and section.get("enabled", True) and section.get("phase"):
        phase = section["phase"]
        return ("starting" if phase == "idle" else phase), section.get("copy")
    entry = (info.get("gossip") or {}).get("entries", {}).get(info.get("name"), {})
    if entry.get("status") != "NORMAL":
        return "joining", None
    if joiner_keys + source_keys > reference_keys * (1 + CLEANED_SLACK):
        return "cleaning", None
    return "done", None


class Joiner:
    """
    A node joining ``cluster``'s ``rack`` by gossip, on ``host``: the
    cluster's node settings, then ``settings`` (``bootstrap``,
    ``tokens``, ``repair_rate``...), one seed (``seed``, another node of
    the cluster).  Its files go next to the cluster's.
    """

    def __init__(self, cluster: Cluster, dc: str, rack: str, host: str, seed: ClusterNode,
                 settings: Dict[str, Any], name: str = "joiner", twistd: Optional[str] = None) -> None:
        client, peer, stats, redis = free_ports(host, 4)
        stem = os.path.join(cluster.workdir, name)
        self.cluster_name = cluster.name
        self.node = ClusterNode(
            name=name, dc=dc, rack=rack, index=1, tokens=(), ranges=(),
            client_address=(host, client), peer_address=(host, peer), stats_address=(host, stats),
            redis_address=(host, redis), config_path=stem + ".yml",
            node_process=NodeProcess.create(name, (host, client), stem + ".yml", stem + ".log", stem + ".out",
                                            twistd=twistd),
            redis_process=RedisProcess.create(name, (host, redis), stem + "-redis", stem + "-redis.log"),
        )
        self.settings = tuple(cluster.node_settings) + tuple(settings.items())
        self.seed = seed.seed

    @property
    def pids(self) -> List[int]:
        return [p.pid for p in self.node.processes if p.pid]

    @property
    def admin(self) -> Admin:
        return Admin(self.node.stats_address)

    def start(self, timeout: float = 120.0) -> None:
        """Write its config, start its Redis then its node; ClusterError (with the log tail) if either fails."""
        doc = self.node.config_document(self.cluster_name, [self.seed], self.settings)
        os.makedirs(os.path.dirname(self.node.config_path), exist_ok=True)
        with open(self.node.config_path, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False, default_flow_style=False)
        deadline = time.monotonic() + timeout
        self.node.redis_process.spawn()
        wait_all_ready([self.node.redis_process], deadline)
        self.node.node_process.spawn()
        wait_all_ready([self.node.node_process], deadline)

    def stop(self) -> None:
        stop_all([self.node.node_process], 10.0)
        stop_all([self.node.redis_process], 10.0)


def _dbsize(address: Address) -> int:
    return int(call(address, "DBSIZE"))


class JoinWatch(threading.Thread):
    """
    Polls the join until it is done or failed, or ``bound`` seconds went
    by (then `error` says so): the joiner's ``/info`` and the DBSIZE of
    the joiner's Redis, of its rack's old owner (``source``) and of
    another rack's (``reference``).
    """

    def __init__(self, joiner: Joiner, source: Address, reference: Address, bound: float) -> None:
        threading.Thread.__init__(self, daemon=True)
        self._halt = threading.Event()
        self.joiner = joiner
        self.source = source
        self.reference = reference
        self.bound = bound
        self.started = time.time()
        self.finished: Optional[float] = None
        self.polls: List[JoinPoll] = []
        self.last_info: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None

    def _info(self) -> Optional[Dict[str, Any]]:
        try:
            return self.joiner.admin.get("/info")
        except (OSError, ValueError, RuntimeError):
            return None   # not listening yet, or busy starting

    def look(self) -> JoinPoll:
        info = self._info()
        if info is not None:
            self.last_info = info
        try:
            joiner = _dbsize(self.joiner.node.redis_address)
        except ConnectionRefusedError:
            joiner = 0   # its Redis is starting
        source, reference = _dbsize(self.source), _dbsize(self.reference)
        phase, copy = join_phase(info, joiner, source, reference)
        copy = copy or {}
        return JoinPoll(time.time(), phase, copy.get("copied"), copy.get("scanned"), copy.get("to_scan"),
                        joiner, source, reference)

    def run(self) -> None:
        try:
            while True:
                poll = self.look()
                self.polls.append(poll)
                if poll.phase in ("done", "failed"):
                    self.finished = poll.at
                    if poll.phase == "failed":
                        section = (self.last_info or {}).get("scaleout") or {}
                        self.error = "the join failed: %s" % section.get("reason")
                    return
                if poll.at - self.started > self.bound:
                    self.error = "the join is still %s after %.0f s" % (poll.phase, self.bound)
                    return
                if self._halt.wait(POLL):
                    self.error = "stopped"
                    return
        except (OSError, RuntimeError, ValueError) as e:
            self.error = str(e)

    def halt(self) -> None:
        """Stop polling (the joiner failed to start) and wait for the thread."""
        self._halt.set()
        self.join()

    @property
    def done(self) -> bool:
        return not self.is_alive()

    @property
    def phase(self) -> Optional[str]:
        return self.polls[-1].phase if self.polls else None

    def tokens(self) -> Sequence[int]:
        """The joiner's tokens, as its own gossip entry says them."""
        info = self.last_info or {}
        return tuple((info.get("gossip") or {}).get("entries", {}).get(info.get("name"), {}).get("tokens") or ())
