# -*- test-case-name: tests.cluster.test_handover -*-
"""
The way of a write, or of a copy of moving keys, to its key's leader.

Every write of a key goes through its leader in this datacenter
(`dynomite.node.leader`): the first of ``Plan.leaders`` that can lead, as
this node sees it: this node's own `Leader`, or a peer in a LEAD frame.

- A leader whose link fails before the write left for it, or that is lost
  after and the write is one that may run twice (`may_lead_again`),
  passes it to the next one; otherwise the client is told the outcome is
  unknown (`UNKNOWN_OUTCOME`): led twice, it could apply twice.
- A node that no longer leads the key answers `LEADER_MOVED` with the
  name of the one that does (it handed the range over, or its view says
  so: `dynomite.node.handover`); the write goes there, flagged
  FLAG_REDIRECTED, and is led there without question.  If this node
  cannot reach that one, the node that named it leads the write itself.
- This node, when it handed the range over, does the same for its own
  clients' writes (and holds them while the handover drains).

A copy of keys of a moving range (`dynomite.scaleout.copier`) takes the
same way, so only the node that orders the keys' writes copies them.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, List, Optional

from dynomite.commands.effects import Effect
from dynomite.node.handover import LEADER_MOVED, MAX_LEADER_MOVES, MOVED_TOO_OFTEN, Handovers, moved_to
from dynomite.node.leader import UNKNOWN_OUTCOME, lead_flags, may_lead_again
from dynomite.peers.link import LINK_FAILURE
from dynomite.placement.router import Plan
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_COPY, FLAG_HERE_ONLY, FLAG_REDIRECTED, FLAG_TRANSACTION, lead_payload

__all__ = ["Leading"]


class _NextLeader:
    """
    A LEAD's sink: a leader that stopped answering passes the write to the
    next one; one that no longer leads the key names the one that does
    (`dynomite.node.handover`), and the write goes there.
    """

    __slots__ = ("_leading", "_index", "_plan", "_request", "_sink", "_normalise", "_effect",
                 "_level", "_here_only", "_moves", "sent", "epoch")

    def __init__(self, leading: "Leading", index: int, plan: Plan, request: Request, sink,
                 normalise, effect, level, here_only: bool, moves: int) -> None:
        self._leading = leading
        self._index = index
        self._plan = plan
        self._request = request
        self._sink = sink
        self._normalise = normalise
        self._effect = effect
        self._level = level
        self._here_only = here_only
        self._moves = moves
        #: the LEAD left for the leader (it did not fail at once, its link down)
        self.sent = False
        #: the view it was sent in (`Leading.view_changed`)
        self.epoch = 0

    def complete(self, raw: bytes) -> None:
        self._sink.complete(raw)
        self._leading.answered(self.epoch)

    def fail(self, raw: bytes) -> None:
        leading = self._leading
        leading.continuing = self.epoch   # sent on, it is still a write of its view
        try:
            self._fail(raw)
        finally:
            leading.continuing = None
            leading.answered(self.epoch)

    def _fail(self, raw: bytes) -> None:
        if raw.startswith(LEADER_MOVED):
            self._leading.lead_moved(moved_to(raw), self._index, self._plan, self._request, self._sink,
                                     self._normalise, self._effect, self._level, self._here_only,
                                     self._moves + 1)
        elif not raw.startswith(LINK_FAILURE):   # the peer link's own: unavailable, timed out
            self._sink.fail(raw)
        elif not self.sent or self._alike_again():
            self._leading.leaders_lost += 1
            self._leading.lead_from(self._index + 1, self._plan, self._request, self._sink,
                                    self._normalise, self._effect, self._level, self._here_only,
                                    self._moves)
        else:
            # it may have been applied and sent on: led again it could apply twice
            self._leading.leaders_unknown += 1
            self._sink.fail(UNKNOWN_OUTCOME)

    def _alike_again(self) -> bool:
        return self._effect is None and may_lead_again(self._request)


class _CopyMoved:
    """A copy's sink: a node that no longer leads the keys names the one that does; the copy goes there."""

    __slots__ = ("_leading", "_plan", "_probe", "_sink", "_moves")

    def __init__(self, leading: "Leading", plan: Plan, probe: Request, sink, moves: int) -> None:
        self._leading = leading
        self._plan = plan
        self._probe = probe
        self._sink = sink
        self._moves = moves

    def complete(self, raw: bytes) -> None:
        self._sink.complete(raw)

    def fail(self, raw: bytes) -> None:
        name = moved_to(raw)
        if name is None or self._moves >= MAX_LEADER_MOVES:
            self._sink.fail(raw)
        else:
            self._leading.copy_at(name, self._plan, self._probe, self._sink, self._moves + 1)


