# -*- test-case-name: tests.integration.test_repair_script -*-
"""
What repair and warm-up ask of a replica's Redis, and how its answers read.

Every question is one EVAL of :data:`SCRIPT` (Lua, run inside the
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

from dynomite.wire.inflight import Request
from dynomite.wire.resp import encode_command
from dynomite.wire.values import ReplyError, decode

__all__ = [
    "BUCKET_BITS", "BUCKETS", "ReplicaError", "SCRIPT", "Cell", "ScanStep", "bucket_of", "cells_request",
    "digest_request", "fetch_request", "keys_request", "marker_request", "read_marker", "read_cells", "read_digests", "read_fetched",
    "read_keys", "read_restored", "read_stream", "restore_if_request", "restore_new_request", "scan_step",
    "stream_request",
]

#: Buckets per ring segment: a key's bucket is the top 16 bits of its hash.
BUCKET_BITS = 16
BUCKETS = 1 << BUCKET_BITS

#: (segment, bucket)
Cell = Tuple[int, int]

SCRIPT = r'''
-- dynomite-py repair: what a replica's Redis computes for repair and warm-up.
--
-- One script, several modes (ARGV[1]); each call does a bounded amount of
-- work (one SCAN step of ARGV[3] keys, or the keys given), so Redis stays
-- responsive between calls. Nothing here writes except "restore_if".
--
--   cells   cursor count hash_tag nbounds bounds...
--           -> {cursor, scanned, {segment, bucket, word1, word2, ...}}
--           the XOR of the digests of the keys seen, per cell (segment of
--           the ring between two bounds, bucket = hash >> 16)
--   keys    cursor count hash_tag bitmap
--           -> {cursor, scanned, {key, digest, ...}} for keys whose bucket
--           is set in bitmap (8192 bytes, bit b of byte b >> 3)
--   stream  cursor count hash_tag nranges lo hi ...
--           -> {cursor, scanned, {key, dump, pexpiretime, ...}} for keys
--           whose hash is in one of the inclusive ranges
--   digest  (KEYS)          -> {digest or "", ...}
--   fetch   (KEYS)          -> {digest, dump, pexpiretime} per key, or {""}
--   marker get | marker set seconds
--           {since, dbsize}: since when (clock seconds, "0": never) this
--           Redis holds the node's data set, and its key count; or mark it
--   restore_if (KEYS[1]) expected dump pexpiretime
--           -> 1 if the key's digest was expected ("" = missing) and the key
--           now holds dump (absolute expiry pexpiretime, or none if <= 0),
--           0 if the key had changed and nothing was done
--
-- A key's digest is SHA1 over its name, type, value and absolute expiry,
-- where the value is read in a form that does not depend on the encoding
-- or on the server's hash seed: strings and lists as they are, sorted sets
-- in their order, sets and hashes as the XOR of their members' digests,
-- streams as entries, last ID and groups' delivery positions.

local mode = ARGV[1]
local TWO32 = 4294967296

local function u32(x)
  return x % TWO32
end

local function mul32(a, b)
  local al = a % 65536
  local ah = (a - al) / 65536
  return ((ah * b) % TWO32 * 65536 + al * b) % TWO32
end

local function rol(x, n)
  return u32(bit.rol(x, n))
end

local function bxor(a, b)
  return u32(bit.bxor(a, b))
end

-- MurmurHash3 x86 32-bit, seed 0 (the ring hash, as mmh3 computes it)
local function murmur3(s)
  local h = 0
  local len = #s
  local blocks = len - len % 4
  local c1, c2 = 0xcc9e2d51, 0x1b873593
  for i = 1, blocks, 4 do
    local b1, b2, b3, b4 = string.byte(s, i, i + 3)
    local k = b1 + b2 * 256 + b3 * 65536 + b4 * 16777216
    k = mul32(rol(mul32(k, c1), 15), c2)
    h = bxor(h, k)
    h = u32(mul32(rol(h, 13), 5) + 0xe6546b64)
  end
  local tail = len % 4
  if tail > 0 then
    local k = 0
    local b1, b2, b3 = string.byte(s, blocks + 1, blocks + tail)
    if tail == 3 then k = k + b3 * 65536 end
    if tail >= 2 then k = k + b2 * 256 end
    k = k + b1
    k = mul32(rol(mul32(k, c1), 15), c2)
    h = bxor(h, k)
  end
  h = bxor(h, len)
  h = bxor(h, math.floor(h / 65536))
  h = mul32(h, 0x85ebca6b)
  h = bxor(h, math.floor(h / 8192))
  h = mul32(h, 0xc2b2ae35)
  h = bxor(h, math.floor(h / 65536))
  return h
end

local function hash_part(key, tag)
  if #tag ~= 2 then return key end
  local open = string.find(key, string.sub(tag, 1, 1), 1, true)
  if not open then return key end
  local close = string.find(key, string.sub(tag, 2, 2), open + 1, true)
  if not close or close <= open + 1 then return key end
  return string.sub(key, open + 1, close - 1)
end

local function words(hex)
  return tonumber(string.sub(hex, 1, 8), 16), tonumber(string.sub(hex, 9, 16), 16)
end

local function joined(items)
  local parts = {}
  for i = 1, #items do
    local s = items[i]
    parts[i] = #s .. ':' .. s
  end
  return table.concat(parts)
end

-- the XOR of the digests of ``items`` taken ``step`` at a time
local function unordered(items, step)
  local w1, w2 = 0, 0
  for i = 1, #items, step do
    local one = {}
    for j = 0, step - 1 do one[j + 1] = items[i + j] end
    local a, b = words(redis.sha1hex(joined(one)))
    w1, w2 = bxor(w1, a), bxor(w2, b)
  end
  return #items .. ':' .. w1 .. ':' .. w2
end

local function flat(reply, out)
  for i = 1, #reply do
    local v = reply[i]
    if type(v) == 'table' then flat(v, out) else out[#out + 1] = tostring(v) end
  end
  return out
end

local function value_of(key, kind)
  if kind == 'string' then
    return redis.call('GET', key)
  elseif kind == 'list' then
    return joined(redis.call('LRANGE', key, 0, -1))
  elseif kind == 'set' then
    return unordered(redis.call('SMEMBERS', key), 1)
  elseif kind == 'hash' then
    return unordered(redis.call('HGETALL', key), 2)
  elseif kind == 'zset' then
    return joined(redis.call('ZRANGE', key, 0, -1, 'WITHSCORES'))
  elseif kind == 'stream' then
    local info = redis.call('XINFO', 'STREAM', key)
    local last = ''
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last = info[i + 1] end
    end
    local groups = {}
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local fields = {}
      for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
      groups[#groups + 1] = fields['name'] .. '=' .. fields['last-delivered-id'] .. '/' .. fields['pending']
    end
    table.sort(groups)
    return last .. '|' .. joined(groups) .. '|' .. joined(flat(redis.call('XRANGE', key, '-', '+'), {}))
  end
  return redis.call('DUMP', key)
end

-- the key's digest (40 hex digits), or nil if it does not exist
local function digest(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return nil end
  local expiry = redis.call('PEXPIRETIME', key)
  return redis.sha1hex(#key .. ':' .. key .. kind .. ':' .. value_of(key, kind) .. ':' .. expiry)
end

local function scan(cursor, count)
  local step = redis.call('SCAN', cursor, 'COUNT', count)
  return step[1], step[2]
end

local function segment(h, bounds, n)
  -- the first bound >= h (index 0..n-1), or n when above them all
  local lo, hi = 0, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if bounds[mid + 1] < h then lo = mid + 1 else hi = mid end
  end
  return lo
end

if mode == 'cells' then
  local tag = ARGV[4]
  local n = tonumber(ARGV[5])
  local bounds = {}
  for i = 1, n do bounds[i] = tonumber(ARGV[5 + i]) end
  local cursor, keys = scan(ARGV[2], ARGV[3])
  local cells, order = {}, {}
  for _, key in ipairs(keys) do
    local d = digest(key)
    if d then
      local h = murmur3(hash_part(key, tag))
      local id = segment(h, bounds, n) * 65536 + math.floor(h / 65536)
      local a, b = words(d)
      local cell = cells[id]
      if cell then
        cell[1], cell[2] = bxor(cell[1], a), bxor(cell[2], b)
      else
        cells[id] = {a, b}
        order[#order + 1] = id
      end
    end
  end
  local out = {}
  for _, id in ipairs(order) do
    local cell = cells[id]
    out[#out + 1] = math.floor(id / 65536)
    out[#out + 1] = id % 65536
    out[#out + 1] = cell[1]
    out[#out + 1] = cell[2]
  end
  return {cursor, #keys, out}
elseif mode == 'keys' then
  local tag, bitmap = ARGV[4], ARGV[5]
  local cursor, keys = scan(ARGV[2], ARGV[3])
  local out = {}
  for _, key in ipairs(keys) do
    local b = math.floor(murmur3(hash_part(key, tag)) / 65536)
    local byte = string.byte(bitmap, math.floor(b / 8) + 1)
    if bit.band(byte, bit.lshift(1, b % 8)) ~= 0 then
      local d = digest(key)
      if d then
        out[#out + 1] = key
        out[#out + 1] = d
      end
    end
  end
  return {cursor, #keys, out}
elseif mode == 'stream' then
  local tag = ARGV[4]
  local n = tonumber(ARGV[5])
  local cursor, keys = scan(ARGV[2], ARGV[3])
  local out = {}
  for _, key in ipairs(keys) do
    local h = murmur3(hash_part(key, tag))
    for i = 0, n - 1 do
      if h >= tonumber(ARGV[6 + 2 * i]) and h <= tonumber(ARGV[7 + 2 * i]) then
        local dump = redis.call('DUMP', key)
        if dump then
          out[#out + 1] = key
          out[#out + 1] = dump
          out[#out + 1] = redis.call('PEXPIRETIME', key)
        end
        break
      end
    end
  end
  return {cursor, #keys, out}
elseif mode == 'digest' then
  local out = {}
  for i, key in ipairs(KEYS) do out[i] = digest(key) or '' end
  return out
elseif mode == 'fetch' then
  local out = {}
  for i, key in ipairs(KEYS) do
    local d = digest(key)
    if d then
      out[i] = {d, redis.call('DUMP', key), redis.call('PEXPIRETIME', key)}
    else
      out[i] = {''}
    end
  end
  return out
elseif mode == 'restore_if' then
  local key = KEYS[1]
  if (digest(key) or '') ~= ARGV[2] then return 0 end
  local expiry = tonumber(ARGV[4])
  if expiry > 0 then
    redis.call('RESTORE', key, expiry, ARGV[3], 'REPLACE', 'ABSTTL')
  else
    redis.call('RESTORE', key, 0, ARGV[3], 'REPLACE')
  end
  return 1
elseif mode == 'marker' then
  -- this Redis holds the node's data set ("warm"), in database 15 beside
  -- the applied-once marks: a Redis restarted empty has lost it too
  redis.call('SELECT', 15)
  if ARGV[2] == 'set' then
    redis.call('SET', 'dyno:warm', ARGV[3])
    return 1
  end
  local since = redis.call('GET', 'dyno:warm') or '0'
  redis.call('SELECT', 0)
  return {since, redis.call('DBSIZE')}
end
return redis.error_reply('ERR unknown repair mode ' .. tostring(mode))
'''

_EVAL = (b"EVAL", SCRIPT.encode("utf-8"))


class ReplicaError(Exception):
    """A replica's Redis answered a repair question with an error, or with something else than asked."""


