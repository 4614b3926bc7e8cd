"""
The data path to the local Redis: pipelined raw-RESP connections.

Requests are written as RESP bytes and replies come back as the exact bytes
Redis sent (the reply parser only finds where each reply ends), so status
and bulk replies, nils, empty arrays and errors nested in arrays reach the
client unchanged.  Each connection keeps its in-flight requests in a deque
and matches replies in order, like Twisted's memcache protocol.

Whoever waits for a reply is a *sink*: an object with ``complete(raw)``
for Redis's reply and ``fail(raw)`` for an error reply made by the node
(Redis unavailable or too slow).  Most sinks treat both alike; quorum
reconciliation counts a failure as a missing replica, not as an answer.
A sink may stand for a *run* of several pipelined requests sent in one
piece (`dynomite.runs`): it gets their replies joined in one bytes object,
found by counting whole replies, or one failure for the whole run.  The
everyday replies (status, error, integer, null, short bulk) are counted
without the parser (`reply_parser.simple_replies_end`) and handed over as
one slice of what was read; anything else goes through the parser.

Connection lifecycle (one `DatastoreLink` per connection):

    IDLE --start--> CONNECTING --ready--> CONNECTED --lost--> WAITING
    CONNECTING --failed--> WAITING --delay elapsed / retry_now--> CONNECTING
    any --stop--> STOPPED

Failures are counted across the pool.  With ``auto_eject_hosts`` the
datastore is ejected after ``server_failure_limit`` consecutive failures:
reconnects pause for ``server_retry_timeout`` (Dynomite's behaviour), unless
the health monitor sees Redis answer again sooner and calls `retry_now`.
While no connection is up, requests fail at once with
``-ERR datastore unavailable``; a request without a reply after ``timeout``
fails every request on its connection and drops it, since in-order matching
can no longer be trusted.  "Without a reply" means the connection made no
progress: a deep pipeline that Redis answers steadily never times out.

Counting is cheap: each connection bumps plain integers (requests sent,
replies, error replies, requests failed when it closed) and the `Datastore`
keeps the totals of closed connections, so nothing is lost when one goes
away.  Latency is sampled: every `SAMPLE_EVERY`-th request of a connection
remembers (its sequence number, the clock); replies match requests in order,
so when the reply count reaches that number the elapsed time goes into the
`Datastore`'s `Histogram`.  At most one sample waits per connection.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple

from twisted.application.service import Service
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dynomite.runtime import batching
from dynomite.config.model import Address, NodeConfig
from dynomite.stats import Histogram
from dynomite.wire.replies import ERROR_STARTS, make_reply_parser, simple_replies_end
from dynomite.wire.resp import ProtocolError, encode_command

UNAVAILABLE = b"-ERR datastore unavailable\r\n"

HELLO_3 = encode_command([b"HELLO", b"3"])

# One request in SAMPLE_EVERY (a power of two) has its latency measured.
SAMPLE_EVERY = 16
_SAMPLE_STEP = ~(SAMPLE_EVERY - 1)  # a request count crossing a multiple of SAMPLE_EVERY

# The longest unfinished run of simple replies kept for the next read;
# anything longer goes to the reply parser, which never copies it again.
_TAIL_MAX = 16 * 1024

# First bytes of an error reply: RESP2/3 simple error, RESP3 blob error.


def _errors_in(replies: List[bytes]) -> int:
    """How many of ``replies`` are error replies."""
    n = 0
    for raw in replies:
        if raw[:1] in ERROR_STARTS:
            n += 1
    return n


def _timed_out_reply(timeout: float) -> bytes:
    return b"-ERR datastore unavailable: no reply within %d ms\r\n" % (timeout * 1000,)


class _ReadySink:
    """Completes the HELLO 3 that a RESP3 connection sends before it is used."""

    def __init__(self, protocol: "DatastoreProtocol") -> None:
        self._protocol = protocol

    def complete(self, raw: bytes) -> None:
        if raw[:1] in (b"-", b"!"):
            self._protocol.log.error(
                "datastore refused HELLO 3: {reply!r}", reply=raw[:200]
            )
            self._protocol.transport.abortConnection()
        else:
            self._protocol.ready()

    fail = complete


class DatastoreProtocol(Protocol, batching.BatchedWriter):
    """One pipelined connection to Redis carrying raw RESP both ways."""

    log = Logger()

    def __init__(self, link: "DatastoreLink", clock) -> None:
        batching.BatchedWriter.__init__(self)
        self._link = link
        self._clock = clock
        self._parser = make_reply_parser()
        self._sinks: Deque = deque()
        self._counts: Deque[int] = deque()  # requests per sink, in step with _sinks
        self._partial: List[bytes] = []     # replies so far for the head sink, when it wants several
        self._tail = b""                    # the start of simple replies, not framed yet (see dataReceived)
        # When the connection last made progress: the moment its queue went
        # from empty to busy, or the last reply.  A connection that answers
        # steadily is never timed out, however deep its pipeline.
        self._progress_at = 0.0
        self.is_ready = False
        # plain counters (see the module docstring); the pool sums them
        self.sent = 0
        self.answered = 0
        self.errors = 0
        self.lost = 0
        self._latency: Histogram = link.pool.latency
        self._sample_seq = 0  # sequence number of the sampled request, 0: none
        self._sample_at = 0.0

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        if self._link.resp == 3:
            self.send(HELLO_3, _ReadySink(self))
        else:
            self.ready()

    def ready(self) -> None:
        # the HELLO 3 handshake is not a request of anyone's: start counting here
        self.sent = self.answered = 0
        self.is_ready = True
        self._link.connection_ready(self)

    @property
    def in_flight(self) -> int:
        """Requests written and not answered yet."""
        return sum(self._counts)

    def send(self, data: bytes, sink, count: int = 1) -> None:
        """
        Write ``count`` requests (``data``, their RESP bytes) for one sink:
        it gets all their replies joined, or one failure for them all.
        """
        sinks = self._sinks
        if not sinks:
            self._progress_at = self._clock.seconds()
        sinks.append(sink)
        self._counts.append(count)
        sent = self.sent
        self.sent = n = sent + count
        if n & _SAMPLE_STEP != sent & _SAMPLE_STEP and not self._sample_seq:
            self._sample_seq = n
            self._sample_at = self._clock.seconds()
        self.write_batched(data)

    def accepts_writes(self) -> bool:
        return self.transport is not None and self.connected

    def dataReceived(self, data: bytes) -> None:
        answered = errors = pos = 0
        sinks, counts = self._sinks, self._counts
        if self._tail:
            data = self._tail + data
            self._tail = b""
        batching.begin()
        try:
            parser = self._parser
            if not self._partial and not parser.in_frame and parser.error is None:
                # The everyday replies go to their sinks as slices of what was
                # read, a run's replies in one piece, without a parser; a
                # short unfinished tail waits for the next read.
                end_of, n = simple_replies_end, len(data)
                while sinks and pos < n:
                    need = counts[0]
                    end, bad = end_of(data, pos, need)
                    if end < 0:
                        if end == -2 and n - pos <= _TAIL_MAX:
                            self._tail = data[pos:]
                            pos = n
                        break
                    counts.popleft()
                    answered += need
                    self.answered += need  # before completing: a HELLO's sink resets it
                    errors += bad
                    sinks.popleft().complete(data[pos:end])
                    pos = end
            if pos < len(data):
                done = self._parse_replies(data[pos:] if pos else data)
                answered += done[0]
                errors += done[1]
        finally:
            batching.end()
        if not answered:
            return
        self._progress_at = now = self._clock.seconds()
        if errors:
            self.errors += errors
        seq = self._sample_seq
        if seq and self.answered >= seq:
            self._sample_seq = 0
            self._latency.observe(now - self._sample_at)

    def _parse_replies(self, data: bytes) -> Tuple[int, int]:
        """Frame ``data`` with the parser and complete sinks; return (replies, errors) taken."""
        try:
            replies = self._parser.feed(data)
        except ProtocolError as e:
            self.log.error("unparseable reply from datastore: {reason}", reason=str(e))
            self.transport.abortConnection()
            return 0, 0
        sinks, counts = self._sinks, self._counts
        answered = errors = 0
        i, n = 0, len(replies)
        while i < n:
            if not sinks:
                self.log.error("datastore sent a reply nobody asked for")
                self.transport.abortConnection()
                break
            need = counts[0]
            if need == 1 and not self._partial:
                raw = replies[i]
                i += 1
                answered += 1
                self.answered += 1
                if raw[:1] in ERROR_STARTS:
                    errors += 1
                counts.popleft()
                sinks.popleft().complete(raw)
                continue
            part = replies[i:i + need]
            i += len(part)
            answered += len(part)
            self.answered += len(part)
            errors += _errors_in(part)
            if len(part) < need:   # the rest comes in a later read
                self._partial += part
                counts[0] = need - len(part)
                break
            if self._partial:
                part = self._partial + part
                self._partial = []
            counts.popleft()
            sinks.popleft().complete(b"".join(part))
        return answered, errors

    def stalled_for(self, now: float) -> float:
        """Seconds requests have waited without any reply arriving."""
        return now - self._progress_at if self._sinks else 0.0

    def fail_all(self, reply: bytes) -> None:
        """Answer every waiting request with ``reply`` (connection is going away)."""
        sinks = self._sinks
        self._sinks = deque()
        self._counts = deque()
        self._partial = []
        self._tail = b""
        self._sample_seq = 0
        for sink in sinks:
            sink.fail(reply)

    def connectionLost(self, reason) -> None:
        self.is_ready = False
        self.lost += len(self._sinks)
        self.fail_all(UNAVAILABLE)
        self._link.pool.retire(self)
        self._link.connection_lost(self)


class _LinkFactory(Factory):

    noisy = False
    def __init__(self, link: "DatastoreLink", clock) -> None:
        self._link = link
        self._clock = clock

    def buildProtocol(self, addr):
        return DatastoreProtocol(self._link, self._clock)


class DatastoreLink:
    """One reconnecting connection to Redis: the state machine above."""

    log = Logger()

    def __init__(self, pool: "Datastore", resp: int, clock, endpoint) -> None:
        self.pool = pool
        self.resp = resp
        self._clock = clock
        self._endpoint = endpoint
        self._factory = _LinkFactory(self, clock)
        self.state = "IDLE"
        self.protocol: Optional[DatastoreProtocol] = None
        self._attempt = None
        self._retry_call = None
        self._failures = 0

    # -- transitions -------------------------------------------------------

    def start(self) -> None:
        if self.state in ("IDLE", "WAITING"):
            self._connect()

    def stop(self) -> None:
        self.state = "STOPPED"
        self._cancel_retry()
        if self._attempt is not None:
            self._attempt.cancel()
        if self.protocol is not None:
            self.protocol.transport.abortConnection()

    def retry_now(self) -> None:
        if self.state == "WAITING":
            self._cancel_retry()
            self._connect()

    def _connect(self) -> None:
        self.state = "CONNECTING"
        self._attempt = self._endpoint.connect(self._factory)
        self._attempt.addErrback(self._connect_failed)

    def _connect_failed(self, failure) -> None:
        self._attempt = None
        if self.state != "CONNECTING":
            return
        self.log.debug("datastore connect failed: {f}", f=failure.getErrorMessage())
        self.pool.record_failure()
        self._wait()

    def connection_ready(self, protocol: DatastoreProtocol) -> None:
        self._attempt = None
        if self.state != "CONNECTING":
            protocol.transport.abortConnection()
            return
        self.state = "CONNECTED"
        self.protocol = protocol
        self._failures = 0
        self.pool.link_up(self)

    def connection_lost(self, protocol: DatastoreProtocol) -> None:
        if protocol is not self.protocol:
            # lost before it became ready: a failed attempt
            if self.state == "CONNECTING":
                self._attempt = None
                self.pool.record_failure()
                self._wait()
            return
        self.protocol = None
        self.pool.link_down(self)
        if self.state == "CONNECTED":
            self.pool.record_failure()
            self._wait()

    def _wait(self) -> None:
        self.state = "WAITING"
        self._failures += 1
        delay = self.pool.reconnect_delay(self._failures)
        self._retry_call = self._clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        if self.state == "WAITING":
            self._connect()

    def _cancel_retry(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None


class Datastore(Service):
    """
    The local Redis as the hot path sees it: ``send`` a request, get the
    raw reply in a sink.

    There is a pool of ``datastore_connections`` connections per RESP
    version (RESP3 clients get connections that said HELLO 3, so Redis
    itself encodes their replies).  A client is pinned to one connection of
    its pool, so its pipelined commands execute in the order it sent them.
    """

    log = Logger()

    def __init__(
        self,
        config: NodeConfig,
        reactor,
        jitter: Callable[[], float] = random.random,
        endpoint_factory: Optional[Callable[[Address], object]] = None,
    ) -> None:
        self._config = config
        self.timeout = config.timeout  # seconds; the admin timeout factor scales it
        self._clock = reactor
        self._jitter = jitter
        address = config.datastore
        if endpoint_factory is None:
            endpoint = HostnameEndpoint(
                reactor, address.host, address.port, timeout=max(config.timeout, 0.1)
            )
        else:
            endpoint = endpoint_factory(address)
        n = config.datastore_connections
        self.links = [DatastoreLink(self, resp, reactor, endpoint) for resp in (2, 3) for _ in range(n)]
        self._ready: dict = {2: [], 3: []}
        self.consecutive_failures = 0
        self.ejected_until: Optional[float] = None
        self._sweeper = LoopingCall(self.expire_requests)
        self._sweeper.clock = reactor
        self.timed_out_total = 0
        # requests failed at once because no connection was up
        self.unavailable_total = 0
        # totals of closed connections: sent, answered, error replies, lost
        self._closed = [0, 0, 0, 0]
        # sampled request latency (one request in SAMPLE_EVERY per connection)
        self.latency = Histogram()

    # -- hot path ----------------------------------------------------------

    def send(self, client_id: int, resp: int, data: bytes, sink, count: int = 1) -> None:
        """
        Send ``count`` requests for client ``client_id`` speaking ``resp``;
        ``sink`` gets their replies joined (`DatastoreProtocol.send`).
        """
        ready = self._ready[resp]
        if ready:
            ready[client_id % len(ready)].send(data, sink, count)
        else:
            self.unavailable_total += count
            sink.fail(UNAVAILABLE)

    # -- counters ----------------------------------------------------------

    def retire(self, protocol: DatastoreProtocol) -> None:
        """A connection closed: keep its counts in the totals."""
        closed = self._closed
        closed[0] += protocol.sent
        closed[1] += protocol.answered
        closed[2] += protocol.errors
        closed[3] += protocol.lost
        protocol.sent = protocol.answered = protocol.errors = protocol.lost = 0

    def _totals(self) -> List[int]:
        sent, answered, errors, lost = self._closed
        for ready in self._ready.values():
            for p in ready:
                sent += p.sent
                answered += p.answered
                errors += p.errors
                lost += p.lost
        return [sent, answered, errors, lost]

    @property
    def requests_total(self) -> int:
        """Requests written to Redis, on every connection so far."""
        return self._totals()[0]

    def request_counts(self) -> Dict[str, int]:
        """
        Requests by result: ``ok`` and ``error`` replies (an error is an
        error reply, or a request failed when its connection closed),
        ``timeout`` (connections dropped for no reply: `timed_out_total`),
        ``unavailable`` (failed at once, no connection up).
        """
        _, answered, errors, lost = self._totals()
        return {
            "ok": answered - errors,
            "error": errors + lost,
            "timeout": self.timed_out_total,
            "unavailable": self.unavailable_total,
        }

    # -- state -------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return bool(self._ready[2])

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for ready in self._ready.values() for p in ready)

    def link_up(self, link: DatastoreLink) -> None:
        if not self.is_up:
            self.log.info("datastore {address} is up", address=str(self._config.datastore))
        self.consecutive_failures = 0
        self.ejected_until = None
        self._ready[link.resp].append(link.protocol)

    def link_down(self, link: DatastoreLink) -> None:
        ready = self._ready[link.resp]
        self._ready[link.resp] = [p for p in ready if p.is_ready]
        if not self.is_up:
            self.log.warn("datastore {address} is down", address=str(self._config.datastore))

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        config = self._config
        if (
            config.auto_eject_hosts
            and self.ejected_until is None
            and self.consecutive_failures >= config.server_failure_limit
        ):
            self.ejected_until = self._clock.seconds() + config.server_retry_timeout
            self.log.warn(
                "datastore {address} ejected for {seconds}s after {n} failures",
                address=str(config.datastore),
                seconds=config.server_retry_timeout,
                n=self.consecutive_failures,
            )

    def reconnect_delay(self, attempts: int) -> float:
        """Seconds before the next connection attempt of a link."""
        if self.ejected_until is not None:
            return max(self.ejected_until - self._clock.seconds(), 0.0)
        base = min(0.05 * (2 ** min(attempts, 10)), 1.0)
        return base * (0.5 + self._jitter() / 2)

    def retry_now(self) -> None:
        """Redis answers (the health monitor says so): reconnect waiting links now."""
        waiting = [link for link in self.links if link.state == "WAITING"]
        if waiting:
            self.ejected_until = None
            for link in waiting:
                link.retry_now()

    def expire_requests(self) -> None:
        """Fail and drop connections that made no progress for ``timeout``."""
        now = self._clock.seconds()
        timeout = self.timeout
        for ready in self._ready.values():
            for protocol in list(ready):
                if protocol.stalled_for(now) > timeout:
                    self.timed_out_total += protocol.in_flight
                    self.log.warn(
                        "datastore gave no reply within {timeout}s; dropping connection",
                        timeout=timeout,
                    )
                    protocol.fail_all(_timed_out_reply(timeout))
                    protocol.transport.abortConnection()

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        for link in self.links:
            link.start()
        interval = min(self._config.timeout / 4.0, 0.25)
        self._sweeper.start(interval, now=False)

    def stopService(self):
        Service.stopService(self)
        if self._sweeper.running:
            self._sweeper.stop()
        for link in self.links:
            link.stop()
