# -*- test-case-name: tests.unit.test_run_cutter -*-
"""
Cutting pipelined requests into runs.

A client that pipelines sends many requests in one read.  Consecutive
requests of one plain single-key command whose keys have the same replicas
travel together as one *run*: one piece of the client's own bytes, one
Redis write or peer frame per replica, one reply slot
(`dynomite.consistency.runs` reconciles the joined replies).  A single
request is a run of one.

`RunCutter.cut` is the one place requests are grouped: the coordinator
uses it for a client's pipeline (`dynomite.node.dispatch`), and an entry
node for the writes another datacenter forwarded to it
(`dynomite.node.replica`).  It stops at the first request that cannot be in
a run (another kind of command, wrong arity, bytes that are not canonical
RESP), which its caller then handles on its own.

"Same replicas" is "same plan": `dynomite.placement.router.PlanTable` gives
every key with the same replicas (and, for writes, the same leader) the
same `Plan` object, so the test is one identity comparison, and with a
uniform topology nothing is hashed.

Writes of random keys have different leaders (`dynomite.node.leader`), so
consecutive writes of one command stay one run even when their plans
differ: the run is made of *parts*, one per plan, each the requests of
that plan in their order (so the writes of one key keep theirs).  Each part
travels as a run of its own; the client's replies are put back in its
order (`dynomite.node.sinks.Scatter`).
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from typing import Callable, Dict, List, Optional, Tuple

from dynomite.commands import lww
from dynomite.commands import table as commands
from dynomite.commands.determinism import NOT_DETERMINISTIC, longest_as_is
from dynomite.placement.hashing import key_hash
from dynomite.placement.router import Plan, PlanTable, Router

__all__ = ["Part", "Run", "RunCutter", "part_bytes"]

#: Part of a run of writes whose keys have different leaders: (plan,
#: spans, positions) -- the requests at ``positions`` (0 is the run's
#: first), in ``data[start:end]`` for each ``[start, end]`` of ``spans``.
Part = Tuple[Plan, List[List[int]], List[int]]

#: One run: (command, plan, start, end, count, parts) -- ``count`` requests
#: of ``command`` in ``data[start:end]``, all with ``plan``; or, for writes
#: whose plans differ (their keys have different leaders), ``plan`` None
#: and one `Part` per plan, each its requests in order.
Run = Tuple[commands.Command, Optional[Plan], int, int, int, Optional[List[Part]]]


def part_bytes(data: bytes, spans: List[List[int]]) -> bytes:
    """A `Part`'s requests, as one piece of ``data`` (the bytes its run was cut from)."""
    if len(spans) == 1:
        return data[spans[0][0]:spans[0][1]]
    return b"".join([data[start:end] for start, end in spans])


def _run(cmd, plan, start: int, end: int, count: int, parts) -> Run:
    if parts is None:
        return (cmd, plan, start, end, count, None)
    return (cmd, None, start, end, count, list(parts.values()))

# How many spellings of command names a RunCutter remembers.
_RUNNABLE_NAMES = 4096

_UNSEEN = object()


