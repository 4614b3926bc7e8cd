"""
Node configuration: Dynomite-compatible YAML parsed once into frozen objects.

A node reads one YAML file whose single root key (conventionally
``dyn_o_mite``) maps Dynomite's documented keys, plus a few keys this project
adds, to values. :meth:`NodeConfig.from_yaml` turns that file into a
:class:`NodeConfig`; every module below receives that object, never a dict.

Validation happens here and only here, and the first problem found raises a
:class:`ConfigError` naming the file, the key and the reason on one line, so
a bad file stops the node at start instead of misbehaving later. Each key has
one small parser in the ``_KEYS`` table; the table also holds the default and
the :class:`NodeConfig` field the value lands in.

Units: YAML durations are milliseconds, as in Dynomite; :class:`NodeConfig`
holds seconds (floats), as Twisted expects.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

import yaml

__all__ = [
    "CONSISTENCY_LEVELS",
    "DYNOMITE_KEYS",
    "PROJECT_KEYS",
    "SECURE_SERVER_OPTIONS",
    "UNUSED_KEYS",
    "Address",
    "ConfigError",
    "NodeConfig",
    "Seed",
]

from dynomite.config.vocabulary import CONSISTENCY_LEVELS, FSYNC_POLICIES, MAX_TOKEN, SECURE_SERVER_OPTIONS

#: Every key Dynomite documents (src/dyn_conf.c ``conf_commands``): 42 keys.
DYNOMITE_KEYS = frozenset(
    {
        "listen", "hash", "hash_tag", "distribution", "timeout", "backlog",
        "client_connections", "data_store", "preconnect", "auto_eject_hosts",
        "server_connections", "server_retry_timeout", "server_failure_limit",
        "servers", "dyn_read_timeout", "dyn_write_timeout", "dyn_listen",
        "dyn_seed_provider", "dyn_seeds", "dyn_port", "dyn_connections",
        "rack", "tokens", "gos_interval", "secure_server_option",
        "pem_key_file", "recon_key_file", "recon_iv_file", "datacenter", "env",
        "conn_msg_rate", "read_consistency", "write_consistency",
        "stats_listen", "stats_interval", "enable_gossip", "mbuf_size",
        "max_msgs", "datastore_connections", "local_peer_connections",
        "remote_peer_connections", "read_repairs_enabled",
    }
)

#: Documented Dynomite keys this node accepts and type-checks but does not act
#: on yet. The service logs one warning for each one present in a file.
UNUSED_KEYS = frozenset(
    {
        "distribution", "client_connections", "preconnect",
        "server_connections", "dyn_read_timeout", "dyn_write_timeout",
        "dyn_port", "dyn_connections", "gos_interval", "pem_key_file",
        "recon_key_file", "recon_iv_file", "env", "conn_msg_rate",
        "stats_interval", "enable_gossip", "mbuf_size", "max_msgs",
        "read_repairs_enabled",
    }
)

#: Keys this project adds to Dynomite's set (documented in etc/dynomite.yml).
PROJECT_KEYS = frozenset(
    {
        "requirepass", "max_request_bytes", "client_max_outstanding_bytes",
        "peer_secret", "peer_heartbeat_interval", "peer_down_after", "admin_token", "log_level",
        "data_dir", "hints_fsync", "hint_window", "hints_max_bytes", "hint_replay_rate",
        "hint_segment_bytes", "resume_timeout",
    }
)


class ConfigError(Exception):
    """
    A configuration problem: which file, which key, and why.

    ``str(e)`` is ``"<source>: <key>: <reason>"`` on one line, fit to print
    as the node's last words. ``key`` is a top-level key of the pool, or
    ``"<file>"`` (the file could not be read or parsed) or ``"<root>"`` (the
    document is not a single pool mapping).
    """

    def __init__(self, source: str, key: str, reason: str):
        reason = " ".join(str(reason).splitlines())
        super().__init__(source, key, reason)
        self.source = source
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.reason}"


class _Invalid(ValueError):
    """A value is wrong; the caller knows which file and key it came from."""


@dataclass(frozen=True)
class Address:
    """A TCP endpoint. IPv6 hosts are stored without brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, allow_zero_port: bool = True) -> Address:
        """
        Parse ``"host:port"`` (``"[v6]:port"`` for IPv6).

        Raises ``ValueError`` with a reason fit for a user. Port 0 (let the
        kernel choose) makes sense only for listeners.
        """
        host, port = _split_fields(text, (2,), "host:port")
        return _make_address(host, port, allow_zero_port)


