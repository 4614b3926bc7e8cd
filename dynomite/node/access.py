# -*- test-case-name: tests.unit.test_acl -*-
"""
Who a client is and what it may do: AUTH against the ACL users, the
per-address limit on failed AUTHs, the NOPERM refusals, and the ``ACL``
command.

The rules themselves are `dynomite.commands.acl` (pure); this module puts
them on connections. `AuthGuard` answers every AUTH and ``HELLO ... AUTH``:
after `MAX_FAILURES` failed attempts from one client address within
`FAILURE_WINDOW` seconds, every AUTH from that address is refused for
`BLOCK_SECONDS`, right password or not, so a password cannot be guessed
faster than that from one address. Failures are counted by reason
(``dynomite_auth_failures_total``).

`refusal` is what the node asks of a request when the session's user is
restricted (`Session.acl` is None otherwise, and nothing is checked), and
`first_refused` the same for a pipeline before it is cut into runs, so a
key pattern holds for every key of a run.
"""

from __future__ import annotations

import secrets
from typing import Dict, List, Optional, Sequence, Union

from dynomite.commands import table as commands
from dynomite.commands.acl import CATEGORIES, Acl, User, category_commands
from dynomite.wire import resp

__all__ = ["AuthGuard", "acl_command", "first_refused", "refusal"]

#: Failed AUTHs one address may make within FAILURE_WINDOW seconds ...
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0
#: ... before its AUTHs are all refused for this long.
BLOCK_SECONDS = 60.0
#: Addresses remembered at most (the oldest are forgotten first beyond it).
MAX_ADDRESSES = 100000

WRONGPASS = resp.error("WRONGPASS invalid username-password pair or user is disabled.")
NOPERM_KEY = resp.error("NOPERM this user has no permissions to access one of the keys used as arguments")


def noperm_command(name: bytes) -> bytes:
    """Redis 7.0's refusal of a command (a subcommand is named ``parent|sub``)."""
    return b"-NOPERM this user has no permissions to run the '%s' command\r\n" % name


class _Failures:
    __slots__ = ("since", "count", "blocked_until")

    def __init__(self, now: float) -> None:
        self.since = now
        self.count = 0
        self.blocked_until = 0.0


class AuthGuard:
    """Checks credentials for AUTH and HELLO, limiting failed attempts per client address."""

    def __init__(self, acl: Acl, clock, failures: Dict[str, int], max_failures: int = MAX_FAILURES,
                 window: float = FAILURE_WINDOW, block: float = BLOCK_SECONDS,
                 max_addresses: int = MAX_ADDRESSES) -> None:
        self.acl = acl
        self.clock = clock
        self.failures = failures      # reason -> count: NodeMetrics.auth_failures
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.max_addresses = max_addresses
        self._hosts: Dict[str, _Failures] = {}

    def authenticate(self, host: str, name: bytes, password: bytes) -> Union[User, bytes]:
        """The user ``name``/``password`` log in as, or the error reply for the client at ``host``."""
        now = self.clock.seconds()
        entry = self._hosts.get(host)
        if entry is not None and entry.blocked_until > now:
            self.failures["throttled"] += 1
            return resp.error(
                "ERR too many failed authentication attempts from this address; retry in %d seconds"
                % max(1, int(entry.blocked_until - now + 0.999)))
        user = self.acl.authenticate(name, password)
        if user is not None:
            return user
        self.failures["wrongpass"] += 1
        if entry is None or now - entry.since >= self.window:
            entry = self._hosts[host] = _Failures(now)
            self._forget(now)
        entry.count += 1
        if entry.count >= self.max_failures:
            entry.blocked_until = now + self.block
            entry.since, entry.count = now + self.block, 0
        return WRONGPASS

    def _forget(self, now: float) -> None:
        """Keep at most ``max_addresses`` addresses: the expired ones go first, then the oldest."""
        hosts = self._hosts
        if len(hosts) <= self.max_addresses:
            return
        for host, entry in list(hosts.items()):
            if entry.blocked_until <= now and now - entry.since >= self.window:
                del hosts[host]
        while len(hosts) > self.max_addresses:
            del hosts[next(iter(hosts))]


