# -*- test-case-name: tests.unit.test_scaleout -*-
"""
Copying moving ranges: list their keys on the current owner, have each
key's leader copy it to the future owner.

`CopyRun` takes the `dynomite.scaleout.moves.Move` list of one node's join
or leave.  For each source (a range's current owner) it scans that
source's Redis (`dynomite.repair.script.list_request`: the names of the
keys whose hash is in the source's moving ranges, a SCAN step at a time,
at most ``rate`` keys scanned per second), cuts the names by write plan,
and sends each batch to the plan's leader as a copy
(`dynomite.node.leading.Leading.copy`): the leader reads the keys
in their place in their order and sends them to the pending replicas
there, so a write a client makes meanwhile is neither lost nor undone.

A key created after the scan went past it needs no copy: the pending
replica has received every write of the range since every leader knew of
the move, which the manager waits for before the run starts.  A batch that
fails (its leader not knowing the move yet, or its source stale) is sent
again after ``retry_delay``, until it is copied or the run is cancelled.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from dynomite.config.vocabulary import DC_ONE
from dynomite.repair import script
from dynomite.repair.run import ask, together
from dynomite.scaleout.moves import Move
from dynomite.wire.inflight import Request
from dynomite.wire.replies import is_error
from dynomite.wire.resp import encode_command

__all__ = ["CopyRun", "CopyProgress", "Cancelled", "COUNT", "BATCH", "answered", "route_writes"]

#: keys per SCAN step of a source
COUNT = 500
#: keys per copy (one leader, one lane)
BATCH = 100


class Cancelled(Exception):
    """The run was cancelled (the move was withdrawn, or the node is stopping)."""


class CopyProgress:
    """How far a run is: keys scanned on the sources, of about how many, and copied."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.finished: Optional[float] = None
        self.error: Optional[str] = None
        self.scanned = 0
        self.to_scan = 0
        self.copied = 0
        self.errors = 0
        self.last_error: Optional[str] = None

    def as_dict(self, now: float) -> Dict[str, Any]:
        # a rate over less than a second says nothing (a handful of keys copied at once)
        elapsed = max((self.finished or now) - self.started, 1.0)
        rate = self.scanned / elapsed
        left = max(self.to_scan - self.scanned, 0)
        return {"started": self.started, "finished": self.finished, "error": self.error,
                "scanned": self.scanned, "to_scan": self.to_scan, "copied": self.copied,
                "copy_errors": self.errors, "last_copy_error": self.last_error,
                "keys_per_second": round(self.copied / elapsed, 1),
                "eta_seconds": None if self.finished or not rate else round(left / rate, 1)}


