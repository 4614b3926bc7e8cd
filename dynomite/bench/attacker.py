# -*- test-case-name: tests.unit.test_hostile_bench -*-
"""
The hostile companion of ``dynomite-bench-hostile``: a process that opens
and drops connections to one node, each sending bad input, until it is
told to stop.

    python -m dynomite.bench.attacker HOST PORT [--wave N] [--hold SECONDS] [--seed N]

It works in waves: ``--wave`` connections opened at once (non-blocking),
each sent one payload of :func:`hostile_payload` (random bytes, a request
cut anywhere, bulk and argument counts far beyond any limit, deep nesting,
malformed lengths, a long inline line without its end, control bytes, half
a request), held open ``--hold`` seconds, then closed, half of them by a
reset. It prints ``ready`` once the first wave is connected, and on
SIGTERM or SIGINT one JSON line of counts: connections opened, refused,
payload bytes sent, its own CPU seconds. Standard library only, one
thread, so it costs the machine as little as a flood of connections can.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Dict, List, Optional, Sequence

__all__ = ["attack", "hostile_payload", "main"]

#: The node's max_request_bytes is at most this in the bench (its default is 64 MB).
BIG = 64 * 1024 * 1024


def hostile_payload(rng: random.Random) -> bytes:
    """One connection's worth of bad input (the kinds of the issue's 10,000-connection test)."""
    kind = rng.randrange(9)
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 512)))
    if kind == 1:   # a request cut anywhere
        value = b"v" * rng.randint(1, 200)
        whole = b"*3\r\n$3\r\nSET\r\n$4\r\nk%03d\r\n$%d\r\n%s\r\n" % (rng.randrange(1000), len(value), value)
        return whole[:rng.randint(1, len(whole) - 1)]
    if kind == 2:   # a bulk length far beyond max_request_bytes
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n" % rng.choice([BIG * 4, 2 ** 31, 2 ** 63 - 1])
    if kind == 3:   # a huge argument count
        return b"*%d\r\n" % rng.choice([2 ** 31 - 1, 10 ** 12, 2 ** 64])
    if kind == 4:   # nesting (not RESP for a request)
        return b"*1\r\n" * rng.randint(2, 5000)
    if kind == 5:   # negative and malformed lengths
        return rng.choice([b"*-5\r\n", b"*1\r\n$-7\r\n", b"$abc\r\n", b"*1\r\n$3\r\nabc", b"*x\r\n"])
    if kind == 6:   # an inline line without its end, long
        return b"GET " + b"a" * rng.randint(1, 60000)
    if kind == 7:   # control bytes
        return bytes(rng.randrange(0, 32) for _ in range(rng.randint(1, 64)))
    return b"*3\r\n$3\r\nSET\r\n"   # half a request, left open


def raise_fd_limit(need: int) -> None:
    """Raise this process's open-file limit to ``need`` (up to the hard limit); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))


def _wave(host: str, port: int, size: int, rng: random.Random, counts: Dict[str, int],
          connect_timeout: float = 2.0) -> List[socket.socket]:
    """Open ``size`` connections at once and send each its payload; return those still open."""
    selector = selectors.DefaultSelector()
    pending: Dict[socket.socket, bytes] = {}
    for _ in range(size):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((host, port))
        pending[sock] = hostile_payload(rng)
        selector.register(sock, selectors.EVENT_WRITE)
    opened: List[socket.socket] = []
    deadline = time.monotonic() + connect_timeout
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            selector.unregister(sock)
            payload = pending.pop(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                counts["refused"] += 1
                sock.close()
                continue
            counts["opened"] += 1
            try:
                counts["bytes"] += sock.send(payload)
            except OSError:
                pass
            opened.append(sock)
    for sock in pending:   # never connected within the timeout
        counts["refused"] += 1
        sock.close()
    selector.close()
    return opened


def _drop(socks: Sequence[socket.socket], rng: random.Random) -> None:
    """Close every connection, half of them by a reset (SO_LINGER 0)."""
    for sock in socks:
        if rng.random() < 0.5:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        sock.close()


def attack(host: str, port: int, wave: int, hold: float, seed: int, stopping, ready=None) -> Dict[str, float]:
    """Waves of hostile connections until ``stopping()``; ``ready()`` is called after the first wave."""
    rng = random.Random(seed)
    counts: Dict[str, int] = {"opened": 0, "refused": 0, "bytes": 0, "waves": 0}
    started = time.monotonic()
    while not stopping():
        socks = _wave(host, port, wave, rng, counts)
        counts["waves"] += 1
        if ready is not None and counts["waves"] == 1:
            ready()
        end = time.monotonic() + hold
        while not stopping() and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        _drop(socks, rng)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result: Dict[str, float] = dict(counts)
    result["seconds"] = round(time.monotonic() - started, 3)
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynomite.bench.attacker", description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--wave", type=int, default=500, help="connections open at once (default 500)")
    parser.add_argument("--hold", type=float, default=0.2, help="seconds a wave is held open (default 0.2)")
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args(argv)
    raise_fd_limit(args.wave + 64)
    stop: List[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    result = attack(args.host, args.port, args.wave, args.hold, args.seed, lambda: bool(stop), ready)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
