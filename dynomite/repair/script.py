# -*- test-case-name: tests.integration.test_repair,tests.unit.test_repair_run -*-
"""
What repair and warm-up ask of a replica's Redis, and how its answers read.

Every question is one EVAL of :data:`SCRIPT` (`dynomite.repair.lua`, run inside the
replica's Redis, so values never cross the network to be compared) in one
of its modes; the builders below make the `Request` for each and the
readers turn the raw reply into Python values.  The requests travel like
any other through `dynomite.replication.targets` (the local Redis, or a
peer's REQUEST frame), so repair needs nothing new on the wire.

A key's *digest* (40 hex digits of SHA1) covers its name, type, value and
absolute expiry, with values read in a form that depends neither on their
encoding nor on the server's hash seed (a set's DUMP differs between two
servers holding the same members).  Keys are grouped into *cells*: the
ring segment the key's hash falls in (between two tokens of any rack, so
a cell has one replica per rack) and its bucket, ``hash >> 16``.  A cell's
digest is the XOR of its keys' digests (two 32-bit words).

The Lua MurmurHash3 must agree with `dynomite.placement.hashing`; the
integration test of this module compares them on random keys.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from dynomite.commands import lww
from dynomite.repair.lua import SCRIPT
from dynomite.wire.inflight import Request
from dynomite.wire.requests import parse_whole
from dynomite.wire.resp import ProtocolError, encode_command
from dynomite.wire.values import ReplyError, decode

__all__ = [
    "BUCKET_BITS", "BUCKETS", "ReplicaError", "SCRIPT", "Cell", "ScanStep", "bucket_of", "cells_request",
    "copy_commands", "digest_request", "drop_request", "dump_request", "fetch_request", "keys_request",
    "keys_of_dump", "list_request", "read_dumped", "read_dumped_with_versions", "marker_request", "read_cells",
    "read_digests",
    "read_fetched", "read_keys", "read_marker", "read_restored", "read_stream", "restore_if_request",
    "restore_new_request", "scan_step", "stream_request", "versions_request", "merge_versions_request",
    "tombstones_request", "key_versions_request", "read_key_versions",
]

#: Buckets per ring segment: a key's bucket is the top 16 bits of its hash.
BUCKET_BITS = 16
BUCKETS = 1 << BUCKET_BITS

#: (segment, bucket)
Cell = Tuple[int, int]


_EVAL = (b"EVAL", SCRIPT.encode("utf-8"))

#: Where the versions between datacenters live: their database and the prefix of their hashes' names.
_VERSIONS_AT = (b"%d" % lww.VERSION_DB, lww.version_key(b""))


class ReplicaError(Exception):
    """A replica's Redis answered a repair question with an error, or with something else than asked."""


def bucket_of(position: int) -> int:
    """The bucket of ring position ``position``."""
    return position >> (32 - BUCKET_BITS)


def _ask(keys: Sequence[bytes], *args: bytes, write: bool = False) -> Request:
    return Request(encode_command(_EVAL + (b"%d" % len(keys),) + tuple(keys) + args), write=write)


def _tag(hash_tag: Optional[bytes]) -> bytes:
    return hash_tag or b""


def cells_request(cursor: int, count: int, hash_tag: Optional[bytes], bounds: Sequence[int]) -> Request:
    """One SCAN step: the cells of the keys it saw, with their digests."""
    return _ask((), b"cells", b"%d" % cursor, b"%d" % count, _tag(hash_tag), b"%d" % len(bounds),
                *(b"%d" % b for b in bounds))


