# -*- test-case-name: tests.unit.test_commands -*-
"""Where a request's keys are: key extraction on the hot path.

`fixed_key_index` gives, once per command, the position of a single-key
command's key when it never moves (almost always), so the node can route
``GET k`` without walking key specs.  `keys` follows Redis 7's
getKeysUsingKeySpecs for everything else (multi-key commands, keywords,
numkeys, SORT's STORE).  Both read the key specs of a
`dynomite.commands.table.Command` and nothing else, so this module does not
import the table at run time (`table` re-exports both functions).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Dict, List, Sequence

if TYPE_CHECKING:
    from dynomite.commands.table import Command, KeySpec

__all__ = ["fixed_key_index", "keys"]

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
