# -*- test-case-name: tests.unit.test_accept -*-
"""
Client listening ports whose accept loop takes a bounded share of a reactor turn.

Twisted's ``tcp.Port.doRead`` accepts up to ``numberAccepts`` connections
each time the listening socket is readable, and grows that number by 20
every time it uses it all (from 100): a flood of connections is taken in
turns of hundreds of accepts, each building a protocol, and the next turn
reads all of them, while the established clients wait for both.  A
`BoundedPort` caps ``numberAccepts`` at `ACCEPTS_PER_TURN`: the rest of a
flood waits in the kernel's backlog and is accepted over the next turns,
each of which serves the established clients too.  The total work is the
same; what a connected client waits behind in one turn is bounded.

`BoundedServerEndpoint` is the endpoint a node's client listeners are
opened with.  On a reactor that is not a POSIX one (a test's fake reactor)
it listens through ``reactor.listenTCP`` as a plain endpoint would.
"""

from __future__ import annotations

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.posixbase import PosixReactorBase
from zope.interface import implementer

__all__ = ["ACCEPTS_PER_TURN", "BoundedPort", "BoundedServerEndpoint"]

#: Connections accepted at most per reactor turn: at about 100 µs each, a
#: few milliseconds, and still thousands a second when turns are short.
ACCEPTS_PER_TURN = 16


class BoundedPort(tcp.Port):
    """A ``tcp.Port`` that accepts at most ``accepts_per_turn`` connections per turn."""

    accepts_per_turn = ACCEPTS_PER_TURN

    @property  # type: ignore[override]
    def numberAccepts(self) -> int:
        return self._number_accepts

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        # Twisted sets it when it starts listening and after every turn
        self._number_accepts = max(1, min(value, self.accepts_per_turn))


@implementer(IStreamServerEndpoint)
class BoundedServerEndpoint:
    """A TCP server endpoint (IPv4 or IPv6, by ``interface``) listening with a `BoundedPort`."""

    def __init__(self, reactor, port: int, backlog: int, interface: str,
                 accepts_per_turn: int = ACCEPTS_PER_TURN) -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface
        self.accepts_per_turn = accepts_per_turn

    def listen(self, factory) -> defer.Deferred:
        return defer.execute(self._listen, factory)

    def _listen(self, factory):
        if not isinstance(self._reactor, PosixReactorBase):
            return self._reactor.listenTCP(self._port, factory, backlog=self._backlog, interface=self._interface)
        port = BoundedPort(self._port, factory, self._backlog, self._interface, self._reactor)
        port.accepts_per_turn = self.accepts_per_turn
        port.startListening()
        return port
