"""
`dynomite.runtime.accept`: a client port accepts a bounded number of
connections per reactor turn, however many wait, and with an accept
budget no more a second than its rate; what it took late is reported.
"""

from __future__ import annotations

import errno
from typing import List

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.runtime.accept import ACCEPTS_PER_TURN, AcceptBudget, BoundedPort, BoundedServerEndpoint
from dynomite.runtime.flood import FLOOD, FLOOD_FRUITLESS, FLOODER, FloodGuard


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

    def shutdown(self, how: int) -> None:
        pass


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


class AcceptBudgetTests(SynchronousTestCase):
    def test_rate_and_burst(self) -> None:
        budget = AcceptBudget(1000, now=0.0)
        self.assertEqual(budget.burst, 100)   # a tenth of a second's worth
        self.assertEqual(budget.available(0.0), 100)
        budget.spend(100)
        self.assertEqual(budget.available(0.0), 0)
        self.assertAlmostEqual(budget.wait(), 0.001)
        self.assertAlmostEqual(budget.wait(16), 0.016)
        self.assertAlmostEqual(budget.wait(500), 0.1)   # never more than the burst
        self.assertEqual(budget.available(0.0105), 10)
        self.assertEqual(budget.available(60.0), 100)   # saved up to the burst, no more
        self.assertEqual(AcceptBudget(50, now=0.0).burst, ACCEPTS_PER_TURN)

    def test_a_rate_must_be_positive(self) -> None:
        self.assertRaises(ValueError, AcceptBudget, 0, 0.0)


def listening_port(waiting: int):
    """A `BoundedPort` listening on a fake clock with ``waiting`` connections in its backlog."""
    reactor = MemoryReactorClock()
    factory = RefusingFactory()
    port = BoundedPort(0, factory, 50, "127.0.0.1", reactor)
    port.numberAccepts = 100
    port.socket = WaitingConnections(waiting)
    port.fileno = lambda: 7
    port.connected = True
    return port, factory, reactor


