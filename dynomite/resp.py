"""
Sans-IO RESP framing and encoding: bytes in, frames out; no transport, no clock.

Every client request and every Redis reply passes through here, so the
parsers work on whole buffers with ``bytes.find``, ``int`` and slicing, never
byte by byte, and never rescan: an unfinished frame records how many bytes it
still needs (or which terminator it waits for), arriving chunks are kept in a
list, and they are joined once, when the frame can complete.

- `RequestParser` accepts what redis-server 7.0 accepts from a client
  (multibulk and inline requests, Redis's limits and error reasons) and hands
  back each request as its list of arguments.  Deliberate differences: a
  multibulk count above 1024*1024 is refused (Redis 7.0 allows up to
  INT_MAX); an inline line longer than 64 KiB is refused even when its
  newline arrived in the same read; a NUL byte before a line's end is an
  ordinary byte (an inline line's arguments end at it, as sdssplitargs does),
  where Redis 7.0 stops looking for the line end there and stalls.
- `ReplyParser` finds where each RESP2/RESP3 reply ends and returns it
  byte-identical, so replies can be relayed and compared without decoding.
- The encoders build replies for the RESP version a client negotiated.
- `make_request_parser` picks the fastest exact request parser:
  `HiredisRequestParser` on CPython with hiredis (hiredis parses canonical
  multibulk requests in C and everything else goes to the pure parser at the
  byte where it starts, so results and errors are identical), else the pure
  `RequestParser` (always under PyPy, whose JIT serves it well).
"""

from __future__ import annotations

import platform
import re
from typing import List, Optional, Sequence, Tuple, Union

try:
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - PyPy or a minimal install
    _hiredis = None

__all__ = [
    "ProtocolError", "RequestParser", "HiredisRequestParser", "ReplyParser", "make_request_parser",
    "HiredisReplyParser", "make_reply_parser",
    "split_replies", "split_commands", "count_errors",
    "split_inline", "encode_command", "simple", "error", "integer", "bulk", "null", "null_array",
    "array", "map_", "set_", "double", "boolean", "verbatim", "OK", "PONG",
]

_INLINE_MAX = 64 * 1024          # PROTO_INLINE_MAX_SIZE
_MBULK_MAX = 1024 * 1024         # largest multibulk count accepted
_BULK_MAX = 512 * 1024 * 1024    # proto-max-bulk-len default
_LLONG = 1 << 63

# Headers that turn up all the time, looked up instead of parsed and checked.
_SMALL = {b"%d" % i: i for i in range(1024)}
_COUNTS = {b"*%d" % i: i for i in range(1, 1024)}
_HEADS = {b"$%d" % i: i for i in range(1024)}
# Bytes a canonical "$<len>\r\n<data>\r\n" adds to its data, for lengths < 64 KiB.
_OVERHEAD = bytes(len(b"%d" % i) + 5 for i in range(1 << 16))
# Maps the types hiredis preallocates to "*", digits to "0" and CR to "r", to spot big counts.
_AGG_DIGITS = bytes(42 if c in b"*~>|" else 48 if c in b"0123456789" else 114 if c == 13 else 32
                    for c in range(256))


class ProtocolError(Exception):
    """
    Bytes that are not valid RESP.

    ``str(exc)`` is the reason, e.g. ``"invalid bulk length"``; the server
    replies ``b"-ERR Protocol error: " + reason`` and closes that one
    connection.
    """


def _strict_int(line: bytes) -> Optional[int]:
    """Parse *line* exactly as Redis's string2ll does (no sign but '-', no leading zero), or None."""
    digits = line[1:] if line[:1] == b"-" else line
    if not digits.isdigit() or len(line) > 20 or (digits[0] == 48 and len(line) > 1):
        return None
    value = int(line)
    return value if -_LLONG <= value < _LLONG else None


_BLANKS = re.compile(rb"[ \t\n\v\f\r]*")
_TOKEN = re.compile(rb"""([^ \t\n\r"']*)(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\'|\\(?!'))*)')?""", re.S)
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}
_SPACE = frozenset(b" \t\n\v\f\r")


def _unescape(match: "re.Match[bytes]") -> bytes:
    code = match.group(1)
    return bytes((int(code[1:], 16),)) if len(code) == 3 else _ESCAPES.get(code, code)


