# -*- test-case-name: tests.unit.test_commands -*-
"""The node's command table: how each Redis 7.0 command is served.

The facts (arity, flags, key specs, docs) come from Redis itself, through the
generated ``redis_commands.py`` (``tools/gen_command_table.py``); this module
adds the node's policy, i.e. the *route* of every command.  Two neighbours
work on its `Command` objects and are re-exported here, so callers need only
this module: `dynomite.commands.keys` finds a request's keys (on the hot
path), `dynomite.commands.introspection` answers ``COMMAND`` /
``COMMAND INFO`` / ``COMMAND DOCS`` with the bytes Redis 7.0 would send for
the commands the node serves.

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
NODE          Connection state, introspection and ACL the node owns (``_NODE``):
              the local Redis knows neither the cluster nor the client;
              and pub/sub, which the node routes itself between its
              clients and the other nodes (`dynomite.node.pubsub_bus`).
KEYSPACE      Keyless commands about the whole keyspace (``_KEYSPACE``),
              which `dynomite.node.keyspace` spreads over the cluster: SCAN,
              KEYS, DBSIZE and RANDOMKEY read the local rack (a rack holds a
              full copy), FLUSHDB/FLUSHALL and SCRIPT LOAD/EXISTS/FLUSH reach
              every node of every datacenter, and the rest (TIME, LASTSAVE,
              LOLWUT, SCRIPT KILL, ``*|help``) are answered by the local
              Redis; they are read-only and harmless, or only touch the
              script cache.
UNSUPPORTED   Everything else (``_UNSUPPORTED`` gives the reason per family):
              replication and persistence
              admin, cross-database moves, modules/functions, debugging.
============  ==============================================================

Subcommands have their own ``Command`` with their own route (``resolve``):
``memory|usage`` is KEY while ``memory|stats`` is UNSUPPORTED, ``*|help``
of a KEY container is KEYSPACE, ``script|debug`` is UNSUPPORTED (it would
change the state of the datastore connection that all clients share).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from dynomite.commands.introspection import CommandDocs
from dynomite.commands.keys import fixed_key_index, keys
from dynomite.commands.redis_commands import COMMANDS as _REDIS_COMMANDS

__all__ = [
    "KEY", "MULTI_KEY", "NODE", "KEYSPACE", "UNSUPPORTED", "KeySpec", "Command",
    "lookup", "resolve", "arity_ok", "every", "served", "command_count",
    "fixed_key_index", "keys", "command_info_reply", "command_docs_reply",
]

KEY, MULTI_KEY, NODE, KEYSPACE, UNSUPPORTED = "key", "multi_key", "node", "keyspace", "unsupported"

_DATA_GROUPS = frozenset(
    "string hash list set sorted-set generic bitmap hyperloglog geo stream".split()
)

#: Answered by the node itself.
_NODE = frozenset(
    "ping echo quit select auth hello client command info config reset acl "
    "dyno_config:conn_consistency multi exec discard watch unwatch "
    "blpop brpop blmove brpoplpush blmpop bzpopmin bzpopmax bzmpop xread xreadgroup wait "
    "subscribe unsubscribe psubscribe punsubscribe ssubscribe sunsubscribe publish spublish "
    "pubsub".split()
)

#: Keyless, about the whole keyspace: spread over the cluster by node.keyspace.
_KEYSPACE = frozenset(
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
    "cluster mode (the node is the cluster)": "cluster readonly readwrite asking",
    "replication and persistence admin (per-node operations)":
        "slaveof replicaof sync psync replconf role save bgsave bgrewriteaof shutdown "
        "failover restore-asking",
    "keys leaving the keyspace (other db or server; only db 0 is replicated)":
        "move swapdb migrate",
    "administration and debugging": "monitor debug module function latency slowlog "
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
    #: Redis's ACL categories, without the '@' ("read", "fast", ...)
    categories: frozenset[str] = frozenset()
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
    if name in _KEYSPACE:
        return KEYSPACE
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
    return KEYSPACE if entry["name"].endswith("|help") else UNSUPPORTED


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
        categories=frozenset(c.lstrip("@") for c in entry.get("acl_categories", ())),
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


def command_of(args: Sequence[bytes]) -> Optional[Command]:
    """
    The command ``args`` run, its subcommand when it names one (the
    container when it names none Redis knows), or None if Redis 7.0 has no
    command of that name.
    """
    cmd = _TABLE.get(args[0].lower()) if args else None
    if cmd is None or not cmd.subcommands:
        return cmd
    return resolve(cmd, args) or cmd


def arity_ok(cmd: Command, nargs: int) -> bool:
    """Redis' arity rule; ``nargs`` counts the command name."""
    return nargs == cmd.arity if cmd.arity >= 0 else nargs >= -cmd.arity


def every() -> List[Command]:
    """Every command Redis 7.0 has, served or not, each container followed by its subcommands."""
    out = []
    for cmd in _TABLE.values():
        out.append(cmd)
        out.extend(cmd.subcommands.values())
    return out


def served() -> List[Command]:
    """Top-level commands the node serves (route not UNSUPPORTED), by name."""
    return list(_SERVED)


def command_count() -> int:
    """COMMAND COUNT: the number of served top-level commands."""
    return len(_SERVED)


_DOCS = CommandDocs(_TABLE, _ENTRIES, _SERVED, lambda cmd: cmd.route != UNSUPPORTED)
command_info_reply = _DOCS.info_reply
command_docs_reply = _DOCS.docs_reply
