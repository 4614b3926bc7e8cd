# -*- test-case-name: tests.unit.test_resp -*-
"""
Sans-IO framing of the replies Redis sends: bytes in, whole raw replies out.

Every Redis reply passes through here; the parsers keep to the buffer
discipline of `dynomite.wire.resp` (whole buffers, no rescans, see `_Framer`).

- `ReplyParser` finds where each RESP2/RESP3 reply ends and returns it
  byte-identical, so replies can be relayed and compared without decoding.
- `make_reply_parser` picks the fastest exact reply framer:
  `HiredisReplyParser` on CPython with hiredis, else the pure `ReplyParser`.
- `simple_replies_end` finds where a run of the everyday replies (status,
  error, integer, short or null bulk) ends without a parser: the datastore
  connection hands each run its replies as one slice of what it read.
- `split_replies` and `count_errors` look into replies already joined.
"""

from __future__ import annotations

import platform
from typing import List, Optional, Tuple, Union

try:
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - PyPy or a minimal install
    _hiredis = None

from dynomite.wire.resp import ProtocolError, _Framer, _BULK_OVERHEAD, _strict_int

__all__ = [
    "ReplyParser", "HiredisReplyParser", "make_reply_parser", "simple_replies_end", "split_replies",
    "count_errors", "is_error", "ERROR_STARTS", "elements", "bulk_value",
]

#: How an error reply starts: a simple error ``-`` or a RESP3 blob error ``!``.
ERROR_STARTS = (b"-", b"!")


def is_error(raw: bytes) -> bool:
    """Whether the reply ``raw`` is an error (RESP2 or RESP3): the one test everywhere."""
    return raw[:1] in ERROR_STARTS


# Lengths that turn up all the time, looked up instead of parsed and checked.
_SMALL_LENGTHS = {b"%d" % i: i for i in range(1024)}

# "+OK\r\n" repeated: what a run of SETs gets back, recognised in one comparison.
_OK_RUNS = [b"+OK\r\n" * i for i in range(65)]


class _OkTransactions(dict):
    """
    count -> the reply to a transaction of ``count`` commands (MULTI, then
    ``count - 2`` commands, EXEC) each answered +OK: what a run of SETs
    applied once gets (`dynomite.replication.applied_once`).
    """

    def __missing__(self, count: int) -> bytes:
        n = count - 2
        reply = b"+OK\r\n" + b"+QUEUED\r\n" * n + b"*%d\r\n" % n + b"+OK\r\n" * n
        if len(self) < 4096:
            self[count] = reply
        return reply


_OK_TRANSACTIONS = _OkTransactions()

# Type bytes, as ``buf[pos]`` gives them (an int).
_STATUS, _ERROR, _INTEGER, _NULL = ord("+"), ord("-"), ord(":"), ord("_")
_BULK, _CHUNK = ord("$"), ord(";")      # a bulk string; a chunk of a streamed one ("$?")
_ARRAY, _MAP, _SET, _PUSH, _ATTRIBUTE = ord("*"), ord("%"), ord("~"), ord(">"), ord("|")
_STREAM_END = ord(".")                  # ends a streamed aggregate

_LINE_TYPES = frozenset(b"+-:_,#(")
_SIZED_TYPES = frozenset(b"$!=;*%~>|")
_AGGREGATES = {_ARRAY: 1, _MAP: 2, _SET: 1, _PUSH: 1, _ATTRIBUTE: 2}  # elements per count
_STREAMED = -2                      # a "?" length
_STREAM_AGG, _STREAM_STR = -1, -2   # stack entries for open streamed types


