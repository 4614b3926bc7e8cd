# -*- test-case-name: tests.unit.test_quorum -*-
"""
Consistency levels and reconciliation of replica replies.

A `Reconciler` waits for the replies of the replicas one request went to
and decides what the client sees.  Replies are compared as raw RESP bytes,
optionally through a normaliser (unordered collections such as SMEMBERS may
legitimately come back in different orders from different replicas).  A
*failure* (replica unreachable or too slow) is a missing replica, not an
answer; a Redis error reply (WRONGTYPE, ...) is an answer like any other.

| level          | done when                                  | if it cannot be done                 |
|----------------|--------------------------------------------|--------------------------------------|
| DC_ONE         | the first answer                           | the last failure                     |
| DC_QUORUM      | a group of identical answers reaches       | with >= quorum answers but no group  |
|                | quorum, or all are in: the first answer of | of quorum size: the largest group's  |
|                | the largest group                          | first answer; else -ERR              |
| DC_SAFE_QUORUM | a group of identical answers reaches quorum| -ERR naming the largest agreement    |

quorum = floor(R/2) + 1 for R replicas, with no cap on R (Dynomite caps R
at 3).  DC_EACH_SAFE_QUORUM is a safe quorum in every datacenter, and the
datacenters must agree with each other (`EachQuorum`).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from dynomite.config.vocabulary import DC_EACH_SAFE_QUORUM, DC_ONE, DC_QUORUM, DC_SAFE_QUORUM


def quorum(replicas: int) -> int:
    """The number of replicas that make a majority."""
    return replicas // 2 + 1


def _error(text: str) -> bytes:
    return ("-ERR %s\r\n" % text).encode("utf-8")


class ReplicaSink:
    """
    The sink one replica's reply goes to: ``answer`` or ``failure`` of its
    reconciler (a `Reconciler`, or a `dynomite.consistency.runs.RunReconciler`).
    """

    __slots__ = ("_reconciler",)

    def __init__(self, reconciler) -> None:
        self._reconciler = reconciler

    def complete(self, raw: bytes) -> None:
        self._reconciler.answer(raw)

    def fail(self, raw: bytes) -> None:
        self._reconciler.failure(raw)

    #: A write held as a hint is not an acknowledgement: it counts as a failure.
    hinted = fail


class Reconciler:
    """
    Reconcile ``total`` replica replies at ``level``; ``done(raw)`` is
    called exactly once with the client's reply.

    ``label`` names the level in error replies (``DC_QUORUM`` or, inside an
    each-quorum, ``DC_EACH_SAFE_QUORUM in dc2``).  ``normalise`` maps a raw
    reply to the value replies are compared by.  ``tally``, an
    ``[answered, failed]`` pair, counts every replica's outcome, late ones
    included (replication metrics).  ``settle`` maps the decided reply before
    ``done`` gets it.
    """

    def __init__(
        self,
        level: str,
        total: int,
        done: Callable[[bytes], None],
        normalise: Optional[Callable[[bytes], object]] = None,
        label: Optional[str] = None,
        tally: Optional[List[int]] = None,
        settle: Optional[Callable[[bytes], bytes]] = None,
    ) -> None:
        self.level = level
        self._tally = tally
        self._translate = settle
        self.total = total
        self.needed = 1 if level == DC_ONE else quorum(total)
        self._done = done
        self._normalise = normalise
        self._label = label or level
        self._groups: Dict[object, List[bytes]] = {}
        self._answers = 0
        self._failures: List[bytes] = []
        self.finished = False

    def replica(self) -> ReplicaSink:
        """A sink for one replica's reply."""
        return ReplicaSink(self)

    @property
    def _pending(self) -> int:
        return self.total - self._answers - len(self._failures)

    def answer(self, raw: bytes) -> None:
        if self._tally is not None:
            self._tally[0] += 1
        if self.finished:
            return
        self._answers += 1
        key = raw if self._normalise is None else self._normalise(raw)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = [raw]
        else:
            group.append(raw)
        if len(group) >= self.needed:
            self._finish(group[0])
        elif self._pending == 0:
            self._settle()

    def failure(self, raw: bytes) -> None:
        if self._tally is not None:
            self._tally[1] += 1
        if self.finished:
            return
        self._failures.append(raw)
        if self._pending == 0:
            self._settle()
        elif self.level != DC_QUORUM and self._largest() + self._pending < self.needed:
            self._settle()
        elif self.level == DC_QUORUM and self._answers + self._pending < self.needed:
            self._settle()

    def _largest(self) -> int:
        return max((len(g) for g in self._groups.values()), default=0)

    def _settle(self) -> None:
        """No group reached quorum and no further reply can make one."""
        if self.level == DC_ONE and self.total == 1:
            self._finish(self._failures[-1])
        elif self.level == DC_ONE:
            self._finish(_error("%s: none of %d replicas answered%s" % (self._label, self.total, self._why())))
        elif self.level == DC_QUORUM and self._answers >= self.needed:
            # dicts keep insertion order: ties go to the group formed first
            largest = max(self._groups.values(), key=len)
            self._finish(largest[0])
        elif self.level == DC_QUORUM:
            self._finish(
                _error(
                    "%s: %d of %d replicas answered, %d needed%s"
                    % (self._label, self._answers, self.total, self.needed, self._why())
                )
            )
        else:
            self._finish(
                _error(
                    "%s: at most %d of %d replicas agreed, %d needed%s"
                    % (self._label, self._largest(), self.total, self.needed, self._why())
                )
            )

    def _why(self) -> str:
        if not self._failures:
            return ""
        first = self._failures[0].rstrip(b"\r\n").lstrip(b"-")
        if first.startswith(b"HINTED "):
            first = first[len(b"HINTED "):] + b", to be applied when it returns"
        return " (%s)" % first.decode("utf-8", "replace")

    def _finish(self, raw: bytes) -> None:
        self.finished = True
        self._done(raw if self._translate is None else self._translate(raw))


