# -*- test-case-name: tests.integration.test_repair -*-
"""
The Lua script repair, warm-up and scale-out run inside each replica's Redis.

One script, one mode per question (its first argument); its comment says
what each mode takes and answers.  `dynomite.repair.script` builds the
requests and reads the answers; the integration test of repair checks its
MurmurHash3 and cell digests against the node's own hashing.
"""

from __future__ import annotations

__all__ = ["SCRIPT"]

SCRIPT = r'''
-- dynomite-py repair: what a replica's Redis computes for repair and warm-up.
--
-- One script, several modes (ARGV[1]); each call does a bounded amount of
-- work (one SCAN step of ARGV[3] keys, or the keys given), so Redis stays
-- responsive between calls. Nothing here writes but "restore_if" and "drop".
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
--   list    cursor count hash_tag nranges lo hi ...
--           -> {cursor, scanned, {key, ...}} the keys whose hash is in one
--           of the inclusive ranges (scale-out: what a move copies)
--   drop    cursor count hash_tag nranges lo hi ...
--           -> {cursor, scanned, {deleted}}: deletes the keys whose hash is
--           in none of the ranges (scale-out: the ranges a node gave away)
--   versions cursor count hash_tag nranges lo hi ... db prefix
--           -> {cursor, scanned, {name, dump, pexpiretime, ...}}: one SCAN
--           step of database db, the hashes named prefix..key (versions
--           between datacenters, tombstones included) whose key's hash is in
--           one of the ranges
--   tombstones cursor count hash_tag nranges lo hi ... db prefix
--           -> {cursor, scanned, {key, ...}}: as versions, the keys of the
--           hashes whose key holds no data (deletes' tombstones)
--   keyversions (KEYS) db prefix -> {dump, pexpiretime} or {} per key: the
--           hash prefix..key of each key in database db
--   merge   (KEYS: names of such hashes) db dump pexpiretime ...
--           -> how many: each dumped hash merged into database db's, field
--           by field, the greater value kept (versions order as bytes), the
--           later expiry kept; restored as it is where there is none
--   dump    (KEYS)          -> {key, dump, pexpiretime} per key, or {key} if missing
--   dump    (KEYS) versions db prefix
--           -> {that, {dump, pexpiretime} or {} per key}: also each key's
--           versions between datacenters, prefix..key in database db
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

local function in_ranges(key)
  -- whether key hashes into the ranges of ARGV (hash_tag ARGV[4], nranges
  -- ARGV[5], then lo hi ...)
  local h = murmur3(hash_part(key, ARGV[4]))
  for i = 0, tonumber(ARGV[5]) - 1 do
    if h >= tonumber(ARGV[6 + 2 * i]) and h <= tonumber(ARGV[7 + 2 * i]) then return true end
  end
  return false
end

local function dumped_in_ranges(names, skip)
  -- name, DUMP and PEXPIRETIME of each of names whose key (the name less
  -- its first skip bytes) is in_ranges
  local out = {}
  for _, name in ipairs(names) do
    if in_ranges(string.sub(name, skip + 1)) then
      local dump = redis.call('DUMP', name)
      if dump then
        out[#out + 1] = name
        out[#out + 1] = dump
        out[#out + 1] = redis.call('PEXPIRETIME', name)
      end
    end
  end
  return out
end

local function versions_of_keys(db, prefix)
  -- {dump, pexpiretime} of the hash prefix..key in database db for each of
  -- KEYS, or {} where there is none
  local versions = {}
  redis.call('SELECT', db)
  for i, key in ipairs(KEYS) do
    local where = prefix .. key
    local dump = redis.call('DUMP', where)
    if dump then
      versions[i] = {dump, redis.call('PEXPIRETIME', where)}
    else
      versions[i] = {}
    end
  end
  return versions
end

local function versions_step()
  -- one SCAN step of database ARGV[6 + 2n]: the names that start with
  -- prefix ARGV[7 + 2n], and the number of names scanned
  local n = tonumber(ARGV[5])
  local prefix = ARGV[7 + 2 * n]
  redis.call('SELECT', ARGV[6 + 2 * n])
  local cursor, names = scan(ARGV[2], ARGV[3])
  local versions = {}
  for _, name in ipairs(names) do
    if string.sub(name, 1, #prefix) == prefix then versions[#versions + 1] = name end
  end
  return cursor, #names, versions, #prefix
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
  local cursor, keys = scan(ARGV[2], ARGV[3])
  return {cursor, #keys, dumped_in_ranges(keys, 0)}
elseif mode == 'list' or mode == 'drop' then
  local cursor, keys = scan(ARGV[2], ARGV[3])
  local out, deleted = {}, 0
  for _, key in ipairs(keys) do
    local inside = in_ranges(key)
    if mode == 'list' and inside then
      out[#out + 1] = key
    elseif mode == 'drop' and not inside then
      deleted = deleted + redis.call('DEL', key)
    end
  end
  if mode == 'drop' then return {cursor, #keys, {deleted}} end
  return {cursor, #keys, out}
elseif mode == 'versions' then
  local cursor, scanned, versions, skip = versions_step()
  return {cursor, scanned, dumped_in_ranges(versions, skip)}
elseif mode == 'tombstones' then
  local cursor, scanned, versions, skip = versions_step()
  local keys = {}
  for _, name in ipairs(versions) do
    local key = string.sub(name, skip + 1)
    if in_ranges(key) then keys[#keys + 1] = key end
  end
  redis.call('SELECT', '0')
  local out = {}
  for _, key in ipairs(keys) do
    if redis.call('EXISTS', key) == 0 then out[#out + 1] = key end
  end
  return {cursor, scanned, out}
elseif mode == 'merge' then
  redis.call('SELECT', ARGV[2])
  for i, name in ipairs(KEYS) do
    local dump, expiry = ARGV[1 + 2 * i], tonumber(ARGV[2 + 2 * i])
    if redis.call('EXISTS', name) == 0 then
      if expiry > 0 then
        redis.call('RESTORE', name, expiry, dump, 'ABSTTL')
      else
        redis.call('RESTORE', name, 0, dump)
      end
    else
      local merging = 'dyno:merging'   -- database db is the node's own: no key of a client
      redis.call('RESTORE', merging, 0, dump, 'REPLACE')
      local theirs = redis.call('HGETALL', merging)
      redis.call('DEL', merging)
      for j = 1, #theirs, 2 do
        local mine = redis.call('HGET', name, theirs[j])
        if not mine or theirs[j + 1] > mine then
          redis.call('HSET', name, theirs[j], theirs[j + 1])
        end
      end
      if expiry > 0 and expiry > redis.call('PEXPIRETIME', name) then
        redis.call('PEXPIREAT', name, expiry)
      end
    end
  end
  return #KEYS
elseif mode == 'dump' then
  local out = {}
  for i, key in ipairs(KEYS) do
    local dump = redis.call('DUMP', key)
    if dump then
      out[i] = {key, dump, redis.call('PEXPIRETIME', key)}
    else
      out[i] = {key}
    end
  end
  if ARGV[2] == 'versions' then
    return {out, versions_of_keys(ARGV[3], ARGV[4])}
  end
  return out
elseif mode == 'keyversions' then
  return versions_of_keys(ARGV[2], ARGV[3])
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
