# -*- test-case-name: tests.unit.test_commands -*-
"""COMMAND, COMMAND INFO and COMMAND DOCS: the table rendered as Redis 7.0 would.

A `CommandDocs` renders the commands a table serves, field for field and
byte for byte as Redis 7.0 writes them (RESP2 or RESP3), from the generated
Redis facts behind it; unsupported commands and subcommands are hidden, as
if Redis did not have them.  Encoded entries are cached: the table never
changes.  `dynomite.commands.table` builds the one instance the node uses
and exports its methods as ``command_info_reply`` and
``command_docs_reply``; this module does not import the table, so the
table can.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from dynomite.commands.table import Command

__all__ = ["CommandDocs"]


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


class CommandDocs:
    """
    The COMMAND INFO and COMMAND DOCS replies for the served part of a table.

    ``table`` maps lower-case names to `Command` objects, ``entries`` maps names
    to the Redis facts they were built from, ``served`` lists the served
    top-level commands in the order "all commands" replies use, and
    ``is_served`` says whether a command or subcommand is served.
    """

    def __init__(self, table: Mapping[bytes, Command], entries: Mapping[str, Dict[str, Any]],
                 served: Sequence[Command], is_served: Callable[[Command], bool]) -> None:
        self._table = table
        self._entries = entries
        self._served = served
        self._is_served = is_served
        self._replies: Dict[tuple, bytes] = {}

    def _served_subs(self, entry: Dict[str, Any]) -> List[Dict[str, Any]]:
        cmd = self._table[entry["name"].encode()]
        return [sub for name, sub in sorted(entry["subcommands"].items())
                if self._is_served(cmd.subcommands[name.split("|", 1)[1].encode()])]

    def _info_reply(self, entry: Dict[str, Any], resp: int) -> bytes:
        """One COMMAND INFO entry, field for field as Redis 7.0 writes it."""
        if "subcommands" in entry:
            subs = _agg(b"*", [self._info_reply(s, resp) for s in self._served_subs(entry)], resp)
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

    def _docs_reply(self, entry: Dict[str, Any], resp: int) -> bytes:
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
            for sub in self._served_subs(entry):
                subs += [_bulk(sub["name"]), self._docs_reply(sub, resp)]
            parts += [_bulk("subcommands"), _agg(b"%", subs, resp)]
        return _agg(b"%", parts, resp)

    def _find(self, name: bytes) -> Optional[Dict[str, Any]]:
        """The table entry for a served "cmd" or "cmd|sub" name, like Redis."""
        parts = name.lower().split(b"|")
        cmd = self._table.get(parts[0]) if len(parts) <= 2 else None
        if cmd is not None and len(parts) == 2:
            cmd = cmd.subcommands.get(parts[1])
        if cmd is None or not self._is_served(cmd):
            return None
        entry = self._entries[parts[0].decode()]
        return entry["subcommands"][cmd.name] if len(parts) == 2 else entry

    def _reply(self, entry: Dict[str, Any], resp: int, docs: bool) -> bytes:
        """Encoded entry, cached per (name, protocol): the table never changes."""
        key = (entry["name"], resp, docs)
        data = self._replies.get(key)
        if data is None:
            data = self._replies[key] = (self._docs_reply if docs else self._info_reply)(entry, resp)
        return data

    def info_reply(self, names: Optional[Sequence[bytes]], resp: int) -> bytes:
        """COMMAND / COMMAND INFO [names]: an array of entries, null per unknown.

        Unsupported commands count as unknown. ``None`` (or no names) means all
        served commands, sorted by name (Redis uses hash-table order).
        """
        if not names:
            names = [c.name.encode() for c in self._served]
        parts = []
        for name in names:
            entry = self._find(bytes(name))
            parts.append(_null(resp) if entry is None else self._reply(entry, resp, False))
        return b"*%d\r\n" % len(parts) + b"".join(parts)

    def docs_reply(self, names: Optional[Sequence[bytes]], resp: int) -> bytes:
        """COMMAND DOCS [names]: name -> docs map (flat array in RESP2).

        Unknown and unsupported names are left out, as Redis leaves out unknown
        ones; ``None`` (or no names) means all served commands.
        """
        if not names:
            names = [c.name.encode() for c in self._served]
        parts: List[bytes] = []
        for name in names:
            entry = self._find(bytes(name))
            if entry is not None:
                parts += [_bulk(entry["name"]), self._reply(entry, resp, True)]
        return _agg(b"%", parts, resp)
