"""
The protocol-error log line: in full while errors are rare, one counted
line per interval under a flood; the metrics count every error at once.
"""

from __future__ import annotations

from typing import List

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from dynomite.node.assembly import NodeParts
from dynomite.node.client import ClientFactory
from dynomite.node.errorlog import INTERVAL, ProtocolErrorLog

from tests.fakes import FakeDatastore, FakeMonitor, Transport, node_config


class LogCapture:
    """The formatted lines logged in the protocol error log's namespace."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.lines: List[str] = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event) -> None:
        if event.get("log_namespace") == "dynomite.node.errorlog.ProtocolErrorLog":
            self.lines.append(formatEvent(event))

    def take(self) -> List[str]:
        lines, self.lines = self.lines, []
        return lines


class ProtocolErrorLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.errors = ProtocolErrorLog(self.clock)
        self.logged = LogCapture(self)

    def test_rare_errors_are_each_logged_in_full(self) -> None:
        self.errors.report("10.0.0.1:5", "malformed", "invalid bulk length")
        self.clock.advance(INTERVAL)
        self.errors.flush(self.clock.seconds())
        self.clock.advance(INTERVAL)
        self.errors.report("10.0.0.2:6", "oversize", "request exceeds max_request_bytes (10)")
        self.assertEqual(self.logged.take(), [
            "protocol error from 10.0.0.1:5: invalid bulk length; closing",
            "protocol error from 10.0.0.2:6: request exceeds max_request_bytes (10); closing",
        ])

    def test_a_flood_is_one_line_per_interval_with_its_count(self) -> None:
        self.errors.report("10.0.0.1:1", "malformed", "invalid bulk length")
        for i in range(999):
            self.clock.advance(0.001)
            self.errors.report("10.0.0.1:%d" % (i + 2), "oversize" if i % 3 == 0 else "malformed",
                               "expected '$', got '*'")
        self.assertEqual(len(self.logged.take()), 1)
        self.assertEqual(self.errors.pending, 999)
        self.clock.advance(INTERVAL / 2)
        self.errors.flush(self.clock.seconds())   # the interval is not over
        self.assertEqual(self.logged.take(), [])
        self.clock.advance(INTERVAL / 2)
        self.errors.flush(self.clock.seconds())
        self.assertEqual(self.logged.take(), [
            "999 more protocol errors in the last 11s (malformed 666, oversize 333), the last from"
            " 10.0.0.1:1000: expected '$', got '*'; each connection was closed",
        ])
        self.assertEqual(self.errors.pending, 0)
        # the flood goes on: still counted, not logged one by one
        self.errors.report("10.0.0.3:1", "malformed", "invalid multibulk length")
        self.assertEqual(self.logged.take(), [])
        self.clock.advance(INTERVAL)
        self.errors.flush(self.clock.seconds())
        self.assertEqual(len(self.logged.take()), 1)
        # a quiet interval: the next error is logged in full again
        self.clock.advance(INTERVAL)
        self.errors.flush(self.clock.seconds())
        self.assertEqual(self.logged.take(), [])
        self.errors.report("10.0.0.4:1", "malformed", "invalid multibulk length")
        self.assertEqual(self.logged.take(), ["protocol error from 10.0.0.4:1: invalid multibulk length; closing"])

    def test_an_error_after_the_interval_flushes_the_count_itself(self) -> None:
        for i in range(3):
            self.errors.report("10.0.0.1:%d" % i, "malformed", "invalid bulk length")
        self.clock.advance(INTERVAL + 5)
        self.errors.report("10.0.0.1:9", "malformed", "invalid bulk length")
        self.assertEqual(self.logged.take(), [
            "protocol error from 10.0.0.1:0: invalid bulk length; closing",
            "2 more protocol errors in the last 15s (malformed 2), the last from 10.0.0.1:2:"
            " invalid bulk length; each connection was closed",
        ])
        self.assertEqual(self.errors.pending, 1)


class NodeProtocolErrorTests(SynchronousTestCase):
    """Through the node: every error is answered and counted, the log is aggregated."""

    def test_hostile_connections_counted_each_and_logged_once(self) -> None:
        clock = Clock()
        parts = NodeParts(node_config(data_dir=self.mktemp()), clock, FakeDatastore(), FakeMonitor())
        parts.start()
        self.addCleanup(parts.stop)
        factory = ClientFactory(parts.node, clock)
        logged = LogCapture(self)
        for i in range(200):
            protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 1000 + i))
            transport = Transport()
            protocol.makeConnection(transport)
            protocol.dataReceived(b"\x00\x01")
            self.assertEqual(transport.value(),
                             b"-ERR Protocol error: unexpected byte 0x00 at the start of a request\r\n")
            self.assertTrue(transport.disconnecting)
            protocol.connectionLost(None)
        self.assertEqual(parts.node.protocol_errors, 200)
        self.assertEqual(parts.metrics.protocol_errors["malformed"], 200)
        self.assertEqual(len(logged.take()), 1)
        clock.advance(INTERVAL)
        parts.node.protocol_error_log.flush(clock.seconds())
        [line] = logged.take()
        self.assertTrue(line.startswith("199 more protocol errors"), line)
