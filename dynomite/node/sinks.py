# -*- test-case-name: tests.unit.test_node -*-
"""
Sinks that more than one part of the node uses.

A *sink* is whoever waits for a reply: ``complete(raw)`` with the replica's
reply, ``fail(raw)`` with an error made by the node (see
`dynomite.datastore.protocol`).  `AnyOutcome` treats the two alike; `Gather` collects one
reply per part of a request that went to several places and hands them
over in part order.
"""

from __future__ import annotations

from typing import Callable, List, Optional

__all__ = ["AnyOutcome", "Gather", "GatherPart"]


class AnyOutcome:
    """A sink that treats answers and failures alike: ``done(raw)`` either way."""

    __slots__ = ("complete", "fail")

    def __init__(self, done: Callable[[bytes], None]) -> None:
        self.complete = done
        self.fail = done


class Gather:
    """Collect one reply per part, then hand them over in part order."""

    __slots__ = ("_replies", "_left", "_done")

    def __init__(self, parts: int, done: Callable[[List[bytes]], None]) -> None:
        self._replies: List[Optional[bytes]] = [None] * parts
        self._left = parts
        self._done = done

    def part(self, index: int) -> "GatherPart":
        return GatherPart(self, index)

    def _set(self, index: int, raw: bytes) -> None:
        if self._replies[index] is None:
            self._replies[index] = raw
            self._left -= 1
            if self._left == 0:
                self._done(self._replies)  # type: ignore[arg-type]


class GatherPart:
    __slots__ = ("_gather", "_index")

    def __init__(self, gather: Gather, index: int) -> None:
        self._gather = gather
        self._index = index

    def complete(self, raw: bytes) -> None:
        self._gather._set(self._index, raw)

    fail = complete
