"""The node's command table: how each Redis 7.0 command is served.

The facts (arity, flags, key specs, docs) come from Redis itself, through the
generated ``command_table.py`` (``tools/gen_command_table.py``); this module
adds the node's policy, i.e. the *route* of every command, and answers
``COMMAND`` / ``COMMAND INFO`` / ``COMMAND DOCS`` with the bytes Redis 7.0
would send for the commands the node serves.

Routes, and why:

============  ==============================================================
KEY           Data commands (groups string, hash, list, set, sorted-set,
              generic, bitmap, hyperloglog, geo, stream) whose key specs
              always name exactly one key, not blocking, not admin: the key's
              owner serves them. Derived from the key specs, so nothing is
              forgotten. Containers ``object``, ``xinfo``, ``xgroup`` (every
              subcommand but HELP takes one key) and ``memory`` (only MEMORY
              USAGE is served; it takes one key).
MULTI_KEY     Key specs that can name several keys (``_MULTI_KEY``). The six
              ``split`` ones are cut by owner and the replies merged; the
              others need all keys on one owner (hash tags), as in Dynomite.
NODE          Connection state and introspection the node owns (``_NODE``):
              the local Redis knows neither the cluster nor the client.
LOCAL         Keyless commands sent unchanged to the local datastore for now
              (``_LOCAL``); the cluster later spreads DBSIZE/KEYS/SCAN/FLUSH*.
              LASTSAVE and LOLWUT are read-only and harmless; SCRIPT LOAD/
              EXISTS/FLUSH/KILL only touch the script cache.
UNSUPPORTED   Everything else (``_UNSUPPORTED`` gives the reason per family):
              blocking, pub/sub, transactions, replication and persistence
              admin, cross-database moves, ACL/modules/functions, debugging.
============  ==============================================================

Subcommands have their own ``Command`` with their own route (``resolve``):
``memory|usage`` is KEY while ``memory|stats`` is UNSUPPORTED, ``*|help``
of a KEY container is LOCAL, ``script|debug`` is UNSUPPORTED (it would change
the state of the datastore connection that all clients share).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from dynomite.commands.redis_commands import COMMANDS as _REDIS_COMMANDS

KEY, MULTI_KEY, NODE, LOCAL, UNSUPPORTED = "key", "multi_key", "node", "local", "unsupported"

_DATA_GROUPS = frozenset(
    "string hash list set sorted-set generic bitmap hyperloglog geo stream".split()
)

#: Answered by the node itself.
_NODE = frozenset(
    "ping echo quit select auth hello client command info config reset "
    "dyno_config:conn_consistency".split()
)

#: Keyless, passed through to the local datastore unchanged (for now).
_LOCAL = frozenset(
    "time dbsize flushdb flushall keys scan randomkey script lastsave lolwut".split()
)

#: Key specs that can yield several keys.
_MULTI_KEY = frozenset(
    "mget mset msetnx del unlink exists touch rename renamenx copy smove lmove "
    "rpoplpush sinter sunion sdiff sinterstore sunionstore sdiffstore sintercard "
    "zunion zinter zdiff zunionstore zinterstore zdiffstore zintercard zrangestore "
    "lcs pfcount pfmerge bitop sort sort_ro georadius georadiusbymember "
    "geosearchstore lmpop zmpop eval evalsha eval_ro evalsha_ro fcall fcall_ro".split()
)

#: Multi-key commands the cluster splits by owner: args per key.
_SPLIT = {"mget": 1, "mset": 2, "del": 1, "unlink": 1, "exists": 1, "touch": 1}

#: Containers outside the data groups that are served for one subcommand.
_KEY_CONTAINERS = frozenset({"memory"})

#: Never served, with the reason per family. Every UNSUPPORTED command of
#: Redis 7.0 is listed (a test checks), so each exclusion is deliberate.
_UNSUPPORTED = {
    "blocking (holds a datastore connection; may span keys)":
        "blpop brpop blmove brpoplpush blmpop bzpopmin bzpopmax bzmpop wait xread xreadgroup",
    "pub/sub (no cluster-wide bus yet)":
        "subscribe unsubscribe psubscribe punsubscribe publish pubsub ssubscribe "
        "sunsubscribe spublish",
    "transactions (keys may live on several owners)": "multi exec discard watch unwatch",
    "cluster mode (the node is the cluster)": "cluster readonly readwrite asking",
    "replication and persistence admin (per-node operations)":
        "slaveof replicaof sync psync replconf role save bgsave bgrewriteaof shutdown "
        "failover restore-asking",
    "keys leaving the keyspace (other db or server; only db 0 is replicated)":
        "move swapdb migrate",
    "administration and debugging": "monitor debug acl module function latency slowlog "
                                    "pfdebug pfselftest",
}
_UNSUPPORTED_NAMES = frozenset(n for names in _UNSUPPORTED.values() for n in names.split())

#: The Dynomite pseudo-command: not in Redis, described in Redis' terms.
_PSEUDO = {
    "dyno_config:conn_consistency": {
        "name": "dyno_config:conn_consistency", "arity": 2,
        "flags": ["loading", "stale", "fast"], "first_key": 0, "last_key": 0,
        "step": 0, "acl_categories": ["@fast", "@connection"],
        "group": "connection", "since": "0.1.0", "complexity": "O(1)",
        "summary": "Set the read and write consistency level of this connection "
                   "(Dynomite)",
    },
}


class KeySpec(NamedTuple):
    """One Redis 7 key spec, flattened for ``keys()``.

    ``begin`` is "index" (``start`` is the position), "keyword" (``keyword``
    lower case, searched from ``start`` = startfrom, negative counting from
    the end) or "unknown"; ``find`` is "range" (``lastkey``, ``keystep``,
    ``limit``), "keynum" (``keynumidx``, ``firstkey``, ``keystep``) or
    "unknown".
    """

    begin: str
    start: int
    keyword: bytes
    find: str
    lastkey: int
    keystep: int
    limit: int
    keynumidx: int
    firstkey: int


@dataclass(frozen=True)
class Command:
    """What the node knows about one command (or subcommand, "parent|sub").

    A container (CLIENT, OBJECT, MEMORY, ...) has ``subcommands``, each with
    its own arity, flags, key specs and route; see ``resolve``.
    """

    name: str
    arity: int
    flags: frozenset[str]
    group: str
    route: str
    write: bool
    split: bool
    key_step: int          # args per key for split commands, else 0
    key_specs: Tuple[KeySpec, ...]   # NOT_KEY specs (pub/sub channels) left out
    #: subcommand name (lower-case bytes, no parent) -> Command; empty if none
    subcommands: Mapping[bytes, "Command"] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False)


def _key_spec(spec: Dict[str, Any]) -> KeySpec:
    begin, find = spec["begin_search"], spec["find_keys"]
    bs, fk = begin["spec"], find["spec"]
    return KeySpec(
        begin["type"], bs.get("index", bs.get("startfrom", 0)),
        bs.get("keyword", "").lower().encode(), find["type"],
        fk.get("lastkey", 0), fk.get("keystep", 1), fk.get("limit", 0),
        fk.get("keynumidx", 0), fk.get("firstkey", 0))


def _specs(entry: Dict[str, Any]) -> Tuple[KeySpec, ...]:
    return tuple(_key_spec(s) for s in entry.get("key_specs", ())
                 if "not_key" not in s["flags"])


def _one_key(entry: Dict[str, Any]) -> bool:
    """True if the command always touches exactly one key, without blocking."""
    if {"blocking", "admin"} & set(entry["flags"]):
        return False
    specs = _specs(entry)
    return (len(specs) == 1 and specs[0].begin == "index"
            and specs[0].find == "range" and specs[0].lastkey == 0)


def _route(name: str, entry: Dict[str, Any]) -> str:
    if name in _NODE:
        return NODE
    if name in _LOCAL:
        return LOCAL
    if name in _MULTI_KEY:
        return MULTI_KEY
    if name in _UNSUPPORTED_NAMES:
        return UNSUPPORTED
    subs = entry.get("subcommands")
    if subs and (name in _KEY_CONTAINERS or entry["group"] in _DATA_GROUPS):
        return KEY if any(_one_key(s) for s in subs.values()) else UNSUPPORTED
    if entry["group"] in _DATA_GROUPS and _one_key(entry):
        return KEY
    return UNSUPPORTED


def _sub_route(parent_route: str, entry: Dict[str, Any]) -> str:
    if entry["name"] == "script|debug":
        return UNSUPPORTED
    if parent_route != KEY:
        return parent_route
    if _one_key(entry):
        return KEY
    return LOCAL if entry["name"].endswith("|help") else UNSUPPORTED


def _command(entry: Dict[str, Any], route: str) -> Command:
    name = entry["name"]
    flags = frozenset(entry["flags"])
    subs = {
        sub_name.split("|", 1)[1].encode(): _command(sub, _sub_route(route, sub))
        for sub_name, sub in sorted(entry.get("subcommands", {}).items())
    }
    return Command(
        name=name, arity=entry["arity"], flags=flags, group=entry["group"],
        route=route, write="write" in flags, split=name in _SPLIT,
        key_step=_SPLIT.get(name, 0), key_specs=_specs(entry),
        subcommands=MappingProxyType(subs))


_ENTRIES: Dict[str, Dict[str, Any]] = dict(_REDIS_COMMANDS)
_ENTRIES.update(_PSEUDO)
_TABLE: Dict[bytes, Command] = {
    name.encode(): _command(entry, _route(name, entry)) for name, entry in sorted(_ENTRIES.items())
}
_SERVED = [c for c in _TABLE.values() if c.route != UNSUPPORTED]


def lookup(name: bytes) -> Optional[Command]:
    """The command called ``name`` (any case), or None if Redis 7.0 has none."""
    return _TABLE.get(name.lower())


def resolve(cmd: Command, args: Sequence[bytes]) -> Optional[Command]:
    """The subcommand ``args`` invoke if ``cmd`` is a container, else ``cmd``.

    None for an unknown subcommand; the container itself when no subcommand
    is given (its arity check fails then). Containers mix routes (MEMORY
    USAGE is KEY, MEMORY STATS is not served), so route and check arity on
    the result.
    """
    if not cmd.subcommands or len(args) < 2:
        return cmd
    return cmd.subcommands.get(args[1].lower())


_KEY_INDEX: Dict[str, int] = {}


def fixed_key_index(cmd: Command) -> int:
    """The position of a single-key command's key when it is fixed (almost always), else 0."""
    index = _KEY_INDEX.get(cmd.name)
    if index is None:
        specs = cmd.key_specs
        spec = specs[0] if specs else None
        fixed = spec is not None and spec.begin == "index" and spec.find == "range" and not cmd.subcommands
        index = _KEY_INDEX[cmd.name] = spec.start if fixed and spec.start > 0 else 0
    return index


