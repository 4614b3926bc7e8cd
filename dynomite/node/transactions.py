# -*- test-case-name: tests.cluster.test_transactions -*-
"""
MULTI, EXEC, DISCARD: transactions on the keys of one leader.

The node keeps a transaction's commands, as Redis does: MULTI answers
``+OK``, each command ``+QUEUED`` once it passed the checks Redis makes
before queuing (known command, arity, authentication, permissions); a
command refused there is answered with its error and marks the transaction,
which EXEC then discards with ``-EXECABORT``.  Commands the node answers
itself or spreads over the cluster (CLIENT, SCAN, FLUSHALL, SUBSCRIBE...)
are refused inside a transaction with Redis's words for commands it does
not allow there; PING and ECHO are queued like data commands.

EXEC sends the transaction where its keys are (`run_transaction`):

- its keys must share one write plan, i.e. one leader (a hash tag does
  that), else ``-CROSSSLOT`` and the transaction is discarded, as Redis
  Cluster answers keys of several slots;
- a transaction that writes is led like any write, as one run: the leader
  orders it among the keys' other writes and every replica applies it in
  one MULTI/EXEC (`dynomite.replication.applied_once`), so no replica ever
  shows half of it; one with a command that may not run twice (SPOP, a
  script...) runs once on the leader and the others get the state of its
  keys (`dynomite.commands.effects.transaction_effect`);
- one that only reads runs as MULTI/EXEC on the replicas a read of its keys
  goes to, at the connection's read level.

EXEC answers the array of the commands' replies, as Redis.  When the
client watches keys (`dynomite.node.watch`), EXEC carries their versions
to the leader that answered WATCH, which leads the transaction only if
none moved (else a null array, as Redis); EXEC and DISCARD forget the
watched keys.
"""

from __future__ import annotations

from typing import List

from dynomite.commands import table as commands
from dynomite.commands.determinism import NOT_DETERMINISTIC, absolute
from dynomite.commands.effects import transaction_effect
from dynomite.config.vocabulary import DC_EACH_SAFE_QUORUM, DC_SAFE_QUORUM
from dynomite.node.builtins import builtin
from dynomite.node.coordinator import SCRIPT_WRITES
from dynomite.node import watch
from dynomite.placement.router import CROSSSLOT
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_TRANSACTION
from dynomite.wire.replies import split_replies
from dynomite.wire.resp import ProtocolError, encode_command

__all__ = ["IMMEDIATE", "NOT_IN_MULTI", "QUEUED", "queue", "run_transaction"]

QUEUED = b"+QUEUED\r\n"
#: Redis's words for a command it does not allow inside a transaction.
NOT_IN_MULTI = b"-ERR Command not allowed inside a transaction\r\n"
EXECABORT = b"-EXECABORT Transaction discarded because of previous errors.\r\n"

#: Run at once even inside a transaction (the rest is queued).
IMMEDIATE = frozenset({"exec", "discard", "multi", "watch", "quit", "reset"})

# Commands the node answers itself that a transaction may carry to Redis
# (inside MULTI, Redis runs XREAD and XREADGROUP without blocking; an
# XREADGROUP makes the transaction travel as its keys' state, like any
# command that may not run twice).
_QUEUEABLE_NODE = frozenset({"ping", "echo", "unwatch", "xread", "xreadgroup"})


def queue(session, cmd, args) -> bytes:
    """Queue a checked command of a transaction; the reply for now."""
    if cmd.route in (commands.KEY, commands.MULTI_KEY) or cmd.name in _QUEUEABLE_NODE:
        session.multi.append((cmd, list(args)))
        return QUEUED
    session.multi_aborted = True
    return NOT_IN_MULTI


@builtin("multi")
def multi(node, client, args):
    session = client.session
    if session.multi is not None:
        return b"-ERR MULTI calls can not be nested\r\n"
    session.multi = []
    session.multi_aborted = False
    return b"+OK\r\n"


@builtin("discard")
def discard(node, client, args):
    session = client.session
    if session.multi is None:
        return b"-ERR DISCARD without MULTI\r\n"
    session.multi = None
    watch.release(node, session)
    return b"+OK\r\n"


@builtin("exec")
def exec_(node, client, args):
    session = client.session
    queued, aborted = session.multi, session.multi_aborted
    if queued is None:
        return b"-ERR EXEC without MULTI\r\n"
    session.multi = None
    session.multi_aborted = False
    if aborted:
        watch.release(node, session)
        return EXECABORT
    if not queued:
        if session.watching is None:
            return b"*0\r\n"
        watch.watched_check(node, session, client.slot(0))
        return None
    watching = session.watching
    session.watching = None
    run_transaction(node.coordinator, session, queued, client, watching)
    return None


