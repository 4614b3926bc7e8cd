# -*- test-case-name: tests.unit.test_node -*-
"""
Sinks that more than one part of the node uses.

A *sink* is whoever waits for a reply: ``complete(raw)`` with the replica's
reply, ``fail(raw)`` with an error made by the node (see
`dynomite.datastore.protocol`).  `AnyOutcome` treats the two alike; `Gather` collects one
reply per part of a request that went to several places and hands them
over in part order; `Scatter` puts the replies to the parts of a run back
in the order the client sent the requests
(`dynomite.placement.pipelines.Part`).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

from dynomite.wire.replies import replies_of

__all__ = ["AnyOutcome", "Gather", "GatherPart", "Scatter"]


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




class Scatter:
    """
    The replies to a run cut in parts: each part's joined replies go back to
    their requests' places, and ``sink`` gets the whole run's replies,
    joined in the client's order, once every part answered.
    """

    __slots__ = ("_replies", "_left", "_sink")

    def __init__(self, count: int, parts: int, sink) -> None:
        self._replies: List[bytes] = [b""] * count
        self._left = parts
        self._sink = sink

    def part(self, positions: Sequence[int]) -> "ScatterPart":
        return ScatterPart(self, positions)

    def _place(self, positions: Sequence[int], raw: bytes, failed: bool) -> None:
        replies = self._replies
        n = len(positions)
        if failed:
            each = [raw] * n
        else:
            each, wrong = replies_of(raw, n)
            if wrong is not None:
                each = [wrong] * n
        for p, reply in zip(positions, each):
            replies[p] = reply
        self._left -= 1
        if self._left == 0:
            self._sink.complete(b"".join(replies))


class ScatterPart:
    """The sink of one part of a `Scatter`."""

    __slots__ = ("_scatter", "_positions")

    def __init__(self, scatter: Scatter, positions: Sequence[int]) -> None:
        self._scatter = scatter
        self._positions = positions

    def complete(self, raw: bytes) -> None:
        self._scatter._place(self._positions, raw, False)

    def fail(self, raw: bytes) -> None:
        self._scatter._place(self._positions, raw, True)
