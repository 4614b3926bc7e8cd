"""
Pipelines: what forwarding pipelined requests in runs must preserve.

One socket write can carry thousands of requests, which a node reads in
whatever pieces TCP delivers.  Whatever the node does with requests read
together (one at a time, or runs of one command for the same replicas sent
as one), a client must not tell: replies come back complete, in order, byte
for byte what a plain redis-server answers; every rack ends with the same
data; per-family counters count every request once.

Real processes only: a plain redis-server (the oracle), one node in front of
its own redis-server, and 1 DC x 3 racks x 1 node clusters
(``tests/integration/fixtures/cluster.py``, on ``127.7.<worker>.201`` and
up).  Replies are framed by the tests' own RESP reader
(``tests/integration/fixtures/resp.py``), not by ``dynomite.wire``.

Allowed differences from plain Redis: a non-negative TTL may differ by 1 s
(the node adds latency between EXPIRE and TTL, as in test_differential);
final keyspaces compare hash fields sorted (a hash with a value over 64
bytes is a hashtable, iterated in an order seeded per server; no compared
reply depends on it); HELLO 3 describes the server and is sent before the
compared stream.  Nothing follows QUIT in split-write streams: a server
closing with unread bytes resets the connection, which can eat replies.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from twisted.trial import unittest

from dynomite.launcher.cluster import ClusterNode
from tests.integration.fixtures.cluster import SHORT_TIMEOUTS, ClusterFixture, Layout, shared_cluster
from tests.integration.fixtures.common import OWN_CLUSTERS_SUBNET, poll, shared
from tests.integration.fixtures.processes import NodeFixture, RedisProcess
from tests.integration.fixtures.resp import RawConnection, ReplyReader, encode_command
from tests.integration.test_differential import dump_keyspace

ONE_DC = {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}}
#: Seconds a whole pipeline exchange may take.
EXCHANGE_TIMEOUT = 30.0
#: Seconds replicas get to converge (DC_ONE) or to get a frozen replica's writes back.
CONVERGE_TIMEOUT = 30.0

Address = Tuple[str, int]


# ---------------------------------------------------------------------------
# the traffic


class Request(NamedTuple):
    """One request of a generated stream, as sent and as described in failure messages."""

    wire: bytes     # exactly what goes on the socket
    text: str       # for failure messages
    replies: int    # 0 for an empty line
    ttl: bool       # a TTL reply: compared with 1 s tolerance


def cmd(*args: str) -> Request:
    return Request(encode_command(*args), " ".join(args), 1, args[0] == "TTL")


def inline(line: str) -> Request:
    return Request(line.encode() + b"\r\n", f"inline {line!r}", 1 if line.strip() else 0, False)


# Types never change: SET/MSET/DEL/INCR touch only strings and counters, so
# the hashes and lists the preamble makes stay hashes and lists, and a
# string command on them (WRONG_TYPE) is always a WRONGTYPE error.
STRINGS = [f"s{i}" for i in range(24)]
COUNTERS = [f"c{i}" for i in range(6)]
HASHES = [f"h{i}" for i in range(4)]
LISTS = [f"l{i}" for i in range(4)]
FIELDS = ["f1", "f2", "f3"]


def _value(rng: random.Random) -> str:
    if rng.random() < 0.03:
        return "big-" + "x" * rng.randint(1000, 5000)   # replies spanning reads
    return rng.choice(["", "v", "0", "a b", "v%d" % rng.randint(0, 999)])


RUNS: Dict[str, Callable[[random.Random], Tuple[str, ...]]] = {
    "SET": lambda r: ("SET", r.choice(STRINGS), _value(r)) + (("EX", "100000") if r.random() < 0.1 else ()),
    "GET": lambda r: ("GET", r.choice(STRINGS)),
    "INCR": lambda r: ("INCR", r.choice(COUNTERS)),
    "HSET": lambda r: ("HSET", r.choice(HASHES), r.choice(FIELDS), _value(r)),
    "HGET": lambda r: ("HGET", r.choice(HASHES), r.choice(FIELDS)),
    "LPUSH": lambda r: ("LPUSH", r.choice(LISTS), _value(r)),
    "LRANGE": lambda r: ("LRANGE", r.choice(LISTS), "0", str(r.randint(0, 4))),
    "EXPIRE": lambda r: ("EXPIRE", r.choice(STRINGS), "100000"),
    "TTL": lambda r: ("TTL", r.choice(STRINGS + COUNTERS)),
}

# Runs whose requests have no values (no spaces or empty strings), so they can be written inline.
INLINE_SAFE = {"GET", "INCR", "HGET", "LRANGE", "EXPIRE", "TTL"}

# The same command on a key of another type, inside its run: WRONGTYPE.
WRONG_TYPE: Dict[str, Callable[[random.Random], Tuple[str, ...]]] = {
    "GET": lambda r: ("GET", r.choice(HASHES)),
    "INCR": lambda r: ("INCR", r.choice(LISTS)),
    "HSET": lambda r: ("HSET", r.choice(LISTS), "f1", "x"),
    "HGET": lambda r: ("HGET", r.choice(STRINGS[:2]), "f1"),
    "LPUSH": lambda r: ("LPUSH", r.choice(HASHES), "x"),
    "LRANGE": lambda r: ("LRANGE", r.choice(HASHES), "0", "1"),
}


def _single(rng: random.Random, run: Optional[str]) -> Request:
    """A request that breaks a run: answered by the node, multi-key, an error, inline, empty."""
    keys = STRINGS + HASHES + LISTS
    choices: List[Callable[[], Request]] = [
        lambda: cmd("PING"),
        lambda: cmd("PING", "hello"),
        lambda: cmd("ECHO", _value(rng)),
        lambda: cmd("MGET", *rng.sample(STRINGS + HASHES, rng.randint(2, 6))),
        lambda: cmd("MSET", *[x for k in rng.sample(STRINGS, rng.randint(2, 4)) for x in (k, _value(rng))]),
        lambda: cmd("DEL", *rng.sample(STRINGS, rng.randint(2, 4))),
        lambda: cmd("EXISTS", *rng.sample(keys, rng.randint(2, 5))),
        lambda: cmd("NOSUCHCMD", "a", "b"),
        lambda: cmd("GET"),
        lambda: cmd("SET", rng.choice(STRINGS)),
        lambda: cmd("HGET", rng.choice(HASHES)),
        lambda: inline("GET %s" % rng.choice(STRINGS)),
        lambda: inline("EXISTS %s %s" % tuple(rng.sample(keys, 2))),
        lambda: inline("PING"),
        lambda: inline(""),
    ]
    if run in INLINE_SAFE:   # the run's own command, written inline
        choices.append(lambda: inline(" ".join(RUNS[run](rng))))
    return rng.choice(choices)()


def mixed_traffic(seed: int, runs: int = 24) -> List[Request]:
    """A preamble that makes every hash and list, then runs of 16-200 requests broken by singles, then QUIT."""
    rng = random.Random(seed)
    out = [cmd("HSET", h, "f1", "seed") for h in HASHES] + [cmd("LPUSH", lst, "seed") for lst in LISTS]
    for _ in range(runs):
        name = rng.choice(sorted(RUNS))
        for _ in range(rng.randint(16, 200)):
            roll = rng.random()
            if roll < 0.04:
                out.append(_single(rng, name))
            elif roll < 0.08 and name in WRONG_TYPE:
                out.append(cmd(*WRONG_TYPE[name](rng)))
            else:
                out.append(cmd(*RUNS[name](rng)))
        out.extend(_single(rng, None) for _ in range(rng.randint(0, 3)))
    out.append(cmd("QUIT"))
    return out


def large_values(seed: int) -> List[Request]:
    """Runs of 16-24 SETs, then GETs, of distinct 70-130 KB values (bigger than one 64 KB read)."""
    rng = random.Random(seed)
    keys = [f"big{i}" for i in range(24)]
    out = []
    for _ in range(2):
        out += [cmd("SET", k, f"{k}:" + chr(97 + rng.randrange(26)) * rng.randint(70_000, 130_000))
                for k in keys[:rng.randint(16, 24)]]
        out += [cmd("GET", k) for k in rng.sample(keys, rng.randint(16, 24))]
        out += [cmd("PING")]
    return out + [cmd("QUIT")]


def split(data: bytes, seed: int) -> List[bytes]:
    """``data`` cut at random offsets into many small writes (mostly a few bytes)."""
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice([1, 2, 3, 5, 8, 13, 40, 100, 700])
        out.append(data[pos:pos + n])
        pos += n
    return out


# ---------------------------------------------------------------------------
# a raw client: read on a thread, send on this one (no deadlock on big pipelines;
# and processes a hook restarts are children of this thread, which lives on:
# dynomite.processes kills a child when the thread that spawned it exits)


def exchange(address: Address, chunks: Sequence[bytes], preamble: Sequence[Tuple[str, ...]] = (),
             between: Optional[Callable[[int], None]] = None) -> List[bytes]:
    """
    Send ``preamble`` one request at a time (replies must not be errors),
    then every chunk in its own socket write, and read every reply until the
    server closes (the last request is QUIT).  ``between(i)`` runs before
    chunk ``i`` is sent.  Returns the raw replies after the preamble's.
    """
    conn = RawConnection(*address, timeout=EXCHANGE_TIMEOUT)
    try:
        for args in preamble:
            reply = conn.command(*args)
            assert reply[:1] not in (b"-", b"!"), f"{args} answered {reply!r}"
        sock = conn.sock
        sock.settimeout(EXCHANGE_TIMEOUT)
        reader = ReplyReader()
        replies: List[bytes] = []
        failures: List[BaseException] = []

        def read() -> None:
            try:
                while True:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    replies.extend(reader.feed(data))
            except BaseException as e:  # noqa: BLE001 - reported below
                failures.append(e)

        receiver = threading.Thread(target=read, name="pipeline-reader", daemon=True)
        receiver.start()
        for i, chunk in enumerate(chunks):
            if between is not None:
                between(i)
            sock.sendall(chunk)
        receiver.join(EXCHANGE_TIMEOUT)
        assert not receiver.is_alive(), f"{address}: no EOF after {EXCHANGE_TIMEOUT}s, {len(replies)} replies"
        assert not failures, f"reading from {address} failed after {len(replies)} replies: {failures[0]!r}"
        assert reader.pending == b"", f"{address} closed mid-reply: {reader.pending[:200]!r}"
        return replies
    finally:
        conn.close()


def keyspace(conn: RawConnection) -> Dict[bytes, Any]:
    """``dump_keyspace``, each hash's fields sorted (see the module docstring)."""
    out = dump_keyspace(conn)
    for key, (kind, value, ttl) in out.items():
        if kind == b"hash":
            out[key] = (kind, sorted(zip(value[::2], value[1::2])), ttl)
    return out


