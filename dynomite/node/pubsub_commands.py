# -*- test-case-name: tests.unit.test_pubsub -*-
"""
The pub/sub commands a node answers itself: (P|S)SUBSCRIBE,
(P|S)UNSUBSCRIBE, PUBLISH, SPUBLISH and PUBSUB, registered in
`dynomite.node.builtins.BUILTINS`; and the subscriber-mode rule.

The node routes messages itself (`dynomite.node.pubsub_bus`); the local
Redis's pub/sub is never used for clients' channels.  PUBLISH answers the
receivers on this node (as Redis Cluster); PUBSUB CHANNELS, NUMSUB, NUMPAT,
SHARDCHANNELS and SHARDNUMSUB describe this node's subscriptions, as in
Redis Cluster where each node answers for its own clients.

An ACL user without ``allchannels`` (``Session.user``) may subscribe and publish only to
the channels its ``&pattern`` rules grant, and PSUBSCRIBE only to those
patterns themselves, as Redis 7.0 checks them.

A RESP2 client with a subscription is in subscriber mode
(``Session.pubsub_only``): the dispatcher refuses every command but
`SUBSCRIBER_ALLOWED`, with Redis 7.0's words (`subscriber_refusal`), and
PING answers ``["pong", arg]`` (`dynomite.node.builtins.ping`).  A RESP3
client keeps running any command; messages reach it as push frames.
"""

from __future__ import annotations

from typing import Sequence

from dynomite.commands import table as commands
from dynomite.node.builtins import builtin
from dynomite.node.pubsub import CHANNEL, PATTERN, SHARD
from dynomite.wire import resp

__all__ = ["SUBSCRIBER_ALLOWED", "subscriber_refusal"]

#: What a RESP2 client in subscriber mode may run (Redis 7.0's list).
SUBSCRIBER_ALLOWED = frozenset(
    "subscribe psubscribe ssubscribe unsubscribe punsubscribe sunsubscribe ping quit reset".split())


def subscriber_refusal(cmd, args: Sequence[bytes]) -> bytes:
    """Redis 7.0's error for ``cmd`` run in subscriber mode (a subcommand by its full name)."""
    if cmd.subcommands and len(args) > 1:
        cmd = commands.resolve(cmd, args) or cmd
    return resp.error(
        "ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are "
        "allowed in this context" % cmd.name)


NOPERM_CHANNEL = resp.error("NOPERM this user has no permissions to access one of the channels used as arguments")


def _channels_refused(user, names: Sequence[bytes], patterns: bool) -> bool:
    """Whether a restricted ``user`` may not use every one of ``names`` (Redis 7.0's rule)."""
    if user is None or user.all_channels:
        return False
    if patterns:
        # a pattern is granted only by the same pattern, literally
        granted = set(user.channel_patterns)
        return any(name.decode("utf-8", "replace") not in granted for name in names)
    return not all(user.may_use_channel(name) for name in names)


def _subscribe(kind: int):
    def handler(node, client, args):
        if _channels_refused(client.session.user, args[1:], kind == PATTERN):
            return NOPERM_CHANNEL
        return node.pubsub.subscribe(client, kind, args[1:])
    return handler


def _unsubscribe(kind: int):
    def handler(node, client, args):
        return node.pubsub.unsubscribe(client, kind, args[1:])
    return handler


for _kind, _names in ((CHANNEL, ("subscribe", "unsubscribe")), (PATTERN, ("psubscribe", "punsubscribe")),
                      (SHARD, ("ssubscribe", "sunsubscribe"))):
    builtin(_names[0])(_subscribe(_kind))
    builtin(_names[1])(_unsubscribe(_kind))


@builtin("publish")
def publish(node, client, args):
    if _channels_refused(client.session.user, args[1:2], False):
        return NOPERM_CHANNEL
    return resp.integer(node.pubsub.publish(client.session.id, args[1], args[2]))


@builtin("spublish")
def spublish(node, client, args):
    if _channels_refused(client.session.user, args[1:2], False):
        return NOPERM_CHANNEL
    return resp.integer(node.pubsub.publish(client.session.id, args[1], args[2], True))


_HELP = [
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
]


@builtin("pubsub")
def pubsub(node, client, args):
    cmd = commands.lookup(args[0])
    sub = commands.resolve(cmd, args)
    if sub is None:
        return resp.error("ERR unknown subcommand '%s'. Try PUBSUB HELP."
                          % args[1][:128].decode("utf-8", "replace"))
    if not commands.arity_ok(sub, len(args)):
        return resp.error("ERR wrong number of arguments for '%s' command" % sub.name)
    registry = node.pubsub.registry
    name = sub.name
    if name == "pubsub|channels" or name == "pubsub|shardchannels":
        kind = CHANNEL if name == "pubsub|channels" else SHARD
        return resp.array([resp.bulk(c) for c in registry.names(kind, args[2] if len(args) > 2 else None)])
    if name == "pubsub|numsub" or name == "pubsub|shardnumsub":
        kind = CHANNEL if name == "pubsub|numsub" else SHARD
        channels = args[2:]
        counts = registry.numsub(kind, channels)
        out = []
        for channel, n in zip(channels, counts):
            out.append(resp.bulk(channel))
            out.append(resp.integer(n))
        return resp.array(out)
    if name == "pubsub|numpat":
        return resp.integer(registry.numpat())
    return resp.array([resp.simple(line) for line in _HELP])
