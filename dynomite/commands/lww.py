# -*- test-case-name: tests.unit.test_lww -*-
"""
Concurrent writes of one key from two datacenters: the last writer wins,
by hybrid logical clock.

Inside a datacenter one leader orders a key's writes
(`dynomite.node.leader`).  Between datacenters there is no such order:
each applies the other's writes when they arrive, so two datacenters
writing one key at once would apply the two writes in opposite orders and
keep different values for good.  So, with ``datacenter_conflicts:
last_writer_wins`` and more than one datacenter, every write a leader
accepts from its own datacenter's clients gets a *version*
(`dynomite.consistency.hlc`: wall milliseconds, a counter, the leader's
name; later than every version it has seen), and each write is classed by
what it does to its key:

``KEY``
    it replaces the key as a whole (SET, MSET, DEL, and the state a write
    left, RESTORE): another datacenter applies it only if its version is
    newer than every version the key has there.  A write whose result
    depends on the key (RPUSH, APPEND, EXPIRE, SET NX...: `ships_state`)
    reaches the others as the state it left, so it is one of these.
``FIELD``
    it sets or removes members of a hash, set or sorted set (HSET, HDEL,
    SADD, SREM, ZADD, ZREM): each member is decided on its own, against
    the member's version and the key's, so writes of different members
    from two datacenters both stay, and of one member the newer wins.
``ALWAYS``
    it commutes (INCRBY, HINCRBY, ZINCRBY, PFADD, stream appends and
    acknowledgements): applied everywhere, whatever the order, once per
    origin (a replayed FORWARD changes nothing).

The versions live in Redis database `VERSION_DB` (the node's own, beside
`dynomite.replication.applied_once`'s marks), where SCAN, KEYS, DBSIZE and
RANDOMKEY through a node never look: one hash per key, ``dyno:version:<key>``,
field ``""`` the version of the last whole-key write, ``f<member>`` a
member's, ``s<node>`` the last commuting write from that origin.  Each
expires `hint_window` after its key's last versioned write: no write older
than that can still arrive (older hints are dropped), so a delete's
version (its tombstone) is kept exactly as long as an older write of the
key might resurrect it.

- The leader's own datacenter applies its writes as sent, and each replica
  then records their versions (`notes_command`: one command per run,
  sent right behind it; `NOTE_SCRIPT`, `noted` its Python twin).
- Other datacenters get the write as `check_command`: an EVALSHA of
  `SCRIPT` (every connection to Redis loads both scripts first).  Every
  replica there runs it, in the order its key's leader gives it, and
  decides by its own versions (`decide` is the same decision in Python):
  it applies what wins and records the versions.

A DEL of a hash, set or sorted set that lost to a newer member write
removes the members older than itself and keeps the newer ones, so both
datacenters end with the same members whichever came first.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from dynomite.wire.resp import encode_command

__all__ = ["KEY", "FIELD", "ALWAYS", "VERSION_DB", "SCRIPT", "SHA", "NOTE_SCRIPT", "NOTE_SHA", "note_entries",
           "notes_command", "noted", "kind_of", "ships_state", "version_key", "origin",
           "check_command", "encode_check", "parse_check", "check_version", "decide", "Check"]

KEY, FIELD, ALWAYS = "key", "field", "always"

#: The Redis database of the versions (that of `dynomite.replication.applied_once.META_DB`).
VERSION_DB = 15

_PREFIX = b"dyno:version:"
_WHOLE = b""
_SELECT_VERSIONS = [b"SELECT", b"%d" % VERSION_DB]
_SELECT_DATA = [b"SELECT", b"0"]

#: Writes that commute: applied in every datacenter whatever the order.
_ALWAYS = frozenset({
    "incr", "incrby", "decr", "decrby", "hincrby", "zincrby", "pfadd", "xadd", "xack", "xdel",
    "xgroup|create", "xgroup|createconsumer", "xgroup|delconsumer", "xgroup|destroy", "xgroup|setid",
    "xsetid", "flushall", "flushdb",
})

#: Writes of members: (first member's index, step between members, the member's place in a step).
_FIELDS: Dict[str, Tuple[int, int, int]] = {
    "hset": (2, 2, 0), "hmset": (2, 2, 0), "hsetnx": (2, 2, 0), "hdel": (2, 1, 0),
    "sadd": (2, 1, 0), "srem": (2, 1, 0), "zrem": (2, 1, 0),
}

_ZADD_OPTIONS = frozenset({b"nx", b"xx", b"gt", b"lt", b"ch"})

#: The commands whose writes remove whole keys (their partial form: `_REMOVE_MEMBERS`).
_DELETES = frozenset({b"del", b"unlink"})
_REMOVE_MEMBERS = {b"hash": b"HDEL", b"set": b"SREM", b"zset": b"ZREM"}


def origin(version: bytes) -> bytes:
    """The node that stamped ``version`` (`dynomite.consistency.hlc`)."""
    return version.partition(b"@")[2]


def version_key(key: bytes) -> bytes:
    """Where ``key``'s versions live (in `VERSION_DB`)."""
    return _PREFIX + key


