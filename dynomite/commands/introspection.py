# -*- test-case-name: tests.unit.test_commands -*-
"""COMMAND, COMMAND INFO and COMMAND DOCS: the table rendered as Redis 7.0 would.

A `CommandDocs` renders the commands a table serves, field for field and
byte for byte as Redis 7.0 writes them (RESP2 or RESP3), from the generated
Redis facts behind it; unsupported commands and subcommands are hidden, as
if Redis did not have them.  Encoded entries are cached: the table never
changes.  The encoders are `dynomite.wire.resp`'s, the ones every other
reply of the node uses.  `dynomite.commands.table` builds the one instance
the node uses and exports its methods as ``command_info_reply`` and
``command_docs_reply``; this module does not import the table, so the table
can import it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from dynomite.wire.resp import array, bulk, integer, map_, null, set_, simple

if TYPE_CHECKING:
    from dynomite.commands.table import Command

__all__ = ["CommandDocs"]


_SPEC_FIELDS = {
    "index": ("index",), "keyword": ("keyword", "startfrom"),
    "range": ("lastkey", "keystep", "limit"),
    "keynum": ("keynumidx", "firstkey", "keystep"), "unknown": (),
}


Pairs = List[Tuple[bytes, bytes]]


def _key_spec_reply(spec: Dict[str, Any], resp: int) -> bytes:
    fields: Pairs = []
    if "notes" in spec:
        fields.append((bulk("notes"), bulk(spec["notes"])))
    fields.append((bulk("flags"), set_([simple(f) for f in spec["flags"]], resp)))
    for part in ("begin_search", "find_keys"):
        kind, values = spec[part]["type"], spec[part]["spec"]
        inner: Pairs = []
        for name in _SPEC_FIELDS[kind]:
            value = values[name]
            inner.append((bulk(name), bulk(value) if isinstance(value, str) else integer(value)))
        fields.append((bulk(part), map_([(bulk("type"), bulk(kind)),
                                         (bulk("spec"), map_(inner, resp))], resp)))
    return map_(fields, resp)


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
            subs = array([self._info_reply(s, resp) for s in self._served_subs(entry)])
        else:
            subs = set_([], resp)
        return array([
            bulk(entry["name"]), integer(entry["arity"]),
            set_([simple(f) for f in entry["flags"]], resp),
            integer(entry["first_key"]), integer(entry["last_key"]), integer(entry["step"]),
            set_([simple(c) for c in entry["acl_categories"]], resp),
            set_([bulk(t) for t in entry.get("tips", ())], resp),
            set_([_key_spec_reply(s, resp) for s in entry.get("key_specs", ())], resp),
            subs,
        ])

    def _docs_reply(self, entry: Dict[str, Any], resp: int) -> bytes:
        """One COMMAND DOCS map, in Redis 7.0's field order, without arguments."""
        fields: Pairs = []
        for name in ("summary", "since", "group", "complexity"):
            if name in entry:
                fields.append((bulk(name), bulk(entry[name])))
        if "doc_flags" in entry:
            fields.append((bulk("doc_flags"), set_([simple(f) for f in entry["doc_flags"]], resp)))
        for name in ("deprecated_since", "replaced_by"):
            if name in entry:
                fields.append((bulk(name), bulk(entry[name])))
        if "history" in entry:
            items = [array([bulk(v), bulk(d)]) for v, d in entry["history"]]
            fields.append((bulk("history"), set_(items, resp)))
        if "subcommands" in entry:
            subs = [(bulk(sub["name"]), self._docs_reply(sub, resp))
                    for sub in self._served_subs(entry)]
            fields.append((bulk("subcommands"), map_(subs, resp)))
        return map_(fields, resp)

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
            parts.append(null(resp) if entry is None else self._reply(entry, resp, False))
        return array(parts)

    def docs_reply(self, names: Optional[Sequence[bytes]], resp: int) -> bytes:
        """COMMAND DOCS [names]: name -> docs map (flat array in RESP2).

        Unknown and unsupported names are left out, as Redis leaves out unknown
        ones; ``None`` (or no names) means all served commands.
        """
        if not names:
            names = [c.name.encode() for c in self._served]
        pairs: Pairs = []
        for name in names:
            entry = self._find(bytes(name))
            if entry is not None:
                pairs.append((bulk(entry["name"]), self._reply(entry, resp, True)))
        return map_(pairs, resp)
