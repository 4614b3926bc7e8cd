"""
Helpers for ``tests/integration/test_ha.py``: fault injection against real processes.

Each test of test_ha starts a cluster of its own (:class:`HACluster`,
through :class:`dynomite.cluster.Cluster`), because every test kills,
pauses or restarts processes and several need node settings of their own
(a 2 s hint window, ``hints_fsync: always``). A cluster is stopped by PID
in the test's cleanup, passed or failed, and at interpreter exit as a last
resort; its files (node logs, hint logs) stay under ``_trial_temp`` for a
post-mortem.

Addresses: ``127.7.<worker>.<host>``, where <worker> tells ``trial --jobs``
workers apart exactly as ``tests/cluster_fixtures.py`` does (each worker runs
in ``_trial_temp/<n>``), and <host> is the test's own block, so no two
clusters ever share an address, in this process or another.

The oracle of every test is :class:`Writer`: unique keys, write-once
values, and the list of the writes the client saw acknowledged (with the
time of each acknowledgement), kept apart from the ones that failed. The
replicas are then read straight from their own redis-server, never
through a node.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import random
import tempfile
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import redis

from dynomite.launcher.cluster import Cluster, ClusterNode, format_address
from dynomite.placement.hashing import key_hash
from dynomite.replication.hints import safe_name
from dynomite.placement.ring import Ring

from tests.integration.cluster_fixtures import admin_get, all_normal, backend_client, node_info, wait_normal
from tests.integration.cluster_fixtures import no_retry, poll, worker  # noqa: F401 (used by test_ha)

#: Seconds a client waits for a reply before the call counts as an error.
SOCKET_TIMEOUT = 5.0

#: Settings every HA cluster runs with: short timeouts keep the file fast.
BASE_SETTINGS: Dict[str, Any] = {
    "timeout": 1000,
    "peer_down_after": 1500,
    "read_consistency": "DC_ONE",
    "write_consistency": "DC_ONE",
}


def address(host: int) -> str:
    """The loopback address ``host`` of this test process: 127.7.<worker>.<host>."""
    return f"127.7.{worker()}.{host}"


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


_live: List["HACluster"] = []


def _stop_leftovers() -> None:
    for fx in list(_live):
        try:
            fx.stop()
        except Exception:  # noqa: BLE001 - keep stopping the others
            pass


atexit.register(_stop_leftovers)


class HACluster:
    """
    One started cluster for one test: ``datacenters`` as in a topology file
    (``{"dc1": {"rack1": 1, ...}}``), ``settings`` added to
    :data:`BASE_SETTINGS` in every node's YAML, addresses from
    ``127.7.<worker>.<host>``.
    """

    def __init__(self, label: str, datacenters: Dict[str, Dict[str, int]], host: int,
                 settings: Optional[Dict[str, Any]] = None) -> None:
        self.label = label
        self.tmpdir = tempfile.mkdtemp(prefix=f"ha-{label}-", dir=os.getcwd())
        self.workdir = os.path.join(self.tmpdir, "cluster")
        self.settings = {**BASE_SETTINGS, **(settings or {})}
        topology = {"cluster": f"ha_{label}", "datacenters": datacenters, "node": self.settings}
        self.cluster = Cluster.from_topology(topology, self.workdir, ports="auto",
                                             base_address=address(host))
        self._backends: Dict[str, redis.Redis] = {}
        self._clients: List[redis.Redis] = []
        racks: Dict[Tuple[str, str], List[ClusterNode]] = {}
        for n in self.cluster.nodes:
            racks.setdefault((n.dc, n.rack), []).append(n)
        self._racks = racks
        self._rings = {k: Ring([(t, n) for n in nodes for t in n.tokens]) for k, nodes in racks.items()}
        _live.append(self)
        self.cluster.start(timeout=60)   # stops what it started if it fails

    # -- the plan ------------------------------------------------------------

    @property
    def nodes(self) -> List[ClusterNode]:
        return self.cluster.nodes

    def node(self, dc: str, rack: str, index: int = 0) -> ClusterNode:
        return self.cluster.node(dc, rack, index)

    def dc_nodes(self, dc: str) -> List[ClusterNode]:
        return [n for n in self.nodes if n.dc == dc]

    @staticmethod
    def peer_name(node: ClusterNode) -> str:
        """What nodes call ``node`` (its peer address): hint targets, /info peers."""
        return format_address(node.peer_address)

    def owner(self, key: Any, dc: str, rack: str) -> ClusterNode:
        """The node of ``dc``/``rack`` that owns ``key`` (computed from the plan's tokens)."""
        raw = key if isinstance(key, bytes) else str(key).encode()
        return self._rings[dc, rack].owner(key_hash(raw, None))

    def owners(self, key: Any) -> List[ClusterNode]:
        return [self.owner(key, dc, rack) for (dc, rack) in self._racks]

    def hint_dir(self, coordinator: ClusterNode, target: Optional[ClusterNode] = None) -> str:
        """``<workdir>/data/hints/<coordinator>/[<target>]`` (nodes run with cwd = workdir)."""
        path = os.path.join(self.workdir, "data", "hints", safe_name(self.peer_name(coordinator)))
        return path if target is None else os.path.join(path, safe_name(self.peer_name(target)))

    # -- talking to it -------------------------------------------------------

    def client(self, node: ClusterNode, consistency: Optional[str] = None, **kw: Any) -> redis.Redis:
        """redis-py (8, RESP3 by default) on one connection to ``node``; closed by :meth:`stop`."""
        kw.setdefault("socket_timeout", SOCKET_TIMEOUT)
        kw.setdefault("socket_connect_timeout", SOCKET_TIMEOUT)
        kw.setdefault("retry", no_retry())
        host, port = node.client_address
        c = redis.Redis(host=host, port=port, single_connection_client=True, **kw)
        self._clients.append(c)
        if consistency is not None:
            reply = c.execute_command("DYNO_CONFIG:CONN_CONSISTENCY", consistency)
            if reply not in (b"OK", "OK", True):
                raise AssertionError(f"DYNO_CONFIG:CONN_CONSISTENCY {consistency} via {node.name}: {reply!r}")
        return c

    def backend(self, node: ClusterNode) -> redis.Redis:
        """RESP2 client straight to ``node``'s own redis-server."""
        c = self._backends.get(node.name)
        if c is None:
            c = self._backends[node.name] = backend_client(node, SOCKET_TIMEOUT)
        return c

    def admin(self, node: ClusterNode, path: str, timeout: float = 2.0) -> bytes:
        return admin_get(node, path, timeout)

    def info(self, node: ClusterNode) -> Dict[str, Any]:
        return json.loads(self.admin(node, "/info"))

    def try_info(self, node: ClusterNode) -> Optional[Dict[str, Any]]:
        return node_info(node)

    def hint_stats(self, coordinator: ClusterNode, target: ClusterNode) -> Optional[Dict[str, Any]]:
        """``coordinator``'s /info hints entry for ``target`` (None if unreachable)."""
        doc = self.try_info(coordinator)
        return None if doc is None else doc["hints"].get(self.peer_name(target))

    def metrics(self, node: ClusterNode) -> str:
        return self.admin(node, "/metrics").decode()

    # -- state ---------------------------------------------------------------

    def all_normal(self, nodes: Optional[Sequence[ClusterNode]] = None) -> bool:
        return all_normal(nodes or self.nodes)

    def wait_normal(self, timeout: float = 20.0, nodes: Optional[Sequence[ClusterNode]] = None) -> None:
        """Until every node is NORMAL and sees every peer UP; AssertionError with the states if not."""
        wait_normal(nodes or self.nodes, self.label, timeout)

    def peer_state_seen_by(self, observer: ClusterNode, peer: ClusterNode) -> Optional[str]:
        doc = self.try_info(observer)
        return None if doc is None else doc["peers"].get(self.peer_name(peer))

    # -- replicas ------------------------------------------------------------

    def wrong_on(self, node: ClusterNode, data: Dict[str, str]) -> List[str]:
        """Keys of ``data`` whose value in ``node``'s redis-server is not the acknowledged one."""
        keys = sorted(data)
        wrong: List[str] = []
        backend = self.backend(node)
        for batch in chunks(keys, 1000):
            for key, got in zip(batch, backend.mget(batch)):
                if got is None or got.decode() != data[key]:
                    wrong.append(key)
        return wrong

    def wait_holding(self, nodes: Sequence[ClusterNode], data: Dict[str, str],
                     timeout: float) -> Dict[str, List[str]]:
        """Poll until every node of ``nodes`` holds every key of ``data``; what is still wrong per node."""
        result: Dict[str, List[str]] = {}

        def done() -> bool:
            result.clear()
            for n in nodes:
                try:
                    wrong = self.wrong_on(n, data)
                except redis.RedisError as e:
                    wrong = [f"<{n.name} redis unreadable: {e!r}>"]
                if wrong:
                    result[n.name] = wrong
            return not result

        poll(done, timeout, 0.25)
        return dict(result)

    # -- logs ----------------------------------------------------------------

    def log_text(self, node: ClusterNode) -> str:
        """Everything ``node``'s process logged (its twistd log; restarts append to it)."""
        parts = []
        for path in node.node_process.log_paths():
            try:
                with open(path, "rb") as f:
                    parts.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(parts)

    def diagnostics(self, nodes: Optional[Sequence[ClusterNode]] = None, lines: int = 15) -> str:
        """Per node: process state, /info state, peers and hint backlog, and its log tail."""
        out = []
        for n in nodes or self.nodes:
            doc = self.try_info(n)
            summary = "no /info" if doc is None else json.dumps(
                {"state": doc["state"], "peers": doc["peers"],
                 "hints": {t: {k: v for k, v in h.items() if k != "pending_bytes"}
                           for t, h in doc["hints"].items()}})
            out.append(
                f"== {n.name} (peer {self.peer_name(n)}; node pid {n.node_process.pid}"
                f" running={n.node_process.running()}; redis pid {n.redis_process.pid}"
                f" running={n.redis_process.running()} paused={n.redis_process.paused})\n"
                f"{summary}\n{n.node_process.log_tail(lines)}")
        return "\n".join(out)

    def describe(self) -> str:
        return self.cluster.table()

    # -- stopping ------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process this cluster started, by PID (paused ones get SIGCONT first)."""
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        self._clients.clear()
        for c in self._backends.values():
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        self._backends.clear()
        for proc in self.cluster.processes:
            if proc.paused:
                proc.resume()
        self.cluster.stop(timeout=5)
        if self in _live:
            _live.remove(self)


class Writer(threading.Thread):
    """
    The oracle: one client that SETs unique keys ``<prefix>:<i>`` to
    write-once values through one node and records what it saw.

    ``acked`` maps each key whose SET answered OK to its value, ``ack_times``
    lists (monotonic time, key) of the acknowledgements, ``errors`` every
    failed write or read as (time, what, error). With ``read_every`` = n,
    after every n-th write it GETs one of its own acknowledged keys, chosen
    at random, through the same connection and records a wrong value in
    ``wrong_reads``. It stops after ``count`` writes, or when :meth:`halt`
    is called; ``interval`` paces it (seconds between writes).
    """

    def __init__(self, fx: HACluster, node: ClusterNode, prefix: str, count: Optional[int] = None,
                 interval: float = 0.0, consistency: Optional[str] = None, read_every: int = 0,
                 seed: int = 0) -> None:
        super().__init__(name=f"writer-{prefix}", daemon=True)
        self.fx = fx
        self.node = node
        self.prefix = prefix
        self.count = count
        self.interval = interval
        self.read_every = read_every
        self.client = fx.client(node, consistency)
        self.acked: Dict[str, str] = {}
        self.ack_times: List[Tuple[float, str]] = []
        self.errors: List[Tuple[float, str, str]] = []
        self.wrong_reads: List[Tuple[str, Any, str]] = []
        self.reads = 0
        self.attempted = 0
        self._halt = threading.Event()
        self._rng = random.Random(seed)
        self._acked_keys: List[str] = []

    def halt(self) -> None:
        self._halt.set()

    def finish(self, timeout: float = 30.0) -> None:
        """Stop and wait for the thread."""
        self.halt()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        for i in itertools.count():
            if self._halt.is_set() or (self.count is not None and i >= self.count):
                return
            key = f"{self.prefix}:{i}"
            value = f"{self.prefix}:{i}:{self._rng.getrandbits(32):08x}"
            self.attempted += 1
            try:
                reply = self.client.set(key, value)
            except redis.RedisError as e:
                self.errors.append((time.monotonic(), f"SET {key}", repr(e)))
            except Exception as e:  # noqa: BLE001 - the thread must record, not die
                self.errors.append((time.monotonic(), f"SET {key}", f"unexpected {e!r}"))
            else:
                if reply is True:
                    self.acked[key] = value
                    self._acked_keys.append(key)
                    self.ack_times.append((time.monotonic(), key))
                else:
                    self.errors.append((time.monotonic(), f"SET {key}", f"reply {reply!r}"))
            if self.read_every and self._acked_keys and i % self.read_every == 0:
                self._read_one()
            if self.interval:
                self._halt.wait(self.interval)

    def _read_one(self) -> None:
        key = self._rng.choice(self._acked_keys)
        self.reads += 1
        try:
            got = self.client.get(key)
        except redis.RedisError as e:
            self.errors.append((time.monotonic(), f"GET {key}", repr(e)))
            return
        want = self.acked[key]
        if got is None or got.decode() != want:
            self.wrong_reads.append((key, got, want))


def merged(writers: Iterable[Writer]) -> Dict[str, str]:
    """Every acknowledged write of ``writers``: key -> value."""
    out: Dict[str, str] = {}
    for w in writers:
        out.update(w.acked)
    return out


def all_errors(writers: Iterable[Writer]) -> List[Tuple[float, str, str]]:
    return sorted(e for w in writers for e in w.errors)