@dataclass(frozen=True)
class Seed:
    """A peer from ``dyn_seeds``: where it listens and what it owns."""

    address: Address
    rack: str
    datacenter: str
    tokens: Tuple[int, ...]


@dataclass(frozen=True)
class NodeConfig:
    """
    One node's validated configuration.

    Build it with :meth:`from_yaml` or :meth:`from_dict`, which check every
    value; constructing it directly skips validation and is meant for tests.
    Durations are in seconds.
    """

    source: str
    pool_name: str
    listen: Address
    dyn_listen: Optional[Address]
    stats_listen: Address
    datastore: Address
    tokens: Tuple[int, ...]
    datacenter: str = "localdc"
    rack: str = "localrack"
    dyn_seeds: Tuple[Seed, ...] = ()
    hash_tag: Optional[bytes] = None
    read_consistency: str = "DC_ONE"
    write_consistency: str = "DC_ONE"
    timeout: float = 5.0
    server_retry_timeout: float = 10.0
    server_failure_limit: int = 3
    auto_eject_hosts: bool = True
    datastore_connections: int = 2
    local_peer_connections: int = 1
    remote_peer_connections: int = 1
    secure_server_option: str = "none"
    backlog: int = 512
    requirepass: Optional[str] = field(default=None, repr=False)  # kept out of logs
    max_request_bytes: int = 64 * 1024 * 1024
    client_max_outstanding_bytes: int = 8 * 1024 * 1024
    peer_secret: Optional[str] = field(default=None, repr=False)  # kept out of logs
    admin_token: Optional[str] = field(default=None, repr=False)  # kept out of logs
    log_level: int = 5  # Dynomite's verbosity, 0-11 (its -v); 5 is info
    peer_heartbeat_interval: float = 1.0
    peer_down_after: float = 3.0
    data_dir: str = "data"
    hints_fsync: str = "everysec"
    hint_window: float = 3 * 3600.0
    hints_max_bytes: int = 1024 ** 3
    hint_replay_rate: int = 5000
    hint_segment_bytes: int = 64 * 1024 * 1024
    resume_timeout: float = 60.0
    unused_keys: Tuple[str, ...] = ()

    @classmethod
    def from_yaml(cls, path: str) -> NodeConfig:
        """
        Read and validate a Dynomite YAML file.

        A file that cannot be read or is not valid YAML raises
        ``ConfigError(path, "<file>", reason)``; a key given twice raises
        ``ConfigError(path, key, "duplicate key ...")`` (YAML would silently
        keep the last one).
        """
        source = os.fspath(path)
        data = _load_yaml(source)
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<dict>") -> NodeConfig:
        """Validate an already-loaded document (``{pool_name: {key: value}}``)."""
        pool_name, pool = _root(data, source)
        values: Dict[str, Any] = {}
        unused: List[str] = []
        for key, value in pool.items():
            spec = _KEYS.get(key) if isinstance(key, str) else None
            if spec is None:
                raise ConfigError(source, str(key), _unknown_key_reason(key))
            try:
                parsed = spec.parse(value)
            except _Invalid as e:
                raise ConfigError(source, key, str(e)) from None
            if spec.field is not None:
                values[spec.field] = parsed
            if key in UNUSED_KEYS:
                unused.append(key)
        for key, spec in _KEYS.items():
            if spec.field is None or spec.field in values:
                continue
            if spec.default is _REQUIRED:
                raise ConfigError(source, key, "required key is missing")
            values[spec.field] = spec.default
        _check_together(values, source)
        return cls(
            source=source,
            pool_name=pool_name,
            unused_keys=tuple(unused),
            **values,
        )


