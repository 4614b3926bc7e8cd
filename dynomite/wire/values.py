# -*- test-case-name: tests.unit.test_wire_values -*-
"""
One whole RESP reply decoded into Python values, for the node's own use.

The data path never decodes replies: it forwards Redis's bytes.  The few
places where the node itself reads what Redis answered (repair's scans and
digests, `dynomite.repair`) use :func:`decode`: bulk and simple strings
become ``bytes``, integers ``int``, nulls ``None``, arrays (and RESP3
sets, pushes and maps, as flat lists) ``list``, and an error a
:class:`ReplyError` value (not raised: an element of an array may be one).
"""

from __future__ import annotations

from typing import Any, Tuple

from dynomite.wire.resp import ProtocolError

__all__ = ["ReplyError", "decode"]


class ReplyError(Exception):
    """An error reply (``-ERR ...``), as a value."""

    def __init__(self, message: bytes) -> None:
        Exception.__init__(self, message.decode("utf-8", "replace"))
        self.message = message


def decode(raw: bytes) -> Any:
    """The value of the one reply ``raw`` holds; ProtocolError if it is not exactly one."""
    value, end = _value(raw, 0)
    if end != len(raw):
        raise ProtocolError("trailing bytes after a reply")
    return value


def _line(raw: bytes, pos: int) -> Tuple[bytes, int]:
    end = raw.find(b"\r\n", pos)
    if end < 0:
        raise ProtocolError("incomplete reply")
    return raw[pos:end], end + 2


def _value(raw: bytes, pos: int) -> Tuple[Any, int]:
    if pos >= len(raw):
        raise ProtocolError("incomplete reply")
    kind = raw[pos:pos + 1]
    line, pos = _line(raw, pos + 1)
    if kind in (b"+", b"("):
        return line, pos
    if kind == b":":
        return int(line), pos
    if kind == b"-" or kind == b"!":
        return ReplyError(line), pos
    if kind == b"_":
        return None, pos
    if kind in (b"$", b"="):
        n = int(line)
        if n < 0:
            return None, pos
        if pos + n + 2 > len(raw):
            raise ProtocolError("incomplete reply")
        return raw[pos:pos + n], pos + n + 2
    if kind in (b"*", b"~", b">", b"%"):
        n = int(line)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n * 2 if kind == b"%" else n):
            item, pos = _value(raw, pos)
            items.append(item)
        return items, pos
    if kind == b",":
        return float(line), pos
    if kind == b"#":
        return line == b"t", pos
    raise ProtocolError("unknown reply type %r" % kind)
