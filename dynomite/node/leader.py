# -*- test-case-name: tests.cluster.test_write_order -*-
"""
Leading writes: one order per key in a datacenter.

Several coordinators may accept writes of one key at once.  If each sent
them to the replicas itself, the racks would apply them in different
orders (LPUSH, APPEND, SET racing SET) and keep different values for good.
So every write of a key goes through one node of the datacenter, its
*leader*: the key's owner in the rack its hash picks
(`dynomite.placement.router.leader_turn`, the same on every node, so the
load spreads over the racks), or, while that one is down, the next replica
in a fixed order (`Plan.leaders`).  The leader hands the key's writes to
its outboxes in the order it accepts them, on one lane per plan (so one
connection, in order, to each replica: `dynomite.wire.inflight`); each
replica therefore applies them in the same order, hints included.  A
coordinator that does not lead a key sends its writes to the leader in a
LEAD frame (`dynomite.node.coordinator`), and so does the entry node of a
datacenter for the writes another datacenter forwards to it
(`dynomite.node.replica`).

While a range moves (`dynomite.scaleout`) the leader also hands its writes
to the range's pending replicas, and the client's answer waits for them
too, as Cassandra counts pending replicas.  It is the leader that copies a
moving key to them (`Leader.copy`): it reads the key from its own Redis in
its place in the key's order, and sends the copy in that same place, so a
write of the key reaches a pending replica either before the copy (which
then replaces what it did) or after it, never lost between the two.

The leader also runs the commands that may not run twice
(`dynomite.commands.effects`): it runs the command once on its own Redis
and sends the other replicas its effect.  Until that effect is known,
the writes it leads after it wait for their other replicas (never for
its own Redis, which runs them in order behind the command), so no
replica sees a later write before the effect.

What the client waits for (`level`): at DC_ONE the replica the client
reads from (its own rack's owner: a read after the reply sees the write),
or the first other when that one cannot answer (`ReadTargetFirst`); at
DC_QUORUM and DC_SAFE_QUORUM a quorum as before; EVERY_RACK is a write
another datacenter forwarded, acknowledged once every rack applied it or
holds it as a hint.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Dict, List, Optional, Sequence, Tuple

from twisted.logger import Logger

from dynomite.commands.determinism import again_alike
from dynomite.commands.effects import Effect
from dynomite.config.vocabulary import DC_ONE, DC_QUORUM, DC_SAFE_QUORUM
from dynomite.consistency.quorum import ReadTargetFirst, Reconciler
from dynomite.node.pending import Counted, Unwaited, WithPending
from dynomite.node.watch_table import WatchTable
from dynomite.placement.router import Plan
from dynomite.placement.topology import NodeInfo
from dynomite.repair.script import (
    ReplicaError, copy_commands, dump_request, keys_of_dump, read_dumped, read_dumped_with_versions)
from dynomite.replication.outbox import DIRECT
from dynomite.replication.targets import dc_target_name
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_EFFECT, FLAG_TRANSACTION, LEVEL_MASK, LEVEL_SHIFT
from dynomite.wire.requests import parse_whole
from dynomite.wire.resp import ProtocolError, encode_command, encode_commands

__all__ = ["EVERY_RACK", "LEAD_LEVELS", "Leader", "lead_flags", "lead_level", "AppliedInEveryRack",
           "UNKNOWN_OUTCOME", "may_lead_again"]

#: The level of a write another datacenter forwarded: every rack applies it
#: or holds it as a hint before it is acknowledged.
EVERY_RACK = "EVERY_RACK"

#: The levels a LEAD frame carries, by index (`dynomite.wire.peer_frames.LEVEL_MASK`).
LEAD_LEVELS = (DC_ONE, DC_QUORUM, DC_SAFE_QUORUM, EVERY_RACK)
_LEVEL_INDEX = {level: i for i, level in enumerate(LEAD_LEVELS)}


#: A write whose leader's link failed after the write left for it: it may
#: have been applied and sent on, so it is not led again unless
#: `may_lead_again`.
UNKNOWN_OUTCOME = (b"-ERR the write's leader was lost before it answered;"
                   b" it may or may not have been applied\r\n")


def may_lead_again(request: Request) -> bool:
    """
    Whether a write (or run) whose leader was lost in flight may go to the
    next leader: applying it twice changes nothing and answers the same
    (`dynomite.commands.determinism.again_alike`); never a transaction.
    """
    if request.flags & FLAG_TRANSACTION:
        return False
    try:
        requests, _ = parse_whole(request.payload)
    except ProtocolError:
        return False
    return again_alike(requests)


def lead_flags(level: str, effect: bool) -> int:
    """The extra flags of a LEAD request at ``level`` (`dynomite.wire.inflight.Request`)."""
    return (_LEVEL_INDEX[level] << LEVEL_SHIFT) | (FLAG_EFFECT if effect else 0)


def lead_level(flags: int) -> str:
    """The level a LEAD request's flags carry."""
    return LEAD_LEVELS[(flags & LEVEL_MASK) >> LEVEL_SHIFT]