def kind_of(name: str, args: Sequence[bytes]) -> Tuple[str, Tuple[int, int, int]]:
    """
    How a write (``name`` as `dynomite.commands.table` resolves it, with its
    ``args``) is decided between datacenters: (`KEY` | `FIELD` | `ALWAYS`,
    the member layout of a FIELD write).
    """
    if name in _ALWAYS:
        return ALWAYS, (0, 0, 0)
    layout = _FIELDS.get(name)
    if layout is not None:
        return FIELD, layout
    if name == "zadd":
        i = 2
        while i < len(args) and args[i].lower() in _ZADD_OPTIONS:
            i += 1
        if i < len(args) and args[i].lower() == b"incr":
            return ALWAYS, (0, 0, 0)   # ZADD INCR adds to a score, as ZINCRBY
        return FIELD, (i, 2, 1)
    return KEY, (0, 0, 0)


#: Whole-key writes whose result does not depend on the key's state.
_OVERWRITES = frozenset({"set", "mset", "del", "unlink", "getdel", "getset", "restore"})
_CONDITIONS = frozenset({b"nx", b"xx", b"keepttl", b"gt", b"lt"})


def ships_state(name: str, args: Sequence[bytes]) -> bool:
    """
    Whether a write must reach other datacenters as the state it leaves
    (RPUSH, APPEND, LPOP, EXPIRE, SET NX, HSETNX...: their result depends
    on what the key held, which may differ there until both sides are
    decided), rather than as sent: anything but a pure overwrite, a member
    write without conditions, or a commuting write.
    """
    kind, layout = kind_of(name, args)
    if kind == ALWAYS:
        return False
    if kind == FIELD:
        return name == "hsetnx" or (name == "zadd" and any(a.lower() in _CONDITIONS for a in args[2:layout[0]]))
    if name == "set":
        return any(a.lower() in _CONDITIONS for a in args[3:])
    return name not in _OVERWRITES


def _members(args: Sequence[bytes], layout: Tuple[int, int, int]) -> List[bytes]:
    start, step, place = layout
    return [args[i + place] for i in range(start, len(args) - place, step)]


def note_entries(kind: str, layout: Tuple[int, int, int], keys: Sequence[bytes], args: Sequence[bytes],
                 version: bytes) -> List[Tuple[bytes, bytes, bytes, List[bytes]]]:
    """
    What a replica of the writing datacenter records of one write:
    ``(kind, key, version, members)`` for each key: its whole-key version
    (replacing its member versions), or the versions of the members written.
    [] for `ALWAYS`.
    """
    if kind == ALWAYS or not keys:
        return []
    if kind == KEY:
        return [(b"key", key, version, []) for key in keys]
    members = _members(args, layout)
    return [(b"field", keys[0], version, members)] if members else []


