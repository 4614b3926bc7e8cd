# -*- test-case-name: tests.unit.test_repair_run -*-
"""
One anti-entropy repair, from the first scan to the last restore.

`RepairRun.run` goes through these phases (its `progress` says which, with
counts, keys/s and an ETA for the scans):

1. *sizing*: DBSIZE of every replica in scope, for progress;
2. *digests*: every replica's Redis is scanned once (`script.cells_request`,
   ``count`` keys a step, at most ``rate`` keys/s each, replicas in
   parallel) for its cell digests; `compare.differing_cells`;
3. *listing*: replicas holding differing cells are scanned again, listing
   the keys of those buckets with their digests; `compare.differing_keys`;
4. *rechecking*: after ``recheck_delay``, the digests of those keys are
   asked again, ``rounds`` times; a key that changed between two looks (a
   write in flight) drops out (`compare.stable`);
5. *repairing* (not with ``dry_run``): `compare.judge` picks the winner;
   its value is fetched (DUMP, absolute expiry and digest in one script
   call) and restored on the losers by ``restore_if``, which replaces the
   key only if its digest there is still the one observed: a client's
   write that lands meanwhile is never overwritten, the key is skipped
   (and found by the next repair if it still differs).

Replicas are reached through ``send(node_name, request, sink)``, the
node's `dynomite.replication.targets.Targets`: the local Redis, or a
peer's REQUEST frame.  A replica that cannot be reached ends the run with
an error: a repair compares every replica of a range or none.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.task import deferLater

from dynomite.commands import lww
from dynomite.repair import script
from dynomite.repair.compare import (
    Scope, Verdict, bitmaps, differing_cells, differing_keys, judge, stable,
)
from dynomite.wire.inflight import Request
from dynomite.wire.replies import is_error
from dynomite.wire.resp import encode_command

__all__ = ["PHASES", "RepairOptions", "RepairRun", "RepairProgress", "ask", "together"]

#: the phases of a running repair, in order
PHASES = ("sizing", "digests", "listing", "rechecking", "repairing")
#: keys per digest or fetch request
BATCH = 200
#: differences listed in a result (all are counted)
LISTED = 1000


class RepairOptions(NamedTuple):
    dry_run: bool = False
    source: Optional[str] = None       # "dc/rack" (or "rack") that breaks ties
    all_datacenters: bool = False      # compare every DC's racks, not only the local DC's
    rate: int = 5000                   # keys/s per replica scan; 0 = no limit
    recheck_delay: float = 1.0         # seconds between the looks at differing keys
    rounds: int = 2                    # looks after the listing
    count: int = 500                   # keys per SCAN step


class RepairProgress:
    """Where a run stands; read by /info and dynomite-admin repair."""

    def __init__(self, started: float) -> None:
        self.phase = "sizing"
        self.started = started
        self.finished: Optional[float] = None
        self.error: Optional[str] = None
        self.keys_total = 0          # keys held by the replicas in scope (DBSIZE)
        self.to_scan = 0             # keys the current scan phase will see
        self.scanned = 0             # keys seen by scans so far, all phases
        self.phase_scanned = 0
        self.phase_started = started
        self.cells_differing = 0
        self.keys_differing = 0      # keys that differed in the listing
        self.keys_changed = 0        # dropped out while rechecking (writes in flight)
        self.keys_repaired = 0
        self.keys_skipped = 0        # changed between the last look and the restore
        self.keys_undecided = 0
        self.differences: List[Dict[str, Any]] = []

    def enter(self, phase: str, now: float, to_scan: int = 0) -> None:
        self.phase = phase
        self.phase_started = now
        self.phase_scanned = 0
        self.to_scan = to_scan

    def as_dict(self, now: float) -> Dict[str, Any]:
        elapsed = max(now - self.phase_started, 1e-6)
        rate = self.phase_scanned / elapsed
        left = max(self.to_scan - self.phase_scanned, 0)
        return {
            "phase": self.phase, "started": self.started, "finished": self.finished, "error": self.error,
            "keys_total": self.keys_total, "scanned": self.scanned,
            "phase_scanned": self.phase_scanned, "phase_to_scan": self.to_scan,
            "keys_per_second": round(rate, 1),
            "eta_seconds": round(left / rate, 1) if rate > 0 and self.to_scan else None,
            "cells_differing": self.cells_differing, "keys_differing": self.keys_differing,
            "keys_changed": self.keys_changed, "keys_repaired": self.keys_repaired,
            "keys_skipped": self.keys_skipped, "keys_undecided": self.keys_undecided,
            "differences": self.differences,
        }


class _Reply:
    __slots__ = ("deferred",)

    def __init__(self) -> None:
        self.deferred: Deferred = Deferred()

    def complete(self, raw: bytes) -> None:
        self.deferred.callback(raw)

    def fail(self, raw: bytes) -> None:
        self.deferred.callback(raw)


def ask(send: Callable[[str, Request, Any], None], node: str, request: Request) -> Deferred:
    """Send ``request`` to ``node``; the Deferred fires with the raw reply (an error reply too)."""
    reply = _Reply()
    send(node, request, reply)
    return reply.deferred


def together(awaitables) -> Deferred:
    """Wait for every coroutine or Deferred; fires with their results in order, or the first failure."""
    return gatherResults([a if isinstance(a, Deferred) else Deferred.fromCoroutine(a) for a in awaitables],
                         consumeErrors=True)


def _show(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


def _merge_cells(answer: script.ScanStep, into: Dict) -> None:
    # a cell's keys may come in several steps: their digests combine by XOR
    for cell, words in script.read_cells(answer).items():
        old = into.get(cell)
        into[cell] = words if old is None else (old[0] ^ words[0], old[1] ^ words[1])


def _merge_keys(answer: script.ScanStep, into: Dict) -> None:
    into.update(script.read_keys(answer))


class RepairRun:
    """See the module docstring."""

    def __init__(self, scope: Scope, send: Callable[[str, Request, Any], None], clock,
                 hash_tag: Optional[bytes], options: RepairOptions = RepairOptions(),
                 on_counts: Callable[[str, int], None] = lambda event, n: None, versions: bool = False) -> None:
        self.scope = scope
        # versions between datacenters: a key restored gets the winner's merged into its own
        self._versions = versions
        self._send = send
        self._clock = clock
        self._tag = hash_tag
        self.options = options
        self._count = on_counts
        self.progress = RepairProgress(clock.seconds())
        self.source = None if options.source is None else scope.rack_index(options.source)
        if options.source is not None and self.source is None:
            raise ValueError("no rack %r in scope (racks: %s)" % (options.source, ", ".join(scope.racks)))
        self.cancelled = False

    def run(self) -> Deferred:
        """Fires with the progress (finished, or with its error) when the run ends."""
        d = Deferred.fromCoroutine(self._run())

        def ended(result):
            p = self.progress
            p.finished = self._clock.seconds()
            if not isinstance(result, RepairProgress):
                while result.check(FirstError):
                    result = result.value.subFailure
                p.error = result.getErrorMessage()
                p.phase = "failed"
            else:
                p.phase = "cancelled" if self.cancelled else "done"
            return p

        return d.addBoth(ended)

    async def _ask(self, node: str, request: Request) -> bytes:
        raw = await ask(self._send, node, request)
        if is_error(raw):
            raise script.ReplicaError("%s: %s" % (node, raw[1:].strip().decode("utf-8", "replace")))
        return raw

    async def _run(self) -> RepairProgress:
        p = self.progress
        nodes = self.scope.nodes
        sizes = await together([self._ask(n, Request(encode_command([b"DBSIZE"]))) for n in nodes])
        p.keys_total = sum(int(raw[1:-2]) for raw in sizes)

        p.enter("digests", self._clock.seconds(), p.keys_total)
        digests = dict(zip(nodes, await together([self._scan(n, self._cells_step, _merge_cells) for n in nodes])))
        cells = differing_cells(self.scope, digests)
        p.cells_differing = len(cells)
        self._count("cells_differing", len(cells))
        if not cells or self.cancelled:
            return p

        wanted = bitmaps(self.scope, cells)
        p.enter("listing", self._clock.seconds(), sum(int(raw[1:-2]) for n, raw in zip(nodes, sizes)
                                                       if n in wanted))
        listed = dict(zip(wanted, await together(
            [self._scan(n, self._keys_step(bitmap), _merge_keys) for n, bitmap in wanted.items()])))
        observed = differing_keys(self.scope, listed, cells, self._tag)
        p.keys_differing = len(observed)
        self._count("differing", len(observed))

        for _ in range(self.options.rounds):
            if not observed or self.cancelled:
                break
            p.enter("rechecking", self._clock.seconds())
            await deferLater(self._clock, self.options.recheck_delay, lambda: None)
            again = await self._look(observed)
            kept = stable(observed, again)
            p.keys_changed += len(observed) - len(kept)
            observed = kept
        verdicts = [judge(key, seen, self.source) for key, seen in sorted(observed.items())]
        p.keys_undecided = sum(1 for v in verdicts if v.winner is None)
        self._count("undecided", p.keys_undecided)
        p.differences = [self._describe(v) for v in verdicts[:LISTED]]
        if self.options.dry_run or self.cancelled:
            return p
        p.enter("repairing", self._clock.seconds(), len(verdicts) - p.keys_undecided)
        await self._repair([v for v in verdicts if v.winner is not None])
        return p

    def repair_keys(self, keys: Sequence[bytes]) -> Deferred:
        """Read repair: look at ``keys`` twice, repair those that differ the same way; fires with how many."""
        return Deferred.fromCoroutine(self._repair_keys(keys))

    async def _repair_keys(self, keys: Sequence[bytes]) -> int:
        observed = {key: () for key in keys}
        first = await self._look(observed)
        differing = {key: seen for key, seen in first.items() if len(set(seen)) > 1}
        if not differing:
            return 0
        await deferLater(self._clock, self.options.recheck_delay, lambda: None)
        observed = stable(differing, await self._look(differing))
        verdicts = [judge(key, seen, self.source) for key, seen in observed.items()]
        await self._repair([v for v in verdicts if v.winner is not None])
        return self.progress.keys_repaired

    # -- scans -------------------------------------------------------------------

    def _cells_step(self, cursor: int) -> Request:
        return script.cells_request(cursor, self.options.count, self._tag, self.scope.bounds)

    def _keys_step(self, bitmap: bytes) -> Callable[[int], Request]:
        return lambda cursor: script.keys_request(cursor, self.options.count, self._tag, bitmap)

    async def _scan(self, node: str, step: Callable[[int], Request],
                    merge: Callable[[script.ScanStep, Dict], None]) -> Dict:
        """Scan ``node``'s Redis to the end, each step's items merged by ``merge``."""
        p = self.progress
        into: Dict = {}
        cursor, seen, began = 0, 0, self._clock.seconds()
        rate = self.options.rate
        while not self.cancelled:
            answer = script.scan_step(await self._ask(node, step(cursor)))
            seen += answer.scanned
            p.scanned += answer.scanned
            p.phase_scanned += answer.scanned
            self._count("scanned", answer.scanned)
            merge(answer, into)
            cursor = answer.cursor
            if cursor == 0:
                break
            if rate:
                ahead = seen / rate - (self._clock.seconds() - began)
                if ahead > 0:
                    await deferLater(self._clock, ahead, lambda: None)
        return into

    # -- rechecks and repairs ----------------------------------------------------------

    async def _digests(self, node: str, keys: Sequence[bytes]) -> Dict[bytes, bytes]:
        found: Dict[bytes, bytes] = {}
        for i in range(0, len(keys), BATCH):
            batch = keys[i:i + BATCH]
            found.update(script.read_digests(await self._ask(node, script.digest_request(batch)), batch))
        return found

    async def _look(self, observed: Dict[bytes, Sequence[bytes]]):
        """The digests of ``observed``'s keys now, on each of their replicas."""
        per_node: Dict[str, List[bytes]] = {}
        for key in observed:
            for name in self.scope.owners[self.scope.cell(key, self._tag)[0]]:
                per_node.setdefault(name, []).append(key)
        answers = dict(zip(per_node, await together([self._digests(name, keys) for name, keys in per_node.items()])))
        return {key: tuple(answers[name][key] for name in self.scope.owners[self.scope.cell(key, self._tag)[0]])
                for key in observed}

    async def _repair(self, verdicts: List[Verdict]) -> None:
        by_winner: Dict[str, List[Verdict]] = {}
        for v in verdicts:
            owners = self.scope.owners[self.scope.cell(v.key, self._tag)[0]]
            by_winner.setdefault(owners[v.winner], []).append(v)
        for winner, mine in sorted(by_winner.items()):
            for i in range(0, len(mine), BATCH):
                if self.cancelled:
                    return
                batch = mine[i:i + BATCH]
                keys = [v.key for v in batch]
                fetched = script.read_fetched(await self._ask(winner, script.fetch_request(keys)), keys)
                held: List[script.DumpedVersions] = [None] * len(keys)
                if self._versions:
                    held = script.read_key_versions(await self._ask(winner, script.key_versions_request(keys)), keys)
                await together([self._restore(v, fetched[v.key], versions) for v, versions in zip(batch, held)])

    async def _restore(self, v: Verdict, value: Optional[Tuple[bytes, bytes, int]],
                       versions: script.DumpedVersions = None) -> None:
        """
        Give ``v``'s losers the winner's ``value``, unless the winner or they
        changed since the last look; and merge the winner's ``versions`` of
        the key into theirs (the newer of each kept: always safe).
        """
        restored = False
        owners = self.scope.owners[self.scope.cell(v.key, self._tag)[0]]
        if value is not None and value[0] == v.seen[v.winner]:
            _, dump, expiry = value
            done = await together([
                self._ask(owners[loser], script.restore_if_request(v.key, v.seen[loser], dump, expiry))
                for loser in v.losers])
            restored = all(script.read_restored(raw) for raw in done)
        if versions is not None:
            merge = script.merge_versions_request([(lww.version_key(v.key),) + versions])
            await together([self._ask(owners[loser], merge) for loser in v.losers])
        p = self.progress
        if restored:
            p.keys_repaired += 1
        else:
            p.keys_skipped += 1
        p.phase_scanned += 1
        self._count("repaired" if restored else "skipped", 1)

    def _describe(self, v: Verdict) -> Dict[str, Any]:
        racks = self.scope.racks
        state = {}
        for i, digest in enumerate(v.seen):
            if not digest:
                state[racks[i]] = "missing"
            elif v.winner is not None and digest == v.seen[v.winner]:
                state[racks[i]] = "winner" if i == v.winner else "same"
            else:
                state[racks[i]] = "differs"
        return {"key": _show(v.key), "racks": state, "reason": v.reason,
                "winner": None if v.winner is None else racks[v.winner]}
