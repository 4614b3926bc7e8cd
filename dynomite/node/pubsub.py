# -*- test-case-name: tests.unit.test_pubsub -*-
"""
The pub/sub subscriptions of one node's clients, and local delivery.

A subscription lives at the node the client is connected to: this registry
knows which of the node's clients listen to which channels, patterns and
shard channels, answers (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE with the bytes
Redis 7.0 sends, and delivers a message to the local subscribers it
reaches.  It does no I/O and knows nothing of peers: getting a message to
the other nodes is `dynomite.node.pubsub_bus`.

A *client* here is anything with a ``session`` (`dynomite.node.session`:
``resp``, ``subscriptions``, ``pubsub_only``) and a ``push(raw)`` method
(`dynomite.node.client.ClientProtocol`).  Replies and messages are written
in the client's protocol: arrays in RESP2, push frames (``>``) in RESP3.

Redis's rules, kept here:

- the count in a (un)subscribe reply is the client's channels plus
  patterns, or its shard channels for SSUBSCRIBE/SUNSUBSCRIBE;
- UNSUBSCRIBE without arguments leaves every channel, one reply each, or
  answers ``[unsubscribe, nil, 0]`` when there were none;
- a RESP2 client is in subscriber mode (``pubsub_only``) while it has any
  subscription; only (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, PING, QUIT and
  RESET are allowed then (`dynomite.node.pubsub_commands`);
- a message reaches each subscription once: a client subscribed to the
  channel and to two patterns matching it gets it three times, and the
  receiver count (PUBLISH's reply) says 3.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence

from dynomite.commands.globmatch import compile_pattern, match
from dynomite.wire.resp import bulk, integer, null

__all__ = ["CHANNEL", "PATTERN", "SHARD", "Subscriptions", "Registry"]

#: Kinds of subscription.
CHANNEL, PATTERN, SHARD = 0, 1, 2

_SUBSCRIBE = {CHANNEL: bulk(b"subscribe"), PATTERN: bulk(b"psubscribe"), SHARD: bulk(b"ssubscribe")}
_UNSUBSCRIBE = {CHANNEL: bulk(b"unsubscribe"), PATTERN: bulk(b"punsubscribe"), SHARD: bulk(b"sunsubscribe")}
_MESSAGE = bulk(b"message")
_PMESSAGE = bulk(b"pmessage")
_SMESSAGE = bulk(b"smessage")
#: array headers per protocol version: RESP2 arrays, RESP3 pushes
_HEAD3 = {2: b"*3\r\n", 3: b">3\r\n"}
_HEAD4 = {2: b"*4\r\n", 3: b">4\r\n"}


class Subscriptions:
    """One client's subscriptions (ordered sets: replies list them in subscription order)."""

    __slots__ = ("channels", "patterns", "shard")

    def __init__(self) -> None:
        self.channels: Dict[bytes, None] = {}
        self.patterns: Dict[bytes, None] = {}
        self.shard: Dict[bytes, None] = {}

    def of(self, kind: int) -> Dict[bytes, None]:
        return self.channels if kind == CHANNEL else self.patterns if kind == PATTERN else self.shard

    def count(self, kind: int) -> int:
        """The count Redis puts in a (un)subscribe reply of ``kind``."""
        if kind == SHARD:
            return len(self.shard)
        return len(self.channels) + len(self.patterns)

    @property
    def total(self) -> int:
        return len(self.channels) + len(self.patterns) + len(self.shard)