def notes_command(entries: Sequence[Tuple[bytes, bytes, bytes, List[bytes]]], ttl_ms: int) -> List[bytes]:
    """One EVALSHA of `NOTE_SCRIPT` recording ``entries`` (`note_entries`, of a whole run)."""
    keys: List[bytes] = []
    argv = [b"%d" % ttl_ms]
    for kind, key, version, members in entries:
        keys.append(key)
        argv += [kind, version, b"%d" % len(members)] + list(members)
    return [b"EVALSHA", NOTE_SHA, b"%d" % len(keys)] + keys + argv


def noted(args: Sequence[bytes]) -> List[List[bytes]]:
    """What a `notes_command` runs (`NOTE_SCRIPT` in Python), or [] for any other command."""
    if len(args) < 4 or args[0].lower() != b"evalsha" or args[1] != NOTE_SHA:
        return []
    n = int(args[2])
    keys, argv = args[3:3 + n], args[3 + n:]
    ttl, i = argv[0], 1
    out = [list(_SELECT_VERSIONS)]
    for key in keys:
        where = version_key(key)
        kind, version, count = argv[i], argv[i + 1], int(argv[i + 2])
        members = argv[i + 3:i + 3 + count]
        i += 3 + count
        if kind == b"key":
            out += [[b"DEL", where], [b"HSET", where, _WHOLE, version]]
        else:
            out += [[b"HSET", where, b"f" + m, version] for m in members]
        out.append([b"PEXPIRE", where, ttl])
    return out + [list(_SELECT_DATA)]


class Check:
    """A write as another datacenter receives it (`check_command`, read back by `parse_check`)."""

    __slots__ = ("version", "ttl_ms", "kind", "layout", "keys", "args")

    def __init__(self, version: bytes, ttl_ms: int, kind: str, layout: Tuple[int, int, int],
                 keys: Sequence[bytes], args: Sequence[bytes]) -> None:
        self.version = version
        self.ttl_ms = ttl_ms
        self.kind = kind
        self.layout = layout
        self.keys = list(keys)
        self.args = list(args)


def check_command(kind: str, layout: Tuple[int, int, int], keys: Sequence[bytes], args: Sequence[bytes],
                  version: bytes, ttl_ms: int) -> List[bytes]:
    """
    The EVALSHA of `SCRIPT` that applies ``args`` in another datacenter if
    it wins there (every connection to Redis loads the script first:
    `dynomite.datastore.pool.Datastore.preload`).
    """
    return [b"EVALSHA", SHA, b"%d" % len(keys)] + list(keys) + [
        _TAG, version, b"%d" % ttl_ms, kind.encode(), b"%d" % layout[0], b"%d" % layout[1],
        b"%d" % layout[2]] + list(args)


def encode_check(kind: str, layout: Tuple[int, int, int], keys: Sequence[bytes], version: bytes,
                 ttl_ms: int, command: bytes, nargs: int) -> bytes:
    """
    ``encode_command(check_command(kind, layout, keys, args, version,
    ttl_ms))``, built from ``command``, the canonical encoding of the
    write's ``nargs`` arguments: those bytes are reused, not encoded again
    (the leader stamps every write it sends to other datacenters).
    """
    body = command[len(b"*%d\r\n" % nargs):]
    if len(keys) == 1:
        key = keys[0]
        tail = _CHECK_TAILS.get((kind, layout, ttl_ms))
        if tail is None:
            tail = _CHECK_TAILS[kind, layout, ttl_ms] = encode_command(
                [b"%d" % ttl_ms, kind.encode(), b"%d" % layout[0], b"%d" % layout[1], b"%d" % layout[2]])[4:]
            if len(_CHECK_TAILS) > 64:
                _CHECK_TAILS.clear()
        return b"".join((b"*%d\r\n" % (11 + nargs), _CHECK_HEAD, b"$%d\r\n%b\r\n" % (len(key), key),
                         _TAG_BULK, b"$%d\r\n%b\r\n" % (len(version), version), tail, body))
    prefix = check_command(kind, layout, keys, (), version, ttl_ms)
    head = encode_command(prefix)[len(b"*%d\r\n" % len(prefix)):]
    return b"".join((b"*%d\r\n" % (len(prefix) + nargs), head, body))


