# -*- test-case-name: tests.unit.test_config -*-
"""
What each key of a node's configuration means: its parser, its default and
the :class:`~dynomite.config.model.NodeConfig` field it lands in.

:data:`KEYS` is the one table of every key a node accepts: Dynomite's
documented keys (:data:`DYNOMITE_KEYS`, some accepted and checked but not
acted on yet: :data:`UNUSED_KEYS`) and the keys this project adds
(:data:`PROJECT_KEYS`). Each parser takes the YAML value and returns the
typed one, or raises :class:`~dynomite.config.yamlio.Invalid` with a
reason; :func:`check_together` holds the rules that involve more than one
key. :meth:`NodeConfig.from_dict <dynomite.config.model.NodeConfig.from_dict>`
drives both.

Units: YAML durations are milliseconds, as in Dynomite; the parsers return
seconds (floats), as Twisted expects.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from dynomite.config.seed_keys import SEED_KEYS, check_seed_keys
from dynomite.config.values import Address, Seed, make_address, split_fields
from dynomite.config.vocabulary import CONSISTENCY_LEVELS, FSYNC_POLICIES, MAX_TOKEN, SECURE_SERVER_OPTIONS
from dynomite.config.yamlio import ConfigError, Invalid, show

__all__ = [
    "CLASS_DEFAULT",
    "DYNOMITE_KEYS",
    "KEYS",
    "PROJECT_KEYS",
    "REQUIRED",
    "SEED_PROVIDERS",
    "UNUSED_KEYS",
    "Key",
    "check_together",
    "parse_seed",
]


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
        "dyn_port", "dyn_connections", "pem_key_file",
        "recon_key_file", "recon_iv_file", "env", "conn_msg_rate",
        "stats_interval", "enable_gossip", "mbuf_size", "max_msgs",
        "read_repairs_enabled",
    }
)

#: Keys this project adds to Dynomite's set (documented in etc/dynomite.yml).
PROJECT_KEYS = frozenset(
    {
        "requirepass", "max_request_bytes", "client_max_outstanding_bytes",
        "maxclients", "client_idle_timeout", "client_read_timeout",
        "peer_secret", "peer_heartbeat_interval", "peer_down_after", "admin_token", "log_level",
        "data_dir", "hints_fsync", "hint_window", "hints_max_bytes", "hint_replay_rate",
        "hint_segment_bytes", "resume_timeout",
        "dyn_advertise", "dns_seed_name", "dns_seed_server", "florida_url",
        "acl_file", "users",
        "pubsub_output_hard_limit", "pubsub_output_soft_limit", "pubsub_output_soft_seconds",
    }
)


#: Where a node's seeds come from (``dyn_seed_provider``), Dynomite's names.
SEED_PROVIDERS = ("simple_provider", "dns_provider", "florida_provider")


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
    """``0``, ``"123"`` or ``"1,2,3"``: unsigned 32-bit ring positions."""
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


def _seed(text: Any) -> Seed:
    host, port, rack, dc, tokens = split_fields(text, (5,), "host:port:rack:dc:tokens")
    address = make_address(host, port, allow_zero_port=False)
    _check_name(rack)
    _check_name(dc)
    return Seed(address=address, rack=rack, datacenter=dc, tokens=_tokens(tokens))


def _seeds(value: Any) -> Tuple[Seed, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid(f"expected a list of 'host:port:rack:dc:tokens', got {show(value)}")
    seeds = []
    for i, entry in enumerate(value, 1):
        try:
            seeds.append(_seed(entry))
        except Invalid as e:
            raise Invalid(f"entry {i}: {e}") from None
    return tuple(seeds)


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


def _seed_provider(value: Any) -> str:
    if value in SEED_PROVIDERS:
        return value
    raise Invalid(f"expected one of {', '.join(SEED_PROVIDERS)}, got {show(value)}")


def parse_seed(text: Any) -> Seed:
    """One ``host:port:rack:dc:tokens`` seed (IPv6 hosts in brackets), as seed providers read them."""
    return _seed(text)


def _advertise(value: Any) -> Address:
    """The address peers reach this node by: a real host (a name or an address), not a wildcard."""
    address = Address.parse(value, allow_zero_port=False)
    if address.host in ("0.0.0.0", "::"):
        raise Invalid(f"{address} is a wildcard; give the address or name peers reach this node by")
    return address


def _dns_name(value: Any) -> str:
    name = _text(value).strip().rstrip(".")
    if not name or any(c.isspace() for c in name):
        raise Invalid(f"expected a DNS name, got {show(value)}")
    return name


def _dns_server(value: Any) -> Address:
    return Address.parse(value, allow_zero_port=False)


def _florida_url(value: Any) -> str:
    url = _text(value).strip()
    if not url.startswith(("http://", "https://")):
        raise Invalid(f"expected an http:// or https:// URL, got {show(value)}")
    return url


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


_requirepass = _secret("disable AUTH")
_peer_secret = _secret("disable peer authentication")
_admin_token = _secret("leave the admin API open")


def _log_level(value: Any) -> int:
    level = _int(value)
    if not 0 <= level <= 11:
        raise Invalid(f"expected Dynomite's verbosity 0..11 (5 is info), got {level}")
    return level


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


# -- ACL users (checked and compiled by dynomite.commands.acl) --------------


def _acl_file(value: Any) -> str:
    """The path of a Redis ACL file (``user ...`` lines), relative to the working directory."""
    return _text(value)


def _users(value: Any) -> Tuple[str, ...]:
    """ACL users as a YAML list of ACL-file lines: ``- user alice on >pw ~app:* +@read``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid(f"expected a list of ACL lines like 'user alice on >pass ~app:* +@read', got {show(value)}")
    for i, entry in enumerate(value, 1):
        if not isinstance(entry, str) or not entry.strip().startswith("user "):
            raise Invalid(f"entry {i}: expected an ACL line starting 'user <name>', got {show(entry)}")
    return tuple(value)