class Leading:
    """This node's way to the leaders of its writes; see the module docstring."""

    def __init__(self, name: str, router, targets, leader) -> None:
        self.name = name
        self._router = router
        self.targets = targets
        self.leader = leader
        self._no_leader = b"-ERR no replica of the key can take writes now\r\n"
        #: writes passed to the next leader because theirs stopped answering
        self.leaders_lost = 0
        #: writes failed because their leader was lost after they left for it (`UNKNOWN_OUTCOME`)
        self.leaders_unknown = 0
        #: writes and copies sent on to the leader a node that no longer leads their keys named
        self.leaders_moved = 0
        #: the ranges this node handed over to their new leaders (`dynomite.node.handover`)
        self.handovers = Handovers(name, lambda done: leader.drain(self._datacenter_nodes(), done),
                                   self._can_lead)
        # LEADs sent and not answered yet, by the view they were sent in;
        # while any sent before the current view is, new writes wait
        # (`view_changed`): a key's leader may have changed, and a write
        # to the new one must not pass one still on its way to the old one
        self._epoch = 0
        self._in_flight: Dict[int, int] = {}
        self._held: Optional[Deque[Callable[[], None]]] = None
        #: the epoch of the write being sent on after its leader's answer (`_NextLeader.fail`)
        self.continuing: Optional[int] = None

    def lead(self, plan: Plan, request: Request, sink, normalise, effect: Optional[Effect],
             level: Optional[str], here_only: bool = False) -> None:
        """A new write to its leader (`lead_from`), after the LEADs of earlier views are answered."""
        if self._held is not None:
            self._held.append(lambda: self.lead_from(0, plan, request, sink, normalise, effect, level, here_only))
            return
        self.lead_from(0, plan, request, sink, normalise, effect, level, here_only)

    def view_changed(self) -> None:
        """
        The ring changed, and with it perhaps a key's leader: the writes
        from now on wait until every LEAD sent before is answered (usually
        a round trip), so none passes one still on its way to the old leader.
        """
        if self._in_flight:   # (an epoch leaves it when its last LEAD is answered)
            self._epoch += 1
            if self._held is None:
                self._held = deque()

    def answered(self, epoch: int) -> None:
        """A LEAD of view ``epoch`` got its answer."""
        in_flight = self._in_flight
        left = in_flight[epoch] - 1
        if left:
            in_flight[epoch] = left
            return
        del in_flight[epoch]
        if self._held is not None and not any(e < self._epoch for e in in_flight):
            held, self._held = self._held, None
            for resume in held:
                resume()

    def lead_from(self, first: int, plan: Plan, request: Request, sink, normalise,
                  effect: Optional[Effect], level: Optional[str], here_only: bool = False,
                  moves: int = 0) -> None:
        """
        ``request`` to ``plan.leaders[first]`` or the first after it that
        can lead; ``here_only``: for this datacenter only (`dynomite.node.each_write`).
        """
        name = self.name
        targets = self.targets
        leaders = plan.leaders
        for i in range(first, len(leaders)):
            node = leaders[i]
            if node.name == name:
                if self.handovers.active:
                    gainer = self.handovers.gainer(plan, plan.position, lambda: self.lead_from(
                        i, plan, request, sink, normalise, effect, level, here_only, moves))
                    if gainer == name:
                        return   # this node hands the range over: it goes on after the drain
                    if gainer is not None:
                        self.lead_moved(gainer, i, plan, request, sink, normalise, effect, level, here_only,
                                        moves + 1)
                        return
                self._lead_here(plan, request, sink, normalise, effect, level, here_only)
                return
            target = targets[node.name]
            if target.can_lead():
                self._send_lead(target, i, plan, request, sink, normalise, effect, level, here_only, moves, 0)
                return
        sink.fail(self._no_leader)

    def lead_moved(self, gainer: Optional[str], index: int, plan: Plan, request: Request, sink, normalise,
                   effect: Optional[Effect], level: Optional[str], here_only: bool, moves: int) -> None:
        """
        A write whose leader (``plan.leaders[index]``) named ``gainer`` as
        the key's leader now (`dynomite.node.handover`): led there, without
        question.  If this node cannot reach it, the one that named it leads.
        """
        if moves > MAX_LEADER_MOVES or gainer is None:
            sink.fail(MOVED_TOO_OFTEN)
            return
        self.leaders_moved += 1
        if gainer == self.name:
            self._lead_here(plan, request, sink, normalise, effect, level, here_only)
            return
        target = self.targets.get(gainer)
        if target is None or not target.can_lead():
            target = self.targets[plan.leaders[index].name]
        self._send_lead(target, index, plan, request, sink, normalise, effect, level, here_only, moves,
                        FLAG_REDIRECTED)

    def _lead_here(self, plan: Plan, request: Request, sink, normalise, effect: Optional[Effect],
                   level: Optional[str], here_only: bool) -> None:
        if level is None:
            # this node's rack's replica: where its DC_ONE reads go
            self.leader.lead(plan, request, sink, plan.level, plan.local[0], normalise, effect, not here_only)
        else:
            self.leader.lead(plan, request, sink, level, None, normalise, effect, not here_only)

    def _send_lead(self, target, index: int, plan: Plan, request: Request, sink, normalise,
                   effect: Optional[Effect], level: Optional[str], here_only: bool, moves: int,
                   flags: int) -> None:
        lead = Request(lead_payload(plan.position, request.payload), request.resp,
                       request.lane, request.count, True,
                       lead_flags(plan.level if level is None else level, effect is not None)
                       | (request.flags & FLAG_TRANSACTION) | (FLAG_HERE_ONLY if here_only else 0) | flags)
        next_leader = _NextLeader(self, index, plan, request, sink, normalise, effect, level, here_only, moves)
        epoch = next_leader.epoch = self._epoch if self.continuing is None else self.continuing
        self._in_flight[epoch] = self._in_flight.get(epoch, 0) + 1
        target.lead(lead, next_leader)
        next_leader.sent = True

    def _datacenter_nodes(self) -> List[str]:
        """The names of this datacenter's nodes, joining and leaving ones included."""
        topology = self._router.topology
        here = topology.local.datacenter
        return [n.name for n in topology.nodes if n.datacenter == here]

    def _can_lead(self, name: str) -> bool:
        target = self.targets.get(name)
        return target is not None and target.can_lead()

    def leader_of(self, plan: Plan) -> Optional[str]:
        """The node that leads ``plan``'s writes now, as this node sees it: the first of its leaders that can."""
        for node in plan.leaders:
            if node.name == self.name or self.targets[node.name].can_lead():
                return node.name
        return None

    def copy(self, plan: Plan, probe: Request, sink) -> None:
        """
        Have ``plan``'s leader (the first that can lead) copy the keys
        ``probe`` dumps to the plan's pending replicas (`Leader.copy`).
        """
        name = self.leader_of(plan)
        if name is None:
            sink.fail(self._no_leader)
        else:
            self.copy_at(name, plan, probe, sink, 0)

    def copy_at(self, name: str, plan: Plan, probe: Request, sink, moves: int) -> None:
        """The copy of `copy` made by node ``name`` (this one: here, unless it handed the range over)."""
        if name == self.name:
            if self.handovers.active:
                gainer = self.handovers.gainer(plan, plan.position,
                                               lambda: self.copy_at(name, plan, probe, sink, moves))
                if gainer == name:
                    return
                if gainer is not None:
                    self.copy_at(gainer, plan, probe, sink, moves + 1)
                    return
            self.leader.copy(plan, probe, sink)
            return
        target = self.targets.get(name)
        if target is None or not target.can_lead():
            sink.fail(b"-ERR the keys' leader %s cannot be reached\r\n" % name.encode())
            return
        target.lead(Request(lead_payload(plan.position, probe.payload), 2, plan.lane, 1, True,
                            FLAG_COPY | (FLAG_REDIRECTED if moves else 0)), _CopyMoved(self, plan, probe, sink, moves))
