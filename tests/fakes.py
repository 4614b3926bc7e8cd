"""
Test doubles shared by the unit tests: transports, endpoints, datastores,
and a node's parts as ops sees them (`FakeNode`).
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from dynomite.config.model import NodeConfig
from dynomite.node.control import INodeControl
from dynomite.ops.status import NodeStatus
from dynomite.placement.topology import Topology
from dynomite.replication.hints import DROP_REASONS
from dynomite.stats import REQUEST_RESULTS, Histogram, NodeMetrics


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


class RecordingSink:
    """Records every call a write's sink gets, in order: ("complete" | "fail" | "hinted", raw)."""

    def __init__(self) -> None:
        self.calls = []

    def complete(self, raw: bytes) -> None:
        self.calls.append(("complete", raw))

    def fail(self, raw: bytes) -> None:
        self.calls.append(("fail", raw))

    def hinted(self, raw: bytes) -> None:
        self.calls.append(("hinted", raw))


# How a numbered write's transaction starts (dynomite.replication.applied_once).
_NUMBERED = b"*1\r\n$5\r\nMULTI\r\n*2\r\n$6\r\nSELECT\r\n"


class _TransactionReply:
    """Answers the writes of a numbered transaction as Redis answers the transaction."""

    def __init__(self, count: int, sink) -> None:
        self.count = count
        self.sink = sink

    def complete(self, raw: bytes) -> None:
        n = self.count
        self.sink.complete(b"+OK\r\n" + b"+QUEUED\r\n" * (n + 3) + b"*%d\r\n" % (n + 3)
                           + b"+OK\r\n" * 3 + raw)

    def fail(self, raw: bytes) -> None:
        self.sink.fail(raw)


def _inside_transaction(payload: bytes, count: int, sink):
    from dynomite.wire.requests import RequestParser

    parser = RequestParser()
    parser.feed(payload)
    bounds = parser.bounds
    inner = payload[bounds[8]:bounds[2 * (count - 1)]]
    return inner, count - 5, _TransactionReply(count - 5, sink)


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

    def note_errors(self, count: int) -> None:
        pass

    def send(self, request, sink) -> None:
        """
        Record ``(lane, resp, payload, sink)`` of a `dynomite.wire.inflight.Request`.
        A numbered write (`dynomite.replication.applied_once`) is recorded as
        the writes inside its transaction, and answered as Redis answers the
        transaction, so tests see and answer the writes themselves.
        """
        payload, count = request.payload, request.count
        if payload.startswith(_NUMBERED):
            payload, count, sink = _inside_transaction(payload, count, sink)
        self.sent.append((request.lane, request.resp, payload, sink))
        self.counts.append(count)

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


# -- ops: the collaborators of a NodeStatus, and a recording INodeControl -------

class FakeLink:
    """What ops reads of a `PeerLink`."""

    def __init__(self, seed) -> None:
        self.name = str(seed.address)
        self.datacenter = seed.datacenter
        self.rack = seed.rack
        self.is_up = True
        self.tls = False
        self.admin = "%s:22222" % seed.address.host
        self.in_flight = 0
        self.timed_out_total = 0
        self.dropped_total = 0
        self.counts = dict.fromkeys(REQUEST_RESULTS, 0)
        self.latency = Histogram()

    @property
    def state(self) -> str:
        return "UP" if self.is_up else "DOWN"

    def request_counts(self):
        return dict(self.counts)


class FakeOutbox:
    """What ops reads of an `Outbox`: its `stats`."""

    def __init__(self) -> None:
        self.pending = 0
        self.stored_total = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.state = "DIRECT"

    def stats(self, now: float):
        return {"pending": self.pending, "pending_bytes": 10 * self.pending, "oldest_age_seconds": 0.0,
                "stored_total": self.stored_total, "replayed_total": 0, "dropped_total": dict(self.dropped),
                "state": self.state}


class FakeRepairs:
    """What the admin API and metrics read of a node's repairs (`dynomite.repair.manager.Repairs`)."""

    def __init__(self) -> None:
        from dynomite.repair.manager import REPAIR_EVENTS
        self.counts = dict.fromkeys(REPAIR_EVENTS, 0)
        self.running = None

    def status(self, now):
        return {"running": self.running, "last": None, "warmup": None, "anti_entropy_interval": 0.0,
                "rate": 5000}


