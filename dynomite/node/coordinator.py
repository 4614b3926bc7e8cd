"""
The coordinator: carries out routing plans.

The node a client talks to coordinates its requests: it sends each to the
replicas its `Plan` names (its own Redis through the `Datastore`, other
nodes through their `PeerLink`), reconciles their answers at the
consistency level (`dynomite.quorum`), forwards writes to one entry node
per remote datacenter, and answers the client.  It also serves the other
side: requests other nodes send here (REQUEST: run on the local Redis;
FORWARD: a write from another datacenter, applied to every rack of this
one).  Whole-keyspace commands (SCAN, KEYS, FLUSHALL, ...) are handed to
its `dynomite.keyspace.Keyspace`.

A run of pipelined requests (`dynomite.runs`) takes the same way as one
request: ``count`` rides along to the datastore, the outboxes and the peer
frames, and a `RunReconciler` stands in for the `Reconciler`.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from twisted.logger import Logger

from dynomite.commands import table as commands

from dynomite.placement import router
from dynomite.placement.hashing import key_hash
from dynomite.node.keyspace import Keyspace
from dynomite.wire.peer_frames import FLAG_RESP3, FLAG_RUN, FLAG_WRITE, FORWARD, REQUEST, run_count, run_payload
from dynomite.replication.outbox import HINTED, is_hinted
from dynomite.consistency.quorum import DC_EACH_SAFE_QUORUM, DC_ONE, EachQuorum, Reconciler
from dynomite.wire.requests import parse_whole
from dynomite.wire.resp import ProtocolError, encode_command
from dynomite.consistency.runs import RunReconciler
from dynomite.node.sinks import Gather
from dynomite.placement.topology import NodeInfo, Topology

NO_KEYS_SCRIPT = (
    b"-ERR dynomite routes scripts by their keys; "
    b"call EVAL/EVALSHA/FCALL with at least one key\r\n"
)

# Scripts may write although Redis does not flag them "write".
_SCRIPT_WRITES = frozenset({"eval", "evalsha", "fcall"})


class _Tally:
    """Sink for replies nobody waits for: only counts ``[answered, failed]`` requests."""

    __slots__ = ("_tally", "_count")

    def __init__(self, tally: List[int], count: int = 1) -> None:
        self._tally = tally
        self._count = count

    def complete(self, raw: bytes) -> None:
        self._tally[0] += self._count

    def fail(self, raw: bytes) -> None:
        self._tally[1] += self._count


class _Failover:
    """DC_ONE read (or run of reads): try each local replica in turn until one answers."""

    __slots__ = ("_coordinator", "_targets", "_index", "_data", "_resp", "_pin", "_sink", "_count")

    def __init__(self, coordinator, targets, data, resp, pin, sink, count=1) -> None:
        self._coordinator = coordinator
        self._targets = targets
        self._index = 0
        self._data = data
        self._resp = resp
        self._pin = pin
        self._sink = sink
        self._count = count

    def start(self) -> None:
        self._coordinator.send(self._targets[0], self._data, self._resp, self._pin, False, self,
                               self._count)

    def complete(self, raw: bytes) -> None:
        self._sink.complete(raw)

    def fail(self, raw: bytes) -> None:
        self._index += 1
        if self._index >= len(self._targets):
            self._sink.fail(raw)
        else:
            self._coordinator.send(self._targets[self._index], self._data, self._resp, self._pin,
                                   False, self, self._count)


class _Applied:
    """
    A FORWARDed write at its entry node: acknowledged once every rack of
    this DC applied it or holds it as a hint, so nothing is dropped between
    datacenters; a rack whose write could be neither fails the FORWARD
    (the sender keeps it as a hint and sends it again).
    """

    __slots__ = ("_left", "_sink", "_first", "_error")

    def __init__(self, parts: int, sink) -> None:
        self._left = parts
        self._sink = sink
        self._first: Optional[bytes] = None
        self._error: Optional[bytes] = None

    def part(self) -> "_AppliedPart":
        return _AppliedPart(self)

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


class _AppliedPart:
    __slots__ = ("_applied",)

    def __init__(self, applied: _Applied) -> None:
        self._applied = applied

    def complete(self, raw: bytes) -> None:
        self._applied._done(raw, True)

    def hinted(self, raw: bytes) -> None:
        self._applied._done(b"+OK\r\n", True)

    def fail(self, raw: bytes) -> None:
        self._applied._done(raw, False)


class _Unhinted:
    """A client's sink for a write whose failure may be a hint: say so in plain words."""

    __slots__ = ("_sink", "_translate")

    def __init__(self, sink, translate: Callable[[bytes], bytes]) -> None:
        self._sink = sink
        self._translate = translate

    def complete(self, raw: bytes) -> None:
        self._sink.complete(raw)

    def fail(self, raw: bytes) -> None:
        self._sink.fail(self._translate(raw) if is_hinted(raw) else raw)