def refusal(user: User, cmd: commands.Command, args: Sequence[bytes]) -> Optional[bytes]:
    """None if ``user`` may run ``args``, else the NOPERM reply Redis 7.0 would give."""
    if cmd.subcommands:
        cmd = commands.resolve(cmd, args) or cmd
    why = user.denial(cmd, args)
    if why is None:
        return None
    return noperm_command(why[1]) if why[0] == "command" else NOPERM_KEY


def first_refused(user: User, requests: List[List[bytes]], i: int) -> int:
    """
    The index of the first request from ``i`` on that ``user`` may not run,
    or that cannot be in a run anyway (not a single-key command with a
    valid arity); ``len(requests)`` if none.
    """
    lookup, arity_ok, KEY = commands.lookup, commands.arity_ok, commands.KEY
    n = len(requests)
    while i < n:
        args = requests[i]
        cmd = lookup(args[0])
        if cmd is None or cmd.route != KEY or cmd.subcommands or not arity_ok(cmd, len(args)):
            return i
        if user.denial(cmd, args) is not None:
            return i
        i += 1
    return n


# -- the ACL command -----------------------------------------------------------

_ACL = commands.lookup(b"acl")


def acl_command(node, client, args):
    """ACL WHOAMI, USERS, LIST, CAT, DRYRUN, GENPASS; the rest change users, which the config owns."""
    sub = _ACL.subcommands.get(args[1].lower())
    if sub is None:
        text = "-ERR unknown subcommand '%s'. Try ACL HELP." % args[1][:128].decode("utf-8", "replace")
        return text.replace("\r", " ").replace("\n", " ").encode("utf-8") + b"\r\n"
    if not commands.arity_ok(sub, len(args)):
        return b"-ERR wrong number of arguments for '%s' command\r\n" % sub.name.encode()
    handler = _SUBCOMMANDS.get(sub.name)
    if handler is None:
        return resp.error("ERR unsupported command '%s' (users come from the node's acl_file and users)"
                          % sub.name.replace("|", " "))
    return handler(node, client, args)


def _whoami(node, client, args):
    return resp.bulk(client.session.user.name)


def _users(node, client, args):
    return resp.array([resp.bulk(name) for name in node.acl.users])


def _list(node, client, args):
    return resp.array([resp.bulk(user.describe()) for user in node.acl.users.values()])


def _cat(node, client, args):
    if len(args) == 2:
        return resp.array([resp.bulk(c) for c in CATEGORIES])
    names = category_commands(args[2].decode("utf-8", "replace"))
    if names is None:
        return resp.error("ERR Unknown category '%s'" % args[2][:128].decode("utf-8", "replace"))
    return resp.array([resp.bulk(n) for n in names])


def _dryrun(node, client, args):
    name = args[2].decode("utf-8", "replace")
    user = node.acl.users.get(name)
    if user is None:
        return resp.error("ERR User '%s' not found" % name)
    cmd = commands.lookup(args[3])
    if cmd is not None and cmd.subcommands and len(args) > 4:
        cmd = commands.resolve(cmd, args[3:])
    if cmd is None:
        return resp.error("ERR Command '%s' not found" % args[3][:128].decode("utf-8", "replace"))
    if not commands.arity_ok(cmd, len(args) - 3):
        return resp.error("ERR wrong number of arguments for '%s' command" % cmd.name)
    why = user.denial(cmd, args[3:])
    if why is None:
        return resp.OK
    if why[0] == "command":
        return resp.bulk(b"This user has no permissions to run the '%s' command" % why[1])
    return resp.bulk(b"This user has no permissions to access the '%s' key" % why[1])


def _genpass(node, client, args):
    bits = 256
    if len(args) == 3:
        try:
            bits = int(args[2])
        except ValueError:
            bits = 0
        if not 0 < bits <= 4096:
            return resp.error("ERR ACL GENPASS argument must be the number of bits for the output "
                              "password, a positive number up to 4096")
    chars = (bits + 3) // 4
    return resp.bulk(secrets.token_hex((chars + 1) // 2)[:chars])


_SUBCOMMANDS = {
    "acl|whoami": _whoami,
    "acl|users": _users,
    "acl|list": _list,
    "acl|cat": _cat,
    "acl|dryrun": _dryrun,
    "acl|genpass": _genpass,
}
