"""Writes caused by one batch of replies or requests leave in one write per connection."""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import Clock, LoopingCall
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from dynomite.runtime import batching


class Writer:
    def __init__(self):
        self.batched = False
        self.flushes = 0
        self.items = []
        self.written = []

    def write(self, item):
        if batching.defer(self):
            self.items.append(item)
        else:
            self.written.append([item])

    def flush_batched(self):
        self.flushes += 1
        self.written.append(self.items)
        self.items = []


class BatchingTests(SynchronousTestCase):
    def test_outside_a_batch_nothing_waits(self):
        w = Writer()
        w.write(1)
        self.assertEqual(w.written, [[1]])

    def test_one_flush_per_writer_at_the_end_of_the_outermost_batch(self):
        a, b = Writer(), Writer()
        batching.begin()
        a.write(1)
        b.write(2)
        batching.begin()
        a.write(3)
        batching.end()
        self.assertEqual(a.written, [])
        a.write(4)
        batching.end()
        self.assertEqual(a.written, [[1, 3, 4]])
        self.assertEqual(b.written, [[2]])
        self.assertEqual((a.flushes, a.batched), (1, False))

    def test_writes_made_while_flushing_are_flushed_too(self):
        a, b = Writer(), Writer()

        def flush_and_write():
            Writer.flush_batched(a)
            batching.begin()
            b.write("late")
            batching.end()

        a.flush_batched = flush_and_write
        batching.begin()
        a.write("x")
        batching.end()
        self.assertEqual(b.written, [["late"]])

    def test_writes_a_flush_makes_through_other_writers_join_that_flush(self):
        """A writer leading gathered writes at the flush: each other writer still writes once."""
        a, b = Writer(), Writer()

        def flush_through_b():
            Writer.flush_batched(a)
            b.write("one")
            b.write("two")

        a.flush_batched = flush_through_b
        batching.begin()
        a.write("x")
        batching.end()
        self.assertEqual(b.written, [["one", "two"]])
        self.assertEqual((b.flushes, b.batched), (1, False))
        b.write("after")
        self.assertEqual(b.written[-1], ["after"])   # outside a batch again: at once

    def test_per_reactor_turn_holds_writes_until_the_turn_ends(self):
        clock = Clock()
        batching.per_reactor_turn(clock)
        self.addCleanup(batching.per_reactor_turn, None)
        a, b = Writer(), Writer()
        batching.begin()
        a.write(1)
        batching.end()
        batching.begin()
        a.write(2)
        b.write("b")
        batching.end()
        self.assertEqual((a.written, b.written), ([], []))
        a.write(3)   # outside a batch, but behind what a holds
        self.assertEqual(a.written, [])
        self.assertEqual(len(clock.getDelayedCalls()), 1)   # one flush for the whole turn
        clock.advance(0)
        self.assertEqual(a.written, [[1, 2, 3]])
        self.assertEqual(b.written, [["b"]])
        self.assertEqual(len(clock.getDelayedCalls()), 0)
        a.write(4)   # nothing held any more: at once
        self.assertEqual(a.written, [[1, 2, 3], [4]])


class DatastoreBatchTests(SynchronousTestCase):
    def test_requests_sent_in_one_batch_reach_redis_in_one_write(self):
        from twisted.internet.task import Clock

        from dynomite.datastore.pool import Datastore
        from dynomite.wire.inflight import Request

        from tests.fakes import FakeEndpoint, Transport, node_config

        class CountingTransport(Transport):
            def __init__(self):
                Transport.__init__(self)
                self.calls = 0

            def write(self, data):
                self.calls += 1
                Transport.write(self, data)

            def writeSequence(self, seq):
                self.calls += 1
                Transport.writeSequence(self, seq)

        clock = Clock()
        endpoint = FakeEndpoint()
        ds = Datastore(node_config(datastore_connections=1), clock, endpoint_factory=lambda a: endpoint)
        ds.startService()
        self.addCleanup(ds.stopService)
        factory, d = endpoint.attempts.pop(0)
        protocol = factory.buildProtocol(None)
        redis = CountingTransport()
        protocol.makeConnection(redis)
        d.callback(protocol)
        replies = []

        class Sink:
            def complete(self, raw):
                replies.append(raw)

            fail = complete

        batching.begin()
        for i in range(16):
            ds.send(Request(b"*1\r\n$4\r\nPING\r\n", lane=1), Sink())
        batching.end()
        self.assertEqual(redis.calls, 1)
        self.assertEqual(redis.value(), b"*1\r\n$4\r\nPING\r\n" * 16)
        protocol.dataReceived(b"+PONG\r\n" * 16)
        self.assertEqual(len(replies), 16)


class WriteNowTests(TestCase):
    """`batching.write_now` over real loopback TCP: everything arrives, in order."""

    def test_writes_queue_behind_what_the_socket_did_not_take(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        big = b"b" * (8 * 1024 * 1024)
        expected = b"a" * 100 + big + b"c" * 100 + b"d" * 100
        received = []
        done = Deferred()

        def drain(peer):
            try:
                while True:
                    data = peer.recv(1 << 20)
                    if not data:
                        break
                    received.append(data)
            except BlockingIOError:
                pass
            if sum(map(len, received)) >= len(expected):
                poll.stop()
                done.callback(None)

        class Sender(Protocol):
            def connectionMade(self):
                peer, _ = listener.accept()
                self.factory.peer = peer
                batching.write_now(self.transport, [b"a" * 100])
                batching.write_now(self.transport, [big])   # more than the socket takes
                self.assertQueued()
                # room in the socket again, with the transport still holding bytes
                received.append(peer.recv(1 << 16))
                batching.write_now(self.transport, [b"c" * 50, b"c" * 50])
                batching.write_now(self.transport, [b"d" * 100])
                peer.setblocking(False)
                poll.start(0.001)

            def assertQueued(self):
                assert self.transport.dataBuffer or self.transport._tempDataBuffer

        factory = ClientFactory.forProtocol(Sender)
        poll = LoopingCall(lambda: drain(factory.peer))
        connector = reactor.connectTCP("127.0.0.1", listener.getsockname()[1], factory)
        self.addCleanup(connector.disconnect)
        self.addCleanup(lambda: factory.peer.close())

        def check(_):
            data = b"".join(received)
            self.assertEqual(len(data), len(expected))
            self.assertTrue(data == expected, "bytes out of order")

        return done.addCallback(check)

    def test_other_transports_get_an_ordinary_write(self):
        transport = StringTransport()
        batching.write_now(transport, [b"x", b"y"])
        self.assertEqual(transport.value(), b"xy")
