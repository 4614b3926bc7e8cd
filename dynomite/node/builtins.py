# -*- test-case-name: tests.unit.test_node -*-
"""
Commands the node answers itself, without asking Redis.

These are connection and server commands whose answer belongs to the node
(HELLO, AUTH, CLIENT, COMMAND, INFO, ...), or that Redis would answer for
the wrong party (CLIENT ID would name the node's pooled connection, not the
client).  Each handler takes ``(node, client, args)`` and returns the raw
reply in the client's protocol version, or a Deferred firing with it.
"""

from __future__ import annotations

from typing import Callable, Dict

from dynomite import __version__

from dynomite.commands import table as commands
from dynomite.node.access import WRONGPASS, acl_command

from dynomite.wire import resp
from dynomite.config.vocabulary import CONSISTENCY_LEVELS

NO_PASSWORD = resp.error(
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)
HELLO_NOAUTH = resp.error(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
    "select the RESP protocol version at the same time"
)
SYNTAX = resp.error("ERR syntax error")
NOT_INTEGER = resp.error("ERR value is not an integer or out of range")
BAD_CLIENT_NAME = resp.error(
    "ERR Client names cannot contain spaces, newlines or special characters."
)

# Commands a client may send before it has authenticated (as in Redis 7).
NOAUTH_ALLOWED = frozenset({"auth", "hello", "quit"})

Handler = Callable[..., object]
BUILTINS: Dict[str, Handler] = {}


def builtin(name: str):
    def register(f: Handler) -> Handler:
        BUILTINS[name] = f
        return f

    return register


__all__ = ["BUILTINS", "NOAUTH_ALLOWED", "WRONGPASS", "builtin"]


def _valid_client_name(name: bytes) -> bool:
    return all(33 <= c <= 126 for c in name)


# -- connection ------------------------------------------------------------


#: PING's reply in RESP2 subscriber mode: ["pong", ""] (or the argument)
_SUBSCRIBED_PONG = b"*2\r\n$4\r\npong\r\n"


@builtin("ping")
def ping(node, client, args):
    if client.session.pubsub_only:
        return _SUBSCRIBED_PONG + resp.bulk(args[1] if len(args) > 1 else b"")
    if len(args) == 1:
        return resp.PONG
    return resp.bulk(args[1])


@builtin("echo")
def echo(node, client, args):
    return resp.bulk(args[1])


@builtin("quit")
def quit_(node, client, args):
    client.session.quitting = True
    return resp.OK


@builtin("select")
def select(node, client, args):
    try:
        db = int(args[1])
    except ValueError:
        return NOT_INTEGER
    if db != 0:
        return resp.error("ERR DB index is out of range (dynomite serves database 0 only)")
    return resp.OK


@builtin("auth")
def auth(node, client, args):
    if len(args) > 3:
        return SYNTAX
    if len(args) == 2 and node.acl.default.nopass:
        return NO_PASSWORD
    name, password = (b"default", args[1]) if len(args) == 2 else (args[1], args[2])
    user = node.auth.authenticate(client.session.host, name, password)
    if isinstance(user, bytes):
        return user
    client.session.login(user)
    return resp.OK


@builtin("hello")
def hello(node, client, args):
    session = client.session
    version = session.resp
    if len(args) > 1:
        try:
            version = int(args[1])
        except ValueError:
            return resp.error("ERR Protocol version is not an integer or out of range")
        if version not in (2, 3):
            return resp.error("NOPROTO unsupported protocol version")
    name = user = None
    i = 2
    while i < len(args):
        option = args[i].lower()
        more = len(args) - i - 1
        if option == b"auth" and more >= 2:
            user = node.auth.authenticate(session.host, args[i + 1], args[i + 2])
            if isinstance(user, bytes):
                return user
            i += 3
        elif option == b"setname" and more >= 1:
            name = args[i + 1]
            if not _valid_client_name(name):
                return BAD_CLIENT_NAME
            i += 2
        else:
            return resp.error("ERR Syntax error in HELLO option '%s'" % option.decode("utf-8", "replace"))
    if user is None and not session.authenticated:
        return HELLO_NOAUTH
    if user is not None:
        session.login(user)
    session.resp = version
    session.pubsub_only = version == 2 and session.subscriptions is not None
    if name is not None:
        session.name = name
    fields = [
        (resp.bulk(b"server"), resp.bulk(b"redis")),
        (resp.bulk(b"version"), resp.bulk(node.monitor.redis_version or "7.0.0")),
        (resp.bulk(b"proto"), resp.integer(version)),
        (resp.bulk(b"id"), resp.integer(session.id)),
        (resp.bulk(b"mode"), resp.bulk(b"standalone")),
        (resp.bulk(b"role"), resp.bulk(b"master")),
        (resp.bulk(b"modules"), resp.array([])),
    ]
    return resp.map_(fields, version)


@builtin("reset")
def reset(node, client, args):
    node.pubsub.drop(client)
    node.release_watch(client)
    client.session.reset(node.acl.default_authenticated, node.acl.default)
    return resp.simple(b"RESET")


BUILTINS["acl"] = acl_command


