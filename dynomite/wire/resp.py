# -*- test-case-name: tests.unit.test_resp -*-
"""
Sans-IO RESP foundations and encoding: bytes in, frames out; no transport, no clock.

Every client request and every Redis reply passes through the parsers built
on `_Framer` here (`dynomite.wire.requests`, `dynomite.wire.replies`), so
they work on whole buffers with ``bytes.find``, ``int`` and slicing, never
byte by byte, and never rescan: an unfinished frame records how many bytes it
still needs (or which terminator it waits for), arriving chunks are kept in a
list, and they are joined once, when the frame can complete.

- `ProtocolError` is what the parsers report for bytes that are not RESP.
- The encoders build replies for the RESP version a client negotiated;
  `encode_command` builds the requests Redis is sent.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

__all__ = [
    "ProtocolError", "encode_command", "encode_commands", "simple", "error", "integer", "bulk", "null", "null_array",
    "array", "map_", "set_", "double", "boolean", "verbatim", "OK", "PONG",
]

_LLONG = 1 << 63

# Bytes a canonical "$<len>\r\n<data>\r\n" adds to its data, for lengths < 64 KiB.
_BULK_OVERHEAD = bytes(len(b"%d" % i) + 5 for i in range(1 << 16))


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


def encode_command(args: Sequence[bytes]) -> bytes:
    """Encode a request as a RESP multibulk (what Redis is sent)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        append(b"$%d\r\n" % len(arg))
        append(arg)
        append(b"\r\n")
    return b"".join(parts)


def encode_commands(commands: Sequence[Sequence[bytes]]) -> bytes:
    """Several commands as one RESP payload (a run, a MULTI ... EXEC)."""
    return b"".join([encode_command(c) for c in commands])


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
