# -*- test-case-name: tests.unit.test_pubsub -*-
"""
Keyspace notifications from this node's own Redis, for this node's
subscribers.

Redis publishes ``__keyspace@0__:<key>`` and ``__keyevent@0__:<event>``
messages on its own pub/sub when ``notify-keyspace-events`` is set.  The
node does not route them through the cluster: every replica's Redis
publishes its own as it applies a write, so a subscriber gets the
notifications of the keys its node holds.  The first client subscription
here to a channel or pattern starting with ``__key``
(`dynomite.node.pubsub_bus`) starts one dedicated connection to the local
Redis that PSUBSCRIBEs ``__key*__:*`` and hands every message to
`PubSubBus.notification`; the connection then stays up (reconnecting with
the shared backoff, `dynomite.runtime.reconnect`) for the node's life.
Notifications are at-most-once like every message: those Redis publishes
while this connection is down are lost.

This is the only use of the local Redis's pub/sub: clients' own channels
never reach it.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from dynomite.runtime.reconnect import Backoff, ReconnectingConnection
from dynomite.wire.replies import ReplyParser, bulk_value, elements
from dynomite.wire.resp import ProtocolError, encode_command

__all__ = ["KeyspaceEvents", "NOTIFICATIONS"]

#: What the dedicated connection subscribes to: every keyspace and keyevent channel.
NOTIFICATIONS = b"__key*__:*"

_PSUBSCRIBE = encode_command([b"PSUBSCRIBE", NOTIFICATIONS])


class _Notifications(Protocol):
    """The dedicated connection: AUTH if the datastore needs it, PSUBSCRIBE, then messages."""

    def __init__(self, owner: "KeyspaceEvents") -> None:
        self._owner = owner
        self._parser = ReplyParser()

    def connectionMade(self) -> None:
        self._owner.protocol_connected(self)
        greeting = self._owner.greeting
        self.transport.write((greeting or b"") + _PSUBSCRIBE)

    def dataReceived(self, data: bytes) -> None:
        owner = self._owner
        try:
            replies = self._parser.feed(data)
        except ProtocolError:
            self.transport.loseConnection()
            return
        for raw in replies:
            if raw[:1] == b"-":
                owner.log.warn("keyspace notifications: Redis answered {error}",
                               error=raw.strip().decode("utf-8", "replace"))
                self.transport.loseConnection()
                return
            parts = elements(raw)
            if len(parts) == 4 and parts[0] == b"$8\r\npmessage\r\n":
                owner.deliver(bulk_value(parts[2]), bulk_value(parts[3]))
            elif parts and parts[0] == b"$10\r\npsubscribe\r\n":
                owner.protocol_ready(self)

    def connectionLost(self, reason=None) -> None:
        self._owner.protocol_lost(self)

    def drop(self) -> None:
        self.transport.abortConnection()


class KeyspaceEvents(ReconnectingConnection):
    """
    The dedicated notification connection to ``endpoint`` (the local Redis);
    ``greeting`` is the raw AUTH command it needs first (None: none);
    ``deliver(channel, message)`` receives each notification.
    """

    log = Logger()

    def __init__(self, endpoint, clock, deliver: Callable[[bytes, bytes], object],
                 greeting: Optional[bytes] = None, backoff: Optional[Backoff] = None) -> None:
        ReconnectingConnection.__init__(self, endpoint, clock, backoff or Backoff(), "keyspace notifications")
        self.deliver = deliver
        self.greeting = greeting
        self.started = False

    def start(self) -> None:
        """Connect (once; later calls do nothing until `stop`)."""
        if not self.started:
            self.started = True
            self.log.info("subscribing to the local Redis's keyspace notifications")
            ReconnectingConnection.start(self)

    def stop(self) -> None:
        if self.started:
            self.started = False
            ReconnectingConnection.stop(self)

    def build_protocol(self, addr) -> _Notifications:
        return _Notifications(self)
