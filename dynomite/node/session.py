# -*- test-case-name: tests.unit.test_node -*-
"""
What the node remembers about one client connection.

A session is plain state (protocol version, authentication and ACL user,
name, consistency overrides, pub/sub subscriptions) read on the hot path and changed only by the
commands the node answers itself (HELLO, AUTH, CLIENT, RESET,
DYNO_CONFIG:CONN_CONSISTENCY).

``user`` is the ACL user the client acts as (`dynomite.commands.acl`);
``acl`` is the same user when it is restricted and None when it may run
everything, so the hot path looks at one attribute and checks nothing for
an unrestricted user.
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
        "host",
        "user",
        "acl",
        "resp",
        "authenticated",
        "name",
        "lib_name",
        "lib_ver",
        "read_consistency",
        "write_consistency",
        "quitting",
        "created",
        "subscriptions",
        "pubsub_only",
        "multi",
        "multi_aborted",
        "watching",
    )

    def __init__(self, address: str, authenticated: bool, created: float, user=None) -> None:
        self.id = next(_ids)
        self.address = address
        #: the client's address without its port: failed AUTHs are limited per host
        self.host = address.rsplit(":", 1)[0]
        self.created = created
        self.reset(authenticated, user)

    def reset(self, authenticated: bool, user=None) -> None:
        """Back to a fresh connection's state (RESET) as ``user``, keeping id and address."""
        self.resp = 2
        self.authenticated = authenticated
        self.user = user
        self.acl = user if user is not None and user.restricted else None
        self.name: Optional[bytes] = None
        self.lib_name: Optional[bytes] = None
        self.lib_ver: Optional[bytes] = None
        self.read_consistency: Optional[str] = None
        self.write_consistency: Optional[str] = None
        self.quitting = False
        #: pub/sub: this client's `dynomite.node.pubsub.Subscriptions` (None:
        #: none), and whether it is in RESP2 subscriber mode; the registry
        #: keeps both (RESET must drop the subscriptions from it first)
        self.subscriptions = None
        self.pubsub_only = False
        #: MULTI: the commands queued, as (Command, args) (None: no MULTI),
        #: and whether one was refused, so EXEC must answer EXECABORT
        self.multi = None
        self.multi_aborted = False
        #: WATCH: the `dynomite.node.watch.Watching` (None: nothing watched)
        self.watching = None

    def login(self, user) -> None:
        """Authenticated as ``user`` (AUTH, HELLO ... AUTH)."""
        self.authenticated = True
        self.user = user
        self.acl = user if user.restricted else None

    def rebind(self, user) -> None:
        """The users were reloaded: act as ``user``, the new definition of this session's user."""
        self.user = user
        self.acl = user if user.restricted else None
