# -*- test-case-name: tests.unit.test_lww -*-
"""
A hybrid logical clock: versions that follow the wall clock and never go
backwards (Kulkarni et al., "Logical Physical Clocks", 2014).

A version is ``<wall ms, 13 digits><counter, 6 digits>@<node>``: byte
order is time order (the node's name breaks a tie), in Python and in Lua
alike.  Stamping takes the later of the wall clock and the last version
stamped or seen, and counts up within a millisecond.  Seeing a version
from another node moves this clock up to it, unless it is more than
`MAX_AHEAD_MS` ahead of this node's wall clock: a peer whose clock runs
that far ahead would make its writes win for that long whatever anyone
else writes, so it is refused (and its sender tries again later, when it
is no longer ahead).
"""

from __future__ import annotations

from typing import Callable, List, Optional

__all__ = ["HybridClock", "MAX_AHEAD_MS", "version_ms"]

#: How far ahead of this node's wall clock a version may be.
MAX_AHEAD_MS = 500

_COUNTER_DIGITS = 6
_MAX_COUNTER = 10 ** _COUNTER_DIGITS - 1


def version_ms(version: bytes) -> Optional[int]:
    """The wall milliseconds of a version, or None if it is not one."""
    head = version[:13]
    if len(head) != 13 or not head.isdigit():
        return None
    return int(head)


class HybridClock:
    """This node's versions; ``wall_ms()`` is the wall clock in milliseconds."""

    def __init__(self, node: str, wall_ms: Callable[[], int]) -> None:
        self._node = node.encode()
        self._wall_ms = wall_ms
        self._ms = 0
        self._counter = 0
        #: versions refused for being too far ahead (`observe`)
        self.refused = 0

    def stamp(self, count: int = 1) -> List[bytes]:
        """``count`` new versions, each later than anything stamped or seen before."""
        now = self._wall_ms()
        if now > self._ms:
            self._ms, self._counter = now, 0
        out = []
        for _ in range(count):
            self._counter += 1
            if self._counter > _MAX_COUNTER:
                self._ms, self._counter = self._ms + 1, 1
            out.append(b"%013d%06d@%s" % (self._ms, self._counter, self._node))
        return out

    def ahead_ms(self, version: bytes) -> int:
        """How far ``version`` is ahead of this node's wall clock (<= 0: not ahead)."""
        ms = version_ms(version)
        return 0 if ms is None else ms - self._wall_ms()

    def observe(self, version: bytes) -> bool:
        """Move this clock up to ``version``; False (and counted) if it is too far ahead."""
        ms = version_ms(version)
        if ms is None:
            return True
        if ms - self._wall_ms() > MAX_AHEAD_MS:
            self.refused += 1
            return False
        counter = version[13:13 + _COUNTER_DIGITS]
        count = int(counter) if counter.isdigit() else 0
        if (ms, count) > (self._ms, self._counter):
            self._ms, self._counter = ms, count
        return True
