# -*- test-case-name: tests.unit.test_router -*-
"""
Routing: a request's key -> the plan of where the request goes.

Routing is one function, `Router.route` (twemproxy's ``server_pool_idx``
shape): key -> hash tag -> hash -> owner in every rack of every datacenter
-> `Plan` at a consistency level.  A `Plan` says which local replicas a
request goes to, how many answers the client waits for, and which remote
datacenters receive it:

| level               | read                                  | write                                   |
|---------------------|---------------------------------------|-----------------------------------------|
| DC_ONE              | own rack's owner; the next local rack | every local rack, first answer; remote  |
|                     | when that one fails (failover)        | DCs asynchronously                      |
| DC_QUORUM, _SAFE_   | every local rack, quorum              | every local rack, quorum; remote async  |
| DC_EACH_SAFE_QUORUM | every rack of every DC, safe quorum   | the same, synchronously                 |
|                     | in each                               |                                         |

`plan` is the pure definition.  `Router` precomputes it: the ring's tokens
cut the hash space into segments inside which no rack changes owner, and
for each (kind, level) a `PlanTable` holds one Plan per segment -- the same
Plan object for every segment with the same replicas, so "same plan" means
"same replicas" and is an identity test.  When every key has the same
replicas (one node per rack everywhere) the table holds a single plan and
no key is hashed at all: that shortcut lives here, in `PlanTable.only`.

Multi-key commands that Dynomite splits (MGET, MSET, DEL, UNLINK, EXISTS,
TOUCH) are cut into one fragment per replica set (`Router.split`) and the
fragments' replies are coalesced back in key order (`coalesce`).  Other
multi-key commands run only when all their keys share one replica set
(`Router.route_keys`).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Dict, List, Optional, Sequence, Tuple

from dynomite.config.vocabulary import DC_EACH_SAFE_QUORUM, DC_ONE, MAX_TOKEN
from dynomite.placement.hashing import key_hash
from dynomite.placement.topology import NodeInfo, Topology
from dynomite.wire.replies import elements, is_error
from dynomite.wire.resp import encode_command

__all__ = ["CROSSSLOT", "Plan", "PlanTable", "Router", "Fragment", "plan", "coalesce"]

CROSSSLOT = b"-CROSSSLOT Keys in request don't hash to the same node\r\n"


class Plan:
    """Where one single-replica-set request goes (see the module table)."""

    __slots__ = ("write", "level", "local", "wait", "failover", "remote_dcs", "each", "leaders",
                 "lane", "position", "pending")

    def __init__(
        self,
        write: bool,
        level: str,
        local: Tuple[NodeInfo, ...],
        wait: int,
        failover: bool,
        remote_dcs: Tuple[str, ...],
        each: Optional[Dict[str, Tuple[NodeInfo, ...]]],
        leaders: Tuple[NodeInfo, ...] = (),
        lane: int = 0,
    ) -> None:
        self.write = write
        self.level = level
        self.local = local
        self.wait = wait
        self.failover = failover
        self.remote_dcs = remote_dcs
        self.each = each
        #: a write's local replicas in the order they lead it: the first
        #: that is up orders the key's writes for the whole datacenter
        self.leaders = leaders
        #: the lane (`dynomite.wire.inflight`) the leader sends these writes
        #: on, the same for every key of the plan, so they keep its order
        self.lane = lane
        #: a ring position with this plan (`PlanTable`), by which a LEAD
        #: names it to the leader; None if no position has it
        self.position: Optional[int] = None
        #: a write's pending replicas in this datacenter (a node joining or
        #: taking a leaving node's range: `Topology.pending`); usually ()
        self.pending: Tuple[NodeInfo, ...] = ()

    def __repr__(self) -> str:
        return "Plan(write=%r, level=%s, local=%s, wait=%d, failover=%r, remote=%s, each=%s%s)" % (
            self.write,
            self.level,
            [n.name for n in self.local],
            self.wait,
            self.failover,
            self.remote_dcs,
            None if self.each is None else {dc: [n.name for n in ns] for dc, ns in self.each.items()},
            (", leaders=%s" % [n.name for n in self.leaders] if self.leaders else "")
            + (", pending=%s" % [n.name for n in self.pending] if self.pending else ""),
        )


def leader_turn(position: int, racks: int) -> int:
    """
    Which rack of a datacenter (index in sorted rack order) leads the
    writes of a key at ring ``position``: spread by the key's hash, so every
    rack leads about as many keys, and the same on every node.
    """
    return position % racks if racks > 1 else 0


def plan(topology: Topology, position: int, write: bool, level: str,
         turn: Optional[int] = None) -> Plan:
    """
    The plan for a request whose key(s) hash to ring ``position``.  A
    write's ``leaders`` are this datacenter's replicas from the one
    `leader_turn` names (or ``turn``), then in sorted rack order: the same
    on every node.
    """
    local = topology.local_replicas(position)
    if write:
        ordered = topology.dc_replicas(topology.local.datacenter, position)
        if turn is None:
            turn = leader_turn(position, len(ordered))
        leaders = ordered[turn:] + ordered[:turn]
    else:
        leaders = ()
    if level == DC_EACH_SAFE_QUORUM:
        each = {dc: topology.dc_replicas(dc, position) for dc in topology.datacenters}
        made = Plan(write, level, local, len(local) // 2 + 1, False, (), each, leaders)
    elif level == DC_ONE:
        made = Plan(write, level, local, 1, not write, topology.remote_datacenters if write else (),
                    None, leaders)
    else:
        made = Plan(write, level, local, len(local) // 2 + 1, False,
                    topology.remote_datacenters if write else (), None, leaders)
    if write:
        made.pending = topology.pending(position)
    return made


class PlanTable:
    """
    The plans of one (kind, level) for the whole ring: the plan for ring
    position ``h`` is ``plans[bisect_left(bounds, h) * spread + h % spread]``,
    or ``only`` when every position has the same one (then nothing needs
    hashing).  ``spread`` is 1 for reads; for writes it is the number of
    racks of this datacenter, one plan per leading rack (`leader_turn`).
    """

    __slots__ = ("bounds", "plans", "only", "spread")

    def __init__(self, topology: Topology, write: bool, level: str) -> None:
        bounds, replica_sets = topology.segments()
        spread = len(topology.racks(topology.local.datacenter)) if write else 1
        shared: Dict[Tuple[int, int], Plan] = {}
        plans: List[Plan] = []
        for i, replicas in enumerate(replica_sets):
            # any position inside segment i: its upper bound (the extra
            # last segment wraps around to the first)
            upper = bounds[i] if i < len(bounds) else 0
            lowest = bounds[i - 1] + 1 if i > 0 else 0
            highest = bounds[i] if i < len(bounds) else MAX_TOKEN
            for turn in range(spread):
                p = shared.get((id(replicas), turn))
                if p is None:
                    p = shared[id(replicas), turn] = plan(
                        topology, upper, write, level, turn if write else None)
                    p.lane = len(shared)
                if p.position is None:
                    # the highest position of the segment this plan has
                    position = highest - (highest - turn) % spread
                    if position >= lowest:
                        p.position = position
                plans.append(p)
        self.bounds = bounds
        self.plans = plans
        self.spread = spread
        self.only: Optional[Plan] = plans[0] if len(shared) == 1 else None

    def at(self, position: int) -> Plan:
        """The plan for ring ``position``."""
        if self.only is not None:
            return self.only
        spread = self.spread
        return self.plans[bisect_left(self.bounds, position) * spread + position % spread]


class Fragment:
    """Part of a split command: the keys of one replica set."""

    __slots__ = ("plan", "positions", "args")

    def __init__(self, plan: Plan, positions: List[int], args: List[bytes]) -> None:
        self.plan = plan
        self.positions = positions  # indexes of this fragment's keys in the original key order
        self.args = args            # the fragment as a command of its own

    def encoded(self) -> bytes:
        return encode_command(self.args)


class _Tables(Dict[str, PlanTable]):
    """The `PlanTable` of each level for one kind of request, built when first asked for."""

    def __init__(self, router: "Router", write: bool) -> None:
        super().__init__()
        self._router = router
        self._write = write

    def __missing__(self, level: str) -> PlanTable:
        table = self[level] = PlanTable(self._router.topology, self._write, level)
        return table


class Router:
    """
    Routes requests over the current `Topology`; the one owner of it.

    A configuration reload hands the new topology to `update`; everything
    that routes holds this object, never a topology of its own.  ``reads``
    and ``writes`` map a level to its `PlanTable` (plain dict lookups, for
    the hot path).
    """

    def __init__(self, topology: Topology, hash_tag: Optional[bytes]) -> None:
        self.hash_tag = hash_tag
        self.topology = topology
        self.reads = _Tables(self, False)
        self.writes = _Tables(self, True)

    def update(self, topology: Topology) -> None:
        """Route over ``topology`` from now on."""
        self.topology = topology
        self.reads.clear()
        self.writes.clear()

    def table(self, write: bool, level: str) -> PlanTable:
        """Every plan of one kind at one level (built once, then shared)."""
        return self.writes[level] if write else self.reads[level]

    def position(self, key: bytes) -> int:
        """Where ``key`` sits on the ring (its hash tag's part, hashed)."""
        return key_hash(key, self.hash_tag)

    def route(self, key: bytes, write: bool, level: str) -> Plan:
        """The plan for a request on ``key``: routing's one function."""
        table = self.table(write, level)
        if table.only is not None:
            return table.only
        position = key_hash(key, self.hash_tag)
        spread = table.spread
        return table.plans[bisect_left(table.bounds, position) * spread + position % spread]

    def route_keys(self, keys: Sequence[bytes], write: bool, level: str) -> Optional[Plan]:
        """The plan for a request on several ``keys``, or None if their replicas differ."""
        table = self.table(write, level)
        if table.only is not None:
            return table.only
        first = self.route(keys[0], write, level)
        for key in keys[1:]:
            if self.route(key, write, level) is not first:
                return None
        return first

    def split(self, args: Sequence[bytes], step: int, write: bool, level: str) -> List[Fragment]:
        """
        Cut MGET/MSET/DEL-like ``args`` (keys from index 1, ``step`` arguments
        per key) into one fragment per replica set, in order of first key.
        """
        name = args[0]
        fragments: Dict[int, Fragment] = {}
        for position, i in enumerate(range(1, len(args), step)):
            p = self.route(args[i], write, level)
            fragment = fragments.get(id(p))
            if fragment is None:
                fragment = fragments[id(p)] = Fragment(p, [], [name])
            fragment.positions.append(position)
            fragment.args.extend(args[i:i + step])
        return list(fragments.values())


def coalesce(name: bytes, fragments: List[Fragment], replies: List[bytes], nkeys: int) -> bytes:
    """
    The client's reply to a split command from its fragments' replies
    (same order as ``fragments``).  The first error wins.
    """
    for raw in replies:
        if is_error(raw):
            return raw
    lname = name.lower()
    if lname == b"mget":
        out: List[bytes] = [b""] * nkeys
        for fragment, raw in zip(fragments, replies):
            for position, item in zip(fragment.positions, elements(raw)):
                out[position] = item
        return b"*%d\r\n%s" % (nkeys, b"".join(out))
    if lname == b"mset":
        return replies[0]
    total = 0
    for raw in replies:
        total += int(raw[1:-2])
    return b":%d\r\n" % total
