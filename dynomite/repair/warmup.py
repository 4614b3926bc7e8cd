# -*- test-case-name: tests.unit.test_read_repair -*-
"""
Warm-up: a node whose Redis lost its data takes it back from other racks.

While it runs the node is RESUMING (`dynomite.peers.membership`): it takes
writes at once, and reads go to the other racks.  For every ring segment
this node owns, the owner in another rack of its datacenter that may be
read from (else one in another datacenter) is the *source*; each source's
Redis is scanned (`script.stream_request`: DUMP and absolute expiry of
the keys in the ranges this node owns, at most ``rate`` keys/s) and each
key is created here with RESTORE without REPLACE, so a value a client
wrote meanwhile is kept (counted as ``kept``), never overwritten.  The
kept keys are then compared with the other racks of the datacenter and
repaired as read repair does (looked at twice, the majority wins, restored
only if unchanged): what was here may also be a hint replayed onto an
empty key, an INCR counting from nothing.  The node turns NORMAL when
every source has been scanned to the end and that check is done; a source
that fails is replaced by the next candidate for its segments.

With versions between datacenters (``datacenter_conflicts:
last_writer_wins``), a source's version hashes of those ranges, deletes'
tombstones included, are first merged into this Redis's, field by field,
the newer kept (`script.versions_request`, `script.merge_versions_request`):
without them this node could decide a write from another datacenter
otherwise than the others until each key is written again.

What it cannot know (README "Repair"): a key deleted by a client after the
source was scanned and before the value was restored here comes back on
this node only; the next anti-entropy repair finds it on one rack and,
without tombstones, restores it on the others.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from dynomite.config.vocabulary import MAX_TOKEN
from dynomite.repair import script
from dynomite.repair.compare import Scope
from dynomite.repair.run import RepairOptions, RepairRun, ask, together
from dynomite.wire.inflight import Request
from dynomite.wire.replies import is_error
from dynomite.wire.resp import encode_command

__all__ = ["WarmUp", "WarmUpProgress"]

#: keys per SCAN step of a source
COUNT = 500
#: kept keys compared with the other racks at the end, at most
KEPT_CHECKED = 100000


class WarmUpProgress:
    def __init__(self, started: float) -> None:
        self.started = started
        self.finished: Optional[float] = None
        self.error: Optional[str] = None
        self.sources: Dict[str, Dict[str, int]] = {}
        self.scanned = 0
        self.streamed = 0
        self.kept = 0
        #: version hashes merged (with versions between datacenters)
        self.versions = 0
        self.kept_repaired = 0
        self.to_scan = 0

    def as_dict(self, now: float) -> Dict[str, Any]:
        elapsed = max((self.finished or now) - self.started, 1e-6)
        rate = self.scanned / elapsed
        left = max(self.to_scan - self.scanned, 0)
        return {"started": self.started, "finished": self.finished, "error": self.error,
                "sources": self.sources, "scanned": self.scanned, "to_scan": self.to_scan,
                "streamed": self.streamed, "kept": self.kept, "kept_repaired": self.kept_repaired,
                "versions": self.versions,
                "keys_per_second": round(rate, 1),
                "eta_seconds": None if self.finished or not rate else round(left / rate, 1)}


def _ranges(scope: Scope, segments: List[int]) -> List[Tuple[int, int]]:
    """The inclusive hash ranges of ``segments`` (segment i is (bounds[i-1], bounds[i]])."""
    bounds = scope.bounds
    ranges = []
    for i in segments:
        if i == 0:
            ranges.append((0, bounds[0]))
        elif i == len(bounds):
            if bounds[-1] < MAX_TOKEN:
                ranges.append((bounds[-1] + 1, MAX_TOKEN))
        else:
            ranges.append((bounds[i - 1] + 1, bounds[i]))
    return ranges


class WarmUp:
    """See the module docstring."""

    log = Logger()

    def __init__(self, topology, send: Callable[[str, Request, Any], None], clock, hash_tag: Optional[bytes],
                 rate: int, membership, on_counts: Callable[[str, int], None] = lambda e, n: None,
                 versions: bool = False) -> None:
        self._topology = topology
        self._versions = versions
        self._send = send
        self._clock = clock
        self._tag = hash_tag
        self._rate = rate
        self._membership = membership
        self._count = on_counts
        self.progress = WarmUpProgress(clock.seconds())
        # keys that were here already, compared with the other racks at the end
        self._kept: List[bytes] = []

    @staticmethod
    def candidates(topology) -> Dict[int, List[str]]:
        """Per segment this node owns (in a scope of every DC): its other owners, best source first."""
        local = topology.local
        scope = Scope(topology, topology.datacenters)
        label = "%s/%s" % (local.datacenter, local.rack)
        if label not in scope.racks:
            return {}   # this node owns nothing yet (it is joining: `dynomite.scaleout`)
        mine = scope.racks.index(label)
        here = [i for i, label in enumerate(scope.racks) if label.split("/")[0] == local.datacenter]
        result = {}
        for segment, owners in enumerate(scope.owners):
            if owners[mine] == local.name:
                order = [i for i in here if i != mine] + [i for i in range(len(owners)) if i not in here]
                result[segment] = [owners[i] for i in order]
        return result

    @classmethod
    def sources(cls, topology) -> List[str]:
        """Every node that holds a copy of something this node owns."""
        return sorted({name for names in cls.candidates(topology).values() for name in names})

    def run(self) -> Deferred:
        """Hold the node RESUMING, stream, release; fires with the progress (its error set if it failed)."""
        self._membership.hold_resuming(True)
        d = Deferred.fromCoroutine(self._run())

        def ended(result):
            p = self.progress
            p.finished = self._clock.seconds()
            if not isinstance(result, WarmUpProgress):
                p.error = result.getErrorMessage()
                self.log.warn("warm-up failed: {why}; serving reads anyway", why=p.error)
            else:
                self.log.info("warm-up done: {n} keys streamed, {k} kept", n=p.streamed, k=p.kept)
            self._membership.hold_resuming(False)
            return p

        return d.addBoth(ended)

    async def _run(self) -> WarmUpProgress:
        topology = self._topology
        scope = Scope(topology, topology.datacenters)
        todo = self.candidates(topology)
        unreadable = self._membership.unreadable
        while todo:
            # each segment from its first candidate that may be read from (else its first)
            plan: Dict[str, List[int]] = {}
            for segment, names in todo.items():
                readable = [n for n in names if n not in unreadable] or names
                plan.setdefault(readable[0], []).append(segment)
            results = await together([self._stream(name, _ranges(scope, segments))
                                           for name, segments in plan.items()])
            failed = {name for name, ok in zip(plan, results) if not ok}
            next_todo = {}
            for name in failed:
                for segment in plan[name]:
                    rest = [n for n in todo[segment] if n != name]
                    if not rest:
                        raise script.ReplicaError("no replica could stream segment %d" % segment)
                    next_todo[segment] = rest
            todo = next_todo
        if self._kept:
            # what this node held already: a client's newer write, or a
            # replayed hint applied to an empty key (an INCR from nothing):
            # compared with the other racks, repaired if they agree otherwise
            local = (topology.local.datacenter,)
            check = RepairRun(Scope(topology, local), self._send, self._clock, self._tag,
                              RepairOptions(), self._count, self._versions)
            self.progress.kept_repaired = await check.repair_keys(self._kept)
        return self.progress

    async def _stream(self, source: str, ranges: List[Tuple[int, int]]) -> bool:
        """Stream ``ranges`` from ``source`` (their versions first); False if it failed (another source takes over)."""
        p = self.progress
        mine = p.sources.setdefault(source, {"scanned": 0, "streamed": 0, "kept": 0})
        local = self._topology.local.name
        size = await ask(self._send, source, Request(encode_command([b"DBSIZE"])))
        if size[:1] == b":":
            p.to_scan += int(size[1:-2])

        async def restore(step: script.ScanStep) -> None:
            items = script.read_stream(step)
            replies = await together([
                ask(self._send, local, script.restore_new_request(key, dump, expiry))
                for key, dump, expiry in items])
            for (key, _, _), raw in zip(items, replies):
                if not is_error(raw):
                    p.streamed += 1
                    mine["streamed"] += 1
                elif raw.startswith(b"-BUSYKEY"):
                    p.kept += 1
                    mine["kept"] += 1
                    if len(self._kept) < KEPT_CHECKED:
                        self._kept.append(key)
                else:
                    raise script.ReplicaError("restoring here: %s" % raw[1:].strip().decode("utf-8", "replace"))
            self._count("streamed", sum(1 for raw in replies if not is_error(raw)))
            self._count("kept", sum(1 for raw in replies if raw.startswith(b"-BUSYKEY")))
            p.scanned += step.scanned
            mine["scanned"] += step.scanned

        async def merge(step: script.ScanStep) -> None:
            items = script.read_stream(step)
            if items:
                merged = await ask(self._send, local, script.merge_versions_request(items))
                if is_error(merged):
                    raise script.ReplicaError("merging versions here: %s"
                                              % merged[1:].strip().decode("utf-8", "replace"))
                p.versions += len(items)

        tag = self._tag
        # the versions first (a few bytes a key): a write from another
        # datacenter arriving meanwhile is decided by them
        if self._versions and not await self._scan(
                source, lambda cursor: script.versions_request(cursor, COUNT, tag, ranges), merge):
            return False
        return await self._scan(source, lambda cursor: script.stream_request(cursor, COUNT, tag, ranges), restore)

    async def _scan(self, source: str, request: Callable[[int], Request],
                    handle: Callable[[script.ScanStep], Any]) -> bool:
        """
        Each SCAN step ``request(cursor)`` of ``source``, handed to ``handle``,
        at most ``rate`` keys/s; False if the source failed.
        """
        cursor, seen, began = 0, 0, self._clock.seconds()
        while True:
            raw = await ask(self._send, source, request(cursor))
            try:
                step = script.scan_step(raw)
            except script.ReplicaError as e:
                self.log.warn("warm-up source {source} failed: {why}", source=source, why=str(e))
                return False
            await handle(step)
            seen += step.scanned
            cursor = step.cursor
            if cursor == 0:
                return True
            await self._pace(seen, began)

    async def _pace(self, seen: int, began: float) -> None:
        """Wait until ``seen`` keys scanned since ``began`` are within ``rate`` keys/s."""
        if self._rate:
            ahead = seen / self._rate - (self._clock.seconds() - began)
            if ahead > 0:
                await deferLater(self._clock, ahead, lambda: None)