@builtin("client")
def client_(node, client, args):
    session = client.session
    sub = args[1].lower()
    n = len(args)
    if sub == b"setname" and n == 3:
        if not _valid_client_name(args[2]):
            return BAD_CLIENT_NAME
        session.name = args[2] or None
        return resp.OK
    if sub == b"getname" and n == 2:
        return resp.bulk(session.name) if session.name else resp.null(session.resp)
    if sub == b"id" and n == 2:
        return resp.integer(session.id)
    if sub == b"setinfo" and n == 4:
        attr = args[2].lower()
        if attr == b"lib-name":
            session.lib_name = args[3]
        elif attr == b"lib-ver":
            session.lib_ver = args[3]
        else:
            return resp.error("ERR Unrecognized option '%s'" % args[2].decode("utf-8", "replace"))
        return resp.OK
    if sub == b"info" and n == 2:
        return resp.verbatim(_client_line(node, client) + b"\n", session.resp)
    if sub == b"list" and n == 2:
        lines = b"".join(_client_line(node, c) + b"\n" for c in sorted(node.clients, key=lambda c: c.session.id))
        return resp.verbatim(lines, session.resp)
    return resp.error(
        "ERR unsupported command 'client %s'" % sub.decode("utf-8", "replace")
    )


def _client_line(node, client) -> bytes:
    s = client.session
    age = int(node.clock.seconds() - s.created)
    return b"id=%d addr=%s name=%s age=%d db=0 resp=%d lib-name=%s lib-ver=%s" % (
        s.id,
        s.address.encode(),
        s.name or b"",
        age,
        s.resp,
        s.lib_name or b"",
        s.lib_ver or b"",
    )


# -- server ----------------------------------------------------------------


@builtin("command")
def command(node, client, args):
    version = client.session.resp
    if len(args) == 1:
        return commands.command_info_reply(None, version)
    sub = args[1].lower()
    if sub == b"count" and len(args) == 2:
        return resp.integer(commands.command_count())
    if sub == b"info":
        return commands.command_info_reply(args[2:] or None, version)
    if sub == b"docs":
        return commands.command_docs_reply(args[2:] or None, version)
    if sub == b"list" and len(args) == 2:
        return resp.array([resp.bulk(c.name) for c in commands.served()])
    if sub == b"getkeys" and len(args) >= 3:
        cmd = commands.lookup(args[2])
        if cmd is None:
            return resp.error("ERR Invalid command specified")
        if not commands.arity_ok(cmd, len(args) - 2):
            return resp.error("ERR Invalid number of arguments specified for command")
        keys = commands.keys(cmd, args[2:])
        if not keys:
            return resp.error("ERR The command has no key arguments")
        return resp.array([resp.bulk(k) for k in keys])
    return resp.error(
        "ERR unknown subcommand '%s'. Try COMMAND HELP." % args[1].decode("utf-8", "replace")
    )


@builtin("config")
def config(node, client, args):
    sub = args[1].lower()
    if sub == b"get":
        return resp.map_([], client.session.resp)
    return resp.error("ERR unsupported command 'config %s'" % sub.decode("utf-8", "replace"))


@builtin("dyno_config:conn_consistency")
def conn_consistency(node, client, args):
    level = args[1].decode("utf-8", "replace").upper()
    if level not in CONSISTENCY_LEVELS:
        return resp.error(
            "ERR unknown consistency level '%s'; expected one of %s"
            % (level, ", ".join(CONSISTENCY_LEVELS))
        )
    client.session.read_consistency = level
    client.session.write_consistency = level
    return resp.OK


# Sections of INFO that include the node's own section.
_WITH_DYNOMITE = frozenset({b"dynomite", b"default", b"all", b"everything"})


@builtin("info")
def info(node, client, args):
    sections = [a.lower() for a in args[1:]]
    version = client.session.resp
    own = dynomite_info(node) if not sections or _WITH_DYNOMITE.intersection(sections) else b""
    backend_sections = [s for s in sections if s != b"dynomite"]
    if sections and not backend_sections:
        return resp.verbatim(own, version)

    def done(text):
        text = text if isinstance(text, bytes) else str(text).encode()
        return resp.verbatim(own + text, version)

    def failed(_):
        return resp.verbatim(own, version)

    return node.monitor.info(backend_sections).addCallbacks(done, failed)


def dynomite_info(node) -> bytes:
    """The ``# Dynomite`` section of INFO."""
    c = node.config
    ds = node.datastore
    fields = [
        ("dynomite_version", __version__),
        ("pool_name", c.pool_name),
        ("datacenter", c.datacenter),
        ("rack", c.rack),
        ("tokens", ",".join(str(t) for t in c.tokens)),
        ("uptime_in_seconds", int(node.clock.seconds() - node.started)),
        ("connected_clients", len(node.clients)),
        ("total_connections_received", node.connections_accepted),
        ("protocol_errors", node.protocol_errors),
        ("read_consistency", node.settings.read_consistency),
        ("write_consistency", node.settings.write_consistency),
        ("datastore", str(c.datastore)),
        ("datastore_status", "up" if ds.is_up else "down"),
        ("datastore_in_flight", ds.in_flight),
        ("datastore_timeouts", ds.timed_out_total),
    ]
    fields.extend(sorted(node.pubsub.info().items()))
    body = "".join("%s:%s\r\n" % f for f in fields)
    return ("# Dynomite\r\n" + body + "\r\n").encode("utf-8")
