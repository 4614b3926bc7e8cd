# -*- test-case-name: tests.unit.test_outbox -*-
"""
Outboxes: one ordered queue of writes per target (this node's Redis, a peer
node, or a remote datacenter: `dynomite.replication.targets`), backed by a
durable `HintLog`.

While the target is up and nothing is waiting for it, a write goes straight
out and the caller's sink gets the replica's reply.  Otherwise the write is
appended to the hint log and the caller is told it was *hinted*; the log is
replayed in order, throttled, once the target is back.  New writes join the
back of a non-empty backlog, so the target sees one coordinator's writes in
the order the coordinator accepted them.  A write whose fate is unknown
(timed out, connection lost) is hinted and replayed, though the target may
have applied it: an outbox (``sequenced``) numbers its writes so that
the replay is applied once, by a Redis (`dynomite.replication.applied_once`)
or by another datacenter's entry node (`dynomite.node.forwarded`, which
remembers what it applied while it runs).

States and what moves between them (`_TRANSITIONS`)::

    DIRECT    --down/failed--> BACKLOG    copy direct writes still in flight
    DIRECT    --pause------->  PAUSED       into the log first ("spill")
    BACKLOG   --up---------->  REPLAYING  (target up, hints pending, retry time reached)
    BACKLOG   --drained----->  DIRECT     (target up, nothing pending)
    REPLAYING --drained----->  DIRECT     (log empty, no replayed hint in flight)
    REPLAYING --down-------->  BACKLOG
    REPLAYING --failed------>  BACKLOG    (a replayed hint failed: retry after a back-off)
    BACKLOG/REPLAYING --pause--> PAUSED   (everything is hinted, nothing delivered)
    PAUSED    --resume------>  BACKLOG

The spill on leaving DIRECT keeps the order: direct writes not yet
answered (and any answered out of order after one that is not) are copied
to the log in the order they were sent, ahead of the write that caused the
change, so whatever the target saw of them, the replay ends with every
write in acceptance order and the last write to a key wins as it should.
Their callers still get the real reply when it comes (a success makes the
copy a harmless duplicate; a failure is reported as hinted).  Replay acks
only an unbroken prefix and restarts after the last one, for the same reason.

How a caller learns its write was hinted: a write sink has three methods,
and each submitted write ends in exactly one call on its sink:
``complete(raw)`` (the target's reply), ``hinted(raw)`` with ``raw`` an
error reply starting with `HINTED` and ending with the target's last
failure, e.g. ``-HINTED write for 10.0.0.2:8101 stored as a hint (peer
10.0.0.2:8101 timed out after 5200 ms)`` (stored; a hinted write is not an
acknowledgement, so a quorum counts it as a missing replica, as Cassandra
does), or ``fail(raw)`` with any other error (the target failed and the
hint could not be stored: log full or disk failing).

The owner calls `start` once (it opens the hint log: a node restarted
with hints replays them), `tick` often (a `TimerService` every 10-100 ms),
`wake` when the target comes up, and `stop` at the end.  The target
(`ITarget.send`) must keep the order of the requests it is given on one
lane (`dynomite.wire.inflight`) and must end every request in
``sink.complete`` or ``sink.fail`` (peer links time out); a run's
``count`` writes come back as joined replies.  A direct write goes out on
its caller's lane (its plan's, `dynomite.node.leader`, so the writes of one
key keep their order); replayed hints all go on `REPLAY_LANE`, one ordered
stream.  So with one connection per target (the default) the target sees
every write in acceptance order; with several, in acceptance order per
plan.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Optional, Set, Tuple

from twisted.logger import Logger

from dynomite.replication.hints import HintLog
from dynomite.runtime import machine
from dynomite.replication.gathered import GatheredRun
from dynomite.runtime.batching import defer
from dynomite.wire.inflight import REPLAY_LANE, Request
from dynomite.wire.peer_frames import (
    FLAG_REPLAY, FLAG_SEQUENCED, FLAG_TRANSACTION, payload_sequence, sequenced_payload,
)
from dynomite.wire.requests import split_commands

__all__ = ["DIRECT", "BACKLOG", "REPLAYING", "PAUSED", "HINTED", "Outbox", "is_hinted"]

DIRECT = "DIRECT"
BACKLOG = "BACKLOG"
REPLAYING = "REPLAYING"
PAUSED = "PAUSED"

#: (state, event) -> (next state, action).  Events not listed are ignored.
_TRANSITIONS: Dict[Tuple[str, str], Tuple[str, Optional[str]]] = {
    (DIRECT, "down"): (BACKLOG, "_spill"),
    (DIRECT, "failed"): (BACKLOG, "_spill_and_back_off"),
    (DIRECT, "pause"): (PAUSED, "_spill"),
    (BACKLOG, "up"): (REPLAYING, "_start_replay"),
    (BACKLOG, "drained"): (DIRECT, None),
    (BACKLOG, "pause"): (PAUSED, None),
    (REPLAYING, "drained"): (DIRECT, "_drained"),
    (REPLAYING, "down"): (BACKLOG, "_stop_replay"),
    (REPLAYING, "failed"): (BACKLOG, "_back_off"),
    (REPLAYING, "pause"): (PAUSED, "_stop_replay"),
    (PAUSED, "resume"): (BACKLOG, None),
}

#: How the reply a sink's ``hinted`` gets for a hinted write starts.
HINTED = b"-HINTED "

DEFAULT_IN_FLIGHT = 100
BURST_SECONDS = 0.1     # the token bucket holds this much of the replay rate
PEEK_BATCH = 256
RETRY_MIN = 0.5         # seconds before replaying again after a failure, doubling ...
RETRY_MAX = 10.0        # ... up to this


def _count(hint) -> int:
    """How many writes a hint holds: one, or a whole transaction's."""
    if not hint.flags & FLAG_TRANSACTION:
        return 1
    payload = hint.payload[8:] if hint.flags & FLAG_SEQUENCED else hint.payload
    return len(split_commands(payload))


