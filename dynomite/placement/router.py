"""
Routing: request -> plan of targets; fragmenting and coalescing multi-key
commands.  Pure functions over a `Topology`; nothing here sends anything.

One key's route is key -> hash tag -> hash -> owner in every rack -> plan
(twemproxy's ``server_pool_idx`` shape).  A `Plan` says which local
replicas a request goes to, how many answers the client waits for, and
which remote datacenters receive it:

| level               | read                                  | write                                   |
|---------------------|---------------------------------------|-----------------------------------------|
| DC_ONE              | own rack's owner; the next local rack | every local rack, first answer; remote  |
|                     | when that one fails (failover)        | DCs asynchronously                      |
| DC_QUORUM, _SAFE_   | every local rack, quorum              | every local rack, quorum; remote async  |
| DC_EACH_SAFE_QUORUM | every rack of every DC, safe quorum   | the same, synchronously                 |
|                     | in each                               |                                         |

Multi-key commands that Dynomite splits (MGET, MSET, DEL, UNLINK, EXISTS,
TOUCH) are cut into one fragment per replica set -- keys whose owners are
the same nodes in every rack of every DC travel together -- and the
fragments' replies are coalesced back in key order.  Other multi-key
commands run only when all their keys share one replica set.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from dynomite.placement.hashing import key_hash
from dynomite.consistency.quorum import DC_EACH_SAFE_QUORUM, DC_ONE
from dynomite.wire.replies import ReplyParser, is_error
from dynomite.wire.resp import encode_command
from dynomite.placement.topology import NodeInfo, Topology

CROSSSLOT = b"-CROSSSLOT Keys in request don't hash to the same node\r\n"


class Plan:
    """Where one single-replica-set request goes (see the module table)."""

    __slots__ = ("write", "level", "local", "wait", "failover", "remote_dcs", "each")

    def __init__(
        self,
        write: bool,
        level: str,
        local: Tuple[NodeInfo, ...],
        wait: int,
        failover: bool,
        remote_dcs: Tuple[str, ...],
        each: Optional[Dict[str, Tuple[NodeInfo, ...]]],
    ) -> None:
        self.write = write
        self.level = level
        self.local = local
        self.wait = wait
        self.failover = failover
        self.remote_dcs = remote_dcs
        self.each = each

    def __repr__(self) -> str:
        return "Plan(write=%r, level=%s, local=%s, wait=%d, failover=%r, remote=%s, each=%s)" % (
            self.write,
            self.level,
            [n.name for n in self.local],
            self.wait,
            self.failover,
            self.remote_dcs,
            None if self.each is None else {dc: [n.name for n in ns] for dc, ns in self.each.items()},
        )


def plan(topology: Topology, h: int, write: bool, level: str) -> Plan:
    """The plan for a request whose key(s) hash to ``h``."""
    local = topology.local_replicas(h)
    if level == DC_EACH_SAFE_QUORUM:
        each = {dc: topology.dc_replicas(dc, h) for dc in topology.datacenters}
        return Plan(write, level, local, len(local) // 2 + 1, False, (), each)
    remote = topology.remote_datacenters if write else ()
    if level == DC_ONE:
        return Plan(write, level, local, 1, not write, remote, None)
    return Plan(write, level, local, len(local) // 2 + 1, False, remote, None)


# -- multi-key commands -------------------------------------------------------


class Fragment:
    """Part of a split command: the keys of one replica set."""

    __slots__ = ("h", "positions", "args")

    def __init__(self, h: int, positions: List[int], args: List[bytes]) -> None:
        self.h = h
        self.positions = positions  # indexes of this fragment's keys in the original key order
        self.args = args            # the fragment as a command of its own

    def encoded(self) -> bytes:
        return encode_command(self.args)


def split(
    topology: Topology, hash_tag: Optional[bytes], args: Sequence[bytes], step: int
) -> List[Fragment]:
    """
    Cut MGET/MSET/DEL-like ``args`` (keys from index 1, ``step`` arguments
    per key) into one fragment per replica set, in order of first key.
    """
    name = args[0]
    fragments: Dict[tuple, Fragment] = {}
    for position, i in enumerate(range(1, len(args), step)):
        h = key_hash(args[i], hash_tag)
        rkey = topology.replica_key(h)
        fragment = fragments.get(rkey)
        if fragment is None:
            fragment = fragments[rkey] = Fragment(h, [], [name])
        fragment.positions.append(position)
        fragment.args.extend(args[i:i + step])
    return list(fragments.values())


def same_replicas(topology: Topology, hash_tag: Optional[bytes], keys: Sequence[bytes]) -> Optional[int]:
    """The hash to route by if every key has the same replica set, else None."""
    h = key_hash(keys[0], hash_tag)
    if len(keys) > 1:
        first = topology.replica_key(h)
        for key in keys[1:]:
            if topology.replica_key(key_hash(key, hash_tag)) != first:
                return None
    return h


def elements(raw: bytes) -> List[bytes]:
    """The raw elements of an array/set/push reply (empty for nil or non-aggregates)."""
    end = raw.find(b"\r\n")
    if raw[:1] not in (b"*", b"~", b">", b"%") or end < 0:
        return []
    count = int(raw[1:end])
    if count <= 0:
        return []
    items = ReplyParser().feed(raw[end + 2:])
    return items


def bulk_value(raw: bytes) -> bytes:
    """The payload of a bulk string reply (``$3\\r\\nabc\\r\\n`` -> ``abc``)."""
    start = raw.find(b"\r\n") + 2
    return raw[start:-2]


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


# -- order-insensitive comparison --------------------------------------------

# Replies that are unordered collections: two replicas may list the same
# members in different orders (hashtable encoding uses a per-process seed).
UNORDERED_REPLIES = frozenset(
    {"smembers", "sinter", "sunion", "sdiff", "hgetall", "hkeys", "hvals", "keys"}
)


def unordered(raw: bytes) -> object:
    """A comparison key equal for replies that hold the same members."""
    items = elements(raw)
    if not items:
        return raw
    if raw[:1] == b"%":
        return (raw[:1], tuple(sorted(zip(items[::2], items[1::2]))))
    return (raw[:1], tuple(sorted(items)))


def hgetall_unordered(raw: bytes) -> object:
    """HGETALL in RESP2 is a flat array of field, value pairs: sort the pairs."""
    items = elements(raw)
    if not items or raw[:1] == b"%":
        return unordered(raw)
    return (raw[:1], tuple(sorted(zip(items[::2], items[1::2]))))


def normaliser(command_name: str):
    """The comparison used by quorum reads of ``command_name``, or None for bytes."""
    if command_name == "hgetall":
        return hgetall_unordered
    if command_name in UNORDERED_REPLIES:
        return unordered
    return None