# -- the table ---------------------------------------------------------------


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


KEYS: Dict[str, Key] = {
    # used by this node
    "listen": _kept(_listener, "listen", REQUIRED),
    "dyn_listen": Key(_optional_listener, None, "dyn_listen"),
    "stats_listen": _kept(_listener, "stats_listen", Address("127.0.0.1", 22222)),
    "servers": _kept(_servers, "datastore", REQUIRED),
    "tokens": _kept(_tokens, "tokens", REQUIRED),
    "datacenter": _kept(_name, "datacenter"),
    "rack": _kept(_name, "rack"),
    "dyn_seeds": _kept(_seeds, "dyn_seeds"),
    "hash_tag": Key(_hash_tag, None, "hash_tag"),
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
    "hash": Key(_hash),
    "data_store": Key(_data_store),
    "dyn_seed_provider": _kept(_seed_provider, "seed_provider"),
    "gos_interval": _kept(_milliseconds(positive=True), "gos_interval"),
    # added by this project
    "requirepass": Key(_requirepass, None, "requirepass"),
    "max_request_bytes": _kept(_int_at_least(1), "max_request_bytes"),
    "client_max_outstanding_bytes": _kept(_int_at_least(1), "client_max_outstanding_bytes"),
    "maxclients": _kept(_int_at_least(1), "maxclients"),
    "client_idle_timeout": _kept(_int_at_least(0), "client_idle_timeout"),
    "client_read_timeout": _kept(_milliseconds(positive=False), "client_read_timeout"),
    "peer_secret": Key(_peer_secret, None, "peer_secret"),
    "admin_token": Key(_admin_token, None, "admin_token"),
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
    "dyn_advertise": Key(_advertise, None, "advertise"),
    "dns_seed_name": Key(_dns_name, None, "dns_seed_name"),
    "dns_seed_server": Key(_dns_server, None, "dns_seed_server"),
    "florida_url": Key(_florida_url, None, "florida_url"),
    "acl_file": Key(_acl_file, None, "acl_file"),
    "users": _kept(_users, "users"),
    "pubsub_output_hard_limit": _kept(_int_at_least(1), "pubsub_output_hard_limit"),
    "pubsub_output_soft_limit": _kept(_int_at_least(0), "pubsub_output_soft_limit"),
    "pubsub_output_soft_seconds": _kept(_int_at_least(0), "pubsub_output_soft_seconds"),
    # documented by Dynomite, accepted and checked, not used yet (UNUSED_KEYS)
    "distribution": Key(_text),
    "client_connections": Key(_int_at_least(0)),
    "preconnect": Key(_bool),
    "server_connections": Key(_int_at_least(0)),
    "dyn_read_timeout": Key(_milliseconds(positive=False)),
    "dyn_write_timeout": Key(_milliseconds(positive=False)),
    "dyn_port": Key(_int_at_least(0)),
    "dyn_connections": Key(_int_at_least(1)),
    "pem_key_file": Key(_text),
    "recon_key_file": Key(_text),
    "recon_iv_file": Key(_text),
    "env": Key(_text),
    "conn_msg_rate": Key(_int_at_least(0)),
    "stats_interval": Key(_milliseconds(positive=False)),
    "enable_gossip": Key(_bool),
    "mbuf_size": Key(_mbuf_size),
    "max_msgs": Key(_int_at_least(1)),
    "read_repairs_enabled": Key(_bool),
}


# -- TLS and the datastore's credentials --------------------------------------
# Redis's own names where Redis has them (tls-cert-file -> tls_cert_file...).
# The files are only named here; dynomite.runtime.tls reads and checks them.