def parse_check(args: Sequence[bytes]) -> Optional[Check]:
    """The `Check` a `check_command` carries, or None for any other command."""
    if len(args) < 3 or args[1] != SHA or args[0].lower() != b"evalsha":
        return None
    try:
        n = int(args[2])
        keys = args[3:3 + n]
        argv = args[3 + n:]
        if len(keys) != n or len(argv) < 8 or argv[0] not in (_TAG, RAN_TAG):
            return None
        kind = argv[3].decode()
        if kind not in (KEY, FIELD, ALWAYS):
            return None
        return Check(argv[1], int(argv[2]), kind, (int(argv[4]), int(argv[5]), int(argv[6])), keys, argv[7:])
    except (ValueError, UnicodeDecodeError):
        return None


def check_version(args: Sequence[bytes]) -> Optional[bytes]:
    """``parse_check(args).version`` when `parse_check` reads a `Check` in ``args``, else None; without building one."""
    if len(args) < 11 or args[1] != SHA or args[0].lower() != b"evalsha":
        return None
    try:
        n = int(args[2])
        at = 3 + n
        if n < 0 or len(args) < at + 8 or args[at] not in (_TAG, RAN_TAG) or args[at + 3] not in _KINDS:
            return None
        int(args[at + 2]), int(args[at + 4]), int(args[at + 5]), int(args[at + 6])
    except ValueError:
        return None
    return args[at + 1]


_KINDS = (KEY.encode(), FIELD.encode(), ALWAYS.encode())


def decide(check: Check, versions: Callable[[bytes], Dict[bytes, bytes]],
           members: Callable[[bytes], Tuple[bytes, List[bytes]]]) -> List[List[bytes]]:
    """
    What a datacenter runs for ``check`` (`SCRIPT` decides the same in
    Lua): the part of the write that wins, then its version notes; [] when
    nothing does.  ``versions(key)`` is the key's version hash;
    ``members(key)`` its type (``b"hash"``, ``b"set"``...) and members.
    """
    v, args = check.version, check.args
    ttl = b"%d" % check.ttl_ms
    if check.kind == ALWAYS:
        # applied once: its origin's writes of a key come in their order
        key = check.keys[0]
        mark = b"s" + origin(v)
        stored = versions(key)
        if not v > max(stored.get(mark, b""), stored.get(_WHOLE, b"")):
            return []   # a replay, or older than the key's last whole-key write
        return [list(args), list(_SELECT_VERSIONS), [b"HSET", version_key(key), mark, v],
                [b"PEXPIRE", version_key(key), ttl], list(_SELECT_DATA)]
    if check.kind == FIELD:
        key = check.keys[0]
        stored = versions(key)
        whole = stored.get(_WHOLE, b"")
        start, step, place = check.layout
        kept = list(args[:start])
        notes: List[bytes] = []
        for i in range(start, len(args) - place, step):
            member = args[i + place]
            if v > max(whole, stored.get(b"f" + member, b"")):
                kept += args[i:i + step]
                notes += [b"f" + member, v]
        if not notes:
            return []
        return [kept, list(_SELECT_VERSIONS), [b"HSET", version_key(key)] + notes,
                [b"PEXPIRE", version_key(key), ttl], list(_SELECT_DATA)]
    newest = {key: max((x for f, x in versions(key).items() if f[:1] != b"s"), default=b"")
              for key in check.keys}
    if args[0].lower() not in _DELETES:
        if not all(v > newest[key] for key in check.keys):
            return []   # a write of several keys wins everywhere or nowhere
        out = [list(args), list(_SELECT_VERSIONS)]
        for key in check.keys:
            out += [[b"DEL", version_key(key)], [b"HSET", version_key(key), _WHOLE, v],
                    [b"PEXPIRE", version_key(key), ttl]]
        return out + [list(_SELECT_DATA)]
    gone: List[bytes] = []
    partial: List[List[bytes]] = []
    notes_of: List[List[bytes]] = []
    for key in check.keys:
        stored = versions(key)
        where = version_key(key)
        if v > newest[key]:
            gone.append(key)
            notes_of += [[b"DEL", where], [b"HSET", where, _WHOLE, v], [b"PEXPIRE", where, ttl]]
        elif v > stored.get(_WHOLE, b""):
            kind, names = members(key)
            remove = _REMOVE_MEMBERS.get(kind)
            if remove is None:
                continue
            older = [m for m in names if stored.get(b"f" + m, b"") < v]
            if older:
                partial.append([remove, key] + older)
            notes_of += [[b"HDEL", where] + [b"f" + m for m in older]] if older else []
            notes_of += [[b"HSET", where, _WHOLE, v], [b"PEXPIRE", where, ttl]]
    if not gone and not notes_of:
        return []
    out = ([[args[0]] + gone] if gone else []) + partial
    return out + [list(_SELECT_VERSIONS)] + notes_of + [list(_SELECT_DATA)]


