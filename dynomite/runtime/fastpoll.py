# -*- test-case-name: tests.unit.test_fastpoll -*-
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
whatever a protocol raises.  Other reactors are left as they are.  That
loop reads the reactor's private state, so it lives in
`dynomite.runtime.twisted_private` (`epoll_turn`).
"""

from __future__ import annotations

import types

from twisted.internet.epollreactor import EPollReactor

from dynomite.runtime.twisted_private import epoll_turn

__all__ = ["install"]


def install(reactor) -> bool:
    """Use the lean poll loop on ``reactor`` if it is an epoll reactor; say whether it was."""
    if not isinstance(reactor, EPollReactor):
        return False
    reactor.doIteration = types.MethodType(epoll_turn, reactor)
    return True
