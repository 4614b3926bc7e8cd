# -*- test-case-name: tests.unit.test_reconnect -*-
"""
Keeping one outbound connection up: the reconnect state machine and the
backoff policy that every outbound link shares (each connection to the
local Redis, `dynomite.datastore.link`, and each connection to a peer,
`dynomite.peers.link`).

One `ReconnectingConnection` drives one connection through `TRANSITIONS`::

    IDLE --start--> CONNECTING --connected--> HANDSHAKING --ready--> UP
    CONNECTING --failed--> WAITING --retry (backoff, or at once)--> CONNECTING
    HANDSHAKING/UP --lost--> WAITING
    HANDSHAKING/UP --dead (silent too long)--> DROPPING --lost--> WAITING
    any live state --reset--> RESETTING --lost--> CONNECTING (no backoff)
    any --stop--> STOPPED --start--> CONNECTING

HANDSHAKING is the time between the TCP connection and the protocol saying
it is ready for requests (a peer's handshake, a RESP3 connection's HELLO 3;
a RESP2 datastore connection is ready at once).  Every way into WAITING is
a failure: the owner hears of it (`connection_failed`) before the delay is
chosen (`retry_delay`), so an owner can pause reconnects altogether (the
datastore's ejection).  A connection that becomes UP forgets its failures.

The delay is `Backoff`: 0.1 s doubling up to 2 s, scaled by
``0.5 + jitter() / 2`` so that nodes restarted together do not reconnect in
lockstep; ``jitter`` is injectable so tests can pin it.  Both users share
these bounds.  Peers have always had them; the local Redis used to stop at
1 s, but its health monitor (`dynomite.datastore.monitor`) PINGs every
second and ends the wait (`retry_now`) as soon as Redis answers, so the
longer cap does not slow its recovery.

The protocol a connection speaks is the owner's (`build_protocol`); it tells
the machine ``protocol_connected``, ``protocol_ready`` and ``protocol_lost``,
and has a ``drop()`` that closes it at once.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from dynomite.runtime import machine

__all__ = [
    "Backoff", "ReconnectingConnection", "TRANSITIONS",
    "IDLE", "CONNECTING", "HANDSHAKING", "UP", "WAITING", "DROPPING", "RESETTING", "STOPPED",
]

#: The first reconnect delay and the longest, in seconds, before jitter.
INITIAL_DELAY = 0.1
MAX_DELAY = 2.0


class Backoff:
    """
    Seconds before reconnect attempt number ``failures`` (1, 2, ...):
    ``initial`` multiplied by ``factor`` for each failure after the first, at
    most ``maximum``, then scaled by ``0.5 + jitter() / 2``.
    """

    def __init__(self, jitter: Callable[[], float] = random.random,
                 initial: float = INITIAL_DELAY, maximum: float = MAX_DELAY,
                 factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter

    def delay(self, failures: int) -> float:
        """The delay after ``failures`` failures in a row."""
        base = min(self.initial * self.factor ** min(max(failures - 1, 0), 64), self.maximum)
        return base * (0.5 + self.jitter() / 2)


# -- the machine -----------------------------------------------------------------

IDLE = "IDLE"
CONNECTING = "CONNECTING"
HANDSHAKING = "HANDSHAKING"
UP = "UP"
WAITING = "WAITING"
DROPPING = "DROPPING"
RESETTING = "RESETTING"
STOPPED = "STOPPED"

#: (state, event) -> (next state, action).  Events not listed are ignored.
TRANSITIONS: Dict[Tuple[str, str], Tuple[str, Optional[str]]] = {
    (IDLE, "start"): (CONNECTING, "_connect"),
    (CONNECTING, "connected"): (HANDSHAKING, None),
    (CONNECTING, "failed"): (WAITING, "_wait"),
    (CONNECTING, "reset"): (CONNECTING, "_reconnect"),
    (HANDSHAKING, "ready"): (UP, "_ready"),
    (HANDSHAKING, "lost"): (WAITING, "_wait"),
    (HANDSHAKING, "dead"): (DROPPING, "_abort"),
    (HANDSHAKING, "reset"): (RESETTING, "_abort"),
    (UP, "lost"): (WAITING, "_wait"),
    (UP, "dead"): (DROPPING, "_abort"),
    (UP, "reset"): (RESETTING, "_abort"),
    (DROPPING, "lost"): (WAITING, "_wait"),
    (DROPPING, "reset"): (RESETTING, None),
    (RESETTING, "lost"): (CONNECTING, "_connect"),
    (WAITING, "retry"): (CONNECTING, "_reconnect"),
    (WAITING, "reset"): (CONNECTING, "_reconnect"),
}
for _state in (IDLE, CONNECTING, HANDSHAKING, UP, WAITING, DROPPING, RESETTING):
    TRANSITIONS[(_state, "stop")] = (STOPPED, "_shutdown")
del _state
TRANSITIONS[(STOPPED, "start")] = (CONNECTING, "_connect")


class _Factory(Factory):
    noisy = False

    def __init__(self, connection: "ReconnectingConnection") -> None:
        self._connection = connection

    def buildProtocol(self, addr):
        return self._connection.build_protocol(addr)


class ReconnectingConnection:
    """
    One outbound connection, reconnecting per `TRANSITIONS`.

    ``endpoint`` is dialled for each attempt; ``backoff`` paces the attempts
    after failures; ``description`` names the other side in logs.  Owners
    subclass it and override the hooks: `build_protocol` (required),
    `connection_failed`, `retry_delay`, `up_changed`.
    """

    log = Logger()

    def __init__(self, endpoint, clock, backoff: Backoff, description: str) -> None:
        self.state = IDLE
        self.protocol = None
        self.failures = 0
        self._endpoint = endpoint
        self._clock = clock
        self._backoff = backoff
        self._description = description
        self._attempt: Optional[Deferred] = None
        self._retry_call: Optional[IDelayedCall] = None
        self._factory = _Factory(self)

    # -- hooks -----------------------------------------------------------------

    def build_protocol(self, addr):
        """
        The protocol for a new connection (it reports back to this machine).
        The one hook every user must provide (`DatastoreLink`, the peer
        link's slot): there is no sensible default protocol.
        """
        raise NotImplementedError

    def connection_failed(self) -> None:
        """An attempt failed or the connection was lost; the wait is next."""

    def retry_delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row."""
        return self._backoff.delay(failures)

    def up_changed(self, up: bool) -> None:
        """The connection became UP, or stopped being UP."""

    # -- events ----------------------------------------------------------------

    def fire(self, event: str) -> None:
        """Take ``event``: move per `TRANSITIONS` and run the action."""
        old = machine.fire(self, TRANSITIONS, event)
        if old is not None and (old == UP) != (self.state == UP):
            self.up_changed(self.state == UP)

    def start(self) -> None:
        """Connect, and keep connecting until `stop`."""
        self.fire("start")

    def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        self.fire("stop")

    def reset(self) -> None:
        """Drop the connection and reconnect at once, forgetting past failures."""
        self.failures = 0
        self.fire("reset")

    def retry_now(self) -> None:
        """While waiting to reconnect, reconnect now (the other side is back)."""
        self.fire("retry")

    def dead(self) -> None:
        """The other side has been silent too long: drop the connection."""
        self.fire("dead")

    # -- actions ---------------------------------------------------------------

    def _connect(self) -> None:
        self.protocol = None
        d = self._attempt = self._endpoint.connect(self._factory)
        d.addCallbacks(self._attempt_done, self._attempt_failed,
                       callbackArgs=(d,), errbackArgs=(d,))

    def _reconnect(self) -> None:
        self._cancel()
        self._connect()

    def _wait(self) -> None:
        self.failures += 1
        self.connection_failed()
        delay = self.retry_delay(self.failures)
        self._retry_call = self._clock.callLater(delay, self.fire, "retry")

    def _ready(self) -> None:
        self.failures = 0

    def _abort(self) -> None:
        if self.protocol is not None:
            self.protocol.drop()

    def _shutdown(self) -> None:
        self._cancel()
        self._abort()

    def _cancel(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.cancel()

    # -- endpoint and protocol callbacks ---------------------------------------

    def _attempt_done(self, result, d):
        if d is self._attempt:
            self._attempt = None
        return None

    def _attempt_failed(self, failure, d) -> None:
        if d is not self._attempt:
            return None
        self._attempt = None
        self.log.debug("connecting to {what} failed: {why}",
                       what=self._description, why=failure.getErrorMessage())
        self.fire("failed")
        return None

    def protocol_connected(self, protocol) -> None:
        """A connection was made; a stale one (not from the current attempt) is dropped."""
        if self.state != CONNECTING:
            protocol.drop()
            return
        self.protocol = protocol
        self.fire("connected")

    def protocol_ready(self, protocol) -> None:
        """The connection is ready for requests."""
        if protocol is self.protocol:
            self.fire("ready")

    def protocol_lost(self, protocol) -> None:
        """The connection closed."""
        if protocol is self.protocol:
            self.protocol = None
            self.fire("lost")
