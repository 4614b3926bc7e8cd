# -*- test-case-name: tests.unit.test_datastore -*-
"""
One reconnecting connection to the local Redis.

Each `DatastoreLink` keeps one `dynomite.datastore.protocol.DatastoreProtocol`
connection up with the reconnect machine every outbound link shares,
`dynomite.runtime.reconnect`: HANDSHAKING is a RESP3 connection's HELLO 3
(a RESP2 connection is ready at once), and the pool's health monitor may
end a wait early (`retry_now`).

The link tells its pool (`dynomite.datastore.pool`) when it becomes UP or
stops being UP and when an attempt failed or a connection was lost; the
pool decides how long to wait before the next attempt: the shared backoff,
or until an ejection ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynomite.datastore.protocol import DatastoreProtocol
from dynomite.runtime.reconnect import Backoff, ReconnectingConnection

if TYPE_CHECKING:
    from dynomite.datastore.pool import Datastore

__all__ = ["DatastoreLink"]


class DatastoreLink(ReconnectingConnection):
    """One reconnecting connection to Redis speaking ``resp`` (2 or 3)."""

    def __init__(self, pool: "Datastore", resp: int, clock, endpoint, backoff: Backoff) -> None:
        ReconnectingConnection.__init__(self, endpoint, clock, backoff, "datastore")
        self.pool = pool
        self.resp = resp

    def build_protocol(self, addr) -> DatastoreProtocol:
        protocol = DatastoreProtocol(self, self._clock)
        self.pool.track(protocol)
        return protocol

    def connection_failed(self) -> None:
        self.pool.record_failure()

    def retry_delay(self, failures: int) -> float:
        return self.pool.reconnect_delay(failures)

    def up_changed(self, up: bool) -> None:
        self.pool.link_changed(self, up)
