# -*- test-case-name: tests.unit.test_router -*-
"""
How replicas' replies are compared by quorum reads.

Replies are compared byte for byte, except those that list an unordered
collection: two replicas may hold the same members in different orders
(Redis's hashtable encoding uses a per-process seed), so their replies are
compared by their sorted members instead.
"""

from __future__ import annotations

from dynomite.wire.replies import elements

__all__ = ["UNORDERED_REPLIES", "unordered", "hgetall_unordered", "normaliser"]

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