class ReadTargetFirst(Reconciler):
    """
    A DC_ONE write at its leader (`dynomite.node.leader`): the client gets
    the reply of the replica it reads from at DC_ONE (its own rack's), so
    a read after the acknowledgement sees the write; if that replica cannot
    answer, the first other answer; if none can, ``sink.fail`` with the
    error a DC_ONE `Reconciler` gives.  ``replica(True)`` is that
    replica's sink (at most one).
    """

    def __init__(self, total: int, sink, tally: Optional[List[int]] = None,
                 settle: Optional[Callable[[bytes], bytes]] = None) -> None:
        Reconciler.__init__(self, DC_ONE, total, sink.complete, tally=tally, settle=settle)
        self._fail = sink.fail
        self._waiting_for_target = False
        self._first_other: Optional[bytes] = None

    def _settle(self) -> None:
        """No replica answered: ``sink.fail`` (one error standing for every request of a run)."""
        self._done = self._fail
        Reconciler._settle(self)

    def replica(self, read_target: bool = False) -> ReplicaSink:   # type: ignore[override]
        if read_target:
            self._waiting_for_target = True
            return _ReadTargetSink(self)
        return ReplicaSink(self)

    def answer(self, raw: bytes) -> None:
        if self._waiting_for_target and not self.finished:
            if self._tally is not None:
                self._tally[0] += 1
            self._answers += 1
            if self._first_other is None:
                self._first_other = raw
            if self._pending == 0:
                self._finish(self._first_other)
            return
        Reconciler.answer(self, raw)

    def target_answer(self, raw: bytes) -> None:
        self._waiting_for_target = False
        Reconciler.answer(self, raw)

    def target_failure(self, raw: bytes) -> None:
        self._waiting_for_target = False
        if self._first_other is not None and not self.finished:
            if self._tally is not None:
                self._tally[1] += 1
            self._failures.append(raw)
            self._finish(self._first_other)
            return
        Reconciler.failure(self, raw)


class _ReadTargetSink:
    """The sink of the replica a `ReadTargetFirst` waits for."""

    __slots__ = ("_reconciler",)

    def __init__(self, reconciler: ReadTargetFirst) -> None:
        self._reconciler = reconciler

    def complete(self, raw: bytes) -> None:
        self._reconciler.target_answer(raw)

    def fail(self, raw: bytes) -> None:
        self._reconciler.target_failure(raw)

    hinted = fail


class EachQuorum:
    """
    DC_EACH_SAFE_QUORUM: a safe quorum in every datacenter, and the
    datacenters' agreed replies must be identical.
    """

    def __init__(
        self,
        replicas_per_dc: Dict[str, int],
        done: Callable[[bytes], None],
        normalise: Optional[Callable[[bytes], object]] = None,
    ) -> None:
        self._done = done
        self._normalise = normalise
        self._results: Dict[str, bytes] = {}
        self._expected = len(replicas_per_dc)
        self.finished = False
        self._dcs = {
            dc: Reconciler(
                DC_SAFE_QUORUM,
                n,
                self._dc_done(dc),
                normalise,
                label="%s in %s" % (DC_EACH_SAFE_QUORUM, dc),
            )
            for dc, n in replicas_per_dc.items()
        }

    def replica(self, dc: str) -> ReplicaSink:
        return self._dcs[dc].replica()

    def _dc_done(self, dc: str) -> Callable[[bytes], None]:
        def done(raw: bytes) -> None:
            if self.finished:
                return
            if raw.startswith(b"-ERR " + DC_EACH_SAFE_QUORUM.encode()):
                self.finished = True
                self._done(raw)
                return
            self._results[dc] = raw
            if len(self._results) == self._expected:
                self._compare()

        return done

    def _compare(self) -> None:
        self.finished = True
        values = list(self._results.values())
        norm = self._normalise or (lambda raw: raw)
        first = norm(values[0])
        if all(norm(v) == first for v in values[1:]):
            self._done(values[0])
        else:
            self._done(
                _error(
                    "%s: datacenters disagree (%s)"
                    % (DC_EACH_SAFE_QUORUM, ", ".join(sorted(self._results)))
                )
            )
