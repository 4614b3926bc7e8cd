# -*- test-case-name: tests.unit.test_node -*-
"""
The coordinator: carries out a client request's plan.

The node a client talks to coordinates its requests: it sends each read
to the replicas its `Plan` names (`dynomite.placement.router`), through
their targets (`dynomite.replication`), reconciles their answers at the
consistency level (`dynomite.consistency`), and answers the client.  A
write goes to its key's leader (`dynomite.node.leader`): this node's own
`Leader` when it leads the key, else the first replica of
``Plan.leaders`` that can take it, in a LEAD frame; the leader orders it
among the key's other writes, sends it through its outboxes to every
replica and remote datacenter, and answers at the level.  Whole-keyspace commands (SCAN, KEYS, FLUSHALL, ...)
go to its `dynomite.node.keyspace.Keyspace`.  Requests other nodes send
here are served by `dynomite.node.replica`, not by this module.

A run of pipelined requests (`dynomite.placement.pipelines`) takes the same
way as one request: the `Request` carries its count, and a `RunReconciler`
stands in for the `Reconciler`.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from twisted.logger import Logger

from dynomite.commands import table as commands
from dynomite.commands.determinism import NOT_DETERMINISTIC, absolute
from dynomite.commands import lww
from dynomite.commands.effects import Effect, plan_effect, state_effect
from dynomite.config.vocabulary import DC_EACH_SAFE_QUORUM, DC_ONE, DC_SAFE_QUORUM
from dynomite.consistency.compare import normaliser
from dynomite.consistency.quorum import EachQuorum, Reconciler
from dynomite.consistency.read_repair import Disagreement
from dynomite.consistency.runs import RunReconciler
from dynomite.node.each_write import write_in_each_dc
from dynomite.node.forwarded import ForwardedOnce
from dynomite.node.gathering import WriteGathering
from dynomite.node.keyspace import Keyspace
from dynomite.node.leader import UNKNOWN_OUTCOME, Leader
from dynomite.node.leading import Leading
from dynomite.node.sinks import Gather, Scatter
from dynomite.placement.pipelines import part_bytes
from dynomite.placement.router import CROSSSLOT, Plan, Router, coalesce
from dynomite.placement.topology import NodeInfo
from dynomite.replication.outbox import HINTED, is_hinted
from dynomite.wire.inflight import Request
from dynomite.wire.resp import encode_command

__all__ = ["Coordinator", "NO_KEYS_SCRIPT", "SCRIPT_WRITES", "UNKNOWN_OUTCOME"]

NO_KEYS_SCRIPT = (
    b"-ERR dynomite routes scripts by their keys; "
    b"call EVAL/EVALSHA/FCALL with at least one key\r\n"
)

#: Scripts may write although Redis does not flag them "write".
SCRIPT_WRITES = frozenset({"eval", "evalsha", "fcall"})


class _Outcomes:
    """The sink of a write nobody waits for: only counts ``[answered, failed]`` requests."""

    __slots__ = ("_outcomes", "_count")

    def __init__(self, outcomes: List[int], count: int = 1) -> None:
        self._outcomes = outcomes
        self._count = count

    def complete(self, raw: bytes) -> None:
        self._outcomes[0] += self._count

    def fail(self, raw: bytes) -> None:
        self._outcomes[1] += self._count

    hinted = fail


class _Failover:
    """DC_ONE read (or run of reads): try each local replica in turn until one answers."""

    __slots__ = ("_targets", "_replicas", "_index", "_request", "_sink")

    def __init__(self, targets, replicas: Sequence[NodeInfo], request: Request, sink) -> None:
        self._targets = targets
        self._replicas = replicas
        self._index = 0
        self._request = request
        self._sink = sink

    def start(self) -> None:
        self._targets[self._replicas[0].name].send(self._request, self)

    def complete(self, raw: bytes) -> None:
        self._sink.complete(raw)

    def fail(self, raw: bytes) -> None:
        self._index += 1
        if self._index >= len(self._replicas):
            self._sink.fail(raw)
        else:
            self._targets[self._replicas[self._index].name].send(self._request, self)


class _HintSaidPlainly:
    """A client's sink for a write whose only acknowledgement may become a hint: say so in plain words."""

    __slots__ = ("_sink", "_explain")

    def __init__(self, sink, explain: Callable[[bytes], bytes]) -> None:
        self._sink = sink
        self._explain = explain

    def complete(self, raw: bytes) -> None:
        self._sink.complete(raw)

    def fail(self, raw: bytes) -> None:
        self._sink.fail(raw)

    def hinted(self, raw: bytes) -> None:
        self._sink.fail(self._explain(raw))


