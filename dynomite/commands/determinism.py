# -*- test-case-name: tests.unit.test_determinism -*-
"""
How each write command reaches the replicas: as the client sent it, or
rewritten so that every replica applies the same effect.

A write is applied by every replica of its key, some of them later (a hint
replayed after an outage, a remote datacenter).  A command whose effect
depends on when it runs would then differ between replicas, so the
coordinator rewrites relative expiries to absolute ones when it accepts the
write, as Redis does for its own replicas and AOF
(``rewriteClientCommandVector`` in Redis's ``expire.c`` and ``t_string.c``):

    EXPIRE k s            -> PEXPIREAT k <now + s*1000>
    PEXPIRE k ms          -> PEXPIREAT k <now + ms>
    SETEX k s v           -> SET k v PXAT <now + s*1000>
    PSETEX k ms v         -> SET k v PXAT <now + ms>
    SET k v ... EX s|PX ms-> SET k v ... PXAT <now + ...>
    GETEX k EX s|PX ms    -> GETEX k PXAT <now + ...>
    RESTORE k ttl v ...   -> RESTORE k <now + ttl> v ... ABSTTL   (ttl > 0)

The reply is the one the original would get.  A request whose time
argument Redis would refuse (not an integer, not positive where Redis wants
it positive, a syntax error) is left as it is, so Redis answers it with
its own error.

Every write command of Redis 7.0 is in exactly one class
(`tests.unit.test_determinism` checks it against the command table):
`AS_IS`, `ABSOLUTE_TIME` (rewritten here), `NOT_DETERMINISTIC` (its effect
depends on randomness or on the replica's own state or choices: it runs
once, on its leader, and the others apply its effect:
`dynomite.commands.effects`), `BLOCKING` (run as its non-blocking twin)
and `NOT_SERVED` (refused by the node).
"""

from __future__ import annotations

from typing import Callable, Dict, FrozenSet, List, Optional, Sequence

__all__ = [
    "AS_IS", "ABSOLUTE_TIME", "NOT_DETERMINISTIC", "BLOCKING", "NOT_SERVED", "absolute",
    "longest_as_is", "again_alike",
]

#: Writes every replica applies alike whenever it applies them.
AS_IS: FrozenSet[str] = frozenset({
    "append", "bitfield", "bitop", "copy", "decr", "decrby", "del", "expireat", "flushall",
    "flushdb", "geoadd", "georadius", "georadiusbymember", "geosearchstore", "getdel", "getset",
    "hdel", "hincrby", "hmset", "hset", "hsetnx", "incr", "incrby", "linsert", "lmove", "lmpop",
    "lpop", "lpush", "lpushx", "lrem", "lset", "ltrim", "mset", "msetnx", "persist", "pexpireat",
    "pfadd", "pfmerge", "rename", "renamenx", "rpop", "rpoplpush", "rpush", "rpushx", "sadd",
    "sdiffstore", "setbit", "setnx", "setrange", "sinterstore", "smove", "srem", "sunionstore",
    "unlink", "xack", "xdel", "xgroup|create", "xgroup|createconsumer", "xgroup|delconsumer",
    "xgroup|destroy", "xgroup|setid", "xsetid", "zadd", "zdiffstore", "zincrby", "zinterstore",
    "zmpop", "zpopmax", "zpopmin", "zrangestore", "zrem", "zremrangebylex", "zremrangebyrank",
    "zremrangebyscore", "zunionstore",
})

#: Writes with a relative time, rewritten to an absolute one by `absolute`.
ABSOLUTE_TIME: FrozenSet[str] = frozenset({
    "expire", "pexpire", "setex", "psetex", "set", "getex", "restore",
})

#: Writes whose effect depends on randomness, the clock or the replica's own
#: choices: SPOP picks members at random; XADD ``*``, XAUTOCLAIM/XCLAIM and XREADGROUP
#: read the replica's clock; XADD/XTRIM ``~`` trim where the replica's
#: radix tree allows; INCRBYFLOAT/HINCRBYFLOAT round in the replica's
#: libc; SORT ... BY nosort STORE stores a set in its hashtable order;
#: scripts (EVAL, EVALSHA, FCALL, which the node treats as writes) may call
#: any of these, or TIME and random commands.
NOT_DETERMINISTIC: FrozenSet[str] = frozenset({
    "spop", "xadd", "xtrim", "xautoclaim", "xclaim", "xreadgroup", "incrbyfloat", "hincrbyfloat",
    "sort",
    "eval", "evalsha", "fcall",
})

#: Blocking pops: the node runs their non-blocking twin (LPOP, LMOVE,
#: ZPOPMIN...), which replays as sent, until one gives (`dynomite.node.blocking`).
BLOCKING: FrozenSet[str] = frozenset({
    "blmove", "blmpop", "blpop", "brpop", "brpoplpush", "bzmpop", "bzpopmax", "bzpopmin",
})