def is_hinted(raw: bytes) -> bool:
    """Whether a failure reply means "stored as a hint" rather than lost."""
    return raw.startswith(HINTED)


def _reason(raw: bytes) -> bytes:
    """A failure reply as the reason part of a hinted reply."""
    text = raw.strip().lstrip(b"-")
    if text.startswith(b"ERR "):
        text = text[4:]
    return text.replace(b"\r", b" ").replace(b"\n", b" ")[:200] or b"unavailable"


class _Direct:
    """
    Sink of a write (or a run of writes) sent straight to the target;
    remembers it in case it must be hinted.
    """

    __slots__ = ("outbox", "request", "sink", "stored", "done")

    def __init__(self, outbox: "Outbox", request: Request, sink: Any) -> None:
        self.outbox = outbox
        self.request = request
        self.sink = sink
        self.stored = False
        self.done = False

    def complete(self, raw: bytes) -> None:
        self.outbox._direct_done(self, raw, True)

    def fail(self, raw: bytes) -> None:
        self.outbox._direct_done(self, raw, False)


class _Replayed:
    """Sink of one replayed hint."""

    __slots__ = ("outbox", "epoch", "seq")

    def __init__(self, outbox: "Outbox", epoch: int, seq: int) -> None:
        self.outbox = outbox
        self.epoch = epoch
        self.seq = seq

    def complete(self, raw: bytes) -> None:
        self.outbox._replayed(self, True, raw)

    def fail(self, raw: bytes) -> None:
        self.outbox._replayed(self, False, raw)