def keys_request(cursor: int, count: int, hash_tag: Optional[bytes], bitmap: bytes) -> Request:
    """One SCAN step: the keys it saw whose bucket is set in ``bitmap``, with their digests."""
    if len(bitmap) != BUCKETS // 8:
        raise ValueError("a bucket bitmap has %d bytes" % (BUCKETS // 8))
    return _ask((), b"keys", b"%d" % cursor, b"%d" % count, _tag(hash_tag), bitmap)


def stream_request(cursor: int, count: int, hash_tag: Optional[bytes],
                   ranges: Sequence[Tuple[int, int]]) -> Request:
    """One SCAN step: DUMP and absolute expiry of the keys it saw in ``ranges`` (inclusive)."""
    return _ask((), b"stream", *_scan_args(cursor, count, hash_tag, ranges))


def versions_request(cursor: int, count: int, hash_tag: Optional[bytes],
                     ranges: Sequence[Tuple[int, int]]) -> Request:
    """
    One SCAN step of the versions between datacenters (`dynomite.commands.lww`)
    of the keys in ``ranges`` (inclusive), deletes' tombstones included: DUMP
    and absolute expiry of each hash, read as `read_stream` reads a stream step.
    """
    return _ask((), b"versions", *_scan_args(cursor, count, hash_tag, ranges), *_VERSIONS_AT)


def tombstones_request(cursor: int, count: int, hash_tag: Optional[bytes],
                       ranges: Sequence[Tuple[int, int]]) -> Request:
    """
    One SCAN step of the versions between datacenters of the keys in
    ``ranges`` (inclusive) that hold no data: the keys whose deletes'
    tombstones they are, as `list_request` lists keys.
    """
    return _ask((), b"tombstones", *_scan_args(cursor, count, hash_tag, ranges), *_VERSIONS_AT)


def key_versions_request(keys: Sequence[bytes]) -> Request:
    """Each key's versions between datacenters, DUMP and absolute expiry (`read_key_versions`)."""
    return _ask(keys, b"keyversions", *_VERSIONS_AT)


def merge_versions_request(items: Sequence[Tuple[bytes, bytes, int]]) -> Request:
    """
    Merge version hashes another Redis dumped (`versions_request`'s items)
    into this one's, field by field, the newer version kept: a write noted
    here meanwhile is not undone, and what it did not note is added.
    """
    args: List[bytes] = [b"%d" % lww.VERSION_DB]
    for _, dump, expiry in items:
        args += [dump, b"%d" % expiry]
    return _ask([name for name, _, _ in items], b"merge", *args, write=True)


def list_request(cursor: int, count: int, hash_tag: Optional[bytes],
                 ranges: Sequence[Tuple[int, int]]) -> Request:
    """One SCAN step: the names of the keys it saw in ``ranges`` (inclusive)."""
    return _ask((), b"list", *_scan_args(cursor, count, hash_tag, ranges))


def drop_request(cursor: int, count: int, hash_tag: Optional[bytes],
                 ranges: Sequence[Tuple[int, int]]) -> Request:
    """One SCAN step deleting the keys it saw outside ``ranges`` (inclusive); its items are a count."""
    return _ask((), b"drop", *_scan_args(cursor, count, hash_tag, ranges), write=True)


def _scan_args(cursor: int, count: int, hash_tag: Optional[bytes],
               ranges: Sequence[Tuple[int, int]]) -> Tuple[bytes, ...]:
    flat = [b"%d" % v for r in ranges for v in r]
    return (b"%d" % cursor, b"%d" % count, _tag(hash_tag), b"%d" % len(ranges), *flat)


def dump_request(keys: Sequence[bytes], versions: bool = False) -> Request:
    """
    Each key's DUMP and absolute expiry (`read_dumped`); with ``versions``,
    also those of its versions between datacenters (`dynomite.commands.lww`,
    `read_dumped_with_versions`).
    """
    if versions:
        return _ask(keys, b"dump", b"versions", *_VERSIONS_AT)
    return _ask(keys, b"dump")


def keys_of_dump(probe: Request) -> List[bytes]:
    """The keys a `dump_request` asks for (the node that copies them reads them back); [] if it is none."""
    try:
        requests, _ = parse_whole(probe.payload)
        args = requests[0] if len(requests) == 1 else []
        # any script text: a node of another version sends its own
        count = int(args[2]) if len(args) > 4 and args[0].upper() == b"EVAL" else 0
    except (ProtocolError, ValueError):
        return []
    keys = args[3:3 + count]
    return keys if len(keys) == count and args[3 + count:4 + count] == [b"dump"] else []


def digest_request(keys: Sequence[bytes]) -> Request:
    return _ask(keys, b"digest")


def fetch_request(keys: Sequence[bytes]) -> Request:
    return _ask(keys, b"fetch")


def restore_if_request(key: bytes, expected: bytes, dump: bytes, expiry: int) -> Request:
    """Replace ``key`` by ``dump`` only if its digest is still ``expected`` (b"" = missing)."""
    return _ask((key,), b"restore_if", expected, dump, b"%d" % expiry, write=True)


def restore_new_request(key: bytes, dump: bytes, expiry: int) -> Request:
    """Create ``key`` from ``dump`` unless it exists (warm-up: what a client wrote meanwhile wins)."""
    if expiry > 0:
        args = (b"RESTORE", key, b"%d" % expiry, dump, b"ABSTTL")
    else:
        args = (b"RESTORE", key, b"0", dump)
    return Request(encode_command(args), write=True)


def marker_request(since: Optional[int] = None) -> Request:
    """Ask since when this Redis holds its node's data (`read_marker`), or mark it so since ``since``."""
    if since is None:
        return _ask((), b"marker", b"get")
    return _ask((), b"marker", b"set", b"%d" % since, write=True)


def read_marker(raw: bytes) -> Tuple[int, int]:
    """(since when the marker says the data set is whole, 0: never; DBSIZE)."""
    value = _value(raw)
    if not (isinstance(value, list) and len(value) == 2):
        raise ReplicaError("not a marker answer: %r" % (value,))
    return int(value[0]), int(value[1])


# -- reading the answers ----------------------------------------------------------


def _value(raw: bytes) -> Any:
    try:
        value = decode(raw)
    except Exception as e:
        raise ReplicaError("unreadable reply: %s" % e)
    if isinstance(value, ReplyError):
        raise ReplicaError(value.message.decode("utf-8", "replace"))
    return value


class ScanStep:
    """One SCAN step's answer: where to go on (0: done), how many keys it saw, and its items."""

    __slots__ = ("cursor", "scanned", "items")

    def __init__(self, cursor: int, scanned: int, items: List[Any]) -> None:
        self.cursor = cursor
        self.scanned = scanned
        self.items = items


def scan_step(raw: bytes) -> ScanStep:
    value = _value(raw)
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[2], list)):
        raise ReplicaError("not a scan step: %r" % (value,))
    return ScanStep(int(value[0]), int(value[1]), value[2])