def arity_ok(cmd: Command, nargs: int) -> bool:
    """Redis' arity rule; ``nargs`` counts the command name."""
    return nargs == cmd.arity if cmd.arity >= 0 else nargs >= -cmd.arity


def served() -> List[Command]:
    """Top-level commands the node serves (route not UNSUPPORTED), by name."""
    return list(_SERVED)


def command_count() -> int:
    """COMMAND COUNT: the number of served top-level commands."""
    return len(_SERVED)


# -- key extraction -------------------------------------------------------------

_LL = re.compile(rb"-?[1-9][0-9]{0,18}|0")   # Redis string2ll's accepted syntax


def _numkeys(arg: bytes) -> int:
    """Parse numkeys like Redis does (strict); -1 when invalid."""
    if not _LL.fullmatch(arg):
        return -1
    value = int(arg)
    return value if value < 2 ** 63 else -1


def _keyword(spec: KeySpec, args: Sequence[bytes]) -> int:
    """Index after the keyword, or 0 when absent (Redis 7.0's scan bounds)."""
    argc = len(args)
    if spec.start > 0:
        positions = range(spec.start, argc - 1)
    else:
        positions = range(argc + spec.start, 0, -1)
    for i in positions:
        if i >= argc or i < 1:
            break
        if args[i].lower() == spec.keyword:
            return i + 1
    return 0


