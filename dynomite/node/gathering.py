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

What a part is led with does not change: a plan's parts are led in the
order they came (a client's writes of one key keep their order), each
client's replies come back in its order, and only consecutive parts of
one command join (a leader lost in flight hands a run of plain SETs to
the next one, `dynomite.node.leader.may_lead_again`, but not one with an
INCR in it: a SET must not be held back by another client's INCR).  A client
request that is not a run (a transaction, WATCH, a script, any command
the coordinator runs on its own) first has what is gathered led
(`flush`), so a client's later write never overtakes an earlier one.
"""

from __future__ import annotations

from typing import Callable, Dict, List

from dynomite.placement.router import Plan
from dynomite.replication.gathered import GatheredRun
from dynomite.runtime import batching
from dynomite.wire.inflight import Request

__all__ = ["WriteGathering"]


class _Run(GatheredRun):
    """Consecutive parts of one plan, RESP version, reply comparison and command, led as one run."""

    __slots__ = ("plan", "resp", "normalise", "command")

    def __init__(self, plan: Plan, request: Request, sink, normalise, command: str) -> None:
        GatheredRun.__init__(self, request, sink)
        self.plan = plan
        self.resp = request.resp
        self.normalise = normalise
        self.command = command

    def takes(self, request: Request, normalise, command: str) -> bool:
        return (command == self.command and request.resp == self.resp and normalise is self.normalise
                and self.fits(request))


class WriteGathering:
    """
    Runs of writes waiting for the end of the batch, in their order per
    plan; ``write(plan, request, sink, normalise)`` leads one.
    """

    __slots__ = ("batched", "_write", "_plans", "gathered", "led")

    def __init__(self, write: Callable) -> None:
        self.batched = False
        self._write = write
        # plan id -> its runs, in the order their first parts came
        self._plans: Dict[int, List[_Run]] = {}
        #: parts gathered, and the runs they were led in
        self.gathered = 0
        self.led = 0

    def add(self, plan: Plan, request: Request, sink, normalise=None, command: str = "") -> None:
        """
        Lead ``request`` (a run of writes of ``plan``, each a ``command``) at
        the end of the batch: joined to the plan's last run if that is of the
        same command (and RESP version, reply comparison, within the size
        bound), else as the plan's next run.
        """
        if not batching.defer(self):
            self._write(plan, request, sink, normalise)
            return
        runs = self._plans.get(id(plan))
        if runs is None:
            self._plans[id(plan)] = [_Run(plan, request, sink, normalise, command)]
            return
        last = runs[-1]
        if last.takes(request, normalise, command):
            last.add(request, sink)
        else:
            runs.append(_Run(plan, request, sink, normalise, command))

    def flush(self) -> None:
        """Lead what is gathered now (before a request that is not a run)."""
        if self._plans:
            self.flush_batched()

    def flush_batched(self) -> None:
        """The batch ended: lead each plan's runs, in their order."""
        plans, self._plans = self._plans, {}
        for runs in plans.values():
            for run in runs:
                self._lead(run)

    def _lead(self, run: _Run) -> None:
        self.gathered += len(run.parts)
        self.led += 1
        request, sink = run.joined()
        self._write(run.plan, request, sink, run.normalise)