def read_cells(step: ScanStep) -> Dict[Cell, Tuple[int, int]]:
    """A cells step's items: cell -> (word1, word2)."""
    items = step.items
    return {(items[i], items[i + 1]): (items[i + 2], items[i + 3]) for i in range(0, len(items), 4)}


def read_keys(step: ScanStep) -> Dict[bytes, bytes]:
    """A keys step's items: key -> digest."""
    items = step.items
    return {items[i]: items[i + 1] for i in range(0, len(items), 2)}


def read_stream(step: ScanStep) -> List[Tuple[bytes, bytes, int]]:
    """A stream step's items: (key, dump, absolute expiry in ms or negative)."""
    items = step.items
    return [(items[i], items[i + 1], int(items[i + 2])) for i in range(0, len(items), 3)]


def read_digests(raw: bytes, keys: Sequence[bytes]) -> Dict[bytes, bytes]:
    """A digest answer: key -> digest (b"" when missing)."""
    value = _value(raw)
    if not isinstance(value, list) or len(value) != len(keys):
        raise ReplicaError("expected %d digests, got %r" % (len(keys), value))
    return dict(zip(keys, value))


def read_fetched(raw: bytes, keys: Sequence[bytes]) -> Dict[bytes, Optional[Tuple[bytes, bytes, int]]]:
    """A fetch answer: key -> (digest, dump, absolute expiry), or None when missing."""
    value = _value(raw)
    if not isinstance(value, list) or len(value) != len(keys):
        raise ReplicaError("expected %d values, got %r" % (len(keys), value))
    return {key: (item[0], item[1], int(item[2])) if len(item) == 3 else None
            for key, item in zip(keys, value)}


