"""
`dynomite.runtime.accept`: a client port accepts a bounded number of
connections per reactor turn, however many wait.
"""

from __future__ import annotations

import errno
from typing import List

from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from dynomite.runtime.accept import ACCEPTS_PER_TURN, BoundedPort, BoundedServerEndpoint


class WaitingConnections:
    """A listening socket with ``waiting`` connections in its backlog (each closed at once here)."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting
        self.closed = 0

    def accept(self):
        if not self.waiting:
            raise BlockingIOError(errno.EAGAIN, "no connection waiting")
        self.waiting -= 1
        return self, ("127.0.0.1", 40000 + self.waiting)

    def close(self) -> None:
        self.closed += 1


class RefusingFactory(Factory):
    """Counts the connections built; builds nothing, so the port closes them."""

    def __init__(self) -> None:
        self.built: List[object] = []

    def buildProtocol(self, addr):
        self.built.append(addr)
        return None


class BoundedPortTests(SynchronousTestCase):
    def port(self, waiting: int, cap: int = ACCEPTS_PER_TURN):
        factory = RefusingFactory()
        port = BoundedPort(0, factory, 50, "127.0.0.1", MemoryReactor())
        port.accepts_per_turn = cap
        port.numberAccepts = 100   # as startListening sets it
        port.socket = WaitingConnections(waiting)
        return port, factory

    def test_a_flood_is_accepted_over_many_turns(self) -> None:
        port, factory = self.port(500)
        turns = []
        while port.socket.waiting:
            before = len(factory.built)
            port.doRead()
            turns.append(len(factory.built) - before)
        self.assertEqual(sum(turns), 500)
        self.assertEqual(max(turns), ACCEPTS_PER_TURN)
        self.assertEqual(len(turns), -(-500 // ACCEPTS_PER_TURN))

    def test_twisted_scaling_stays_under_the_cap(self) -> None:
        port, _ = self.port(0, cap=4)
        self.assertEqual(port.numberAccepts, 4)
        port.numberAccepts += 20
        self.assertEqual(port.numberAccepts, 4)
        port.numberAccepts = 0
        self.assertEqual(port.numberAccepts, 1)

    def test_fewer_waiting_are_all_accepted_in_one_turn(self) -> None:
        port, factory = self.port(5)
        port.doRead()
        self.assertEqual(len(factory.built), 5)


class BoundedServerEndpointTests(SynchronousTestCase):
    def test_other_reactors_listen_as_usual(self) -> None:
        reactor = MemoryReactor()
        factory = Factory()
        endpoint = BoundedServerEndpoint(reactor, 6379, 128, "::1")
        self.successResultOf(endpoint.listen(factory))
        [(port, got, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, got, backlog, interface), (6379, factory, 128, "::1"))
