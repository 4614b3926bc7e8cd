# -*- test-case-name: tests.unit.test_datastore -*-
"""
One reconnecting connection to the local Redis.

Connection lifecycle (one `DatastoreLink` per connection):

    IDLE --start--> CONNECTING --ready--> CONNECTED --lost--> WAITING
    CONNECTING --failed--> WAITING --delay elapsed / retry_now--> CONNECTING
    any --stop--> STOPPED

The link tells its pool (`dynomite.datastore.pool`) when its connection is
ready or gone and when an attempt failed; the pool decides how long to wait
before the next attempt (backoff, or ejection).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from twisted.internet.protocol import Factory
from twisted.logger import Logger

from dynomite.datastore.protocol import DatastoreProtocol

if TYPE_CHECKING:
    from dynomite.datastore.pool import Datastore


class _LinkFactory(Factory):

    noisy = False
    def __init__(self, link: "DatastoreLink", clock) -> None:
        self._link = link
        self._clock = clock

    def buildProtocol(self, addr):
        return DatastoreProtocol(self._link, self._clock)


class DatastoreLink:
    """One reconnecting connection to Redis: the state machine above."""

    log = Logger()

    def __init__(self, pool: "Datastore", resp: int, clock, endpoint) -> None:
        self.pool = pool
        self.resp = resp
        self._clock = clock
        self._endpoint = endpoint
        self._factory = _LinkFactory(self, clock)
        self.state = "IDLE"
        self.protocol: Optional[DatastoreProtocol] = None
        self._attempt = None
        self._retry_call = None
        self._failures = 0

    # -- transitions -------------------------------------------------------

    def start(self) -> None:
        if self.state in ("IDLE", "WAITING"):
            self._connect()

    def stop(self) -> None:
        self.state = "STOPPED"
        self._cancel_retry()
        if self._attempt is not None:
            self._attempt.cancel()
        if self.protocol is not None:
            self.protocol.transport.abortConnection()

    def retry_now(self) -> None:
        if self.state == "WAITING":
            self._cancel_retry()
            self._connect()

    def _connect(self) -> None:
        self.state = "CONNECTING"
        self._attempt = self._endpoint.connect(self._factory)
        self._attempt.addErrback(self._connect_failed)

    def _connect_failed(self, failure) -> None:
        self._attempt = None
        if self.state != "CONNECTING":
            return
        self.log.debug("datastore connect failed: {f}", f=failure.getErrorMessage())
        self.pool.record_failure()
        self._wait()

    def connection_ready(self, protocol: DatastoreProtocol) -> None:
        self._attempt = None
        if self.state != "CONNECTING":
            protocol.transport.abortConnection()
            return
        self.state = "CONNECTED"
        self.protocol = protocol
        self._failures = 0
        self.pool.link_up(self)

    def connection_lost(self, protocol: DatastoreProtocol) -> None:
        if protocol is not self.protocol:
            # lost before it became ready: a failed attempt
            if self.state == "CONNECTING":
                self._attempt = None
                self.pool.record_failure()
                self._wait()
            return
        self.protocol = None
        self.pool.link_down(self)
        if self.state == "CONNECTED":
            self.pool.record_failure()
            self._wait()

    def _wait(self) -> None:
        self.state = "WAITING"
        self._failures += 1
        delay = self.pool.reconnect_delay(self._failures)
        self._retry_call = self._clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        if self.state == "WAITING":
            self._connect()

    def _cancel_retry(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
