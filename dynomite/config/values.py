# -*- test-case-name: tests.unit.test_config -*-
"""
The small value types of a node's configuration: :class:`Address` and
:class:`Seed`, and the ``host:port[:more]`` splitting they are parsed with.

They sit below the key table (:mod:`dynomite.config.keys`), whose parsers
build them, and are re-exported by :mod:`dynomite.config.model`, which is
where the rest of the package imports them from.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, List, Tuple

from dynomite.config.vocabulary import NORMAL
from dynomite.config.yamlio import Invalid, show

__all__ = ["Address", "Seed", "make_address", "split_fields"]


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
        host, port = split_fields(text, (2,), "host:port")
        return make_address(host, port, allow_zero_port)


@dataclass(frozen=True)
class Seed:
    """
    A peer from ``dyn_seeds``: where it listens and what it owns.
    ``status`` is its place on the ring as gossip says
    (`dynomite.config.vocabulary.RING_STATUSES`); seeds from a file or a
    provider are NORMAL.
    """

    address: Address
    rack: str
    datacenter: str
    tokens: Tuple[int, ...]
    status: str = NORMAL
    #: when its gossip entry began (its generation; 0 when not from gossip):
    #: of two moves in one rack the older goes first
    generation: int = 0


def split_fields(text: Any, counts: Tuple[int, ...], form: str) -> List[str]:
    """
    Split ``host:a:b...`` into fields; the host may be ``[IPv6]``.

    Unbracketed IPv6 is refused rather than guessed at, since with optional
    fields (a server's weight) it would be ambiguous.
    """
    if not isinstance(text, str):
        raise Invalid(f"expected {form}, got {show(text)}")
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1:] if end > 0 else ""
        if end < 0 or not rest.startswith(":"):
            raise Invalid(f"expected {form}, got {text!r}")
        host = text[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"{host!r} in brackets is not an IPv6 address") from None
        fields = [host] + rest[1:].split(":")
    else:
        fields = text.split(":")
        if len(fields) > max(counts):
            raise Invalid(
                f"expected {form}, got {text!r} (write IPv6 hosts in brackets, e.g. [::1])"
            )
    if len(fields) not in counts:
        raise Invalid(f"expected {form}, got {text!r}")
    return fields


def make_address(host: str, port_text: str, allow_zero_port: bool) -> Address:
    """An :class:`Address` from split fields; :class:`Invalid` names what is wrong with them."""
    if not host or any(c.isspace() for c in host):
        raise Invalid(f"bad host {host!r}")
    port_text = port_text.strip()
    if not (port_text.isdigit() and port_text.isascii()):
        raise Invalid(f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_zero_port else 1
    if not low <= port <= 65535:
        raise Invalid(f"port {port} is out of range {low}..65535")
    return Address(host, port)
