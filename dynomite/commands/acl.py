# -*- test-case-name: tests.unit.test_acl -*-
"""
ACL users: Redis 7.0's rules, parsed and compiled once, checked per request.

A user is written as in a Redis ACL file (``aclfile``), one per line::

    user alice on #<sha256 hex> ~app:* &news.* -@all +@read +@write -@dangerous

`User.apply` takes the rules in order, with Redis's meaning: ``on``/``off``,
``>pass``/``<pass``, ``#hash``/``!hash``, ``nopass``, ``resetpass``,
``~pattern``/``allkeys``/``resetkeys``, ``&pattern``/``allchannels``/
``resetchannels``, ``+cmd``/``-cmd``/``+cmd|sub``/``-cmd|sub``,
``+@category``/``-@category``, ``allcommands``/``nocommands``, ``reset``.
Categories are Redis's own, read from the command table
(`dynomite.commands.table`, generated from Redis 7.0). Not supported, and
refused with the reason: selectors ``(...)``, read/write-only key patterns
(``%R~``, ``%W~``) and first-argument rules (``+select|0``).

The compiled user holds the set of command names it may run (a container's
subcommands by their own names, ``client|list``) and its key patterns as
predicates (`dynomite.commands.globmatch`); `User.denial` answers one
request with one set lookup and one predicate per key. A user with every
command and every key is not `User.restricted`, and the node does not look
at it again per request.

`Acl` is the set of users. The ``default`` user is the one a connection
starts as: ``on nopass ~* &* +@all`` unless the rules define it, and
``requirepass`` is its password (as in Redis); giving both is refused.
Passwords are kept as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from dynomite.commands import table as commands
from dynomite.commands.globmatch import compile_pattern
from dynomite.config.yamlio import ConfigError

__all__ = ["CATEGORIES", "Acl", "AclError", "User", "category_commands", "load", "split_args"]

#: Redis 7.0's ACL categories, in the order ``ACL CAT`` lists them.
CATEGORIES = (
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
    "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous",
    "connection", "transaction", "scripting",
)

_EVERY = commands.every()
_ALL_NAMES = frozenset(c.name for c in _EVERY)
_BY_CATEGORY: Dict[str, frozenset] = {
    cat: frozenset(c.name for c in _EVERY if cat in c.categories) for cat in CATEGORIES
}
_NO_AUTH = frozenset(c.name for c in _EVERY if "no_auth" in c.flags)   # AUTH, HELLO, QUIT
_DUMMY_DIGEST = hashlib.sha256(b"").hexdigest()


class AclError(ValueError):
    """
    A rule Redis would refuse, or one this node does not support; the text
    says which, and ``key`` the configuration key it came from.
    """

    def __init__(self, reason: str, key: str = "acl_file") -> None:
        ValueError.__init__(self, reason)
        self.key = key


def split_args(line: str) -> List[str]:
    """Split a line as Redis's ``sdssplitargs`` does: spaces, and "..." or '...' quoting."""
    out: List[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i == n:
            return out
        quote = line[i] if line[i] in "\"'" else None
        i += 1 if quote else 0
        word: List[str] = []
        while True:
            if i == n:
                if quote:
                    raise AclError("unbalanced quotes")
                break
            c = line[i]
            if quote is None and c.isspace():
                break
            if c == quote:
                i += 1
                if i < n and not line[i].isspace():
                    raise AclError("a closing quote must be followed by a space")
                break
            if quote == '"' and c == "\\" and i + 1 < n:
                i += 1
                c = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}.get(line[i], line[i])
            elif quote == "'" and c == "\\" and line[i + 1:i + 2] == "'":
                i += 1
                c = "'"
            word.append(c)
            i += 1
        out.append("".join(word))


def _digest(password: bytes) -> str:
    return hashlib.sha256(password).hexdigest()


