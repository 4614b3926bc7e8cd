# -*- test-case-name: tests.unit.test_seeds,tests.unit.test_srv_seeds -*-
"""
The keys that say where a node's peers are and how it is known to them.

Parsers of the keys in the main table (:data:`dynomite.config.keys.KEYS`):
``dyn_seeds``, ``dyn_seed_provider`` and each provider's keys
(``dns_seed_name``, ``dns_seed_server``, ``florida_url``), and
``dyn_advertise``; :func:`parse_seed` is also how seed providers
(:mod:`dynomite.peers.seeds`) read the seeds they fetch.

And the keys of SRV seed discovery (``dns_provider`` with ``dns_seed_type:
srv``, `dynomite.peers.seeds.SrvSeeds`): their parsers, and the rule that
ties them together.  `dynomite.config.keys` adds :data:`SEED_KEYS` to its
one table of keys.

- ``dns_seed_type``: ``txt`` (default: TXT records, filtered by A/AAAA) or
  ``srv`` (SRV records naming the pods of StatefulSets);
- ``dns_seed_rack_size``: with ``srv``, the pods of every rack's
  StatefulSet (``2``), or per rack name (``{rack1: 2, rack2: 3}``); a pod's
  token is ``ordinal * (2**32 // size)``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from dynomite.config.parsers import _check_name, _text, _tokens
from dynomite.config.values import Address, Seed, make_address, split_fields
from dynomite.config.yamlio import ConfigError, Invalid, show

__all__ = ["DNS_SEED_TYPES", "SEED_KEYS", "SEED_PROVIDERS", "check_seed_keys", "parse_seed"]


#: Where a node's seeds come from (``dyn_seed_provider``), Dynomite's names.
SEED_PROVIDERS = ("simple_provider", "dns_provider", "florida_provider")


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


# -- SRV seed discovery -------------------------------------------------------


#: ``dns_seed_type``: what records of ``dns_seed_name`` ``dns_provider`` reads.
DNS_SEED_TYPES = ("txt", "srv")


def _dns_seed_type(value: Any) -> str:
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in DNS_SEED_TYPES:
        raise Invalid(f"expected one of {', '.join(DNS_SEED_TYPES)}, got {show(value)}")
    return word


def _pods(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise Invalid(f"expected a positive number of pods, got {show(value)}")


def _rack_sizes(value: Any) -> Tuple[Tuple[str, int], ...]:
    """The pods per rack: ``(("*", n),)`` for one number, else ``((rack, n), ...)``."""
    if not isinstance(value, Mapping):
        try:
            return (("*", _pods(value)),)
        except Invalid as e:
            raise Invalid(f"{e} (the replicas of each rack's StatefulSet, or a mapping rack -> replicas)") from None
    if not value:
        raise Invalid("expected the replicas of each rack's StatefulSet, or a mapping rack -> replicas; got {}")
    sizes = []
    for rack, size in value.items():
        name = str(rack) if isinstance(rack, int) and not isinstance(rack, bool) else rack
        if not isinstance(name, str) or not name or ":" in name or any(c.isspace() for c in name):
            raise Invalid(f"expected rack names as keys, got {show(rack)}")
        try:
            sizes.append((name, _pods(size)))
        except Invalid as e:
            raise Invalid(f"rack {name}: {e}") from None
    return tuple(sizes)


#: key -> (parser, default, NodeConfig field), rows of `dynomite.config.keys.KEYS`.
SEED_KEYS: Dict[str, Tuple[Any, Any, str]] = {
    "dns_seed_type": (_dns_seed_type, "txt", "dns_seed_type"),
    "dns_seed_rack_size": (_rack_sizes, (), "dns_seed_rack_size"),
}


def check_seed_keys(values: Dict[str, Any], source: str) -> None:
    """SRV seeds need the racks' sizes to give each pod its token; the sizes mean nothing without them."""
    srv = values["dns_seed_type"] == "srv"
    if srv and not values["dns_seed_rack_size"]:
        raise ConfigError(source, "dns_seed_rack_size",
                          "required with dns_seed_type srv: the replicas of each rack's StatefulSet")
    if values["dns_seed_rack_size"] and not srv:
        raise ConfigError(source, "dns_seed_rack_size", "only read with dns_seed_type srv")