def run_transaction(coordinator, session, queued, client, watching=None) -> None:
    """
    EXEC of the ``queued`` (Command, args) of a transaction, through
    ``coordinator`` (`dynomite.node.coordinator`): led as one run when it
    writes, run as MULTI/EXEC on the replicas of a read when it only
    reads; one reply, EXEC's array.  ``watching``: the keys the client
    watches (`dynomite.node.watch.Watching`), checked by their leader.
    """
    write = watching is not None or any(cmd.write or cmd.name in SCRIPT_WRITES for cmd, _ in queued)
    level = coordinator.level(session, write)
    if level == DC_EACH_SAFE_QUORUM:
        level = DC_SAFE_QUORUM   # here; other datacenters asynchronously (README)
    if write:
        now_ms = coordinator.now_ms()
        run = [absolute(cmd.name, args, now_ms) for cmd, args in queued]
    else:
        run = [args for _, args in queued]
    keys: List[bytes] = []
    for cmd, args in queued:
        keys.extend(k for k in commands.keys(cmd, args) if k not in keys)
    payload = b"".join([encode_command(args) for args in run])
    client.writing = write
    client.reading = not write
    slot = client.slot(len(payload))
    client.writing = client.reading = False
    count = len(run)
    if watching is not None:
        watched = keys + [k for k in watching.keys if k not in keys]
        plan = coordinator.router.route_keys(watched, True, level)
        if plan is None:
            watch.forget(coordinator, watching)
            slot.complete(CROSSSLOT)
            return
        effect = None
        if _runs_once(coordinator, queued, level):
            effect = transaction_effect(run, keys)
            sink = slot
        else:
            sink = _ExecArray(count, slot)
        watch.lead_watched(coordinator, watching, plan,
                           Request(payload, session.resp, plan.lane, count, True, FLAG_TRANSACTION),
                           level, sink, effect, slot, session.resp)
        return
    if not keys:   # PING, ECHO: this node's Redis
        coordinator.targets[coordinator.name].send(
            Request(_MULTI + payload + _EXEC, session.resp, session.id, count + 2, False),
            _LastReply(slot))
        return
    plan = coordinator.router.route_keys(keys, write, level)
    if plan is None:
        slot.complete(CROSSSLOT)
        return
    if not write:
        coordinator.run(plan, Request(_MULTI + payload + _EXEC, session.resp, session.id, count + 2,
                                      False), _LastReply(slot))
        return
    request = Request(payload, session.resp, session.id, count, True, FLAG_TRANSACTION)
    if _runs_once(coordinator, queued, level):
        coordinator.write(plan, request, slot, None, transaction_effect(run, keys))
    else:
        coordinator.write(plan, request, _ExecArray(count, slot))


def _runs_once(coordinator, queued, level: str) -> bool:
    """
    Whether a transaction runs once, on its leader, and the others get the
    state of its keys: it holds a command that may not run twice; or, with
    several datacenters, it writes (the state it leaves is what the other
    datacenters decide on: `dynomite.commands.lww`).
    """
    if coordinator.versioned() and level != DC_EACH_SAFE_QUORUM:
        return any(cmd.write or cmd.name in SCRIPT_WRITES for cmd, _ in queued)
    return any(cmd.name in NOT_DETERMINISTIC for cmd, _ in queued)


class _ExecArray:
    """A transaction's joined replies, answered as EXEC's array."""

    __slots__ = ("_count", "_sink")

    def __init__(self, count: int, sink) -> None:
        self._count = count
        self._sink = sink

    def complete(self, raw: bytes) -> None:
        self._sink.complete(b"*%d\r\n" % self._count + raw)

    def fail(self, raw: bytes) -> None:
        self._sink.fail(raw)


class _LastReply:
    """The reply to MULTI ... EXEC sent as is: EXEC's, the last."""

    __slots__ = ("_sink",)

    def __init__(self, sink) -> None:
        self._sink = sink

    def complete(self, raw: bytes) -> None:
        try:
            replies = split_replies(raw)
        except ProtocolError:
            replies = []
        self._sink.complete(replies[-1] if replies else b"-ERR transaction answered nothing\r\n")

    def fail(self, raw: bytes) -> None:
        self._sink.fail(raw)


_MULTI = encode_command([b"MULTI"])
_EXEC = encode_command([b"EXEC"])