class ReplyParser(_Framer):
    """
    Find where each RESP2/RESP3 reply ends, without decoding it.

    `feed` returns the raw bytes of every complete top-level reply, exactly as
    received, so the proxy can relay them and compare them byte for byte.  A
    push (``>``) is a frame of its own; an attribute (``|``) and the reply it
    annotates form one frame.  Nesting is tracked on an explicit stack of the
    element counts still expected, so depth costs no recursion.  Bytes that
    are not RESP raise `ProtocolError`, then and on every later feed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.error: Optional[ProtocolError] = None
        self._stack: List[int] = []    # elements expected per open aggregate
        self._head: List[bytes] = []   # parsed bytes of the frame in progress
        self._stop_at = -1             # where feed_to_boundary stopped, in the buffer parsed

    def feed(self, data: bytes) -> List[bytes]:
        """Return every reply completed by *data*; raise `ProtocolError` on bytes that are not RESP."""
        if self.error is not None:
            raise self.error
        try:
            buf = self._resume(data)
            return [] if buf is None else self._parse(buf)
        except ProtocolError as e:
            self.error = e
            raise

    @property
    def in_frame(self) -> bool:
        """Whether a reply has begun and not ended."""
        return bool(self._pending or self._stack or self._head)

    def feed_to_boundary(self, data: bytes) -> Tuple[List[bytes], int]:
        """
        Like `feed`, but stop where the reply in progress ends: return it (or
        nothing) and the offset in *data* of the first byte not consumed.
        """
        if self.error is not None:
            raise self.error
        try:
            buf = self._resume(data)
            if buf is None:
                return [], len(data)
            self._stop_at = -1
            out = self._parse(buf, True)
        except ProtocolError as e:
            self.error = e
            raise
        if self._stop_at < 0:
            return out, len(data)
        return out, self._stop_at - (len(buf) - len(data))

    def _parse(self, buf: bytes, stop: bool = False) -> List[bytes]:
        out: List[bytes] = []
        n = len(buf)
        find, small, stack, head = buf.find, _SMALL_LENGTHS, self._stack, self._head
        pos = start = 0
        while pos < n:
            elem, kind = pos, buf[pos]
            # the common replies, shortest path
            if not stack and (kind == _STATUS or kind == _INTEGER or kind == _BULK):
                nl = find(b"\r\n", pos + 1)
                if kind != _BULK and nl > 0:
                    pos = start = nl + 2
                    out.append(buf[elem:pos])
                    if stop:
                        self._stop_at = pos
                        return out
                    continue
                size = small.get(buf[pos + 1:nl]) if nl > 0 else None
                if size is not None and buf.startswith(b"\r\n", nl + 2 + size):
                    pos = start = nl + 4 + size
                    out.append(buf[elem:pos])
                    if stop:
                        self._stop_at = pos
                        return out
                    continue
            elif kind == _BULK and stack and stack[-1] > 1:  # runs of bulks in an aggregate, shortest path
                left = stack[-1]
                while left > 1 and pos < n and buf[pos] == _BULK:
                    nl = find(b"\r\n", pos + 1)
                    size = small.get(buf[pos + 1:nl]) if nl > 0 else None
                    if size is None or not buf.startswith(b"\r\n", nl + 2 + size):
                        break
                    pos = nl + 4 + size
                    left -= 1
                stack[-1] = left
                if pos != elem:
                    continue
            if (kind == _CHUNK) is not (stack[-1] == _STREAM_STR if stack else False):
                raise ProtocolError("streamed string chunks must follow '$?', got %r" % chr(kind))
            if kind in _LINE_TYPES or kind in _SIZED_TYPES:
                nl = find(b"\r\n", pos + 1)
                if nl < 0:
                    self._need, self._term = 0, b"\n"
                    break
                pos = nl + 2
                if kind in _SIZED_TYPES:
                    line = buf[elem + 1:nl]
                    size = small.get(line)
                    if size is None:
                        size = _STREAMED if line == b"?" else _strict_int(line)
                        if size is None or (size < -1 and line != b"?"):
                            raise ProtocolError("invalid length %r" % line)
                    if kind in _AGGREGATES:
                        if size == _STREAMED and kind != _ATTRIBUTE:
                            stack.append(_STREAM_AGG)
                            continue
                        if size > 0 or kind == _ATTRIBUTE:  # an attribute: its pairs, then what it annotates
                            if size < 0:
                                raise ProtocolError("invalid attribute length")
                            stack.append(size * _AGGREGATES[kind] + (kind == _ATTRIBUTE))
                            continue
                    elif size > 0 or (size == 0 and kind != _CHUNK):
                        end = pos + size
                        if end + 2 > n:
                            self._need, self._term = end + 2 - elem, b""
                            break
                        if not buf.startswith(b"\r\n", end):
                            raise ProtocolError("bulk string not terminated by CRLF")
                        pos = end + 2
                        if kind == _CHUNK:  # a chunk of a streamed string
                            continue
                    elif kind == _CHUNK and size == 0:
                        stack.pop()
                    elif kind == _BULK and size == _STREAMED:
                        stack.append(_STREAM_STR)
                        continue
                    elif not (kind == _BULK and size == -1):
                        raise ProtocolError("invalid bulk length")
            elif kind == _STREAM_END and stack and stack[-1] == _STREAM_AGG:
                if n - pos < 3:
                    self._need, self._term = 3, b""
                    break
                if not buf.startswith(b"\r\n", pos + 1):
                    raise ProtocolError("streamed aggregate end not terminated by CRLF")
                stack.pop()
                pos += 3
            else:
                raise ProtocolError("unexpected reply type byte %r" % chr(kind))
            # An element is complete: count it against the aggregates it closes.
            while stack:
                left = stack[-1]
                if left > 1:
                    stack[-1] = left - 1
                    break
                if left < 0:
                    break
                stack.pop()
            else:
                if head:
                    head.append(buf[start:pos])
                    out.append(b"".join(head))
                    head.clear()
                else:
                    out.append(buf[start:pos])
                start = pos
                if stop:
                    self._stop_at = pos
                    return out
        else:
            elem = n
        if elem > start:
            head.append(buf[start:elem])
        if elem < n:
            self._keep(buf, elem)
        return out


class HiredisReplyParser:
    """
    A `ReplyParser` that lets hiredis find where replies end, in C.

    hiredis decodes each reply; its length in bytes follows from the decoded
    value and the type byte found where it starts (Redis encodes replies
    canonically), and each element's type byte and the final CRLF are
    checked.  Replies hiredis decodes into anything else than bytes, ints,
    None and lists of those (errors, RESP3 maps, doubles, ...), and every
    reply cut by the end of a chunk, go to a pure `ReplyParser` from their
    first byte, so frames and errors are identical to the pure parser's.
    """

    def __init__(self) -> None:
        if _hiredis is None:
            raise RuntimeError("hiredis is not installed")
        self._pure = ReplyParser()
        self._reader = _hiredis.Reader()

    @property
    def error(self) -> Optional[ProtocolError]:
        return self._pure.error

    @property
    def in_frame(self) -> bool:
        """Whether a reply has begun and not ended."""
        return self._pure.in_frame

    def feed(self, data: bytes) -> List[bytes]:
        """Return every reply completed by *data*, as `ReplyParser.feed`."""
        pure = self._pure
        pos, n = 0, len(data)
        if pure.in_frame or pure.error is not None:
            out, pos = pure.feed_to_boundary(data)
            if pos >= n:
                return out
        else:
            out = []
        reader = self._reader
        reader.feed(data, pos)
        gets, append, size_of, overhead = reader.gets, out.append, _reply_size, _BULK_OVERHEAD
        try:
            while True:
                reply = gets()
                if reply is False:
                    if pos == n:
                        return out
                    break
                kind = data[pos]
                if kind == _BULK and type(reply) is bytes and len(reply) < 65536:
                    end = pos + len(reply) + overhead[len(reply)]   # the usual replies first
                elif kind == _STATUS and type(reply) is bytes:
                    end = pos + len(reply) + 3
                elif kind == _INTEGER and type(reply) is int:
                    end = pos + len(b"%d" % reply) + 3
                else:
                    end = size_of(reply, data, pos)
                    if end < 0:
                        break
                if data[end - 2:end] != b"\r\n":
                    break
                append(data[pos:end])
                pos = end
        except (_hiredis.HiredisError, TypeError, IndexError):  # TypeError: a map key it cannot hash
            pass
        self._reader = _hiredis.Reader()
        out.extend(pure.feed(data[pos:]))
        return out


def _reply_size(reply, data: bytes, pos: int) -> int:
    """Where the canonical encoding of hiredis's ``reply`` that starts at ``pos`` ends, or -1."""
    kind = data[pos]
    t = type(reply)
    if t is bytes:
        length = len(reply)
        if kind == _BULK:       # $<length>\r\n<bytes>\r\n (hiredis does not check that CRLF)
            end = pos + length + (_BULK_OVERHEAD[length] if length < 65536 else len(b"%d" % length) + 5)
            return end if data[end - 2:end] == b"\r\n" else -1
        if kind == _STATUS:     # +<text>\r\n
            return pos + length + 3
        return -1
    if t is int:
        return pos + len(b"%d" % reply) + 3 if kind == _INTEGER else -1
    if reply is None:
        return pos + 5 if kind == _BULK or kind == _ARRAY else (pos + 3 if kind == _NULL else -1)
    if t is list and kind == _ARRAY:
        pos += 3 + len(b"%d" % len(reply))
        for item in reply:
            pos = _reply_size(item, data, pos)
            if pos < 0:
                return -1
        return pos
    return -1