#: Writes the node refuses (cross-database, server-side).
NOT_SERVED: FrozenSet[str] = frozenset({
    "function|delete", "function|flush", "function|load", "function|restore", "migrate", "move",
    "pfdebug", "restore-asking", "swapdb",
})

# Beyond this many milliseconds Redis itself refuses an expire time as
# overflowing: leave such a request to it.
_LARGEST_MS = (1 << 62) // 1000


def _integer(raw: bytes) -> Optional[int]:
    """``raw`` as Redis reads an integer argument, or None if Redis would refuse it."""
    if not raw or len(raw) > 20 or raw != raw.strip() or raw[:1] == b"+":
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    if b"%d" % value != raw or not -_LARGEST_MS <= value <= _LARGEST_MS:
        return None
    return value


def _at(now_ms: int, raw: bytes, scale: int, positive: bool) -> Optional[bytes]:
    """The absolute time in ms for a relative ``raw`` (seconds if ``scale`` is 1000)."""
    value = _integer(raw)
    if value is None or positive and value <= 0:
        return None
    return b"%d" % (now_ms + value * scale)


def _expire(scale: int):
    def rewrite(args: Sequence[bytes], now_ms: int) -> Optional[List[bytes]]:
        at = _at(now_ms, args[2], scale, False)
        if at is None:
            return None
        return [b"PEXPIREAT", args[1], at] + list(args[3:])
    return rewrite


def _setex(scale: int):
    def rewrite(args: Sequence[bytes], now_ms: int) -> Optional[List[bytes]]:
        if len(args) != 4:
            return None
        at = _at(now_ms, args[2], scale, True)
        if at is None:
            return None
        return [b"SET", args[1], args[3], b"PXAT", at]
    return rewrite


_EXPIRY_OPTIONS = {b"ex": 1000, b"px": 1}
_ALL_EXPIRY_OPTIONS = frozenset({b"ex", b"px", b"exat", b"pxat", b"keepttl", b"persist"})


def _option_expiry(first_option: int):
    """SET and GETEX: an ``EX s`` or ``PX ms`` among the options becomes ``PXAT``."""
    def rewrite(args: Sequence[bytes], now_ms: int) -> Optional[List[bytes]]:
        options = [a.lower() for a in args[first_option:]]
        found = [i for i, a in enumerate(options) if a in _EXPIRY_OPTIONS]
        if len(found) != 1 or sum(1 for a in options if a in _ALL_EXPIRY_OPTIONS) != 1:
            return None   # no relative expiry, or a combination Redis refuses itself
        i = first_option + found[0]
        if i + 1 >= len(args):
            return None
        at = _at(now_ms, args[i + 1], _EXPIRY_OPTIONS[options[found[0]]], True)
        if at is None:
            return None
        return list(args[:i]) + [b"PXAT", at] + list(args[i + 2:])
    return rewrite


def _restore(args: Sequence[bytes], now_ms: int) -> Optional[List[bytes]]:
    if any(a.lower() == b"absttl" for a in args[4:]):
        return None
    ttl = _integer(args[2])
    if ttl is None or ttl <= 0:
        return None   # 0: no expiry; negative: Redis's own error
    return [args[0], args[1], b"%d" % (now_ms + ttl)] + list(args[3:]) + [b"ABSTTL"]


_REWRITES: Dict[str, Callable[[Sequence[bytes], int], Optional[List[bytes]]]] = {
    "expire": _expire(1000),
    "pexpire": _expire(1),
    "setex": _setex(1000),
    "psetex": _setex(1),
    "set": _option_expiry(3),
    "getex": _option_expiry(2),
    "restore": _restore,
}

# The most arguments with which a command surely replays as sent (a request
# with more may carry a relative time); 0: never as sent.
_LONGEST_AS_IS = {"set": 3, "getex": 2, "expire": 0, "pexpire": 0, "setex": 0, "psetex": 0,
                  "restore": 0}


def absolute(name: str, args: Sequence[bytes], now_ms: int) -> Sequence[bytes]:
    """``args`` of command ``name`` with any relative time made absolute at ``now_ms``."""
    rewrite = _REWRITES.get(name)
    if rewrite is None:
        return args
    return rewrite(args, now_ms) or args


def longest_as_is(name: str) -> Optional[int]:
    """
    The most arguments a request of ``name`` may have and still go to the
    replicas in the client's own bytes (None: any number); a longer one is
    sent through `absolute` first.
    """
    return _LONGEST_AS_IS.get(name)


#: SET options after which applying it twice answers or leaves something else
_SET_ONCE = frozenset({b"nx", b"xx", b"get"})


def again_alike(requests: Sequence[Sequence[bytes]]) -> bool:
    """
    Whether applying every one of ``requests`` a second time leaves the same
    data and gives the same answers: plain SET (any expiry; not NX, XX or
    GET) and MSET.  A write whose leader was lost before it answered may
    have been applied; only these may be sent to the next leader.
    """
    for args in requests:
        name = args[0].lower() if args else b""
        if name == b"mset":
            continue
        if name != b"set" or any(a.lower() in _SET_ONCE for a in args[3:]):
            return False
    return True

