# -*- test-case-name: tests.unit.test_config -*-
"""
The value parsers of the key table (:mod:`dynomite.config.keys`) that more
than one group of keys uses: numbers, durations, flags, names, addresses,
tokens, levels and secrets; and the shape of one row of the table
(:class:`Key`, :data:`REQUIRED`, :data:`CLASS_DEFAULT`).

Each parser takes the YAML value and returns the typed one, or raises
:class:`~dynomite.config.yamlio.Invalid` with a reason. YAML durations are
milliseconds, as in Dynomite; the parsers return seconds (floats).
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Tuple

from dynomite.config.values import Address, make_address, split_fields
from dynomite.config.vocabulary import CONFLICT_RULES, CONSISTENCY_LEVELS, FSYNC_POLICIES, MAX_TOKEN, SECURE_SERVER_OPTIONS
from dynomite.config.yamlio import Invalid, show

# -- value parsers: each takes the YAML value and returns the typed one ------


def _int(value: Any) -> int:
    """An integer; digit strings are accepted because Dynomite reads them."""
    if isinstance(value, bool):
        raise Invalid(f"expected an integer, got {show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        body = text[1:] if text[:1] == "-" else text
        if body.isdigit() and body.isascii():
            return int(text)
    raise Invalid(f"expected an integer, got {show(value)}")


def _int_at_least(low: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        n = _int(value)
        if n < low:
            raise Invalid(f"must be at least {low}, got {n}")
        return n

    return parse


def _milliseconds(positive: bool) -> Callable[[Any], float]:
    """A duration written in milliseconds, returned in seconds."""

    def parse(value: Any) -> float:
        ms = _int(value)
        if ms < 0 or (positive and ms == 0):
            need = "a positive" if positive else "a non-negative"
            raise Invalid(f"expected {need} number of milliseconds, got {ms}")
        return ms / 1000.0

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    hint = " (unquoted)" if isinstance(value, str) else ""
    raise Invalid(f"expected true or false{hint}, got {show(value)}")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a non-empty string, got {show(value)}")
    return value


def _name(value: Any) -> str:
    """A rack or datacenter name; it must fit in a ``dyn_seeds`` entry."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Invalid(f"expected a name, got {show(value)}")
    _check_name(value)
    return value


def _check_name(text: str) -> None:
    if not text:
        raise Invalid("must not be empty")
    if ":" in text or any(c.isspace() for c in text):
        raise Invalid(f"{text!r} must not contain ':' or spaces (seeds are ':'-separated)")


def _listener(value: Any) -> Address:
    """An address to listen on; port 0 asks the kernel for a free port."""
    return Address.parse(value, allow_zero_port=True)


def _optional_listener(value: Any) -> Optional[Address]:
    return None if value is None else _listener(value)


def _servers(value: Any) -> Address:
    """The one local datastore, ``["host:port:weight"]``; weight is ignored."""
    if not isinstance(value, list) or len(value) != 1:
        got = f"{len(value)} entries" if isinstance(value, list) else show(value)
        raise Invalid(f"expected a list with exactly one 'host:port:weight' entry, got {got}")
    fields = split_fields(value[0], (2, 3), "host:port:weight")
    if len(fields) == 3:
        weight = fields[2].strip()
        if not (weight.isdigit() and weight.isascii()):
            raise Invalid(f"weight {weight!r} is not a number")
    return make_address(fields[0], fields[1], allow_zero_port=False)


def _tokens(value: Any) -> Tuple[int, ...]:
    """
    ``0``, ``"123"`` or ``"1,2,3"``: unsigned 32-bit ring positions; or
    ``auto`` (``()``): a joining node chooses (`dynomite.scaleout.moves.auto_tokens`).
    """
    if value == "auto":
        return ()
    if isinstance(value, int) and not isinstance(value, bool):
        pieces = [str(value)]
    elif isinstance(value, str):
        pieces = [p.strip() for p in value.split(",")]
    else:
        raise Invalid(f"expected a token or tokens like '0' or '1,2,3', got {show(value)}")
    tokens: List[int] = []
    for piece in pieces:
        if not piece:
            raise Invalid(f"empty token in {value!r}")
        digits = piece[1:] if piece[:1] == "-" else piece
        if not (digits.isdigit() and digits.isascii()):
            raise Invalid(f"token {piece!r} is not an integer")
        token = int(piece)
        if not 0 <= token <= MAX_TOKEN:
            raise Invalid(f"token {token} is out of range 0..{MAX_TOKEN}")
        if token in tokens:
            raise Invalid(f"token {token} is listed twice")
        tokens.append(token)
    return tuple(tokens)