def as_int(raw: bytes) -> Optional[int]:
    return int(raw[1:-2]) if raw[:1] == b":" else None


def joined(requests: Sequence[Request]) -> List[bytes]:
    return [b"".join(r.wire for r in requests)]


class _PipelineTestCase(unittest.SynchronousTestCase):
    """Compares a pipeline's replies with the oracle's, showing the first difference in context."""

    def assertSameReplies(self, requests: Sequence[Request], want: List[bytes], got: List[bytes],
                          what: str) -> None:
        """``got`` equals ``want`` byte for byte (TTL within 1 s), with the first difference in context."""
        answered = [r for r in requests for _ in range(r.replies)]
        self.assertEqual(len(want), len(answered), f"{what}: the oracle answered {len(want)} of {len(answered)}")
        got = list(got)
        for i, (req, w) in enumerate(zip(answered, want)):
            if i < len(got) and req.ttl and got[i] != w:
                a, b = as_int(w), as_int(got[i])
                if a is not None and b is not None and a >= 0 and b >= 0 and abs(a - b) <= 1:
                    got[i] = w
        if b"".join(got) == b"".join(want) and len(got) == len(want):
            return
        first = next((i for i, (w, g) in enumerate(zip(want, got)) if w != g), min(len(want), len(got)))
        lines = [
            f"  #{i} {answered[i].text[:60]}\n      redis: {want[i][:80]!r}\n      node:  "
            + (f"{got[i][:80]!r}" if i < len(got) else "<none>")
            for i in range(max(0, first - 2), min(len(want), first + 3))
        ]
        self.fail(f"{what}: {len(got)} replies for {len(want)} expected; first difference at #{first}:\n"
                  + "\n".join(lines))


