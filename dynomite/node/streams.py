# -*- test-case-name: tests.integration.test_streams_blocking -*-
"""
XREAD and XREADGROUP (with and without BLOCK), and WAIT's answer.

XREAD is a read: its streams must share one replica set (hash tags), else
``-CROSSSLOT``, and it runs where the connection's reads go.  With BLOCK
it waits at the node as the blocking pops do (`dynomite.node.blocking`):
no Redis connection is held, the node tries the non-blocking XREAD every
`POLL_INTERVAL` until one gives or the timeout passes (then the null
Redis gives).  ``$`` means the last ID of the stream when the command
arrives: it is resolved once, before the first try, with ``XREVRANGE key +
- COUNT 1`` (the last entry; IDs between it and the stream's last
generated ID cannot come back, so reading after either is the same).

XREADGROUP changes the group's delivery state (last delivered ID, pending
entries, consumers), so it is a write: led by the keys' leader, run once on
its Redis, and the other replicas get the state of the stream it read
(`dynomite.commands.effects`, ``DUMP``/``RESTORE``, delivery times
included), so every replica's pending list and last delivered ID end
identical.  A try that delivers nothing replicates nothing (so a blocked
XREADGROUP polling an empty stream costs the replicas nothing); the first
delivery carries the consumer it may have created on the leader.  Redis
propagates XREADGROUP as XCLAIM/XGROUP SETID per entry; the state of the
stream is heavier for long streams but ends byte-identical, delivery times
included.  With BLOCK it tries again every `POLL_INTERVAL`.

WAIT answers an error: a write here is acknowledged once the replicas its
consistency level names applied it (DC_QUORUM: a quorum of the local racks)
or hold it as a hint, so there is nothing further a client could wait for;
``DYNO_CONFIG:CONN_CONSISTENCY`` is the way to ask for more replicas.
"""

from __future__ import annotations

from typing import List, Optional

from dynomite.commands.effects import group_read_effect
from dynomite.config.vocabulary import DC_EACH_SAFE_QUORUM, DC_SAFE_QUORUM
from dynomite.node.blocking import POLL_INTERVAL
from dynomite.node.builtins import builtin
from dynomite.placement.router import CROSSSLOT
from dynomite.wire.inflight import Request
from dynomite.wire.replies import elements
from dynomite.wire.resp import encode_command

__all__ = ["STREAM_BLOCKING", "WAIT_REFUSED"]

_NULL = {2: b"*-1\r\n", 3: b"_\r\n"}
_SYNTAX = b"-ERR syntax error\r\n"
_TIMEOUT = b"-ERR timeout is not an integer or out of range\r\n"
_NEGATIVE = b"-ERR timeout is negative\r\n"
WAIT_REFUSED = (b"-ERR WAIT is not served: a write is answered once the replicas its consistency "
                b"level names applied it (DYNO_CONFIG:CONN_CONSISTENCY sets the level)\r\n")


class _Parsed:
    """XREAD/XREADGROUP's arguments: the streams part and BLOCK's timeout (ms, None: no BLOCK)."""

    __slots__ = ("head", "keys", "ids", "block")

    def __init__(self, head: List[bytes], keys: List[bytes], ids: List[bytes], block: Optional[int]) -> None:
        self.head = head
        self.keys = keys
        self.ids = ids
        self.block = block

    def command(self, ids: Optional[List[bytes]] = None) -> List[bytes]:
        """The command without BLOCK (what each try runs)."""
        return self.head + [b"STREAMS"] + self.keys + (ids if ids is not None else self.ids)


def _parse(args: List[bytes], group: bool):
    """A `_Parsed`, or the error reply Redis gives."""
    name = args[0]
    head = [name]
    block = None
    i = 1
    if group:
        if len(args) < 4 or args[1].lower() != b"group":
            return _SYNTAX
        head += args[1:4]
        i = 4
    n = len(args)
    while i < n:
        word = args[i].lower()
        if word == b"streams":
            rest = args[i + 1:]
            if not rest or len(rest) % 2:
                return (b"-ERR Unbalanced '%s' list of streams: for each stream key an ID or '%s' "
                        b"must be specified.\r\n" % (name.lower(), b">" if group else b"$"))
            half = len(rest) // 2
            return _Parsed(head, list(rest[:half]), list(rest[half:]), block)
        if word == b"count" and i + 1 < n:
            head += [args[i], args[i + 1]]
            i += 2
        elif word == b"block" and i + 1 < n:
            try:
                block = int(args[i + 1])
            except ValueError:
                return _TIMEOUT
            if block < 0:
                return _NEGATIVE
            i += 2
        elif word == b"noack" and group:
            head.append(args[i])
            i += 1
        else:
            return _SYNTAX
    return _SYNTAX


