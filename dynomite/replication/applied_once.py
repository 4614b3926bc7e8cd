# -*- test-case-name: tests.unit.test_applied_once -*-
"""
Applied once: a write replayed from a hint log after its fate was unknown
is not applied a second time.

An outbox (`dynomite.replication.outbox`) numbers the writes it delivers
to a replica's Redis (this node's own, or a peer's): a run of ``k`` writes
takes the next ``k`` numbers, and the number of its first write travels in
front of it (``FLAG_SEQUENCED``, `dynomite.wire.peer_frames`).  When one of
them times out or its connection is lost, the outbox keeps it, and what
follows, as hints, each with its own number, and replays them later
(``FLAG_REPLAY``), though the replica may have applied it meanwhile (a
frozen Redis, a stalled node).

Here, in front of that Redis, a numbered run is applied together with the
number of its last write, in one transaction, so the two cannot part::

    MULTI
    SELECT <META_DB>
    SET dyno:applied:<source> <number of the last write>
    SELECT 0
    <the writes>
    EXEC

The mark lives in database `META_DB` (Redis has 16 by default), where
SCAN, KEYS, DBSIZE and RANDOMKEY through a node, which use database 0,
never see it: one small key per source node.  A write Redis refuses when
it is queued (an MSET fragment without its value) makes Redis discard the
transaction: it gets its error, as without one, and the run's other writes
are applied in a transaction of their own.  A replayed write is first
compared with its source's mark, and answered ``+OK`` without being
applied when the mark has passed it; a direct write is never a replay and
is applied at once.  The replies of the writes come back as Redis gave
them, cut out of EXEC's reply.
"""

from __future__ import annotations

from typing import Dict

from twisted.logger import Logger

from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_REPLAY, PeerProtocolError, payload_sequence
from dynomite.wire.replies import count_errors, replies_of, split_replies
from dynomite.wire.requests import split_commands
from dynomite.wire.resp import ProtocolError, encode_command

__all__ = ["META_DB", "AppliedOnce", "mark_key"]

#: The Redis database holding the marks (`mark_key`); clients use database 0.
META_DB = 15

_MULTI = encode_command([b"MULTI"])
_SELECT_META = encode_command([b"SELECT", b"%d" % META_DB])
_SELECT_DATA = encode_command([b"SELECT", b"0"])
_EXEC = encode_command([b"EXEC"])
_OK = b"+OK\r\n"
_QUEUED = b"+QUEUED\r\n"


def mark_key(source: str) -> bytes:
    """The key (in `META_DB`) holding the number of the last write applied from ``source``."""
    return b"dyno:applied:" + source.encode("utf-8")


