# -*- test-case-name: tests.cluster.test_inprocess_cluster -*-
"""
The replica side: requests other nodes send to this one.

A peer's REQUEST runs on this node's Redis as it came (a read, or a write
of the peer's client, possibly a run of them) and the reply goes back.  A
FORWARD is a write (or run of writes) from another datacenter, for which
this node is an entry node: it is applied to every rack of this datacenter,
through this node's own outboxes, cut into runs of the same replicas as a
client's pipeline is (`dynomite.placement.pipelines`), and acknowledged
once every rack applied it or holds it as a hint, so nothing is dropped
between datacenters.  A rack whose write could be neither fails the FORWARD;
the sender keeps it as a hint and sends it again.

The peer layer (`dynomite.peers.protocol`) decodes frames into `Request`
values and calls `Replica.handle_peer_request`.
"""

from __future__ import annotations

from typing import Dict, Optional

from zope.interface import implementer

from dynomite.commands import table as commands
from dynomite.config.vocabulary import DC_ONE
from dynomite.peers.interfaces import IPeerRequests
from dynomite.placement.pipelines import RunCutter
from dynomite.placement.router import Router
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import REQUEST
from dynomite.wire.requests import parse_whole
from dynomite.wire.resp import ProtocolError

__all__ = ["Replica"]


class _AppliedInEveryRack:
    """
    A FORWARDed write at its entry node: acknowledged once every rack of
    this DC applied it or holds it as a hint; failed if any rack could do
    neither.
    """

    __slots__ = ("_left", "_sink", "_first", "_error")

    def __init__(self, parts: int, sink) -> None:
        self._left = parts
        self._sink = sink
        self._first: Optional[bytes] = None
        self._error: Optional[bytes] = None

    def _done(self, raw: bytes, ok: bool) -> None:
        if ok:
            if self._first is None:
                self._first = raw
        elif self._error is None:
            self._error = raw
        self._left -= 1
        if self._left == 0:
            if self._error is not None:
                self._sink.fail(self._error)
            else:
                self._sink.complete(self._first or b"+OK\r\n")

    # one replica's write sink: every part is the same object, counted down

    def complete(self, raw: bytes) -> None:
        self._done(raw, True)

    def hinted(self, raw: bytes) -> None:
        self._done(b"+OK\r\n", True)

    def fail(self, raw: bytes) -> None:
        self._done(raw, False)


@implementer(IPeerRequests)
class Replica:
    """Serves the requests peers send; see the module docstring."""

    def __init__(self, router: Router, targets, outboxes: Dict[str, object]) -> None:
        self._router = router
        self._targets = targets
        self._outboxes = outboxes
        self._runs = RunCutter(router)
        # this node's Redis (its name never changes, whatever a reload does)
        self._run_here = targets[router.topology.local.name].send

    def handle_peer_request(self, peer_name: str, frame_type: int, request: Request, sink) -> None:
        """A REQUEST (run here) or FORWARD (apply to every rack of this DC)."""
        if frame_type == REQUEST:
            self._run_here(request, sink)
            return
        self._apply_forwarded(request, sink)

    def _apply_forwarded(self, request: Request, sink) -> None:
        payload = request.payload
        try:
            requests, bounds = parse_whole(payload)
        except ProtocolError:
            requests = []
        if len(requests) != request.count:
            sink.complete(b"-ERR forwarded payload is not %d whole commands\r\n" % request.count)
            return
        # each group of writes with the same replicas: (replicas, start, end, count)
        groups = []
        i, n = 0, len(requests)
        reads, writes = self._router.reads[DC_ONE], self._router.writes[DC_ONE]
        while i < n:
            runs, i = self._runs.cut(requests, bounds, i, reads, writes)
            for _cmd, plan, start, end, count in runs:
                groups.append((plan.local, start, end, count))
            if i < n:
                groups.append((self._replicas_of(requests[i]), bounds[2 * i], bounds[2 * i + 1], 1))
                i += 1
        applied = _AppliedInEveryRack(sum(len(g[0]) for g in groups), sink)
        outboxes = self._outboxes
        for replicas, start, end, count in groups:
            write = Request(payload[start:end], request.resp, request.lane, count, True)
            for node in replicas:
                outboxes[node.name].submit(write, applied)

    def _replicas_of(self, args):
        """This DC's replicas of a request that cannot be in a run (by its first key)."""
        cmd = commands.lookup(args[0])
        if cmd is not None:
            cmd = commands.resolve(cmd, args) or cmd
        keys = commands.keys(cmd, args) if cmd is not None else []
        return self._router.route(keys[0] if keys else b"", True, DC_ONE).local
