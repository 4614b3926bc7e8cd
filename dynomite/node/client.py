# -*- test-case-name: tests.unit.test_node -*-
"""
The client-facing RESP protocol: bytes in, requests to the node, replies
out in request order.

The protocol is thin: `RequestParser` frames requests, `Node.execute`
decides what happens to each, and this class only keeps replies in the
order the client sent its requests.  Every request gets a `ReplySlot` in a
deque; a slot may be filled at once (commands the node answers itself) or
later (Redis, peers); whenever the head of the deque is filled, every
consecutive filled slot is written in one go.

Memory stays bounded: the node stops reading from a client whose requests
in flight exceed ``client_max_outstanding_bytes`` or `MAX_OUTSTANDING_REQUESTS`
(the replies to small requests can be large: GET of a big value), and
resumes below half of both; and it stops reading while the client's own
socket buffer is full (the client is not reading its replies).

Pub/sub messages (`push`) are written after the replies before them, and
a subscriber that does not read them is closed as Redis closes it for its
``client-output-buffer-limit pubsub``: the bytes pushed since its socket
buffer filled (the transport paused this producer) count as its backlog;
beyond ``pubsub_output_hard_limit``, or above ``pubsub_output_soft_limit``
for ``pubsub_output_soft_seconds``, the connection is aborted (what it had
not read is dropped) and its subscriptions go.

Connections are bounded too: beyond ``maxclients`` a new client is told
``-ERR max number of clients reached`` and closed, as Redis does; a client
silent for ``client_idle_timeout`` seconds with nothing in flight is
closed; one that began a request and has not completed it within
``client_read_timeout`` is answered a protocol error and closed
(`dynomite.node.dispatch.Node.sweep_clients` looks once a second).
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Optional

from OpenSSL.SSL import Error as TLSError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from dynomite.runtime import batching
from dynomite.wire.replies import ERROR_STARTS, count_errors
from dynomite.wire.requests import make_request_parser
from dynomite.node.session import Session

# Requests one client may have in flight before the node stops reading from
# it.  Far above what pipelining clients use (redis-benchmark -P 16 keeps
# 16), low enough that their replies cannot exhaust memory.
MAX_OUTSTANDING_REQUESTS = 4096

#: What a reply slot stands for, when the client's later requests must wait for it.
WRITE, READ = 1, 2


class ReplySlot:
    """
    The place of one request's reply in its client's reply order (or of a
    run of ``count`` pipelined requests' replies, joined), and what is
    needed to account for it when it is written: the command's ``[ok,
    error]`` counter, its latency histogram and when it was read.
    """

    __slots__ = ("client", "reply", "size", "count", "counter", "latency", "start", "kind")

    def __init__(self, client: "ClientProtocol", size: int, count: int = 1, kind: int = 0) -> None:
        self.client = client
        self.reply = None
        self.size = size
        self.count = count
        self.counter = client.counter
        self.latency = client.latency
        self.start = client.batch_start
        #: WRITE or READ: what the client's later requests of the other
        #: kind wait for (`dynomite.node.dispatch`); 0 for the rest
        self.kind = kind
        if kind == WRITE:
            client.writes_pending += 1
        elif kind == READ:
            client.reads_pending += 1

    def complete(self, raw: bytes) -> None:
        """Called once with the raw RESP reply for this request."""
        self.reply = raw
        client = self.client
        if self.kind:
            client.request_done(self.kind)
        queue = client.queue
        if queue and queue[0] is self and not batching.defer(client):
            client.flush()

    def fail(self, raw: bytes) -> None:
        """
        A node-made error (replica unreachable, timeout) reaches a client like
        any other error reply (quorum sinks are the ones that tell them
        apart), once for each request of a run.
        """
        self.complete(raw * self.count if self.count > 1 else raw)


@implementer(IHalfCloseableProtocol)
class ClientProtocol(Protocol):
    """
    One Redis client connection.

    A client that half-closes (``printf 'PING\\r\\n' | nc host port``) still
    gets the replies to everything it sent before the connection closes.
    """

    log = Logger()

    def __init__(self, node, session: Session, max_request_bytes: int, max_outstanding: int,
                 clock=None) -> None:
        self.node = node
        self.session = session
        self._clock = clock if clock is not None else node.clock
        # Accounting for the request being dispatched: set by the node before
        # it answers or forwards the request, copied into its ReplySlot.
        self.counter = [0, 0]
        self.latency = None
        self.batch_start = 0.0
        self.batched = False  # waiting in dynomite.runtime.batching for the end of a reply loop
        self.queue: Deque[ReplySlot] = deque()
        self._parser = make_request_parser(max_request_bytes)
        self._max_outstanding = max_outstanding
        self._outstanding = 0   # bytes of the requests waiting for their replies
        self._requests = 0      # ... and how many requests
        self._paused_outstanding = False
        self._paused_consumer = False
        #: Set by the node while it dispatches a write (a read that replicas
        #: answer): its slot counts in ``writes_pending`` (``reads_pending``),
        #: those not answered yet.  The client's reads wait for its writes
        #: (their leader may be another node, the read could overtake them)
        #: and its writes for its reads (the leader's copy could reach a
        #: replica before the read); ``held``: the requests waiting, as
        #: (requests, bounds, data, index of the first) per read.
        self.writing = False
        self.reading = False
        self.reads_pending = 0
        self.releasing = False   # held requests are going on (`Node.release_held`)
        #: waiting in a blocking command (`dynomite.node.blocking`): later requests wait too
        self.blocked = False
        #: the node is stopping (`stop_reading`): nothing more is read
        self.reading_stopped = False
        self.writes_pending = 0
        self.held: Optional[Deque[tuple]] = None
        self.connected = False
        #: whether it sent a valid request: None while it sent nothing;
        #: False once it sent bytes but no valid request (a connection that
        #: ends so counts toward a flood: `dynomite.runtime.flood`)
        self.asked: Optional[bool] = None
        #: When the client last sent anything, and when the request it has
        #: begun and not completed began (None: no such request).
        self.last_active = self._clock.seconds()
        self.request_started: Optional[float] = None
        #: pub/sub bytes pushed since the socket buffer filled, and since
        #: when that backlog is above the soft limit (None: it is not)
        self.push_backlog = 0
        self._soft_since: Optional[float] = None

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True
        self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        self.node.client_connected(self)

    def connectionLost(self, reason) -> None:
        if self.asked is None and reason.check(TLSError) is not None:
            self.asked = False   # sent bytes, though not one TLS could take (a failed handshake)
        self.connected = False
        self.queue.clear()
        self.node.client_disconnected(self)

    def readConnectionLost(self) -> None:
        self._close_after_replies()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    # -- requests ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        parser = self._parser
        requests = parser.feed(data)
        if requests:
            if self.asked is not True:
                self.asked = True
                self.node.client_asked(self)
        elif self.asked is None:
            self.asked = False
        # One clock read per batch: requests read together started together.
        self.batch_start = self.last_active = now = self._clock.seconds()
        if parser.in_request:
            if requests or self.request_started is None:
                self.request_started = now
        elif self.request_started is not None:
            self.request_started = None
        # requests read together go out together: one write per Redis or
        # peer connection for the whole batch
        batching.begin()
        try:
            self.node.execute_batch(self, requests, parser.bounds, data)
        finally:
            batching.end()
        if self.session.quitting:
            self._close_after_replies()
            return
        if parser.error is not None:
            self.asked = False   # whatever came before: a connection that ends so is a flood's
            self.node.protocol_error(self, str(parser.error))
            self.reply(b"-ERR Protocol error: %s\r\n" % str(parser.error).encode())
            self._close_after_replies()
        elif not self._paused_outstanding and (
            self._outstanding > self._max_outstanding or self._requests > MAX_OUTSTANDING_REQUESTS
        ):
            self._paused_outstanding = True
            self.transport.pauseProducing()

    def slot(self, size: int, count: int = 1) -> ReplySlot:
        """
        A slot for the reply to ``count`` requests (joined) that comes later;
        ``size`` bytes and ``count`` requests count toward backpressure.
        """
        slot = ReplySlot(self, size, count, WRITE if self.writing else READ if self.reading else 0)
        self.queue.append(slot)
        self._outstanding += size
        self._requests += count
        return slot

    def request_done(self, kind: int) -> None:
        """
        A write's (or a read's) reply came: the reads held behind the
        client's writes (the writes held behind its reads) may go.
        """
        if kind == WRITE:
            self.writes_pending -= 1
            done = not self.writes_pending
        else:
            self.reads_pending -= 1
            done = not self.reads_pending
        if done and self.held and self.connected:
            self.node.release_held(self)

    def hold(self, requests, bounds, data: bytes, index: int) -> None:
        """
        Keep ``requests[index:]`` (read from ``data``) until this client's
        writes are answered (a read must see them); their bytes count as
        outstanding, so a client that keeps sending is paused.
        """
        if self.held is None:
            self.held = deque()
        self.held.append((requests, bounds, data, index))
        self._outstanding += len(data)

    def released(self, data: bytes) -> None:
        """Held requests read from ``data`` went out."""
        self._outstanding -= len(data)

    def reply(self, raw: bytes) -> None:
        """A reply available now."""
        if self.queue:
            slot = ReplySlot(self, 0)
            slot.reply = raw
            self.queue.append(slot)
            self._requests += 1
            return
        self.counter[raw[:1] in ERROR_STARTS] += 1
        if self.latency is not None:
            self.latency.observe(self._clock.seconds() - self.batch_start)
        if self.connected:
            batching.write_now(self.transport, (raw,))

    def push(self, raw: bytes) -> None:
        """
        A pub/sub message (or subscription change) for this client, written
        after the replies before it; it is not a reply to a request.
        """
        if not self.connected:
            return
        if self.queue or batching.defer(self):
            slot = ReplySlot(self, 0, 0)
            slot.reply = raw
            self.queue.append(slot)
        else:
            batching.write_now(self.transport, (raw,))
        if self._paused_consumer:
            self.push_backlog += len(raw)
            self._check_output_limit()

    def _check_output_limit(self) -> None:
        config = self.node.config
        backlog = self.push_backlog
        reason = None
        if backlog > config.pubsub_output_hard_limit:
            reason = "hard limit of %d bytes" % config.pubsub_output_hard_limit
        elif config.pubsub_output_soft_limit and backlog > config.pubsub_output_soft_limit:
            now = self._clock.seconds()
            if self._soft_since is None:
                self._soft_since = now
            elif now - self._soft_since >= config.pubsub_output_soft_seconds:
                reason = "soft limit of %d bytes for %ds" % (
                    config.pubsub_output_soft_limit, config.pubsub_output_soft_seconds)
        else:
            self._soft_since = None
        if reason is not None:
            self.connected = False
            self.queue.clear()
            self.node.output_limit_reached(self, reason)
            self.transport.abortConnection()

    def flush_batched(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Write every reply at the head of the queue that is ready."""
        queue = self.queue
        out = []
        freed = 0
        answered = 0
        now = self._clock.seconds()
        while queue:
            head = queue[0]
            raw = head.reply
            if raw is None:
                break
            queue.popleft()
            out.append(raw)
            freed += head.size
            count = head.count
            answered += count
            if count == 1:
                head.counter[raw[:1] in ERROR_STARTS] += 1
                if head.latency is not None:
                    head.latency.observe(now - head.start)
            elif count:
                errors = count_errors(raw)
                counter = head.counter
                counter[0] += count - errors
                counter[1] += errors
                if head.latency is not None:
                    head.latency.observe_many(now - head.start, count)
        if not out or not self.connected:
            return
        batching.write_now(self.transport, out)
        self._outstanding -= freed
        self._requests -= answered
        if (
            self._paused_outstanding
            and not self.reading_stopped
            and self._outstanding <= self._max_outstanding // 2
            and self._requests <= MAX_OUTSTANDING_REQUESTS // 2
        ):
            self._paused_outstanding = False
            if not self._paused_consumer:
                self.transport.resumeProducing()
        if not queue and self.session.quitting:
            self._close()

    def idle_since(self) -> Optional[float]:
        """When this client became idle (nothing in flight, nothing begun), or None if it is not."""
        if self.queue or self.request_started is not None or self.session.quitting:
            return None
        return self.last_active

    def cut(self, reply: Optional[bytes] = None) -> None:
        """Close this connection for a limit, after ``reply`` (if any) and the replies before it."""
        if reply is not None:
            self.reply(reply)
        self._close_after_replies()

    def drain(self) -> None:
        """
        The node is stopping, or this client's user is gone: read nothing
        more; close once the replies in flight are written.
        """
        self._paused_outstanding = True
        self.transport.pauseProducing()
        self._close_after_replies()

    def stop_reading(self) -> None:
        """
        The node is stopping: read nothing more.  Unlike `drain`, what was
        read is still answered, the requests waiting behind a write or a
        blocked command included; `settled` says when it all was.
        """
        self.reading_stopped = True
        self._paused_outstanding = True
        self.transport.pauseProducing()

    @property
    def settled(self) -> bool:
        """No request read from this client waits for its reply (queued, held, or blocked)."""
        return not self.queue and not self.held and not self.blocked

    def _close_after_replies(self) -> None:
        self.session.quitting = True
        if not self.queue:
            self._close()

    def _close(self) -> None:
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    # -- IPushProducer, registered on our own transport ---------------------
    # The transport calls these when its write buffer fills and drains.

    def pauseProducing(self) -> None:
        if not self._paused_consumer:
            self._paused_consumer = True
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._paused_consumer:
            self._paused_consumer = False
            self.push_backlog = 0
            self._soft_since = None
            if not self._paused_outstanding:
                self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


MAX_CLIENTS_REACHED = b"-ERR max number of clients reached\r\n"


class _Refused(Protocol):
    """A connection beyond ``maxclients``: told so, as Redis does, and closed."""

    def connectionMade(self) -> None:
        self.transport.write(MAX_CLIENTS_REACHED)
        self.transport.loseConnection()


class ClientFactory(Factory):
    """Builds a `ClientProtocol` and its `Session` for each connection."""

    noisy = False

    def __init__(self, node, clock) -> None:
        self.node = node
        self._clock = clock

    def buildProtocol(self, addr):
        config = self.node.config
        if len(self.node.clients) >= config.maxclients:
            self.node.refused_client()
            return _Refused()
        address = "%s:%s" % (getattr(addr, "host", "?"), getattr(addr, "port", "?"))
        acl = self.node.acl
        session = Session(address, acl.default_authenticated, self._clock.seconds(), acl.default)
        return ClientProtocol(
            self.node, session, config.max_request_bytes, config.client_max_outstanding_bytes,
            self._clock,
        )
