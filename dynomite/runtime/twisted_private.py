# -*- test-case-name: tests.unit.test_twisted_private -*-
"""
Every use of a private Twisted name, in one place.

The node leans on four Twisted internals, each for a reason the module
that needs it explains:

- `write_now` (for `dynomite.runtime.batching`): a TCP transport with
  nothing buffered hands the bytes to its socket at once.  It reads
  ``tcp.Connection``'s buffers and flags (``dataBuffer``,
  ``_tempDataBuffer``, ``TLS``, ``connected``, ``disconnecting``,
  ``_writeDisconnected``) and its ``socket``.
- `epoll_turn` (for `dynomite.runtime.fastpoll`): a copy of
  ``EPollReactor.doPoll`` without the legacy log context; it uses the
  reactor's ``_poller``, ``_selectables`` and ``_doReadOrWrite``.
- `observers` (for `dynomite.runtime.logs`): the observers of a
  ``LogPublisher`` (``_observers``), so a level filter can wrap them.
- `fail_fast` (for the service's listening ports): sets
  ``StreamServerEndpointService._raiseSynchronously`` so a port that cannot
  be bound makes ``startService`` raise and twistd exit.

`PRIVATE_NAMES` lists each name with what owns it, and
``tests.unit.test_twisted_private`` fails, naming the attribute and the
installed Twisted version, when one of them disappears; it also checks that
``EPollReactor.doPoll`` still has the shape `epoll_turn` copies.  setup.cfg
asks for ``twisted>=22.10`` with no upper bound: these names and that shape
were checked on Twisted 22.10.0, 23.10.0, 24.11.0, 25.5.0, 26.4.0 and
26.10.0.  A Twisted release that changes them makes that test fail; the fix
belongs here, and nowhere else.
"""

from __future__ import annotations

import errno
from typing import Dict, List, Sequence, Tuple

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor

__all__ = ["PRIVATE_NAMES", "write_now", "epoll_turn", "observers", "fail_fast"]

#: Where each private name lives -> the names this module relies on there.
PRIVATE_NAMES: Dict[str, Tuple[str, ...]] = {
    "twisted.internet.tcp.Server/Client (instance)": (
        "dataBuffer", "_tempDataBuffer", "TLS", "connected", "disconnecting",
        "_writeDisconnected", "socket",
    ),
    "twisted.internet.epollreactor.EPollReactor (instance)": (
        "_poller", "_selectables", "_doReadOrWrite",
    ),
    "twisted.logger.LogPublisher (instance)": ("_observers",),
    "twisted.application.internet.StreamServerEndpointService (class)": (
        "_raiseSynchronously",
    ),
}

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


def epoll_turn(self: EPollReactor, timeout) -> None:
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


def observers(publisher) -> List:
    """A copy of the observers ``publisher`` (a ``LogPublisher``) sends events to."""
    return list(publisher._observers)


def fail_fast(service: StreamServerEndpointService) -> None:
    """Make ``service.startService`` raise when its port cannot be bound, instead of logging it."""
    service._raiseSynchronously = True
