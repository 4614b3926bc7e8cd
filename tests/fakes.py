"""Test doubles shared by the unit tests: transports, endpoints, datastores."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from dynomite.config.model import NodeConfig


def node_config(**overrides) -> NodeConfig:
    """A valid single-node config; keyword arguments override YAML keys."""
    pool = {
        "listen": "127.0.0.1:8102",
        "dyn_listen": "127.0.0.1:8101",
        "servers": ["127.0.0.1:6379:1"],
        "tokens": "0",
        "datacenter": "dc1",
        "rack": "rack1",
        "timeout": 1000,
    }
    pool.update(overrides)
    return NodeConfig.from_dict({"dyn_o_mite": pool}, source="test.yml")


class Transport(StringTransport):
    """A StringTransport that also takes the TCP options real ones take."""

    def __init__(self) -> None:
        StringTransport.__init__(self)
        self.aborted = False
        self.reading = True

    def setTcpNoDelay(self, enabled) -> None:
        pass

    def abortConnection(self) -> None:
        self.aborted = True
        StringTransport.loseConnection(self)

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True


class FakeEndpoint:
    """Connection attempts wait until the test accepts or refuses them."""

    def __init__(self) -> None:
        self.attempts = []

    def connect(self, factory) -> Deferred:
        d = Deferred()
        self.attempts.append((factory, d))
        return d

    def accept(self):
        """Complete the oldest attempt; returns (protocol, transport)."""
        factory, d = self.attempts.pop(0)
        protocol = factory.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        d.callback(protocol)
        return protocol, transport

    def refuse(self) -> None:
        factory, d = self.attempts.pop(0)
        d.errback(Failure(ConnectionRefusedError()))


def drop(protocol) -> None:
    """The peer closed the connection."""
    protocol.connectionLost(Failure(ConnectionDone()))


class Sink:
    """Collects the replies a datastore gives."""

    def __init__(self, replies=None) -> None:
        self.replies = [] if replies is None else replies
        self.failures = []

    def complete(self, raw: bytes) -> None:
        self.replies.append(raw)

    def fail(self, raw: bytes) -> None:
        self.failures.append(raw)
        self.replies.append(raw)


class FakeDatastore:
    """Records what the node sends; the test answers with ``answer``."""

    def __init__(self) -> None:
        self.sent = []
        self.counts = []  # requests in each send, in step with sent (popped by answer)
        self.is_up = True
        self.in_flight = 0
        self.timed_out_total = 0
        self.timeout = 1.0

    def retry_now(self) -> None:
        pass

    def send(self, request, sink) -> None:
        """Record ``(lane, resp, payload, sink)`` of a `dynomite.wire.inflight.Request`."""
        self.sent.append((request.lane, request.resp, request.payload, sink))
        self.counts.append(request.count)

    def answer(self, raw: bytes, index: int = 0) -> None:
        client_id, resp, data, sink = self.sent.pop(index)
        self.counts.pop(index)
        sink.complete(raw)


class FakeMonitor:
    redis_version = "7.0.15"

    def __init__(self, info_text: bytes = b"# Server\r\nredis_version:7.0.15\r\n") -> None:
        self.info_text = info_text
        self.asked = []

    def info(self, sections):
        self.asked.append(list(sections))
        return succeed(self.info_text)
