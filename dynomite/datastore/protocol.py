# -*- test-case-name: tests.unit.test_datastore -*-
"""
One pipelined raw-RESP connection to the local Redis: framing, in-order
matching, fail-all.

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
piece (`dynomite.consistency.runs`): it gets their replies joined in one
bytes object, found by counting whole replies, or one failure for the whole
run.  The everyday replies (status, error, integer, null, short bulk) are
counted without the parser (`dynomite.wire.replies.simple_replies_end`) and
handed over as one slice of what was read; anything else goes through the
parser.

Counting is cheap: each connection bumps plain integers (requests sent,
replies, error replies, requests failed when it closed), which the pool
(`dynomite.datastore.pool`) sums.  Latency is sampled: every
`SAMPLE_EVERY`-th request of a connection remembers (its sequence number,
the clock); replies match requests in order, so when the reply count
reaches that number the elapsed time goes into the pool's `Histogram`.  At
most one sample waits per connection.

The connection's owner, which reconnects it, is `dynomite.datastore.link`:
it hears ``protocol_connected``, ``protocol_ready`` (after HELLO 3 on a
RESP3 connection) and ``protocol_lost``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Deque, List, Tuple

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from dynomite.runtime import batching
from dynomite.stats import Histogram
from dynomite.wire.replies import ERROR_STARTS, count_errors, is_error, make_reply_parser, simple_replies_end
from dynomite.wire.resp import ProtocolError, encode_command

if TYPE_CHECKING:
    from dynomite.datastore.link import DatastoreLink

UNAVAILABLE = b"-ERR datastore unavailable\r\n"

HELLO_3 = encode_command([b"HELLO", b"3"])

# One request in SAMPLE_EVERY (a power of two) has its latency measured.
SAMPLE_EVERY = 16
_SAMPLE_STEP = ~(SAMPLE_EVERY - 1)  # a request count crossing a multiple of SAMPLE_EVERY

# The longest unfinished run of simple replies kept for the next read;
# anything longer goes to the reply parser, which never copies it again.
_TAIL_MAX = 16 * 1024


def _errors_in(replies: List[bytes]) -> int:
    """How many of ``replies`` are error replies."""
    return sum(1 for raw in replies if is_error(raw))


class _ReadySink:
    """
    Completes the greeting a connection sends before it is used (AUTH, HELLO 3
    or both: `dynomite.datastore.pool.Datastore.greeting`; then the scripts
    it loads: ``Datastore.preload``).
    """

    def __init__(self, protocol: "DatastoreProtocol", command: bytes) -> None:
        self._protocol = protocol
        self._command = command

    def complete(self, raw: bytes) -> None:
        if count_errors(raw):
            self._protocol.log.error(
                "datastore refused {command}: {reply!r}", command=self._command, reply=raw[:200]
            )
            self._protocol.drop()
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
        self._dropped = False
        # plain counters (see the module docstring); the pool sums them
        self.sent = 0
        self.answered = 0
        self.errors = 0
        self.lost = 0
        self._latency: Histogram = link.pool.latency
        self._sample_seq = 0  # sequence number of the sampled request, 0: none
        self._sample_at = 0.0

    def connectionMade(self) -> None:
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            nodelay(True)
        self._link.protocol_connected(self)
        if self._dropped:
            return
        pool = self._link.pool
        greeting = pool.greeting(self._link.resp)
        preload, count = pool.preload
        if greeting is not None or count:
            # name the command, never its arguments (a password)
            first = (greeting or preload).split(b"\r\n", 3)[2].decode("ascii", "replace")
            self.send((greeting or b"") + preload, _ReadySink(self, first), count + (greeting is not None))
        else:
            self.ready()

    def ready(self) -> None:
        # the HELLO 3 handshake is not a request of anyone's: start counting here
        self.sent = self.answered = 0
        self.is_ready = True
        self._link.protocol_ready(self)

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

    def drop(self) -> None:
        """Close at once; waiting requests fail when the loss is reported."""
        if not self._dropped:
            self._dropped = True
            self.is_ready = False
            self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        self.is_ready = False
        self.lost += len(self._sinks)
        self.fail_all(UNAVAILABLE)
        self._link.pool.retire(self)
        self._link.protocol_lost(self)