def split_inline(line: bytes) -> Optional[List[bytes]]:
    """
    Split an inline request line into arguments like Redis's sdssplitargs.

    Whitespace separates arguments; "double quotes" understand \\n \\r \\t \\b
    \\a \\xHH and a backslash before any other character; 'single quotes'
    understand only \\'.  A closing quote must be followed by whitespace or the
    end.  The line ends at a NUL byte, as in C.  Returns None for unbalanced
    quotes.
    """
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    if b'"' not in line and b"'" not in line and b"\v" not in line and b"\f" not in line:
        return line.split()
    args = []
    pos, end = 0, len(line)
    while True:
        pos = _BLANKS.match(line, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            return args
        match = _TOKEN.match(line, pos)
        assert match is not None
        plain, dquoted, squoted = match.groups()
        pos = match.end()
        if dquoted is None and squoted is None:
            if pos < end and line[pos] in b"\"'":  # a quote that never closes
                return None
            args.append(plain)
        elif pos < end and line[pos] not in _SPACE:
            return None
        elif dquoted is not None:
            args.append(plain + _ESCAPE.sub(_unescape, dquoted))
        else:
            args.append(plain + squoted.replace(b"\\'", b"'"))


class _Framer:
    """The unparsed tail of a stream, kept as a list of chunks until the frame in progress can complete."""

    def __init__(self) -> None:
        self._pending: List[bytes] = []
        self._pending_len = 0
        self._need = 0        # parse again once this many bytes are pending...
        self._term = b""      # ...or once a chunk brings this terminator,
        self._limit = -1      # and fail if more than this many are pending without it
        self._reason = ""

    def _resume(self, data: bytes) -> Optional[bytes]:
        """The pending bytes and *data*, joined, or None while the frame still cannot complete."""
        pending = self._pending
        if not pending:
            return data
        pending.append(data)
        self._pending_len += len(data)
        if self._pending_len < self._need:
            return None
        if self._term and self._term not in data:
            if self._pending_len > self._limit >= 0:
                raise ProtocolError(self._reason)
            return None
        buf = b"".join(pending)
        self._pending, self._pending_len = [], 0
        return buf

    def _keep(self, buf: bytes, pos: int) -> None:
        self._pending, self._pending_len = [buf[pos:]], len(buf) - pos


class RequestParser(_Framer):
    """
    Frame the requests a Redis client sends, as redis-server does.

    `feed` returns every request completed so far, each as its list of
    arguments.  A bad frame sets `error` (a `ProtocolError` carrying Redis's
    reason); requests completed before it are still returned, and the parser
    returns nothing afterwards.  A request whose declared size (the sum of
    its bulk lengths, or its inline line) exceeds *max_request_bytes* is
    refused from its length headers, before its body is buffered.
    """

    def __init__(self, max_request_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__()
        self.max_request_bytes = max_request_bytes
        self.error: Optional[ProtocolError] = None
        self._too_big = "request exceeds max_request_bytes (%d)" % max_request_bytes
        # An inline line is refused by the lower limit: the cap on its length
        # without the line ending, or Redis's 64 KiB without a newline.
        self._inline_cap = max_request_bytes < _INLINE_MAX
        self._inline_limit = max_request_bytes if self._inline_cap else _INLINE_MAX
        self._inline_reason = self._too_big if self._inline_cap else "too big inline request"
        self._args: List[bytes] = []  # the multibulk request in progress,
        self._left = 0                # its bulks still to read,
        self._bulk = -1               # the length of the bulk whose header is read,
        self._size = 0                # and the sum of its declared lengths
        #: After `feed`: two offsets per request returned, where its bytes start
        #: and end in the data fed, or -1, -1 when they cannot be forwarded as
        #: they are (an inline request, or one that began in an earlier chunk).
        self.bounds: List[int] = []

    def feed(self, data: bytes) -> List[List[bytes]]:
        """Return every request completed by *data*, in order (see the class)."""
        out: List[List[bytes]] = []
        self.bounds = []
        self._run(data, out, False)
        return out

    def _run(self, data: bytes, out: List[List[bytes]], stop: bool) -> int:
        """
        Parse *data* after the pending bytes.  With *stop*, return at the next
        request boundary, giving its offset in *data*.
        """
        if self.error is not None:
            return len(data)
        try:
            buf = self._resume(data)
        except ProtocolError as e:
            return self._fail(str(e))
        if buf is None:
            return len(data)
        shift = len(buf) - len(data)
        return self._parse(buf, 0, out, stop, shift) - shift

    def _fast(self, buf: bytes, pos: int, out: List[List[bytes]], shift: int) -> int:
        """Take the complete canonical multibulk requests from *pos*; return where another starts."""
        find, cap, heads, counts = buf.find, self.max_request_bytes, _HEADS, _COUNTS
        append, bounds = out.append, self.bounds
        last = len(buf) - 2
        while True:
            start = pos
            nl = find(b"\r", pos, pos + 8)  # bounded: inline lines need not have a CR
            if nl < 0:
                return start
            count = counts.get(buf[pos:nl])
            if count is None:
                return start
            pos = nl + 2
            args = []
            while count:
                nl = find(b"\r", pos, pos + 12)
                if nl < 0:
                    return start
                length = heads.get(buf[pos:nl])
                if length is None:
                    line = buf[pos + 1:nl]
                    if buf[pos] != 36 or not line.isdigit() or line[0] == 48 or int(line) > _BULK_MAX:
                        return start
                    length = int(line)
                pos = nl + 2 + length
                if pos > last:
                    return start
                args.append(buf[nl + 2:pos])
                pos += 2
                count -= 1
            if pos - start > cap:
                return start
            append(args)
            if start >= shift:
                bounds += (start - shift, pos - shift)
            else:
                bounds += (-1, -1)

    def _fail(self, reason: str) -> int:
        self.error = ProtocolError(reason)
        self._pending, self._pending_len, self._args, self._left = [], 0, [], 0
        return -1

    def _line_end(self, buf: bytes, pos: int, what: str) -> int:
        """The CR ending the header at *pos* (Redis skips the byte after it), or -1 to wait or fail."""
        nl = buf.find(b"\r", pos)
        if 0 <= nl - pos <= _INLINE_MAX:
            if nl + 1 < len(buf):
                return nl
            self._need, self._term = nl + 2 - pos, b""
        elif nl < 0 and len(buf) - pos <= _INLINE_MAX:
            self._need, self._term, self._limit = 0, b"\r", _INLINE_MAX
            self._reason = "too big %s count string" % what
        else:
            self._fail("too big %s count string" % what)
        return -1

    def _parse(self, buf: bytes, pos: int, out: List[List[bytes]], stop: bool, shift: int = 0) -> int:
        """
        Handle every request form, partial frame, limit and error as Redis
        does; *buf* holds *shift* bytes of earlier chunks before the data fed.
        """
        n = len(buf)
        args, left, blen, size = self._args, self._left, self._bulk, self._size
        started = -1  # where the request in progress began in buf (-1: in an earlier chunk)
        bounds = self.bounds
        stopped = False
        while True:
            if not left and not stop and pos < n:
                pos = self._fast(buf, pos, out, shift)
            if left:
                if blen < 0:
                    if pos >= n:
                        break
                    nl = self._line_end(buf, pos, "bulk")
                    if nl < 0:
                        break
                    if buf[pos] != 36:  # '$'; Redis turns CR and LF in errors into spaces
                        got = " " if buf[pos] in b"\r\n" else chr(buf[pos])
                        return self._fail("expected '$', got '%s'" % got)
                    blen = _strict_int(buf[pos + 1:nl])  # type: ignore[assignment]
                    if blen is None or blen < 0 or blen > _BULK_MAX:
                        return self._fail("invalid bulk length")
                    size += blen
                    if size > self.max_request_bytes:
                        return self._fail(self._too_big)
                    pos = nl + 2
                if pos + blen + 2 > n:
                    self._need, self._term = blen + 2, b""
                    break
                args.append(buf[pos:pos + blen])
                pos += blen + 2
                blen = -1
                left -= 1
                if left:
                    continue
                out.append(args)
                if started >= shift:
                    bounds += (started - shift, pos - shift)
                else:
                    bounds += (-1, -1)
                args, size = [], 0
            elif pos >= n:
                break
            elif buf[pos] == 42:  # '*'
                started = pos
                nl = self._line_end(buf, pos, "mbulk")
                if nl < 0:
                    break
                count = _strict_int(buf[pos + 1:nl])
                if count is None or count > _MBULK_MAX:
                    return self._fail("invalid multibulk length")
                pos = nl + 2
                if count > 0:
                    left = count
                    continue
            else:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    wait = self._inline_limit + self._inline_cap  # a CR may end the unfinished line
                    if n - pos > wait:
                        return self._fail(self._inline_reason)
                    self._need, self._term, self._limit, self._reason = 0, b"\n", wait, self._inline_reason
                    break
                end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
                if (end if self._inline_cap else nl) - pos > self._inline_limit:
                    return self._fail(self._inline_reason)
                argv = split_inline(buf[pos:end])
                if argv is None:
                    return self._fail("unbalanced quotes in request")
                pos = nl + 1
                if argv:
                    out.append(argv)
                    bounds += (-1, -1)
            if stop:
                stopped = True
                break
        if self.error is not None:
            return -1
        self._args, self._left, self._bulk, self._size = args, left, blen, size
        if stopped:
            return pos
        if pos < n:
            self._keep(buf, pos)
        return n


class HiredisRequestParser:
    """
    A `RequestParser` that lets hiredis parse multibulk requests in C.

    A request from hiredis is taken only if it is a list of bulk strings laid
    out canonically (a '$' at each offset its lengths imply) and within the
    limits.  Anything else, every partial request at the end of a chunk, and
    any chunk with an array, set, push or attribute count of 1000 or more
    (hiredis would allocate it before we could refuse it) go to a pure
    `RequestParser` from their first byte, so requests, errors and when an
    error is set are identical.
    """

    def __init__(self, max_request_bytes: int = 64 * 1024 * 1024) -> None:
        if _hiredis is None:
            raise RuntimeError("hiredis is not installed")
        self._pure = RequestParser(max_request_bytes)
        self._reader = _hiredis.Reader()
        self._cap = max_request_bytes
        self._check = min(max_request_bytes, _MBULK_MAX)  # longer requests get the exact checks

    @property
    def error(self) -> Optional[ProtocolError]:
        """The `ProtocolError` that ended this stream, or None."""
        return self._pure.error

    @property
    def bounds(self) -> List[int]:
        """As `RequestParser.bounds`."""
        return self._pure.bounds

    def feed(self, data: bytes) -> List[List[bytes]]:
        """Return every request completed by *data*, in order, as `RequestParser.feed`."""
        pure = self._pure
        out: List[List[bytes]] = []
        pure.bounds = bounds = []
        if pure.error is not None:
            return out
        pos, n = 0, len(data)
        if pure._pending or pure._left:
            pos = pure._run(data, out, True)
            if pos >= n or pure.error is not None:
                return out
        if not _big_count(data, pos):
            reader = self._reader
            reader.feed(data, pos)
            gets, check, overhead, append = reader.gets, self._check, _OVERHEAD, out.append
            try:
                while True:
                    req = gets()
                    if req is False:
                        if pos == n:
                            return out
                        break
                    if type(req) is not list or data[pos] != 42:
                        break
                    off = pos + overhead[len(req)] - 2
                    for arg in req:
                        if data[off] != 36:
                            break
                        length = len(arg)
                        off += length + overhead[length]
                    else:
                        if off - pos > check and not self._within_limits(req):
                            break
                        if req:
                            append(req)
                            bounds += (pos, off)
                        pos = off
                        continue
                    break
            except (_hiredis.HiredisError, TypeError, IndexError):
                pass
            self._reader = _hiredis.Reader()
        pure._parse(data, pos, out, False)
        return out

    def _within_limits(self, req: List[bytes]) -> bool:
        lengths = list(map(len, req))
        return len(req) <= _MBULK_MAX and sum(lengths) <= self._cap and max(lengths, default=0) <= _BULK_MAX


def _big_count(data: bytes, pos: int) -> bool:
    """Whether data[pos:] holds an aggregate header with a count of 1000 or more."""
    mapped = data.translate(_AGG_DIGITS)
    hit = mapped.find(b"*0000", pos)
    while hit >= 0:
        digits = mapped[hit + 1:hit + 21]
        if digits.lstrip(b"0")[:1] == b"r":  # hiredis parses a count only once its CR is there
            return True
        hit = mapped.find(b"*0000", hit + 5)
    return False


def make_request_parser(
        max_request_bytes: int = 64 * 1024 * 1024) -> Union[RequestParser, HiredisRequestParser]:
    """The fastest exact request parser here: hiredis-backed on CPython when it imports, else pure."""
    if _hiredis is not None and platform.python_implementation() == "CPython":
        return HiredisRequestParser(max_request_bytes)
    return RequestParser(max_request_bytes)


_LINE_TYPES = frozenset(b"+-:_,#(")
_SIZED_TYPES = frozenset(b"$!=;*%~>|")
_AGGREGATES = {42: 1, 37: 2, 126: 1, 62: 1, 124: 2}  # * % ~ > | -> elements per count
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
        find, small, stack, head = buf.find, _SMALL, self._stack, self._head
        pos = start = 0
        while pos < n:
            elem, kind = pos, buf[pos]
            if not stack and (kind == 43 or kind == 58 or kind == 36):  # the common replies, shortest path
                nl = find(b"\r\n", pos + 1)
                if kind != 36 and nl > 0:
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
            elif kind == 36 and stack and stack[-1] > 1:  # runs of bulks in an aggregate, shortest path
                left = stack[-1]
                while left > 1 and pos < n and buf[pos] == 36:
                    nl = find(b"\r\n", pos + 1)
                    size = small.get(buf[pos + 1:nl]) if nl > 0 else None
                    if size is None or not buf.startswith(b"\r\n", nl + 2 + size):
                        break
                    pos = nl + 4 + size
                    left -= 1
                stack[-1] = left
                if pos != elem:
                    continue
            if (kind == 59) is not (stack[-1] == _STREAM_STR if stack else False):
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
                        if size == _STREAMED and kind != 124:
                            stack.append(_STREAM_AGG)
                            continue
                        if size > 0 or kind == 124:  # an attribute: its pairs, then what it annotates
                            if size < 0:
                                raise ProtocolError("invalid attribute length")
                            stack.append(size * _AGGREGATES[kind] + (kind == 124))
                            continue
                    elif size > 0 or (size == 0 and kind != 59):
                        end = pos + size
                        if end + 2 > n:
                            self._need, self._term = end + 2 - elem, b""
                            break
                        if not buf.startswith(b"\r\n", end):
                            raise ProtocolError("bulk string not terminated by CRLF")
                        pos = end + 2
                        if kind == 59:  # a chunk of a streamed string
                            continue
                    elif kind == 59 and size == 0:
                        stack.pop()
                    elif kind == 36 and size == _STREAMED:
                        stack.append(_STREAM_STR)
                        continue
                    elif not (kind == 36 and size == -1):
                        raise ProtocolError("invalid bulk length")
            elif kind == 46 and stack and stack[-1] == _STREAM_AGG:  # '.' ends a streamed aggregate
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
        gets, append, size_of, overhead = reader.gets, out.append, _reply_size, _OVERHEAD
        try:
            while True:
                reply = gets()
                if reply is False:
                    if pos == n:
                        return out
                    break
                kind = data[pos]
                if kind == 36 and type(reply) is bytes and len(reply) < 65536:
                    end = pos + len(reply) + overhead[len(reply)]   # the usual replies first
                elif kind == 43 and type(reply) is bytes:
                    end = pos + len(reply) + 3
                elif kind == 58 and type(reply) is int:
                    end = pos + len(b"%d" % reply) + 3
                else:
                    end = size_of(reply, data, pos)
                    if end < 0:
                        break
                if data[end - 2:end] != b"\r\n":
                    break
                append(data[pos:end])
                pos = end
        except (_hiredis.HiredisError, IndexError):
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
        if kind == 36:      # $<length>\r\n<bytes>\r\n (hiredis does not check that CRLF)
            end = pos + length + (_OVERHEAD[length] if length < 65536 else len(b"%d" % length) + 5)
            return end if data[end - 2:end] == b"\r\n" else -1
        if kind == 43:      # +<text>\r\n
            return pos + length + 3
        return -1
    if t is int:
        return pos + len(b"%d" % reply) + 3 if kind == 58 else -1
    if reply is None:
        return pos + 5 if kind == 36 or kind == 42 else (pos + 3 if kind == 95 else -1)
    if t is list and kind == 42:
        pos += 3 + len(b"%d" % len(reply))
        for item in reply:
            pos = _reply_size(item, data, pos)
            if pos < 0:
                return -1
        return pos
    return -1


def make_reply_parser() -> Union[ReplyParser, HiredisReplyParser]:
    """The fastest exact reply framer here: hiredis-backed on CPython when it imports, else pure."""
    if _hiredis is not None and platform.python_implementation() == "CPython":
        return HiredisReplyParser()
    return ReplyParser()


def split_replies(raw: bytes) -> List[bytes]:
    """The replies joined in *raw*, each as its own bytes; `ProtocolError` if *raw* is not whole replies."""
    parser = ReplyParser()
    replies = parser.feed(raw)
    if parser._pending:
        raise ProtocolError("a reply is cut short")
    return replies


def split_commands(payload: bytes) -> List[bytes]:
    """
    The requests joined in *payload* (canonical multibulk, as nodes send
    them to each other), each as its own bytes; `ProtocolError` otherwise.
    """
    parser = RequestParser(len(payload) + 1)
    parser.feed(payload)
    bounds = parser.bounds
    if parser.error is not None or parser._pending or parser._left or -1 in bounds:
        raise ProtocolError("not whole multibulk requests")
    return [payload[bounds[i]:bounds[i + 1]] for i in range(0, len(bounds), 2)]


def count_errors(raw: bytes) -> int:
    """How many of the replies joined in *raw* are simple errors (cheap when none is)."""
    if raw[:1] != b"-" and b"\r\n-" not in raw:
        return 0
    return sum(1 for r in split_replies(raw) if r[:1] == b"-")


def encode_command(args: Sequence[bytes]) -> bytes:
    """Encode a request as a RESP multibulk (what Redis is sent)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        append(b"$%d\r\n" % len(arg))
        append(arg)
        append(b"\r\n")
    return b"".join(parts)


def _text(s: Union[bytes, str]) -> bytes:
    return s.encode("utf-8") if isinstance(s, str) else s


def _one_line(s: Union[bytes, str]) -> bytes:
    s = _text(s)
    return s.replace(b"\r", b" ").replace(b"\n", b" ") if b"\r" in s or b"\n" in s else s


def simple(s: Union[bytes, str]) -> bytes:
    """A status reply, ``+s``; CR and LF (which would break the frame) become spaces."""
    return b"+%b\r\n" % _one_line(s)


def error(msg: Union[bytes, str]) -> bytes:
    """An error reply, ``-msg`` (msg starts with its code, e.g. "ERR"); CR and LF become spaces, like Redis."""
    return b"-%b\r\n" % _one_line(msg)


def integer(n: int) -> bytes:
    """An integer reply."""
    return b":%d\r\n" % n


def bulk(b: Union[bytes, str]) -> bytes:
    """A bulk string reply; str is encoded as UTF-8."""
    b = _text(b)
    return b"$%d\r\n%b\r\n" % (len(b), b)


def null(resp: int) -> bytes:
    """The nil reply: a nil bulk in RESP2, ``_`` in RESP3."""
    return b"$-1\r\n" if resp < 3 else b"_\r\n"


def null_array(resp: int) -> bytes:
    """The nil multibulk reply (e.g. BLPOP timing out): ``*-1`` in RESP2, ``_`` in RESP3."""
    return b"*-1\r\n" if resp < 3 else b"_\r\n"


def array(items: Sequence[bytes]) -> bytes:
    """An array of already encoded replies."""
    return b"*%d\r\n%b" % (len(items), b"".join(items))


def map_(pairs: Sequence[Tuple[bytes, bytes]], resp: int) -> bytes:
    """A map of encoded (key, value) replies: a flat array of 2n in RESP2, ``%n`` in RESP3."""
    body = b"".join([k + v for k, v in pairs])
    return b"*%d\r\n%b" % (2 * len(pairs), body) if resp < 3 else b"%%%d\r\n%b" % (len(pairs), body)


def set_(items: Sequence[bytes], resp: int) -> bytes:
    """A set of encoded replies: an array in RESP2, ``~n`` in RESP3."""
    return b"%b%d\r\n%b" % (b"*" if resp < 3 else b"~", len(items), b"".join(items))


def double(x: float, resp: int) -> bytes:
    """A double as Redis 7.0 writes it (%.17g; inf, -inf, nan): a bulk string in RESP2, ``,x`` in RESP3."""
    text = b"%.17g" % x
    return b"$%d\r\n%b\r\n" % (len(text), text) if resp < 3 else b",%b\r\n" % text


def boolean(b: bool, resp: int) -> bytes:
    """A boolean: ``:1``/``:0`` in RESP2, ``#t``/``#f`` in RESP3."""
    return (b":1\r\n" if b else b":0\r\n") if resp < 3 else (b"#t\r\n" if b else b"#f\r\n")


def verbatim(text: bytes, resp: int, fmt: bytes = b"txt") -> bytes:
    """Text such as INFO output: a bulk string in RESP2, ``=len\\r\\nfmt:text`` in RESP3 (fmt is 3 bytes)."""
    if resp < 3:
        return bulk(text)
    return b"=%d\r\n%b:%b\r\n" % (len(text) + 4, fmt, text)


OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
