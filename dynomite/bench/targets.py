# -*- test-case-name: tests.unit.test_benchmark -*-
"""
What the benchmark measures: plain Redis, and dynomite nodes in front of Redis.

Each :class:`Target` starts its processes on this machine (ephemeral ports,
its own 127.0.0.x addresses), says where clients connect, which node and
redis-server PIDs to charge CPU to, and can empty its datastores between
runs. Node targets are :class:`dynomite.launcher.cluster.Cluster` instances built
from a topology dict; a single node is a 1 x 1 x 1 cluster. The nodes run
under the ``twistd`` of an :class:`bench.interpreters.Interpreter`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dynomite.launcher.cluster import Cluster, RedisProcess, free_ports
from dynomite.launcher.host import tls_probe_context

from .interpreters import Interpreter

__all__ = ["KINDS", "NodeTarget", "RedisTarget", "Target", "TargetKind", "call"]

Address = Tuple[str, int]


@dataclass(frozen=True)
class TargetKind:
    """One kind of target: its name on the command line, its label, and its cluster shape."""

    name: str
    label: str
    racks: int = 0  # 0: plain Redis, no node
    consistency: str = "DC_ONE"
    tls: bool = False  # clients on tls_listen only, and secure_server_option: all between the nodes
    datacenters: int = 1  # each with ``racks`` racks; clients talk to the first datacenter
    conflicts: str = "arrival"  # datacenter_conflicts
    by_default: bool = True  # run when --targets is not given

    @property
    def is_redis(self) -> bool:
        return self.racks == 0


#: Every kind, in the order a round runs them (plain Redis first: it is what the others are divided by).
KINDS: Dict[str, TargetKind] = {
    k.name: k
    for k in (
        TargetKind("redis", "plain redis"),
        TargetKind("single", "single node", racks=1),
        TargetKind("dc_one", "3 racks DC_ONE", racks=3, consistency="DC_ONE"),
        TargetKind("dc_quorum", "3 racks DC_QUORUM", racks=3, consistency="DC_QUORUM"),
        TargetKind("single_tls", "single node, TLS", racks=1, tls=True),
        TargetKind("dc_one_tls", "3 racks DC_ONE, TLS all", racks=3, consistency="DC_ONE", tls=True),
        TargetKind("two_dcs", "2 DCs x 1 rack DC_ONE", racks=1, consistency="DC_ONE", datacenters=2,
                   by_default=False),
        TargetKind("two_dcs_lww", "2 DCs x 1 rack DC_ONE, last writer wins", racks=1, consistency="DC_ONE",
                   datacenters=2, conflicts="last_writer_wins", by_default=False),
    )
}

#: The test CA recipe (tools/make-test-certs), for the TLS targets.
MAKE_CERTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "tools", "make-test-certs")


# -- a little RESP, for the control connections (not the measured traffic) ----------------


def _encode(args: Sequence[Any]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(sock: socket.socket) -> Any:
    """One simple, error, integer or bulk reply (all the control commands use)."""
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed before a reply")
        buf += chunk
    line, rest = buf.split(b"\r\n", 1)
    kind, body = line[:1], line[1:]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RuntimeError(body.decode("utf-8", "replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        while len(rest) < size + 2:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed inside a bulk reply")
            rest += chunk
        return rest[:size]
    raise RuntimeError(f"unexpected reply {line[:80]!r}")


def call(address: Address, *args: Any, timeout: float = 10.0,
         tls: Optional[Dict[str, Optional[str]]] = None) -> Any:
    """
    Send one command to ``address`` on a new connection and return its
    reply; over TLS when ``tls`` is given (`dynomite.launcher.host.tls_probe_context`).
    """
    with socket.create_connection(address, timeout=timeout) as raw:
        with tls_probe_context(tls).wrap_socket(raw) if tls is not None else raw as sock:
            sock.sendall(_encode(args))
            return _read_reply(sock)


# -- targets ---------------------------------------------------------------------


class Target:
    """Something redis-benchmark runs against. Subclasses start and stop the processes."""

    kind: TargetKind
    interpreter: Optional[Interpreter] = None

    @property
    def id(self) -> str:
        """Unique among the targets of a run: ``single/cpython``, ``redis``."""
        return self.kind.name if self.interpreter is None else f"{self.kind.name}/{self.interpreter.name}"

    @property
    def label(self) -> str:
        return self.kind.label if self.interpreter is None else f"{self.kind.label} ({self.interpreter.name})"

    @property
    def client_address(self) -> Address:
        """Where redis-benchmark connects; every subclass says (no sensible default)."""
        raise NotImplementedError

    @property
    def client_tls(self) -> Optional[Dict[str, Optional[str]]]:
        """How `check` speaks TLS to `client_address` (`call`'s ``tls``); None in clear."""
        return None

    @property
    def tls_args(self) -> List[str]:
        """redis-benchmark's TLS options for `client_address` (none in clear)."""
        return []

    @property
    def node_pids(self) -> List[int]:
        """PIDs whose CPU counts as the nodes' (none for plain Redis)."""
        return []

    @property
    def redis_pids(self) -> List[int]:
        """PIDs whose CPU counts as the redis-servers'; every subclass says (no sensible default)."""
        raise NotImplementedError

    @property
    def backends(self) -> List[Address]:
        """Every redis-server holding this target's data."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Empty every datastore (FLUSHALL sent to each redis-server directly)."""
        for address in self.backends:
            reply = call(address, "FLUSHALL")
            if reply != "OK":
                raise RuntimeError(f"FLUSHALL on {address[0]}:{address[1]} answered {reply!r}")

    def key_counts(self) -> List[int]:
        """DBSIZE of each datastore, read directly."""
        return [int(call(address, "DBSIZE")) for address in self.backends]

    def check(self) -> None:
        """A SET and a GET through the client address must work (a benchmark of error replies is no benchmark)."""
        value = b"dynomite-bench-%d" % os.getpid()
        reply = call(self.client_address, "SET", "dynomite-bench:check", value, tls=self.client_tls)
        if reply != "OK":
            raise RuntimeError(f"{self.label}: SET answered {reply!r}")
        got = call(self.client_address, "GET", "dynomite-bench:check", tls=self.client_tls)
        if got != value:
            raise RuntimeError(f"{self.label}: GET answered {got!r}, expected {value!r}")

    def wait_serving(self, timeout: float = 60.0) -> None:
        """
        Retry :meth:`check` until it passes: a node answers PING before its
        peer links are up, and a quorum write fails until they are.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.check()
                return
            except (RuntimeError, ConnectionRefusedError) as e:  # an error reply: peers not linked yet
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{self.label} does not serve SET and GET after {timeout:.0f} s: {e}\n{self.log_tail()}"
                    ) from None
            except OSError as e:  # the connection dropped: the node failed the request
                raise RuntimeError(f"{self.label} failed a SET or GET: {e!r}\n{self.log_tail()}") from None
            time.sleep(0.2)

    def log_tail(self) -> str:
        """The end of the logs of the process clients talk to, for error messages."""
        return ""

    def describe(self) -> Dict[str, Any]:
        """For the JSON report: what this target is and where it ran."""
        return {
            "id": self.id,
            "kind": self.kind.name,
            "label": self.label,
            "interpreter": self.interpreter.describe() if self.interpreter else None,
            "client": list(self.client_address),
            "backends": [list(b) for b in self.backends],
            "pids": self.node_pids + self.redis_pids,
        }


class RedisTarget(Target):
    """A plain redis-server without persistence, the yardstick."""

    def __init__(self, workdir: str, host: str) -> None:
        self.kind = KINDS["redis"]
        port = free_ports(host, 1)[0]
        datadir = os.path.join(workdir, "redis")
        self.process = RedisProcess.create("plain", (host, port), datadir, os.path.join(workdir, "redis.log"))

    @property
    def client_address(self) -> Address:
        return self.process.address

    @property
    def redis_pids(self) -> List[int]:
        return [self.process.pid] if self.process.pid else []

    @property
    def backends(self) -> List[Address]:
        return [self.process.address]

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()


class NodeTarget(Target):
    """
    A cluster of ``kind.datacenters`` datacenters with ``kind.racks`` racks
    of one node each; the benchmark's clients all talk to the first node,
    which replicates to the other racks at the kind's read and write
    consistency, and to the other datacenters.  A TLS
    kind gets a test CA and certificates (tools/make-test-certs), runs
    every peer link over TLS, and its nodes take clients on ``tls_listen``
    only (the topology's ``clients: tls``).  ``settings`` are more node
    settings of every node (``enable_gossip``...).
    """

    def __init__(self, kind: TargetKind, interpreter: Interpreter, workdir: str, base_address: str,
                 timeout_ms: int = 5000, settings: Optional[Dict[str, Any]] = None) -> None:
        self.kind = kind
        self.interpreter = interpreter
        topology = {
            "cluster": "bench",
            "datacenters": {f"dc{d + 1}": {f"rack{i + 1}": 1 for i in range(kind.racks)}
                            for d in range(kind.datacenters)},
            "node": {
                "read_consistency": kind.consistency,
                "write_consistency": kind.consistency,
                "timeout": timeout_ms,
                **({"datacenter_conflicts": kind.conflicts} if kind.conflicts != "arrival" else {}),
                **(settings or {}),
            },
        }
        directory = os.path.join(workdir, self.id.replace("/", "-"))
        self._ca = ""
        if kind.tls:
            certs = os.path.join(workdir, self.id.replace("/", "-") + "-certs")
            first = ipaddress.IPv4Address(base_address)
            subprocess.run([MAKE_CERTS, certs, "node"] + [f"IP:{first + i}" for i in range(10)], check=True)
            self._ca = os.path.join(certs, "ca.crt")
            topology["node"].update(tls_cert_file=os.path.join(certs, "node.crt"),
                                    tls_key_file=os.path.join(certs, "node.key"),
                                    tls_ca_cert_file=self._ca, tls_auth_clients="no",
                                    secure_server_option="all")
            topology["clients"] = "tls"
        self.cluster = Cluster.from_topology(
            topology, directory, ports="auto", base_address=base_address, twistd=interpreter.twistd,
        )

    @property
    def client_address(self) -> Address:
        return self.cluster.nodes[0].client_address

    @property
    def client_tls(self) -> Optional[Dict[str, Optional[str]]]:
        return {"ca": self._ca, "cert": None, "key": None} if self.kind.tls else None

    @property
    def tls_args(self) -> List[str]:
        return ["--tls", "--cacert", self._ca] if self.kind.tls else []

    @property
    def node_pids(self) -> List[int]:
        return [p.pid for p in self.cluster.node_processes if p.pid]

    @property
    def redis_pids(self) -> List[int]:
        return [p.pid for p in self.cluster.redis_processes if p.pid]

    @property
    def backends(self) -> List[Address]:
        return [n.redis_address for n in self.cluster.nodes]

    def start(self) -> None:
        # A node under PyPy imports more slowly than under CPython: give it time.
        self.cluster.start(timeout=120.0)

    def stop(self) -> None:
        self.cluster.stop()

    def log_tail(self) -> str:
        return self.cluster.nodes[0].node_process.log_tail(30)

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info.update({
            "racks": self.kind.racks,
            "read_consistency": self.kind.consistency,
            "write_consistency": self.kind.consistency,
            "nodes": [{"name": n.name, "client": list(n.client_address), "redis": list(n.redis_address)}
                      for n in self.cluster.nodes],
        })
        return info
