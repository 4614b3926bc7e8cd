# -*- test-case-name: tests.unit.test_scaleout -*-
"""
The sinks of writes to a moving range's pending replicas
(`dynomite.placement.topology.Topology.pending`), for the leader
(`dynomite.node.leader`): the client's answer that waits for them, their
own answers, and a copy's answer.
"""

from __future__ import annotations

__all__ = ["WithPending", "Unwaited", "Counted"]


class WithPending:
    """
    A write's answer while its range moves: given to the client once the
    replicas decided it (the sink of the level's reconciler) and every
    pending replica answered (any answer: a pending replica serves no reads,
    and a copy will replace what a write did there before it).
    """

    __slots__ = ("_sink", "_left", "_outcome")

    def __init__(self, sink, pending: int) -> None:
        self._sink = sink
        self._left = pending + 1
        self._outcome = None

    def _one(self) -> None:
        self._left -= 1
        if self._left == 0:
            method, raw = self._outcome
            getattr(self._sink, method)(raw)

    def complete(self, raw: bytes) -> None:
        self._outcome = ("complete", raw)
        self._one()

    def fail(self, raw: bytes) -> None:
        self._outcome = ("fail", raw)
        self._one()

    def hinted(self, raw: bytes) -> None:
        self._outcome = ("hinted", raw)
        self._one()

    def part(self) -> "_PendingAnswer":
        return _PendingAnswer(self)


class _PendingAnswer:
    """A pending replica's sink: whatever it answers, it has answered."""

    __slots__ = ("_waiting",)

    def __init__(self, waiting: WithPending) -> None:
        self._waiting = waiting

    def complete(self, raw: bytes) -> None:
        self._waiting._one()

    fail = hinted = complete


class Unwaited:
    """A delivery nobody waits for (an effect sent to a pending replica)."""

    __slots__ = ()

    def complete(self, raw: bytes) -> None:
        pass

    fail = hinted = complete


class Counted:
    """A copy's answer: how many keys it copied, once every pending replica has them."""

    __slots__ = ("_sink", "_count")

    def __init__(self, sink, count: int) -> None:
        self._sink = sink
        self._count = count

    def complete(self, raw: bytes) -> None:
        self._sink.complete(b":%d\r\n" % self._count)

    def fail(self, raw: bytes) -> None:
        self._sink.fail(raw)
