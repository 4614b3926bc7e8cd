# -*- test-case-name: tests.unit.test_seeds -*-
"""
The value parsers of the keys that say where a node's peers are and how it
is known to them: ``dyn_seeds``, ``dyn_seed_provider`` and each provider's
keys (``dns_seed_name``, ``dns_seed_server``, ``florida_url``), and
``dyn_advertise``. Their rows are in the one table,
:data:`dynomite.config.keys.KEYS`; :func:`parse_seed` is also how seed
providers (:mod:`dynomite.peers.seeds`) read the seeds they fetch.
"""

from __future__ import annotations

from typing import Any, Tuple

from dynomite.config.parsers import _check_name, _text, _tokens
from dynomite.config.values import Address, Seed, make_address, split_fields
from dynomite.config.yamlio import Invalid, show

__all__ = ["SEED_PROVIDERS", "parse_seed"]


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
