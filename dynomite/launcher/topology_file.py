# -*- test-case-name: tests.integration.test_cluster_launcher -*-
"""
The topology file of a local cluster, and the placement conventions it implies.

:class:`ClusterFile` reads and validates the small YAML file
``dynomite-cluster`` launches a cluster from (cluster name, datacenters with
racks and node counts, addresses, settings passed to every node). It is the
launcher's file, not the cluster map a node routes with (that is
:class:`dynomite.placement.topology.Topology`). Errors are
:class:`dynomite.config.yamlio.ConfigError`: file, key, reason on one line,
like a node configuration's, since both are read and worded by
:mod:`dynomite.config.yamlio`.

The rest is pure placement math, shared by the launcher, its command line
and the tests' oracle: Dynomite's token convention (``generate_yamls.py``:
in a rack of N nodes, node i owns token ``i * (2**32 // N)``; a key
belongs to the node with the smallest token >= its hash, wrapping around),
the hash ranges a node owns, node labels and loopback addresses.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, NamedTuple, Optional, Tuple

from dynomite.config.model import NodeConfig
from dynomite.config.vocabulary import MAX_TOKEN, RING_SIZE

# The strict loader and value printer of node configurations, so topology
# errors read exactly like node configuration errors (duplicate keys, line numbers).
from dynomite.config.yamlio import ConfigError, Invalid, load_yaml, show, unknown_key

__all__ = [
    "DEFAULT_BASE_ADDRESS",
    "DEFAULT_CLUSTER_NAME",
    "STANDARD_PORTS",
    "Ports",
    "RackSpec",
    "ClusterFile",
    "node_hosts",
    "node_label",
    "owned_ranges",
    "parse_base_address",
    "parse_ports",
    "rack_tokens",
]

DEFAULT_CLUSTER_NAME = "dyn_o_mite"
DEFAULT_BASE_ADDRESS = "127.0.0.11"


class Ports(NamedTuple):
    """The four ports of one node's address."""

    client: int
    peer: int
    stats: int
    redis: int


#: Dynomite's conventional ports (and twemproxy's 22122 for the datastore).
STANDARD_PORTS = Ports(client=8102, peer=8101, stats=22222, redis=22122)

# -- the topology file --------------------------------------------------------

TOPOLOGY_KEYS = ("cluster", "datacenters", "addresses", "clients", "node")
#: ``clients``: where each node takes its clients, on its client port: ``listen``
#: (in clear) or ``tls_listen`` alone (TLS only; ``node`` must give the certificate).
CLIENT_PORTS = {"plain": "listen", "tls": "tls_listen"}
ADDRESS_KEYS = ("base", "ports")
#: Node keys the launcher writes itself; a topology may not set them.
LAUNCHER_KEYS = frozenset(
    {"listen", "tls_listen", "dyn_listen", "stats_listen", "servers", "tokens", "datacenter", "rack", "dyn_seeds"}
)
_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


@dataclass(frozen=True)
class RackSpec:
    """One rack of the topology and how many nodes it has."""

    datacenter: str
    rack: str
    nodes: int