class Coordinator:
    """Runs client requests on the replicas of their keys; see the module docstring."""

    log = Logger()

    def __init__(self, router: Router, settings, targets, outboxes: Dict[str, object],
                 membership, clock, rng=None) -> None:
        self.router = router
        self._clock = clock
        self.settings = settings
        self.targets = targets
        self.outboxes = outboxes
        self.membership = membership
        self.name = router.topology.local.name
        self.keyspace = Keyspace(router, targets, rng)
        # replication outcomes, [acknowledged, failed], for metrics
        self.local_writes = [0, 0]
        self.remote_writes = [0, 0]
        self.quorum_failures: Dict[tuple, int] = {}
        self._settlers: Dict[tuple, Callable[[bytes], bytes]] = {}
        self._hinted_here = HINTED + b"write for " + self.name.encode()
        self.leader = Leader(
            self.name, targets, outboxes, self.reconciler, self.settler,
            lambda sink: _HintSaidPlainly(sink, self._hinted_error), clock,
            self.remote_writes, self.local_writes, _Outcomes,
        )
        #: the way of writes and copies to their keys' leaders (`dynomite.node.leading`)
        self.leading = Leading(self.name, router, targets, self.leader)
        #: the clients' runs of writes, gathered per plan for one batch (`dynomite.node.gathering`)
        self.gathering = WriteGathering(self.write)
        #: the numbered FORWARDs this node applied or is applying as an entry node
        #: (`dynomite.node.forwarded`; `dynomite.node.replica` consults it)
        self.forwarded = ForwardedOnce()
        #: ``read_repair(payload)``: quorum reads whose replicas disagreed
        #: (read_repairs_enabled: `dynomite.repair.manager.Repairs`), or None
        self.read_repair: Optional[Callable[[bytes], None]] = None

    def replays_skipped(self) -> int:
        """Replayed writes this node's Redis had applied already (`dynomite.replication.applied_once`)."""
        return self.targets[self.name].applied_once.skipped

    # -- levels ----------------------------------------------------------------

    def levels(self, session) -> Tuple[str, str]:
        """This session's read and write levels: its own (CONN_CONSISTENCY), else the node's."""
        settings = self.settings
        return (session.read_consistency or settings.read_consistency,
                session.write_consistency or settings.write_consistency)

    def level(self, session, write: bool) -> str:
        """The level of this session's writes or of its reads (see `levels`)."""
        return self.levels(session)[write]

    # -- one replica set ---------------------------------------------------

    def run(self, plan: Plan, request: Request, sink, normalise=None) -> None:
        """
        Run ``request`` on the replicas ``plan`` names; reply into ``sink``.
        ``request`` may be a run (its count above one) of one command whose
        keys all have those replicas; never at DC_EACH_SAFE_QUORUM.  A write
        goes to its leader (at DC_EACH_SAFE_QUORUM: to every datacenter's,
        `dynomite.node.each_write`).
        """
        write = plan.write
        level = plan.level
        if write and plan.each is None:
            self.write(plan, request, sink, normalise)
            return
        if write:
            write_in_each_dc(self, plan, request, sink, normalise)
            return
        if plan.each is not None:   # a read: every replica of every datacenter
            each = EachQuorum({dc: len(nodes) for dc, nodes in plan.each.items()},
                              self.reply_to(sink, write, level), normalise)
            for dc, nodes in plan.each.items():
                for node in nodes:
                    self.targets[node.name].send(request, each.replica(dc))
            return
        local = plan.local
        unreadable = self.membership.unreadable
        if unreadable and not write and self._enough_readable(plan, unreadable):
            self._run_around(plan, unreadable, request, sink, normalise)
            return
        if plan.failover:
            if len(local) == 1:
                self.targets[local[0].name].send(request, sink)
            else:
                _Failover(self.targets, local, request, sink).start()
        elif self.read_repair is not None and not write and len(local) > 1:
            rec = self.reconciler(plan, sink, normalise, request.count)
            watch = Disagreement(len(local), lambda: self.read_repair(request.payload),
                                 normalise if request.count == 1 else None)
            for node in local:
                self.targets[node.name].send(request, watch.watch(rec.replica()))
        else:
            rec = self.reconciler(plan, sink, normalise, request.count)
            for node in local:
                self.targets[node.name].send(request, rec.replica())

    def write(self, plan: Plan, request: Request, sink, normalise=None,
              effect: Optional[Effect] = None, level: Optional[str] = None) -> None:
        """
        Have ``request`` (a write, or a run of writes, with ``plan``) led by
        its key's leader at ``level`` (the plan's, or EVERY_RACK for a
        write from another datacenter): this node's `Leader`, or the first
        of ``plan.leaders`` that can take it.  ``effect``: it may not run
        twice.  A leader that stops answering (its link lost or timed out)
        passes the write to the next one: delivery stays at-least-once, as
        for hints (`dynomite.replication.outbox`).
        """
        self.leading.lead(plan, request, sink, normalise, effect, level)

    def reconciler(self, plan: Plan, sink, normalise, count: int, tally: Optional[List[int]] = None):
        """A `Reconciler` for one request, or a `RunReconciler` for a run, replying into ``sink``."""
        settle = self.settler(plan.write, plan.level)
        if count == 1:
            return Reconciler(plan.level, len(plan.local), sink.complete, normalise, tally=tally,
                              settle=settle)
        return RunReconciler(plan.level, len(plan.local), count, sink.complete, normalise, tally, settle)

    @staticmethod
    def _enough_readable(plan: Plan, unreadable) -> bool:
        """
        Whether the replicas that may be read from can answer at this level
        on their own; if not (a whole cluster starting, RESUMING everywhere),
        every replica is asked: a possibly stale answer beats an error.
        """
        readable = sum(1 for n in plan.local if n.name not in unreadable)
        return readable >= plan.wait

    def _run_around(self, plan: Plan, unreadable, request: Request, sink, normalise) -> None:
        """A read while some replicas must not be read from (RESUMING, STANDBY, DOWN...)."""
        readable = [n for n in plan.local if n.name not in unreadable]
        if plan.failover:
            # the others stay as a last resort: a stale answer beats none at DC_ONE
            replicas = readable + [n for n in plan.local if n.name in unreadable]
            _Failover(self.targets, replicas, request, sink).start()
            return
        rec = self.reconciler(plan, sink, normalise, request.count)
        for node in plan.local:
            if node.name in unreadable:
                rec.replica().fail(b"-ERR replica %s is %s\r\n" % (
                    node.name.encode(), self._state_of(node).encode()))
            else:
                self.targets[node.name].send(request, rec.replica())

    def _state_of(self, node: NodeInfo) -> str:
        if node.is_local:
            return self.membership.state
        return self.membership.peer_state(node.name)

    def _hinted_error(self, raw: bytes) -> bytes:
        """What a client sees when its only possible acknowledgement became a hint."""
        if raw.startswith(self._hinted_here):
            return (b"-ERR datastore unavailable; the write is kept as a hint and "
                    b"will be applied when Redis answers again\r\n")
        return b"-ERR replica unavailable; " + raw[len(HINTED):-2] + (
            b", to be applied when it returns\r\n")

    def settler(self, write: bool, level: str) -> Callable[[bytes], bytes]:
        """What a reconciled reply becomes for the client: hints said in plain words, failures counted."""
        key = ("write" if write else "read", level)
        settle = self._settlers.get(key)
        if settle is None:
            def settle(raw: bytes) -> bytes:
                if is_hinted(raw):
                    raw = self._hinted_error(raw)
                if raw.startswith(b"-ERR DC_"):
                    self.quorum_failures[key] = self.quorum_failures.get(key, 0) + 1
                return raw

            self._settlers[key] = settle
        return settle

    def reply_to(self, sink, write: bool, level: str) -> Callable[[bytes], None]:
        settle = self.settler(write, level)
        return lambda raw: sink.complete(settle(raw))

    # -- client requests ---------------------------------------------------

    def execute_run(self, session, cmd, plan: Plan, data: bytes, count: int, client) -> None:
        """
        A run (`dynomite.placement.pipelines`): ``count`` requests of the KEY
        command ``cmd``, their keys all on the replicas of ``plan``, joined in
        the client's own bytes ``data``; never under DC_EACH_SAFE_QUORUM.
        """
        normalise = normaliser(cmd.name) if plan.level != DC_ONE else None
        if plan.write and plan.each is None:
            # a write travels on its plan's lane, the one its leader keeps its order on
            self.gathering.add(plan, Request(data, session.resp, plan.lane, count, True),
                               client.slot(len(data), count), normalise, cmd.name)
        else:
            self.run(plan, Request(data, session.resp, plan.lane if plan.write else session.id, count,
                                   plan.write),
                     client.slot(len(data), count), normalise)

    def execute_parts(self, session, cmd, parts, data: bytes, count: int, client) -> None:
        """
        A run of ``count`` writes of ``cmd`` whose keys have different leaders, in
        ``parts`` (`dynomite.placement.pipelines.Part`) of the client's bytes
        ``data``: each part is led as a run of its own, with the runs of its
        plan other clients make in this batch (`dynomite.node.gathering`),
        and the replies go back in the client's order.
        """
        scatter = Scatter(count, len(parts), client.slot(len(data), count))
        resp = session.resp
        gather = self.gathering.add
        for plan, spans, positions in parts:
            payload = part_bytes(data, spans)
            gather(plan, Request(payload, resp, plan.lane, len(positions), True), scatter.part(positions),
                   None, cmd.name)

    def execute(self, session, cmd, args: Sequence[bytes], client) -> None:
        """A KEY, MULTI_KEY or KEYSPACE command from a client."""
        route = cmd.route
        if route == commands.KEYSPACE:
            self.keyspace.execute(session, cmd, args, client)
            return
        write = cmd.write or cmd.name in SCRIPT_WRITES
        level = self.level(session, write)
        if level == DC_EACH_SAFE_QUORUM and cmd.name in NOT_DETERMINISTIC:
            # run once by the local leader, at a safe quorum here; other
            # datacenters get its effect asynchronously
            level = DC_SAFE_QUORUM
        router = self.router
        normalise = normaliser(cmd.name) if level != DC_ONE else None
        if write:
            # replicas apply the write later or elsewhere: no relative time
            args = absolute(cmd.name, args, self.now_ms())
        if route == commands.KEY:
            index = commands.fixed_key_index(cmd)
            if index and index < len(args):
                key = args[index]
            else:
                keys = commands.keys(cmd, args)
                key = keys[0] if keys else b""
            data = encode_command(args)
            request = Request(data, session.resp, session.id, 1, write)
            effect = self.effect_of(cmd, args, level) if write else None
            if effect is not None:
                self.write(router.route(key, True, level), request, client.slot(len(data)), normalise, effect)
                return
            self.run(router.route(key, write, level), request, client.slot(len(data)), normalise)
            return
        # MULTI_KEY
        if cmd.split:
            self._split(session, cmd, args, client, write, level)
            return
        keys = commands.keys(cmd, args)
        if not keys:
            if cmd.name in SCRIPT_WRITES or cmd.name.endswith("_ro"):
                client.reply(NO_KEYS_SCRIPT)
                return
            data = encode_command(args)
            self.targets[self.name].send(Request(data, session.resp, session.id, 1, write),
                                         client.slot(len(data)))
            return
        plan = router.route_keys(keys, write, level)
        if plan is None:
            client.reply(CROSSSLOT)
            return
        data = encode_command(args)
        request = Request(data, session.resp, session.id, 1, write)
        effect = self.effect_of(cmd, args, level) if write else None
        if effect is not None:
            self.write(plan, request, client.slot(len(data)), normalise, effect)
            return
        self.run(plan, request, client.slot(len(data)), normalise)

    def effect_of(self, cmd, args: Sequence[bytes], level: str) -> Optional[Effect]:
        """
        How a write reaches the other replicas when not as sent: the effect
        of a command that may not run twice (`plan_effect`); or, with
        several datacenters, the state a write leaves when its result
        depends on the key's (`dynomite.commands.lww.ships_state`).  None: as sent.
        """
        effect = plan_effect(cmd.name, args, commands.keys(cmd, args)) if cmd.name in NOT_DETERMINISTIC else None
        if effect is not None:
            return self.as_state(effect, args, level)
        if self.ships_state(cmd.name, args, level):
            return state_effect(args, commands.keys(cmd, args))
        return None

    def as_state(self, effect: Effect, args: Sequence[bytes], level: str) -> Effect:
        """
        With versioned writes between datacenters, what the others get of a
        command that runs once is the state it left, always: its version
        then covers the whole of each key (`dynomite.node.leader`).
        """
        if effect.leaves_state or level == DC_EACH_SAFE_QUORUM or not self.versioned():
            return effect
        return state_effect(args, effect.keys)

    def ships_state(self, name: str, args: Sequence[bytes], level: str) -> bool:
        """Whether a write goes to other datacenters as the state it leaves (`lww.ships_state`)."""
        return level != DC_EACH_SAFE_QUORUM and self.versioned() and lww.ships_state(name, args)

    def versioned(self) -> bool:
        """Whether writes between datacenters carry versions now (last_writer_wins, several datacenters)."""
        return self.leader.versions is not None and bool(self.router.topology.remote_datacenters)

    def now_ms(self) -> int:
        """The time writes are accepted at, in ms (relative expiries become absolute at it)."""
        return int(self._clock.seconds() * 1000)

    def _split(self, session, cmd, args, client, write: bool, level: str) -> None:
        """MGET, MSET, DEL...: one request per replica set, replies coalesced in key order."""
        fragments = self.router.split(args, cmd.key_step, write, level)
        slot = client.slot(sum(len(a) for a in args))
        if len(fragments) == 1:
            self.run(fragments[0].plan, Request(encode_command(args), session.resp, session.id, 1, write),
                     slot)
            return
        nkeys = (len(args) - 1) // cmd.key_step
        gather = Gather(
            len(fragments),
            lambda replies: slot.complete(coalesce(args[0], fragments, replies, nkeys)),
        )
        for i, fragment in enumerate(fragments):
            self.run(fragment.plan, Request(fragment.encoded(), session.resp, session.id, 1, write),
                     gather.part(i))