class Registry:
    """
    Every subscription of this node's clients.  ``added(kind, name)`` is
    told each time a channel or pattern gets its first subscriber here
    (keyspace notifications start on demand).
    """

    def __init__(self, added: Optional[Callable[[int, bytes], None]] = None) -> None:
        #: channel -> its subscribers (ordered)
        self.channels: Dict[bytes, Dict[object, None]] = {}
        #: pattern -> its subscribers
        self.patterns: Dict[bytes, Dict[object, None]] = {}
        self._matchers: Dict[bytes, Callable[[bytes], bool]] = {}
        #: shard channel -> its subscribers
        self.shard: Dict[bytes, Dict[object, None]] = {}
        self._added = added

    def _table(self, kind: int) -> Dict[bytes, Dict[object, None]]:
        return self.channels if kind == CHANNEL else self.patterns if kind == PATTERN else self.shard

    # -- subscribing -----------------------------------------------------------

    def subscribe(self, client, kind: int, names: Sequence[bytes]) -> bytes:
        """Subscribe ``client`` to ``names``; the replies, one per name, joined."""
        session = client.session
        subs = session.subscriptions
        if subs is None:
            subs = session.subscriptions = Subscriptions()
        mine = subs.of(kind)
        table = self._table(kind)
        head = _HEAD3[session.resp]
        word = _SUBSCRIBE[kind]
        out = []
        for name in names:
            if name not in mine:
                mine[name] = None
                listeners = table.get(name)
                if listeners is None:
                    listeners = table[name] = {}
                    if kind == PATTERN:
                        self._matchers[name] = compile_pattern(name)
                    if self._added is not None:
                        self._added(kind, name)
                listeners[client] = None
            out.append(head + word + bulk(name) + integer(subs.count(kind)))
        self._mode(session)
        return b"".join(out)

    def unsubscribe(self, client, kind: int, names: Sequence[bytes]) -> bytes:
        """
        Unsubscribe ``client`` from ``names`` (every subscription of ``kind``
        when empty); the replies, joined.
        """
        session = client.session
        subs = session.subscriptions
        head = _HEAD3[session.resp]
        word = _UNSUBSCRIBE[kind]
        mine = subs.of(kind) if subs is not None else {}
        if not names:
            names = list(mine)
            if not names:
                return head + word + null(session.resp) + integer(0)
        out = []
        for name in names:
            if name in mine:
                del mine[name]
                self._forget(kind, name, client)
            out.append(head + word + bulk(name) + integer(subs.count(kind) if subs is not None else 0))
        self._mode(session)
        return b"".join(out)

    def drop(self, client) -> None:
        """Forget every subscription of ``client`` (it disconnected, or RESET), without replies."""
        session = client.session
        subs = session.subscriptions
        if subs is None:
            return
        for kind in (CHANNEL, PATTERN, SHARD):
            for name in subs.of(kind):
                self._forget(kind, name, client)
        session.subscriptions = None
        session.pubsub_only = False

    def _forget(self, kind: int, name: bytes, client) -> None:
        table = self._table(kind)
        listeners = table.get(name)
        if listeners is None:
            return
        listeners.pop(client, None)
        if not listeners:
            del table[name]
            if kind == PATTERN:
                self._matchers.pop(name, None)

    @staticmethod
    def _mode(session) -> None:
        subs = session.subscriptions
        if subs is not None and not subs.total:
            session.subscriptions = subs = None
        session.pubsub_only = subs is not None and session.resp == 2

    # -- delivering ------------------------------------------------------------

    def deliver(self, channel: bytes, message: bytes, shard: bool = False) -> int:
        """
        Push ``message`` to every local subscription it reaches (the
        channel's, or the shard channel's when ``shard``, and every matching
        pattern's); returns how many received it.
        """
        receivers = 0
        if shard:
            listeners = self.shard.get(channel)
            if listeners:
                receivers += self._push(listeners, _HEAD3, _SMESSAGE + bulk(channel) + bulk(message))
            return receivers
        listeners = self.channels.get(channel)
        if listeners:
            receivers += self._push(listeners, _HEAD3, _MESSAGE + bulk(channel) + bulk(message))
        if self.patterns:
            tail = None
            for pattern, matches in self._matchers.items():
                if matches(channel):
                    if tail is None:
                        tail = bulk(channel) + bulk(message)
                    receivers += self._push(self.patterns[pattern], _HEAD4, _PMESSAGE + bulk(pattern) + tail)
        return receivers

    @staticmethod
    def _push(listeners: Dict[object, None], heads: Dict[int, bytes], body: bytes) -> int:
        # a push may close a slow client, which unsubscribes it: iterate a copy
        clients = list(listeners)
        for client in clients:
            client.push(heads[client.session.resp] + body)
        return len(clients)

    # -- PUBSUB ----------------------------------------------------------------

    def names(self, kind: int, pattern: Optional[bytes] = None) -> List[bytes]:
        """PUBSUB CHANNELS / SHARDCHANNELS: channels with a subscriber here, matching ``pattern``."""
        table = self._table(kind)
        if pattern is None:
            return list(table)
        return [name for name in table if match(pattern, name)]

    def numsub(self, kind: int, names: Iterable[bytes]) -> List[int]:
        """PUBSUB NUMSUB / SHARDNUMSUB: subscribers here of each of ``names``."""
        table = self._table(kind)
        return [len(table.get(name, ())) for name in names]

    def numpat(self) -> int:
        """PUBSUB NUMPAT: distinct patterns with a subscriber here."""
        return len(self.patterns)
