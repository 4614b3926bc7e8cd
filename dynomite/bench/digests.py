# -*- test-case-name: tests.unit.test_bench_repair -*-
"""
The digest method measured: one Redis's cell digests computed inside Redis
by the repair script, or at a client by SCAN + DUMP.

- `script_cells`: what repair does (`dynomite.repair.script.cells_request`
  in a loop, no rate limit): the values never leave Redis.
- `dump_cells`: what "SCAN+DUMP at the node" would cost: a SCAN step,
  then DUMP and PEXPIRETIME of its keys in one pipeline, and the hashing
  (SHA1 of name, DUMP and expiry; the ring hash; the cell's XOR) done in
  Python, in this process standing for the node.

Both give {cell: (word1, word2)} over the same cells; their digests are
not the same function (the script reads values canonically), so only the
cost is compared.  `measure` times one method: wall time, keys/s, and CPU
seconds of the redis-server and of this process.

The DUMP digest is also not a usable repair digest as it stands:
`seed_check` shows that two Redis servers holding the same hashtable-
encoded set or hash DUMP it differently (each server's hash seed orders
its hashtable), where the script's digests agree; method (b) would need
canonical reads (SMEMBERS, HGETALL sorted) for those keys as well.
"""

from __future__ import annotations

import hashlib
import resource
import struct
import time
from bisect import bisect_left
from typing import Any, Callable, Dict, Sequence, Tuple

from dynomite.placement.hashing import key_hash
from dynomite.repair import script

from .cpu import CpuSample
from .dataset import DirectRedis

__all__ = ["dump_cells", "measure", "script_cells", "script_digests", "seed_check"]

Cells = Dict[Tuple[int, int], Tuple[int, int]]
_WORDS = struct.Struct(">II")


def _merge(into: Cells, cell: Tuple[int, int], words: Tuple[int, int]) -> None:
    old = into.get(cell)
    into[cell] = words if old is None else (old[0] ^ words[0], old[1] ^ words[1])


def script_cells(client: DirectRedis, bounds: Sequence[int], count: int = 500) -> Tuple[Cells, int]:
    """Method (a): the repair script's cells scan to the end; (cells, keys scanned)."""
    cells: Cells = {}
    cursor = scanned = 0
    while True:
        client.send(script.cells_request(cursor, count, None, bounds).payload)
        step = script.scan_step(client.raw_replies(1)[0])
        for cell, words in script.read_cells(step).items():
            _merge(cells, cell, words)
        scanned += step.scanned
        cursor = step.cursor
        if cursor == 0:
            return cells, scanned


def dump_digest(key: bytes, dump: bytes, expiry: int) -> Tuple[int, int]:
    """Method (b)'s key digest: the first two words of SHA1(name, DUMP, absolute expiry)."""
    return _WORDS.unpack_from(hashlib.sha1(b"%d:%s%s:%d" % (len(key), key, dump, expiry)).digest())


def dump_cells(client: DirectRedis, bounds: Sequence[int], count: int = 500) -> Tuple[Cells, int]:
    """Method (b): SCAN, pipelined DUMP + PEXPIRETIME, hashing here; (cells, keys scanned)."""
    cells: Cells = {}
    cursor = scanned = 0
    bounds = list(bounds)
    while True:
        next_cursor, keys = client.call(b"SCAN", b"%d" % cursor, b"COUNT", b"%d" % count)
        scanned += len(keys)
        replies = client.pipeline([c for k in keys for c in ((b"DUMP", k), (b"PEXPIRETIME", k))])
        for key, dump, expiry in zip(keys, replies[::2], replies[1::2]):
            if dump is None:
                continue     # expired or deleted since the SCAN
            h = key_hash(key)
            _merge(cells, (bisect_left(bounds, h), h >> 16), dump_digest(key, dump, expiry))
        cursor = int(next_cursor)
        if cursor == 0:
            return cells, scanned


def measure(method: Callable[[DirectRedis, Sequence[int]], Tuple[Cells, int]], client: DirectRedis,
            redis_pid: int, bounds: Sequence[int]) -> Dict[str, Any]:
    """Run one method over the whole Redis: keys, cells, seconds, keys/s, CPU of Redis and of this process."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    before = CpuSample.take([redis_pid])
    began = time.monotonic()
    cells, scanned = method(client, bounds)
    wall = time.monotonic() - began
    after = CpuSample.take([redis_pid])
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (own_after.ru_utime + own_after.ru_stime) - (own.ru_utime + own.ru_stime)
    redis_cpu = after.used_since(before, [redis_pid])[redis_pid]
    return {"keys": scanned, "cells": len(cells), "seconds": round(wall, 3),
            "keys_per_second": round(scanned / wall, 1) if wall > 0 else None,
            "redis_cpu_s": round(redis_cpu, 3), "client_cpu_s": round(client_cpu, 3),
            "cpu_us_per_key": round((redis_cpu + client_cpu) * 1e6 / scanned, 2) if scanned else None}


def script_digests(client: DirectRedis, keys: Sequence[bytes], batch: int = 500) -> Dict[bytes, bytes]:
    """The repair script's digest of each of ``keys`` on one Redis (b"" for a missing key)."""
    found: Dict[bytes, bytes] = {}
    for i in range(0, len(keys), batch):
        some = list(keys[i:i + batch])
        client.send(script.digest_request(some).payload)
        found.update(script.read_digests(client.raw_replies(1)[0], some))
    return found


def seed_check(first: DirectRedis, second: DirectRedis, keys: Sequence[bytes]) -> Dict[str, int]:
    """
    Keys holding the same data on two servers: how many DUMP differently,
    and how many the repair script digests differently.
    """
    dumps = [c.pipeline([(b"DUMP", k) for k in keys]) for c in (first, second)]
    digests = [script_digests(c, keys) for c in (first, second)]
    return {"keys": len(keys),
            "dump_differs": sum(1 for a, b in zip(*dumps) if a != b),
            "script_digest_differs": sum(1 for k in keys if digests[0][k] != digests[1][k])}