class Outbox:
    """
    The ordered writes for one target (`dynomite.replication.targets.ITarget`);
    see the module docstring.

    ``replay_rate`` is in writes per second (0 or None: unthrottled);
    ``max_in_flight`` bounds the replayed hints awaiting a reply.
    """

    log = Logger()

    def __init__(self, target, hints: HintLog, clock, replay_rate: Optional[float] = 5000,
                 max_in_flight: int = DEFAULT_IN_FLIGHT, sequenced: bool = False) -> None:
        self.target = target.name
        #: whether writes are numbered, so that a replay is applied once
        #: (`dynomite.replication.applied_once`): for a Redis, not a datacenter
        self.sequenced = sequenced
        self._sequence = 0
        #: writes submitted during a batch (`dynomite.runtime.batching`),
        #: by (lane, RESP version), sent together when the batch ends
        self.batched = False
        self._gathered: Dict[Tuple[int, int], GatheredRun] = {}
        self._target = target
        self.hints = hints
        self._is_up = target.available
        self._clock = clock
        self.replay_rate = replay_rate or 0
        self.max_in_flight = max(1, max_in_flight)
        self.replayed_total = 0
        self.state = DIRECT
        self.started = False
        name = self.target.encode("utf-8", "replace")
        self._hinted_prefix = HINTED + b"write for %s stored as a hint (" % name
        self._why = b"unavailable"                # the target's last failure
        self._lost_reply = b"-ERR %s failed and the write could not be hinted\r\n" % name
        self._direct: Deque[_Direct] = deque()   # sent; left once they and all before are answered
        self._epoch = 0
        self._awaiting: Deque[int] = deque()     # replayed seqs, in order, not acked
        self._answered: Set[int] = set()         # ... of which these succeeded
        self._sent: Optional[int] = None
        self._tokens = 0.0
        self._refilled_at = 0.0
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN
        self._pumping = False
        self._again = False

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Open the hint log; hints kept from before a restart are the backlog."""
        self.hints.open()
        self.started = True
        if self.hints.pending and self.state == DIRECT:
            self.state = BACKLOG

    def stop(self) -> None:
        """Close the hint log (what is in it stays for the next start)."""
        self.hints.close()

    @property
    def in_flight(self) -> int:
        """Writes sent straight to the target and not yet answered (nor hinted)."""
        return sum(1 for entry in self._direct if not entry.done)

    # -- state machine ---------------------------------------------------------

    def _fire(self, event: str) -> None:
        gathered = None
        if self._gathered and self.state == DIRECT:
            # accepted before the event: hinted right behind the writes in
            # flight (never sent from here: this may be the target's own
            # failure callback, with its connection half torn down)
            gathered, self._gathered = self._gathered, {}
        old = machine.fire(self, _TRANSITIONS, event)
        if gathered:
            for run in gathered.values():
                for request, sink in run.parts:
                    self._hint(request, sink)
        if old is not None and old != self.state:
            self.log.debug("outbox {target}: {old} --{event}--> {new}", target=self.target,
                           old=old, event=event, new=self.state)

    def _spill(self) -> None:
        """Copy the direct writes still in flight into the log, in the order sent."""
        for entry in self._direct:
            if not entry.stored:
                entry.stored = self._store(entry.request)

    def _spill_and_back_off(self) -> None:
        self._spill()
        self._back_off()

    def _start_replay(self) -> None:
        self._stop_replay()
        self._sent = None
        if self.replay_rate:
            self._tokens = max(1.0, self.replay_rate * BURST_SECONDS)
            self._refilled_at = self._clock.seconds()
        self.log.info("outbox {target}: replaying {count} hints", target=self.target,
                      count=self.hints.pending)

    def _stop_replay(self) -> None:
        """Forget the replayed hints in flight: their replies no longer count."""
        self._epoch += 1
        self._awaiting.clear()
        self._answered.clear()

    def _back_off(self) -> None:
        self._stop_replay()
        self._retry_at = self._clock.seconds() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def _drained(self) -> None:
        self.log.info("outbox {target}: hints drained ({count} replayed so far)",
                      target=self.target, count=self.replayed_total)

    # -- writes ----------------------------------------------------------------

    def submit(self, request: Request, sink: Any) -> None:
        """
        Deliver one write, or a run of writes (`dynomite.consistency.runs`),
        to the target, or hint it.  A run is hinted write by write.  Writes
        submitted during one batch (the requests of every client read in
        one reactor turn) go out together, as one run per lane and RESP
        version: one frame, one transaction at the replica.
        """
        if self.state == DIRECT and self._is_up():
            if not request.flags & FLAG_TRANSACTION and defer(self):
                key = (request.lane, request.resp)
                run = self._gathered.get(key)
                if run is not None and run.fits(request):
                    run.add(request, sink)
                    return
                if run is not None:
                    self._send_gathered(run)   # full: it leaves now, in its place
                self._gathered[key] = GatheredRun(request, sink)
                return
            if self._gathered:
                self._flush_gathered()
            if self.state == DIRECT:
                self._send_direct(request, sink)
                return
        self._hint(request, sink)

    def flush_batched(self) -> None:
        """The batch ended (`dynomite.runtime.batching`): send what it gathered."""
        self._flush_gathered()

    def _flush_gathered(self) -> None:
        gathered, self._gathered = self._gathered, {}
        for run in gathered.values():
            self._send_gathered(run)

    def _send_gathered(self, run: GatheredRun) -> None:
        request, sink = run.joined()
        if self.state == DIRECT and self._is_up():
            self._send_direct(request, sink)
        else:
            self._hint(request, sink)

    def _send_direct(self, request: Request, sink: Any) -> None:
        if self.sequenced:
            request = self._numbered(request)
        entry = _Direct(self, request, sink)
        self._direct.append(entry)
        self._send(request, entry)

    def _hint(self, request: Request, sink: Any) -> None:
        if self.state == DIRECT:
            self._why = b"unavailable"
            self._fire("down")
        if self.sequenced:
            request = self._numbered(request)
        if not self._store(request):
            sink.fail(self._lost_reply)
            return
        sink.hinted(self._hinted_reply())
        if self.state == REPLAYING:
            self._pump()

    def _numbered(self, request: Request) -> Request:
        """
        ``request`` with the number of its first write in front; a run takes
        one number per write.  Numbers only grow, across restarts too (they
        start from the clock, in ms, shifted left 16 bits).
        """
        first = max(self._sequence, int(self._clock.seconds() * 1000) << 16)
        self._sequence = first + request.count
        return Request(sequenced_payload(first, request.payload), request.resp, request.lane,
                       request.count, request.write, FLAG_SEQUENCED | (request.flags & FLAG_TRANSACTION))

    def _store(self, request: Request) -> bool:
        """Append a write, or each write of a run, to the log; False if one could not be."""
        flags = request.flags
        payload = request.payload
        if flags & FLAG_TRANSACTION:
            # a client's transaction stays whole: replayed as one run
            return self.hints.append(flags, payload) is not None
        if flags & FLAG_SEQUENCED:
            # each write keeps its own number
            first = payload_sequence(payload)
            writes = [payload[8:]] if request.count == 1 else split_commands(payload[8:])
            stored = True
            for i, write in enumerate(writes):
                stored = self.hints.append(flags, sequenced_payload(first + i, write)) is not None and stored
            return stored
        if request.count == 1:
            return self.hints.append(flags, payload) is not None
        stored = True
        for write in split_commands(payload):
            stored = self.hints.append(flags, write) is not None and stored
        return stored

    def _hinted_reply(self) -> bytes:
        return self._hinted_prefix + self._why + b")\r\n"

    def _send(self, request: Request, sink: Any) -> None:
        try:
            self._target.send(request, sink)
        except Exception:
            self.log.failure("outbox {target}: deliver failed", target=self.target)
            sink.fail(b"-ERR internal error delivering to %s\r\n" % self.target.encode())

    def _direct_done(self, entry: _Direct, raw: bytes, ok: bool) -> None:
        if entry.done:
            return
        entry.done = True
        direct = self._direct
        if ok:
            entry.sink.complete(raw)
        else:
            self._why = _reason(raw)
            if self.state == DIRECT:
                self._fire("failed")   # spills this write too, in its place
            if entry.stored:
                entry.sink.hinted(self._hinted_reply())
            else:
                entry.sink.fail(raw)
        while direct and direct[0].done:
            direct.popleft()

    # -- replay ----------------------------------------------------------------

    def _pump(self) -> None:
        """Send hints while the window and the token bucket allow."""
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            while self.state == REPLAYING:
                self._again = False
                room = self.max_in_flight - len(self._awaiting)
                if self.replay_rate:
                    now = self._clock.seconds()
                    capacity = max(1.0, self.replay_rate * BURST_SECONDS)
                    self._tokens = min(capacity, self._tokens
                                       + (now - self._refilled_at) * self.replay_rate)
                    self._refilled_at = now
                    room = min(room, int(self._tokens))
                batch = self.hints.peek(min(room, PEEK_BATCH), self._sent) if room > 0 else []
                epoch = self._epoch
                for hint in batch:
                    if self._epoch != epoch:
                        break   # a synchronous failure stopped this round
                    self._sent = hint.seq
                    self._awaiting.append(hint.seq)
                    self._tokens -= 1
                    self._send(Request.from_flags(hint.flags | FLAG_REPLAY, hint.payload, REPLAY_LANE,
                                                  _count(hint)),
                               _Replayed(self, epoch, hint.seq))
                if self.state == REPLAYING and not self._awaiting and self.hints.pending == 0:
                    self._fire("drained")
                if not (self._again or len(batch) == PEEK_BATCH):
                    break
        finally:
            self._pumping = False

    def _replayed(self, sink: _Replayed, ok: bool, raw: bytes) -> None:
        if sink.epoch != self._epoch:
            return   # an earlier round's reply
        if not ok:
            self._why = _reason(raw)
            self.log.info("outbox {target}: replay failed at hint {seq}; retrying in {delay}s",
                          target=self.target, seq=sink.seq, delay=self._retry_delay)
            self._fire("failed")
            return
        awaiting = self._awaiting
        if awaiting and awaiting[0] == sink.seq:
            awaiting.popleft()
            last, n = sink.seq, 1
            answered = self._answered
            while awaiting and awaiting[0] in answered:
                last = awaiting.popleft()
                answered.discard(last)
                n += 1
            self.hints.ack(last)
            self.replayed_total += n
            self._retry_delay = RETRY_MIN
        else:
            self._answered.add(sink.seq)
        self._pump()

    # -- owner and admin ---------------------------------------------------------

    def tick(self, now: float) -> None:
        """Periodic: log housekeeping, and start, continue or stop the replay."""
        self.hints.tick(now)
        self._evaluate(now)

    def wake(self) -> None:
        """The target may have come up: look now rather than at the next tick."""
        self._evaluate(self._clock.seconds())

    def _evaluate(self, now: float) -> None:
        state = self.state
        if state == BACKLOG and now >= self._retry_at and self._is_up():
            self._fire("up" if self.hints.pending else "drained")
        elif state == REPLAYING and not self._is_up():
            self._fire("down")
        if self.state == REPLAYING:
            self._pump()

    def pause(self) -> None:
        """Hold every write for the target in the log; deliver nothing."""
        self._why = b"hints paused"
        self._fire("pause")

    def resume(self) -> None:
        """Undo `pause`: replay the backlog, then deliver directly again."""
        self._fire("resume")
        self._retry_at = 0.0
        self._evaluate(self._clock.seconds())

    def truncate(self) -> int:
        """Drop every pending hint (those replicas need repair); returns how many."""
        n = self.hints.truncate()
        for entry in self._direct:
            entry.stored = False
        self._stop_replay()
        self._evaluate(self._clock.seconds())
        return n

    def stats(self, now: float) -> Dict[str, Any]:
        """The backlog as `/info` shows it."""
        hints = self.hints
        return {
            "pending": hints.pending,
            "pending_bytes": hints.pending_bytes,
            "oldest_age_seconds": hints.oldest_age(now),
            "stored_total": hints.appended_total,
            "replayed_total": self.replayed_total,
            "dropped_total": dict(hints.dropped),
            "state": self.state,
        }
