"""
The reconnect machine and backoff every outbound link shares
(dynomite.runtime.reconnect), with a fake endpoint and a Clock.
"""

from __future__ import annotations

from typing import List

from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.runtime.reconnect import (
    CONNECTING, DROPPING, HANDSHAKING, IDLE, RESETTING, STOPPED, TRANSITIONS, UP, WAITING, Backoff,
    ReconnectingConnection,
)

from tests.fakes import FakeEndpoint, drop


class FakeProtocol(Protocol):
    """Reports to its connection as the datastore and peer protocols do; ready on demand."""

    def __init__(self, owner: "Connection") -> None:
        self.owner = owner
        self.dropped = False

    def connectionMade(self) -> None:
        self.owner.protocol_connected(self)

    def ready(self) -> None:
        self.owner.protocol_ready(self)

    def drop(self) -> None:
        self.dropped = True
        self.transport.abortConnection()

    def connectionLost(self, reason=None) -> None:
        self.owner.protocol_lost(self)


class Connection(ReconnectingConnection):
    """A machine that records what its hooks hear."""

    def __init__(self, endpoint, clock, backoff) -> None:
        ReconnectingConnection.__init__(self, endpoint, clock, backoff, "test server")
        self.ups: List[bool] = []
        self.failed = 0
        self.delay_override = None

    def build_protocol(self, addr):
        return FakeProtocol(self)

    def connection_failed(self) -> None:
        self.failed += 1

    def retry_delay(self, failures: int) -> float:
        if self.delay_override is not None:
            return self.delay_override
        return ReconnectingConnection.retry_delay(self, failures)

    def up_changed(self, up: bool) -> None:
        self.ups.append(up)


class BackoffTests(SynchronousTestCase):

    def test_doubles_from_a_tenth_of_a_second_up_to_two(self) -> None:
        backoff = Backoff(lambda: 1.0)
        self.assertEqual([backoff.delay(n) for n in range(1, 9)],
                         [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])

    def test_jitter_scales_between_half_and_whole(self) -> None:
        self.assertEqual(Backoff(lambda: 0.0).delay(1), 0.05)
        self.assertEqual(Backoff(lambda: 0.5).delay(3), 0.4 * 0.75)

    def test_bounds_are_parameters(self) -> None:
        backoff = Backoff(lambda: 1.0, initial=1.0, maximum=5.0, factor=3.0)
        self.assertEqual([backoff.delay(n) for n in range(1, 5)], [1.0, 3.0, 5.0, 5.0])

    def test_endless_failures_stay_at_the_cap(self) -> None:
        self.assertEqual(Backoff(lambda: 1.0).delay(10 ** 6), 2.0)


class MachineTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.conn = Connection(self.endpoint, self.clock, Backoff(lambda: 1.0))

    def up(self) -> FakeProtocol:
        """Start, accept the attempt, and say ready."""
        self.conn.start()
        protocol, _ = self.endpoint.accept()
        protocol.ready()
        self.assertEqual(self.conn.state, UP)
        return protocol

    def assert_attempt_after(self, delay: float) -> None:
        """No attempt until ``delay`` seconds have passed, then one."""
        self.clock.advance(delay - 0.001)
        self.assertEqual(self.endpoint.attempts, [])
        self.clock.advance(0.002)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_connect_then_handshake_then_up(self) -> None:
        self.assertEqual(self.conn.state, IDLE)
        self.conn.start()
        self.assertEqual((self.conn.state, len(self.endpoint.attempts)), (CONNECTING, 1))
        protocol, _ = self.endpoint.accept()
        self.assertEqual((self.conn.state, self.conn.protocol), (HANDSHAKING, protocol))
        self.assertEqual(self.conn.ups, [])
        protocol.ready()
        self.assertEqual(self.conn.state, UP)
        self.assertEqual(self.conn.ups, [True])

    def test_failed_attempts_back_off(self) -> None:
        self.conn.start()
        for delay in (0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0):
            self.endpoint.refuse()
            self.assertEqual(self.conn.state, WAITING)
            self.assert_attempt_after(delay)
        self.assertEqual(self.conn.failed, 7)

    def test_up_forgets_failures(self) -> None:
        self.conn.start()
        for _ in range(4):
            self.endpoint.refuse()
            self.clock.advance(2.0)
        protocol, _ = self.endpoint.accept()
        protocol.ready()
        self.assertEqual(self.conn.failures, 0)
        drop(protocol)
        self.assertEqual((self.conn.state, self.conn.ups), (WAITING, [True, False]))
        self.assert_attempt_after(0.1)

    def test_lost_during_handshake_is_a_failure(self) -> None:
        self.conn.start()
        protocol, _ = self.endpoint.accept()
        drop(protocol)
        self.assertEqual((self.conn.state, self.conn.failed, self.conn.ups), (WAITING, 1, []))
        self.assert_attempt_after(0.1)

    def test_dead_connection_is_dropped_then_waits(self) -> None:
        protocol = self.up()
        self.conn.dead()
        self.assertEqual(self.conn.state, DROPPING)
        self.assertTrue(protocol.dropped)
        self.assertEqual(self.conn.ups, [True, False])
        drop(protocol)
        self.assertEqual(self.conn.state, WAITING)
        self.assert_attempt_after(0.1)

    def test_reset_reconnects_at_once(self) -> None:
        protocol = self.up()
        self.conn.reset()
        self.assertEqual(self.conn.state, RESETTING)
        self.assertTrue(protocol.dropped)
        drop(protocol)
        self.assertEqual((self.conn.state, len(self.endpoint.attempts)), (CONNECTING, 1))
        self.assertEqual(self.conn.failed, 0)

    def test_retry_now_ends_a_wait_and_its_timer(self) -> None:
        self.conn.start()
        self.endpoint.refuse()
        self.conn.retry_now()
        self.assertEqual((self.conn.state, len(self.endpoint.attempts)), (CONNECTING, 1))
        self.clock.advance(5.0)
        self.assertEqual(len(self.endpoint.attempts), 1, "the cancelled timer fired")

    def test_retry_now_leaves_other_states_alone(self) -> None:
        self.up()
        self.conn.retry_now()
        self.assertEqual((self.conn.state, self.endpoint.attempts), (UP, []))

    def test_reset_while_waiting_forgets_failures(self) -> None:
        self.conn.start()
        for _ in range(3):
            self.endpoint.refuse()
            self.clock.advance(2.0)
        self.endpoint.refuse()
        self.conn.reset()
        self.assertEqual(self.conn.failures, 0)
        self.endpoint.refuse()
        self.assert_attempt_after(0.1)

    def test_owner_chooses_the_delay(self) -> None:
        """An owner may pause reconnects (the datastore's ejection), consulted after the failure."""
        self.conn.delay_override = 30.0
        self.conn.start()
        self.endpoint.refuse()
        self.assert_attempt_after(30.0)

    def test_stop_cancels_everything_and_start_resumes(self) -> None:
        protocol = self.up()
        self.conn.stop()
        self.assertEqual((self.conn.state, self.conn.ups), (STOPPED, [True, False]))
        self.assertTrue(protocol.dropped)
        drop(protocol)
        self.clock.advance(10.0)
        self.assertEqual((self.conn.state, self.endpoint.attempts), (STOPPED, []))
        self.conn.start()
        self.assertEqual((self.conn.state, len(self.endpoint.attempts)), (CONNECTING, 1))

    def test_stop_while_waiting_and_while_connecting(self) -> None:
        self.conn.start()
        self.endpoint.refuse()
        self.conn.stop()
        self.clock.advance(10.0)
        self.assertEqual(self.endpoint.attempts, [])
        self.conn.start()
        self.conn.stop()
        # the cancelled attempt's outcome is ignored
        factory, d = self.endpoint.attempts.pop()
        self.assertTrue(d.called)
        self.assertEqual(self.conn.state, STOPPED)

    def test_stale_connection_is_dropped(self) -> None:
        self.up()
        stale = FakeProtocol(self.conn)
        stale.transport = None
        stale.drop = lambda: setattr(stale, "dropped", True)
        self.conn.protocol_connected(stale)
        self.assertTrue(stale.dropped)
        self.assertEqual(self.conn.state, UP)

    def test_every_live_state_can_stop_and_unknown_events_are_ignored(self) -> None:
        for state in (IDLE, CONNECTING, HANDSHAKING, UP, WAITING, DROPPING, RESETTING):
            self.assertEqual(TRANSITIONS[(state, "stop")][0], STOPPED)
        self.conn.fire("ready")
        self.conn.fire("no such event")
        self.assertEqual(self.conn.state, IDLE)
