# -*- test-case-name: tests.cluster.test_runs -*-
"""
Runs: pipelined requests that travel together.

A pipelining client (redis-benchmark -P 16, a redis-py pipeline) sends
many requests in one read.  Consecutive requests of one command whose keys
have the same replicas form a *run*: the client's own bytes for them are
forwarded in one piece to each replica (one Redis request, one peer frame,
one outbox entry), and the replies come back joined, in one piece, to one
reply slot.  A run of ``count`` requests therefore costs the proxy about
what one request costs, and the replicas see exactly the requests a
client sent, in its order.

Everything that waits for a run's replies gets either ``complete(joined)``
-- exactly ``count`` whole replies, one per request -- or ``fail(raw)``:
one node-made error that stands for every request of the run (the replica
was unreachable, timed out, or the run was hinted).  The client's
`dynomite.node.client.ReplySlot` repeats such an error once per request.

`RunReconciler` applies a consistency level to a run.  Replicas normally
agree on the whole run, byte for byte, and the run is decided by comparing
joined replies; as soon as they do not (one replica answered differently,
or failed), each replica's joined reply is split into its requests'
replies, and every request is reconciled on its own, by a
`dynomite.consistency.quorum.Reconciler` fed the same replies in the same order, so the
outcome is what the requests would have got one by one.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from dynomite.consistency.quorum import DC_ONE, Reconciler, ReplicaSink, quorum
from dynomite.wire.replies import replies_of

__all__ = ["RunReconciler"]


class RunReconciler:
    """
    Reconcile ``total`` replicas' replies to a run of ``count`` requests at
    ``level``; ``done(joined)`` is called once with the client's ``count``
    replies, joined.

    ``normalise`` is the command's reply normaliser (unordered replies),
    ``tally`` an ``[answered, failed]`` pair counting every replica's
    requests (late ones included), and ``settle(raw)`` maps each request's
    reconciled reply when requests are decided one by one (hinted failures
    into plain words, quorum failures counted).
    """

    def __init__(
        self,
        level: str,
        total: int,
        count: int,
        done: Callable[[bytes], None],
        normalise: Optional[Callable[[bytes], object]] = None,
        tally: Optional[List[int]] = None,
        settle: Optional[Callable[[bytes], bytes]] = None,
    ) -> None:
        self.level = level
        self.total = total
        self.count = count
        self.needed = 1 if level == DC_ONE else quorum(total)
        self._done = done
        self._normalise = normalise
        self._tally = tally
        self._settle = settle
        self._agree: Dict[bytes, int] = {}
        self._seen: List[Tuple[bool, bytes]] = []   # (answered, raw) per replica, in order
        self._split: Optional[List[Reconciler]] = None
        self._replies: List[Optional[bytes]] = []
        self._left = 0
        self.finished = False

    def replica(self) -> ReplicaSink:
        """A sink for one replica's replies to the run."""
        return ReplicaSink(self)

    def answer(self, joined: bytes) -> None:
        if self._tally is not None:
            self._tally[0] += self.count
        if self.finished:
            return
        if self._split is not None:
            self._feed(True, joined)
            return
        agree = self._agree
        n = agree[joined] = agree.get(joined, 0) + 1
        self._seen.append((True, joined))
        if n >= self.needed:
            self._finish(joined)
        elif len(agree) > 1:
            self._go_split()

    def failure(self, raw: bytes) -> None:
        if self._tally is not None:
            self._tally[1] += self.count
        if self.finished:
            return
        if self._split is not None:
            self._feed(False, raw)
            return
        self._seen.append((False, raw))
        self._go_split()

    # -- request by request ----------------------------------------------------

    def _go_split(self) -> None:
        count = self.count
        self._replies = [None] * count
        self._left = count
        self._split = [
            Reconciler(self.level, self.total, self._request_done(i), self._normalise)
            for i in range(count)
        ]
        seen, self._seen = self._seen, []
        for answered, raw in seen:
            if self.finished:
                break
            self._feed(answered, raw)

    def _feed(self, answered: bool, raw: bytes) -> None:
        split = self._split
        assert split is not None
        if answered:
            replies, wrong = replies_of(raw, self.count)
            if wrong is not None:
                answered, raw = False, wrong
        for i, reconciler in enumerate(split):
            if not reconciler.finished:
                if answered:
                    reconciler.answer(replies[i])
                else:
                    reconciler.failure(raw)

    def _request_done(self, index: int) -> Callable[[bytes], None]:
        def done(raw: bytes) -> None:
            self._replies[index] = raw if self._settle is None else self._settle(raw)
            self._left -= 1
            if self._left == 0:
                self._finish(b"".join(self._replies))  # type: ignore[arg-type]

        return done

    def _finish(self, joined: bytes) -> None:
        self.finished = True
        self._split = None
        self._done(joined)
