# -*- test-case-name: tests.unit.test_resp -*-
"""
Sans-IO framing of the requests Redis clients send: bytes in, argument lists out.

Every client request passes through here; the parsers keep to the buffer
discipline of `dynomite.wire.resp` (whole buffers, no rescans, see `_Framer`).

- `RequestParser` accepts what redis-server 7.0 accepts from a client
  (multibulk and inline requests, Redis's limits and error reasons) and hands
  back each request as its list of arguments.  Deliberate differences: a
  multibulk count above 1024*1024 is refused (Redis 7.0 allows up to
  INT_MAX); an inline line longer than 64 KiB is refused even when its
  newline arrived in the same read; a NUL byte before a line's end is an
  ordinary byte (an inline line's arguments end at it, as sdssplitargs does),
  where Redis 7.0 stops looking for the line end there and stalls.
- `make_request_parser` picks the fastest exact request parser:
  `HiredisRequestParser` on CPython with hiredis (hiredis parses canonical
  multibulk requests in C and everything else goes to the pure parser at the
  byte where it starts, so results and errors are identical), else the pure
  `RequestParser` (always under PyPy, whose JIT serves it well).
- `split_commands` cuts apart the canonical multibulk requests nodes send
  each other.
"""

from __future__ import annotations

import platform
import re
from typing import List, Optional, Tuple, Union

try:
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - PyPy or a minimal install
    _hiredis = None

from dynomite.wire.resp import ProtocolError, _Framer, _BULK_OVERHEAD, _strict_int

__all__ = [
    "RequestParser", "HiredisRequestParser", "make_request_parser", "parse_whole", "split_commands",
    "split_inline",
]

_INLINE_MAX = 64 * 1024          # PROTO_INLINE_MAX_SIZE
_MBULK_MAX = 1024 * 1024         # largest multibulk count accepted
_BULK_MAX = 512 * 1024 * 1024    # proto-max-bulk-len default

# Bytes the parsers test, as ``buf[pos]`` gives them (an int).
_ARRAY, _BULK, _CR, _ZERO = ord("*"), ord("$"), ord("\r"), ord("0")
# What an inline request (or the blank line between requests) may start
# with: any byte but a control character, or the whitespace Redis splits
# inline requests on (tab, CR, LF, VT, FF).  A NUL or another control byte
# starts no command (Redis would wait for a newline), so it is refused at
# once; a non-ASCII byte may start a command name Redis answers as unknown.
_INLINE_STARTS = frozenset(range(0x20, 0x7F)) | frozenset(range(0x80, 0x100)) | frozenset(b"\t\r\n\x0b\x0c")

# Headers that turn up all the time, looked up instead of parsed and checked.
_ARRAY_HEADERS = {b"*%d" % i: i for i in range(1, 1024)}
_BULK_HEADERS = {b"$%d" % i: i for i in range(1024)}
# Maps the types hiredis preallocates to "*", digits to "0" and CR to "r", to spot big counts.
_COUNT_SHAPES = bytes(42 if c in b"*~>|" else 48 if c in b"0123456789" else 114 if c == 13 else 32
                      for c in range(256))


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


class RequestParser(_Framer):
    """
    Frame the requests a Redis client sends, as redis-server does.

    `feed` returns every request completed so far, each as its list of
    arguments.  A bad frame sets `error` (a `ProtocolError` carrying Redis's
    reason); requests completed before it are still returned, and the parser
    returns nothing afterwards.  A request whose declared size (the sum of
    its bulk lengths, or its inline line) exceeds *max_request_bytes* is
    refused from its length headers, before its body is buffered.
    `HiredisRequestParser` uses its private members; their contract is in
    that class's docstring.
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

    @property
    def in_request(self) -> bool:
        """Whether a request has begun and is not complete yet."""
        return bool(self._pending) or self._left > 0

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

    def _take_canonical(self, buf: bytes, pos: int, out: List[List[bytes]], shift: int) -> int:
        """Take the complete canonical multibulk requests from *pos*; return where another starts."""
        find, cap, heads, counts = buf.find, self.max_request_bytes, _BULK_HEADERS, _ARRAY_HEADERS
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
                    if buf[pos] != _BULK or not line.isdigit() or line[0] == _ZERO or int(line) > _BULK_MAX:
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
                pos = self._take_canonical(buf, pos, out, shift)
            if left:
                if blen < 0:
                    if pos >= n:
                        break
                    nl = self._line_end(buf, pos, "bulk")
                    if nl < 0:
                        break
                    if buf[pos] != _BULK:  # Redis turns CR and LF in errors into spaces
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
            elif buf[pos] == _ARRAY:
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
            elif buf[pos] not in _INLINE_STARTS:
                # Redis would wait for a newline; no command starts like this
                return self._fail("unexpected byte 0x%02x at the start of a request" % buf[pos])
            else:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    wait = self._inline_limit + self._inline_cap  # a CR may end the unfinished line
                    if n - pos > wait:
                        return self._fail(self._inline_reason)
                    self._need, self._term, self._limit, self._reason = 0, b"\n", wait, self._inline_reason
                    break
                end = nl - 1 if nl > pos and buf[nl - 1] == _CR else nl
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
    error is set are identical.  hiredis only ever sees bytes that start
    like a canonical request (``*N`` then ``$``), and its reader is built
    when it first does: a connection that sends inline requests, nesting or
    random bytes costs no reader and no copy into one (the pure parser
    refuses a bad first byte at once).

    The two are a deliberate pair: this class drives its `RequestParser`
    (``_pure``) through private members, and this is their whole contract.

    - All state that outlives a chunk is the pure parser's: its `_Framer`
      bytes (``_pending``) and the multibulk in progress (``_left`` bulks
      still to read).  hiredis's reader is dropped whenever it stops
      before the end of a chunk (the next one is built when needed), so it
      never holds bytes across chunks.
    - ``error`` and ``bounds`` are the pure parser's.  `feed` gives it a
      fresh ``bounds`` list first and appends its own requests' offsets to
      that same list; ``_run`` and ``_parse`` only ever append to it, so
      the offsets stay in request order whoever parsed each request.
    - A chunk that arrives while ``_pending`` or ``_left`` is set goes to
      ``_run(data, out, True)``, which parses up to the end of the request
      in progress and returns that offset in ``data`` (at least
      ``len(data)`` when nothing is left; on a bad frame it sets ``error``
      and the offset means nothing).
    - hiredis then starts at a request boundary; where it stops,
      ``_parse(data, pos, out, False)`` takes the rest from ``pos`` with
      nothing pending, exactly as the pure parser would have, keeping any
      partial request for the next chunk.
    """

    def __init__(self, max_request_bytes: int = 64 * 1024 * 1024) -> None:
        if _hiredis is None:
            raise RuntimeError("hiredis is not installed")
        self._pure = RequestParser(max_request_bytes)
        self._reader: Optional[_hiredis.Reader] = None   # built on the first canonical request
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

    @property
    def in_request(self) -> bool:
        """As `RequestParser.in_request` (all state between chunks is the pure parser's)."""
        return self._pure.in_request

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
        if _canonical_start(data, pos) and not _big_count(data, pos):
            reader = self._reader
            if reader is None:
                reader = self._reader = _hiredis.Reader()
            reader.feed(data, pos)
            gets, check, overhead, append = reader.gets, self._check, _BULK_OVERHEAD, out.append
            try:
                while True:
                    req = gets()
                    if req is False:
                        if pos == n:
                            return out
                        break
                    if type(req) is not list or data[pos] != _ARRAY:
                        break
                    off = pos + overhead[len(req)] - 2
                    for arg in req:
                        if data[off] != _BULK:
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
            self._reader = None
        pure._parse(data, pos, out, False)
        return out

    def _within_limits(self, req: List[bytes]) -> bool:
        lengths = list(map(len, req))
        return len(req) <= _MBULK_MAX and sum(lengths) <= self._cap and max(lengths, default=0) <= _BULK_MAX