class AppliedInEveryRack:
    """
    A forwarded write at its leader: acknowledged once every rack of this
    DC applied it or holds it as a hint; failed if any rack could do
    neither.  Every replica's sink is this same object, counted down.
    """

    __slots__ = ("_left", "_sink", "_first", "_error")

    def __init__(self, parts: int, sink) -> None:
        self._left = parts
        self._sink = sink
        self._first: Optional[bytes] = None
        self._error: Optional[bytes] = None

    def _done(self, raw: bytes, ok: bool) -> None:
        if ok:
            if self._first is None:
                self._first = raw
        elif self._error is None:
            self._error = raw
        self._left -= 1
        if self._left == 0:
            if self._error is not None:
                self._sink.fail(self._error)
            else:
                self._sink.complete(self._first or b"+OK\r\n")

    def complete(self, raw: bytes) -> None:
        self._done(raw, True)

    def hinted(self, raw: bytes) -> None:
        self._done(b"+OK\r\n", True)

    def fail(self, raw: bytes) -> None:
        self._done(raw, False)


class _AckAs:
    """An effect's replica sink: any reply is an acknowledgement of the client's ``reply``."""

    __slots__ = ("_sink", "_reply")

    def __init__(self, sink, reply: bytes) -> None:
        self._sink = sink
        self._reply = reply

    def complete(self, raw: bytes) -> None:
        self._sink.complete(self._reply)

    def fail(self, raw: bytes) -> None:
        self._sink.fail(raw)

    def hinted(self, raw: bytes) -> None:
        self._sink.hinted(raw)


# One delivery: (outbox, request, sink).
_Delivery = Tuple[object, Request, object]


class _Held:
    """A place in the leader's order whose deliveries are not known yet (an effect's)."""

    __slots__ = ("deliveries", "version", "keys")

    def __init__(self) -> None:
        self.deliveries: Optional[List[_Delivery]] = None
        #: an effect's version between datacenters (`dynomite.node.versions`), if
        #: any, and the keys it is the version of
        self.version: Optional[bytes] = None
        self.keys: Sequence[bytes] = ()


