# -*- test-case-name: tests.unit.test_inflight -*-
"""
A request in flight: what every hop of the write and read paths carries.

A client's request (or a run of pipelined requests, `dynomite.consistency.runs`)
leaves the coordinator as one `Request` and travels unchanged to every
target: the local Redis, a peer node, a remote datacenter, and a hint log
when a target is away.  Each target frames it its own way (raw RESP to
Redis, a peer frame, a hint record); nothing between the coordinator and
the target re-encodes it.

The reply goes to a *sink* that travels beside the request, not inside it:
one request fans out to several replicas, each answering into its own sink.
A sink is any object with ``complete(raw)`` and ``fail(raw)``, each called
once per request with raw RESP bytes.

``lane`` says which ordered connection a request travels on: requests on one
lane reach their target in the order they were sent.  A read uses the
client session's id, a write its plan's lane (the writes of one key keep
their leader's order: `dynomite.node.leader`), a replica the peer's lane,
replayed hints `REPLAY_LANE`.
"""

from __future__ import annotations

from dynomite.wire.peer_frames import (
    FLAG_COPY, FLAG_EFFECT, FLAG_HANDOVER, FLAG_HERE_ONLY, FLAG_REDIRECTED, FLAG_REPLAY, FLAG_RESP3,
    FLAG_SEQUENCED, FLAG_TRANSACTION, FLAG_WATCH, FLAG_WRITE, LEVEL_MASK,
)

__all__ = ["Request", "REPLAY_LANE"]

#: The lane replayed hints travel on: one ordered stream per target.
REPLAY_LANE = 0

# Flags a request keeps from a frame or hint beside RESP3 and write.
_EXTRA = (LEVEL_MASK | FLAG_EFFECT | FLAG_SEQUENCED | FLAG_REPLAY | FLAG_TRANSACTION | FLAG_WATCH
          | FLAG_HERE_ONLY | FLAG_COPY | FLAG_REDIRECTED | FLAG_HANDOVER)


class Request:
    """
    ``payload``: raw RESP of ``count`` requests joined (the client's own bytes);
    ``resp``: the client's protocol version (2 or 3), so replies come back in
    it; ``write``: whether it changes data; ``lane``: see the module docstring;
    ``flags``: ``resp`` and ``write`` as peer-frame and hint-record flags,
    and ``extra`` flags (a LEAD's level and effect bits).
    A request is never changed once made (it is shared by every target).
    """

    __slots__ = ("payload", "resp", "lane", "count", "write", "flags")

    def __init__(self, payload: bytes, resp: int = 2, lane: int = 0, count: int = 1,
                 write: bool = False, extra: int = 0) -> None:
        self.payload = payload
        self.resp = resp
        self.lane = lane
        self.count = count
        self.write = write
        self.flags = (FLAG_RESP3 if resp == 3 else 0) | (FLAG_WRITE if write else 0) | extra

    @classmethod
    def from_flags(cls, flags: int, payload: bytes, lane: int, count: int = 1) -> "Request":
        """The request a peer frame or hint record with ``flags`` carries (its other bits kept)."""
        return cls(payload, 3 if flags & FLAG_RESP3 else 2, lane, count, bool(flags & FLAG_WRITE),
                   flags & _EXTRA)

    def __repr__(self) -> str:
        return "Request(%r, resp=%d, lane=%d, count=%d, write=%r)" % (
            self.payload[:40], self.resp, self.lane, self.count, self.write)
