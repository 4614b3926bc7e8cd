# -*- test-case-name: tests.unit.test_outbox -*-
"""
Gathered: the sink of requests sent together.

Requests made during one batch (`dynomite.runtime.batching`: every client
read in one reactor turn) for the same place leave as one run: an
outbox's writes for one replica (`dynomite.replication.outbox`).
`GatheredRun` holds them until then; `GatheredRun.joined` makes them one
request, whose sink, `Gathered`, hands each submitter its own replies
back, cut from the joined ones by count, and repeats a failure (or a
hint) to each.  A run stops growing at `GATHERED_MAX_BYTES`; what comes
after starts another.  The coordinator gathers its clients' runs of
writes per leader the same way (`dynomite.node.gathering`).
"""

from __future__ import annotations

from typing import Any, List, Tuple

from dynomite.wire.inflight import Request
from dynomite.wire.replies import replies_of

__all__ = ["Gathered", "GatheredRun", "GATHERED_MAX_BYTES"]

#: Requests gathered for one place stop joining a run past this many bytes
#: (a run is one peer frame: `dynomite.wire.peer_frames.MAX_PAYLOAD` bounds
#: it; fifty clients' 64 MiB requests joined would pass that).
GATHERED_MAX_BYTES = 1 << 20


class Gathered:
    """The sink of writes sent together: each submitter gets its own replies."""

    __slots__ = ("parts",)

    def __init__(self, parts: List[Tuple[int, Any]]) -> None:
        self.parts = parts   # (count, sink) in the order sent

    def complete(self, raw: bytes) -> None:
        parts = self.parts
        replies, wrong = replies_of(raw, sum(count for count, _ in parts))
        if wrong is not None:
            self.fail(wrong)
            return
        i = 0
        for count, sink in parts:
            sink.complete(b"".join(replies[i:i + count]))
            i += count

    def fail(self, raw: bytes) -> None:
        for _, sink in self.parts:
            sink.fail(raw)

    def hinted(self, raw: bytes) -> None:
        for _, sink in self.parts:
            sink.hinted(raw)


class GatheredRun:
    """Requests for one place, in the order they came, to leave as one (`joined`)."""

    __slots__ = ("parts", "size")

    def __init__(self, request: Request, sink) -> None:
        self.parts: List[Tuple[Request, Any]] = [(request, sink)]
        self.size = len(request.payload)

    def fits(self, request: Request) -> bool:
        """Whether ``request`` may join without the run passing `GATHERED_MAX_BYTES`."""
        return self.size + len(request.payload) <= GATHERED_MAX_BYTES

    def add(self, request: Request, sink) -> None:
        self.parts.append((request, sink))
        self.size += len(request.payload)

    def joined(self) -> Tuple[Request, Any]:
        """(one request of every part's writes, in order; its sink): the part itself when alone."""
        parts = self.parts
        if len(parts) == 1:
            return parts[0]
        first = parts[0][0]
        return (Request(b"".join([r.payload for r, _ in parts]), first.resp, first.lane,
                        sum(r.count for r, _ in parts), True),
                Gathered([(r.count, s) for r, s in parts]))