# ---------------------------------------------------------------------------
# 1. one node vs a plain redis-server


class SingleNode(NodeFixture):
    """A node in front of a redis-server of its own, and a reference redis-server beside them."""

    def __init__(self) -> None:
        tmp = tempfile.mkdtemp(prefix="pipelines-", dir=os.getcwd())
        self.reference = RedisProcess(tmpdir=os.path.join(tmp, "reference")).start()
        try:
            super().__init__(os.path.join(tmp, "node"))   # stops what it started if it fails
        except BaseException:
            self.reference.stop()
            raise

    def healthy(self) -> bool:
        return self.reference.running() and super().healthy()

    def reset(self) -> None:
        super().reset()
        self.reference.client(protocol=2).flushall()

    def stop(self) -> None:
        super().stop()
        self.reference.stop()


def single_node() -> SingleNode:
    return shared.get("pipelines-single-node", SingleNode)


class SingleNodePipelineTests(_PipelineTestCase):
    """Mixed pipelines through one node answer exactly what a plain redis-server answers."""

    def setUp(self) -> None:
        self.fx = single_node()
        self.fx.reset()

    def compare(self, seed: int, resp: int, cut: bool) -> None:
        requests = mixed_traffic(seed)
        chunks = split(joined(requests)[0], seed) if cut else joined(requests)
        preamble = [("HELLO", "3")] if resp == 3 else []
        want = exchange(self.fx.reference.address, chunks, preamble)
        got = exchange(self.fx.node.address, chunks, preamble)
        what = f"RESP{resp}, {len(requests)} requests in " + (f"{len(chunks)} writes" if cut else "one write")
        self.assertSameReplies(requests, want, got, what)
        self.assertEqual(want[-1], b"+OK\r\n", "QUIT")
        with self.fx.redis.raw() as mine, self.fx.reference.raw() as ref:
            self.assertEqual(keyspace(mine), keyspace(ref), f"{what}: keyspaces differ")

    def test_resp2_one_write(self) -> None:
        self.compare(1, 2, cut=False)

    def test_resp2_split_writes(self) -> None:
        self.compare(2, 2, cut=True)

    def test_resp3_one_write(self) -> None:
        self.compare(3, 3, cut=False)

    def test_resp3_split_writes(self) -> None:
        self.compare(4, 3, cut=True)

    def test_runs_of_large_values(self) -> None:
        """Runs of SETs and GETs of 70-130 KB values: each reply spans several reads of the node."""
        requests = large_values(31)
        want = exchange(self.fx.reference.address, joined(requests))
        got = exchange(self.fx.node.address, joined(requests))
        self.assertSameReplies(requests, want, got, "runs of large values")

    def test_requests_after_quit_in_the_same_read_are_not_answered(self) -> None:
        data = b"PING\r\n" + encode_command("SET", "q", "1") + b"QUIT\r\n" + encode_command("SET", "q", "2")
        want = exchange(self.fx.reference.address, [data])
        self.assertEqual(want, [b"+PONG\r\n", b"+OK\r\n", b"+OK\r\n"])
        self.assertEqual(exchange(self.fx.node.address, [data]), want)
        self.assertEqual(self.fx.redis.client(protocol=2).get("q"), b"1")


