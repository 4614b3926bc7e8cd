# -*- test-case-name: tests.unit.test_hostile_bench -*-
"""
The hostile companion of ``dynomite-bench-hostile``: a process that opens
and drops connections to one node, each sending bad input, until it is
told to stop.

    python -m dynomite.bench.attacker HOST PORT [--wave N] [--hold SECONDS] [--seed N] [--sources N]

It works in waves: ``--wave`` connections opened at once (non-blocking),
each sent one payload of :func:`hostile_payload` (random bytes, a request
cut anywhere, bulk and argument counts far beyond any limit, deep nesting,
malformed lengths, a long inline line without its end, control bytes, half
a request), held open ``--hold`` seconds, then closed, half of them by a
reset. Its connections come from ``--sources`` loopback addresses from
`SOURCE_BASE` on, in turn (other hosts than the measured client's
127.0.0.1: one host, or a flood spread over many). It prints ``ready``
once the first wave is connected, and on
SIGTERM or SIGINT one JSON line of counts: connections opened, refused,
payload bytes sent, its own CPU seconds. Standard library only, one
thread, so it costs the machine as little as a flood of connections can.

`CpuCap` puts it where hostile traffic from other hosts would be: in a
cgroup of its own with a CPU quota (cgroup v2 ``cpu.max``, or v1
``cpu.cfs_quota_us`` where that is what is mounted) and at nice 19, so
that what it takes from the node, the node's Redis and the measured client
on a shared machine is bounded and reported.  Without a writable cgroup
CPU controller it falls back to nice 19 alone and says so.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
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
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = ["CpuCap", "attack", "cgroup_cpu_dirs", "hostile_payload", "main"]

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


#: The first address the attacker's connections come from (`source_addresses`).
SOURCE_BASE = "127.100.0.1"

#: Linux's IP_BIND_ADDRESS_NO_PORT: a bound source address takes its port
#: at connect, per destination, as an unbound socket does (not one of the
#: 28,000 ephemeral ports per address, which TIME_WAIT would use up).
_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def source_addresses(count: int) -> List[str]:
    """``count`` loopback addresses from `SOURCE_BASE` on."""
    if count < 1:
        raise ValueError("an attacker needs at least one source address, not %d" % count)
    base = ipaddress.IPv4Address(SOURCE_BASE)
    return [str(base + i) for i in range(count)]


def _wave(host: str, port: int, size: int, rng: random.Random, counts: Dict[str, int],
          sources: Iterator[str], connect_timeout: float = 2.0) -> List[socket.socket]:
    """
    Open ``size`` connections at once (each from the next of ``sources``)
    and send each its payload; return those still open.
    """
    selector = selectors.DefaultSelector()
    pending: Dict[socket.socket, bytes] = {}
    for _ in range(size):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_IP, _BIND_ADDRESS_NO_PORT, 1)
        except OSError:
            pass
        sock.bind((next(sources), 0))
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


def attack(host: str, port: int, wave: int, hold: float, seed: int, stopping, ready=None,
           sources: int = 1) -> Dict[str, float]:
    """Waves of hostile connections until ``stopping()``; ``ready()`` is called after the first wave."""
    rng = random.Random(seed)
    counts: Dict[str, int] = {"opened": 0, "refused": 0, "bytes": 0, "waves": 0}
    addresses = itertools.cycle(source_addresses(sources))
    started = time.monotonic()
    while not stopping():
        socks = _wave(host, port, wave, rng, counts, addresses)
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


#: The CFS period the quota is given over (the kernel's default).
PERIOD_US = 100000


def cgroup_cpu_dirs(mountinfo: str, self_cgroup: str) -> List[Tuple[int, str]]:
    """
    (version, directory) of this process's own cgroup for every hierarchy
    with a CPU controller, v2 first: from the texts of /proc/self/mountinfo
    and /proc/self/cgroup.
    """
    own: Dict[str, str] = {}
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            own[parts[1]] = parts[2]
    found: List[Tuple[int, str]] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        root, mount = fields[3], fields[4]
        fstype, _, options = (line.split(" - ", 1)[1].split() + ["", ""])[:3]
        if fstype == "cgroup2":
            version, path = 2, own.get("")
        elif fstype == "cgroup" and "cpu" in options.split(","):
            version = 1
            path = next((v for k, v in own.items() if "cpu" in k.split(",")), None)
        else:
            continue
        if path is None:
            continue
        rel = path[len(root):] if root != "/" and path.startswith(root) else path
        found.append((version, os.path.normpath(mount + "/" + rel.lstrip("/"))))
    return sorted(found)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class CpuCap:
    """
    Where the attacker runs: at nice 19 and, when this machine lets us, in
    a cgroup of its own with ``cores`` CPUs' worth of quota.  `preexec` is
    the child's ``preexec_fn``; `close` removes the cgroup (after the child
    is gone).  ``how`` says in words what was done.
    """

    def __init__(self, cores: float, name: str, base: Optional[Sequence[Tuple[int, str]]] = None) -> None:
        self.cores = cores
        self.directory: Optional[str] = None
        self.version = 0
        failures = []
        if base is None:
            try:
                with open("/proc/self/mountinfo") as m, open("/proc/self/cgroup") as c:
                    base = cgroup_cpu_dirs(m.read(), c.read())
            except OSError:
                base = []
        quota = max(1000, int(cores * PERIOD_US))
        for version, parent in base:
            directory = os.path.join(parent, name)
            try:
                if version == 2:
                    with open(os.path.join(parent, "cgroup.controllers")) as f:
                        if "cpu" not in f.read().split():
                            raise OSError("no cpu controller in %s" % parent)
                    os.makedirs(directory, exist_ok=True)
                    if not os.path.exists(os.path.join(directory, "cpu.max")):
                        _write(os.path.join(parent, "cgroup.subtree_control"), "+cpu")
                    _write(os.path.join(directory, "cpu.max"), "%d %d" % (quota, PERIOD_US))
                else:
                    os.makedirs(directory, exist_ok=True)
                    _write(os.path.join(directory, "cpu.cfs_period_us"), str(PERIOD_US))
                    _write(os.path.join(directory, "cpu.cfs_quota_us"), str(quota))
            except OSError as e:
                failures.append(str(e))
                _rmdir(directory)
                continue
            self.directory, self.version = directory, version
            break
        if self.directory is not None:
            self.how = "cgroup v%d %s, quota %.2f CPU, nice 19" % (self.version, self.directory, cores)
        else:
            self.how = "nice 19 only (no writable cgroup CPU controller%s)" % (
                ": " + failures[-1] if failures else "")

    def preexec(self) -> None:
        """In the child, before exec: join the cgroup, lower the priority."""
        if self.directory is not None:
            _write(os.path.join(self.directory, "cgroup.procs"), str(os.getpid()))
        os.nice(19)

    def throttled_s(self) -> float:
        """Seconds the quota held the attacker back so far (0 without a cgroup)."""
        if self.directory is None:
            return 0.0
        try:
            with open(os.path.join(self.directory, "cpu.stat")) as f:
                stat = dict(line.split() for line in f if len(line.split()) == 2)
        except OSError:
            return 0.0
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def close(self) -> None:
        if self.directory is not None:
            _rmdir(self.directory)
            self.directory = None


def _rmdir(directory: str) -> None:
    try:
        os.rmdir(directory)
    except OSError:
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynomite.bench.attacker", description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--wave", type=int, default=500, help="connections open at once (default 500)")
    parser.add_argument("--hold", type=float, default=0.2, help="seconds a wave is held open (default 0.2)")
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    parser.add_argument("--sources", type=int, default=1,
                        help="loopback addresses the connections come from, from %s on (default 1)" % SOURCE_BASE)
    args = parser.parse_args(argv)
    if not 1 <= args.sources <= 65536:
        parser.error("--sources must be between 1 and 65536")
    raise_fd_limit(args.wave + 64)
    stop: List[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    result = attack(args.host, args.port, args.wave, args.hold, args.seed, lambda: bool(stop), ready,
                    args.sources)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