#: The TLS versions ``tls_protocols`` may list, as Redis spells them.
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
#: ``tls_auth_clients``: client certificates refused, asked for, required.
TLS_AUTH_CLIENTS = ("no", "optional", "yes")


def _tls_protocols(value: Any) -> Tuple[str, ...]:
    """``"TLSv1.2 TLSv1.3"``: the versions the node speaks, space-separated."""
    if not isinstance(value, str) or not value.split():
        raise Invalid(f"expected TLS versions such as 'TLSv1.2 TLSv1.3', got {show(value)}")
    known = {v.lower(): v for v in TLS_VERSIONS}
    versions = []
    for word in value.split():
        if word.lower() not in known:
            raise Invalid(f"unknown TLS version {word!r}; expected {' or '.join(TLS_VERSIONS)}")
        versions.append(known[word.lower()])
    return tuple(v for v in TLS_VERSIONS if v in versions)


def _tls_auth_clients(value: Any) -> str:
    if isinstance(value, bool):  # YAML reads an unquoted yes/no as a boolean
        return "yes" if value else "no"
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in TLS_AUTH_CLIENTS:
        raise Invalid(f"expected one of {', '.join(TLS_AUTH_CLIENTS)}, got {show(value)}")
    return word


_datastore_password = _secret("connect to the datastore without AUTH")


TLS_KEYS: Dict[str, Key] = {
    "tls_listen": Key(_optional_listener, None, "tls_listen"),
    "tls_cert_file": Key(_text, None, "tls_cert_file"),
    "tls_key_file": Key(_text, None, "tls_key_file"),
    "tls_ca_cert_file": Key(_text, None, "tls_ca_cert_file"),
    "tls_auth_clients": Key(_tls_auth_clients, None, "tls_auth_clients"),
    "tls_protocols": _kept(_tls_protocols, "tls_protocols"),
    "tls_ciphers": Key(_text, None, "tls_ciphers"),
    "datastore_username": Key(_text, None, "datastore_username"),
    "datastore_password": Key(_datastore_password, None, "datastore_password"),
    "datastore_tls": _kept(_bool, "datastore_tls"),
}
KEYS.update(TLS_KEYS)
PROJECT_KEYS = PROJECT_KEYS | frozenset(TLS_KEYS)


def check_tls_together(values: Dict[str, Any], source: str) -> None:
    """
    What TLS needs besides itself: a certificate with its key, a CA to
    verify peers (mutual TLS), clients or the datastore against.  Fills in
    ``tls_auth_clients`` when it is not given: ``yes`` with a CA, as Redis.
    """
    cert, key, ca = values["tls_cert_file"], values["tls_key_file"], values["tls_ca_cert_file"]
    if (cert is None) != (key is None):
        missing = "tls_key_file" if key is None else "tls_cert_file"
        other = "tls_cert_file" if key is None else "tls_key_file"
        raise ConfigError(source, missing, f"required with {other}")
    needs = [("tls_listen", values["tls_listen"] is not None, "tls_cert_file"),
             ("secure_server_option", values["secure_server_option"] != "none", "tls_cert_file"),
             ("secure_server_option", values["secure_server_option"] != "none", "tls_ca_cert_file"),
             ("datastore_tls", values["datastore_tls"], "tls_ca_cert_file")]
    for key_name, wanted, need in needs:
        if wanted and values[need] is None:
            raise ConfigError(source, need, f"required by {key_name}")
    auth = values["tls_auth_clients"]
    if auth is None:
        values["tls_auth_clients"] = "yes" if ca is not None else "no"
    elif auth != "no" and ca is None:
        raise ConfigError(source, "tls_auth_clients",
                          f"{auth} needs tls_ca_cert_file to verify client certificates")
    if values["datastore_username"] is not None and values["datastore_password"] is None:
        raise ConfigError(source, "datastore_username", "needs datastore_password")

KEYS.update((key, Key(*row)) for key, row in SEED_KEYS.items())   # dynomite.config.seed_keys
PROJECT_KEYS = PROJECT_KEYS | frozenset(SEED_KEYS)
assert set(KEYS) == DYNOMITE_KEYS | PROJECT_KEYS
assert UNUSED_KEYS <= DYNOMITE_KEYS and len(DYNOMITE_KEYS) == 42


# -- checks across keys ------------------------------------------------------


def check_together(values: Dict[str, Any], source: str) -> None:
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
    if values["seed_provider"] != "simple_provider" and values["dyn_listen"] is None:
        raise ConfigError(source, "dyn_listen", f"required with dyn_seed_provider {values['seed_provider']}")

    check_tls_together(values, source)
    check_seed_keys(values, source)
    listeners = [("listen", values["listen"]), ("dyn_listen", values["dyn_listen"]),
                 ("stats_listen", values["stats_listen"]), ("tls_listen", values["tls_listen"])]
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