# ---------------------------------------------------------------------------
# 2, 3. a 1 DC x 3 racks x 1 node cluster


def layout(name: str, block: int) -> Layout:
    """1 DC x 3 racks x 1 node on block ``block`` of 127.7.<worker>.x."""
    return Layout(f"ha_{name}", ONE_DC, OWN_CLUSTERS_SUBNET, block, SHORT_TIMEOUTS)


def pipelines_cluster() -> ClusterFixture:
    """One cluster for the tests that kill nothing (stopped, by PID, at exit)."""
    return shared_cluster(layout("pipelines", 201))


def consistency(level: str) -> List[Tuple[str, ...]]:
    return [("DYNO_CONFIG:CONN_CONSISTENCY", level)]


class ClusterPipelineTests(_PipelineTestCase):
    """Mixed pipelines through one node of three racks: Redis's replies, and three equal copies."""

    def setUp(self) -> None:
        self.fx = pipelines_cluster()
        for n in self.fx.nodes:
            self.fx.backend(n).flushall()
        self.reference = single_node().reference
        with self.reference.raw() as conn:
            self.assertEqual(conn.command("FLUSHALL"), b"+OK\r\n")

    def rack_nodes(self) -> List[ClusterNode]:
        return [self.fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3)]

    def compare(self, seed: int, level: str, via: int, resp: int = 2, cut: bool = False) -> None:
        requests = mixed_traffic(seed)
        chunks = split(joined(requests)[0], seed) if cut else joined(requests)
        preamble = [("HELLO", "3")] if resp == 3 else []
        want = exchange(self.reference.address, chunks, preamble)
        coordinator = self.rack_nodes()[via]
        got = exchange(coordinator.client_address, chunks, preamble + consistency(level))
        what = f"{level} via {coordinator.name}, RESP{resp}, {len(requests)} requests in {len(chunks)} write(s)"
        self.assertSameReplies(requests, want, got, what)
        with self.reference.raw() as ref:
            expected = keyspace(ref)

        def copies() -> Dict[str, Any]:
            out = {}
            for n in self.rack_nodes():
                with RawConnection(*n.redis_address) as conn:
                    out[n.name] = keyspace(conn)
            return out

        poll(lambda: all(v == expected for v in copies().values()), CONVERGE_TIMEOUT, 0.2)
        for name, held in sorted(copies().items()):
            self.assertEqual(held, expected, f"{what}: {name}'s redis-server differs from plain Redis")

    def test_dc_one_one_write(self) -> None:
        self.compare(11, "DC_ONE", via=0)

    def test_dc_one_split_writes_resp3(self) -> None:
        self.compare(12, "DC_ONE", via=1, resp=3, cut=True)

    def test_dc_quorum_one_write(self) -> None:
        self.compare(13, "DC_QUORUM", via=2)

    def test_dc_quorum_split_writes_resp3(self) -> None:
        self.compare(14, "DC_QUORUM", via=0, resp=3, cut=True)

    def test_runs_of_large_values(self) -> None:
        for level, via in (("DC_ONE", 0), ("DC_QUORUM", 1)):
            requests = large_values(32)
            want = exchange(self.reference.address, joined(requests))
            coordinator = self.rack_nodes()[via]
            got = exchange(coordinator.client_address, joined(requests), consistency(level))
            self.assertSameReplies(requests, want, got, f"runs of large values at {level} via {coordinator.name}")

    def test_thousand_sets_then_thousand_gets_at_dc_quorum(self) -> None:
        """Through each node in turn: 1,000 SETs then 1,000 GETs of them, in one write; exact replies."""
        for coordinator in self.rack_nodes():
            prefix = f"bulk:{coordinator.name}:"
            values = [f"{i}-" + "v" * (i % 37) for i in range(1000)]
            sets = [encode_command("SET", f"{prefix}{i}", v) for i, v in enumerate(values)]
            gets = [encode_command("GET", f"{prefix}{i}") for i in range(1000)]
            data = b"".join(sets + gets) + b"QUIT\r\n"
            got = exchange(coordinator.client_address, [data], consistency("DC_QUORUM"))
            want = [b"+OK\r\n"] * 1000 + [b"$%d\r\n%s\r\n" % (len(v), v.encode()) for v in values] + [b"+OK\r\n"]
            requests = [cmd("SET", f"{prefix}{i}", "...") for i in range(1000)] + \
                [cmd("GET", f"{prefix}{i}") for i in range(1000)] + [cmd("QUIT")]
            self.assertSameReplies(requests, want, got, f"DC_QUORUM via {coordinator.name}")
