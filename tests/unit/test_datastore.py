"""
The pipelined datastore connections (dynomite.datastore: protocol, link,
pool), with a fake endpoint and clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.commands import lww
from dynomite.datastore.pool import Datastore
from dynomite.datastore.protocol import HELLO_3, SAMPLE_EVERY, UNAVAILABLE
from dynomite.wire.inflight import Request

from dynomite.wire.resp import encode_command

from tests.fakes import FakeEndpoint, Sink, drop, node_config


class DatastoreTests(SynchronousTestCase):
    def make(self, **overrides):
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        overrides.setdefault("datastore_connections", 2)
        config = node_config(**overrides)
        self.ds = Datastore(config, self.clock, jitter=lambda: 1.0, endpoint_factory=lambda a: self.endpoint)
        self.ds.startService()
        self.addCleanup(self.ds.stopService)
        return self.ds

    def connect_all(self):
        """Accept every pending attempt; RESP3 links get their HELLO answered."""
        links = []
        while self.endpoint.attempts:
            protocol, transport = self.endpoint.accept()
            if transport.value() == HELLO_3:
                transport.clear()
                protocol.dataReceived(b"%1\r\n$5\r\nproto\r\n:3\r\n")
            links.append((protocol, transport))
        return links

    def test_with_last_writer_wins_a_connection_loads_the_script_before_it_is_used(self):
        ds = self.make(datastore_connections=1, datacenter_conflicts="last_writer_wins")
        protocol, transport = self.endpoint.accept()
        load = encode_command([b"SCRIPT", b"LOAD", lww.SCRIPT]) + encode_command([b"SCRIPT", b"LOAD", lww.NOTE_SCRIPT])
        self.assertEqual(transport.value(), load)
        self.assertFalse(ds.is_up)
        protocol.dataReceived(b"$40\r\n%s\r\n" % lww.SHA)
        self.assertFalse(ds.is_up)
        protocol.dataReceived(b"$40\r\n%s\r\n" % lww.NOTE_SHA)
        self.assertTrue(ds.is_up)
        # the RESP3 link: HELLO 3, then the script; refused, the connection is not used
        protocol, transport = self.endpoint.accept()
        self.assertEqual(transport.value(), HELLO_3 + load)
        protocol.dataReceived(b"%1\r\n$5\r\nproto\r\n:3\r\n-ERR no scripts here\r\n-ERR none\r\n")
        self.assertTrue(transport.disconnecting)

    def test_requests_before_connect_fail_at_once(self):
        ds = self.make()
        sink = Sink()
        ds.send(Request(b"*1\r\n$4\r\nPING\r\n"), sink)
        self.assertEqual(sink.replies, [UNAVAILABLE])

    def test_replies_pass_through_byte_exact_in_order(self):
        ds = self.make()
        links = self.connect_all()
        self.assertEqual(len(links), 4)
        self.assertTrue(ds.is_up)
        sink = Sink()
        ds.send(Request(b"req1"), sink)
        ds.send(Request(b"req2"), sink)
        proto, transport = [l for l in links if l[1].value()][0]
        self.assertEqual(transport.value(), b"req1req2")
        proto.dataReceived(b"+OK\r\n*2\r\n$-1\r\n-ERR x\r\n")
        self.assertEqual(sink.replies, [b"+OK\r\n", b"*2\r\n$-1\r\n-ERR x\r\n"])

    def test_a_run_gets_its_replies_joined_however_they_are_read(self):
        replies = [b"+OK\r\n", b"$3\r\nabc\r\n", b"-ERR x\r\n", b":5\r\n", b"*1\r\n$1\r\nz\r\n"]
        stream = b"".join(replies) + b"+NEXT\r\n"
        for cut1 in range(1, len(stream)):
            for cut2 in (cut1, (cut1 + len(stream)) // 2):
                ds = self.make()
                links = self.connect_all()
                run, after = Sink(), Sink()
                ds.send(Request(b"five requests", count=5), run)
                ds.send(Request(b"one more"), after)
                proto = [p for p, t in links if t.value()][0]
                for chunk in (stream[:cut1], stream[cut1:cut2], stream[cut2:]):
                    proto.dataReceived(chunk)
                self.assertEqual(run.replies, [b"".join(replies)], (cut1, cut2))
                self.assertEqual(after.replies, [b"+NEXT\r\n"], (cut1, cut2))
                self.ds.stopService()

    def test_runs_of_simple_replies_cut_anywhere_are_framed_without_the_parser(self):
        runs = [[b"+OK\r\n"] * 70, [b"$64\r\n" + b"v" * 64 + b"\r\n", b"$-1\r\n", b":7\r\n"],
                [b"-ERR no\r\n", b"+OK\r\n"], [b"*1\r\n$1\r\nz\r\n"], [b"$2\r\nab\r\n"]]
        stream = b"".join(b"".join(run) for run in runs)
        for cut1 in range(1, len(stream)):
            for cut2 in (cut1, (cut1 + len(stream)) // 2):
                ds = self.make()
                links = self.connect_all()
                sinks = [Sink() for _ in runs]
                for run, sink in zip(runs, sinks):
                    ds.send(Request(b"requests", count=len(run)), sink)
                proto = [p for p, t in links if t.value()][0]
                parsed = []
                feed = proto._parser.feed
                proto._parser.feed = lambda data: parsed.append(data) or feed(data)
                for chunk in (stream[:cut1], stream[cut1:cut2], stream[cut2:]):
                    proto.dataReceived(chunk)
                self.assertEqual([s.replies for s in sinks], [[b"".join(run)] for run in runs], (cut1, cut2))
                self.assertEqual(proto.answered, sum(map(len, runs)))
                self.assertEqual(proto.errors, 1)
                # only the array reply (and what follows it in the same read) needs the parser
                self.assertLessEqual(sum(map(len, parsed)), len(stream) - stream.index(b"*1\r\n"))
                self.ds.stopService()

    def test_a_long_unfinished_run_goes_to_the_parser(self):
        ds = self.make()
        links = self.connect_all()
        sink = Sink()
        reply = b"$1000\r\n" + b"w" * 1000 + b"\r\n"
        ds.send(Request(b"requests", count=40), sink)
        proto = [p for p, t in links if t.value()][0]
        stream = reply * 40
        for i in range(0, len(stream), 7000):
            proto.dataReceived(stream[i:i + 7000])
            self.assertLessEqual(len(proto._tail), 16 * 1024)
        self.assertEqual(sink.replies, [stream])

    def test_a_run_fails_once_when_its_connection_goes(self):
        ds = self.make()
        links = self.connect_all()
        run = Sink()
        ds.send(Request(b"three requests", count=3), run)
        proto, _ = [l for l in links if l[1].value()][0]
        proto.dataReceived(b"+OK\r\n")
        drop(proto)
        self.assertEqual(run.failures, [UNAVAILABLE])
        self.assertEqual(run.replies, [UNAVAILABLE])

    def test_client_pinned_to_one_connection(self):
        ds = self.make()
        links = self.connect_all()
        for _ in range(5):
            ds.send(Request(b"x", lane=7), Sink())
        used = [t for p, t in links if t.value()]
        self.assertEqual(len(used), 1)
        self.assertEqual(used[0].value(), b"xxxxx")

    def test_resp3_clients_use_hello3_connections(self):
        ds = self.make()
        links = self.connect_all()
        ds.send(Request(b"r3", resp=3), Sink())
        ds.send(Request(b"r2"), Sink())
        resp3 = [p for p, t in links if t.value() == b"r3"]
        self.assertEqual(len(resp3), 1)
        self.assertEqual(resp3[0]._link.resp, 3)

    def test_lost_connection_fails_in_flight_requests(self):
        ds = self.make(datastore_connections=1)
        links = self.connect_all()
        sink = Sink()
        ds.send(Request(b"x"), sink)
        ds.send(Request(b"y"), sink)
        proto = [p for p, t in links if t.value()][0]
        drop(proto)
        self.assertEqual(sink.replies, [UNAVAILABLE, UNAVAILABLE])

    def test_timeout_fails_requests_and_drops_connection(self):
        ds = self.make(timeout=1000)
        links = self.connect_all()
        sink = Sink()
        ds.send(Request(b"x"), sink)
        self.clock.advance(0.9)
        self.assertEqual(sink.replies, [])
        self.clock.advance(0.35)
        self.assertEqual(len(sink.replies), 1)
        self.assertIn(b"datastore unavailable", sink.replies[0])
        self.assertTrue([t for p, t in links if t.value()][0].aborted)

    def test_steady_replies_never_time_out(self):
        ds = self.make(timeout=1000, datastore_connections=1)
        links = self.connect_all()
        sink = Sink()
        for _ in range(10):
            ds.send(Request(b"x"), sink)
        proto = [p for p, t in links if t.value()][0]
        for _ in range(9):
            self.clock.advance(0.5)
            proto.dataReceived(b"+OK\r\n")
        self.assertEqual(sink.replies, [b"+OK\r\n"] * 9)
        self.clock.advance(1.25)
        self.assertEqual(len(sink.failures), 1)

    def test_reconnects_after_loss(self):
        ds = self.make(datastore_connections=1)
        links = self.connect_all()
        for proto, _ in links:
            drop(proto)
        self.assertFalse(ds.is_up)
        self.assertEqual(self.endpoint.attempts, [])
        self.clock.advance(1.0)
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.connect_all()
        self.assertTrue(ds.is_up)

    def test_stopped_datastore_refuses_at_once_and_reconnects_when_started(self):
        ds = self.make(datastore_connections=1)
        self.connect_all()
        ds.stopService()
        self.assertFalse(ds.is_up)
        sink = Sink()
        ds.send(Request(b"x"), sink)
        self.assertEqual(sink.failures, [UNAVAILABLE])
        ds.startService()
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.connect_all()
        self.assertTrue(ds.is_up)

    def test_ejected_after_failure_limit(self):
        ds = self.make(datastore_connections=1, server_failure_limit=3, server_retry_timeout=10000)
        self.endpoint.refuse()
        self.endpoint.refuse()
        self.assertIsNone(ds.ejected_until)
        self.clock.advance(1.0)
        self.endpoint.refuse()
        self.assertIsNotNone(ds.ejected_until)
        self.endpoint.refuse()
        self.clock.advance(1.0)
        # ejected: nobody tries again before server_retry_timeout
        self.assertEqual(len(self.endpoint.attempts), 0)
        self.clock.advance(9.5)
        self.assertEqual(len(self.endpoint.attempts), 2)

    def test_retry_now_ends_ejection(self):
        ds = self.make(datastore_connections=1, server_failure_limit=1, server_retry_timeout=10000)
        self.endpoint.refuse()
        self.endpoint.refuse()
        self.assertIsNotNone(ds.ejected_until)
        ds.retry_now()
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.connect_all()
        self.assertTrue(ds.is_up)
        self.assertIsNone(ds.ejected_until)

    def test_without_auto_eject_keeps_retrying_quickly(self):
        ds = self.make(datastore_connections=1, auto_eject_hosts=False, server_failure_limit=1)
        for _ in range(10):
            while self.endpoint.attempts:
                self.endpoint.refuse()
            self.clock.advance(1.0)
        self.assertIsNone(ds.ejected_until)
        self.assertEqual(len(self.endpoint.attempts), 2)


class DatastoreCounterTests(SynchronousTestCase):
    """Requests counted by result and latency sampled, cheaply, per connection."""

    def make(self, **overrides):
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        overrides.setdefault("datastore_connections", 1)
        self.ds = Datastore(node_config(**overrides), self.clock, jitter=lambda: 1.0,
                            endpoint_factory=lambda a: self.endpoint)
        self.ds.startService()
        self.addCleanup(self.ds.stopService)
        return self.ds

    def connect_all(self):
        return DatastoreTests.connect_all(self)

    def resp2(self, links):
        return [p for p, t in links if p._link.resp == 2][0]

    def test_every_result_starts_at_zero(self):
        ds = self.make()
        self.assertEqual(ds.request_counts(), {"ok": 0, "error": 0, "timeout": 0, "unavailable": 0})
        self.assertEqual(ds.requests_total, 0)
        self.assertEqual(ds.latency.count, 0)

    def test_requests_and_error_replies_counted(self):
        ds = self.make()
        proto = self.resp2(self.connect_all())
        sink = Sink()
        for _ in range(3):
            ds.send(Request(b"x"), sink)
        proto.dataReceived(b"+OK\r\n-WRONGTYPE no\r\n$1\r\na\r\n")
        self.assertEqual(ds.requests_total, 3)
        self.assertEqual(ds.request_counts(), {"ok": 2, "error": 1, "timeout": 0, "unavailable": 0})

    def test_runs_count_their_requests(self):
        ds = self.make()
        proto = self.resp2(self.connect_all())
        ds.send(Request(b"x", count=3), Sink())
        proto.dataReceived(b"+OK\r\n-WRONGTYPE no\r\n$1\r\na\r\n")
        self.assertEqual(ds.requests_total, 3)
        self.assertEqual(ds.request_counts(), {"ok": 2, "error": 1, "timeout": 0, "unavailable": 0})

    def test_resp3_handshake_is_not_counted(self):
        ds = self.make()
        links = self.connect_all()
        self.assertEqual(ds.requests_total, 0)
        resp3 = [p for p, t in links if p._link.resp == 3][0]
        ds.send(Request(b"x", resp=3), Sink())
        resp3.dataReceived(b"!3\r\nERR\r\n")
        self.assertEqual(ds.request_counts()["error"], 1)
        self.assertEqual(ds.requests_total, 1)

    def test_unavailable_counted(self):
        ds = self.make()
        ds.send(Request(b"x"), Sink())
        ds.send(Request(b"x"), Sink())
        self.assertEqual(ds.request_counts()["unavailable"], 2)
        self.assertEqual(ds.requests_total, 0)

    def test_counts_survive_closed_connections(self):
        ds = self.make()
        proto = self.resp2(self.connect_all())
        for _ in range(4):
            ds.send(Request(b"x"), Sink())
        proto.dataReceived(b"+OK\r\n-ERR x\r\n")
        drop(proto)  # two still waiting: failed when the connection closed
        self.assertEqual(ds.requests_total, 4)
        self.assertEqual(ds.request_counts(), {"ok": 1, "error": 3, "timeout": 0, "unavailable": 0})
        self.clock.advance(1.0)
        proto = self.resp2(self.connect_all())
        ds.send(Request(b"x"), Sink())
        proto.dataReceived(b"+OK\r\n")
        self.assertEqual(ds.requests_total, 5)
        self.assertEqual(ds.request_counts()["ok"], 2)

    def test_timeouts_counted(self):
        ds = self.make(timeout=1000)
        self.resp2(self.connect_all())
        ds.send(Request(b"x"), Sink())
        self.clock.advance(1.5)
        counts = ds.request_counts()
        self.assertEqual((counts["timeout"], counts["ok"], counts["error"]), (1, 0, 0))

    def test_latency_sampled_every_16th_request(self):
        ds = self.make()
        proto = self.resp2(self.connect_all())
        sink = Sink()
        for _ in range(SAMPLE_EVERY - 1):
            ds.send(Request(b"x"), sink)
        self.clock.advance(0.5)
        ds.send(Request(b"x"), sink)  # number 16, sent at t=0.5: the sample
        self.clock.advance(0.003)
        proto.dataReceived(b"+OK\r\n" * (SAMPLE_EVERY - 1))
        self.assertEqual(ds.latency.count, 0)
        self.clock.advance(0.001)
        proto.dataReceived(b"+OK\r\n")
        self.assertEqual(ds.latency.count, 1)
        self.assertAlmostEqual(ds.latency.total, 0.004)
        # the next sample is request 32
        for _ in range(SAMPLE_EVERY):
            ds.send(Request(b"x"), sink)
        self.clock.advance(0.02)
        proto.dataReceived(b"+OK\r\n" * SAMPLE_EVERY)
        self.assertEqual(ds.latency.count, 2)
        self.assertAlmostEqual(ds.latency.total, 0.024)
        self.assertEqual(ds.latency.quantile(0.99), 0.025)

    def test_one_sample_at_a_time_and_dropped_with_the_connection(self):
        ds = self.make()
        proto = self.resp2(self.connect_all())
        for _ in range(3 * SAMPLE_EVERY):
            ds.send(Request(b"x"), Sink())
        self.assertEqual(proto._sample_seq, SAMPLE_EVERY)
        drop(proto)
        self.assertEqual(proto._sample_seq, 0)
        self.assertEqual(ds.latency.count, 0)
