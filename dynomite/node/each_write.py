# -*- test-case-name: tests.cluster.test_each_write -*-
"""
DC_EACH_SAFE_QUORUM writes: led in every datacenter by the key's leader there.

Every write of a key goes through its leader, one per datacenter
(`dynomite.node.leader`), so the replicas of a datacenter apply a key's
writes in one order.  A write at DC_EACH_SAFE_QUORUM needs a safe quorum in
every datacenter, so it cannot go to other datacenters the usual way (the
leader's outbox for a datacenter, acknowledged later): the coordinator
asks each datacenter's leader itself.

- This datacenter: the key's leader here leads it at DC_SAFE_QUORUM, for
  this datacenter only (`FLAG_HERE_ONLY`: it does not forward it).
- Each other datacenter: a LEAD frame at DC_SAFE_QUORUM with
  `FLAG_HERE_ONLY` to the key's leader there (the owner in the rack
  `leader_turn` names from the key's own hash, as that datacenter's own
  coordinators pick it), or the next one when a leader's link fails.  If
  none can take it, the write joins that datacenter's outbox (a FORWARD,
  held as a hint while it is away: it is applied there later, as any
  write) and that datacenter counts as failed.
- `EachQuorum` takes one answer per datacenter, its leader's reconciled
  one: every datacenter must reach its safe quorum and all must agree.

A peer older than the flag leads such a LEAD for its datacenter and
forwards it too; every node of a cluster must run this version before
clients use DC_EACH_SAFE_QUORUM.
"""

from __future__ import annotations

from typing import Optional

from dynomite.commands import table as commands
from dynomite.config.vocabulary import DC_SAFE_QUORUM
from dynomite.consistency.quorum import EachQuorum
from dynomite.node.handover import LEADER_MOVED, MAX_LEADER_MOVES, MOVED_TOO_OFTEN, moved_to
from dynomite.node.leader import UNKNOWN_OUTCOME, lead_flags, may_lead_again
from dynomite.peers.link import LINK_FAILURE
from dynomite.placement.hashing import key_hash
from dynomite.placement.router import Plan, leader_turn
from dynomite.replication.targets import dc_target_name
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_HERE_ONLY, FLAG_REDIRECTED, FLAG_TRANSACTION, lead_payload
from dynomite.wire.requests import parse_whole

__all__ = ["write_in_each_dc"]


def write_in_each_dc(coordinator, plan: Plan, request: Request, sink, normalise) -> None:
    """Lead ``request`` in every datacenter of ``plan.each``; see the module docstring."""
    each = EachQuorum({dc: 1 for dc in plan.each}, coordinator.reply_to(sink, True, plan.level), normalise)
    here = coordinator.router.topology.local.datacenter
    position = _position(request, coordinator.router.hash_tag)
    for dc in plan.each:
        if dc == here:
            coordinator.leading.lead(plan, request, each.replica(dc), normalise, None, DC_SAFE_QUORUM,
                                     here_only=True)
        else:
            _RemoteLeaders(coordinator, dc, position if position is not None else plan.position,
                           request, each.replica(dc)).next()


def _position(request: Request, hash_tag: Optional[bytes]) -> Optional[int]:
    """The ring position of the request's first key (a transaction's: of its first command with keys)."""
    try:
        requests, _ = parse_whole(request.payload)
    except Exception:
        return None
    for args in requests:
        cmd = commands.lookup(args[0])
        keys = commands.keys(cmd, args) if cmd is not None else []
        if keys:
            return key_hash(keys[0], hash_tag)
    return None


class _RemoteLeaders:
    """One datacenter's part of the write: its leaders in turn, then its outbox."""

    __slots__ = ("_coordinator", "_dc", "_position", "_request", "_sink", "_leaders", "_next", "_sent",
                 "_moves")

    def __init__(self, coordinator, dc: str, position: int, request: Request, sink) -> None:
        self._coordinator = coordinator
        self._dc = dc
        self._position = position
        self._request = request
        self._sink = sink
        ordered = coordinator.router.topology.dc_replicas(dc, position)
        turn = leader_turn(position, len(ordered))
        self._leaders = ordered[turn:] + ordered[:turn]
        self._next = 0
        self._sent = False   # the LEAD left for the current leader (its link was up)
        self._moves = 0      # LEADER_MOVED answers followed (`dynomite.node.handover`)

    def next(self) -> None:
        c = self._coordinator
        request = self._request
        while self._next < len(self._leaders):
            node = self._leaders[self._next]
            self._next += 1
            target = c.targets.get(node.name)
            if target is not None and target.can_lead():
                self._send(target, 0)
                return
        c.outboxes[dc_target_name(self._dc)].submit(request, _Later(self._sink, self._dc))

    def _send(self, target, flags: int) -> None:
        request = self._request
        flags |= lead_flags(DC_SAFE_QUORUM, False) | FLAG_HERE_ONLY | (request.flags & FLAG_TRANSACTION)
        self._sent = False
        target.lead(Request(lead_payload(self._position, request.payload), request.resp, request.lane,
                            request.count, True, flags), self)
        self._sent = True

    def _moved(self, name: Optional[str]) -> None:
        """That leader named the one leading the key now: there, without question (or back to it)."""
        c = self._coordinator
        self._moves += 1
        if name is None or self._moves > MAX_LEADER_MOVES:
            self._sink.fail(MOVED_TOO_OFTEN)
            return
        target = c.targets.get(name)
        if target is None or not target.can_lead():
            target = c.targets[self._leaders[self._next - 1].name]
        self._send(target, FLAG_REDIRECTED)

    def complete(self, raw: bytes) -> None:
        self._sink.complete(raw)

    def fail(self, raw: bytes) -> None:
        if raw.startswith(LEADER_MOVED):
            self._moved(moved_to(raw))
        elif not raw.startswith(LINK_FAILURE):
            self._sink.fail(raw)
        elif not self._sent or may_lead_again(self._request):   # that leader is lost: the next one
            self._coordinator.leading.leaders_lost += 1
            self.next()
        else:
            self._coordinator.leading.leaders_unknown += 1
            self._sink.fail(UNKNOWN_OUTCOME)


class _Later:
    """No leader of that datacenter could take the write: it reaches it through its outbox, later."""

    __slots__ = ("_sink", "_why")

    def __init__(self, sink, dc: str) -> None:
        self._sink = sink
        self._why = (b"-ERR no leader of the key in %s can take writes now; the write will be applied"
                     b" there when it can\r\n" % dc.encode("utf-8", "replace"))

    def complete(self, raw: bytes) -> None:
        self._sink.fail(self._why)

    hinted = complete

    def fail(self, raw: bytes) -> None:
        self._sink.fail(raw)