def _sort_keys(args: Sequence[bytes]) -> List[bytes]:
    """SORT: its STORE spec is 'unknown' (STORE may be anywhere); Redis' rule."""
    if len(args) < 2:
        return []
    store = 0
    i = 2
    while i < len(args):
        option = args[i].lower()
        if option in _SORT_SKIP:
            i += _SORT_SKIP[option]
        elif option == b"store" and i + 1 < len(args):
            store = i + 1    # the last STORE wins, as in SORT itself
        i += 1
    return [args[1], args[store]] if store else [args[1]]


_SORT_SKIP = {b"limit": 2, b"get": 1, b"by": 1}
_KEY_PROCS: Dict[str, Callable[[Sequence[bytes]], List[bytes]]] = {"sort": _sort_keys}


def keys(cmd: Command, args: Sequence[bytes]) -> List[bytes]:
    """The keys in ``args`` (``args[0]`` is the command name), in spec order.

    Follows Redis 7's getKeysUsingKeySpecs: an out-of-range spec or a bad
    numkeys gives [] (the datastore will answer the error); numkeys 0 gives
    [] too, as COMMAND GETKEYS does. A container uses its subcommand's specs.
    """
    if cmd.subcommands:
        sub = cmd.subcommands.get(args[1].lower()) if len(args) > 1 else None
        return keys(sub, args) if sub is not None else []
    proc = _KEY_PROCS.get(cmd.name)
    if proc is not None:
        return proc(args)
    argc = len(args)
    found: List[bytes] = []
    for spec in cmd.key_specs:
        if spec.begin == "index":
            first = spec.start
        elif spec.begin == "keyword":
            first = _keyword(spec, args)
            if not first:
                continue
        else:
            continue   # 'unknown' specs are covered by _KEY_PROCS
        if spec.find == "range":
            if spec.lastkey >= 0:
                last = first + spec.lastkey
            elif not spec.limit:
                last = argc + spec.lastkey
            else:
                last = first + ((argc - first) // spec.limit + spec.lastkey)
        elif spec.find == "keynum":
            if spec.keynumidx >= argc - first:
                return []
            numkeys = _numkeys(args[first + spec.keynumidx])
            if numkeys <= 0:
                return []
            first += spec.firstkey
            last = first + numkeys - 1
        else:
            continue
        if last >= argc or last < first or first >= argc:
            return []
        found.extend(args[first:last + 1:spec.keystep])
    return found


# -- COMMAND replies ------------------------------------------------------------

def _bulk(value: Any) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _int(value: int) -> bytes:
    return b":%d\r\n" % value


def _status(value: str) -> bytes:
    return b"+%s\r\n" % value.encode()


def _agg(kind: bytes, parts: List[bytes], resp: int) -> bytes:
    """Array (*), set (~) or map (%, parts flattened); RESP2 has arrays only."""
    if resp < 3:
        return b"*%d\r\n" % len(parts) + b"".join(parts)
    count = len(parts) // 2 if kind == b"%" else len(parts)
    return b"%s%d\r\n" % (kind, count) + b"".join(parts)


def _null(resp: int) -> bytes:
    return b"_\r\n" if resp >= 3 else b"$-1\r\n"


_SPEC_FIELDS = {
    "index": ("index",), "keyword": ("keyword", "startfrom"),
    "range": ("lastkey", "keystep", "limit"),
    "keynum": ("keynumidx", "firstkey", "keystep"), "unknown": (),
}


def _key_spec_reply(spec: Dict[str, Any], resp: int) -> bytes:
    parts = []
    if "notes" in spec:
        parts += [_bulk("notes"), _bulk(spec["notes"])]
    parts += [_bulk("flags"), _agg(b"~", [_status(f) for f in spec["flags"]], resp)]
    for part in ("begin_search", "find_keys"):
        kind, values = spec[part]["type"], spec[part]["spec"]
        inner: List[bytes] = []
        for name in _SPEC_FIELDS[kind]:
            value = values[name]
            inner += [_bulk(name), _bulk(value) if isinstance(value, str) else _int(value)]
        parts += [_bulk(part), _agg(b"%", [_bulk("type"), _bulk(kind), _bulk("spec"),
                                         _agg(b"%", inner, resp)], resp)]
    return _agg(b"%", parts, resp)


def _served_subs(entry: Dict[str, Any]) -> List[Dict[str, Any]]:
    cmd = _TABLE[entry["name"].encode()]
    return [sub for name, sub in sorted(entry["subcommands"].items())
            if cmd.subcommands[name.split("|", 1)[1].encode()].route != UNSUPPORTED]


def _info_reply(entry: Dict[str, Any], resp: int) -> bytes:
    """One COMMAND INFO entry, field for field as Redis 7.0 writes it."""
    if "subcommands" in entry:
        subs = _agg(b"*", [_info_reply(s, resp) for s in _served_subs(entry)], resp)
    else:
        subs = _agg(b"~", [], resp)
    return b"".join([
        b"*10\r\n", _bulk(entry["name"]), _int(entry["arity"]),
        _agg(b"~", [_status(f) for f in entry["flags"]], resp),
        _int(entry["first_key"]), _int(entry["last_key"]), _int(entry["step"]),
        _agg(b"~", [_status(c) for c in entry["acl_categories"]], resp),
        _agg(b"~", [_bulk(t) for t in entry.get("tips", ())], resp),
        _agg(b"~", [_key_spec_reply(s, resp) for s in entry.get("key_specs", ())], resp),
        subs,
    ])


def _docs_reply(entry: Dict[str, Any], resp: int) -> bytes:
    """One COMMAND DOCS map, in Redis 7.0's field order, without arguments."""
    parts = []
    for name in ("summary", "since", "group", "complexity"):
        if name in entry:
            parts += [_bulk(name), _bulk(entry[name])]
    if "doc_flags" in entry:
        parts += [_bulk("doc_flags"), _agg(b"~", [_status(f) for f in entry["doc_flags"]], resp)]
    for name in ("deprecated_since", "replaced_by"):
        if name in entry:
            parts += [_bulk(name), _bulk(entry[name])]
    if "history" in entry:
        items = [_agg(b"*", [_bulk(v), _bulk(d)], resp) for v, d in entry["history"]]
        parts += [_bulk("history"), _agg(b"~", items, resp)]
    if "subcommands" in entry:
        subs: List[bytes] = []
        for sub in _served_subs(entry):
            subs += [_bulk(sub["name"]), _docs_reply(sub, resp)]
        parts += [_bulk("subcommands"), _agg(b"%", subs, resp)]
    return _agg(b"%", parts, resp)


def _find(name: bytes) -> Optional[Dict[str, Any]]:
    """The table entry for a served "cmd" or "cmd|sub" name, like Redis."""
    parts = name.lower().split(b"|")
    cmd = _TABLE.get(parts[0]) if len(parts) <= 2 else None
    if cmd is not None and len(parts) == 2:
        cmd = cmd.subcommands.get(parts[1])
    if cmd is None or cmd.route == UNSUPPORTED:
        return None
    entry = _ENTRIES[parts[0].decode()]
    return entry["subcommands"][cmd.name] if len(parts) == 2 else entry


_REPLIES: Dict[tuple, bytes] = {}


def _reply(entry: Dict[str, Any], resp: int, docs: bool) -> bytes:
    """Encoded entry, cached per (name, protocol): the table never changes."""
    key = (entry["name"], resp, docs)
    data = _REPLIES.get(key)
    if data is None:
        data = _REPLIES[key] = (_docs_reply if docs else _info_reply)(entry, resp)
    return data


def command_info_reply(names: Optional[Sequence[bytes]], resp: int) -> bytes:
    """COMMAND / COMMAND INFO [names]: an array of entries, null per unknown.

    Unsupported commands count as unknown. ``None`` (or no names) means all
    served commands, sorted by name (Redis uses hash-table order).
    """
    if not names:
        names = [c.name.encode() for c in _SERVED]
    parts = []
    for name in names:
        entry = _find(bytes(name))
        parts.append(_null(resp) if entry is None else _reply(entry, resp, False))
    return b"*%d\r\n" % len(parts) + b"".join(parts)


def command_docs_reply(names: Optional[Sequence[bytes]], resp: int) -> bytes:
    """COMMAND DOCS [names]: name -> docs map (flat array in RESP2).

    Unknown and unsupported names are left out, as Redis leaves out unknown
    ones; ``None`` (or no names) means all served commands.
    """
    if not names:
        names = [c.name.encode() for c in _SERVED]
    parts: List[bytes] = []
    for name in names:
        entry = _find(bytes(name))
        if entry is not None:
            parts += [_bulk(entry["name"]), _reply(entry, resp, True)]
    return _agg(b"%", parts, resp)