class _StreamWait:
    """One XREAD/XREADGROUP, tried until it gives or BLOCK's timeout passes (None: once)."""

    def __init__(self, node, client, parsed: _Parsed, group: bool) -> None:
        self.node = node
        self.client = client
        self.session = client.session
        self.parsed = parsed
        self.group = group
        self.ids = list(parsed.ids)
        block = parsed.block
        self.deadline = None if block is None else (
            None if block == 0 else node.clock.seconds() + block / 1000.0)
        coordinator = node.coordinator
        level = coordinator.level(self.session, group)
        if level == DC_EACH_SAFE_QUORUM and group:
            level = DC_SAFE_QUORUM
        self.plan = coordinator.router.route_keys(parsed.keys, group, level)
        if group:
            client.writing = True
        else:
            client.reading = True
        self.slot = client.slot(0)
        client.writing = client.reading = False
        self.tries = 0
        self._resolving = 0
        self._answered = False

    def start(self) -> None:
        if self.plan is None:
            self.slot.complete(CROSSSLOT)
            return
        if self.parsed.block is not None:
            self.client.blocked = True
        dollars = [i for i, value in enumerate(self.ids) if value == b"$"]
        if dollars and not self.group and self.parsed.block is not None:
            self._resolving = len(dollars)
            for i in dollars:
                request = encode_command([b"XREVRANGE", self.parsed.keys[i], b"+", b"-", b"COUNT", b"1"])
                self.node.coordinator.run(self.plan, Request(request, 2, self.session.id, 1, False),
                                          _LastId(self, i))
            return
        self._try()

    def resolved(self, index: int, last: Optional[bytes]) -> None:
        """``$`` of stream ``index`` is ``last`` (None: an error, answered already)."""
        if last is None or self._answered:
            return
        self.ids[index] = last
        self._resolving -= 1
        if self._resolving == 0:
            self._try()

    def _try(self) -> None:
        if not self.client.connected:
            self.client.blocked = False
            return
        coordinator = self.node.coordinator
        data = encode_command(self.parsed.command(self.ids))
        if self.group:
            request = Request(data, self.session.resp, self.session.id, 1, True)
            coordinator.write(self.plan, request, self, None,
                              group_read_effect(self.parsed.command(self.ids), self.parsed.keys))
        else:
            coordinator.run(self.plan, Request(data, self.session.resp, self.session.id, 1, False), self)
        self.tries += 1

    def complete(self, raw: bytes) -> None:
        if raw[:1] in (b"-", b"!") or self.deadline is None and self.parsed.block is None:
            self.done(raw)
            return
        if raw not in (b"*-1\r\n", b"_\r\n"):
            self.done(raw)
            return
        clock = self.node.clock
        if self.deadline is not None:
            left = self.deadline - clock.seconds()
            if left <= 0:
                self.done(_NULL[self.session.resp])
                return
            if left < POLL_INTERVAL:   # a last try when the timeout passes, not before
                clock.callLater(left, self._try)
                return
        clock.callLater(POLL_INTERVAL, self._try)

    def fail(self, raw: bytes) -> None:
        self.done(raw)

    def done(self, raw: bytes) -> None:
        if self._answered:
            return
        self._answered = True
        client = self.client
        was_blocked = client.blocked
        client.blocked = False
        self.slot.complete(raw)
        if was_blocked and client.held and client.connected:
            self.node.release_held(client)


class _LastId:
    """XREVRANGE key + - COUNT 1: the ID ``$`` stands for (0-0 for an empty stream)."""

    __slots__ = ("_wait", "_index")

    def __init__(self, wait: _StreamWait, index: int) -> None:
        self._wait = wait
        self._index = index

    def complete(self, raw: bytes) -> None:
        if raw[:1] == b"-":
            self._wait.resolved(self._index, None)
            self._wait.done(raw)
            return
        entries = elements(raw) if raw[:1] == b"*" else []
        last = b"0-0"
        if entries:
            fields = elements(entries[0])
            if fields and fields[0][:1] == b"$":
                last = fields[0].split(b"\r\n")[1]
        self._wait.resolved(self._index, last)

    def fail(self, raw: bytes) -> None:
        self._wait.resolved(self._index, None)
        self._wait.done(raw)


def _serve(group: bool):
    def run(node, client, args):
        parsed = _parse(list(args), group)
        if isinstance(parsed, bytes):
            return parsed
        _StreamWait(node, client, parsed, group).start()
        return None
    return run


builtin("xread")(_serve(False))
builtin("xreadgroup")(_serve(True))


@builtin("wait")
def wait(node, client, args):
    return WAIT_REFUSED


#: Stream commands that may block at the node (their later requests wait, as for the pops).
STREAM_BLOCKING = frozenset({"xread", "xreadgroup"})
