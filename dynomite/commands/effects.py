# -*- test-case-name: tests.unit.test_effects -*-
"""
Effects: what the other replicas apply for a write that may not run twice.

A command whose effect depends on randomness, the clock or the replica's
own choices (`dynomite.commands.determinism.NOT_DETERMINISTIC`) runs once,
on its leader's Redis (`dynomite.node.leader`), and the other replicas
apply its *effect*, as Redis does for its own replicas and AOF
(``alsoPropagate`` and ``rewriteClientCommandVector`` in Redis's source):

==============================  ===========================================
SPOP key [count]                SREM key <the members popped>
XADD key ... <* | ms-*> ...     XADD key ... <the ID Redis assigned> ...
XTRIM key MAXLEN|MINID = n      as sent (exact trimming is deterministic)
INCRBYFLOAT key by              SET key <result> KEEPTTL
HINCRBYFLOAT key field by       HSET key field <result>
SORT ... STORE dest             the state of ``dest`` (nothing without STORE)
XADD/XTRIM with ``~`` or LIMIT  the state of the stream
XCLAIM, XAUTOCLAIM              the state of the stream
XREADGROUP                      the state of the streams, when it delivered
EVAL, EVALSHA, FCALL            the state of every key they declare
a transaction with any of these the state of every key it names
==============================  ===========================================

"The state of a key" travels as Redis moves keys between servers: the
leader runs ``MULTI``, the command, then ``DUMP`` and ``PEXPIRETIME`` of
each key, ``EXEC`` (so nothing comes between the command and the dumps);
the others apply ``RESTORE key <expiry> <dump> REPLACE ABSTTL``, or ``DEL
key`` where the key is gone.  A script that calls SPOP, TIME or
SRANDMEMBER therefore leaves the same bytes everywhere.

`Effect` holds one command's plan: `Effect.probe` is what the leader runs
and `Effect.outcome` turns the leader's reply into the client's reply and
the commands the others apply.  Pure functions of bytes, no I/O.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from dynomite.wire.replies import elements, is_error, split_replies
from dynomite.wire.resp import ProtocolError, encode_command, encode_commands

__all__ = ["Effect", "group_read_effect", "plan_effect", "pop_effect", "state_effect", "transaction_effect"]

# How an effect is derived from the leader's reply.
_SREM, _XADD_ID, _SET_KEEPTTL, _HSET, _STATE, _AS_SENT, _NOTHING, _STATE_IF_READ = (
    "srem", "xadd-id", "set-keepttl", "hset", "state", "as-sent", "nothing", "state-if-read")

_NIL = (b"$-1\r\n", b"*-1\r\n", b"_\r\n")


class Effect:
    """
    How one request reaches the replicas other than its leader: ``probe``
    is the RESP the leader runs (``count`` commands); `outcome` maps its
    reply to (client's reply, effect commands).
    """

    __slots__ = ("args", "kind", "keys", "transaction", "probe", "count")

    def __init__(self, args: Sequence[bytes], kind: str, keys: Sequence[bytes],
                 transaction: Sequence[Sequence[bytes]] = ()) -> None:
        self.args = list(args)
        self.kind = kind
        self.keys = list(keys)
        #: a transaction's commands (run together, answered as EXEC's array)
        self.transaction = [list(c) for c in transaction]
        if kind in (_STATE, _STATE_IF_READ):
            commands = [[b"MULTI"]] + (self.transaction or [self.args])
            for key in self.keys:
                commands.append([b"DUMP", key])
                commands.append([b"PEXPIRETIME", key])
            commands.append([b"EXEC"])
            self.probe = encode_commands(commands)
            self.count = len(commands)
        else:
            self.probe = encode_command(self.args)
            self.count = 1

    @property
    def leaves_state(self) -> bool:
        """Whether the others get the state of its keys (RESTORE or DEL of each), not a command."""
        return self.kind in (_STATE, _STATE_IF_READ)

    def outcome(self, raw: bytes) -> Tuple[bytes, List[List[bytes]]]:
        """
        The client's reply and the commands every other replica applies,
        from the leader's reply ``raw`` to `probe`.  An error (or nothing
        done) replicates nothing.
        """
        if self.kind in (_STATE, _STATE_IF_READ):
            return self._state(raw)
        if is_error(raw) or raw in _NIL or self.kind == _NOTHING:
            return raw, []
        args, kind = self.args, self.kind
        if kind == _AS_SENT:
            return raw, [args]
        if kind == _SREM:
            members = _strings(raw)
            return raw, [[b"SREM", args[1]] + members] if members else []
        if kind == _XADD_ID:
            at = _xadd_id_index(args)
            return raw, [args[:at] + [_string(raw)] + args[at + 1:]]
        if kind == _SET_KEEPTTL:
            return raw, [[b"SET", args[1], _string(raw), b"KEEPTTL"]]
        return raw, [[b"HSET", args[1], args[2], _string(raw)]]   # _HSET

    def _state(self, raw: bytes) -> Tuple[bytes, List[List[bytes]]]:
        try:
            replies = split_replies(raw)
        except ProtocolError:
            replies = []
        if len(replies) != self.count:
            return b"-ERR leader answered %d replies to %d commands\r\n" % (
                len(replies), self.count), []
        for queued in replies[1:-1]:
            if is_error(queued):
                return queued, []   # refused when queued (syntax, arity): nothing ran
        results = elements(replies[-1])
        ran = len(self.transaction) or 1
        if is_error(replies[-1]) or len(results) != ran + 2 * len(self.keys):
            return replies[-1] if is_error(replies[-1]) else (
                b"-ERR transaction of the leader failed\r\n"), []
        effects: List[List[bytes]] = []
        if self.kind == _STATE_IF_READ and results[0] in _NIL:
            return results[0], effects   # nothing delivered: nothing changed that matters
        for i, key in enumerate(self.keys):
            dump, expiry = results[ran + 2 * i], results[ran + 1 + 2 * i]
            if dump in _NIL:
                effects.append([b"DEL", key])
                continue
            at = int(expiry[1:-2]) if expiry[:1] == b":" else -1
            effects.append([b"RESTORE", key, b"%d" % max(at, 0), _string(dump), b"REPLACE",
                            b"ABSTTL"])
        if self.transaction:
            return b"*%d\r\n" % ran + b"".join(results[:ran]), effects
        return results[0], effects


def _string(raw: bytes) -> bytes:
    """The value of a bulk (or simple, verbatim, double, integer) string reply."""
    head = raw[:1]
    if head in (b"+", b",", b":"):
        return raw[1:-2]
    start = raw.find(b"\r\n") + 2
    value = raw[start:-2]
    return value[4:] if head == b"=" else value


def _strings(raw: bytes) -> List[bytes]:
    """The members of a bulk reply or of an array/set reply of bulks."""
    if raw[:1] in (b"$", b"+"):
        return [_string(raw)]
    return [_string(item) for item in elements(raw) if item not in _NIL]


_TRIM_STRATEGIES = (b"maxlen", b"minid")


def _xadd_id_index(args: Sequence[bytes]) -> int:
    """Where XADD's ID is: after the key, NOMKSTREAM and a trimming clause."""
    i = 2
    n = len(args)
    while i < n:
        word = args[i].lower()
        if word == b"nomkstream":
            i += 1
        elif word in _TRIM_STRATEGIES:
            i += 1
            if i < n and args[i] in (b"=", b"~"):
                i += 1
            i += 1   # the threshold
            if i < n and args[i].lower() == b"limit":
                i += 2
        else:
            return i
    return n