_TAG = b"dyno:lww:1"
#: The same check answering the commands it ran, not how many of the write's (tests compare them with `decide`).
RAN_TAG = b"dyno:lww:1:ran"

#: `decide` in Lua, run by the key's leader in a datacenter the write comes to.
SCRIPT = b"""-- dyno:lww:1 (dynomite.commands.lww.decide)
local v, ttl, kind = ARGV[2], ARGV[3], ARGV[4]
local ran = ARGV[1] == 'dyno:lww:1:ran'
local none = ran and {} or 0
local start, step, place = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local args = {}
for i = 8, #ARGV do args[#args + 1] = ARGV[i] end
local function versions(key)
  redis.call('SELECT', '15')
  local flat = redis.call('HGETALL', 'dyno:version:' .. key)
  redis.call('SELECT', '0')
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end
local function newest(stored)
  local n = ''
  for f, x in pairs(stored) do
    if string.sub(f, 1, 1) ~= 's' and x > n then n = x end
  end
  return n
end
local out, notes = {}, {}
local function note(c) notes[#notes + 1] = c end
if kind == 'always' then
  local key = KEYS[1]
  local mark = 's' .. string.sub(v, (string.find(v, '@', 1, true) or #v) + 1)
  local stored = versions(key)
  if not (v > (stored[mark] or '')) or not (v > (stored[''] or '')) then return none end
  out[1] = args
  note({'HSET', 'dyno:version:' .. key, mark, v})
  note({'PEXPIRE', 'dyno:version:' .. key, ttl})
elseif kind == 'field' then
  local key = KEYS[1]
  local stored = versions(key)
  local whole = stored[''] or ''
  local kept, fields = {}, {}
  for i = 1, start do kept[#kept + 1] = args[i] end
  for i = start + 1, #args - place, step do
    local member = args[i + place]
    local mine = stored['f' .. member] or ''
    if mine < whole then mine = whole end
    if v > mine then
      for j = i, i + step - 1 do kept[#kept + 1] = args[j] end
      fields[#fields + 1] = 'f' .. member
      fields[#fields + 1] = v
    end
  end
  if #fields == 0 then return none end
  out[1] = kept
  local h = {'HSET', 'dyno:version:' .. key}
  for _, f in ipairs(fields) do h[#h + 1] = f end
  note(h)
  note({'PEXPIRE', 'dyno:version:' .. key, ttl})
else
  local delete = string.lower(args[1]) == 'del' or string.lower(args[1]) == 'unlink'
  local tops = {}
  for i, key in ipairs(KEYS) do tops[i] = versions(key) end
  if not delete then
    for i = 1, #KEYS do if not (v > newest(tops[i])) then return none end end
    out[1] = args
    for _, key in ipairs(KEYS) do
      local where = 'dyno:version:' .. key
      note({'DEL', where}); note({'HSET', where, '', v}); note({'PEXPIRE', where, ttl})
    end
  else
    local gone = {args[1]}
    local remove = {hash = 'HDEL', set = 'SREM', zset = 'ZREM'}
    for i, key in ipairs(KEYS) do
      local stored, where = tops[i], 'dyno:version:' .. key
      if v > newest(stored) then
        gone[#gone + 1] = key
        note({'DEL', where}); note({'HSET', where, '', v}); note({'PEXPIRE', where, ttl})
      elseif v > (stored[''] or '') then
        local t = redis.call('TYPE', key)['ok']
        local verb = remove[t]
        if verb then
          local names
          if t == 'hash' then names = redis.call('HKEYS', key)
          elseif t == 'set' then names = redis.call('SMEMBERS', key)
          else names = redis.call('ZRANGE', key, 0, -1) end
          table.sort(names)
          local older = {}
          for _, m in ipairs(names) do
            if (stored['f' .. m] or '') < v then older[#older + 1] = m end
          end
          if #older > 0 then
            local c = {verb, key}
            local d = {'HDEL', where}
            for _, m in ipairs(older) do c[#c + 1] = m; d[#d + 1] = 'f' .. m end
            out[#out + 1] = c
            note(d)
          end
          note({'HSET', where, '', v}); note({'PEXPIRE', where, ttl})
        end
      end
    end
    if #gone > 1 then table.insert(out, 1, gone) end
    if #out == 0 and #notes == 0 then return none end
  end
end
for _, c in ipairs(out) do redis.call(unpack(c)) end
redis.call('SELECT', '15')
for _, c in ipairs(notes) do redis.call(unpack(c)) end
redis.call('SELECT', '0')
if not ran then return #out end
local all = {}
for _, c in ipairs(out) do all[#all + 1] = c end
all[#all + 1] = {'SELECT', '15'}
for _, c in ipairs(notes) do all[#all + 1] = c end
all[#all + 1] = {'SELECT', '0'}
return all
"""


