"""Writes caused by one batch of replies or requests leave in one write per connection."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite import batching


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


class DatastoreBatchTests(SynchronousTestCase):
    def test_requests_sent_in_one_batch_reach_redis_in_one_write(self):
        from twisted.internet.task import Clock

        from dynomite.datastore import Datastore

        from .fakes import FakeEndpoint, Transport, node_config

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
            ds.send(1, 2, b"*1\r\n$4\r\nPING\r\n", Sink())
        batching.end()
        self.assertEqual(redis.calls, 1)
        self.assertEqual(redis.value(), b"*1\r\n$4\r\nPING\r\n" * 16)
        protocol.dataReceived(b"+PONG\r\n" * 16)
        self.assertEqual(len(replies), 16)