class Coordinator:
    """Runs requests on the replicas of their keys; see the module docstring."""

    log = Logger()

    def __init__(self, config, topology: Topology, datastore, peers: Dict[str, object], rng=None) -> None:
        self.config = config
        self.topology = topology
        self.datastore = datastore
        self.peers = peers
        self.name = topology.local.name
        self.hash_tag = config.hash_tag
        self.read_consistency = config.read_consistency
        self.write_consistency = config.write_consistency
        self._plans: Dict[tuple, tuple] = {}
        self._plans_topology = topology
        self.membership = None  # set by the service; None: every replica is readable
        # writes go through an ordered, hinted outbox per target: this node's
        # own Redis and each same-DC peer (by node name), and each remote DC
        # ("dc:<name>"); set by the service, empty: writes go straight out
        self.outboxes: Dict[str, object] = {}
        self.keyspace = Keyspace(self, rng)
        # replication outcomes, [acknowledged, failed], for metrics
        self.local_writes = [0, 0]
        self.remote_writes = [0, 0]
        self.quorum_failures: Dict[tuple, int] = {}
        self._settlers: Dict[tuple, Callable[[bytes], bytes]] = {}

    # -- sending -----------------------------------------------------------

    def send(self, node: NodeInfo, data: bytes, resp: int, pin: int, write: bool, sink,
             count: int = 1) -> None:
        """One request (or a run of ``count``) to one node: the local Redis, or a peer."""
        if node.is_local:
            self.datastore.send(pin, resp, data, sink, count)
        else:
            flags = (FLAG_RESP3 if resp == 3 else 0) | (FLAG_WRITE if write else 0)
            self.send_to_peer(node.name, REQUEST, flags, data, sink, pin, count)

    def send_to_peer(self, name: str, frame_type: int, flags: int, data: bytes, sink, pin: int,
                     count: int = 1) -> None:
        """A REQUEST or FORWARD frame to peer ``name``; a run goes as one FLAG_RUN frame."""
        link = self.peers.get(name)
        if link is None:  # removed by a configuration reload
            sink.fail(b"-ERR peer %s is no longer in the cluster\r\n" % name.encode())
            return
        if count > 1:
            flags |= FLAG_RUN
            data = run_payload(count, data)
        link.send(frame_type, flags, data, sink, pin, self.name)

    def write(self, node: NodeInfo, data: bytes, resp: int, pin: int, sink, count: int = 1) -> None:
        """One write (or a run) to one replica, through its outbox (hinted if it cannot be delivered)."""
        outbox = self.outboxes.get(node.name)
        if outbox is None:
            self.send(node, data, resp, pin, True, sink, count)
        else:
            outbox.submit(FLAG_RESP3 | FLAG_WRITE if resp == 3 else FLAG_WRITE, data, sink, pin, count)

    def deliver_to_dc(self, dc: str, flags: int, data: bytes, sink, pin: int, count: int = 1) -> None:
        """FORWARD a write (or a run) to the first reachable entry node of ``dc`` (the outbox's deliver)."""
        membership = self.membership
        for node in self.topology.entry_candidates(dc):
            link = self.peers[node.name]
            if link.is_up and (membership is None or membership.writable(node.name)):
                self.send_to_peer(node.name, FORWARD, flags, data, sink, pin, count)
                return
        sink.fail(b"-ERR no entry node of %s is reachable\r\n" % dc.encode())

    def dc_reachable(self, dc: str) -> bool:
        membership = self.membership
        return any(
            self.peers[node.name].is_up and (membership is None or membership.writable(node.name))
            for node in self.topology.entry_candidates(dc)
        )

    def _forward_remote(self, dcs: Sequence[str], data: bytes, resp: int, pin: int,
                        count: int = 1) -> None:
        """Hand a write (or a run) to each remote DC's outbox; the client does not wait for it."""
        flags = (FLAG_RESP3 if resp == 3 else 0) | FLAG_WRITE
        for dc in dcs:
            sink = _Tally(self.remote_writes, count)
            outbox = self.outboxes.get("dc:" + dc)
            if outbox is not None:
                outbox.submit(flags, data, sink, pin, count)
            else:
                self.deliver_to_dc(dc, flags, data, sink, pin, count)

    # -- one replica set ---------------------------------------------------

    def plan(self, h: int, write: bool, level: str) -> router.Plan:
        """
        `router.plan`, cached: replica sets are shared tuples of the topology
        (`Topology.replica_key`), so one Plan per (replica set, kind, level)
        serves every key that lands there.
        """
        topology = self.topology
        replicas = topology.replica_key(h)  # a shared tuple: every owner in every DC
        key = (id(replicas), write, level)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is replicas:
            return cached[1]
        if self._plans_topology is not topology:
            self._plans.clear()
            self._plans_topology = topology
        p = router.plan(topology, h, write, level)
        self._plans[key] = (replicas, p)
        return p

    def run(self, h: int, write: bool, level: str, data: bytes, resp: int, pin: int, sink,
            normalise=None, count: int = 1) -> None:
        """
        Run ``data`` on the replicas of hash ``h`` at ``level``; reply into
        ``sink``.  ``data`` may be a run of ``count`` requests (`dynomite.runs`)
        of one command whose keys all hash to the replicas of ``h``; never at
        DC_EACH_SAFE_QUORUM.
        """
        p = self.plan(h, write, level)
        if p.each is not None:
            each = EachQuorum({dc: len(nodes) for dc, nodes in p.each.items()},
                              self._reply_to(sink, write, level), normalise)
            for dc, nodes in p.each.items():
                for node in nodes:
                    if write:
                        self.write(node, data, resp, pin, each.replica(dc))
                    else:
                        self.send(node, data, resp, pin, False, each.replica(dc))
            return
        local = p.local
        unreadable = self.membership.unreadable if self.membership is not None else None
        if unreadable and not write and self._enough_readable(p, unreadable):
            self._run_around(p, unreadable, data, resp, pin, sink, normalise, level, count)
            return
        if p.failover:
            if len(local) == 1:
                self.send(local[0], data, resp, pin, False, sink, count)
            else:
                _Failover(self, local, data, resp, pin, sink, count).start()
        elif not write:
            rec = self._reconciler(p.level, len(local), sink, False, level, normalise, count)
            for node in local:
                self.send(node, data, resp, pin, False, rec.replica(), count)
        elif len(local) == 1 and p.level == DC_ONE:
            self.write(local[0], data, resp, pin, _Unhinted(sink, self._hinted_error), count)
        else:
            rec = self._reconciler(p.level, len(local), sink, True, level, normalise, count,
                                   self.local_writes)
            for node in local:
                self.write(node, data, resp, pin, rec.replica(), count)
        if p.remote_dcs:
            self._forward_remote(p.remote_dcs, data, resp, pin, count)

    def _reconciler(self, plan_level: str, replicas: int, sink, write: bool, level: str, normalise,
                    count: int, tally: Optional[List[int]] = None):
        """A `Reconciler` for one request, or a `RunReconciler` for a run, replying into ``sink``."""
        settle = self._settler(write, level)
        if count == 1:
            return Reconciler(plan_level, replicas, sink.complete, normalise, tally=tally, settle=settle)
        return RunReconciler(plan_level, replicas, count, sink.complete, normalise, tally, settle)

    @staticmethod
    def _enough_readable(p, unreadable) -> bool:
        """
        Whether the replicas that may be read from can answer at this level
        on their own; if not (a whole cluster starting, RESUMING everywhere),
        every replica is asked: a possibly stale answer beats an error.
        """
        readable = sum(1 for n in p.local if n.name not in unreadable)
        return readable >= p.wait

    def _run_around(self, p, unreadable, data, resp, pin, sink, normalise, level, count) -> None:
        """A read while some replicas must not be read from (RESUMING, STANDBY, DOWN...)."""
        readable = [n for n in p.local if n.name not in unreadable]
        if p.failover:
            # the others stay as a last resort: a stale answer beats none at DC_ONE
            targets = readable + [n for n in p.local if n.name in unreadable]
            _Failover(self, targets, data, resp, pin, sink, count).start()
            return
        rec = self._reconciler(p.level, len(p.local), sink, False, level, normalise, count)
        for node in p.local:
            if node.name in unreadable:
                rec.replica().fail(b"-ERR replica %s is %s\r\n" % (
                    node.name.encode(), self._state_of(node).encode()))
            else:
                self.send(node, data, resp, pin, False, rec.replica(), count)

    def _state_of(self, node: NodeInfo) -> str:
        if node.is_local:
            return self.membership.state
        return self.membership.peer_state(node.name)

    def _hinted_error(self, raw: bytes) -> bytes:
        """What a client sees when its only possible acknowledgement became a hint."""
        if raw.startswith(HINTED + b"write for " + self.name.encode()):
            return (b"-ERR datastore unavailable; the write is kept as a hint and "
                    b"will be applied when Redis answers again\r\n")
        return b"-ERR replica unavailable; " + raw[len(HINTED):-2] + (
            b", to be applied when it returns\r\n")

    def _settler(self, write: bool, level: str) -> Callable[[bytes], bytes]:
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

    def _reply_to(self, sink, write: bool, level: str) -> Callable[[bytes], None]:
        settle = self._settler(write, level)
        return lambda raw: sink.complete(settle(raw))

    # -- client requests ---------------------------------------------------

    def execute_run(self, session, cmd, h: int, data: bytes, count: int, client) -> None:
        """
        A run (`dynomite.runs`): ``count`` requests of the KEY command ``cmd``,
        their keys all on the replicas of ``h``, joined in the client's own
        bytes ``data``; never under DC_EACH_SAFE_QUORUM (see `runs_allowed`).
        """
        write = cmd.write
        level = self._level(session, write)
        self.run(h, write, level, data, session.resp, session.id, client.slot(len(data), count),
                 router.normaliser(cmd.name) if level != DC_ONE else None, count)

    def runs_allowed(self, session) -> bool:
        """Whether this session's requests may go in runs: not under DC_EACH_SAFE_QUORUM."""
        return DC_EACH_SAFE_QUORUM not in (self._level(session, True), self._level(session, False))

    def _level(self, session, write: bool) -> str:
        """The consistency level of this session's writes or reads (its own, else the node's)."""
        if write:
            return session.write_consistency or self.write_consistency
        return session.read_consistency or self.read_consistency

    def execute(self, session, cmd, args: Sequence[bytes], client) -> None:
        """A KEY, MULTI_KEY or LOCAL command from a client."""
        route = cmd.route
        if route == commands.LOCAL:
            self.keyspace.execute(session, cmd, args, client)
            return
        write = cmd.write or cmd.name in _SCRIPT_WRITES
        level = self._level(session, write)
        if route == commands.KEY:
            index = commands.fixed_key_index(cmd)
            if index and index < len(args):
                h = key_hash(args[index], self.hash_tag)
            else:
                keys = commands.keys(cmd, args)
                h = key_hash(keys[0], self.hash_tag) if keys else 0
            data = encode_command(args)
            self.run(h, write, level, data, session.resp, session.id, client.slot(len(data)),
                     router.normaliser(cmd.name) if level != DC_ONE else None)
            return
        # MULTI_KEY
        if cmd.split:
            self._split(session, cmd, args, client, write, level)
            return
        keys = commands.keys(cmd, args)
        if not keys:
            if cmd.name in _SCRIPT_WRITES or cmd.name.endswith("_ro"):
                client.reply(NO_KEYS_SCRIPT)
                return
            data = encode_command(args)
            self.datastore.send(session.id, session.resp, data, client.slot(len(data)))
            return
        h = router.same_replicas(self.topology, self.hash_tag, keys)
        if h is None:
            client.reply(router.CROSSSLOT)
            return
        data = encode_command(args)
        self.run(h, write, level, data, session.resp, session.id, client.slot(len(data)),
                 router.normaliser(cmd.name) if level != DC_ONE else None)

    def _split(self, session, cmd, args, client, write: bool, level: str) -> None:
        fragments = router.split(self.topology, self.hash_tag, args, cmd.key_step)
        data_size = sum(len(a) for a in args)
        slot = client.slot(data_size)
        if len(fragments) == 1:
            self.run(fragments[0].h, write, level, encode_command(args), session.resp, session.id, slot)
            return
        nkeys = (len(args) - 1) // cmd.key_step
        gather = Gather(
            len(fragments),
            lambda replies: slot.complete(router.coalesce(args[0], fragments, replies, nkeys)),
        )
        for i, fragment in enumerate(fragments):
            self.run(fragment.h, write, level, fragment.encoded(), session.resp, session.id, gather.part(i))

    # -- membership, over the peer heartbeats --------------------------------

    def status_for(self, peer: str) -> dict:
        if self.membership is None:
            return {"state": "NORMAL", "hints": 0}
        return self.membership.status_for(peer)

    def peer_status(self, peer: str, status: dict) -> None:
        if self.membership is not None:
            self.membership.peer_status(peer, status)

    # -- requests from other nodes -----------------------------------------

    def handle_peer_request(self, peer_name: str, frame_type: int, flags: int, origin: str,
                            payload: bytes, sink) -> None:
        """A REQUEST (run here) or FORWARD (apply to every rack of this DC)."""
        resp = 3 if flags & FLAG_RESP3 else 2
        pin = hash(peer_name)
        count = 1
        if flags & FLAG_RUN:
            count = run_count(payload)
            payload = payload[4:]
        if frame_type == REQUEST:
            self.datastore.send(pin, resp, payload, sink, count)
            return
        try:
            requests, bounds = parse_whole(payload)
        except ProtocolError:
            requests = []
        if len(requests) != count:
            sink.complete(b"-ERR forwarded payload is not %d whole commands\r\n" % count)
            return
        # each write to every rack of this DC, consecutive writes with the same
        # replicas together as a run; acknowledged once all are applied or hinted
        dc = self.topology.local.datacenter
        groups: List[list] = []   # [replicas, start, end, count]
        for i, args in enumerate(requests):
            cmd = commands.lookup(args[0])
            if cmd is not None:
                cmd = commands.resolve(cmd, args) or cmd
            keys = commands.keys(cmd, args) if cmd is not None else []
            replicas = self.topology.dc_replicas(dc, key_hash(keys[0], self.hash_tag) if keys else 0)
            if groups and groups[-1][0] is replicas:
                groups[-1][2] = bounds[2 * i + 1]
                groups[-1][3] += 1
            else:
                groups.append([replicas, bounds[2 * i], bounds[2 * i + 1], 1])
        applied = _Applied(sum(len(g[0]) for g in groups), sink)
        for replicas, start, end, n in groups:
            writes = payload[start:end]
            for node in replicas:
                self.write(node, writes, resp, pin, applied.part(), n)