class Leader:
    """This node's side of leading writes; see the module docstring."""

    log = Logger()

    def __init__(self, name: str, targets, outboxes, reconciler, settler, hint_said_plainly,
                 clock, remote_tally: List[int], local_tally: List[int], outcomes) -> None:
        self.name = name
        self._targets = targets
        self._outboxes = outboxes
        self._reconciler = reconciler
        self._settler = settler
        self._hint_said_plainly = hint_said_plainly
        self._clock = clock
        self._remote_tally = remote_tally
        self._local_tally = local_tally
        self._outcomes = outcomes
        # places in the order waiting for an effect, and what was led after them
        self._queue: Deque[object] = deque()
        self.effects_run = 0
        self.effects_unknown = 0
        #: versions of the keys watched through this leader (`dynomite.node.watch`)
        self.watches = WatchTable()
        # the RESP version of the last write led on each lane: a copy of a
        # moving key goes in that version, so on the same Redis connection
        # as the key's writes (the datastore keeps one pool per version),
        # here and at the pending replica
        self._lane_resp: Dict[int, int] = {}
        #: the versions of writes between datacenters (`dynomite.node.versions`), None with one datacenter
        self.versions = None

    # -- ordering ----------------------------------------------------------------

    def _deliver(self, deliveries: List[_Delivery]) -> None:
        """Deliveries in the leader's order: now, or after the effects led before them."""
        if self._queue:
            self._queue.append(deliveries)
            return
        for outbox, request, sink in deliveries:
            outbox.submit(request, sink)

    def _release(self) -> None:
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, _Held):
                if head.deliveries is None:
                    return
                deliveries = head.deliveries
            else:
                deliveries = head
            queue.popleft()
            for outbox, request, sink in deliveries:
                outbox.submit(request, sink)

    # -- leading -----------------------------------------------------------------

    def lead(self, plan: Plan, request: Request, sink, level: str,
             read_target: Optional[NodeInfo], normalise=None, effect: Optional[Effect] = None,
             forward: bool = True) -> None:
        """
        Lead ``request`` (a write, or a run of writes, of one plan) for this
        datacenter at ``level``; ``read_target`` is the replica the client
        reads from (None: no preference).  ``effect``: the request may not
        run twice; run it here and replicate its effect.  ``forward``: also
        to the other datacenters (False: their leaders get it from the
        coordinator, DC_EACH_SAFE_QUORUM).
        """
        if self.watches.active:
            self.watches.touched(request.payload)
        if request.lane != plan.lane:
            request = Request(request.payload, request.resp, plan.lane, request.count, True,
                              request.flags & FLAG_TRANSACTION)
        self._lane_resp[plan.lane] = request.resp
        if effect is not None:
            self._lead_effect(plan, request, sink, level, read_target, effect)
            return
        local = plan.local
        outboxes = self._outboxes
        pending = plan.pending
        if pending:
            sink = waiting = WithPending(sink, len(pending))
        if level == EVERY_RACK:
            applied = AppliedInEveryRack(len(local), sink)
            sinks = [applied] * len(local)
        elif level == DC_ONE:
            if len(local) == 1:
                sinks = [self._hint_said_plainly(sink)]
            else:
                rec = ReadTargetFirst(len(local), sink, self._local_tally, self._settler(True, DC_ONE))
                sinks = [rec.replica(node is read_target) for node in local]
        else:
            rec = self._reconciler(plan, sink, normalise, request.count, self._local_tally)
            sinks = [rec.replica() for _ in local]
        here = None
        deliveries: List[_Delivery] = []
        for node, replica_sink in zip(local, sinks):
            if node.name == self.name:
                here = (outboxes[node.name], replica_sink)
            else:
                deliveries.append((outboxes[node.name], request, replica_sink))
        for node in pending:
            deliveries.append((outboxes[node.name], request, waiting.part()))
        notes, elsewhere = None, request
        if level != EVERY_RACK and forward and plan.remote_dcs:
            if self.versions is not None:
                notes, elsewhere = self.versions.stamp(request)
            for dc in plan.remote_dcs:
                deliveries.append((outboxes[dc_target_name(dc)], elsewhere,
                                   self._outcomes(self._remote_tally, request.count)))
        if here is not None:
            here[0].submit(request, here[1])   # this node's Redis keeps the order itself
            if notes is not None:
                here[0].submit(notes, _UNWAITED)
        if notes is not None:
            deliveries.extend((outboxes[n.name], notes, _UNWAITED) for n in local + pending
                              if n.name != self.name)
        self._deliver(deliveries)

    def _lead_effect(self, plan: Plan, request: Request, sink, level: str,
                     read_target: Optional[NodeInfo], effect: Effect) -> None:
        """Run ``effect``'s probe on this node's Redis, then send the others its effect."""
        outbox = self._outboxes.get(self.name)
        target = self._targets.get(self.name)
        if outbox is not None:
            outbox.flush_batched()   # the writes led before it reach this Redis first
        if outbox is None or target is None or outbox.state != DIRECT or not target.available():
            sink.fail(b"-ERR this command runs once, on its leader %s, whose datastore is "
                      b"unavailable\r\n" % self.name.encode())
            return
        held = _Held()
        self._queue.append(held)
        versioned = self.versions is not None and level != EVERY_RACK and plan.remote_dcs
        if versioned:
            held.version, held.keys = self.versions.clock.stamp()[0], effect.keys
        probe = Request(effect.probe, request.resp, plan.lane, effect.count, True)
        target.send(probe, _Probe(self, plan, request, sink, level, read_target, effect, held))
        if versioned:
            # its version is noted on this Redis right behind the command, before
            # anything led after it (a write from another datacenter decides by it)
            target.send(self.versions.notes(held.keys, held.version, request.resp, plan.lane), _UNWAITED)

    def effect_known(self, plan: Plan, request: Request, sink, level: str,
                     read_target: Optional[NodeInfo], held: _Held, reply: bytes,
                     commands: Sequence[Sequence[bytes]]) -> None:
        """The leader ran the command: send its effect, in its place, and answer at ``level``."""
        self.effects_run += 1
        others = [n for n in plan.local if n.name != self.name]
        deliveries: List[_Delivery] = []
        if commands:
            payload = encode_commands(commands)
            effect = Request(payload, request.resp, plan.lane, len(commands), True)
            if level == EVERY_RACK:
                applied = AppliedInEveryRack(len(others) + 1, sink)
                applied.complete(reply)
                sinks = [applied] * len(others)
            elif level == DC_ONE:
                rec = ReadTargetFirst(len(others) + 1, sink, self._local_tally,
                                      self._settler(True, DC_ONE))
                here_reads = read_target is None or read_target.name == self.name
                rec.replica(here_reads).complete(reply)
                sinks = [_AckAs(rec.replica(n is read_target), reply) for n in others]
            else:
                rec = Reconciler(level, len(others) + 1, sink.complete, tally=self._local_tally,
                                 settle=self._settler(True, level))
                rec.replica().complete(reply)
                sinks = [_AckAs(rec.replica(), reply) for _ in others]
            outboxes = self._outboxes
            deliveries = [(outboxes[n.name], effect, s) for n, s in zip(others, sinks)]
            deliveries.extend((outboxes[n.name], effect, _UNWAITED) for n in plan.pending)
            if level != EVERY_RACK and plan.remote_dcs:
                elsewhere = effect
                if held.version is not None:
                    # the state it left, under its version
                    elsewhere = self.versions.checks_of_state(commands, held.version, effect)
                for dc in plan.remote_dcs:
                    deliveries.append((outboxes[dc_target_name(dc)], elsewhere,
                                       self._outcomes(self._remote_tally, effect.count)))
        else:
            sink.complete(reply)
        if held.version is not None:
            # the others note its version too (this Redis did, behind the command)
            notes = self.versions.notes(held.keys, held.version, request.resp, plan.lane)
            outboxes = self._outboxes
            deliveries.extend((outboxes[n.name], notes, _UNWAITED) for n in plan.local + plan.pending
                              if n.name != self.name)
        held.deliveries = deliveries
        self._release()

    # -- copying a moving range --------------------------------------------------

    def copy(self, plan: Plan, probe: Request, sink) -> None:
        """
        Copy keys of a moving range to its pending replicas in their place in
        the order (see the module docstring): ``probe`` is the `dump_request`
        of the keys, run on this node's Redis, with their versions between
        datacenters when writes carry them (a pending replica without them
        could decide a write from another datacenter otherwise than the
        others: the probe is made again, whatever the requester sent); the
        copy is acknowledged once every pending replica holds it (or a hint
        of it).
        Fails when nothing of ``plan`` is pending, or when this node cannot
        be the source (its Redis unreachable, or not ``copy_source_ok()``: it
        may be stale).
        """
        if not plan.pending:
            sink.fail(b"-ERR no range of this key is moving\r\n")
            return
        outbox = self._outboxes.get(self.name)
        target = self._targets.get(self.name)
        if outbox is not None:
            outbox.flush_batched()   # the writes led before it reach this Redis first
        if (outbox is None or target is None or outbox.state != DIRECT or not target.available()
                or not self.copy_source_ok()):
            sink.fail(b"-ERR %s cannot be the source of a copy now\r\n" % self.name.encode())
            return
        held = _Held()
        self._queue.append(held)
        resp = self._lane_resp.get(plan.lane, 2)
        if self.versions is not None:
            probe = dump_request(keys_of_dump(probe), True)
        target.send(Request(probe.payload, resp, plan.lane, 1, False), _CopyProbe(self, plan, held, sink, resp))

    #: whether this node's Redis may be copied from (set by the node: NORMAL, not warming up)
    copy_source_ok = staticmethod(lambda: True)

    def _copied(self, plan: Plan, held: _Held, sink, raw: bytes, resp: int) -> None:
        try:
            if self.versions is not None:
                commands = copy_commands(*read_dumped_with_versions(raw))
            else:
                commands = copy_commands(read_dumped(raw))
        except ReplicaError as e:
            held.deliveries = []
            self._release()
            sink.fail(b"-ERR copy source: %s\r\n" % str(e).encode("utf-8", "replace"))
            return
        copied = Request(encode_commands(commands), resp, plan.lane, len(commands), True)
        applied = AppliedInEveryRack(len(plan.pending), Counted(sink, len(commands)))
        held.deliveries = [(self._outboxes[n.name], copied, applied) for n in plan.pending]
        self._release()

    # -- handing a range over ------------------------------------------------------

    def drain(self, nodes: Sequence[str], done, lane: Optional[int] = None) -> None:
        """
        Call ``done()`` once every write led here so far has been answered
        (applied, or held as a hint) by ``nodes``: a marker behind them on
        every lane led on (or on ``lane`` alone), to each
        (`dynomite.node.handover`, `watch`).
        """
        markers = []
        outboxes = self._outboxes
        lanes = self._lane_resp
        if lane is not None:
            lanes = {lane: lanes[lane]} if lane in lanes else {}
        for lane, resp in sorted(lanes.items()):
            marker = Request(_MARKER, resp, lane, 1, True)
            markers.extend((outboxes[name], marker) for name in nodes if name in outboxes)
        if not markers:
            done()
            return
        answered = _Countdown(len(markers), done)
        self._deliver([(outbox, marker, answered) for outbox, marker in markers])
        for outbox, _ in markers:
            outbox.flush_batched()

    # -- watching keys ------------------------------------------------------------

    def watch(self, plan: Plan, payload: bytes, sink) -> None:
        """
        A request for the table of watched keys (`dynomite.node.watch`).  A
        WATCH is answered once every replica of the datacenter has applied
        (or holds as a hint) the writes of ``plan`` led before it: a read of
        the key after WATCH, wherever it is read, then sees the state the
        versions answered stand for, so a transaction built on it and
        checked against them never overwrites a write it did not see.
        """
        reply = self.watches.serve(payload)
        if reply[:1] != b"$":   # not a WATCH's versions (an UNWATCH's, an error)
            sink.complete(reply)
            return
        self.drain([node.name for node in plan.local], lambda: sink.complete(reply), plan.lane)

    def effect_unknown(self, sink, held: _Held, raw: bytes) -> None:
        """The leader's Redis did not answer: the command may or may not have run there."""
        self.effects_unknown += 1
        self.log.warn("a write that runs once failed on its leader ({reason}); its replicas "
                      "may differ until repaired", reason=raw.strip().decode("utf-8", "replace"))
        held.deliveries = []
        self._release()
        sink.fail(raw)


