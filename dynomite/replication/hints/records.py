# -*- test-case-name: tests.unit.test_hint_records -*-
"""
The on-disk format of hint logs, and its pure codec: records to bytes and
back, and targets to directory names and back.  No I/O here.

One directory per target under the hint directory::

    <data_dir>/<target, %-escaped>/
        00000000000000000001.hints   segments, named after their first seq;
        00000000000000100213.hints   MAGIC then records, rolled at segment_bytes
        ack                          highest delivered seq (text, replaced by rename)
        lock                         held (lockf) while a process has the log open

    record = crc32:u32 | length:u32 seq:u64 created:f64 flags:u32 payload
             (little-endian; the crc covers everything after it; length
             counts what follows it)

A record is good when it is whole, its crc matches, and its seq is the one
its place in the segment calls for: sequence numbers are contiguous within
a segment, so the first seq (the file's name) and the position number every
record.  `record_end` is that check, and the one place it is made.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple, Optional, Tuple
from urllib.parse import unquote

__all__ = [
    "HEADER_SIZE", "MAGIC", "RECORD_OVERHEAD", "Hint", "created_at", "decode", "encode",
    "record_end", "record_size", "safe_name", "scan", "target_of",
]

#: The first bytes of every segment file.
MAGIC = b"DYNHINT1"

_HEAD = struct.Struct("<II")   # crc32, length
_U32 = struct.Struct("<I")
_SEQ = struct.Struct("<Q")
_BODY = struct.Struct("<QdI")  # seq, created, flags
#: Bytes of a record's header (crc and length).
HEADER_SIZE = _HEAD.size
#: Bytes a record takes on disk besides its payload.
RECORD_OVERHEAD = _HEAD.size + _BODY.size

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


class Hint(NamedTuple):
    """One stored write: its place in the log, when it was stored, how to send it."""

    seq: int
    created: float
    flags: int
    payload: bytes

    @property
    def size(self) -> int:
        """Bytes it takes on disk."""
        return RECORD_OVERHEAD + len(self.payload)


def safe_name(target: str) -> str:
    """A directory name for ``target``: %-escaped, reversible, never ``.``/``..``."""
    raw = target.encode("utf-8")
    if not raw:
        raise ValueError("a hint log needs a non-empty target name")
    return "".join(
        chr(b) if b in _SAFE and not (i == 0 and b == 0x2E) else "%%%02X" % b
        for i, b in enumerate(raw))


def target_of(dirname: str) -> str:
    """The target whose hints live in directory ``dirname`` (see `safe_name`)."""
    return unquote(dirname)


def encode(seq: int, created: float, flags: int, payload: bytes) -> bytes:
    """The bytes of one record."""
    tail = _U32.pack(_BODY.size + len(payload)) + _BODY.pack(seq, created, flags) + payload
    return _U32.pack(zlib.crc32(tail)) + tail


def record_end(buf: bytes, at: int, limit: int, seq: int) -> int:
    """
    Where the record at ``buf[at:limit]`` ends if it is whole, intact and
    numbered ``seq``; -1 if it is not.
    """
    if at + _HEAD.size > limit:
        return -1
    crc, length = _HEAD.unpack_from(buf, at)
    end = at + _HEAD.size + length
    if length < _BODY.size or end > limit or _SEQ.unpack_from(buf, at + _HEAD.size)[0] != seq \
            or zlib.crc32(memoryview(buf)[at + 4:end]) != crc:
        return -1
    return end


def decode(buf: bytes, at: int, limit: int, seq: int) -> Optional[Hint]:
    """The record at ``buf[at:limit]`` if it is whole, intact and numbered ``seq``."""
    end = record_end(buf, at, limit, seq)
    if end < 0:
        return None
    created, flags = _BODY.unpack_from(buf, at + _HEAD.size)[1:]
    return Hint(seq, created, flags, buf[at + RECORD_OVERHEAD:end])


def scan(buf: bytes, at: int, limit: int, seq: int) -> Tuple[int, int]:
    """
    Walk the good records from ``buf[at]``, the first numbered ``seq``,
    without building hints; returns where they end and the seq after them.
    """
    while True:
        end = record_end(buf, at, limit, seq)
        if end < 0:
            return at, seq
        at, seq = end, seq + 1


def record_size(buf: bytes, at: int) -> int:
    """The bytes the record at ``buf[at]`` takes, as its header says (not checked)."""
    return _HEAD.size + _HEAD.unpack_from(buf, at)[1]


def created_at(buf: bytes, at: int) -> float:
    """When the record at ``buf[at]`` was stored (not checked)."""
    return _BODY.unpack_from(buf, at + _HEAD.size)[1]