class AppliedOnce:
    """Applies numbered writes to one Redis (``send`` and ``note_errors``: its datastore's) once each."""

    log = Logger()

    def __init__(self, send, note_errors) -> None:
        self._send = send
        self._heads: Dict[str, bytes] = {}
        #: ``note_errors(n)``: the datastore counts the writes Redis refused
        #: inside a transaction as it counts error replies
        self.note_errors = note_errors
        self.applied = 0
        self.skipped = 0
        self.failed = 0

    def send(self, source: str, request: Request, sink) -> None:
        """Apply the numbered ``request`` from ``source`` (a node's name), or skip a replay already applied."""
        try:
            first = payload_sequence(request.payload)
        except PeerProtocolError:
            sink.fail(b"-ERR sequenced write without its sequence number\r\n")
            return
        if request.flags & FLAG_REPLAY:
            check = _SELECT_META + encode_command([b"GET", mark_key(source)]) + _SELECT_DATA
            self._send(Request(check, 2, request.lane, 3, False),
                       _Check(self, source, first, request, sink))
            return
        self.apply(source, first, request, sink)

    def apply(self, source: str, first: int, request: Request, sink) -> None:
        self._transaction(source, first + request.count - 1, request.payload[8:], request,
                          request.count, sink)

    def _transaction(self, source: str, last: int, writes: bytes, request: Request, count: int,
                     sink) -> None:
        head = self._heads.get(source)
        if head is None:
            # MULTI, SELECT, and SET's name and key: the same for every write from source
            key = mark_key(source)
            head = self._heads[source] = b"".join((
                _MULTI, _SELECT_META, b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n" % (len(key), key)))
        number = b"%d" % last
        payload = b"".join((head, b"$%d\r\n%s\r\n" % (len(number), number), _SELECT_DATA, writes, _EXEC))
        self._send(Request(payload, request.resp, request.lane, count + 5, True),
                   _Unwrap(self, source, last, request, count, sink))

    def refused(self, source: str, last: int, request: Request, replies, sink) -> None:
        """
        Redis refused some writes when queued (an MSET fragment with no
        value, say), so it discarded the transaction: those get their error,
        as they would have without a transaction, and the others are
        applied, with the mark, in a transaction of their own.
        """
        count = request.count
        queued = replies[4:4 + count]
        writes = split_commands(request.payload[8:]) if count > 1 else [request.payload[8:]]
        good = [i for i, reply in enumerate(queued) if reply[:1] not in (b"-", b"!")]
        if not good:
            sink.complete(b"".join(queued))
            return
        merge = _Merge(queued, good, sink)
        self._transaction(source, last, b"".join(writes[i] for i in good), request, len(good), merge)

    def checked(self, source: str, first: int, request: Request, sink, raw: bytes) -> None:
        try:
            replies = split_replies(raw)
        except ProtocolError:
            replies = []
        if len(replies) != 3 or replies[1][:1] not in (b"$", b"_"):
            sink.fail(replies[1] if len(replies) == 3 else raw)
            return
        mark = replies[1]
        applied = int(mark[mark.find(b"\r\n") + 2:-2]) if mark[:2] not in (b"$-", b"_\r") else -1
        if applied >= first + request.count - 1:
            self.skipped += request.count
            sink.complete(_OK * request.count)
        elif applied >= first:
            # a run is applied whole or not at all; a hint is one write
            self.failed += 1
            sink.fail(b"-ERR replayed run %d..%d half applied (mark %d)\r\n"
                      % (first, first + request.count - 1, applied))
        else:
            self.apply(source, first, request, sink)


def _head(count: int) -> bytes:
    """How Redis's reply to a transaction of ``count`` writes starts, up to the writes' own replies."""
    head = b"".join((_OK, _QUEUED * (count + 3), b"*%d\r\n" % (count + 3), _OK, _OK, _OK))
    if len(_HEADS) < 4096:
        _HEADS[count] = head
    return head


# count -> `_head(count)`, for the run lengths seen
_HEADS: Dict[int, bytes] = {}


class _Check:
    """The reply to reading a source's mark before a replay."""

    __slots__ = ("_once", "_source", "_first", "_request", "_sink")

    def __init__(self, once: AppliedOnce, source: str, first: int, request: Request, sink) -> None:
        self._once = once
        self._source = source
        self._first = first
        self._request = request
        self._sink = sink

    def complete(self, raw: bytes) -> None:
        self._once.checked(self._source, self._first, self._request, self._sink, raw)

    def fail(self, raw: bytes) -> None:
        self._sink.fail(raw)


class _Unwrap:
    """The writes' own replies, cut out of the transaction's."""

    __slots__ = ("_once", "_source", "_last", "_request", "_count", "_sink")

    def __init__(self, once: AppliedOnce, source: str, last: int, request: Request, count: int,
                 sink) -> None:
        self._once = once
        self._source = source
        self._last = last
        self._request = request
        self._count = count
        self._sink = sink

    def complete(self, raw: bytes) -> None:
        count = self._count
        head = _HEADS.get(count) or _head(count)
        if raw.startswith(head):
            self._once.applied += count
            replies = raw[len(head):]
            errors = count_errors(replies)
            if errors:
                self._once.note_errors(errors)
            self._sink.complete(replies)
            return
        try:
            replies = split_replies(raw)
        except ProtocolError:
            replies = []
        if (len(replies) == count + 5 and replies[1:4] == [_QUEUED] * 3 and count == self._request.count
                and any(r[:1] in (b"-", b"!") for r in replies[4:4 + count])):
            self._once.refused(self._source, self._last, self._request, replies, self._sink)
            return
        self._once.failed += 1
        refused = [r for r in replies[:-1] if r[:1] in (b"-", b"!")]
        reason = refused[0] if refused else (replies[-1] if replies else raw)
        self._once.log.error("a numbered write was refused by Redis: {reason}",
                             reason=reason.strip().decode("utf-8", "replace"))
        self._sink.fail(reason if reason[:1] in (b"-", b"!") else b"-ERR transaction refused\r\n")

    def fail(self, raw: bytes) -> None:
        self._sink.fail(raw)


class _Merge:
    """The replies of a run some of whose writes Redis refused when queued: theirs, and the others'."""

    __slots__ = ("_queued", "_good", "_sink")

    def __init__(self, queued, good, sink) -> None:
        self._queued = queued
        self._good = good
        self._sink = sink

    def complete(self, raw: bytes) -> None:
        applied, wrong = replies_of(raw, len(self._good))
        if wrong is not None:
            self._sink.fail(wrong)
            return
        replies = list(self._queued)
        for i, reply in zip(self._good, applied):
            replies[i] = reply
        self._sink.complete(b"".join(replies))

    def fail(self, raw: bytes) -> None:
        self._sink.fail(raw)
