"""
Coalescing the writes that one batch of replies causes.

When a connection to Redis or to a peer delivers many replies in one read
(a pipelined client, P16), each reply completes a client's slot or a
peer's request; writing each one out at once costs a transport write (and
its bookkeeping) per reply.  Inside a batch -- the reply loop of one
``dataReceived`` -- connections that have something to write only mark
themselves; when the outermost batch ends, each writes everything it has
in one go.  Outside a batch nothing is deferred, so no code path can leave
a reply unwritten.  The reactor is one thread, so module state is enough.

`write_now` is how those writes leave: a TCP transport with nothing
buffered gets the bytes handed to its socket at once, instead of
registering for writability and sending in a later reactor turn (two
``epoll_ctl`` calls and a turn per write, the largest fixed cost of a
request after the ``send`` itself); whatever the socket does not take is
buffered by the transport as usual, so order and flow control are kept.
"""

from __future__ import annotations

from typing import List, Sequence

from twisted.internet import tcp

_depth = 0
_pending: List = []


def begin() -> None:
    """A reply loop starts."""
    global _depth
    _depth += 1


def end() -> None:
    """A reply loop ended: when it was the outermost one, write what waits."""
    global _depth, _pending
    _depth -= 1
    while _depth == 0 and _pending:
        pending, _pending = _pending, []
        for writer in pending:
            writer.batched = False
            writer.flush_batched()


def defer(writer) -> bool:
    """
    Inside a batch, remember ``writer`` (an object with a ``batched`` flag
    and a ``flush_batched()`` method) and return True; outside, False: the
    caller writes now.
    """
    if _depth == 0:
        return False
    if not writer.batched:
        writer.batched = True
        _pending.append(writer)
    return True


def write_now(transport, chunks: Sequence[bytes]) -> None:
    """Write ``chunks`` on ``transport``, straight to its socket when nothing is queued before them."""
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if (
        type(transport) is not tcp.Server and type(transport) is not tcp.Client
        or transport.dataBuffer or transport._tempDataBuffer or transport.TLS
        or not transport.connected or transport.disconnecting or transport._writeDisconnected
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError:
        # EAGAIN, or an error the transport will find and report itself
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])