def simple_replies_end(data: bytes, pos: int, count: int) -> Tuple[int, int]:
    """
    Where the ``count`` replies that start at ``pos`` in ``data`` end, and
    how many of them are errors, when every one is a status, error or
    integer line, a null bulk, a bulk string shorter than 1 KiB, or an
    array of such (a transaction's EXEC; errors inside it are not counted).  The end
    is -1 when one of them is something else (a parser must frame them),
    and -2 when ``data`` ends before they do with nothing else seen (wait
    for more).  What it accepts is framed as `ReplyParser` frames it (the
    same line ends, the same bulk terminators), so the two can take turns
    at any reply boundary.
    """
    oks = _OK_RUNS[64]
    while count >= 64 and data.startswith(oks, pos):
        pos += len(oks)
        count -= 64
    if count < 65 and data.startswith(_OK_RUNS[count], pos):
        return pos + 5 * count, 0
    if count > 2 and data[pos:pos + 10] == b"+OK\r\n+QUEU":
        execed = _OK_TRANSACTIONS[count]
        if data.startswith(execed, pos):
            return pos + len(execed), 0
    find, small = data.find, _SMALL_LENGTHS
    errors = 0
    inner = 0   # of the lines still to take, how many are inside arrays
    while count:
        nl = find(b"\r\n", pos + 1)
        if nl < 0:
            return -2, 0
        kind = data[pos]
        top = not inner
        if not top:
            inner -= 1
        if kind == _ARRAY:
            # an array of such lines (a transaction's EXEC): its elements follow
            length = small.get(data[pos + 1:nl])
            if length is None:
                if data[pos + 1:nl] != b"-1":
                    return -1, 0
                length = 0
            pos = nl + 2
            inner += length
            count += length - 1
            continue
        if kind == _BULK:
            size = small.get(data[pos + 1:nl])
            if size is not None:
                end = nl + 4 + size
                if not data.startswith(b"\r\n", end - 2):
                    return (-2 if end > len(data) else -1), 0
                pos = end
            elif nl == pos + 3 and data[pos + 1:nl] == b"-1":
                pos = nl + 2
            else:
                return -1, 0
        elif kind == _STATUS or kind == _INTEGER:
            pos = nl + 2
        elif kind == _ERROR:
            pos = nl + 2
            errors += top
        else:
            return -1, 0
        count -= 1
    return pos, errors


