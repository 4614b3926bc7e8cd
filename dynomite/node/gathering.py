# -*- test-case-name: tests.unit.test_gathering -*-
"""
Gathering the clients' runs of writes per leader, one reactor turn at a time.

A pipelined client's run of writes is cut in parts, one per key's leader
(`dynomite.placement.pipelines`); each part is led on its own: a LEAD
frame to a peer, or this node's `dynomite.node.leader.Leader`, each with
its sinks and its reconciler.  Fifty clients read in one reactor turn
make fifty parts per leader.  Here the parts of one plan (the same
replicas, leaders and level) made during one batch
(`dynomite.runtime.batching`: every client read in one turn) wait for
the batch's end and are led as one run, as an outbox gathers its writes
for a replica (`dynomite.replication.gathered.Gathered` hands each part its
own replies back, or its failure).  A run stops growing at
`dynomite.replication.gathered.GATHERED_MAX_BYTES`.

What a part is led with does not change: the writes keep their order
within the run, each client's replies come back in its order, and only
runs of one command join (a leader lost in flight hands a run of plain
SETs to the next one, `dynomite.node.leader.may_lead_again`, but not one
with an INCR in it: a SET run must not be held back by another client's
INCRs).  A client
request that is not a run (a transaction, WATCH, a script, any command
the coordinator runs on its own) first has what is gathered led
(`flush`), so a client's later write never overtakes an earlier one.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

from dynomite.placement.router import Plan
from dynomite.replication.gathered import GATHERED_MAX_BYTES, Gathered
from dynomite.runtime import batching
from dynomite.wire.inflight import Request

__all__ = ["WriteGathering"]


class WriteGathering:
    """
    Runs of writes waiting for the end of the batch, per plan, RESP version,
    reply comparison and command; ``write(plan, request, sink, normalise)``
    leads one.
    """

    __slots__ = ("batched", "_write", "_groups", "gathered", "led")

    def __init__(self, write: Callable) -> None:
        self.batched = False
        self._write = write
        # (plan id, RESP, comparison, command) -> (plan, comparison, [(run, sink)], [bytes so far])
        self._groups: Dict[Tuple[int, int, object, str], Tuple[Plan, object, List[Tuple[Request, object]],
                                                              List[int]]] = {}
        #: parts gathered, and the runs they were led in
        self.gathered = 0
        self.led = 0

    def add(self, plan: Plan, request: Request, sink, normalise=None, command: str = "") -> None:
        """
        Lead ``request`` (a run of writes of ``plan``, each a ``command``) at
        the end of the batch, with the others of its plan and command.
        """
        if not batching.defer(self):
            self._write(plan, request, sink, normalise)
            return
        key = (id(plan), request.resp, normalise, command)
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = (plan, normalise, [(request, sink)], [len(request.payload)])
            return
        size = group[3]
        if size[0] + len(request.payload) > GATHERED_MAX_BYTES:
            # led now, this one starts the plan's next run (the order is kept)
            self._lead(plan, normalise, group[2])
            self._groups[key] = (plan, normalise, [(request, sink)], [len(request.payload)])
            return
        group[2].append((request, sink))
        size[0] += len(request.payload)

    def flush(self) -> None:
        """Lead what is gathered now (before a request that is not a run)."""
        if self._groups:
            self.flush_batched()

    def flush_batched(self) -> None:
        """The batch ended: lead each plan's parts as one run."""
        groups, self._groups = self._groups, {}
        for plan, normalise, parts, _ in groups.values():
            self._lead(plan, normalise, parts)

    def _lead(self, plan: Plan, normalise, parts: List[Tuple[Request, object]]) -> None:
        self.gathered += len(parts)
        self.led += 1
        if len(parts) == 1:
            request, sink = parts[0]
        else:
            first = parts[0][0]
            request = Request(b"".join([r.payload for r, _ in parts]), first.resp, first.lane,
                              sum(r.count for r, _ in parts), True)
            sink = Gathered([(r.count, s) for r, s in parts])
        self._write(plan, request, sink, normalise)
