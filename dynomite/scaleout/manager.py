# -*- test-case-name: tests.unit.test_scaleout -*-
"""
A node's joins and leaves, from the first gossip round to the cleanup.

**Join** (a node started with ``bootstrap: true`` and ``enable_gossip:
true``, never a member before):

1. *waiting*: it learns the cluster from a seed, and waits while another
   node of its rack is moving ranges (one move per rack: `moves.busy_rack`);
   with ``tokens: auto`` it then takes the middle of its rack's largest
   range (`moves.auto_tokens`).
2. *announcing*: its gossip entry says JOINING with its tokens; every node
   of the datacenter that is up must say it knows that entry (heartbeats
   carry the stamp: `dynomite.peers.membership.Membership.ring_seen`).
   From then on every leader sends it the writes of the ranges it takes.
3. *flushing*: its Redis is emptied of anything an earlier attempt left.
4. *copying*: `dynomite.scaleout.copier.CopyRun` lists the keys of those
   ranges on their current owners and has each key's leader copy it here.
5. *handing over*: each old owner stops leading its range, waits until
   the writes it led are answered, and sends the later ones here
   (`dynomite.node.handover`): one leader at a time, whoever knows what.
6. *cutting over*: its entry says NORMAL: nodes route its ranges to it as
   they learn it; once every node of the datacenter knows, and one write
   timeout later (writes sent before),
7. *cleaning*: the old owners' keys of the ranges they gave away are
   deleted from their Redis (`dynomite.repair.script.drop_request`).

A node killed halfway restarts where its state file says (the join goes on
from the announcement; the copy runs again); until its entry says NORMAL
the old owners serve every read, so a failed join loses nothing.

**Leave** (`decommission`): the entry says LEAVING, the nodes that will own
its ranges become pending for them, its keys are copied there, it hands
the lead of its ranges to those nodes, and its entry says LEFT: it is no longer a member.  Its Redis is left as it is.

The state survives restarts in ``data_dir/scaleout/<node>/state.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from dynomite.config.vocabulary import DOWN, JOINING, LEAVING, LEFT, NORMAL
from dynomite.repair import script
from dynomite.repair.run import ask
from dynomite.scaleout.copier import Cancelled, CopyRun, answered
from dynomite.scaleout.moves import Move, auto_tokens, busy_rack, kept_ranges, moves_of
from dynomite.wire.inflight import Request
from dynomite.wire.resp import encode_command

__all__ = ["ScaleOut", "PHASES", "COUNTED", "initial_place"]

#: What a node's move is doing (`ScaleOut.phase`).
PHASES = ("idle", "waiting", "announcing", "flushing", "copying", "handing_over", "cutting_over", "cleaning",
          "done", "failed")

#: What `ScaleOut.counts` counts (``dynomite_scaleout_keys_total{event}``).
COUNTED = ("scanned", "copied", "error", "dropped")

#: Fast gossip rounds a join waits after its announcement, for one announced at the same moment.
SETTLE_ROUNDS = 3

#: Seconds between looks while waiting (for the cluster, the rack, the peers).
POLL = 0.5


class _Refused(Exception):
    """A move that cannot go on (the leave of a rack's last node): the node stays as it was."""


class _Withdrawn(Exception):
    """Another move of this node's rack goes first: the join waits."""


def initial_place(config, state_path: str) -> Tuple[str, Tuple[int, ...]]:
    """
    This node's ring status and tokens when it starts: what its state file
    says of an earlier run; else JOINING for a new node that joins by
    gossip (``bootstrap`` and ``enable_gossip``), without tokens until its
    rack is free (`ScaleOut`); else NORMAL with its configured tokens.
    """
    state = _read_state(state_path)
    tokens = tuple(config.tokens)
    if state.get("operation") == "join":
        if state.get("done"):
            return NORMAL, tuple(state.get("tokens") or tokens)
        return JOINING, tuple(state.get("tokens") or ())
    if state.get("operation") == "leave":
        return (LEFT if state.get("done") else LEAVING), tokens
    if config.bootstrap and config.enable_gossip:
        return JOINING, ()   # its tokens are published once its rack is free
    return NORMAL, tokens


def _read_state(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class ScaleOut:
    """
    One node's side of scale-out; see the module docstring.

    ``topology()`` is the current `Topology`; ``route(key)`` a key's write
    plan; ``copy(plan, probe, sink)`` has a leader copy
    (`dynomite.node.leading.Leading.copy`); ``hand_over(move)``
    has a move's old owner pass the lead of its range on (a Deferred of
    the answer: `dynomite.node.handover`); ``send(node, request,
    sink)`` reaches a node's Redis; ``grace`` is how long writes already
    sent may still arrive (the write timeout, seconds).
    """

    log = Logger()

    def __init__(self, name: str, topology: Callable[[], Any], route, copy, hand_over, send, clock, gossip,
                 membership, hash_tag: Optional[bytes], rate: int, grace: float, state_path: str,
                 configured_tokens: Tuple[int, ...] = (), versions: bool = False) -> None:
        self.name = name
        # versions between datacenters: a copy takes deletes' tombstones too
        self._versions = versions
        self._configured = tuple(configured_tokens)
        #: keys scanned, copied, copy errors and keys dropped, since start (metrics)
        self.counts: Dict[str, int] = dict.fromkeys(COUNTED, 0)
        self._topology = topology
        self._route = route
        self._copy = copy
        self._hand_over = hand_over
        self._send = send
        self._clock = clock
        self._gossip = gossip
        self._membership = membership
        self._tag = hash_tag
        self._rate = rate
        self._grace = grace
        self._state_path = state_path
        self.operation: Optional[str] = None
        self.phase = "idle"
        self.reason: Optional[str] = None
        self.started: Optional[float] = None
        self.finished: Optional[float] = None
        self.moves: List[Move] = []
        self.dropped = 0
        #: copies run for the current move (again when what moves, or a peer, changed meanwhile)
        self.copy_runs = 0
        self._run: Optional[CopyRun] = None
        self._driving: Optional[Deferred] = None
        self._stopping = False

    # -- starting ----------------------------------------------------------------

    def start(self) -> None:
        """Go on with what this node's status says: a join or a leave under way."""
        status = self._gossip.view.own.status
        if status == JOINING:
            self._drive("join", self._join())
        elif status == LEAVING:
            self._drive("leave", self._leave())

    def stop(self) -> None:
        self._stopping = True
        if self._run is not None:
            self._run.cancel()

    def decommission(self) -> Optional[str]:
        """Start leaving the cluster; None, or why not."""
        own = self._gossip.view.own
        if self._driving is not None:
            return "a %s is under way (%s)" % (self.operation, self.phase)
        if own.status != NORMAL:
            return "this node is %s" % own.status
        topology = self._topology()
        local = topology.local
        others = [n for n in topology.nodes_in_rack(local.datacenter, local.rack) if n.name != self.name]
        if not others:
            return "this node is the last of %s/%s: nobody could take its ranges" % (local.datacenter, local.rack)
        why = busy_rack(self._gossip.view.members(), own)
        if why is not None:
            return "one move per rack at a time: " + why
        self._drive("leave", self._leave())
        return None

    def _drive(self, operation: str, coroutine) -> None:
        self.operation = operation
        self.started = self._clock.seconds()
        self.finished = None
        d = self._driving = Deferred.fromCoroutine(coroutine)

        def ended(result):
            self._driving = None
            self.finished = self._clock.seconds()
            if result is not None and hasattr(result, "check"):
                if result.check(Cancelled):
                    self.phase, self.reason = "failed", "stopped"
                elif result.check(_Refused):
                    self.phase, self.reason = "failed", result.getErrorMessage()
                    self.log.warn("scale-out {operation} refused: {why}", operation=operation, why=self.reason)
                else:
                    self.phase, self.reason = "failed", result.getErrorMessage()
                    self.log.failure("scale-out {operation} failed", result, operation=operation)
            return None

        d.addBoth(ended)

    # -- the join ------------------------------------------------------------------

    async def _join(self) -> None:
        gossip = self._gossip
        self._enter("waiting", "learning the cluster from a seed")
        while not self._knows_rack():
            previous = gossip.previous_own()
            if previous is not None and previous.status == NORMAL and previous.tokens:
                # a member restarted with bootstrap: nothing to join
                gossip.set_own(status=NORMAL, tokens=previous.tokens)
                self._save({"operation": "join", "tokens": list(previous.tokens), "done": True})
                self._enter("done", "already a member")
                return
            await self._sleep(POLL)
        while True:
            await self._placed()
            self._enter("flushing", "emptying this node's Redis of what an earlier attempt left")
            await self._ask(self.name, Request(encode_command([b"FLUSHDB"]), write=True))
            try:
                await self._copy_moves(withdraw=True)
                break
            except _Withdrawn as e:
                self._withdraw(str(e))
        await self._hand_over_moves()
        self._enter("cutting_over", "serving its ranges; waiting for every node to know")
        gossip.set_own(status=NORMAL)
        self._save({"operation": "join", "tokens": list(gossip.view.own.tokens), "done": True})
        await self._known_everywhere()
        await self._sleep(self._grace)
        self._enter("cleaning", "deleting the moved keys from their old owners")
        for source in sorted({m.source for m in self.moves}):
            await self._drop(source)
        self._enter("done", None)

    async def _placed(self) -> None:
        """Until this node's entry says JOINING with its tokens, its rack is free, and every peer knows."""
        gossip = self._gossip
        while True:
            own = gossip.view.own
            why = busy_rack(gossip.view.members(), own)
            if why is not None:
                self._withdraw(why)
                await self._sleep(POLL)
                continue
            tokens = own.tokens or self._state_tokens() or self._configured_tokens() or self._auto_tokens()
            if own.tokens != tokens:
                gossip.set_own(status=JOINING, tokens=tokens)
            self._save({"operation": "join", "tokens": list(tokens)})
            self._enter("announcing", "waiting for every node of the datacenter to know the join")
            await self._known_everywhere()
            # a join announced at the same moment elsewhere reaches this view
            # within a few fast gossip rounds: the younger of the two waits
            await self._sleep(SETTLE_ROUNDS * gossip.fast_interval)
            if busy_rack(gossip.view.members(), gossip.view.own) is None:
                return

    def _withdraw(self, why: str) -> None:
        """Another move of this rack goes first: no tokens until it is done (they may be chosen anew)."""
        if self._gossip.view.own.tokens:
            self._gossip.set_own(tokens=())
            self._save({"operation": "join"})
        self._enter("waiting", "one move per rack at a time: " + why)

    def _knows_rack(self) -> bool:
        """Whether the view holds another member of this rack with tokens (the seed has answered)."""
        own = self._gossip.view.own
        return any(e.name != own.name and (e.datacenter, e.rack) == (own.datacenter, own.rack) and e.tokens
                   and e.status in (NORMAL, LEAVING) for e in self._gossip.view.members())

    def _state_tokens(self) -> Tuple[int, ...]:
        return tuple(_read_state(self._state_path).get("tokens") or ())

    def _configured_tokens(self) -> Tuple[int, ...]:
        return self._configured

    def _auto_tokens(self) -> Tuple[int, ...]:
        own = self._gossip.view.own
        taken = [t for e in self._gossip.view.members() if e.name != own.name
                 and (e.datacenter, e.rack) == (own.datacenter, own.rack) for t in e.tokens]
        return auto_tokens(taken)

    # -- the leave -----------------------------------------------------------------

    async def _leave(self) -> None:
        gossip = self._gossip
        if gossip.view.own.status != LEAVING:
            gossip.set_own(status=LEAVING)
        self._save({"operation": "leave"})
        self._enter("announcing", "waiting for every node of the datacenter to know the leave")
        await self._known_everywhere()
        while True:
            # another move of the rack, heard of late, goes first if older
            # (the topology lets it alone move: `Topology`); then this one
            await self._sleep(SETTLE_ROUNDS * gossip.fast_interval)
            why = busy_rack(gossip.view.members(), gossip.view.own)
            if why is None:
                break
            self._enter("waiting", "one move per rack at a time: " + why)
        topology = self._topology()
        local = topology.local
        if not [n for n in topology.nodes_in_rack(local.datacenter, local.rack) if n.name != self.name]:
            # the others of the rack left first: nobody could take its ranges
            gossip.set_own(status=NORMAL)
            self._save({})
            raise _Refused("this node is the last of %s/%s: nobody could take its ranges"
                           % (local.datacenter, local.rack))
        await self._copy_moves()
        await self._hand_over_moves()
        self._enter("cutting_over", "leaving the ring")
        gossip.set_own(status=LEFT)
        self._save({"operation": "leave", "done": True})
        await self._sleep(self._grace)
        self._enter("done", "this node is no longer a member: stop it")

    # -- shared steps --------------------------------------------------------------

    async def _copy_moves(self, withdraw: bool = False) -> None:
        """
        Copy what moves, until what moves no longer changes: another move
        of the rack seen late changes this node's ranges (and, for a join,
        ``withdraw``: makes it wait, by `_Withdrawn`, if that move goes
        first); and again when a node of the datacenter was down, came
        back or restarted during the copy.
        """
        while True:
            self.moves = moves = moves_of(self._topology(), self.name)
            self._enter("copying", "%d ranges" % len(moves))
            peers = self._peer_runs()
            run = self._run = CopyRun(moves, self._route, self._copy, self._send, self._clock,
                                      self._tag, self._rate, on_counts=self._count, versions=self._versions)
            self.copy_runs += 1
            progress = await run.run()
            if self._stopping:
                raise Cancelled()
            if withdraw:
                why = busy_rack(self._gossip.view.members(), self._gossip.view.own)
                if why is not None:
                    raise _Withdrawn(why)
            if progress.error is not None:
                self.log.warn("scale-out copy failed ({why}); starting it again", why=progress.error)
                await self._sleep(POLL)
                continue
            if moves_of(self._topology(), self.name) != moves:
                self.log.info("scale-out: the ranges moving changed during the copy; copying again")
                continue
            # a peer down, back or restarted meanwhile may have led writes
            # before it knew of the move: once it knows, copy again
            await self._known_everywhere()
            if self._peer_runs() == peers:
                return
            self.log.info("scale-out: a node of the datacenter went down, came back or restarted during"
                          " the copy; copying again")

    async def _hand_over_moves(self) -> None:
        """
        Each old owner stops leading its moving range, and leads nothing
        there again once what it led is answered: the new owner leads from
        then on (`dynomite.node.handover`).  One that cannot be asked (it
        is down) leads nothing meanwhile either.
        """
        self._enter("handing_over", "the old owners of %d ranges pass their lead on" % len(self.moves))
        for move in self.moves:
            raw = await self._hand_over(move)
            if not raw.startswith(b"+"):
                self.log.warn("scale-out: {source} did not hand {start}..{end} over: {why}",
                              source=move.source, start=move.start, end=move.end,
                              why=raw[1:].strip().decode("utf-8", "replace"))

    def _peer_runs(self) -> Dict[str, Optional[int]]:
        """Each peer of this datacenter's gossip generation, None while it is DOWN."""
        topology = self._topology()
        here = topology.local.datacenter
        out: Dict[str, Optional[int]] = {}
        for node in topology.nodes:
            if node.is_local or node.datacenter != here or node.status == LEFT:
                continue
            entry = self._gossip.view.entries.get(node.name)
            up = self._membership.peer_state(node.name) != DOWN
            out[node.name] = entry.generation if entry is not None and up else None
        return out

    async def _known_everywhere(self) -> None:
        """Until every node of this datacenter that is up says it holds this node's latest entry."""
        while True:
            stamp = self._gossip.view.own.stamp
            missing = self._not_knowing(stamp)
            if not missing:
                return
            self.reason = "waiting for %s to learn this node's entry" % ", ".join(missing)
            await self._sleep(POLL)

    def _not_knowing(self, stamp: Tuple[int, int]) -> List[str]:
        topology = self._topology()
        here = topology.local.datacenter
        membership = self._membership
        out = []
        for node in topology.nodes:
            if node.is_local or node.datacenter != here or node.status == LEFT:
                continue
            if membership.peer_state(node.name) == DOWN:
                continue
            seen = membership.ring_seen(node.name)
            if seen is None or seen < stamp:
                out.append(node.name)
        return out

    async def _drop(self, node: str) -> None:
        """Delete from ``node``'s Redis the keys of ranges it holds no more."""
        ranges = kept_ranges(self._topology(), node)
        if not ranges:
            return
        cursor = 0
        while True:
            step = script.scan_step(await self._ask(node, script.drop_request(cursor, 500, self._tag, ranges)))
            deleted = int(step.items[0]) if step.items else 0
            self.dropped += deleted
            self._count("dropped", deleted)
            cursor = step.cursor
            if cursor == 0:
                return
            if self._rate:
                await self._sleep(step.scanned / self._rate)

    async def _ask(self, node: str, request: Request) -> bytes:
        def failed(raw: bytes) -> None:
            self.reason = "%s: %s" % (node, raw[1:].strip().decode("utf-8", "replace"))

        return await answered(lambda: ask(self._send, node, request), self._clock, POLL,
                              lambda: self._stopping, failed)

    def _count(self, event: str, n: int) -> None:
        self.counts[event] += n

    def _sleep(self, seconds: float) -> Deferred:
        if self._stopping:
            raise Cancelled()
        return deferLater(self._clock, seconds, lambda: None)

    def _enter(self, phase: str, reason: Optional[str]) -> None:
        if phase != self.phase:
            self.log.info("scale-out {operation}: {phase}", operation=self.operation, phase=phase)
        self.phase = phase
        self.reason = reason

    def _save(self, state: Dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(self._state_path), exist_ok=True)
        temporary = self._state_path + ".new"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self._state_path)

    # -- status --------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """The /info ``scaleout`` section."""
        now = self._clock.seconds()
        own = self._gossip.view.own
        topology = self._topology()
        moving = []
        for dc in topology.datacenters:
            for rack in topology.racks(dc):
                for node in topology.joining_in_rack(dc, rack):
                    moving.append({"node": node.name, "status": node.status, "dc": dc, "rack": rack,
                                   "tokens": list(node.tokens)})
        out: Dict[str, Any] = {
            "status": own.status, "tokens": list(own.tokens), "operation": self.operation,
            "phase": self.phase, "reason": self.reason, "started": self.started, "finished": self.finished,
            "ranges": [list(m) for m in self.moves], "dropped": self.dropped, "copy_runs": self.copy_runs,
            "moving": moving,
        }
        if self._run is not None:
            out["copy"] = self._run.progress.as_dict(now)
        return out