@implementer(INodeControl)
class FakeControl:
    """Records every call in ``calls`` and applies it to the fake node, as the real control would."""

    def __init__(self, node: "FakeNode") -> None:
        self.node = node
        self.calls = []

    def _record(self, *call) -> None:
        self.calls.append(call)

    def set_state(self, state):
        self._record("set_state", state)
        self.node.membership.state = state

    def set_consistency(self, kind, level):
        self._record("set_consistency", kind, level)
        setattr(self.node.settings, kind + "_consistency", level)

    def set_timeout_factor(self, factor):
        self._record("set_timeout_factor", factor)
        self.node.settings.timeout_factor = factor

    def set_log_level(self, verbosity):
        self._record("set_log_level", verbosity)
        self.node.settings.log_level = verbosity
        return "debug" if verbosity > 5 else "info"

    def reload(self):
        self._record("reload")
        return True

    def start_repair(self, options):
        from dynomite.repair.manager import RepairBusy
        self._record("start_repair", options)
        if self.node.repairs.running is not None:
            raise RepairBusy("a repair is running")
        if options.source is not None and options.source != "dc1/rack1":
            raise ValueError("no rack %r in scope" % options.source)
        self.node.repairs.running = {"phase": "sizing"}

    def remove_node(self, name):
        self._record("remove_node", name)
        raise LookupError("gossip is off on this node (enable_gossip)")

    def cancel_repair(self):
        self._record("cancel_repair")
        running, self.node.repairs.running = self.node.repairs.running, None
        return running is not None

    def peer_up(self, name):
        self._record("peer_up", name)
        self.node.peers[name].is_up = True

    def peer_down(self, name):
        self._record("peer_down", name)
        self.node.peers[name].is_up = False

    def peer_reset(self, name):
        self._record("peer_reset", name)

    def pause_hints(self, target):
        self._record("pause_hints", target)
        self.node.outboxes[target].state = "PAUSED"

    def resume_hints(self, target):
        self._record("resume_hints", target)
        self.node.outboxes[target].state = "DIRECT"

    def truncate_hints(self, target):
        self._record("truncate_hints", target)
        outbox = self.node.outboxes[target]
        n, outbox.pending = outbox.pending, 0
        return n


class FakeNode:
    """
    A node's parts as plain objects: config, clock, settings, membership,
    topology, a datastore, peer links and outboxes (one per peer and remote
    DC, plus the local Redis), client and replication counters; `status` is
    the `NodeStatus` over them and `control` a `FakeControl`.
    """

    def __init__(self, **overrides) -> None:
        overrides.setdefault("dyn_seeds", ["127.0.0.2:8101:rack2:dc1:0", "127.0.0.3:8101:rack1:dc2:0"])
        self.config = node_config(**overrides)
        self.clock = Clock()
        self.clock.advance(1000)
        self.settings = SimpleNamespace(read_consistency=self.config.read_consistency,
                                        write_consistency=self.config.write_consistency,
                                        timeout_factor=1, log_level=self.config.log_level)
        self.membership = SimpleNamespace(state="NORMAL")
        self.topology = Topology.from_config(self.config)
        self.datastore = SimpleNamespace(is_up=True, in_flight=0, timed_out_total=0, latency=Histogram(),
                                         counts=dict.fromkeys(REQUEST_RESULTS, 0))
        self.datastore.request_counts = lambda: dict(self.datastore.counts)
        self.peers = {str(seed.address): FakeLink(seed) for seed in self.config.dyn_seeds}
        self.outboxes = {name: FakeOutbox() for name in [self.topology.local.name] + list(self.peers)}
        for dc in self.topology.remote_datacenters:
            self.outboxes["dc:" + dc] = FakeOutbox()
        self.clients = SimpleNamespace(clients=set(), connections_accepted=0, started=self.clock.seconds(),
                                       flood_guard=None)
        self.replication = SimpleNamespace(
            local_writes=[0, 0], remote_writes=[0, 0], quorum_failures={},
            leading=SimpleNamespace(leaders_lost=0, leaders_unknown=0, leaders_moved=0),
            leader=SimpleNamespace(effects_run=0, effects_unknown=0, versions=None), replays_skipped=lambda: 0,
            gathering=SimpleNamespace(gathered=0, led=0), forwarded=SimpleNamespace(skipped=0, waited=0))
        self.metrics = NodeMetrics()
        self.repairs = FakeRepairs()
        self.status = NodeStatus(
            config=lambda: self.config, clock=self.clock, settings=self.settings, membership=self.membership,
            topology=lambda: self.topology, datastore=self.datastore, peers=self.peers, outboxes=self.outboxes,
            clients=self.clients, replication=self.replication, metrics=self.metrics, repairs=self.repairs)
        self.control = FakeControl(self)