class User:
    """One ACL user: a new one is ``off``, with no password, keys, channels or commands."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.enabled = False
        self.nopass = False
        self.passwords: List[str] = []      # SHA-256 hex digests, in the order given
        self.all_commands = False
        self.commands: set = set()          # names it may run: "get", "client|list"
        self._base = "-@all"                # the last +@all / -@all, for describe()
        self._command_rules: List[str] = []  # the command rules since then
        self.all_keys = False
        self.key_patterns: List[str] = []
        self._keys: Tuple[Callable[[bytes], bool], ...] = ()
        self.all_channels = False
        self.channel_patterns: List[str] = []
        self._channels: Tuple[Callable[[bytes], bool], ...] = ()

    # -- rules -------------------------------------------------------------

    def apply(self, rule: str) -> None:
        """Apply one rule, as ``ACL SETUSER`` does; raise `AclError` for a bad one."""
        lowered = rule.lower()
        simple = _SIMPLE.get(lowered)
        if simple is not None:
            simple(self)
        elif rule[:1] in "+-":
            self._command_rule(rule)
        elif rule[:1] == "~" or lowered.startswith("%rw~"):
            self._add_key_pattern(rule[1:] if rule[0] == "~" else rule[4:])
        elif rule[:1] == "%":
            raise AclError("read or write only key patterns (%%R~, %%W~) are not supported: %r" % rule)
        elif rule[:1] == "&":
            self._add_channel_pattern(rule[1:])
        elif rule[:1] == ">":
            self._add_password(_digest(rule[1:].encode("utf-8")))
        elif rule[:1] == "#":
            self._add_password(_check_hash(rule[1:]))
        elif rule[:1] in "<!":
            digest = _digest(rule[1:].encode("utf-8")) if rule[0] == "<" else _check_hash(rule[1:])
            if digest not in self.passwords:
                raise AclError("the password you are trying to remove from the user does not exist")
            self.passwords.remove(digest)
        elif rule[:1] == "(":
            raise AclError("selectors are not supported: %r" % rule)
        else:
            raise AclError("syntax error in ACL rule %r" % rule)

    def _set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled

    def _set_nopass(self) -> None:
        self.nopass = True
        self.passwords = []

    def _reset_passwords(self) -> None:
        self.nopass = False
        self.passwords = []

    def _add_password(self, digest: str) -> None:
        self.nopass = False
        if digest not in self.passwords:
            self.passwords.append(digest)

    def _all_keys(self) -> None:
        self.all_keys = True
        self.key_patterns = []
        self._keys = ()

    def _reset_keys(self) -> None:
        self.all_keys = False
        self.key_patterns = []
        self._keys = ()

    def _add_key_pattern(self, pattern: str) -> None:
        if pattern == "*":
            self._all_keys()
        elif self.all_keys:
            raise AclError("adding a pattern after the * pattern (or the 'allkeys' flag) has no "
                           "effect; use 'resetkeys' first")
        elif pattern not in self.key_patterns:
            self.key_patterns.append(pattern)
            self._keys += (compile_pattern(pattern.encode("utf-8")),)

    def _all_channels(self) -> None:
        self.all_channels = True
        self.channel_patterns = []
        self._channels = ()

    def _reset_channels(self) -> None:
        self.all_channels = False
        self.channel_patterns = []
        self._channels = ()

    def _add_channel_pattern(self, pattern: str) -> None:
        if pattern == "*":
            self._all_channels()
        elif self.all_channels:
            raise AclError("adding a pattern after the * pattern (or the 'allchannels' flag) has "
                           "no effect; use 'resetchannels' first")
        elif pattern not in self.channel_patterns:
            self.channel_patterns.append(pattern)
            self._channels += (compile_pattern(pattern.encode("utf-8")),)

    def _set_all_commands(self, allowed: bool) -> None:
        self.all_commands = allowed
        self.commands = set(_ALL_NAMES) if allowed else set()
        self._base = "+@all" if allowed else "-@all"
        self._command_rules = []

    def _command_rule(self, rule: str) -> None:
        add = rule[0] == "+"
        name = rule[1:].lower()
        if name == "@all":
            self._set_all_commands(add)
            return
        if name.startswith("@"):
            names = _BY_CATEGORY.get(name[1:])
            if names is None:
                raise AclError("unknown command or category name in ACL: %r" % rule)
        else:
            names = _command_names(name, rule)
        if add:
            self.commands |= names
        else:
            self.commands -= names
            self.all_commands = False
        if not name.startswith("@"):   # as Redis: a later rule for a command replaces an earlier one
            self._command_rules = [r for r in self._command_rules if r[1:].lower() != name]
        self._command_rules.append(rule[0] + name)

    def _reset(self) -> None:
        self._reset_passwords()
        self._reset_keys()
        self._reset_channels()
        self._set_all_commands(False)
        self.enabled = False

    # -- checks ------------------------------------------------------------

    @property
    def restricted(self) -> bool:
        """Whether some command or key is refused to this user (channels: pub/sub is not served)."""
        return not (self.all_commands and self.all_keys)

    def may_run(self, cmd: commands.Command) -> bool:
        """Whether this user may run ``cmd`` (a subcommand is checked by its own name)."""
        return self.all_commands or cmd.name in self.commands or cmd.name in _NO_AUTH

    def may_touch(self, key: bytes) -> bool:
        """Whether one of this user's key patterns grants ``key``."""
        if self.all_keys:
            return True
        for granted in self._keys:
            if granted(key):
                return True
        return False

    def may_use_channel(self, channel: bytes) -> bool:
        """Whether one of this user's channel patterns grants ``channel``."""
        return self.all_channels or any(granted(channel) for granted in self._channels)

    def denial(self, cmd: commands.Command, args: Sequence[bytes]) -> Optional[Tuple[str, bytes]]:
        """
        None if this user may run ``args`` (``cmd`` is its resolved command),
        else why not: ``("command", name)`` or ``("key", the first refused key)``,
        checked in Redis's order.
        """
        if not self.may_run(cmd):
            return "command", cmd.name.encode()
        if not self.all_keys and cmd.key_specs:
            for key in commands.keys(cmd, args):
                if not self.may_touch(key):
                    return "key", key
        return None

    def authenticates(self, password: bytes) -> bool:
        """Whether this user is on and ``password`` is one of its own (constant time in the password)."""
        digest = _digest(password)
        ok = False
        for known in self.passwords:
            if hmac.compare_digest(digest, known):
                ok = True
        if not self.passwords:
            hmac.compare_digest(digest, _DUMMY_DIGEST)   # the same work either way
        return self.enabled and (ok or self.nopass)

    def describe(self) -> str:
        """The user as ``ACL LIST`` shows it (Redis's layout; passwords as hashes)."""
        parts = ["user", self.name, "on" if self.enabled else "off"]
        if self.nopass:
            parts.append("nopass")
        parts += ["#" + p for p in self.passwords]
        parts += ["~*"] if self.all_keys else ["~" + p for p in self.key_patterns]
        parts += ["&*"] if self.all_channels else ["resetchannels"] + ["&" + p for p in self.channel_patterns]
        parts.append(self._base)
        parts += self._command_rules
        return " ".join(parts)