def _approximate_trim(args: Sequence[bytes], start: int, end: int) -> bool:
    """Whether a trimming clause between ``start`` and ``end`` may trim where the replica's tree allows."""
    words = [a.lower() for a in args[start:end]]
    return b"~" in words or b"limit" in words


def plan_effect(name: str, args: Sequence[bytes], keys: Sequence[bytes]) -> Optional[Effect]:
    """
    The `Effect` of a request of command ``name`` (keys ``keys``), or None
    when it replays as sent everywhere (`dynomite.commands.determinism.AS_IS`).
    """
    if name == "spop":
        return Effect(args, _SREM, keys)
    if name == "incrbyfloat":
        return Effect(args, _SET_KEEPTTL, keys)
    if name == "hincrbyfloat":
        return Effect(args, _HSET, keys)
    if name == "xadd":
        index = _xadd_id_index(args)
        if _approximate_trim(args, 2, index):
            return Effect(args, _STATE, keys[:1])
        return Effect(args, _XADD_ID, keys)
    if name == "xtrim":
        if _approximate_trim(args, 2, len(args)):
            return Effect(args, _STATE, keys[:1])
        return Effect(args, _AS_SENT, keys)
    if name in ("xclaim", "xautoclaim"):
        return Effect(args, _STATE, keys[:1])
    if name == "sort":
        # only SORT ... STORE writes, and only its destination
        return Effect(args, _STATE, keys[1:]) if len(keys) > 1 else Effect(args, _NOTHING, [])
    if name == "xreadgroup":
        return group_read_effect(args, keys)
    if name in ("eval", "evalsha", "fcall"):
        return Effect(args, _STATE, keys)
    return None


def transaction_effect(transaction: Sequence[Sequence[bytes]], keys: Sequence[bytes]) -> Effect:
    """
    A transaction (MULTI ... EXEC) with a command that may not run twice:
    the leader runs it with the dumps of ``keys``, the client gets EXEC's
    array of the commands' replies, the others get the state of ``keys``.
    """
    return Effect([], _STATE, keys, transaction)


def state_effect(args: Sequence[bytes], keys: Sequence[bytes]) -> Effect:
    """
    A write whose result depends on the key's state, in a cluster of
    several datacenters (`dynomite.commands.lww.ships_state`): the leader
    runs it with the dumps of ``keys``, the others get their state.
    """
    return Effect(args, _STATE, keys)


def group_read_effect(args: Sequence[bytes], keys: Sequence[bytes]) -> Effect:
    """
    XREADGROUP (without BLOCK: `dynomite.node.streams` waits itself): run
    once on the leader; the others get the state of the streams it read,
    pending entries and delivery times included, or nothing when it
    delivered nothing.
    """
    return Effect(args, _STATE_IF_READ, keys)


def pop_effect(args: Sequence[bytes], keys: Sequence[bytes]) -> Effect:
    """
    A pop tried by a blocking command (`dynomite.node.blocking`): it runs on
    its leader, and the others apply it as sent only when it popped
    something, so the tries that found nothing replicate nothing.
    """
    return Effect(args, _AS_SENT, keys)