class BudgetedPortTests(SynchronousTestCase):
    """A `BoundedPort` with an `AcceptBudget`, on a fake clock."""

    def port(self, waiting: int, rate: int):
        port, factory, reactor = listening_port(waiting)
        port.budget = AcceptBudget(rate, reactor.seconds())
        self.delayed: List[int] = []
        port.on_limited = lambda n, reason: self.delayed.append(n)
        return port, factory, reactor

    def read_until_paused(self, port, reactor, most: int = 100) -> int:
        """Read the port (at most ``most`` turns) until it stops reading; how many turns it took."""
        for turns in range(1, most + 1):
            port.doRead()
            if port not in reactor.readers:
                return turns
        return most

    def run_flood(self, port, reactor, seconds: float, step: float = 0.001) -> None:
        """The reactor for ``seconds``: a turn every ``step`` reads the port while it is reading."""
        for _ in range(int(round(seconds / step))):
            if port in reactor.readers:
                port.doRead()
            reactor.advance(step)

    def test_a_flood_is_accepted_at_the_rate(self) -> None:
        port, factory, reactor = self.port(5000, rate=1000)
        port.startReading()
        self.run_flood(port, reactor, 2.0)
        # the burst of 100, then 1,000 a second: about 2,100 in 2 s, not 5,000
        self.assertTrue(2000 <= len(factory.built) <= 2110, len(factory.built))
        self.assertEqual(port.socket.waiting, 5000 - len(factory.built))
        # every connection after the burst and the turn that spent it was late
        late = sum(self.delayed)
        self.assertTrue(len(factory.built) - 100 - ACCEPTS_PER_TURN <= late < len(factory.built) - 100, late)

    def test_a_spent_budget_stops_reading_until_the_next_token(self) -> None:
        port, factory, reactor = self.port(500, rate=1000)
        port.startReading()
        turns = self.read_until_paused(port, reactor)
        # the burst, in turns of ACCEPTS_PER_TURN, then one that finds it spent
        self.assertEqual((len(factory.built), turns), (100, -(-100 // ACCEPTS_PER_TURN) + 1))
        port.doRead()   # a stray call changes nothing
        self.assertEqual(len(factory.built), 100)
        [resume] = reactor.getDelayedCalls()
        # it waits for a turn's worth, not for each accept: 16 at 1,000 a second
        self.assertAlmostEqual(resume.getTime(), ACCEPTS_PER_TURN / 1000)
        reactor.advance(ACCEPTS_PER_TURN / 1000)
        self.assertIn(port, reactor.readers)
        port.doRead()
        self.assertEqual((len(factory.built), self.delayed), (100 + ACCEPTS_PER_TURN, [ACCEPTS_PER_TURN]))

    def test_under_the_rate_nothing_is_late(self) -> None:
        port, factory, reactor = self.port(0, rate=1000)
        port.startReading()
        for _ in range(20):   # 20 connections a turn, a turn every 50 ms: 400 a second
            port.socket.waiting += 20
            port.doRead()
            port.doRead()
            reactor.advance(0.05)
        self.assertEqual(len(factory.built), 400)
        self.assertEqual(self.delayed, [])
        self.assertIn(port, reactor.readers)

    def test_late_counting_stops_once_the_backlog_is_empty(self) -> None:
        port, factory, reactor = self.port(130, rate=1000)
        port.startReading()
        self.run_flood(port, reactor, 0.1)
        late = sum(self.delayed)
        self.assertEqual(len(factory.built), 130)
        self.assertTrue(30 - ACCEPTS_PER_TURN <= late <= 30, late)   # beyond the burst of 100, less a turn
        port.socket.waiting = 5   # a quiet moment later: on time
        reactor.advance(1.0)
        for _ in range(5):
            port.doRead()
        self.assertEqual((len(factory.built), sum(self.delayed)), (135, late))

    def test_closing_cancels_the_pending_resume(self) -> None:
        port, factory, reactor = self.port(500, rate=100)
        port.startReading()
        self.read_until_paused(port, reactor)
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        port.connectionLost(None)
        self.assertEqual(reactor.getDelayedCalls(), [])


class FloodedPortTests(SynchronousTestCase):
    """A guarded port during a flood from many addresses reads its backlog at full speed."""

    run_flood = BudgetedPortTests.run_flood

    def port(self, waiting: int, rate: int):
        from dynomite.runtime.accept import ScreeningFactory
        port, factory, reactor = listening_port(waiting)   # every connection from 127.0.0.1
        guard = self.guard = FloodGuard(rate)
        for i in range(FLOOD_FRUITLESS):
            guard.fruitless(reactor.seconds(), "10.1.0.%d" % i)
        port.factory = ScreeningFactory(factory, lambda host: guard.refuses(host, reactor.seconds()), port.refused)
        self.refused: List[str] = []
        port.on_limited = lambda n, why: self.refused.extend([why] * n)
        port.startReading()
        return port, factory, reactor

    def test_unknown_addresses_are_admitted_at_the_rate_and_the_rest_closed_at_once(self) -> None:
        port, factory, reactor = self.port(3000, rate=1000)
        self.run_flood(port, reactor, 0.2)
        self.assertEqual(port.socket.waiting, 0, "the backlog is read at full speed")
        # a tenth of a second's worth at once (100), then 1,000 a second for 0.2 s
        self.assertTrue(270 <= len(factory.built) <= 310, len(factory.built))
        self.assertEqual((len(self.refused), set(self.refused)), (3000 - len(factory.built), {FLOOD}))

    def test_a_known_address_is_served_whatever_the_flood(self) -> None:
        """Planted bug: a flood that bounds every address makes the node's own clients wait behind it."""
        port, factory, reactor = self.port(3000, rate=1000)
        self.guard.asked("127.0.0.1")
        self.run_flood(port, reactor, 0.2)
        self.assertEqual((len(factory.built), self.refused), (3000, []))


class BoundedServerEndpointTests(SynchronousTestCase):
    def test_other_reactors_listen_as_usual(self) -> None:
        reactor = MemoryReactor()
        factory = Factory()
        endpoint = BoundedServerEndpoint(reactor, 6379, 128, "::1")
        self.successResultOf(endpoint.listen(factory))
        [(port, got, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, got, backlog, interface), (6379, factory, 128, "::1"))

    def test_a_real_port_gets_its_budget_and_reporter(self) -> None:
        from twisted.internet import reactor
        delayed: List[int] = []
        endpoint = BoundedServerEndpoint(reactor, 0, 16, "127.0.0.1", accept_rate=250, on_limited=delayed.append)
        port = self.successResultOf(endpoint.listen(Factory()))
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, BoundedPort)
        self.assertEqual((port.budget.rate, port.on_limited), (250, delayed.append))
        unbounded = self.successResultOf(BoundedServerEndpoint(reactor, 0, 16, "127.0.0.1").listen(Factory()))
        self.addCleanup(unbounded.stopListening)
        self.assertIsNone(unbounded.budget)


class ScreeningTests(SynchronousTestCase):
    def test_a_flooders_connections_get_no_protocol_and_are_counted(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.address import IPv4Address
        limited: List[tuple] = []
        guard = FloodGuard(500)
        for _ in range(guard.address_threshold):
            guard.fruitless(reactor.seconds(), "127.0.0.2")
        endpoint = BoundedServerEndpoint(reactor, 0, 16, "127.0.0.1", guard=guard,
                                         on_limited=lambda *a: limited.append(a))
        inner = Factory.forProtocol(Protocol)
        port = self.successResultOf(endpoint.listen(inner))
        self.addCleanup(port.stopListening)
        self.assertIsNone(port.factory.buildProtocol(IPv4Address("TCP", "127.0.0.2", 5000)))
        self.assertEqual(limited, [(1, FLOODER)])
        self.assertIsInstance(port.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000)), Protocol)


class ScreenedPortTests(SynchronousTestCase):
    def test_refused_connections_spend_no_budget(self) -> None:
        """Planted bug: refused connections spending ``client_accept_rate`` delay the others."""
        from dynomite.runtime.accept import ScreeningFactory
        port, factory, reactor = listening_port(100)
        port.budget = AcceptBudget(1000, reactor.seconds())
        guard = FloodGuard(1000)
        for _ in range(guard.address_threshold):   # 127.0.0.1 a flooder
            guard.fruitless(reactor.seconds(), "127.0.0.1")
        limited: List[tuple] = []
        port.factory = ScreeningFactory(factory, lambda host: guard.refuses(host, reactor.seconds()),
                                        port.refused)
        port.on_limited = lambda *a: limited.append(a)
        port.startReading()
        for _ in range(20):
            port.doRead()
        self.assertEqual((port.socket.waiting, factory.built), (0, []), "all accepted and refused in a few turns")
        self.assertEqual(limited, [(1, FLOODER)] * 100)
        self.assertEqual(port.budget.available(reactor.seconds()), int(port.budget.burst), "the budget is untouched")


class NodeListenerTests(SynchronousTestCase):
    """A node's client ports get ``client_accept_rate``; what they take late is counted."""

    def service(self, **settings):
        from twisted.internet.task import Clock

        from dynomite.service import NodeService
        from tests.fakes import node_config
        return NodeService(node_config(data_dir=self.mktemp(), stats_listen="127.0.0.1:0", listen="127.0.0.1:0",
                                       **settings), Clock())

    def test_the_rate_reaches_the_client_port_and_late_accepts_are_counted(self) -> None:
        service = self.service(client_accept_rate=300)
        endpoint = service.client_listener.endpoint
        self.assertEqual(endpoint.accept_rate, 300)
        endpoint.on_limited(7, "accept_rate")
        endpoint.on_limited(2, "accept_rate")
        endpoint.on_limited(3, "flood")
        limits = service.parts.metrics.client_limits
        self.assertEqual((limits["accept_rate"], limits["flood"]), (9, 3))

    def test_no_rate_by_default(self) -> None:
        self.assertEqual(self.service().client_listener.endpoint.accept_rate, 0)
