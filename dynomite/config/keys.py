# -*- test-case-name: tests.unit.test_config -*-
"""
What each key of a node's configuration means: its parser, its default and
the :class:`~dynomite.config.model.NodeConfig` field it lands in.

:data:`KEYS` is the one table of every key a node accepts: Dynomite's
documented keys (:data:`DYNOMITE_KEYS`, some accepted and checked but not
acted on yet: :data:`UNUSED_KEYS`) and the keys this project adds
(:data:`PROJECT_KEYS`). Each parser takes the YAML value and returns the
typed one, or raises :class:`~dynomite.config.yamlio.Invalid` with a
reason; the parsers live in :mod:`~dynomite.config.parsers` (shared),
:mod:`~dynomite.config.seed_keys` (seeds and their providers) and
:mod:`~dynomite.config.security_keys` (secrets, ACL users, TLS, the
datastore's credentials). :func:`check_together` holds the rules that involve more than one
key. :meth:`NodeConfig.from_dict <dynomite.config.model.NodeConfig.from_dict>`
drives both.

Units: YAML durations are milliseconds, as in Dynomite; the parsers return
seconds (floats), as Twisted expects.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from dynomite.config.parsers import (
    CLASS_DEFAULT, REQUIRED, Key, _bool, _conflict_rule, _consistency, _data_store, _hash, _hash_tag, _hints_fsync,
    _int_at_least,
    _kept, _listener, _log_level, _mbuf_size, _milliseconds, _name, _optional_listener, _secure_server_option,
    _servers, _text, _tokens,
)
from dynomite.config.security_keys import (
    TLS_KEYS, _acl_file, _admin_token, _peer_secret, _requirepass, _users, check_tls_together,
)
from dynomite.config.seed_keys import (
    SEED_KEYS, SEED_PROVIDERS, _advertise, _dns_name, _dns_server, _florida_url, _seed_provider, _seeds,
    check_seed_keys, parse_seed,
)
from dynomite.config.values import Address, Seed
from dynomite.config.yamlio import ConfigError

__all__ = [
    "CLASS_DEFAULT",
    "DYNOMITE_KEYS",
    "INSTEAD",
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
        "stats_interval", "mbuf_size", "max_msgs",
    }
)

#: Keys this project adds to Dynomite's set (documented in etc/dynomite.yml).
PROJECT_KEYS = frozenset(
    {
        "requirepass", "max_request_bytes", "client_max_outstanding_bytes",
        "maxclients", "client_idle_timeout", "client_read_timeout",
        "client_accept_rate", "client_flood_accept_rate",
        "peer_secret", "peer_heartbeat_interval", "peer_down_after", "admin_token", "log_level",
        "data_dir", "hints_fsync", "hint_window", "hints_max_bytes", "hint_replay_rate",
        "hint_segment_bytes", "resume_timeout",
        "dyn_advertise", "dns_seed_name", "dns_seed_server", "florida_url",
        "acl_file", "users",
        "pubsub_output_hard_limit", "pubsub_output_soft_limit", "pubsub_output_soft_seconds",
        "anti_entropy_interval", "repair_rate", "bootstrap", "datacenter_conflicts",
    }
)


# -- the table (the parsers: dynomite.config.parsers, seed_keys, security_keys) --


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
    "enable_gossip": _kept(_bool, "enable_gossip"),
    # added by this project
    "requirepass": Key(_requirepass, None, "requirepass"),
    "max_request_bytes": _kept(_int_at_least(1), "max_request_bytes"),
    "client_max_outstanding_bytes": _kept(_int_at_least(1), "client_max_outstanding_bytes"),
    "maxclients": _kept(_int_at_least(1), "maxclients"),
    "client_idle_timeout": _kept(_int_at_least(0), "client_idle_timeout"),
    "client_read_timeout": _kept(_milliseconds(positive=False), "client_read_timeout"),
    "client_accept_rate": _kept(_int_at_least(0), "client_accept_rate"),
    "client_flood_accept_rate": _kept(_int_at_least(0), "client_flood_accept_rate"),
    "peer_secret": Key(_peer_secret, None, "peer_secret"),
    "admin_token": Key(_admin_token, None, "admin_token"),
    "log_level": _kept(_log_level, "log_level"),
    "peer_heartbeat_interval": _kept(_milliseconds(positive=True), "peer_heartbeat_interval"),
    "peer_down_after": _kept(_milliseconds(positive=True), "peer_down_after"),
    "data_dir": _kept(_text, "data_dir"),
    "hints_fsync": _kept(_hints_fsync, "hints_fsync"),
    "datacenter_conflicts": _kept(_conflict_rule, "datacenter_conflicts"),
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
    "read_repairs_enabled": _kept(_bool, "read_repairs_enabled"),
    "anti_entropy_interval": _kept(_milliseconds(positive=False), "anti_entropy_interval"),
    "repair_rate": _kept(_int_at_least(0), "repair_rate"),
    "bootstrap": _kept(_bool, "bootstrap"),
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
    "mbuf_size": Key(_mbuf_size),
    "max_msgs": Key(_int_at_least(1)),
}
KEYS.update(TLS_KEYS)
PROJECT_KEYS = PROJECT_KEYS | frozenset(TLS_KEYS)
KEYS.update((key, Key(*row)) for key, row in SEED_KEYS.items())   # dynomite.config.seed_keys
PROJECT_KEYS = PROJECT_KEYS | frozenset(SEED_KEYS)

#: Required keys another key may stand in for: a node given ``tls_listen``
#: and no ``listen`` takes TLS clients only, and listens for none in clear.
INSTEAD = {"listen": "tls_listen"}

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

    if not values["tokens"] and not (values["enable_gossip"] and values["bootstrap"]):
        raise ConfigError(source, "tokens", "auto needs enable_gossip: true and bootstrap: true"
                          " (a joining node chooses its tokens from the cluster's view)")

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

