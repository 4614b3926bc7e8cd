# -*- test-case-name: tests.unit.test_batching -*-
"""
Coalescing the writes that one batch of replies causes.

When a connection to Redis or to a peer delivers many replies in one read
(a pipelined client, P16), each reply completes a client's slot or a
peer's request; writing each one out at once costs a transport write (and
its bookkeeping) per reply.  Inside a batch -- the reply loop of one
``dataReceived`` -- connections that have something to write only mark
themselves; when the outermost batch ends, each writes everything it has
in one go.  Outside a batch nothing is deferred, so no code path can leave
a reply unwritten; a connection that holds batched writes adds later ones
behind them, so nothing overtakes.  A running node holds batched writes
until the end of the reactor turn (`per_reactor_turn`), so requests from
many clients read in one turn go out together.  The reactor is one
thread, so module state is enough.

`write_now` is how those writes leave: a TCP transport with nothing
buffered gets the bytes handed to its socket at once, instead of
registering for writability and sending in a later reactor turn (two
``epoll_ctl`` calls and a turn per write, the largest fixed cost of a
request after the ``send`` itself); whatever the socket does not take is
buffered by the transport as usual, so order and flow control are kept.
It reads Twisted's private transport state, so it lives in
`dynomite.runtime.twisted_private` and is re-exported here.
"""

from __future__ import annotations

from typing import Callable, List, Optional

from dynomite.runtime.twisted_private import write_now

__all__ = [
    "per_reactor_turn", "begin", "end", "flush", "defer", "BatchedWriter", "write_now",
]

_depth = 0
_pending: List = []
# How the writes of finished batches are flushed: None, at once when the
# outermost batch ends; else a function that runs its argument once the
# reactor has handled every event of the current turn (`per_reactor_turn`).
_later: Optional[Callable[[Callable[[], None]], object]] = None
_flush_due = False


def per_reactor_turn(reactor) -> None:
    """
    Hold the writes of every batch until the reactor has handled all the
    events of its turn, so that fifty clients read in one turn cost one
    write to Redis and one to each peer instead of fifty each.  A running
    node turns this on (`dynomite.tap`); without it (unit tests driving
    protocols by hand) batches flush as they end.
    """
    global _later
    _later = None if reactor is None else (lambda f: reactor.callLater(0, f))


def begin() -> None:
    """A reply loop starts."""
    global _depth
    _depth += 1


def end() -> None:
    """A reply loop ended: when it was the outermost one, write what waits (now or after the turn)."""
    global _depth, _flush_due
    _depth -= 1
    if _depth or not _pending:
        return
    if _later is None:
        flush()
    elif not _flush_due:
        _flush_due = True
        _later(flush)


def flush() -> None:
    """
    Every waiting writer writes what it holds.  A writer that writes
    through others as it flushes (gathered writes led through outboxes and
    peer links) does so inside a batch: those others then wait their turn
    in this same loop, so each connection still writes once.
    """
    global _pending, _flush_due, _depth
    _flush_due = False
    _depth += 1
    try:
        while _pending:
            pending, _pending = _pending, []
            for writer in pending:
                writer.batched = False
                writer.flush_batched()
    finally:
        _depth -= 1


def defer(writer) -> bool:
    """
    Inside a batch, or while ``writer`` already holds writes, remember
    ``writer`` (an object with a ``batched`` flag and a ``flush_batched()``
    method) and return True: the caller adds its bytes to what it holds.
    Otherwise False: the caller writes now.
    """
    if writer.batched:
        return True
    if _depth == 0:
        return False
    writer.batched = True
    _pending.append(writer)
    return True


class BatchedWriter:
    """
    A connection whose writes made inside a batch wait for its end (or the
    end of the reactor turn) and leave in one `write_now`.  Subclasses call
    ``BatchedWriter.__init__`` and may say in `accepts_writes` whether their
    transport still takes bytes when the batch ends.
    """

    def __init__(self) -> None:
        self.batched = False
        self._out: List[bytes] = []

    def write_batched(self, data: bytes) -> None:
        """Write ``data``: now outside a batch, else with the rest of the batch."""
        if defer(self):
            self._out.append(data)
        else:
            write_now(self.transport, (data,))  # type: ignore[attr-defined]

    def flush_batched(self) -> None:
        out, self._out = self._out, []
        if out and self.accepts_writes():
            write_now(self.transport, out)  # type: ignore[attr-defined]

    def accepts_writes(self) -> bool:
        return True