# -- reading the document ----------------------------------------------------


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        super().__init__(key, line)
        self.key = key
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise _DuplicateKey(str(key_node.value), key_node.start_mark.line + 1)
            seen.add(ident)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(path, "<file>", f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, "<file>", f"not UTF-8 text (byte {e.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise ConfigError(path, e.key, f"duplicate key (again at line {e.line})") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, "<file>", _yaml_reason(e)) from None


def _yaml_reason(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        what = e.problem or e.context or "syntax error"
        mark = e.problem_mark or e.context_mark
        if mark is not None:
            return f"invalid YAML: {what} (line {mark.line + 1}, column {mark.column + 1})"
        return f"invalid YAML: {what}"
    return f"invalid YAML: {e}"


def _root(data: Any, source: str) -> Tuple[str, Mapping]:
    """Check the document is ``{pool_name: {...}}`` and return both parts."""
    if data is None:
        raise ConfigError(source, "<root>", "empty document; expected one pool key such as 'dyn_o_mite'")
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, "<root>",
            f"expected a mapping with one pool key such as 'dyn_o_mite', got {_show(data)}",
        )
    if len(data) != 1:
        settings = [k for k in data if isinstance(k, str) and k in _KEYS]
        if settings:
            detail = f"settings such as {settings[0]!r} belong under the pool key"
        else:
            detail = ", ".join(repr(k) for k in list(data)[:5]) or "none"
        raise ConfigError(
            source, "<root>",
            f"expected exactly one pool key such as 'dyn_o_mite', got {len(data)}: {detail}",
        )
    ((name, pool),) = data.items()
    if not isinstance(name, str) or not name:
        raise ConfigError(source, "<root>", f"pool name must be a non-empty string, got {_show(name)}")
    if pool is None:
        pool = {}
    if not isinstance(pool, Mapping):
        raise ConfigError(source, name, f"expected a mapping of settings, got {_show(pool)}")
    return name, pool


def _unknown_key_reason(key: Any) -> str:
    if isinstance(key, str):
        close = difflib.get_close_matches(key, sorted(_KEYS), n=1)
        if close:
            return f"unknown key; did you mean {close[0]!r}?"
    return "unknown key"


def _show(value: Any) -> str:
    """Describe a YAML value in an error reason, briefly."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


# -- value parsers: each takes the YAML value and returns the typed one ------


def _int(value: Any) -> int:
    """An integer; digit strings are accepted because Dynomite reads them."""
    if isinstance(value, bool):
        raise _Invalid(f"expected an integer, got {_show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        body = text[1:] if text[:1] == "-" else text
        if body.isdigit() and body.isascii():
            return int(text)
    raise _Invalid(f"expected an integer, got {_show(value)}")


def _int_at_least(low: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        n = _int(value)
        if n < low:
            raise _Invalid(f"must be at least {low}, got {n}")
        return n

    return parse


def _milliseconds(positive: bool) -> Callable[[Any], float]:
    """A duration written in milliseconds, returned in seconds."""

    def parse(value: Any) -> float:
        ms = _int(value)
        if ms < 0 or (positive and ms == 0):
            need = "a positive" if positive else "a non-negative"
            raise _Invalid(f"expected {need} number of milliseconds, got {ms}")
        return ms / 1000.0

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    hint = " (unquoted)" if isinstance(value, str) else ""
    raise _Invalid(f"expected true or false{hint}, got {_show(value)}")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected a non-empty string, got {_show(value)}")
    return value


def _name(value: Any) -> str:
    """A rack or datacenter name; it must fit in a ``dyn_seeds`` entry."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Invalid(f"expected a name, got {_show(value)}")
    _check_name(value)
    return value


def _check_name(text: str) -> None:
    if not text:
        raise _Invalid("must not be empty")
    if ":" in text or any(c.isspace() for c in text):
        raise _Invalid(f"{text!r} must not contain ':' or spaces (seeds are ':'-separated)")


def _split_fields(text: Any, counts: Tuple[int, ...], form: str) -> List[str]:
    """
    Split ``host:a:b...`` into fields; the host may be ``[IPv6]``.

    Unbracketed IPv6 is refused rather than guessed at, since with optional
    fields (a server's weight) it would be ambiguous.
    """
    if not isinstance(text, str):
        raise _Invalid(f"expected {form}, got {_show(text)}")
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1:] if end > 0 else ""
        if end < 0 or not rest.startswith(":"):
            raise _Invalid(f"expected {form}, got {text!r}")
        host = text[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid(f"{host!r} in brackets is not an IPv6 address") from None
        fields = [host] + rest[1:].split(":")
    else:
        fields = text.split(":")
        if len(fields) > max(counts):
            raise _Invalid(
                f"expected {form}, got {text!r} (write IPv6 hosts in brackets, e.g. [::1])"
            )
    if len(fields) not in counts:
        raise _Invalid(f"expected {form}, got {text!r}")
    return fields


def _make_address(host: str, port_text: str, allow_zero_port: bool) -> Address:
    if not host or any(c.isspace() for c in host):
        raise _Invalid(f"bad host {host!r}")
    port_text = port_text.strip()
    if not (port_text.isdigit() and port_text.isascii()):
        raise _Invalid(f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_zero_port else 1
    if not low <= port <= 65535:
        raise _Invalid(f"port {port} is out of range {low}..65535")
    return Address(host, port)


def _listener(value: Any) -> Address:
    """An address to listen on; port 0 asks the kernel for a free port."""
    return Address.parse(value, allow_zero_port=True)


def _optional_listener(value: Any) -> Optional[Address]:
    return None if value is None else _listener(value)


def _servers(value: Any) -> Address:
    """The one local datastore, ``["host:port:weight"]``; weight is ignored."""
    if not isinstance(value, list) or len(value) != 1:
        got = f"{len(value)} entries" if isinstance(value, list) else _show(value)
        raise _Invalid(f"expected a list with exactly one 'host:port:weight' entry, got {got}")
    fields = _split_fields(value[0], (2, 3), "host:port:weight")
    if len(fields) == 3:
        weight = fields[2].strip()
        if not (weight.isdigit() and weight.isascii()):
            raise _Invalid(f"weight {weight!r} is not a number")
    return _make_address(fields[0], fields[1], allow_zero_port=False)


def _tokens(value: Any) -> Tuple[int, ...]:
    """``0``, ``"123"`` or ``"1,2,3"``: unsigned 32-bit ring positions."""
    if isinstance(value, int) and not isinstance(value, bool):
        pieces = [str(value)]
    elif isinstance(value, str):
        pieces = [p.strip() for p in value.split(",")]
    else:
        raise _Invalid(f"expected a token or tokens like '0' or '1,2,3', got {_show(value)}")
    tokens: List[int] = []
    for piece in pieces:
        if not piece:
            raise _Invalid(f"empty token in {value!r}")
        digits = piece[1:] if piece[:1] == "-" else piece
        if not (digits.isdigit() and digits.isascii()):
            raise _Invalid(f"token {piece!r} is not an integer")
        token = int(piece)
        if not 0 <= token <= MAX_TOKEN:
            raise _Invalid(f"token {token} is out of range 0..{MAX_TOKEN}")
        if token in tokens:
            raise _Invalid(f"token {token} is listed twice")
        tokens.append(token)
    return tuple(tokens)


def _seed(text: Any) -> Seed:
    host, port, rack, dc, tokens = _split_fields(text, (5,), "host:port:rack:dc:tokens")
    address = _make_address(host, port, allow_zero_port=False)
    _check_name(rack)
    _check_name(dc)
    return Seed(address=address, rack=rack, datacenter=dc, tokens=_tokens(tokens))


def _seeds(value: Any) -> Tuple[Seed, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of 'host:port:rack:dc:tokens', got {_show(value)}")
    seeds = []
    for i, entry in enumerate(value, 1):
        try:
            seeds.append(_seed(entry))
        except _Invalid as e:
            raise _Invalid(f"entry {i}: {e}") from None
    return tuple(seeds)


def _hash_tag(value: Any) -> Optional[bytes]:
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        # ``hash_tag: {}`` unquoted is an empty YAML mapping.
        raise _Invalid('expected 2 characters; quote them, e.g. hash_tag: "{}"')
    if not isinstance(value, str) or len(value) != 2 or not value.isascii():
        raise _Invalid(f"expected exactly 2 ASCII characters, e.g. '{{}}', got {_show(value)}")
    return value.encode("ascii")


def _consistency(value: Any) -> str:
    level = value.strip().upper() if isinstance(value, str) else None
    if level not in CONSISTENCY_LEVELS:
        raise _Invalid(f"expected one of {', '.join(CONSISTENCY_LEVELS)}, got {_show(value)}")
    return level


def _secure_server_option(value: Any) -> str:
    option = value.strip().lower() if isinstance(value, str) else None
    if option not in SECURE_SERVER_OPTIONS:
        raise _Invalid(f"expected one of {', '.join(SECURE_SERVER_OPTIONS)}, got {_show(value)}")
    return option


def _hash(value: Any) -> str:
    """Placement always uses MurmurHash3; ``murmur`` is Dynomite's default name."""
    if isinstance(value, str) and value.strip().lower() in ("murmur3", "murmur"):
        return "murmur3"
    raise _Invalid(f"only murmur3 placement is supported (murmur is read as murmur3), got {_show(value)}")


def _data_store(value: Any) -> int:
    try:
        kind = _int(value)
    except _Invalid:
        kind = None
    if kind == 0:
        return 0
    if kind == 1:
        raise _Invalid("memcached is not supported (use 0 for redis)")
    raise _Invalid(f"expected 0 (redis), got {_show(value)}")


def _seed_provider(value: Any) -> str:
    if value == "simple_provider":
        return value
    if value in ("florida_provider", "dns_provider"):
        raise _Invalid(f"{value} is not supported; list seeds in dyn_seeds")
    raise _Invalid(f"expected simple_provider, got {_show(value)}")


def _secret(without: str) -> Callable[[Any], str]:
    """
    A password-like value: a quoted, non-empty string.  Unquoted YAML
    numbers are refused, since 0123 would silently become 83.  ``without``
    says what removing the key does.
    """

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"expected a quoted string, got {_show(value)}")
        if not value:
            raise _Invalid(f"must not be empty; remove the key to {without}")
        return value

    return parse


_requirepass = _secret("disable AUTH")
_peer_secret = _secret("disable peer authentication")
_admin_token = _secret("leave the admin API open")


def _log_level(value: Any) -> int:
    level = _int(value)
    if not 0 <= level <= 11:
        raise _Invalid(f"expected Dynomite's verbosity 0..11 (5 is info), got {level}")
    return level


def _hints_fsync(value: Any) -> str:
    policy = value.strip().lower() if isinstance(value, str) else None
    if policy not in FSYNC_POLICIES:
        raise _Invalid(f"expected one of {', '.join(FSYNC_POLICIES)}, got {_show(value)}")
    return policy


def _mbuf_size(value: Any) -> int:
    n = _int(value)
    if not 512 <= n <= 512000 or n % 16:
        raise _Invalid(f"must be 512..512000 and a multiple of 16, got {n}")
    return n


# -- the table ---------------------------------------------------------------


_REQUIRED = object()


class _Key(NamedTuple):
    parse: Callable[[Any], Any]
    default: Any = None
    field: Optional[str] = None  # NodeConfig field; None: checked, not kept


def _kept(parse: Callable[[Any], Any], name: str, default: Any = None) -> _Key:
    """A key whose value lands in ``NodeConfig.<name>``, default from the class."""
    if default is None:
        default = NodeConfig.__dataclass_fields__[name].default
    return _Key(parse, default, name)


_KEYS: Dict[str, _Key] = {
    # used by this node
    "listen": _kept(_listener, "listen", _REQUIRED),
    "dyn_listen": _Key(_optional_listener, None, "dyn_listen"),
    "stats_listen": _kept(_listener, "stats_listen", Address("127.0.0.1", 22222)),
    "servers": _kept(_servers, "datastore", _REQUIRED),
    "tokens": _kept(_tokens, "tokens", _REQUIRED),
    "datacenter": _kept(_name, "datacenter"),
    "rack": _kept(_name, "rack"),
    "dyn_seeds": _kept(_seeds, "dyn_seeds"),
    "hash_tag": _Key(_hash_tag, None, "hash_tag"),
    "read_consistency": _kept(_consistency, "read_consistency"),
    "write_consistency": _kept(_consistency, "write_consistency"),
    "timeout": _kept(_milliseconds(positive=True), "timeout"),
    "server_retry_timeout": _kept(_milliseconds(positive=False), "server_retry_timeout"),
    "server_failure_limit": _kept(_int_at_least(1), "server_failure_limit"),
    "auto_eject_hosts": _kept(_bool, "auto_eject_hosts"),
    "datastore_connections": _kept(_int_at_least(1), "datastore_connections"),
    "local_peer_connections": _kept(_int_at_least(1), "local_peer_connections"),
    "remote_peer_connections": _kept(_int_at_least(1), "remote_peer_connections"),
    "secure_server_option": _kept(_secure_server_option, "secure_server_option"),
    "backlog": _kept(_int_at_least(1), "backlog"),
    "hash": _Key(_hash),
    "data_store": _Key(_data_store),
    "dyn_seed_provider": _Key(_seed_provider),
    # added by this project
    "requirepass": _Key(_requirepass, None, "requirepass"),
    "max_request_bytes": _kept(_int_at_least(1), "max_request_bytes"),
    "client_max_outstanding_bytes": _kept(_int_at_least(1), "client_max_outstanding_bytes"),
    "peer_secret": _Key(_peer_secret, None, "peer_secret"),
    "admin_token": _Key(_admin_token, None, "admin_token"),
    "log_level": _kept(_log_level, "log_level"),
    "peer_heartbeat_interval": _kept(_milliseconds(positive=True), "peer_heartbeat_interval"),
    "peer_down_after": _kept(_milliseconds(positive=True), "peer_down_after"),
    "data_dir": _kept(_text, "data_dir"),
    "hints_fsync": _kept(_hints_fsync, "hints_fsync"),
    "hint_window": _kept(_milliseconds(positive=True), "hint_window"),
    "hints_max_bytes": _kept(_int_at_least(0), "hints_max_bytes"),
    "hint_replay_rate": _kept(_int_at_least(0), "hint_replay_rate"),
    "hint_segment_bytes": _kept(_int_at_least(4096), "hint_segment_bytes"),
    "resume_timeout": _kept(_milliseconds(positive=False), "resume_timeout"),
    # documented by Dynomite, accepted and checked, not used yet (UNUSED_KEYS)
    "distribution": _Key(_text),
    "client_connections": _Key(_int_at_least(0)),
    "preconnect": _Key(_bool),
    "server_connections": _Key(_int_at_least(0)),
    "dyn_read_timeout": _Key(_milliseconds(positive=False)),
    "dyn_write_timeout": _Key(_milliseconds(positive=False)),
    "dyn_port": _Key(_int_at_least(0)),
    "dyn_connections": _Key(_int_at_least(1)),
    "gos_interval": _Key(_milliseconds(positive=False)),
    "pem_key_file": _Key(_text),
    "recon_key_file": _Key(_text),
    "recon_iv_file": _Key(_text),
    "env": _Key(_text),
    "conn_msg_rate": _Key(_int_at_least(0)),
    "stats_interval": _Key(_milliseconds(positive=False)),
    "enable_gossip": _Key(_bool),
    "mbuf_size": _Key(_mbuf_size),
    "max_msgs": _Key(_int_at_least(1)),
    "read_repairs_enabled": _Key(_bool),
}

assert set(_KEYS) == DYNOMITE_KEYS | PROJECT_KEYS
assert UNUSED_KEYS <= DYNOMITE_KEYS and len(DYNOMITE_KEYS) == 42


# -- checks across keys ------------------------------------------------------


def _check_together(values: Mapping[str, Any], source: str) -> None:
    """Rules that involve more than one key."""
    seeds: Tuple[Seed, ...] = values["dyn_seeds"]
    if values["peer_down_after"] <= values["peer_heartbeat_interval"]:
        raise ConfigError(
            source, "peer_down_after",
            f"must be longer than peer_heartbeat_interval"
            f" ({values['peer_heartbeat_interval'] * 1000:g} ms), got"
            f" {values['peer_down_after'] * 1000:g} ms",
        )
    if seeds and values["dyn_listen"] is None:
        raise ConfigError(source, "dyn_listen", "required when dyn_seeds lists peers")

    listeners = [("listen", values["listen"]), ("dyn_listen", values["dyn_listen"]),
                 ("stats_listen", values["stats_listen"])]
    taken: Dict[Address, str] = {}
    for key, address in listeners:
        if address is None or address.port == 0:
            continue
        if address in taken:
            raise ConfigError(source, key, f"{address} is already used by {taken[address]}")
        taken[address] = key

    addresses: Dict[Address, int] = {}
    owners: Dict[Tuple[str, str, int], Address] = {}
    for seed in seeds:
        if seed.address in addresses:
            raise ConfigError(source, "dyn_seeds", f"seed {seed.address} is listed twice")
        addresses[seed.address] = 1
        for token in seed.tokens:
            place = (seed.datacenter, seed.rack, token)
            if place in owners:
                raise ConfigError(
                    source, "dyn_seeds",
                    f"seeds {owners[place]} and {seed.address} both own token {token}"
                    f" in {seed.datacenter}/{seed.rack}",
                )
            owners[place] = seed.address