class CopyRun:
    """
    See the module docstring.  ``send(node, request, sink)`` reaches a
    node's Redis; ``copy(plan, probe, sink)`` has a plan's leader copy;
    ``route(key)`` is the key's DC_ONE write plan.
    """

    log = Logger()

    def __init__(self, moves: List[Move], route: Callable[[bytes], Any], copy, send, clock,
                 hash_tag: Optional[bytes], rate: int, retry_delay: float = 1.0,
                 on_counts: Callable[[str, int], None] = lambda event, n: None, versions: bool = False) -> None:
        self.moves = moves
        # with versions between datacenters, deletes' tombstones are copied too
        self._versions = versions
        self._route = route
        self._copy = copy
        self._send = send
        self._clock = clock
        self._tag = hash_tag
        self._rate = rate
        self._retry_delay = retry_delay
        self._count = on_counts
        self.cancelled = False
        self.progress = CopyProgress(clock.seconds())

    def cancel(self) -> None:
        self.cancelled = True

    def run(self) -> Deferred:
        """Copy every move; fires with the progress (its ``error`` set if it failed or was cancelled)."""
        d = Deferred.fromCoroutine(self._run())

        def ended(result):
            p = self.progress
            p.finished = self._clock.seconds()
            if not isinstance(result, CopyProgress):
                p.error = result.getErrorMessage() if not result.check(Cancelled) else "cancelled"
            return p

        return d.addBoth(ended)

    async def _run(self) -> CopyProgress:
        by_source: Dict[str, List[Tuple[int, int]]] = {}
        for move in self.moves:
            by_source.setdefault(move.source, []).append((move.start, move.end))
        await together([self._from(source, ranges) for source, ranges in sorted(by_source.items())])
        return self.progress

    async def _ask(self, node: str, request: Request) -> bytes:
        """``request`` on ``node``'s Redis, asked again after ``retry_delay`` until it answers."""
        return await answered(lambda: ask(self._send, node, request), self._clock, self._retry_delay,
                              lambda: self.cancelled, lambda raw: self._failed("listing on %s" % node, raw))

    async def _from(self, source: str, ranges: List[Tuple[int, int]]) -> None:
        p = self.progress
        size = await self._ask(source, Request(encode_command([b"DBSIZE"])))
        p.to_scan += int(size[1:-2]) if size[:1] == b":" else 0
        tag = self._tag
        await self._list(source, lambda cursor: script.list_request(cursor, COUNT, tag, ranges))
        if self._versions:
            # a key's leader copies its versions with it (`Leader.copy`);
            # a deleted key's versions are found apart (what that scan sees
            # is not among the source's keys its progress counts)
            await self._list(source, lambda cursor: script.tombstones_request(cursor, COUNT, tag, ranges), False)

    async def _list(self, source: str, request: Callable[[int], Request], counted: bool = True) -> None:
        """
        Copy the keys of each SCAN step ``request(cursor)`` of ``source``, at
        most ``rate`` scanned a second; ``counted``: what it scans is progress.
        """
        p = self.progress
        cursor, seen, began = 0, 0, self._clock.seconds()
        while True:
            step = script.scan_step(await self._ask(source, request(cursor)))
            await self._copy_keys(step.items)
            seen += step.scanned
            if counted:
                p.scanned += step.scanned
                self._count("scanned", step.scanned)
            cursor = step.cursor
            if cursor == 0:
                return
            if self._rate:
                ahead = seen / self._rate - (self._clock.seconds() - began)
                if ahead > 0:
                    await deferLater(self._clock, ahead, lambda: None)

    async def _copy_keys(self, keys: List[bytes]) -> None:
        groups: Dict[int, List[bytes]] = {}
        for key in keys:
            groups.setdefault(id(self._route(key)), []).append(key)
        batches = [group[i:i + BATCH] for group in groups.values() for i in range(0, len(group), BATCH)]
        await together([self._copy_batch(batch) for batch in batches])

    async def _copy_batch(self, keys: List[bytes]) -> None:
        probe = script.dump_request(keys)

        def copy(_name: str, request: Request, sink) -> None:
            # routed again on every try: the topology may have moved on
            self._copy(self._route(keys[0]), request, sink)

        await answered(lambda: ask(copy, "", probe), self._clock, self._retry_delay,
                       lambda: self.cancelled, lambda raw: self._failed("copy", raw))
        self.progress.copied += len(keys)
        self._count("copied", len(keys))

    def _failed(self, what: str, raw: bytes) -> None:
        p = self.progress
        p.errors += 1
        p.last_error = "%s: %s" % (what, raw[1:].strip().decode("utf-8", "replace"))
        self._count("error", 1)
        if p.errors in (1, 10, 100) or p.errors % 1000 == 0:
            self.log.warn("scale-out {what} failed ({n} so far), trying again: {why}", what=what, n=p.errors,
                          why=p.last_error)



async def answered(asking: Callable[[], Deferred], clock, delay: float, stopped: Callable[[], bool],
                   failed: Callable[[bytes], None]) -> bytes:
    """
    The first answer of ``asking()`` that is not an error, asked again
    ``delay`` seconds after each error (told to ``failed``); `Cancelled`
    once ``stopped()``.
    """
    while True:
        if stopped():
            raise Cancelled()
        raw = await asking()
        if not is_error(raw):
            return raw
        failed(raw)
        await deferLater(clock, delay, lambda: None)


def route_writes(router) -> Callable[[bytes], Any]:
    """A key's DC_ONE write plan over ``router`` (whatever topology it routes over now)."""
    return lambda key: router.route(key, True, DC_ONE)
