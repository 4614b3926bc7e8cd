# -*- test-case-name: tests.cluster.test_pubsub_cluster -*-
"""
Pub/sub across the cluster: how a message published on one node reaches
the subscribers of every node of every datacenter.

Subscriptions live at the node the client is connected to
(`dynomite.node.pubsub.Registry`).  PUBLISH (and SPUBLISH) on a node
delivers the message to that node's own subscribers and sends one PUBLISH
peer frame to every other node of the cluster, over the links the node
already keeps to each of them (`dynomite.peers.link.PeerLink.publish`); a
node that receives the frame delivers it to its own subscribers and
forwards it nowhere.  So while the links are up, each subscription in the
cluster gets each message exactly once, and the messages of one publishing
client reach each subscriber in the order they were published (they travel
on one connection per peer, chosen by the client's id).

What this does not do, as Redis does not: pub/sub is at-most-once.  A
message published while the link to a node is down (or to a node older than
PUBLISH frames) is not delivered there, and is not kept for later; it is
counted as dropped.  PUBLISH answers the number of subscriptions *of this
node* that received the message, as Redis Cluster does: counting the whole
cluster's would make every PUBLISH wait for every node of every
datacenter.  Shard channels (SPUBLISH/SSUBSCRIBE) travel the same way:
Redis Cluster keeps them inside the slot's shard, but here every node
fronts a full keyspace and any node may hold the subscriber, so they reach
every node too; they are kept apart from plain channels as in Redis.

Keyspace notifications are not routed: the first subscription of a client
of this node to a channel or pattern starting with ``__key`` starts the
node's `dynomite.node.keyspace_events.KeyspaceEvents` feed, which
subscribes to the notifications of this node's own Redis (when Redis has
``notify-keyspace-events`` set) and delivers them to this node's
subscribers only.
"""

from __future__ import annotations

from typing import Dict, Optional

from twisted.logger import Logger

from dynomite.node.pubsub import SHARD, Registry
from dynomite.stats import NodeMetrics

__all__ = ["PubSubBus", "KEYSPACE_PREFIX"]

#: Channels and patterns that ask for keyspace notifications.
KEYSPACE_PREFIX = b"__key"


class PubSubBus:
    """
    This node's pub/sub: its `Registry`, and the peer ``links`` (a dict of
    `PeerLink` by node name, changed in place on reload) that carry
    messages to the other nodes.  ``keyspace`` (an object with ``start()``)
    is started by the first ``__key*`` subscription.
    """

    log = Logger()

    def __init__(self, links: Optional[Dict[str, object]] = None, metrics: Optional[NodeMetrics] = None,
                 keyspace=None) -> None:
        self.links: Dict[str, object] = links if links is not None else {}
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.counts = self.metrics.pubsub
        self.keyspace = keyspace
        self.registry = Registry(self._added)

    # -- subscriptions ---------------------------------------------------------

    def subscribe(self, client, kind: int, names) -> bytes:
        try:
            return self.registry.subscribe(client, kind, names)
        finally:
            self._gauges()

    def unsubscribe(self, client, kind: int, names) -> bytes:
        try:
            return self.registry.unsubscribe(client, kind, names)
        finally:
            self._gauges()

    def drop(self, client) -> None:
        """``client`` left, or RESET: its subscriptions go, without replies."""
        if client.session.subscriptions is not None:
            self.registry.drop(client)
            self._gauges()

    def _gauges(self) -> None:
        registry = self.registry
        gauges = self.metrics.pubsub_subscriptions
        gauges["channel"] = len(registry.channels)
        gauges["pattern"] = len(registry.patterns)
        gauges["shard_channel"] = len(registry.shard)

    def _added(self, kind: int, name: bytes) -> None:
        if kind != SHARD and name.startswith(KEYSPACE_PREFIX) and self.keyspace is not None:
            try:
                self.keyspace.start()
            except Exception:
                self.log.failure("keyspace notifications could not start")

    # -- messages --------------------------------------------------------------

    def publish(self, lane: int, channel: bytes, message: bytes, shard: bool = False) -> int:
        """
        A client of this node published: deliver here, and send one PUBLISH
        frame to every other node (on connection ``lane`` of each link, so a
        client's messages keep their order).  Returns this node's receivers.
        """
        counts = self.counts
        counts["published"] += 1
        receivers = self.registry.deliver(channel, message, shard)
        counts["delivered"] += receivers
        for link in self.links.values():
            if not link.publish(lane, channel, message, shard):
                counts["dropped"] += 1
        return receivers

    def received(self, channel: bytes, message: bytes, shard: bool = False) -> int:
        """Another node relayed a message: deliver it here only."""
        self.counts["received"] += 1
        receivers = self.registry.deliver(channel, message, shard)
        self.counts["delivered"] += receivers
        return receivers

    def notification(self, channel: bytes, message: bytes) -> int:
        """A keyspace notification from this node's Redis: deliver it here only."""
        receivers = self.registry.deliver(channel, message)
        self.counts["delivered"] += receivers
        return receivers

    # -- introspection ---------------------------------------------------------

    def info(self) -> Dict[str, int]:
        """Fields of INFO's pub/sub lines (this node)."""
        registry = self.registry
        return {
            "pubsub_channels": len(registry.channels),
            "pubsub_patterns": len(registry.patterns),
            "pubsub_shardchannels": len(registry.shard),
            "pubsub_messages_published": self.counts["published"],
            "pubsub_messages_received": self.counts["received"],
            "pubsub_messages_delivered": self.counts["delivered"],
            "pubsub_messages_dropped": self.counts["dropped"],
        }
