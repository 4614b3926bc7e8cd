# -*- test-case-name: tests.unit.test_config -*-
"""
Node configuration: Dynomite-compatible YAML parsed once into frozen objects.

A node reads one YAML file whose single root key (conventionally
``dyn_o_mite``) maps Dynomite's documented keys, plus a few keys this project
adds, to values. :meth:`NodeConfig.from_yaml` turns that file into a
:class:`NodeConfig`; every module below receives that object, never a dict.

Validation happens here and only here, and the first problem found raises a
:class:`ConfigError` naming the file, the key and the reason on one line, so
a bad file stops the node at start instead of misbehaving later. Each key has
one small parser in the table of :mod:`dynomite.config.keys`; the table also
holds the default and the :class:`NodeConfig` field the value lands in. The
file is read by :mod:`dynomite.config.yamlio`; :class:`Address` and
:class:`Seed` come from :mod:`dynomite.config.values`, and are imported from
here by the rest of the package.

Units: YAML durations are milliseconds, as in Dynomite; :class:`NodeConfig`
holds seconds (floats), as Twisted expects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from dynomite.config.keys import (
    CLASS_DEFAULT, DYNOMITE_KEYS, INSTEAD, KEYS, PROJECT_KEYS, REQUIRED, UNUSED_KEYS, check_together,
)
from dynomite.config.values import Address, Seed
from dynomite.config.vocabulary import CONSISTENCY_LEVELS, SECURE_SERVER_OPTIONS
from dynomite.config.yamlio import ConfigError, Invalid, load_yaml, show, unknown_key

#: Listening hosts that mean "every interface": not a name peers can use.
WILDCARDS = frozenset({"0.0.0.0", "::"})

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
    "WILDCARDS",
]


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
    listen: Optional[Address]              # None: TLS clients only, on tls_listen
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
    maxclients: int = 10000                # Redis's name and default
    client_idle_timeout: int = 0           # seconds, 0 = never (Redis's `timeout`)
    client_read_timeout: float = 30.0      # a started request must complete within this; 0 = never
    client_accept_rate: int = 0            # connections accepted a second per client port; 0 = no bound
    client_flood_accept_rate: int = 500    # the same, only during a flood of fruitless connections; 0 = off
    peer_secret: Optional[str] = field(default=None, repr=False)  # kept out of logs
    admin_token: Optional[str] = field(default=None, repr=False)  # kept out of logs
    log_level: int = 5  # Dynomite's verbosity, 0-11 (its -v); 5 is info
    peer_heartbeat_interval: float = 1.0
    peer_down_after: float = 3.0
    data_dir: str = "data"
    hints_fsync: str = "everysec"
    #: writes of one key from two datacenters at once: ``arrival`` or ``last_writer_wins``
    datacenter_conflicts: str = "arrival"
    hint_window: float = 3 * 3600.0
    hints_max_bytes: int = 1024 ** 3
    hint_replay_rate: int = 5000
    hint_segment_bytes: int = 64 * 1024 * 1024
    resume_timeout: float = 60.0
    advertise: Optional[Address] = None    # dyn_advertise: the address peers know this node by
    seed_provider: str = "simple_provider"
    gos_interval: float = 30.0             # seconds between seed provider polls and gossip rounds
    enable_gossip: bool = False            # spread the cluster view by gossip (dynomite.peers.gossip)
    dns_seed_name: Optional[str] = None
    dns_seed_server: Optional[Address] = None
    florida_url: Optional[str] = None
    dns_seed_type: str = "txt"            # dns_provider reads TXT (+A/AAAA) or SRV records
    dns_seed_rack_size: Tuple[Tuple[str, int], ...] = ()  # srv: pods per rack, ("*", n) for every rack
    # TLS (dynomite.runtime.tls reads the files) and the datastore's credentials
    tls_listen: Optional[Address] = None
    tls_cert_file: Optional[str] = None
    tls_key_file: Optional[str] = None
    tls_ca_cert_file: Optional[str] = None
    tls_auth_clients: str = "no"           # from_dict: "yes" when a CA is given, as Redis
    tls_protocols: Tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    tls_ciphers: Optional[str] = None
    datastore_username: Optional[str] = None
    datastore_password: Optional[str] = field(default=None, repr=False)  # kept out of logs
    datastore_tls: bool = False
    acl_file: Optional[str] = None         # Redis ACL file (dynomite.commands.acl)
    users: Tuple[str, ...] = field(default=(), repr=False)  # ACL lines; may hold passwords
    # pub/sub subscribers' output buffer limit, Redis's default "pubsub 32mb 8mb 60"
    pubsub_output_hard_limit: int = 32 * 1024 * 1024  # bytes; beyond: closed at once
    pubsub_output_soft_limit: int = 8 * 1024 * 1024   # bytes, 0 = none; beyond for ...
    pubsub_output_soft_seconds: int = 60               # ... this long: closed
    # repair (dynomite.repair): read repair on quorum reads, background
    # anti-entropy passes, the scan rate, and warm-up of a replacement node
    read_repairs_enabled: bool = False
    anti_entropy_interval: float = 0.0     # seconds between background repairs; 0 = none
    repair_rate: int = 5000                # keys/s each replica is scanned at; 0 = no limit
    bootstrap: bool = False                # stream this node's ranges from other racks at start
    unused_keys: Tuple[str, ...] = ()

    @property
    def client_host(self) -> str:
        """The host clients connect to: ``listen``'s, else ``tls_listen``'s (one of them is set)."""
        listen = self.listen if self.listen is not None else self.tls_listen
        assert listen is not None
        return listen.host

    def peer_address(self) -> Optional[Address]:
        """
        The address this node's peers know it by, which is its name among
        them: ``dyn_advertise`` when set; else, when ``dyn_listen`` is a
        wildcard (``0.0.0.0``, ``::``), the ``dyn_seeds`` entry with this
        node's datacenter, rack and tokens (the entry its peers list for it);
        else ``dyn_listen``.  None for a node without ``dyn_listen``, or with
        a wildcard one it cannot name (see `wildcard_problem`).
        """
        if self.advertise is not None:
            return self.advertise
        listen = self.dyn_listen
        if listen is None or listen.host not in WILDCARDS:
            return listen
        mine = sorted(self.tokens)
        for seed in self.dyn_seeds:
            if (seed.datacenter, seed.rack) == (self.datacenter, self.rack) and sorted(seed.tokens) == mine:
                return seed.address
        return None

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
        data = load_yaml(source)
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<dict>") -> NodeConfig:
        """Validate an already-loaded document (``{pool_name: {key: value}}``)."""
        pool_name, pool = _root(data, source)
        values: Dict[str, Any] = {}
        unused: List[str] = []
        for key, value in pool.items():
            spec = KEYS.get(key) if isinstance(key, str) else None
            if spec is None:
                raise ConfigError(source, str(key), unknown_key(key, KEYS))
            try:
                parsed = spec.parse(value)
            except Invalid as e:
                raise ConfigError(source, key, str(e)) from None
            if spec.field is not None:
                values[spec.field] = parsed
            if key in UNUSED_KEYS:
                unused.append(key)
        for key, spec in KEYS.items():
            if spec.field is None or spec.field in values:
                continue
            if spec.default is REQUIRED:
                other = INSTEAD.get(key)
                if other is None:
                    raise ConfigError(source, key, "required key is missing")
                if values.get(KEYS[other].field) is None:
                    raise ConfigError(source, key, f"required key is missing (or give {other} instead)")
                values[spec.field] = None
                continue
            if spec.default is CLASS_DEFAULT:
                values[spec.field] = cls.__dataclass_fields__[spec.field].default
            else:
                values[spec.field] = spec.default
        check_together(values, source)
        config = cls(
            source=source,
            pool_name=pool_name,
            unused_keys=tuple(unused),
            **values,
        )
        if config.dyn_listen is not None and config.peer_address() is None:
            raise ConfigError(
                source, "dyn_advertise",
                f"dyn_listen {config.dyn_listen} is a wildcard: set dyn_advertise to the host:port"
                f" peers reach this node by, or list this node ({config.datacenter}/{config.rack}"
                f" tokens {','.join(str(t) for t in config.tokens)}) in dyn_seeds",
            )
        return config


# -- reading the document ----------------------------------------------------


def _root(data: Any, source: str) -> Tuple[str, Mapping]:
    """Check the document is ``{pool_name: {...}}`` and return both parts."""
    if data is None:
        raise ConfigError(source, "<root>", "empty document; expected one pool key such as 'dyn_o_mite'")
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, "<root>",
            f"expected a mapping with one pool key such as 'dyn_o_mite', got {show(data)}",
        )
    if len(data) != 1:
        settings = [k for k in data if isinstance(k, str) and k in KEYS]
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
        raise ConfigError(source, "<root>", f"pool name must be a non-empty string, got {show(name)}")
    if pool is None:
        pool = {}
    if not isinstance(pool, Mapping):
        raise ConfigError(source, name, f"expected a mapping of settings, got {show(pool)}")
    return name, pool


