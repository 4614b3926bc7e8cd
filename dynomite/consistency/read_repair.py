# -*- test-case-name: tests.unit.test_read_repair -*-
"""
Read repair's eyes: every replica's answer to one quorum read.

A `Reconciler` stops listening once it has decided; read repair needs
every answer, late ones included.  `Disagreement` sits between each
replica and the reconciler's sink: it passes every reply on unchanged and,
once all replicas have answered (failures do not count as answers), calls
``on_differ()`` if the answers were not all the same (compared through the
command's normaliser, as the reconciler compares them).  What is repaired,
and how, is `dynomite.repair.manager.Repairs.read_repair`'s business.
"""

from __future__ import annotations

from typing import Callable, Optional, Set

__all__ = ["Disagreement"]


class _Tee:
    __slots__ = ("_inner", "_watch")

    def __init__(self, inner, watch: "Disagreement") -> None:
        self._inner = inner
        self._watch = watch

    def complete(self, raw: bytes) -> None:
        self._watch.answered(raw)
        self._inner.complete(raw)

    def fail(self, raw: bytes) -> None:
        self._watch.failed()
        self._inner.fail(raw)


class Disagreement:
    """See the module docstring."""

    __slots__ = ("_left", "_seen", "_normalise", "_on_differ")

    def __init__(self, total: int, on_differ: Callable[[], None],
                 normalise: Optional[Callable[[bytes], object]] = None) -> None:
        self._left = total
        self._seen: Set[object] = set()
        self._normalise = normalise
        self._on_differ = on_differ

    def watch(self, sink) -> _Tee:
        """``sink`` (a reconciler's replica sink), with this watching what it is told."""
        return _Tee(sink, self)

    def answered(self, raw: bytes) -> None:
        self._seen.add(raw if self._normalise is None else self._normalise(raw))
        self._one_less()

    def failed(self) -> None:
        self._one_less()

    def _one_less(self) -> None:
        self._left -= 1
        if self._left == 0 and len(self._seen) > 1:
            self._on_differ()
