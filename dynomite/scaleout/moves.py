# -*- test-case-name: tests.unit.test_scaleout -*-
"""
Which ranges move, and where a new node's tokens go: pure functions of a
`dynomite.placement.topology.Topology`.

A move is one inclusive hash range of one rack whose owner changes: from
its current owner (the node that holds the keys now) to its future owner.
A joining node takes the ranges whose future owner it is; a leaving node
gives away the ranges whose current owner it is.  The keys of a range are
listed on its current owner's Redis, and copied to the future owner by
their leaders (`dynomite.node.leader.Leader.copy`).
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

from dynomite.config.vocabulary import JOINING, LEAVING, MAX_TOKEN, RING_SIZE

__all__ = ["Move", "moves_of", "busy_rack", "auto_tokens", "kept_ranges"]


class Move(NamedTuple):
    """One moving range: ``start..end`` (inclusive), listed on ``source``, copied to ``target``."""

    start: int
    end: int
    source: str
    target: str


def moves_of(topology, name: str) -> List[Move]:
    """
    The moves node ``name`` drives: the ranges of its rack it will own
    (JOINING) or gives away (LEAVING); ``[]`` when it is neither.
    """
    node = topology.node(name)
    if node is None or node.status not in (JOINING, LEAVING):
        return []
    out = []
    for start, end, now, later in topology.moving_ranges(node.datacenter, node.rack):
        if (later.name if node.status == JOINING else now.name) == name:
            out.append(Move(start, end, now.name, later.name))
    return out


def busy_rack(entries: Sequence, me) -> Optional[str]:
    """
    Why node ``me`` (a gossip `Entry`) may not start a move in its rack
    now, or None.  One move per rack at a time: another node of the rack
    JOINING with tokens, or LEAVING, comes first; of two that started at
    once, the one with the older (generation, name) goes on.
    """
    for other in entries:
        if other.name == me.name or (other.datacenter, other.rack) != (me.datacenter, me.rack):
            continue
        moving = other.status == LEAVING or (other.status == JOINING and other.tokens)
        if not moving:
            continue
        mine_first = (me.status in (JOINING, LEAVING) and bool(me.tokens)
                      and (me.generation, me.name) < (other.generation, other.name))
        if not mine_first:
            return "%s is %s in %s/%s" % (other.name, other.status, other.datacenter, other.rack)
    return None


def auto_tokens(tokens: Sequence[int], count: int = 1) -> Tuple[int, ...]:
    """
    ``count`` new tokens for a rack whose tokens are ``tokens``: each in the
    middle of the largest range left (Cassandra's and Riak's way of splitting
    the busiest share without moving anything else).
    """
    taken = sorted(set(tokens))
    chosen: List[int] = []
    for _ in range(count):
        if not taken:
            pick = MAX_TOKEN // 2
        else:
            best, pick = -1, 0
            for i, token in enumerate(taken):
                previous = taken[i - 1] if i else taken[-1] - RING_SIZE
                size = token - previous
                if size > best:
                    best, pick = size, (previous + size // 2) % RING_SIZE
        if pick in taken:
            break
        chosen.append(pick)
        taken = sorted(taken + [pick])
    return tuple(sorted(chosen))


def kept_ranges(topology, name: str) -> List[Tuple[int, int]]:
    """
    The inclusive hash ranges node ``name`` holds data for: what its rack's
    current ring gives it, and what the future one will (a move under way
    keeps both).  Its keys outside them are left over from a move, and are
    dropped (`dynomite.scaleout.manager`).
    """
    node = topology.node(name)
    if node is None:
        return []
    out = []
    for ring in (topology.ring(node.datacenter, node.rack), topology.future_ring(node.datacenter, node.rack)):
        out.extend((start, end) for start, end, owner in ring.ranges() if owner.name == name)
    return sorted(set(out))
