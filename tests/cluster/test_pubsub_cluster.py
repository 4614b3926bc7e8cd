"""
Pub/sub routing through an in-process cluster of two datacenters
(`dynomite.node.pubsub_bus`): a message published on any node reaches each
subscription on every node exactly once while links are up; a node cut off
misses what is published meanwhile (at-most-once) and gets later messages
once it is back; PUBLISH and PUBSUB NUMSUB answer for the node asked.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.wire.requests import parse_whole

from tests.cluster.inprocess import make_cluster

LAYOUT = {"dc1": {"r1": 2, "r2": 1}, "dc2": {"r1": 1}}


def messages(client) -> list:
    """The messages a subscriber's connection received since it was cleared, as lists, and clear them."""
    raw = client.transport.value()
    client.transport.clear()
    requests, _ = parse_whole(raw)
    return [r for r in requests if r[0] in (b"message", b"pmessage", b"smessage")]


class PubSubClusterTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = make_cluster(self, LAYOUT)
        self.subscribers = []
        for node in self.cluster.nodes:
            sub = self.cluster.client(node)
            sub.command("SUBSCRIBE", "news")
            sub.command("PSUBSCRIBE", "n*")
            sub.transport.clear()
            self.subscribers.append(sub)

    def test_every_subscription_gets_each_message_once(self):
        publishers = [self.cluster.client(node) for node in self.cluster.nodes]
        for i in range(40):
            reply = publishers[i % len(publishers)].command("PUBLISH", "news", "m%d" % i)
            self.assertEqual(reply, b":2\r\n", "PUBLISH counts the subscriptions of its own node")
        expected = []
        for i in range(40):
            m = b"m%d" % i
            expected += [[b"message", b"news", m], [b"pmessage", b"n*", b"news", m]]
        for sub in self.subscribers:
            got = messages(sub)
            # one publisher's messages keep their order; messages of several
            # publishers interleave as they arrive
            self.assertEqual(sorted(got), sorted(expected))
        for node in self.cluster.nodes:
            self.assertEqual(node.parts.metrics.pubsub["delivered"], 80)
            self.assertEqual(node.parts.metrics.pubsub["dropped"], 0)

    def test_one_publishers_messages_keep_their_order(self):
        publisher = self.cluster.client(self.cluster.nodes[0])
        publisher.send(b"".join(b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$3\r\n%03d\r\n" % i for i in range(100)))
        self.cluster.settle()
        for sub in self.subscribers:
            got = [m[-1] for m in messages(sub) if m[0] == b"message"]
            self.assertEqual(got, [b"%03d" % i for i in range(100)])

    def test_shard_channels_reach_every_node(self):
        for sub in self.subscribers:
            sub.command("SSUBSCRIBE", "s")
            sub.transport.clear()
        self.assertEqual(self.cluster.client(self.cluster.nodes[-1]).command("SPUBLISH", "s", "x"), b":1\r\n")
        for sub in self.subscribers:
            self.assertEqual(messages(sub), [[b"smessage", b"s", b"x"]])

    def test_numsub_is_the_nodes_own(self):
        extra = self.cluster.client(self.cluster.nodes[0])
        extra.command("SUBSCRIBE", "news")
        self.assertEqual(self.cluster.client(self.cluster.nodes[0]).command("PUBSUB", "NUMSUB", "news"),
                         b"*2\r\n$4\r\nnews\r\n:2\r\n")
        self.assertEqual(self.cluster.client(self.cluster.nodes[1]).command("PUBSUB", "NUMSUB", "news"),
                         b"*2\r\n$4\r\nnews\r\n:1\r\n")

    def test_a_node_cut_off_misses_messages_and_gets_later_ones(self):
        cut = self.cluster.nodes[-1]  # the only node of dc2
        publisher = self.cluster.client(self.cluster.nodes[0])
        self.cluster.isolate(cut)
        publisher.command("PUBLISH", "news", "while away")
        self.assertEqual(self.cluster.nodes[0].parts.metrics.pubsub["dropped"], 1)
        self.cluster.rejoin(cut)
        publisher.command("PUBLISH", "news", "back")
        got = [m[-1] for m in messages(self.subscribers[-1])]
        self.assertEqual(got, [b"back", b"back"])
        for sub in self.subscribers[:-1]:
            got = [m[-1] for m in messages(sub)]
            self.assertEqual(got, [b"while away", b"while away", b"back", b"back"])

    def test_a_peer_without_publish_frames_is_skipped(self):
        publisher_node = self.cluster.nodes[0]
        for link in publisher_node.peers.values():
            for protocol in link.connections:
                protocol.publishes = False  # as a node that predates PUBLISH
        self.cluster.client(publisher_node).command("PUBLISH", "news", "x")
        self.assertEqual(publisher_node.parts.metrics.pubsub["dropped"], len(self.cluster.nodes) - 1)
        self.assertEqual(len(messages(self.subscribers[0])), 2)
        for sub in self.subscribers[1:]:
            self.assertEqual(messages(sub), [])
        for node in self.cluster.nodes:
            self.assertTrue(all(link.is_up for link in node.peers.values()), "no connection was dropped")
