"""
The client protocol and the node's request handling, with a fake datastore:
exact bytes in, exact bytes out, no sockets.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.node.assembly import NodeParts
from dynomite.node.client import ClientFactory
from dynomite.node.control import NodeControl

from tests.fakes import FakeDatastore, FakeMonitor, Transport, node_config


class NodeTestCase(SynchronousTestCase):
    def setUp(self):
        self.start()

    def start(self, **overrides):
        self.clock = Clock()
        self.datastore = FakeDatastore()
        self.monitor = FakeMonitor()
        overrides.setdefault("data_dir", self.mktemp())
        config = node_config(**overrides)
        self.parts = NodeParts(config, self.clock, self.datastore, self.monitor)
        self.parts.start()
        self.addCleanup(self.parts.stop)
        self.coordinator = self.parts.coordinator
        self.node = self.parts.node
        self.factory = ClientFactory(self.node, self.clock)
        self.client, self.transport = self.connect()

    def connect(self):
        return self.connect_from("127.0.0.1")

    def connect_from(self, host: str):
        protocol = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = Transport()
        protocol.makeConnection(transport)
        return protocol, transport

    def send(self, data: bytes, client=None) -> None:
        (client or self.client).dataReceived(data)

    def written(self, transport=None) -> bytes:
        transport = transport or self.transport
        value = transport.value()
        transport.clear()
        return value


class ForwardingTests(NodeTestCase):
    def test_key_command_forwarded_as_resp(self):
        self.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        [(client_id, resp, data, sink)] = self.datastore.sent
        self.assertEqual((client_id, resp, data), (self.client.session.id, 2, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"))

    def test_inline_command_forwarded_as_resp(self):
        self.send(b'SET k "a b"\r\n')
        self.assertEqual(self.datastore.sent[0][2], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na b\r\n")

    def test_reply_passes_through_byte_exact(self):
        self.send(b"GET k\r\n")
        self.datastore.answer(b"*3\r\n$-1\r\n*0\r\n-ERR nested\r\n")
        self.assertEqual(self.written(), b"*3\r\n$-1\r\n*0\r\n-ERR nested\r\n")

    def test_replies_keep_request_order(self):
        self.send(b"GET a\r\nPING\r\nGET b\r\n")
        self.assertEqual(self.written(), b"")
        self.datastore.answer(b"$1\r\nA\r\n")
        self.assertEqual(self.written(), b"$1\r\nA\r\n+PONG\r\n")
        self.datastore.answer(b"$1\r\nB\r\n")
        self.assertEqual(self.written(), b"$1\r\nB\r\n")

    def test_second_reply_waits_for_first(self):
        other, other_transport = self.connect()
        self.send(b"GET a\r\nGET b\r\n")
        self.send(b"GET c\r\n", client=other)
        self.datastore.answer(b"$1\r\nB\r\n", index=1)
        self.assertEqual(self.written(), b"")
        self.datastore.answer(b"$1\r\nC\r\n", index=1)
        self.assertEqual(self.written(other_transport), b"$1\r\nC\r\n")
        self.datastore.answer(b"$1\r\nA\r\n")
        self.assertEqual(self.written(), b"$1\r\nA\r\n$1\r\nB\r\n")

    def test_multi_key_command_passes_through(self):
        self.send(b"MGET a b c\r\n")
        self.assertEqual(len(self.datastore.sent), 1)

    def test_pipelined_batch_forwarded_in_order(self):
        """Inline writes are re-encoded one by one, and leave together, in order."""
        self.send(b"".join(b"SET k%d v\r\n" % i for i in range(100)))
        self.assertEqual([d for _, _, d, _ in self.datastore.sent],
                         [b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\nk%d\r\n$1\r\nv\r\n" % (len(b"k%d" % i), i)
                                   for i in range(100))])
        self.datastore.answer(b"+OK\r\n" * 100)
        self.assertEqual(self.written(), b"+OK\r\n" * 100)


def multibulk(*commands: bytes) -> bytes:
    """Each command (space-separated words) as a canonical multibulk request, joined."""
    out = []
    for command in commands:
        words = command.split()
        out.append(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
    return b"".join(out)


class RunTests(NodeTestCase):
    """Pipelined requests of one command go to the datastore as one run, in the client's own bytes."""

    def runs(self):
        return [(count, data) for count, (_, _, data, _) in zip(self.datastore.counts, self.datastore.sent)]

    def test_a_batch_of_one_command_is_one_run(self):
        batch = multibulk(*[b"SET k%d v%d" % (i, i) for i in range(50)])
        self.send(batch)
        self.assertEqual(self.runs(), [(50, batch)])
        self.datastore.answer(b"+OK\r\n" * 50)
        self.assertEqual(self.written(), b"+OK\r\n" * 50)

    def test_spellings_stay_in_one_run_and_a_relative_expiry_is_made_absolute(self):
        """
        SET ... EX is made absolute (dynomite.commands.determinism), so it
        leaves the client's run; the outbox still sends every write of the
        read together (one run, one transaction at Redis), in order.
        """
        first = multibulk(b"SET a 1", b"SET b 2", b"set c 3")
        self.send(first + multibulk(b"SET d 4 EX 10", b"SET e 5"))
        at = int(self.clock.seconds() * 1000) + 10000
        self.assertEqual(self.runs(), [(5, first + multibulk(b"SET d 4 PXAT %d" % at, b"SET e 5"))])

    def test_another_command_cuts_the_run_and_reads_wait_for_writes(self):
        """
        A read waits for the client's writes before it (their leader may be
        another node), a write for its reads before it (the leader's copy
        could reach a replica before the read); everything goes on, in
        order, as they are answered.
        """
        batch = multibulk(b"SET a 1", b"SET b 2", b"GET a", b"GET b", b"SET c 3")
        self.send(batch)
        self.assertEqual([count for count, _ in self.runs()], [2])
        writes = self.runs()[0][1]
        self.send(multibulk(b"SET d 4"))
        self.assertEqual(len(self.runs()), 1)    # held behind the reads
        self.datastore.answer(b"+OK\r\n+OK\r\n")
        self.assertEqual([count for count, _ in self.runs()], [2])      # the reads; the writes wait for them
        reads = self.runs()[0][1]
        self.datastore.answer(b"$1\r\n1\r\n$1\r\n2\r\n")
        self.assertEqual([count for count, _ in self.runs()], [2])      # the writes, together
        self.assertEqual(writes + reads + self.runs()[0][1], batch + multibulk(b"SET d 4"))
        self.datastore.answer(b"+OK\r\n+OK\r\n")
        self.assertEqual(self.written(), b"+OK\r\n+OK\r\n$1\r\n1\r\n$1\r\n2\r\n+OK\r\n+OK\r\n")

    def test_an_empty_request_in_between_cuts_the_run(self):
        self.send(multibulk(b"GET a", b"GET b") + b"*0\r\n" + multibulk(b"GET c"))
        self.assertEqual([count for count, _ in self.runs()], [2, 1])

    def test_wrong_arity_is_refused_request_by_request(self):
        self.send(multibulk(b"GET a x", b"GET b y"))
        self.assertEqual(self.runs(), [])
        self.assertEqual(self.written(), b"-ERR wrong number of arguments for 'get' command\r\n" * 2)

    def test_inline_requests_are_not_forwarded_as_they_came(self):
        self.send(b"GET a\r\nGET b\r\n")
        self.assertEqual(self.runs(), [(1, multibulk(b"GET a")), (1, multibulk(b"GET b"))])

    def test_commands_that_do_not_run_go_one_by_one(self):
        self.send(multibulk(b"PING", b"PING", b"PING"))
        self.assertEqual(self.runs(), [])
        self.assertEqual(self.written(), b"+PONG\r\n" * 3)


