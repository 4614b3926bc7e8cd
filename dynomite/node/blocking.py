# -*- test-case-name: tests.cluster.test_blocking -*-
"""
Blocking pops: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN,
BZPOPMAX, BZMPOP, waited for at the node.

A blocking command never reaches Redis: it would hold a datastore
connection that every client's pipelined requests share, and a pop must be
replicated as its effect anyway.  The node runs the command's non-blocking
twin as a write led by the keys' leader (`dynomite.node.leader`: LPOP,
RPOP, LMOVE, RPOPLPUSH, LMPOP, ZPOPMIN, ZPOPMAX, ZMPOP, each deterministic
once ordered, so every replica applies the same pop), key by key in the
order given; a try runs on the leader first and reaches the other
replicas only when it popped something (`dynomite.commands.effects.pop_effect`),
so the tries that find nothing, however many, replicate nothing; when every key is empty it tries again after `POLL_INTERVAL`
seconds, until one gives or the timeout passes (then the nil reply Redis
gives).  So what is popped is replicated like any write, a client that
disconnects while blocked leaves nothing behind (its next try never
happens), and a blocked client stalls no other client.  While a client is
blocked, its later requests wait, as on Redis.

What differs from Redis: a push wakes a blocked client within
`POLL_INTERVAL` rather than at once, and clients blocked on one key are
served in no particular order (Redis serves the longest waiting first).
BLPOP and friends try each key on its own, so their keys may have
different leaders; BLMOVE/BRPOPLPUSH need their two keys to share one
(hash tags), else ``-CROSSSLOT``, as LMOVE does.  Inside MULTI they are
refused (Redis runs them there as their twin, without blocking).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from dynomite.commands import table as commands
from dynomite.commands.effects import pop_effect
from dynomite.config.vocabulary import DC_EACH_SAFE_QUORUM, DC_SAFE_QUORUM
from dynomite.node.builtins import builtin
from dynomite.placement.router import CROSSSLOT
from dynomite.wire.inflight import Request
from dynomite.wire.resp import encode_command

__all__ = ["BLOCKING", "POLL_INTERVAL"]

#: Seconds between two tries of a blocked command.
POLL_INTERVAL = 0.02

_TIMEOUT_ERROR = b"-ERR timeout is not a float or out of range\r\n"
_NEGATIVE = b"-ERR timeout is negative\r\n"
_NIL_ARRAY = {2: b"*-1\r\n", 3: b"_\r\n"}
_NIL = {2: b"$-1\r\n", 3: b"_\r\n"}
_SYNTAX = b"-ERR syntax error\r\n"


def _timeout(raw: bytes) -> Optional[float]:
    try:
        value = float(raw)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return value


class _Attempts:
    """
    One blocked command: the non-blocking tries, in key order, then again
    until the deadline; the client's slot gets the first result.
    """

    def __init__(self, node, client, tries: List[List[bytes]], reshape, nil: bytes,
                 deadline: Optional[float]) -> None:
        self.node = node
        self.client = client
        self.tries = tries
        self.reshape = reshape
        self.nil = nil
        self.deadline = deadline
        self.index = 0
        self.session = client.session
        client.writing = True
        self.slot = client.slot(0)
        client.writing = False
        client.blocked = True

    def start(self) -> None:
        self._next()

    def _next(self) -> None:
        if not self.client.connected:
            self.client.blocked = False
            return
        args = self.tries[self.index]
        cmd = commands.lookup(args[0])
        coordinator = self.node.coordinator
        keys = commands.keys(cmd, args)
        level = coordinator.level(self.session, True)
        if level == DC_EACH_SAFE_QUORUM:
            level = DC_SAFE_QUORUM
        plan = coordinator.router.route_keys(keys, True, level)
        if plan is None:
            self._done(CROSSSLOT)
            return
        coordinator.write(plan, Request(encode_command(args), self.session.resp, self.session.id, 1, True),
                          self, None, pop_effect(args, keys))

    # the sink of one try
    def complete(self, raw: bytes) -> None:
        if raw[:1] in (b"-", b"!"):
            self._done(raw)
            return
        result = self.reshape(self.index, raw)
        if result is not None:
            self._done(result)
            return
        self.index += 1
        if self.index < len(self.tries):
            self._next()
            return
        self.index = 0
        clock = self.node.clock
        if self.deadline is not None and clock.seconds() + POLL_INTERVAL > self.deadline:
            self._done(self.nil)
            return
        clock.callLater(POLL_INTERVAL, self._next)

    def fail(self, raw: bytes) -> None:
        self._done(raw)

    def _done(self, raw: bytes) -> None:
        client = self.client
        client.blocked = False
        self.slot.complete(raw)
        if client.held and client.connected:
            self.node.release_held(client)


def _is_nil(raw: bytes) -> bool:
    return raw in (b"$-1\r\n", b"*-1\r\n", b"_\r\n", b"*0\r\n")


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _block(node, client, tries: List[List[bytes]], reshape, nil: bytes, timeout_raw: bytes):
    timeout = _timeout(timeout_raw)
    if timeout is None:
        return _TIMEOUT_ERROR
    if timeout < 0:
        return _NEGATIVE
    deadline = None if timeout == 0 else node.clock.seconds() + timeout
    _Attempts(node, client, tries, reshape, nil, deadline).start()
    return None


def _keyed_pop(pop: bytes):
    """BLPOP/BRPOP/BZPOPMIN/BZPOPMAX key [key ...] timeout -> POP key, answered [key, ...]."""
    def run(node, client, args):
        keys = list(args[1:-1])
        zset = pop.startswith(b"ZPOP")

        def reshape(index: int, raw: bytes) -> Optional[bytes]:
            if _is_nil(raw):
                return None
            key = _bulk(keys[index])
            if not zset:
                return b"*2\r\n" + key + raw
            # ZPOPMIN answers [member, score]: BZPOPMIN adds the key in front
            header_end = raw.find(b"\r\n") + 2
            return b"*3\r\n" + key + raw[header_end:]

        return _block(node, client, [[pop, k] for k in keys], reshape,
                      _NIL_ARRAY[client.session.resp], args[-1])
    return run


def _same_reply(twin: bytes, reorder):
    """BLMOVE/BRPOPLPUSH/BLMPOP/BZMPOP: the twin answers the same way, nil while empty."""
    def run(node, client, args):
        try:
            timeout_raw, twin_args = reorder(args)
        except (IndexError, ValueError):
            return _SYNTAX
        nil = _NIL_ARRAY[client.session.resp] if twin.endswith(b"MPOP") else _NIL[client.session.resp]
        return _block(node, client, [[twin] + twin_args], lambda i, raw: None if _is_nil(raw) else raw,
                      nil, timeout_raw)
    return run


def _last_is_timeout(args: Sequence[bytes]):
    return args[-1], list(args[1:-1])


def _timeout_first(args: Sequence[bytes]):
    return args[1], list(args[2:])


builtin("blpop")(_keyed_pop(b"LPOP"))
builtin("brpop")(_keyed_pop(b"RPOP"))
builtin("bzpopmin")(_keyed_pop(b"ZPOPMIN"))
builtin("bzpopmax")(_keyed_pop(b"ZPOPMAX"))
builtin("blmove")(_same_reply(b"LMOVE", _last_is_timeout))
builtin("brpoplpush")(_same_reply(b"RPOPLPUSH", _last_is_timeout))
builtin("blmpop")(_same_reply(b"LMPOP", _timeout_first))
builtin("bzmpop")(_same_reply(b"ZMPOP", _timeout_first))

#: The blocking commands served here.
BLOCKING = frozenset({"blpop", "brpop", "bzpopmin", "bzpopmax", "blmove", "brpoplpush", "blmpop",
                      "bzmpop"})