_SIMPLE: Dict[str, Callable[[User], None]] = {
    "on": lambda u: u._set_enabled(True),
    "off": lambda u: u._set_enabled(False),
    "nopass": User._set_nopass,
    "resetpass": User._reset_passwords,
    "allkeys": User._all_keys,
    "resetkeys": User._reset_keys,
    "allchannels": User._all_channels,
    "resetchannels": User._reset_channels,
    "allcommands": lambda u: u._set_all_commands(True),
    "nocommands": lambda u: u._set_all_commands(False),
    "reset": User._reset,
    # about RESTORE payloads, which Redis checks itself; nothing to do here
    "sanitize-payload": lambda u: None,
    "skip-sanitize-payload": lambda u: None,
    "clearselectors": lambda u: None,
}


def _check_hash(text: str) -> str:
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise AclError("the password hash must be exactly 64 characters and contain only "
                       "lowercase hexadecimal characters")
    return text


def _command_names(name: str, rule: str) -> frozenset:
    """The names ``+name`` grants: a container with all its subcommands, or one subcommand."""
    parent, _, sub = name.partition("|")
    cmd = commands.lookup(parent.encode())
    if cmd is None:
        raise AclError("unknown command or category name in ACL: %r" % rule)
    if not sub:
        return frozenset([cmd.name] + [s.name for s in cmd.subcommands.values()])
    found = cmd.subcommands.get(sub.encode())
    if found is None:
        raise AclError("allowing first-arg of a subcommand is not supported: %r" % rule)
    return frozenset([found.name])