class ErrorTests(NodeTestCase):
    def test_unknown_command(self):
        self.send(b"FOO a b\r\n")
        self.assertEqual(
            self.written(), b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
        )
        self.assertFalse(self.transport.disconnecting)

    def test_unsupported_command_keeps_connection(self):
        self.send(b"MONITOR\r\nPING\r\n")
        self.assertEqual(self.written(), b"-ERR unsupported command 'monitor'\r\n+PONG\r\n")
        self.assertFalse(self.transport.disconnecting)

    def test_wrong_arity(self):
        self.send(b"GET\r\n")
        self.assertEqual(self.written(), b"-ERR wrong number of arguments for 'get' command\r\n")
        self.assertEqual(self.datastore.sent, [])

    def test_protocol_error_answers_then_closes(self):
        self.send(b"PING\r\n*1\r\n$x\r\n")
        self.assertEqual(self.written(), b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.node.protocol_errors, 1)

    def test_protocol_error_waits_for_earlier_replies(self):
        self.send(b"GET a\r\n*1\r\n$x\r\n")
        self.assertFalse(self.transport.disconnecting)
        self.datastore.answer(b"$-1\r\n")
        self.assertEqual(self.written(), b"$-1\r\n-ERR Protocol error: invalid bulk length\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_oversized_request(self):
        self.start(max_request_bytes=1024)
        self.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n")
        reply = self.written()
        self.assertTrue(reply.startswith(b"-ERR Protocol error: "), reply)
        self.assertIn(b"1024", reply)
        self.assertTrue(self.transport.disconnecting)

    def test_other_client_unaffected_by_protocol_error(self):
        other, other_transport = self.connect()
        self.send(b"*1\r\n$x\r\n")
        self.send(b"PING\r\n", client=other)
        self.assertEqual(self.written(other_transport), b"+PONG\r\n")


class BackpressureTests(NodeTestCase):
    def test_stops_reading_past_outstanding_limit_and_resumes(self):
        self.start(client_max_outstanding_bytes=1000)
        request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n" + b"v" * 100 + b"\r\n"
        for _ in range(20):  # one read each: 20 requests to Redis, not one run
            self.send(request)
        self.assertFalse(self.transport.reading)
        for _ in range(15):
            self.datastore.answer(b"+OK\r\n")
        self.assertFalse(self.transport.reading)
        for _ in range(5):
            self.datastore.answer(b"+OK\r\n")
        self.assertTrue(self.transport.reading)

    def test_a_run_counts_toward_the_limits_as_its_requests(self):
        self.start(client_max_outstanding_bytes=1000)
        request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n" + b"v" * 100 + b"\r\n"
        self.send(request * 20)
        self.assertEqual(len(self.datastore.sent), 1)  # one run
        self.assertFalse(self.transport.reading)
        self.datastore.answer(b"+OK\r\n" * 20)
        self.assertEqual(self.written(), b"+OK\r\n" * 20)
        self.assertTrue(self.transport.reading)

    def test_stops_reading_while_client_does_not_read(self):
        self.client.pauseProducing()
        self.assertFalse(self.transport.reading)
        self.client.resumeProducing()
        self.assertTrue(self.transport.reading)


class ConnectionCommandTests(NodeTestCase):
    def test_ping_echo(self):
        self.send(b"PING\r\nPING hi\r\nECHO yo\r\n")
        self.assertEqual(self.written(), b"+PONG\r\n$2\r\nhi\r\n$2\r\nyo\r\n")

    def test_select(self):
        self.send(b"SELECT 0\r\nSELECT 1\r\nSELECT x\r\n")
        out = self.written().split(b"\r\n")
        self.assertEqual(out[0], b"+OK")
        self.assertTrue(out[1].startswith(b"-ERR DB index is out of range"))
        self.assertEqual(out[2], b"-ERR value is not an integer or out of range")

    def test_quit_answers_then_closes_and_ignores_the_rest(self):
        self.send(b"QUIT\r\nGET a\r\n")
        self.assertEqual(self.written(), b"+OK\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.datastore.sent, [])

    def test_quit_waits_for_earlier_replies(self):
        self.send(b"GET a\r\nQUIT\r\n")
        self.assertFalse(self.transport.disconnecting)
        self.datastore.answer(b"$-1\r\n")
        self.assertEqual(self.written(), b"$-1\r\n+OK\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_client_name_id_setinfo(self):
        self.send(b"CLIENT GETNAME\r\nCLIENT SETNAME app\r\nCLIENT GETNAME\r\nCLIENT SETINFO LIB-NAME x\r\n")
        self.assertEqual(self.written(), b"$-1\r\n+OK\r\n$3\r\napp\r\n+OK\r\n")
        self.send(b"CLIENT ID\r\n")
        self.assertEqual(self.written(), b":%d\r\n" % self.client.session.id)
        self.send(b"CLIENT SETNAME 'a b'\r\n")
        self.assertTrue(self.written().startswith(b"-ERR Client names cannot contain spaces"))

    def test_hello_3_switches_protocol(self):
        self.send(b"HELLO 3\r\n")
        reply = self.written()
        self.assertTrue(reply.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"), reply)
        self.assertIn(b"$5\r\nproto\r\n:3\r\n", reply)
        self.send(b"CLIENT GETNAME\r\nGET k\r\n")
        self.assertEqual(self.written(), b"_\r\n")
        self.assertEqual(self.datastore.sent[0][1], 3)

    def test_hello_2_flat_array_and_back(self):
        self.send(b"HELLO 3\r\nHELLO 2\r\n")
        reply = self.written()
        self.assertIn(b"*14\r\n$6\r\nserver\r\n", reply)
        self.assertEqual(self.client.session.resp, 2)

    def test_hello_bad_version(self):
        self.send(b"HELLO 4\r\n")
        self.assertEqual(self.written(), b"-NOPROTO unsupported protocol version\r\n")
        self.assertEqual(self.client.session.resp, 2)

    def test_hello_setname(self):
        self.send(b"HELLO 3 SETNAME worker\r\nCLIENT GETNAME\r\n")
        self.assertTrue(self.written().endswith(b"$6\r\nworker\r\n"))

    def test_config_get_empty(self):
        self.send(b"CONFIG GET save\r\nHELLO 3\r\n")
        self.written()
        self.send(b"CONFIG GET save\r\n")
        self.assertEqual(self.written(), b"%0\r\n")

    def test_command_count_and_getkeys(self):
        self.send(b"COMMAND COUNT\r\nCOMMAND GETKEYS MSET a 1 b 2\r\n")
        out = self.written()
        self.assertTrue(out.startswith(b":"))
        self.assertGreater(int(out[1:out.index(b"\r\n")]), 100)
        self.assertTrue(out.endswith(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"))

    def test_conn_consistency(self):
        self.send(b"DYNO_CONFIG:CONN_CONSISTENCY dc_quorum\r\nDYNO_CONFIG:CONN_CONSISTENCY nope\r\n")
        out = self.written()
        self.assertTrue(out.startswith(b"+OK\r\n-ERR unknown consistency level 'NOPE'"))
        self.assertEqual(self.client.session.read_consistency, "DC_QUORUM")

    def test_info_has_dynomite_and_backend_sections(self):
        self.send(b"INFO\r\n")
        out = self.written()
        self.assertTrue(out.startswith(b"$"))
        self.assertIn(b"# Dynomite\r\n", out)
        self.assertIn(b"rack:rack1\r\n", out)
        self.assertIn(b"# Server\r\nredis_version:7.0.15", out)

    def test_info_shows_the_live_consistency(self):
        """After an operator changes the node's level, INFO shows the level in use, not the file's."""
        control = NodeControl(self.parts)
        control.set_consistency("read", "DC_QUORUM")
        control.set_consistency("write", "DC_SAFE_QUORUM")
        self.send(b"INFO dynomite\r\n")
        out = self.written()
        self.assertIn(b"read_consistency:DC_QUORUM\r\n", out)
        self.assertIn(b"write_consistency:DC_SAFE_QUORUM\r\n", out)

    def test_info_resp3_is_verbatim(self):
        self.send(b"HELLO 3\r\n")
        self.written()
        self.send(b"INFO dynomite\r\n")
        out = self.written()
        self.assertTrue(out.startswith(b"="), out)
        self.assertIn(b"txt:# Dynomite", out)
        self.assertEqual(self.monitor.asked, [])


class AuthTests(NodeTestCase):
    def setUp(self):
        self.start(requirepass="s3cret")

    def test_commands_need_auth(self):
        self.send(b"GET k\r\n")
        self.assertEqual(self.written(), b"-NOAUTH Authentication required.\r\n")
        self.assertEqual(self.datastore.sent, [])

    def test_wrong_password(self):
        self.send(b"AUTH nope\r\nAUTH default nope\r\nAUTH other s3cret\r\n")
        self.assertEqual(self.written().count(b"-WRONGPASS"), 3)
        self.assertFalse(self.client.session.authenticated)

    def test_right_password(self):
        self.send(b"AUTH s3cret\r\nGET k\r\n")
        self.assertEqual(self.written(), b"+OK\r\n")
        self.assertEqual(len(self.datastore.sent), 1)

    def test_hello_with_auth(self):
        self.send(b"HELLO 3\r\n")
        self.assertTrue(self.written().startswith(b"-NOAUTH HELLO must be called"))
        self.send(b"HELLO 3 AUTH default s3cret SETNAME x\r\n")
        self.assertTrue(self.written().startswith(b"%7"))
        self.assertTrue(self.client.session.authenticated)
        self.assertEqual(self.client.session.name, b"x")

    def test_auth_without_requirepass(self):
        self.start()
        self.send(b"AUTH x\r\n")
        self.assertTrue(self.written().startswith(b"-ERR AUTH <password> called without any password"))


class PipelineDepthTests(NodeTestCase):
    def test_stops_reading_past_request_count_limit(self):
        from dynomite.node.client import MAX_OUTSTANDING_REQUESTS

        self.send(b"GET k\r\n" * (MAX_OUTSTANDING_REQUESTS + 1))
        self.assertFalse(self.transport.reading)
        for _ in range(MAX_OUTSTANDING_REQUESTS // 2 + 1):
            self.datastore.answer(b"$-1\r\n")
        self.assertTrue(self.transport.reading)


class RequestCountTests(NodeTestCase):
    """Client request metrics count error replies of both protocols as errors."""

    def counts(self, family: str):
        return list(self.parts.metrics.requests[family])

    def test_resp3_blob_errors_count_as_errors(self):
        """A RESP3 blob error ('!') is an error, alone or inside a run (it used to count as ok)."""
        self.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        self.datastore.answer(b"!21\r\nSYNTAX invalid syntax\r\n")
        self.assertEqual(self.counts("string"), [0, 1])
        self.send(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n")
        self.datastore.answer(b"$1\r\nv\r\n!3\r\nERR\r\n")
        self.assertEqual(self.counts("string"), [1, 2])

    def test_simple_errors_count_as_errors(self):
        self.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        self.datastore.answer(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
        self.assertEqual(self.counts("string"), [0, 1])


class ClientLimitTests(NodeTestCase):
    """maxclients, idle clients, requests that never complete, bytes no request starts with."""

    def closed(self, transport=None) -> bool:
        return (transport or self.transport).disconnecting

    def test_maxclients_refuses_the_next_client_as_redis_does(self):
        self.start(maxclients=2)
        self.connect()
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
        transport = Transport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"-ERR max number of clients reached\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.parts.metrics.client_limits["maxclients"], 1)
        self.assertEqual(len(self.node.clients), 2)

    def test_an_idle_client_is_closed_after_client_idle_timeout(self):
        self.start(client_idle_timeout=10)
        self.clock.advance(9.9)
        self.node.sweep_clients(self.clock.seconds())
        self.assertFalse(self.closed())
        self.clock.advance(0.1)
        self.node.sweep_clients(self.clock.seconds())
        self.assertTrue(self.closed())
        self.assertEqual(self.written(), b"")
        self.assertEqual(self.parts.metrics.client_limits["idle"], 1)

    def test_a_client_waiting_for_a_reply_is_not_idle(self):
        self.start(client_idle_timeout=10)
        self.send(b"GET k\r\n")
        self.clock.advance(60)
        self.node.sweep_clients(self.clock.seconds())
        self.assertFalse(self.closed())
        self.datastore.answer(b"$-1\r\n")
        self.clock.advance(10)
        self.node.sweep_clients(self.clock.seconds())
        self.assertTrue(self.closed())

    def test_no_idle_limit_by_default(self):
        self.clock.advance(10 ** 6)
        self.node.sweep_clients(self.clock.seconds())
        self.assertFalse(self.closed())

    def test_a_request_begun_and_not_completed_is_cut_at_client_read_timeout(self):
        self.start(client_read_timeout=5000)
        self.send(b"*2\r\n$3\r\nGET\r\n")
        self.clock.advance(4.9)
        self.node.sweep_clients(self.clock.seconds())
        self.assertFalse(self.closed())
        self.clock.advance(0.1)
        self.node.sweep_clients(self.clock.seconds())
        self.assertEqual(self.written(), b"-ERR Protocol error: request not completed within 5000 ms\r\n")
        self.assertTrue(self.closed())
        self.assertEqual(self.parts.metrics.client_limits["read_timeout"], 1)

    def test_a_trickling_client_that_completes_requests_is_not_cut(self):
        """The deadline runs from the start of the request in progress, not of the connection."""
        self.start(client_read_timeout=5000)
        for _ in range(5):
            self.send(b"PING\r\nPI")
            self.clock.advance(3)
            self.node.sweep_clients(self.clock.seconds())
            self.send(b"NG\r\n")
        self.assertFalse(self.closed())
        self.assertEqual(self.written(), b"+PONG\r\n" * 10)

    def test_a_byte_no_request_starts_with_is_a_protocol_error_at_once(self):
        self.send(b"\x00\x01\x02")
        self.assertEqual(self.written(),
                         b"-ERR Protocol error: unexpected byte 0x00 at the start of a request\r\n")
        self.assertTrue(self.closed())

    def end(self, client) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure
        client.connectionLost(Failure(ConnectionDone()))

    def test_connections_ending_without_a_valid_request_make_a_flood(self):
        guard = self.node.flood_guard
        self.assertEqual(guard.rate, 500)   # on by default
        self.send(b"PING\r\n")
        self.end(self.client)   # asked something: not a flood's
        silent, _ = self.connect()
        self.end(silent)        # sent nothing (an idle pooled connection, a health check): not one either
        from OpenSSL.SSL import Error as TLSError
        from twisted.python.failure import Failure
        handshake, _ = self.connect()
        handshake.connectionLost(Failure(TLSError("wrong version number")))   # a failed TLS handshake: one
        self.assertEqual(guard.fruitless_total, 1)
        bad = []
        for data in (b"*2\r\n$3\r\nGET\r\n", b"\x00", b"PING\r\n\x00"):
            client, _ = self.connect()
            self.send(data, client)
            bad.append(client)
        for client in bad:
            self.end(client)
        self.assertEqual(guard.fruitless_total, 4, "the cut request, bad bytes, and a protocol error after a valid request")
        self.assertFalse(guard.flooding)
        for _ in range(guard.address_threshold - 4):
            client, _ = self.connect()
            self.send(b"\x01", client)
            self.end(client)
        self.assertTrue(guard.refuses("127.0.0.1", self.clock.seconds()), "their address floods")
        self.assertFalse(guard.flooding)
        for i in range(guard.threshold):   # from many addresses: a flood
            client, _ = self.connect_from("10.0.%d.%d" % divmod(i, 200))
            self.send(b"*1\r\n", client)
            self.end(client)
        self.assertTrue(guard.flooding)
        # a client that sent a valid request is known: served during the flood
        self.assertIsNone(guard.refuses("10.9.9.9", self.clock.seconds()))
        known, _ = self.connect_from("10.9.9.9")
        self.send(b"PING\r\n", known)
        for _ in range(1000):
            guard.refuses("10.8.8.8", self.clock.seconds())   # unknown: the flood's budget spent
        self.assertEqual((guard.refuses("10.8.8.8", self.clock.seconds()),
                          guard.refuses("10.9.9.9", self.clock.seconds())), ("flood", None))

    def test_no_flood_guard_with_a_rate_of_0(self):
        self.start(client_flood_accept_rate=0)
        self.assertIsNone(self.node.flood_guard)
        self.end(self.client)

    def test_too_many_arguments_is_a_protocol_error_at_once(self):
        self.send(b"*2000000\r\n")
        self.assertEqual(self.written(), b"-ERR Protocol error: invalid multibulk length\r\n")
        self.assertTrue(self.closed())