#: What EVALSHA calls `SCRIPT` by.
SHA = hashlib.sha1(SCRIPT).hexdigest().encode()


#: `encode_check`'s constant parts: EVALSHA, the script, one key; the tag; per (kind, layout, ttl) the rest.
_CHECK_HEAD = encode_command([b"EVALSHA", SHA, b"1"])[4:]
_TAG_BULK = encode_command([_TAG])[4:]
_CHECK_TAILS: Dict[Tuple[str, Tuple[int, int, int], int], bytes] = {}


#: `noted` in Lua: the version notes of a run of writes, in one command.
NOTE_SCRIPT = b"""-- dyno:lww-notes:1 (dynomite.commands.lww.noted)
local ttl, i = ARGV[1], 2
redis.call('SELECT', '15')
for k = 1, #KEYS do
  local where = 'dyno:version:' .. KEYS[k]
  local kind, v, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if kind == 'key' then
    redis.call('DEL', where)
    redis.call('HSET', where, '', v)
  else
    for j = 1, n do redis.call('HSET', where, 'f' .. ARGV[i + 2 + j], v) end
  end
  redis.call('PEXPIRE', where, ttl)
  i = i + 3 + n
end
redis.call('SELECT', '0')
return #KEYS
"""
NOTE_SHA = hashlib.sha1(NOTE_SCRIPT).hexdigest().encode()