class Acl:
    """The users of one node, by name; ``default`` is always among them."""

    def __init__(self, users: Dict[str, User]) -> None:
        self.users = users
        self.default = users["default"]
        #: Whether any user may be refused something: if not, the node checks nothing per request.
        self.restricted = any(u.restricted for u in users.values())

    @classmethod
    def from_lines(cls, lines: Iterable[Tuple[str, str, str]], requirepass: Optional[str] = None) -> "Acl":
        """
        Users from ACL-file lines, each ``(key, where, text)``: ``key`` is the
        configuration key they come from and ``where`` names the line in
        errors (``AclError("<where>: <reason>", key)``). Blank lines are
        skipped.
        """
        users: Dict[str, User] = {}
        for key, where, text in lines:
            try:
                words = split_args(text)
                if not words:
                    continue
                if words[0] != "user" or len(words) < 2:
                    raise AclError("a line must start with 'user <name>'")
                name = words[1]
                if name in users:
                    raise AclError("duplicate user '%s'" % name)
                if not name or any(c.isspace() for c in name):
                    raise AclError("invalid user name %r" % name)
                user = User(name)
                for rule in words[2:]:
                    user.apply(rule)
            except AclError as e:
                raise AclError("%s: %s" % (where, e), key) from None
            users[name] = user
        if "default" in users:
            if requirepass is not None:
                raise AclError("requirepass is the default user's password: set it there "
                               "or define the default user in the ACL, not both", "requirepass")
        else:
            default = User("default")
            for rule in ("on", "nopass" if requirepass is None else ">" + requirepass,
                         "~*", "&*", "+@all"):
                default.apply(rule)
            users = dict(users, default=default)
        return cls(dict(sorted(users.items())))

    def authenticate(self, name: bytes, password: bytes) -> Optional[User]:
        """The user ``name`` if it is on and ``password`` is its own, else None."""
        user = self.users.get(name.decode("utf-8", "replace"))
        if user is None:
            User("").authenticates(password)   # the same work for an unknown name
            return None
        return user if user.authenticates(password) else None

    @property
    def default_authenticated(self) -> bool:
        """Whether a new connection is authenticated at once (``default`` is on and nopass)."""
        return self.default.enabled and self.default.nopass


def category_commands(category: str) -> Optional[List[str]]:
    """``ACL CAT <category>``: the command names in it, None for an unknown category."""
    names = _BY_CATEGORY.get(category.lower())
    return None if names is None else sorted(names)


def load(config) -> Acl:
    """
    The users a `NodeConfig` gives (``acl_file``, then ``users``); a file
    that cannot be read or a bad rule raises `ConfigError` naming the
    configuration file, the key and the reason.
    """
    lines: List[Tuple[str, str, str]] = []
    if config.acl_file is not None:
        try:
            with open(config.acl_file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(config.source, "acl_file",
                              "cannot read %s: %s" % (config.acl_file, getattr(e, "strerror", None) or e))
        lines += [("acl_file", "%s line %d" % (config.acl_file, n), line)
                  for n, line in enumerate(text.splitlines(), 1)]
    lines += [("users", "entry %d" % n, line) for n, line in enumerate(config.users, 1)]
    try:
        return Acl.from_lines(lines, config.requirepass)
    except AclError as e:
        raise ConfigError(config.source, e.key, str(e)) from None