class RunCutter:
    """Cuts pipelined requests into runs over the routes of one `Router`."""

    def __init__(self, router: Router, versioned: Callable[[], bool] = lambda: False) -> None:
        self._router = router
        self._versioned = versioned
        # command name as sent (exact bytes) -> (Command, key position,
        # fewest and most arguments) for the commands that may go in runs,
        # None for the others; with several datacenters, the writes that
        # reach the others as their state go on their own too (`_apart`)
        self._runnable: Dict[bytes, Optional[Tuple[commands.Command, int, int, int]]] = {}
        self._apart: Dict[bytes, Optional[Tuple[commands.Command, int, int, int]]] = {}

    def cut(self, requests: List[List[bytes]], bounds: List[int], i: int,
            reads: PlanTable, writes: PlanTable) -> Tuple[List[Run], int]:
        """
        The runs from request ``i`` on, up to (not including) the first
        request that cannot be in one; and that request's index (``len(requests)``
        when every request went in a run).  ``bounds`` gives each request's
        place in the bytes it was read from (`RequestParser.bounds`, -1 where
        the bytes are not canonical); reads are planned with the `PlanTable`
        ``reads`` (``router.reads[level]``), writes with ``writes``.
        """
        apart = self._versioned()
        runnable = self._apart if apart else self._runnable
        read_only, write_only = reads.only, writes.only
        write_spread = writes.spread
        hash_tag = self._router.hash_tag
        runs: List[Run] = []
        run_cmd = run_plan = None
        run_start = run_end = run_count = 0
        # a run of writes with several plans: plan id -> Part
        parts: Optional[Dict[int, Part]] = None
        n = len(requests)
        while i < n:
            args = requests[i]
            entry = runnable.get(args[0], _UNSEEN)
            if entry is _UNSEEN:
                entry = self._classify(args[0], runnable, apart)
            start = bounds[2 * i]
            if entry is None or start < 0:
                break
            cmd, index, fewest, most = entry
            if not fewest <= len(args) <= most:
                break
            end = bounds[2 * i + 1]
            if cmd.write:
                plan = write_only
                if plan is None:
                    h = key_hash(args[index], hash_tag)
                    plan = writes.plans[bisect_left(writes.bounds, h) * write_spread + h % write_spread]
            else:
                plan = read_only or reads.plans[bisect_left(reads.bounds, key_hash(args[index], hash_tag))]
            if run_count and cmd is run_cmd and start == run_end and (plan is run_plan or cmd.write):
                if parts is None and plan is not run_plan:
                    parts = {id(run_plan): (run_plan, [[run_start, start]], list(range(run_count)))}
                if parts is not None:
                    part = parts.get(id(plan))
                    if part is None:
                        part = parts[id(plan)] = (plan, [], [])
                    spans = part[1]
                    if spans and spans[-1][1] == start:
                        spans[-1][1] = end
                    else:
                        spans.append([start, end])
                    part[2].append(run_count)
                run_end = end
                run_count += 1
            else:
                if run_count:
                    runs.append(_run(run_cmd, run_plan, run_start, run_end, run_count, parts))
                    parts = None
                run_cmd, run_plan = cmd, plan
                run_start, run_end, run_count = start, end, 1
            i += 1
        if run_count:
            runs.append(_run(run_cmd, run_plan, run_start, run_end, run_count, parts))
        return runs, i

    def _classify(self, name: bytes, runnable: Dict, apart: bool) -> Optional[Tuple[commands.Command, int, int, int]]:
        """
        Whether the command called ``name`` may go in runs (a plain
        single-key command at a fixed position, sent as the client wrote
        it): if so, the command, its key's position and the fewest and most
        arguments it takes (Redis's arity, enough to hold the key, and no
        more than replays as sent: `dynomite.commands.determinism`; never a
        command that runs once, on its leader, and replicates its effect;
        with versioned writes between datacenters (``apart``), never a write that reaches
        them as the state it leaves: `dynomite.commands.lww.ships_state`).
        """
        cmd = commands.lookup(name)
        entry = None
        if (cmd is not None and cmd.route == commands.KEY and not cmd.subcommands
                and cmd.name not in NOT_DETERMINISTIC   # those run once: on their own
                and not (apart and cmd.write and lww.ships_state(cmd.name, [name]))):
            index = commands.fixed_key_index(cmd)
            fewest, most = (cmd.arity, cmd.arity) if cmd.arity >= 0 else (-cmd.arity, sys.maxsize)
            longest = longest_as_is(cmd.name)
            if longest is not None:
                most = min(most, longest)   # longer: a relative time to make absolute first
            if index > 0 and max(fewest, index + 1) <= most:
                entry = (cmd, index, max(fewest, index + 1), most)
        if cmd is not None and len(runnable) < _RUNNABLE_NAMES:
            # only names of real commands are remembered, and not too many
            # spellings of them (SET, set, sEt, ...)
            runnable[name] = entry
        return entry