def bucket_of(position: int) -> int:
    """The bucket of ring position ``position``."""
    return position >> (32 - BUCKET_BITS)


def _ask(keys: Sequence[bytes], *args: bytes) -> Request:
    return Request(encode_command(_EVAL + (b"%d" % len(keys),) + tuple(keys) + args))


def _ask_write(keys: Sequence[bytes], *args: bytes) -> Request:
    return Request(encode_command(_EVAL + (b"%d" % len(keys),) + tuple(keys) + args), write=True)


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
    flat = [b"%d" % v for r in ranges for v in r]
    return _ask((), b"stream", b"%d" % cursor, b"%d" % count, _tag(hash_tag), b"%d" % len(ranges), *flat)


def digest_request(keys: Sequence[bytes]) -> Request:
    return _ask(keys, b"digest")


def fetch_request(keys: Sequence[bytes]) -> Request:
    return _ask(keys, b"fetch")


def restore_if_request(key: bytes, expected: bytes, dump: bytes, expiry: int) -> Request:
    """Replace ``key`` by ``dump`` only if its digest is still ``expected`` (b"" = missing)."""
    return _ask_write((key,), b"restore_if", expected, dump, b"%d" % expiry)


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
    return _ask_write((), b"marker", b"set", b"%d" % since)


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


def read_restored(raw: bytes) -> bool:
    """Whether a restore_if replaced the key (False: it had changed meanwhile)."""
    return _value(raw) == 1