@dataclass(frozen=True)
class ClusterFile:
    """
    A validated topology file.

    ``ports`` is None for ephemeral ports (``ports: auto``). ``node_settings``
    are Dynomite keys copied into every node's YAML; they have been checked
    with :class:`NodeConfig`, so a bad value fails here, naming ``node.<key>``.
    ``client_tls`` (``clients: tls``): each node's client port is its
    ``tls_listen``, and it has no ``listen``.
    """

    source: str
    name: str
    racks: Tuple[RackSpec, ...]
    base_address: str = DEFAULT_BASE_ADDRESS
    ports: Optional[Ports] = STANDARD_PORTS
    node_settings: Tuple[Tuple[str, Any], ...] = ()
    client_tls: bool = False

    @classmethod
    def from_yaml(cls, path: str) -> ClusterFile:
        """Read and validate a topology file."""
        source = os.fspath(path)
        return cls.from_dict(load_yaml(source), source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> ClusterFile:
        """Validate an already-loaded topology document."""
        try:
            return _parse_topology(data, source)
        except Invalid as e:
            raise ConfigError(source, e.key or "<root>", e.reason) from None

    @property
    def datacenters(self) -> Tuple[str, ...]:
        """Datacenter names in file order."""
        return tuple(dict.fromkeys(r.datacenter for r in self.racks))

    @property
    def node_count(self) -> int:
        return sum(r.nodes for r in self.racks)


def _parse_topology(data: Any, source: str) -> ClusterFile:
    if not isinstance(data, Mapping):
        raise Invalid(f"expected a mapping with keys {', '.join(TOPOLOGY_KEYS)}, got {show(data)}", key="<root>")
    for key in data:
        if key not in TOPOLOGY_KEYS:
            raise Invalid(unknown_key(key, TOPOLOGY_KEYS), key=str(key))
    name = _check_name("cluster", data.get("cluster", DEFAULT_CLUSTER_NAME))
    racks = _parse_racks(data.get("datacenters"))
    base, ports = _parse_addresses(data.get("addresses"))
    count = sum(r.nodes for r in racks)
    try:
        node_hosts(base, count)
    except ValueError as e:
        raise Invalid(str(e), key="addresses.base") from None
    names = [node_label(r.datacenter, r.rack, i) for r in racks for i in range(r.nodes)]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise Invalid(f"two nodes would both be named {n!r}; rename a datacenter or rack", key="datacenters")
    clients = data.get("clients", "plain")
    if clients not in CLIENT_PORTS:
        raise Invalid(f"expected one of {', '.join(CLIENT_PORTS)}, got {show(clients)}", key="clients")
    settings = _parse_node_settings(data.get("node"), name, source, CLIENT_PORTS[clients])
    return ClusterFile(source, name, racks, base, ports, settings, client_tls=clients == "tls")


def _check_name(key: str, value: Any) -> str:
    """Names end up in file names and ``dyn_seeds`` entries: keep them plain."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _NAME.match(value):
        raise Invalid(f"expected a name of letters, digits, '_', '-' or '.', got {show(value)}", key=key)
    return value


def _parse_racks(value: Any) -> Tuple[RackSpec, ...]:
    if value is None:
        raise Invalid("required key is missing; e.g. {dc1: {rack1: 1, rack2: 1}}", key="datacenters")
    if not isinstance(value, Mapping) or not value:
        raise Invalid(f"expected a mapping of datacenter names to racks, got {show(value)}", key="datacenters")
    racks = []
    for dc, dc_racks in value.items():
        dc_name = _check_name(f"datacenters.{dc}", dc)
        key = f"datacenters.{dc_name}"
        if not isinstance(dc_racks, Mapping) or not dc_racks:
            raise Invalid(f"expected a mapping of rack names to node counts, got {show(dc_racks)}", key=key)
        for rack, count in dc_racks.items():
            rack_name = _check_name(f"{key}.{rack}", rack)
            if isinstance(count, bool) or not isinstance(count, int):
                raise Invalid(f"expected a number of nodes, got {show(count)}", key=f"{key}.{rack_name}")
            if count < 1:
                raise Invalid(f"a rack needs at least 1 node, got {count}", key=f"{key}.{rack_name}")
            racks.append(RackSpec(dc_name, rack_name, count))
    return tuple(racks)


def _parse_addresses(value: Any) -> Tuple[str, Optional[Ports]]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping with keys base, ports, got {show(value)}", key="addresses")
    for key in value:
        if key not in ADDRESS_KEYS:
            raise Invalid(unknown_key(key, ADDRESS_KEYS), key=f"addresses.{key}")
    try:
        base = parse_base_address(value.get("base", DEFAULT_BASE_ADDRESS))
    except ValueError as e:
        raise Invalid(str(e), key="addresses.base") from None
    try:
        ports = parse_ports(value.get("ports", "standard"))
    except ValueError as e:
        raise Invalid(str(e), key="addresses.ports") from None
    return base, ports


def parse_base_address(value: Any) -> str:
    """The first node's address: IPv4 loopback, so every node can have its own."""
    try:
        address = ipaddress.IPv4Address(value if isinstance(value, str) else "")
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(f"expected an IPv4 loopback address such as 127.0.0.11, got {show(value)}")
    return str(address)


def parse_ports(value: Any) -> Optional[Ports]:
    """
    ``auto`` (None: ephemeral ports), ``standard`` (:data:`STANDARD_PORTS`),
    a :class:`Ports`, or a mapping naming some of client/peer/stats/redis
    (the rest standard). Raises ``ValueError`` with a reason for a user.
    """
    if value is None or isinstance(value, Ports):
        return value
    if value == "auto":
        return None
    if value == "standard":
        return STANDARD_PORTS
    if not isinstance(value, Mapping):
        raise ValueError(
            f"expected auto, standard or a mapping of {', '.join(Ports._fields)} ports, got {show(value)}"
        )
    chosen = STANDARD_PORTS._asdict()
    for key, port in value.items():
        if key not in chosen:
            raise ValueError(f"{key}: {unknown_key(key, Ports._fields)}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"{key}: expected a port 1..65535, got {show(port)}")
        chosen[key] = port
    ports = Ports(**chosen)
    for i, port in enumerate(ports):
        if port in ports[:i]:
            raise ValueError(f"{Ports._fields[ports.index(port)]} and {Ports._fields[i]} both use port {port}")
    return ports


def _parse_node_settings(value: Any, cluster: str, source: str,
                         client_key: str = "listen") -> Tuple[Tuple[str, Any], ...]:
    if value is None:
        value = {}   # still checked: clients: tls needs a certificate
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping of Dynomite settings, got {show(value)}", key="node")
    for key in value:
        if key in LAUNCHER_KEYS:
            raise Invalid("set by the launcher for each node; remove it", key=f"node.{key}")
    sample = {
        client_key: "127.0.0.1:1",
        "dyn_listen": "127.0.0.1:2",
        "stats_listen": "127.0.0.1:3",
        "servers": ["127.0.0.1:4:1"],
        "tokens": "0",
        **value,
    }
    try:
        NodeConfig.from_dict({cluster: sample}, source=source)
    except ConfigError as e:
        raise Invalid(e.reason, key=f"node.{e.key}") from None
    return tuple(value.items())


# -- pure placement math -------------------------------------------------------


def rack_tokens(count: int) -> List[int]:
    """Tokens of a rack of ``count`` nodes: node i gets ``i * (2**32 // count)``."""
    if count < 1:
        raise ValueError("a rack needs at least one node")
    step = RING_SIZE // count
    return [i * step for i in range(count)]


def owned_ranges(mine: Iterable[int], rack: Iterable[int]) -> List[Tuple[int, int]]:
    """
    The inclusive hash ranges a node owns in its rack.

    A token owns the hashes after the previous token up to itself; the
    smallest token also owns the wrap-around above the largest one.
    """
    ring = sorted(set(rack))
    ranges: List[Tuple[int, int]] = []
    for token in mine:
        i = ring.index(token)
        if len(ring) == 1:
            return [(0, MAX_TOKEN)]
        if i == 0:
            if ring[-1] < MAX_TOKEN:
                ranges.append((ring[-1] + 1, MAX_TOKEN))
            ranges.append((0, token))
        else:
            ranges.append((ring[i - 1] + 1, token))
    return sorted(ranges)


def node_label(dc: str, rack: str, index: int) -> str:
    """
    ``<dc>-<rack>-<index>``: how the launcher names a node, also the stem of
    its files. (A node's name among its peers is ``host:port``:
    :func:`dynomite.peers.handshake.node_name`.)
    """
    return f"{dc}-{rack}-{index}"


def node_hosts(base: str, count: int) -> List[str]:
    """``count`` consecutive IPv4 addresses from ``base``, all inside 127.0.0.0/8."""
    first = ipaddress.IPv4Address(base)
    last_allowed = ipaddress.IPv4Address("127.255.255.254")
    if int(first) + count - 1 > int(last_allowed):
        raise ValueError(f"{count} nodes from {base} would leave 127.0.0.0/8; choose a lower base")
    return [str(first + i) for i in range(count)]
