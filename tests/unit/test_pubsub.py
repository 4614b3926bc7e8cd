"""
Pub/sub on one node (`dynomite.node.pubsub`, `dynomite.node.pubsub_commands`,
`dynomite.node.client.ClientProtocol.push`): the exact bytes Redis 7.0 sends
for subscriptions, messages and PUBSUB in RESP2 and RESP3, subscriber mode
and its refusals, RESET, and the output buffer limit of a slow subscriber.
The same replies are compared with a real Redis in
tests/integration/test_pubsub.py.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from dynomite.node.assembly import NodeParts
from dynomite.node.client import ClientFactory
from dynomite.node.pubsub import CHANNEL, Registry
from dynomite.wire.resp import encode_command

from tests.fakes import FakeDatastore, FakeEndpoint, FakeMonitor, node_config
from tests.unit.test_node import NodeTestCase


def cmd(*args) -> bytes:
    return encode_command([a if isinstance(a, bytes) else a.encode() for a in args])


SUB_A = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
MSG_A = b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"
REFUSED_GET = (b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
               b"RESET are allowed in this context\r\n")


class SubscribeTests(NodeTestCase):
    def test_subscribe_replies_count_channels_and_patterns(self):
        self.send(cmd("SUBSCRIBE", "a", "b", "a"))
        self.assertEqual(self.written(), SUB_A + b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
                         + b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:2\r\n")
        self.send(cmd("PSUBSCRIBE", "h*"))
        self.assertEqual(self.written(), b"*3\r\n$10\r\npsubscribe\r\n$2\r\nh*\r\n:3\r\n")
        # shard channels have their own count
        self.send(cmd("SSUBSCRIBE", "s"))
        self.assertEqual(self.written(), b"*3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n")
        self.send(cmd("UNSUBSCRIBE", "b", "zz"))
        self.assertEqual(self.written(), b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:2\r\n"
                         + b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nzz\r\n:2\r\n")

    def test_unsubscribe_everything_and_nothing(self):
        self.send(cmd("UNSUBSCRIBE"))
        self.assertEqual(self.written(), b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n")
        self.send(cmd("SUBSCRIBE", "a", "b"))
        self.written()
        self.send(cmd("UNSUBSCRIBE"))
        self.assertEqual(self.written(), b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"
                         b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n")
        # out of subscriber mode again
        self.send(cmd("PUNSUBSCRIBE"))
        self.assertEqual(self.written(), b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n")
        self.send(cmd("ECHO", "x"))
        self.assertEqual(self.written(), b"$1\r\nx\r\n")

    def test_subscriber_mode_allows_only_subscriptions_ping_quit_reset(self):
        self.send(cmd("SUBSCRIBE", "a"))
        self.written()
        self.send(cmd("GET", "k") + cmd("GET", "j") + cmd("CONFIG", "GET", "x") + cmd("PING")
                  + cmd("PING", "there"))
        self.assertEqual(self.datastore.sent, [], "nothing reaches Redis, not even as a run")
        self.assertEqual(self.written(), REFUSED_GET + REFUSED_GET
                         + b"-ERR Can't execute 'config|get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / "
                           b"PING / QUIT / RESET are allowed in this context\r\n"
                         + b"*2\r\n$4\r\npong\r\n$0\r\n\r\n" + b"*2\r\n$4\r\npong\r\n$5\r\nthere\r\n")

    def test_reset_leaves_subscriber_mode(self):
        self.send(cmd("SUBSCRIBE", "a") + cmd("PSUBSCRIBE", "*"))
        self.written()
        self.send(cmd("RESET"))
        self.assertEqual(self.written(), b"+RESET\r\n")
        self.assertEqual(self.node.pubsub.registry.channels, {})
        self.assertEqual(self.node.pubsub.registry.patterns, {})
        self.send(cmd("GET", "k") + cmd("PING"))
        self.assertEqual(len(self.datastore.sent), 1)
        self.datastore.answer(b"$-1\r\n")
        self.assertEqual(self.written(), b"$-1\r\n+PONG\r\n")

    def test_resp3_subscriber_keeps_running_commands(self):
        self.send(cmd("HELLO", "3"))
        self.written()
        self.send(cmd("SUBSCRIBE", "a"))
        self.assertEqual(self.written(), b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
        self.send(cmd("PING") + cmd("CLIENT", "ID"))
        self.assertEqual(self.written(), b"+PONG\r\n:%d\r\n" % self.client.session.id)
        self.send(cmd("GET", "k"))
        self.assertEqual(len(self.datastore.sent), 1)
        # its own message comes as a push before the reply to PUBLISH, after the GET's reply
        self.send(cmd("PUBLISH", "a", "hi"))
        self.assertEqual(self.written(), b"")
        self.datastore.answer(b"$1\r\nv\r\n")
        self.assertEqual(self.written(), b"$1\r\nv\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n:1\r\n")
        self.send(cmd("UNSUBSCRIBE", "x") + cmd("UNSUBSCRIBE") + cmd("UNSUBSCRIBE"))
        self.assertEqual(self.written(), b">3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n:1\r\n"
                         b">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"
                         b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n")

    def test_hello_2_while_subscribed_enters_subscriber_mode(self):
        self.send(cmd("HELLO", "3") + cmd("SUBSCRIBE", "a"))
        self.written()
        self.send(cmd("HELLO", "2"))
        self.written()
        self.send(cmd("GET", "k"))
        self.assertEqual(self.written(), REFUSED_GET)


class PublishTests(NodeTestCase):
    def test_message_reaches_channel_and_pattern_subscriptions(self):
        sub, sub_transport = self.connect()
        self.send(cmd("SUBSCRIBE", "a") + cmd("PSUBSCRIBE", "[ab]", "z*"), sub)
        self.written(sub_transport)
        self.send(cmd("PUBLISH", "a", "hi"))
        self.assertEqual(self.written(), b":2\r\n")
        self.assertEqual(self.written(sub_transport),
                         MSG_A + b"*4\r\n$8\r\npmessage\r\n$4\r\n[ab]\r\n$1\r\na\r\n$2\r\nhi\r\n")
        self.send(cmd("PUBLISH", "nobody", "x"))
        self.assertEqual(self.written(), b":0\r\n")
        self.assertEqual(self.written(sub_transport), b"")
        self.assertEqual(self.parts.metrics.pubsub["published"], 2)
        self.assertEqual(self.parts.metrics.pubsub["delivered"], 2)
        self.assertEqual(self.parts.metrics.pubsub_subscriptions, {"channel": 1, "pattern": 2, "shard_channel": 0})

    def test_shard_channels_are_apart_from_channels(self):
        sub, sub_transport = self.connect()
        self.send(cmd("SSUBSCRIBE", "a") + cmd("PSUBSCRIBE", "*"), sub)
        self.written(sub_transport)
        self.send(cmd("SPUBLISH", "a", "hi"))
        self.assertEqual(self.written(), b":1\r\n")
        self.assertEqual(self.written(sub_transport), b"*3\r\n$8\r\nsmessage\r\n$1\r\na\r\n$2\r\nhi\r\n")

    def test_a_client_that_leaves_is_forgotten(self):
        sub, sub_transport = self.connect()
        self.send(cmd("SUBSCRIBE", "a"), sub)
        sub.connectionLost(None)
        self.send(cmd("PUBLISH", "a", "hi") + cmd("PUBSUB", "NUMSUB", "a"))
        self.assertEqual(self.written(), b":0\r\n*2\r\n$1\r\na\r\n:0\r\n")
        self.assertEqual(self.parts.metrics.pubsub_subscriptions["channel"], 0)

    def test_pubsub_introspection(self):
        sub, _ = self.connect()
        self.send(cmd("SUBSCRIBE", "news", "sport") + cmd("PSUBSCRIBE", "n*", "n*") + cmd("SSUBSCRIBE", "s1"),
                  sub)
        self.send(cmd("PUBSUB", "CHANNELS") + cmd("PUBSUB", "CHANNELS", "n*") + cmd("PUBSUB", "NUMPAT")
                  + cmd("PUBSUB", "NUMSUB", "news", "x") + cmd("PUBSUB", "NUMSUB")
                  + cmd("PUBSUB", "SHARDCHANNELS") + cmd("PUBSUB", "SHARDNUMSUB", "s1"))
        self.assertEqual(self.written(),
                         b"*2\r\n$4\r\nnews\r\n$5\r\nsport\r\n" + b"*1\r\n$4\r\nnews\r\n" + b":1\r\n"
                         + b"*4\r\n$4\r\nnews\r\n:1\r\n$1\r\nx\r\n:0\r\n" + b"*0\r\n"
                         + b"*1\r\n$2\r\ns1\r\n" + b"*2\r\n$2\r\ns1\r\n:1\r\n")
        self.send(cmd("PUBSUB", "NOPE") + cmd("PUBSUB", "NUMPAT", "x") + cmd("PUBSUB"))
        self.assertEqual(self.written(),
                         b"-ERR unknown subcommand 'NOPE'. Try PUBSUB HELP.\r\n"
                         b"-ERR wrong number of arguments for 'pubsub|numpat' command\r\n"
                         b"-ERR wrong number of arguments for 'pubsub' command\r\n")
        self.send(cmd("PUBSUB", "HELP"))
        self.assertTrue(self.written().startswith(b"*14\r\n+PUBSUB <subcommand>"))


class OutputLimitTests(NodeTestCase):
    def subscriber(self):
        sub, transport = self.connect()
        self.send(cmd("SUBSCRIBE", "a"), sub)
        transport.clear()
        return sub, transport

    def test_hard_limit_closes_a_subscriber_that_does_not_read(self):
        self.start(pubsub_output_hard_limit=1000)
        sub, transport = self.subscriber()
        message = b"x" * 100
        for _ in range(20):
            self.send(cmd("PUBLISH", "a", message))
        self.assertFalse(transport.aborted, "a reading subscriber is never closed")
        sub.pauseProducing()  # its socket buffer is full: it does not read
        for _ in range(7):  # 126 bytes each
            self.send(cmd("PUBLISH", "a", message))
        self.assertFalse(transport.aborted)
        self.send(cmd("PUBLISH", "a", message))
        self.assertTrue(transport.aborted)
        self.assertEqual(self.parts.metrics.client_limits["output_buffer"], 1)
        self.written()
        self.send(cmd("PUBLISH", "a", message))
        self.assertEqual(self.written(), b":0\r\n", "its subscriptions are gone")

    def test_soft_limit_for_long_enough(self):
        self.start(pubsub_output_hard_limit=10 ** 6, pubsub_output_soft_limit=100,
                   pubsub_output_soft_seconds=5)
        sub, transport = self.subscriber()
        sub.pauseProducing()
        self.send(cmd("PUBLISH", "a", b"x" * 200))
        self.clock.advance(4)
        self.send(cmd("PUBLISH", "a", b"x"))
        self.assertFalse(transport.aborted)
        sub.resumeProducing()  # it read everything: the clock starts again
        sub.pauseProducing()
        self.send(cmd("PUBLISH", "a", b"x" * 200))
        self.clock.advance(4)
        self.send(cmd("PUBLISH", "a", b"x"))
        self.assertFalse(transport.aborted)
        self.clock.advance(1)
        self.send(cmd("PUBLISH", "a", b"x"))
        self.assertTrue(transport.aborted)


class RegistryTests(NodeTestCase):
    def test_added_is_told_of_first_subscribers_only(self):
        added = []
        registry = Registry(lambda kind, name: added.append((kind, name)))
        registry.subscribe(self.client, CHANNEL, [b"a", b"a", b"b"])
        other, _ = self.connect()
        registry.subscribe(other, CHANNEL, [b"a"])
        self.assertEqual(added, [(CHANNEL, b"a"), (CHANNEL, b"b")])
        self.assertEqual(registry.numsub(CHANNEL, [b"a", b"b"]), [2, 1])


class KeyspaceNotificationTests(NodeTestCase):
    def setUp(self):
        self.endpoint = FakeEndpoint()
        self.clock = Clock()
        datastore = FakeDatastore()
        datastore.greeting = lambda resp: b"*2\r\n$4\r\nAUTH\r\n$1\r\np\r\n"
        self.datastore = datastore
        self.parts = NodeParts(node_config(data_dir=self.mktemp()), self.clock, datastore, FakeMonitor(),
                               keyspace_endpoint=self.endpoint)
        self.parts.start()
        self.addCleanup(self.parts.stop)
        self.node = self.parts.node
        self.factory = ClientFactory(self.node, self.clock)
        self.client, self.transport = self.connect()

    def test_started_by_the_first_keyspace_subscription_only(self):
        self.send(cmd("SUBSCRIBE", "plain") + cmd("PSUBSCRIBE", "n*"))
        self.assertEqual(self.endpoint.attempts, [], "no notification connection for other channels")
        self.send(cmd("PSUBSCRIBE", "__keyspace@0__:*"))
        protocol, redis = self.endpoint.accept()
        self.assertEqual(redis.value(), b"*2\r\n$4\r\nAUTH\r\n$1\r\np\r\n"
                                        b"*2\r\n$10\r\nPSUBSCRIBE\r\n$10\r\n__key*__:*\r\n")
        other, _ = self.connect()
        self.send(cmd("SUBSCRIBE", "__keyevent@0__:set"), other)
        self.assertEqual(self.endpoint.attempts, [], "one connection for the node")
        self.written()
        protocol.dataReceived(b"+OK\r\n*3\r\n$10\r\npsubscribe\r\n$10\r\n__key*__:*\r\n:1\r\n")
        protocol.dataReceived(b"*4\r\n$8\r\npmessage\r\n$10\r\n__key*__:*\r\n$17\r\n__keyspace@0__:k1\r\n"
                              b"$3\r\nset\r\n")
        self.assertEqual(self.written(), b"*4\r\n$8\r\npmessage\r\n$16\r\n__keyspace@0__:*\r\n"
                                         b"$17\r\n__keyspace@0__:k1\r\n$3\r\nset\r\n")
        self.assertEqual(self.parts.metrics.pubsub["published"], 0, "notifications are not published on")
        # the connection comes back after a loss
        protocol.connectionLost(None)
        self.clock.advance(3)
        self.assertEqual(len(self.endpoint.attempts), 1)


class ChannelPermissionTests(NodeTestCase):
    def test_a_restricted_user_uses_only_its_channels(self):
        self.start(users=["user u on >pw ~* &news.* &exact +@all"])
        publisher, publisher_transport = self.connect()
        for client in (self.client, publisher):
            self.send(cmd("AUTH", "u", "pw"), client)
        self.written()
        publisher_transport.clear()
        noperm = b"-NOPERM this user has no permissions to access one of the channels used as arguments\r\n"
        self.send(cmd("SUBSCRIBE", "news.a", "other") + cmd("PSUBSCRIBE", "news.a*") + cmd("PSUBSCRIBE", "news.*")
                  + cmd("SSUBSCRIBE", "exact"))
        self.assertEqual(self.written(), noperm + noperm + b"*3\r\n$10\r\npsubscribe\r\n$6\r\nnews.*\r\n:1\r\n"
                         + b"*3\r\n$10\r\nssubscribe\r\n$5\r\nexact\r\n:1\r\n")
        self.send(cmd("PUBLISH", "other", "x") + cmd("PUBLISH", "news.b", "x") + cmd("SPUBLISH", "nope", "x"),
                  publisher)
        self.assertEqual(self.written(publisher_transport), noperm + b":1\r\n" + noperm)
