# -*- test-case-name: tests.unit.test_bench_repair -*-
"""
The repair benchmark's data: what is loaded into every rack's Redis, what
is damaged on one rack, and the blocking pipelined client that does both
straight in Redis (no node in the way).

The data set is a pure function of its size (`key_kind`, `load_commands`):
key ``bench:%08d`` number ``i`` is, by ``i // 10 % 100``, a hash (5%), a set
(5%), a list (4%), a sorted set (1%) or a string (the rest); one key in
1,000 is a 200-member set or a 200-field hash instead, hashtable-encoded,
whose DUMP bytes depend on the server's hash seed; one key in 7 has an
absolute expiry two hours ahead (the same instant on every rack).

`damage_plan` picks the keys damaged: every key with ``i % 10 == 3``
(10%, every type among them), on rack 2 or rack 3 in turn, deleted,
changed in value, or given another expiry in turn.  Each damaged key
differs on one rack only, so the two others are a majority and repair
knows the winner.
"""

from __future__ import annotations

import socket
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from dynomite.wire.replies import count_errors, make_reply_parser
from dynomite.wire.resp import encode_command
from dynomite.wire.values import decode

__all__ = ["DAMAGES", "DirectRedis", "damage", "damage_commands", "damage_plan", "key_kind", "key_name",
           "load_commands"]

Address = Tuple[str, int]

#: what is done to a damaged key, in turn
DAMAGES = ("deleted", "changed", "expiry")
#: members of the big (hashtable-encoded) sets and hashes
BIG = 200
#: a damaged key's expiry is moved this far (ms)
EXPIRY_SHIFT_MS = 60_000


def key_name(i: int) -> bytes:
    return b"bench:%08d" % i


def key_kind(i: int) -> str:
    """The Redis type of key ``i`` (``bigset`` and ``bighash``: hashtable-encoded)."""
    if i % 1000 == 503:
        return "bigset"
    if i % 1000 == 513:
        return "bighash"
    r = (i // 10) % 100
    if r < 5:
        return "hash"
    if r < 10:
        return "set"
    if r < 14:
        return "list"
    if r < 15:
        return "zset"
    return "string"


def _value_commands(i: int) -> List[List[bytes]]:
    key = key_name(i)
    kind = key_kind(i)
    if kind == "string":
        return [[b"SET", key, b"value-%08d-" % i + b"x" * (24 + i % 40)]]
    if kind == "hash":
        return [[b"HSET", key] + [b for f in range(4) for b in (b"f%d" % f, b"%d" % (i * 4 + f))]]
    if kind == "set":
        return [[b"SADD", key] + [b"m%d" % (i + m) for m in range(5)]]
    if kind == "list":
        return [[b"RPUSH", key] + [b"item-%d" % (i + m) for m in range(4)]]
    if kind == "zset":
        return [[b"ZADD", key] + [b for m in range(4) for b in (b"%d" % m, b"z%d" % (i + m))]]
    if kind == "bigset":
        return [[b"SADD", key] + [b"member-%d" % m for m in range(BIG)]]
    return [[b"HSET", key] + [b for f in range(BIG) for b in (b"field-%d" % f, b"%d" % (i + f))]]


def load_commands(n: int, expiry_ms: int, batch: int = 10000) -> Iterator[Tuple[bytes, int]]:
    """The data set of ``n`` keys as pipelined batches: (RESP bytes, how many commands)."""
    parts: List[bytes] = []
    for i in range(n):
        for args in _value_commands(i):
            parts.append(encode_command(args))
        if i % 7 == 0:
            parts.append(encode_command([b"PEXPIREAT", key_name(i), b"%d" % expiry_ms]))
        if len(parts) >= batch:
            yield b"".join(parts), len(parts)
            parts = []
    if parts:
        yield b"".join(parts), len(parts)


def damage_plan(n: int) -> Iterator[Tuple[int, int, str]]:
    """(key number, rack index 1 or 2, one of `DAMAGES`) for every damaged key."""
    count = 0
    for i in range(3, n, 10):
        yield i, 1 + count % 2, DAMAGES[(count // 2) % len(DAMAGES)]
        count += 1


def damage_commands(i: int, damage: str, expiry_ms: int) -> List[List[bytes]]:
    """The commands that damage key ``i`` on its rack (the value changes keep the expiry)."""
    key = key_name(i)
    if damage == "deleted":
        return [[b"DEL", key]]
    if damage == "expiry":
        return [[b"PEXPIREAT", key, b"%d" % (expiry_ms + EXPIRY_SHIFT_MS)]]
    kind = key_kind(i)
    if kind == "string":
        return [[b"SET", key, b"damaged-%d" % i, b"KEEPTTL"]]
    if kind in ("hash", "bighash"):
        return [[b"HSET", key, b"f0", b"damaged"]]
    if kind in ("set", "bigset"):
        return [[b"SADD", key, b"damaged"]]
    if kind == "list":
        return [[b"RPUSH", key, b"damaged"]]
    return [[b"ZADD", key, b"99", b"damaged"]]


class DirectRedis:
    """A blocking, pipelined RESP client of one redis-server (the node's own reply framer)."""

    def __init__(self, address: Address, timeout: float = 120.0) -> None:
        self.address = address
        self._sock = socket.create_connection(address, timeout=timeout)
        self._parser = make_reply_parser()
        self._ready: List[bytes] = []

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> DirectRedis:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, payload: bytes) -> None:
        self._sock.sendall(payload)

    def raw_replies(self, count: int) -> List[bytes]:
        """The next ``count`` replies, undecoded."""
        while len(self._ready) < count:
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("%s:%d closed the connection" % self.address)
            self._ready.extend(self._parser.feed(chunk))
        out, self._ready = self._ready[:count], self._ready[count:]
        return out

    def pipeline(self, commands: Sequence[Sequence[bytes]]) -> List[Any]:
        """Send every command at once; their decoded replies (an error reply as a `ReplyError` value)."""
        self.send(b"".join(encode_command(c) for c in commands))
        return [decode(raw) for raw in self.raw_replies(len(commands))]

    def call(self, *args: bytes) -> Any:
        return self.pipeline([args])[0]

    def send_checked(self, batches: Iterator[Tuple[bytes, int]], window: int = 2) -> int:
        """
        Send pipelined batches, ``window`` of them in flight; how many
        commands.  RuntimeError if any answered an error.
        """
        pending: List[int] = []
        total = 0

        def settle() -> None:
            count = pending.pop(0)
            errors = sum(count_errors(raw) for raw in self.raw_replies(count))
            if errors:
                raise RuntimeError("%s:%d answered %d errors to a batch" % (self.address + (errors,)))

        for payload, count in batches:
            self.send(payload)
            pending.append(count)
            total += count
            if len(pending) >= window:
                settle()
        while pending:
            settle()
        return total


def damage(clients: Sequence[DirectRedis], n: int, expiry_ms: int) -> Dict[str, int]:
    """Damage `damage_plan`'s keys straight in racks 2 and 3; counts per damage and per rack."""
    per_rack: Dict[int, List[bytes]] = {1: [], 2: []}
    counts: Dict[str, int] = dict.fromkeys(DAMAGES, 0)
    for i, rack, what in damage_plan(n):
        per_rack[rack].extend(encode_command(c) for c in damage_commands(i, what, expiry_ms))
        counts[what] += 1
    for rack, parts in per_rack.items():
        counts["rack%d" % (rack + 1)] = len(parts)
        clients[rack].send_checked((b"".join(parts[s:s + 10000]), len(parts[s:s + 10000]))
                                   for s in range(0, len(parts), 10000))
    return counts
