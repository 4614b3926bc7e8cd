# -*- test-case-name: tests.unit.test_forwarded -*-
"""
Forwarded once: a FORWARD an entry node has applied is not applied again
when its sender replays it.

A node sends its writes to another datacenter through an outbox
(`dynomite.replication.outbox`) that numbers them, as it numbers those
for a Redis: a run of ``k`` writes takes ``k`` numbers, which only grow.
When the FORWARD's answer does not come in time (a slow WAN, a lost
connection), the sender keeps the writes as hints and sends each again,
flagged as a replay, though the entry node may have applied them
meanwhile: INCR, LPUSH, APPEND would then count twice in that datacenter.

So the entry node remembers, per sender, the numbers of the writes it
has applied in every rack (or holds as hints there) and those it is
applying now.  A replay of a write applied is answered at once without
being applied; a replay of a write still being applied waits for it and
gets its outcome; any other write is applied.  The sender keeps sending
to the same entry node while it is up (`Topology.entry_candidates`), so
this covers a FORWARD whose answer was lost or late.  What it does not
cover, said in README: an entry node that restarted or was replaced
between the write and its replay (the memory is this process's), and a
write whose leader in this datacenter was lost after the write left for
it (`dynomite.node.leader.UNKNOWN_OUTCOME`: the entry does not know
either, and the write fails so that the sender tries again).

Memory is bounded: per sender at most `MAX_RANGES` ranges of numbers
(consecutive numbers merge into one; the oldest ranges are forgotten
first), each a few dozen bytes.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Dict, List, Sequence

__all__ = ["ForwardedOnce", "MAX_RANGES", "APPLIED", "WAITING", "NEW"]

#: Ranges of applied numbers remembered per sender.
MAX_RANGES = 4096

#: What `ForwardedOnce.classify` says of a write.
APPLIED, WAITING, NEW = "applied", "waiting", "new"


class _Flight:
    """The sinks of replays waiting for writes being applied."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting: List = []


class ForwardedOnce:
    """Per sender (a node's name): forwarded writes applied, and being applied."""

    def __init__(self, max_ranges: int = MAX_RANGES) -> None:
        self._max_ranges = max_ranges
        # sender -> sorted starts and ends of disjoint ranges [start, end)
        self._starts: Dict[str, List[int]] = {}
        self._ends: Dict[str, List[int]] = {}
        # sender -> number -> the flight of that write
        self._flying: Dict[str, Dict[int, _Flight]] = {}
        # sender -> the highest number sent on to be applied (numbers only grow)
        self._highest: Dict[str, int] = {}
        #: replays answered without being applied, and replays that waited for a write in flight
        self.skipped = 0
        self.waited = 0

    def all_new(self, sender: str, first: int) -> bool:
        """Whether no write of ``sender`` numbered ``first`` or above was applied or is being applied."""
        return first > self._highest.get(sender, -1)

    def classify(self, sender: str, number: int) -> str:
        """`APPLIED`, `WAITING` (being applied) or `NEW`."""
        starts = self._starts.get(sender)
        if starts:
            i = bisect_right(starts, number) - 1
            if i >= 0 and number < self._ends[sender][i]:
                return APPLIED
        flying = self._flying.get(sender)
        if flying and number in flying:
            return WAITING
        return NEW

    def wait(self, sender: str, number: int, sink) -> None:
        """``sink`` gets the outcome of write ``number``, being applied now."""
        self.waited += 1
        self._flying[sender][number].waiting.append(sink)

    def sending(self, sender: str, numbers: Sequence[int]) -> None:
        """Writes ``numbers`` of ``sender`` are being applied."""
        flying = self._flying.setdefault(sender, {})
        for number in numbers:
            flying.setdefault(number, _Flight())
        if numbers and max(numbers) > self._highest.get(sender, -1):
            self._highest[sender] = max(numbers)

    def applied(self, sender: str, numbers: Sequence[int], raw: bytes) -> None:
        """Writes ``numbers`` were applied (``raw``: the answer, for the replays waiting)."""
        for number in numbers:
            self._note(sender, number)
        self._land(sender, numbers, True, raw)

    def failed(self, sender: str, numbers: Sequence[int], raw: bytes) -> None:
        """Writes ``numbers`` could not be applied: the replays waiting fail too (the sender tries again)."""
        self._land(sender, numbers, False, raw)

    def _land(self, sender: str, numbers: Sequence[int], ok: bool, raw: bytes) -> None:
        flying = self._flying.get(sender)
        if not flying:
            return
        for number in numbers:
            flight = flying.pop(number, None)
            if flight is not None:
                for sink in flight.waiting:
                    if ok:
                        sink.complete(raw)
                    else:
                        sink.fail(raw)
        if not flying:
            del self._flying[sender]

    def _note(self, sender: str, number: int) -> None:
        starts = self._starts.setdefault(sender, [])
        ends = self._ends.setdefault(sender, [])
        i = bisect_right(starts, number) - 1
        if i >= 0 and number < ends[i]:
            return
        joins_left = i >= 0 and ends[i] == number
        joins_right = i + 1 < len(starts) and starts[i + 1] == number + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = number + 1
        elif joins_right:
            starts[i + 1] = number
        else:
            starts.insert(i + 1, number)
            ends.insert(i + 1, number + 1)
            if len(starts) > self._max_ranges:
                del starts[0], ends[0]

    def ranges(self, sender: str) -> List[List[int]]:
        """The ranges [start, end) of ``sender``'s writes applied (for tests and /info)."""
        return [[s, e] for s, e in zip(self._starts.get(sender, []), self._ends.get(sender, []))]