#: The sink of a delivery nobody waits for (version notes, effects to pending replicas).
_UNWAITED = Unwaited()

#: What `Leader.drain` sends behind the writes it led: it changes nothing.
_MARKER = encode_command([b"PING"])


class _Countdown:
    """Calls ``done()`` once ``left`` answers came, whatever they say."""

    __slots__ = ("_left", "_done")

    def __init__(self, left: int, done) -> None:
        self._left = left
        self._done = done

    def complete(self, raw: bytes) -> None:
        self._left -= 1
        if self._left == 0:
            self._done()

    fail = hinted = complete


class _CopyProbe:
    """The sink of the leader's read of keys it copies to a moving range's pending replicas."""

    __slots__ = ("_leader", "_plan", "_held", "_sink", "_resp")

    def __init__(self, leader: Leader, plan: Plan, held: _Held, sink, resp: int) -> None:
        self._leader = leader
        self._plan = plan
        self._held = held
        self._sink = sink
        self._resp = resp

    def complete(self, raw: bytes) -> None:
        self._leader._copied(self._plan, self._held, self._sink, raw, self._resp)

    def fail(self, raw: bytes) -> None:
        self._held.deliveries = []
        self._leader._release()
        self._sink.fail(raw)


class _Probe:
    """The sink of the leader's own run of a command that may not run twice."""

    __slots__ = ("_leader", "_plan", "_request", "_sink", "_level", "_read_target", "_effect",
                 "_held")

    def __init__(self, leader: Leader, plan: Plan, request: Request, sink, level: str,
                 read_target, effect: Effect, held: _Held) -> None:
        self._leader = leader
        self._plan = plan
        self._request = request
        self._sink = sink
        self._level = level
        self._read_target = read_target
        self._effect = effect
        self._held = held

    def complete(self, raw: bytes) -> None:
        reply, commands = self._effect.outcome(raw)
        self._leader.effect_known(self._plan, self._request, self._sink, self._level,
                                  self._read_target, self._held, reply, commands)

    def fail(self, raw: bytes) -> None:
        self._leader.effect_unknown(self._sink, self._held, raw)
