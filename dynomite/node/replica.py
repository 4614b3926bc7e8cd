# -*- test-case-name: tests.cluster.test_inprocess_cluster -*-
"""
The replica side: requests other nodes send to this one.

A peer's REQUEST runs on this node's Redis as it came (a read, or a write
its leader sends, possibly a run of them, numbered so that a replay is
applied once: `dynomite.replication.applied_once`) and the reply goes
back.  A LEAD
is a write (or run of writes) for this node to lead: it orders it among the
key's other writes for this datacenter (`dynomite.node.leader`).  A
FORWARD is a write (or run of writes) from another datacenter, for which
this node is an entry node: it is cut into runs of the same plan as a
client's pipeline is (`dynomite.placement.pipelines`), each is led by its
key's leader in this datacenter at EVERY_RACK (applied to every rack, or
held as a hint there), and the FORWARD is acknowledged once all are, so
nothing is dropped between datacenters.  A part that could be neither
fails the FORWARD; the sender keeps it as a hint and sends it again.

The peer layer (`dynomite.peers.protocol`) decodes frames into `Request`
values and calls `Replica.handle_peer_request`.  A peer's PUBLISH frame (a
pub/sub message) goes to this node's `dynomite.node.pubsub_bus.PubSubBus`
through `Replica.handle_peer_publish`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from zope.interface import implementer

from dynomite.commands import table as commands
from dynomite.commands.effects import pop_effect, transaction_effect
from dynomite.config.vocabulary import DC_ONE
from dynomite.consistency.hlc import MAX_AHEAD_MS, version_ms
from dynomite.node.forwarded import APPLIED, NEW, WAITING, ForwardedOnce
from dynomite.node.handover import leader_moved, parse_handover
from dynomite.node.leader import EVERY_RACK, AppliedInEveryRack, lead_level
from dynomite.node.versions import CHECK_TAG, versions_of
from dynomite.node.watch_table import ABORTED as WATCH_ABORTED
from dynomite.peers.interfaces import IPeerRequests
from dynomite.placement.hashing import key_hash
from dynomite.placement.pipelines import RunCutter, part_bytes
from dynomite.placement.router import Plan, Router
from dynomite.placement.topology import NodeInfo
from dynomite.repair.script import keys_of_dump
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import (
    FLAG_COPY, FLAG_EFFECT, FLAG_HANDOVER, FLAG_HERE_ONLY, FLAG_REDIRECTED, FLAG_SEQUENCED, FLAG_TRANSACTION,
    FLAG_WATCH, LEAD, REQUEST,
    PeerProtocolError, lead_position, payload_sequence,
)
from dynomite.wire.requests import parse_whole
from dynomite.wire.resp import ProtocolError

__all__ = ["Replica"]


class _Recorded:
    """A part of a numbered FORWARD: its outcome is remembered (`dynomite.node.forwarded`), then counted."""

    __slots__ = ("_forwarded", "_sender", "_numbers", "_sink")

    def __init__(self, forwarded: ForwardedOnce, sender: str, numbers: List[int], sink) -> None:
        self._forwarded = forwarded
        self._sender = sender
        self._numbers = numbers
        self._sink = sink

    def complete(self, raw: bytes) -> None:
        self._forwarded.applied(self._sender, self._numbers, raw)
        self._sink.complete(raw)

    def hinted(self, raw: bytes) -> None:
        self._forwarded.applied(self._sender, self._numbers, b"+OK\r\n")
        self._sink.hinted(raw)

    def fail(self, raw: bytes) -> None:
        self._forwarded.failed(self._sender, self._numbers, raw)
        self._sink.fail(raw)


@implementer(IPeerRequests)
class Replica:
    """Serves the requests peers send; see the module docstring."""

    def __init__(self, router: Router, targets, coordinator, pubsub=None) -> None:
        self._router = router
        self._pubsub = pubsub
        self._coordinator = coordinator
        self._leader = coordinator.leader
        self._leading = coordinator.leading
        self._name = coordinator.name
        self._runs = RunCutter(router)
        # this node's Redis (its name never changes, whatever a reload does)
        here = targets[router.topology.local.name]
        self._run_here = here.send
        self._applied_once = here.applied_once.send
        #: the numbered FORWARDs this entry node applied or is applying (`dynomite.node.forwarded`)
        self.forwarded = coordinator.forwarded

    def handle_peer_request(self, peer_name: str, frame_type: int, request: Request, sink) -> None:
        """A REQUEST (run here), LEAD (lead it) or FORWARD (lead it in this DC)."""
        if frame_type == REQUEST:
            watches = self._leader.watches
            if request.write and watches.active:
                # a write another leader ordered: it changes what is watched here
                watches.touched(request.payload[8:] if request.flags & FLAG_SEQUENCED
                                else request.payload)
            if request.flags & FLAG_SEQUENCED:
                self._applied_once(peer_name, request, sink)
            else:
                self._run_here(request, sink)
        elif frame_type == LEAD:
            self._lead(peer_name, request, sink)
        else:
            self._apply_forwarded(peer_name, request, sink)

    def handle_peer_publish(self, peer_name: str, channel: bytes, message: bytes, shard: bool) -> None:
        """A message published on another node: this node's subscribers get it."""
        if self._pubsub is not None:
            self._pubsub.received(channel, message, shard)

    # -- LEAD --------------------------------------------------------------------

    def _lead(self, peer_name: str, request: Request, sink) -> None:
        payload = request.payload
        flags = request.flags
        try:
            position = lead_position(payload)
        except PeerProtocolError:
            sink.fail(b"-ERR LEAD without a ring position\r\n")
            return
        if flags & FLAG_HANDOVER:
            self._hand_over(payload[4:], sink)
            return
        if flags & FLAG_COPY:
            self._copy(Request(payload[4:]), sink, bool(flags & FLAG_REDIRECTED))
            return
        level = lead_level(flags)
        table_level = DC_ONE if level == EVERY_RACK else level
        plan = self._router.writes[table_level].at(position)
        leaders = plan.leaders
        if self._leading.handovers.active or (
                leaders and leaders[0].name != self._name and not flags & FLAG_REDIRECTED):
            # (usually this node is the first of the leaders, and nothing is handed over)
            moved = self._moved(plan, position, not flags & FLAG_REDIRECTED,
                                lambda: self._lead(peer_name, request, sink))
            if moved is not None:
                if moved:
                    sink.fail(leader_moved(moved))
                return
        if flags & FLAG_WATCH:
            request = self._watched(plan, payload, request, sink)
            if request is None:
                return
            payload = request.payload
        write = Request(payload[4:], request.resp, plan.lane, request.count, True,
                        request.flags & FLAG_TRANSACTION)
        effect = None
        if request.flags & FLAG_EFFECT:
            effect = self._effect_of(write, level) if level != EVERY_RACK else None
            if effect is None:
                sink.fail(b"-ERR LEAD of a command that runs once is not one whole command\r\n")
                return
        self._leader.lead(plan, write, sink, level, self._read_target(plan, peer_name), None, effect,
                          not request.flags & FLAG_HERE_ONLY)

    def _moved(self, plan: Plan, position: int, by_view: bool, resume) -> Optional[str]:
        """
        Whether this node leads a LEAD of ``plan`` (`dynomite.node.handover`):
        None if so; ``""`` if it waits for a handover's drain (``resume``
        goes on with it then); else the name of the node that leads it:
        the one this node handed the range to, or (``by_view``: not a LEAD
        another node sent on) the leader of this node's view.
        """
        leading = self._leading
        handovers = leading.handovers
        if handovers.active:
            gainer = handovers.gainer(plan, position, resume)
            if gainer == self._name:
                return ""
            if gainer is not None:
                return gainer
        if by_view:
            leader = leading.leader_of(plan)
            if leader is not None and leader != self._name:
                return leader
        return None

    def _hand_over(self, data: bytes, sink) -> None:
        """A node that moves asks this one to hand a range's lead over: answered once drained."""
        try:
            start, end, gainer = parse_handover(data)
        except ValueError as e:
            sink.fail(b"-ERR %s\r\n" % str(e).encode())
            return
        self._leading.handovers.hand_over(start, end, gainer).addCallback(
            lambda _: sink.complete(b"+OK\r\n"))

    def _copy(self, probe: Request, sink, redirected: bool = False) -> None:
        """
        A copy of keys of a moving range (`dynomite.node.leader.Leader.copy`),
        made only by the keys' leader as this node sees it: the one that
        orders their writes.  The requester's view may differ (a joining
        node still learning the cluster); it is told which node leads them
        (or that none does here), and asks again.
        """
        keys = keys_of_dump(probe)
        if not keys:
            sink.fail(b"-ERR copy without keys\r\n")
            return
        route = self._router.route
        plan = route(keys[0], True, DC_ONE)
        if any(route(key, True, DC_ONE) is not plan for key in keys[1:]):
            sink.fail(b"-ERR copy of keys with different replicas here\r\n")
            return
        if not redirected and self._leading.leader_of(plan) is None:
            sink.fail(b"-ERR not the leader of these keys here\r\n")
            return
        moved = self._moved(plan, key_hash(keys[0], self._router.hash_tag), not redirected,
                            lambda: self._copy(probe, sink, redirected))
        if moved is not None:
            if moved:
                sink.fail(leader_moved(moved))
            return
        self._leader.copy(plan, probe, sink)

    def _watched(self, plan: Plan, payload: bytes, request: Request, sink) -> Optional[Request]:
        """A LEAD for the table of watched keys (`dynomite.node.watch`): answered, or the transaction it admits."""
        if not request.flags & FLAG_TRANSACTION:
            self._leader.watch(plan, payload[4:], sink)
            return None
        watches = self._leader.watches
        admitted = watches.admit(Request(payload[4:], request.resp, request.lane, request.count, True,
                                         request.flags))
        if admitted is None:
            sink.complete(WATCH_ABORTED)
            return None
        return Request(payload[:4] + admitted.payload, request.resp, request.lane, admitted.count, True,
                       admitted.flags)

    def _read_target(self, plan: Plan, peer_name: str) -> Optional[NodeInfo]:
        """The replica the coordinator ``peer_name`` reads from at DC_ONE (its rack's), if local."""
        peer = self._router.topology.node(peer_name)
        if peer is None:
            return None
        for node in plan.local:
            if node.rack == peer.rack and node.datacenter == peer.datacenter:
                return node
        return None

    def _effect_of(self, request: Request, level: str):
        try:
            requests, _ = parse_whole(request.payload)
        except ProtocolError:
            return None
        if request.flags & FLAG_TRANSACTION and requests:
            keys = []
            for args in requests:
                cmd = commands.command_of(args)
                if cmd is not None:
                    keys.extend(k for k in commands.keys(cmd, args) if k not in keys)
            return transaction_effect(requests, keys)
        if len(requests) != 1:
            return None
        args = requests[0]
        cmd = commands.command_of(args)
        if cmd is None:
            return None
        # as its coordinator chose it; else a command that replays as sent,
        # led as one that runs once: a blocking pop's try, replicated only
        # when it popped something
        return self._coordinator.effect_of(cmd, args, level) or pop_effect(args, commands.keys(cmd, args))

    # -- FORWARD -----------------------------------------------------------------

    def _apply_forwarded(self, peer_name: str, request: Request, sink) -> None:
        payload = request.payload
        first = None
        if request.flags & FLAG_SEQUENCED:
            # numbered by the sender's outbox: a replay is applied once (`dynomite.node.forwarded`)
            try:
                first = payload_sequence(payload)
            except PeerProtocolError:
                sink.complete(b"-ERR forwarded write without its sequence number\r\n")
                return
            payload = payload[8:]
        try:
            requests, bounds = parse_whole(payload)
        except ProtocolError:
            requests = []
        if len(requests) != request.count:
            sink.complete(b"-ERR forwarded payload is not %d whole commands\r\n" % request.count)
            return
        numbers: Optional[List[int]] = None
        waits: List[int] = []
        if first is not None:
            requests, bounds, numbers, waits = self._not_applied(peer_name, first, requests, bounds)
            if not requests and not waits:
                sink.complete(b"+OK\r\n")
                return
        # (with datacenter_conflicts: arrival nothing is versioned: no search)
        versions = self._leader.versions
        if versions is not None and not request.flags & FLAG_TRANSACTION and CHECK_TAG in payload:
            if not self._in_time(requests, versions.clock, sink):
                return
            groups = self._checked_groups(payload, requests, bounds)
        else:
            groups = self._cut_groups(payload, requests, bounds)
        applied = AppliedInEveryRack(len(groups) + len(waits), sink)
        forwarded = self.forwarded
        for number in waits:
            forwarded.wait(peer_name, number, applied)
        write = self._coordinator.write
        for plan, data, indexes in groups:
            part = applied
            if numbers is not None:
                mine = [numbers[j] for j in indexes]
                forwarded.sending(peer_name, mine)
                part = _Recorded(forwarded, peer_name, mine, applied)
            write(plan, Request(data, request.resp, request.lane, len(indexes), True), part, level=EVERY_RACK)

    def _not_applied(self, peer_name: str, first: int, requests, bounds):
        """
        (the writes of a numbered FORWARD to apply, their bounds, their
        numbers, the numbers of those being applied now to wait for); the
        writes applied already are left out.
        """
        numbers = list(range(first, first + len(requests)))
        if self.forwarded.all_new(peer_name, first):
            return requests, bounds, numbers, []   # what a sender sends next, the common case
        classify = self.forwarded.classify
        kinds = [classify(peer_name, number) for number in numbers]
        if all(kind == NEW for kind in kinds):
            return requests, bounds, numbers, []
        self.forwarded.skipped += kinds.count(APPLIED)
        keep = [i for i, kind in enumerate(kinds) if kind == NEW]
        waits = [numbers[i] for i, kind in enumerate(kinds) if kind == WAITING]
        return ([requests[i] for i in keep], [b for i in keep for b in (bounds[2 * i], bounds[2 * i + 1])],
                [numbers[i] for i in keep], waits)

    def _cut_groups(self, payload: bytes, requests, bounds) -> List[Tuple[Plan, bytes, List[int]]]:
        """The writes cut into runs of one plan, as a client's pipeline is: (plan, bytes, their indexes)."""
        groups: List[Tuple[Plan, bytes, List[int]]] = []
        i, n = 0, len(requests)
        reads, writes = self._router.reads[DC_ONE], self._router.writes[DC_ONE]
        while i < n:
            runs, stop = self._runs.cut(requests, bounds, i, reads, writes)
            for _cmd, plan, start, end, count, parts in runs:
                if parts is None:
                    groups.append((plan, payload[start:end], list(range(i, i + count))))
                else:
                    for part_plan, spans, positions in parts:
                        groups.append((part_plan, part_bytes(payload, spans), [i + p for p in positions]))
                i += count
            if stop < n:
                groups.append((self._plan_of(requests[stop]), payload[bounds[2 * stop]:bounds[2 * stop + 1]],
                               [stop]))
            i = stop + 1
        return groups

    def _checked_groups(self, payload: bytes, requests, bounds) -> List[Tuple[Plan, bytes, List[int]]]:
        """
        A FORWARD with versioned writes (`dynomite.node.versions`): one run
        per plan, in order; every replica runs the checks.
        """
        groups: Dict[int, Tuple[Plan, List[List[int]], List[int]]] = {}
        route = self._router.route
        for i, args in enumerate(requests):
            # a check of one key (`dynomite.commands.lww.encode_check`): that key routes it
            if len(args) > 3 and args[2] == b"1" and args[1] == CHECK_TAG:
                plan = route(args[3], True, DC_ONE)
            else:
                plan = self._plan_of(args)
            group = groups.get(id(plan))
            if group is None:
                group = groups[id(plan)] = (plan, [], [])
            group[1].append([bounds[2 * i], bounds[2 * i + 1]])
            group[2].append(i)
        return [(plan, part_bytes(payload, spans), members) for plan, spans, members in groups.values()]

    @staticmethod
    def _in_time(requests, clock, sink) -> bool:
        """
        Whether no version in a FORWARD is too far ahead of this node's
        ``clock`` (`dynomite.consistency.hlc`); else the FORWARD fails (its
        sender keeps it and sends it again later).  Versions order as their
        bytes do, so the newest decides for all, and moves the clock.
        """
        versions = versions_of(requests)
        if not versions:
            return True
        newest = max(versions)
        for version in (newest,) if version_ms(newest) is not None else versions:
            if not clock.observe(version):
                sink.fail(b"-ERR a write's version is %d ms ahead of this node's clock (at most %d)\r\n" % (
                    clock.ahead_ms(version), MAX_AHEAD_MS))
                return False
        return True

    def _plan_of(self, args) -> Plan:
        """This DC's write plan of a request that cannot be in a run (by its first key)."""
        cmd = commands.command_of(args)
        keys = commands.keys(cmd, args) if cmd is not None else []
        return self._router.route(keys[0] if keys else b"", True, DC_ONE)