def _canonical_start(data: bytes, pos: int) -> bool:
    """
    Whether data[pos:] starts like a canonical multibulk request (``*N`` then
    ``$``), the only input hiredis is given: anything else (inline requests,
    nesting, random bytes) is refused or parsed as fast by the pure parser,
    without building or feeding a reader.
    """
    if not data.startswith(b"*", pos):
        return False
    nl = data.find(b"\r\n", pos + 1, pos + 10)
    return nl > 0 and data[nl + 2:nl + 3] == b"$"


def _big_count(data: bytes, pos: int) -> bool:
    """Whether data[pos:] holds an aggregate header with a count of 1000 or more."""
    mapped = data.translate(_COUNT_SHAPES)
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


def parse_whole(payload: bytes) -> Tuple[List[List[bytes]], List[int]]:
    """
    The requests joined in *payload* (canonical multibulk, as nodes send
    them to each other) and their bounds (`RequestParser.bounds`);
    `ProtocolError` if *payload* is anything else.
    """
    if _FAST_WHOLE:
        parsed = _parse_whole_hiredis(payload)
        if parsed is not None:
            return parsed
    parser = RequestParser(len(payload) + 1)
    requests = parser.feed(payload)
    bounds = parser.bounds
    if parser.error is not None or parser.in_request or -1 in bounds:
        raise ProtocolError("not whole multibulk requests")
    return requests, bounds


#: Whether `parse_whole` tries hiredis first (CPython with hiredis).
_FAST_WHOLE = _hiredis is not None and platform.python_implementation() == "CPython"


def _parse_whole_hiredis(payload: bytes) -> Optional[Tuple[List[List[bytes]], List[int]]]:
    """
    `parse_whole` in C where it can be: hiredis splits the payload and each
    request's bounds follow from its arguments' lengths, as a canonical
    encoding lays them out; the layout is then checked where it is cheap (a
    ``*`` at every start, every argument a bulk string, the last end at the
    payload's end).  None (the pure parser decides) for anything else:
    a value of 64 KiB or more, a count of 1000 or more (hiredis would
    allocate it first), bytes hiredis refuses, or a layout that does not add up.
    """
    if not payload.startswith(b"*") or _big_count(payload, 0):
        return None
    reader = _hiredis.Reader()
    reader.feed(payload)
    overhead, gets, star = _BULK_OVERHEAD, reader.gets, _ARRAY
    requests: List[List[bytes]] = []
    bounds: List[int] = []
    pos, n = 0, len(payload)
    try:
        while pos < n:
            req = gets()
            if type(req) is not list or not req or payload[pos] != star or _BULKS != set(map(type, req)):
                return None
            lengths = list(map(len, req))
            end = pos + overhead[len(req)] - 2 + sum(lengths) + sum(map(overhead.__getitem__, lengths))
            requests.append(req)
            bounds += (pos, end)
            pos = end
    except (_hiredis.HiredisError, IndexError):
        return None
    if pos != n or gets() is not False:
        return None
    return requests, bounds


_BULKS = {bytes}


def split_commands(payload: bytes) -> List[bytes]:
    """The requests joined in *payload*, each as its own bytes (see `parse_whole`)."""
    _, bounds = parse_whole(payload)
    return [payload[bounds[i]:bounds[i + 1]] for i in range(0, len(bounds), 2)]
