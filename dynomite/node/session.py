# -*- test-case-name: tests.unit.test_node -*-
"""
What the node remembers about one client connection.

A session is plain state (protocol version, authentication, name,
consistency overrides) read on the hot path and changed only by the
commands the node answers itself (HELLO, AUTH, CLIENT, RESET,
DYNO_CONFIG:CONN_CONSISTENCY).
"""

from __future__ import annotations

import itertools
from typing import Optional

_ids = itertools.count(1)


class Session:
    """Per-connection state; ``id`` is unique in this process, like CLIENT ID."""

    __slots__ = (
        "id",
        "address",
        "resp",
        "authenticated",
        "name",
        "lib_name",
        "lib_ver",
        "read_consistency",
        "write_consistency",
        "quitting",
        "created",
    )

    def __init__(self, address: str, authenticated: bool, created: float) -> None:
        self.id = next(_ids)
        self.address = address
        self.created = created
        self.reset(authenticated)

    def reset(self, authenticated: bool) -> None:
        """Back to a fresh connection's state (RESET), keeping id and address."""
        self.resp = 2
        self.authenticated = authenticated
        self.name: Optional[bytes] = None
        self.lib_name: Optional[bytes] = None
        self.lib_ver: Optional[bytes] = None
        self.read_consistency: Optional[str] = None
        self.write_consistency: Optional[str] = None
        self.quitting = False