def make_reply_parser() -> Union[ReplyParser, HiredisReplyParser]:
    """The fastest exact reply framer here: hiredis-backed on CPython when it imports, else pure."""
    if _hiredis is not None and platform.python_implementation() == "CPython":
        return HiredisReplyParser()
    return ReplyParser()


def split_replies(raw: bytes) -> List[bytes]:
    """The replies joined in *raw*, each as its own bytes; `ProtocolError` if *raw* is not whole replies."""
    parser = ReplyParser()
    replies = parser.feed(raw)
    if parser.in_frame:
        raise ProtocolError("a reply is cut short")
    return replies


_OK_REPLY = b"+OK\r\n"


def replies_of(raw: bytes, count: int) -> Tuple[List[bytes], Optional[bytes]]:
    """
    The ``count`` replies joined in ``raw``, each as its own bytes, and None;
    or, when ``raw`` is not exactly ``count`` whole replies, ``[]`` and the
    error that says so.  A run of +OK (SET's answer) is not parsed.
    """
    if count == 1:
        return [raw], None
    if raw == _OK_REPLY * count:
        return [_OK_REPLY] * count, None
    try:
        replies = split_replies(raw)
    except ProtocolError:
        replies = []
    if len(replies) != count:
        return [], b"-ERR replica answered %d replies to %d requests\r\n" % (len(replies), count)
    return replies, None


def count_errors(raw: bytes) -> int:
    """How many of the replies joined in *raw* are errors (`is_error`; cheap when none is)."""
    if (b"-" not in raw or raw[:1] != b"-" and b"\r\n-" not in raw) and (  # one memchr first
            b"!" not in raw or raw[:1] != b"!" and b"\r\n!" not in raw):
        return 0
    return sum(1 for r in split_replies(raw) if r[:1] in ERROR_STARTS)


def elements(raw: bytes) -> List[bytes]:
    """The raw elements of an array/set/push/map reply (empty for nil or non-aggregates)."""
    end = raw.find(b"\r\n")
    if raw[:1] not in (b"*", b"~", b">", b"%") or end < 0:
        return []
    count = int(raw[1:end])
    if count <= 0:
        return []
    return ReplyParser().feed(raw[end + 2:])


def bulk_value(raw: bytes) -> bytes:
    """The payload of a bulk string reply (``$3\\r\\nabc\\r\\n`` -> ``abc``)."""
    start = raw.find(b"\r\n") + 2
    return raw[start:-2]