#: A key as a dump answer gives it: (key, dump or None when missing, absolute expiry in ms or negative).
Dumped = Tuple[bytes, Optional[bytes], int]

#: A key's versions as a dump answer with versions gives them: (dump, absolute expiry in ms), or None.
DumpedVersions = Optional[Tuple[bytes, int]]


def read_dumped(raw: bytes) -> List[Dumped]:
    """A dump answer: (key, dump or None when missing, absolute expiry in ms or negative) per key."""
    return _dumped(_value(raw))


def read_dumped_with_versions(raw: bytes) -> Tuple[List[Dumped], List[DumpedVersions]]:
    """A dump answer with versions: `read_dumped`'s, and each key's versions (None: it has none)."""
    value = _value(raw)
    if not (isinstance(value, list) and len(value) == 2):
        raise ReplicaError("not a dump answer with versions: %r" % (value,))
    dumped = _dumped(value[0])
    return dumped, _versions(value[1], len(dumped))


def read_key_versions(raw: bytes, keys: Sequence[bytes]) -> List[DumpedVersions]:
    """A `key_versions_request` answer: each key's versions (None: it has none)."""
    return _versions(_value(raw), len(keys))


def _versions(value: Any, count: int) -> List[DumpedVersions]:
    if not (isinstance(value, list) and all(isinstance(item, list) and len(item) in (0, 2) for item in value)):
        raise ReplicaError("not versions of keys: %r" % (value,))
    if len(value) != count:
        raise ReplicaError("versions of %d keys for %d keys" % (len(value), count))
    return [(item[0], int(item[1])) if item else None for item in value]


def _dumped(value: Any) -> List[Dumped]:
    if not isinstance(value, list) or not all(isinstance(item, list) and len(item) in (1, 3)
                                              for item in value):
        raise ReplicaError("not a dump answer: %r" % (value,))
    return [(item[0], item[1], int(item[2])) if len(item) == 3 else (item[0], None, 0) for item in value]


def copy_commands(dumped: Sequence[Dumped],
                  versions: Optional[Sequence[DumpedVersions]] = None) -> List[Tuple[bytes, ...]]:
    """
    What makes another Redis hold exactly what `read_dumped` read: RESTORE
    REPLACE of each key (at its absolute expiry), DEL of each missing one;
    with ``versions`` (`read_dumped_with_versions`), then the same of each
    key's versions in their database.
    """
    out = [_restore(key, dump, expiry) for key, dump, expiry in dumped]
    if versions is not None:
        out.append((b"SELECT", b"%d" % lww.VERSION_DB))
        out += [_restore(lww.version_key(key), *(held or (None, 0))) for (key, _, _), held in zip(dumped, versions)]
        out.append((b"SELECT", b"0"))
    return out


def _restore(key: bytes, dump: Optional[bytes], expiry: int) -> Tuple[bytes, ...]:
    if dump is None:
        return (b"DEL", key)
    if expiry > 0:
        return (b"RESTORE", key, b"%d" % expiry, dump, b"REPLACE", b"ABSTTL")
    return (b"RESTORE", key, b"0", dump, b"REPLACE")


def read_restored(raw: bytes) -> bool:
    """Whether a restore_if replaced the key (False: it had changed meanwhile)."""
    return _value(raw) == 1
