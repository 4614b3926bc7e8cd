"""
A node's reactor turn without Twisted's per-event legacy log context.

`EPollReactor.doPoll` runs every ready descriptor's ``doRead``/``doWrite``
inside ``twisted.python.log.callWithLogger``, which pushes a legacy log
context naming the connection (the ``[DatastoreProtocol,client]`` prefix of
legacy log lines).  That costs about 3 µs an event: 7-9% of a node's CPU
when clients do not pipeline, one event per request.  A node logs through
``twisted.logger`` with namespaces of its own, so it does without that
context: `install` gives an epoll reactor the same poll loop calling
``_doReadOrWrite`` directly, which still catches, logs and disconnects on
whatever a protocol raises.  Other reactors are left as they are.
"""

from __future__ import annotations

import errno
import types

from twisted.internet.epollreactor import EPollReactor

__all__ = ["install"]


def install(reactor) -> bool:
    """Use the lean poll loop on ``reactor`` if it is an epoll reactor; say whether it was."""
    if not isinstance(reactor, EPollReactor):
        return False
    reactor.doIteration = types.MethodType(_poll, reactor)
    return True


def _poll(self: EPollReactor, timeout) -> None:
    """`EPollReactor.doPoll`, less ``log.callWithLogger`` around each event."""
    if timeout is None:
        timeout = -1  # wait indefinitely
    try:
        events = self._poller.poll(timeout, len(self._selectables))
    except OSError as err:
        if err.errno == errno.EINTR:
            return
        raise
    selectables = self._selectables
    handle = self._doReadOrWrite
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is not None:
            handle(selectable, fd, event)