def _hash_tag(value: Any) -> Optional[bytes]:
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        # ``hash_tag: {}`` unquoted is an empty YAML mapping.
        raise Invalid('expected 2 characters; quote them, e.g. hash_tag: "{}"')
    if not isinstance(value, str) or len(value) != 2 or not value.isascii():
        raise Invalid(f"expected exactly 2 ASCII characters, e.g. '{{}}', got {show(value)}")
    return value.encode("ascii")


def _consistency(value: Any) -> str:
    level = value.strip().upper() if isinstance(value, str) else None
    if level not in CONSISTENCY_LEVELS:
        raise Invalid(f"expected one of {', '.join(CONSISTENCY_LEVELS)}, got {show(value)}")
    return level


def _secure_server_option(value: Any) -> str:
    option = value.strip().lower() if isinstance(value, str) else None
    if option not in SECURE_SERVER_OPTIONS:
        raise Invalid(f"expected one of {', '.join(SECURE_SERVER_OPTIONS)}, got {show(value)}")
    return option


def _hash(value: Any) -> str:
    """Placement always uses MurmurHash3; ``murmur`` is Dynomite's default name."""
    if isinstance(value, str) and value.strip().lower() in ("murmur3", "murmur"):
        return "murmur3"
    raise Invalid(f"only murmur3 placement is supported (murmur is read as murmur3), got {show(value)}")


def _data_store(value: Any) -> int:
    try:
        kind = _int(value)
    except Invalid:
        kind = None
    if kind == 0:
        return 0
    if kind == 1:
        raise Invalid("memcached is not supported (use 0 for redis)")
    raise Invalid(f"expected 0 (redis), got {show(value)}")


def _secret(without: str) -> Callable[[Any], str]:
    """
    A password-like value: a quoted, non-empty string.  Unquoted YAML
    numbers are refused, since 0123 would silently become 83.  ``without``
    says what removing the key does.
    """

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a quoted string, got {show(value)}")
        if not value:
            raise Invalid(f"must not be empty; remove the key to {without}")
        return value

    return parse


def _log_level(value: Any) -> int:
    level = _int(value)
    if not 0 <= level <= 11:
        raise Invalid(f"expected Dynomite's verbosity 0..11 (5 is info), got {level}")
    return level


def _conflict_rule(value: Any) -> str:
    rule = value.strip().lower() if isinstance(value, str) else None
    if rule not in CONFLICT_RULES:
        raise Invalid(f"expected one of {', '.join(CONFLICT_RULES)}, got {show(value)}")
    return rule


def _hints_fsync(value: Any) -> str:
    policy = value.strip().lower() if isinstance(value, str) else None
    if policy not in FSYNC_POLICIES:
        raise Invalid(f"expected one of {', '.join(FSYNC_POLICIES)}, got {show(value)}")
    return policy


def _mbuf_size(value: Any) -> int:
    n = _int(value)
    if not 512 <= n <= 512000 or n % 16:
        raise Invalid(f"must be 512..512000 and a multiple of 16, got {n}")
    return n


# -- a row of the table ------------------------------------------------------


#: The default of a key that must be given.
REQUIRED = object()
#: The default of a key whose default is its ``NodeConfig`` field's, so that
#: the dataclass stays the one place defaults are written.
CLASS_DEFAULT = object()


class Key(NamedTuple):
    """One row of :data:`KEYS`."""

    parse: Callable[[Any], Any]
    default: Any = None
    field: Optional[str] = None  # NodeConfig field; None: checked, not kept


def _kept(parse: Callable[[Any], Any], name: str, default: Any = CLASS_DEFAULT) -> Key:
    """A key whose value lands in ``NodeConfig.<name>``, default from the class."""
    return Key(parse, default, name)

