"""
Shared clusters for ``tests/integration/test_cluster.py``.

Starting a cluster (a redis-server and a ``twistd -n dynomite`` per node)
takes seconds, so test classes share one cluster per topology through a
module-level cache (trial does not call ``setUpClass``), and every test
starts by :meth:`ClusterFixture.reset`: dead or paused processes are brought
back, then every backend Redis is flushed *directly*, never through the node
under test. Everything is stopped, by PID, at interpreter exit.

A cluster counts as ready only when writes sent through every node have
been seen in the Redis of every replica they should reach
(:meth:`ClusterFixture.wait_connected`): a node answers PING before its peer
links are up, and until hinted handoff exists a write sent meanwhile never
reaches the replicas behind a link that is still down.

The expected owner of a key is computed here from the cluster plan (tokens
per node) with ``dynomite.hashing.key_hash`` and ``dynomite.ring.Ring``:
in each rack, the node with the smallest token >= the key's hash, wrapping
around to the smallest token.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import tempfile
import time
import urllib.request
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dynomite.launcher.cluster import Cluster, ClusterError, ClusterNode
from dynomite.placement.hashing import key_hash
from dynomite.placement.ring import Ring
from tests.integration.harness import RawConnection, RedisProcess

#: Seconds a client waits for a reply before a test fails on a timeout.
SOCKET_TIMEOUT = 5.0

#: How long all peer links of a fresh (or repaired) cluster get to come up.
CONNECT_TIMEOUT = 20.0

#: 1 DC x 3 racks x 2 nodes; hash tags on. DC_ONE stays the default level.
RACKS = "racks"
#: 2 DCs x 3 racks x 1 node.
TWO_DCS = "two-dcs"
#: 1 DC x 3 racks x 1 node, started fresh by the one test that needs a cold start.
COLD = "cold"

TOPOLOGIES: Dict[str, Dict[str, Any]] = {
    RACKS: {
        "cluster": "ctest_racks",
        "datacenters": {"dc1": {"rack1": 2, "rack2": 2, "rack3": 2}},
        "node": {"hash_tag": "{}", "timeout": 2000},
    },
    TWO_DCS: {
        "cluster": "ctest_dcs",
        "datacenters": {
            "dc1": {"rack1": 1, "rack2": 1, "rack3": 1},
            "dc2": {"rack1": 1, "rack2": 1, "rack3": 1},
        },
        "node": {"timeout": 2000},
    },
    COLD: {
        "cluster": "ctest_cold",
        "datacenters": {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}},
        "node": {"timeout": 2000},
    },
}

#: Loopback ranges of their own, away from the demo cluster (127.0.0.11...)
#: and the launcher's tests (127.0.0.x): 127.5.<worker>.<host>, where
#: <worker> tells `trial --jobs` workers apart (each runs in _trial_temp/<n>).
HOSTS = {RACKS: 1, TWO_DCS: 21, COLD: 31}
PLAIN_REDIS_HOST = 40


def worker() -> int:
    """Which ``trial --jobs`` worker this is (0 when not run in parallel)."""
    name = os.path.basename(os.getcwd())
    return int(name) % 250 if name.isdigit() else 0


def address(host: int) -> str:
    """The loopback address ``host`` of this test process."""
    return f"127.5.{worker()}.{host}"


def no_retry() -> Retry:
    """redis-py retries by default; a test must see the first failure."""
    return Retry(NoBackoff(), 0)


def backend_client(node: ClusterNode, timeout: float) -> redis.Redis:
    """A RESP2 client straight to ``node``'s own redis-server, without retries."""
    host, port = node.redis_address
    return redis.Redis(host=host, port=port, protocol=2, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=no_retry())


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """Call ``predicate`` until it is true or ``timeout`` passes; the last result, as a bool."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def admin_get(node: ClusterNode, path: str, timeout: float = 2.0) -> bytes:
    """GET ``path`` from ``node``'s admin HTTP listener."""
    host, port = node.stats_address
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as r:
        return r.read()


def node_info(node: ClusterNode) -> Optional[Dict[str, Any]]:
    """``node``'s /info document, or None if it does not answer."""
    try:
        return json.loads(admin_get(node, "/info"))
    except (OSError, ValueError):
        return None


def all_normal(nodes: Iterable[ClusterNode]) -> bool:
    """Whether every node says it is NORMAL and sees every peer link UP."""
    for n in nodes:
        doc = node_info(n)
        if doc is None or doc["state"] != "NORMAL" or any(s != "UP" for s in doc["peers"].values()):
            return False
    return True


def wait_normal(nodes: Sequence[ClusterNode], label: str, timeout: float = 20.0) -> None:
    """
    Until every node is NORMAL and sees every peer UP (a node that came back
    stays RESUMING, unreadable for quorum reads, until its peers hold no
    hints for it); AssertionError with the states if not.
    """
    if poll(lambda: all_normal(nodes), timeout, 0.1):
        return
    states = {}
    for n in nodes:
        doc = node_info(n)
        states[n.name] = None if doc is None else (doc["state"], doc["peers"])
    raise AssertionError(f"cluster {label} not NORMAL with every peer UP after {timeout}s: {states}")


def as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


class ClusterFixture:
    """One started cluster of a named topology, with oracles for placement."""

    def __init__(self, label: str, parent_dir: Optional[str] = None, wait_connected: bool = True) -> None:
        """Start the cluster; then, unless told not to, wait until its peer links carry writes."""
        self.label = label
        self.topology = TOPOLOGIES[label]
        tag = self.topology.get("node", {}).get("hash_tag")
        self.hash_tag: Optional[bytes] = tag.encode() if tag else None
        self.tmpdir = tempfile.mkdtemp(prefix=f"cluster-{label}-", dir=parent_dir or os.getcwd())
        self.cluster = Cluster.from_topology(
            self.topology, os.path.join(self.tmpdir, "cluster"), ports="auto",
            base_address=address(HOSTS[label]),
        )
        self._backends: Dict[str, redis.Redis] = {}
        self._rings = {
            (dc, rack): Ring([(t, n) for n in nodes for t in n.tokens])
            for (dc, rack), nodes in self.racks().items()
        }
        self.cluster.start(timeout=60)  # stops what it started if it fails
        if not wait_connected:
            return
        try:
            self.wait_connected()
            wait_normal(self.nodes, self.cluster.name)
        except BaseException:
            self.stop()
            raise

    # -- the plan ---------------------------------------------------------

    @property
    def nodes(self) -> List[ClusterNode]:
        return self.cluster.nodes

    def node(self, name: str) -> ClusterNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def racks(self, dc: Optional[str] = None) -> Dict[Tuple[str, str], List[ClusterNode]]:
        """(dc, rack) -> that rack's nodes, in plan order."""
        out: Dict[Tuple[str, str], List[ClusterNode]] = {}
        for n in self.nodes:
            if dc is None or n.dc == dc:
                out.setdefault((n.dc, n.rack), []).append(n)
        return out

    @property
    def datacenters(self) -> List[str]:
        return list(dict.fromkeys(n.dc for n in self.nodes))

    def dc_nodes(self, dc: str) -> List[ClusterNode]:
        return [n for n in self.nodes if n.dc == dc]

    def key_hash(self, key: Any, tagged: bool = True) -> int:
        return key_hash(as_bytes(key), self.hash_tag if tagged else None)

    def owner(self, key: Any, dc: str, rack: str, tagged: bool = True) -> ClusterNode:
        """The node of ``dc``/``rack`` that must hold ``key`` (``tagged=False``: were there no hash_tag)."""
        return self._rings[dc, rack].owner(self.key_hash(key, tagged))

    def owners(self, key: Any, dc: Optional[str] = None) -> List[ClusterNode]:
        """The owner of ``key`` in every rack (of ``dc``, or of every DC)."""
        return [self.owner(key, d, r) for (d, r) in self.racks(dc)]

    def replica_set(self, key: Any) -> Tuple[str, ...]:
        return tuple(n.name for n in self.owners(key))

    def keys_by_replica_set(self, prefix: str, per_set: int, sets: int = 2) -> List[List[str]]:
        """
        ``per_set`` keys (``prefix0``, ``prefix1``, ...) for each of the first
        ``sets`` distinct replica sets met: keys whose owners differ.
        """
        groups: Dict[Tuple[str, ...], List[str]] = {}
        for i in itertools.count():
            key = f"{prefix}{i}"
            group = groups.setdefault(self.replica_set(key), [])
            if len(group) < per_set:
                group.append(key)
            full = [g for g in groups.values() if len(g) == per_set]
            if len(full) >= sets:
                return full[:sets]
            if i > 100_000:
                raise AssertionError(f"no {sets} replica sets with {per_set} keys each under {prefix!r}")
        raise AssertionError("unreachable")

    def describe(self) -> str:
        return self.cluster.table()

    # -- talking to it ----------------------------------------------------

    def client(self, node: ClusterNode, **kw: Any) -> redis.Redis:
        """A redis-py client of ``node`` (redis-py's default protocol unless given); caller closes."""
        kw.setdefault("socket_timeout", SOCKET_TIMEOUT)
        kw.setdefault("socket_connect_timeout", SOCKET_TIMEOUT)
        kw.setdefault("retry", no_retry())
        host, port = node.client_address
        return redis.Redis(host=host, port=port, **kw)

    def raw(self, node: ClusterNode) -> RawConnection:
        host, port = node.client_address
        return RawConnection(host, port, timeout=SOCKET_TIMEOUT)

    def backend(self, node: ClusterNode) -> redis.Redis:
        """A RESP2 client straight to ``node``'s own redis-server (bypassing every node)."""
        client = self._backends.get(node.name)
        if client is None:
            client = self._backends[node.name] = backend_client(node, SOCKET_TIMEOUT)
        return client

    def backend_raw(self, node: ClusterNode) -> RawConnection:
        host, port = node.redis_address
        return RawConnection(host, port, timeout=SOCKET_TIMEOUT)

    def backend_keys(self, node: ClusterNode, match: str = "*") -> set:
        return set(self.backend(node).scan_iter(match=match, count=1000))

    def backend_total(self) -> int:
        return sum(self.backend(n).dbsize() for n in self.nodes)

    # -- lifecycle --------------------------------------------------------

    def healthy(self) -> bool:
        return all(p.running() and not p.paused for p in self.cluster.processes)

    def ensure_running(self) -> None:
        """
        Bring back every process a test killed or paused, wait for the links,
        and for every node to be NORMAL (a node a test restarted itself may
        still be RESUMING).
        """
        if not self.healthy():
            for proc in self.cluster.processes:
                if proc.paused:
                    proc.resume()
            for proc in self.cluster.redis_processes + self.cluster.node_processes:
                if not proc.running():
                    proc.start()
            self.wait_connected()
        wait_normal(self.nodes, self.cluster.name)

    def restart(self, node: ClusterNode) -> None:
        """Restart ``node``'s redis-server and node process, then wait for the links: a clean slate."""
        node.node_process.stop()
        node.redis_process.stop()
        node.redis_process.start()
        node.node_process.start()
        self.wait_connected()
        wait_normal(self.nodes, self.cluster.name)

    def reset(self) -> None:
        """Every process up, every backend empty (FLUSHALL sent to each Redis directly)."""
        self.ensure_running()
        for n in self.nodes:
            self.backend(n).flushall()

    def wait_connected(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """
        Until a write through each node reaches every replica it should
        reach (its owner in every rack of every DC), keep writing fresh
        probe values through that node; then delete the probes. Each node
        writes its own probe keys, chosen so that together they are owned
        by every node, which exercises every peer link a node uses for
        writes (and, with several DCs, its entry node's links).

        Raises ClusterError if, after ``timeout``, some write still misses
        a replica in its coordinator's own datacenter. Replication to other
        datacenters is waited for but not required, so that its absence
        fails the tests about it, with their own messages, and no others.
        """
        probes = {c.name: self._probe_keys(c.name) for c in self.nodes}
        pending = {(c.name, key) for c in self.nodes for key in probes[c.name]}
        local_ok: set = set()
        clients = {c.name: self.client(c, protocol=2) for c in self.nodes}
        deadline = time.monotonic() + timeout
        try:
            for round_ in itertools.count():
                last: Dict[Tuple[str, str], bytes] = {}
                errors: Dict[Tuple[str, str], str] = {}
                for coordinator, key in sorted(pending):
                    value = b"%s:%d" % (coordinator.encode(), round_)
                    try:
                        clients[coordinator].set(key, value)
                        last[coordinator, key] = value
                    except redis.RedisError as e:
                        errors[coordinator, key] = repr(e)
                time.sleep(0.1)
                for (coordinator, key), value in last.items():
                    dc = self.node(coordinator).dc
                    have = {o.name for o in self.owners(key) if self.backend(o).get(key) == value}
                    if {o.name for o in self.owners(key, dc)} <= have:
                        local_ok.add((coordinator, key))
                    if have == {o.name for o in self.owners(key)}:
                        pending.discard((coordinator, key))
                if not pending:
                    break
                if time.monotonic() >= deadline:
                    if pending - local_ok:
                        raise ClusterError(self._not_connected(pending - local_ok, last, errors, timeout))
                    break
        finally:
            for c in clients.values():
                c.close()
        for n in self.nodes:
            for keys in probes.values():
                self.backend(n).delete(*keys)

    def _not_connected(self, pending: Iterable[Tuple[str, str]], last: Dict[Tuple[str, str], bytes],
                       errors: Dict[Tuple[str, str], str], timeout: float) -> str:
        """Why wait_connected gave up: per probe, who holds what, owners or not."""
        lines = []
        for coordinator, key in sorted(pending):
            owners = {o.name for o in self.owners(key)}
            held = {n.name: self.backend(n).get(key) for n in self.nodes}
            want = last.get((coordinator, key))
            missing = sorted(o for o in owners if held[o] != want)
            strays = sorted(n for n, v in held.items() if v is not None and n not in owners)
            lines.append(
                f"  SET {key!r} {want!r} via {coordinator}: not on owner(s) {missing}"
                + (f"; found on non-owner(s) {strays}" if strays else "")
                + (f"; error {errors[coordinator, key]}" if (coordinator, key) in errors else "")
            )
        tails = "\n".join(
            f"{c}:\n{self.node(c).node_process.log_tail(10)}" for c in sorted({c for c, _ in pending})[:3]
        )
        return (
            f"cluster {self.label}: writes through some nodes did not reach every replica within"
            f" {timeout:.0f}s (peer links down, or placement differs from the token owners):\n"
            + "\n".join(lines[:20]) + f"\n{self.describe()}\nlog tails:\n{tails}"
        )

    def _probe_keys(self, coordinator: str) -> List[str]:
        """Keys (per coordinator) whose owners, taken together, are every node."""
        wanted = {n.name for n in self.nodes}
        keys: List[str] = []
        for i in itertools.count():
            key = f"__probe__:{coordinator}:{i}"
            owners = {o.name for o in self.owners(key)}
            if owners & wanted:
                keys.append(key)
                wanted -= owners
            if not wanted:
                return keys
        raise AssertionError("unreachable")

    def stop(self) -> None:
        for c in self._backends.values():
            c.close()
        self._backends.clear()
        self.cluster.stop()


class PlainRedis:
    """A plain redis-server, the oracle for differential tests."""

    def __init__(self, parent_dir: Optional[str] = None) -> None:
        tmp = tempfile.mkdtemp(prefix="plain-redis-", dir=parent_dir or os.getcwd())
        self.process = RedisProcess(host=address(PLAIN_REDIS_HOST), tmpdir=tmp)
        self.process.start()

    def healthy(self) -> bool:
        return self.process.running()

    def raw(self) -> RawConnection:
        return self.process.raw(timeout=SOCKET_TIMEOUT)

    def reset(self) -> None:
        with self.raw() as conn:
            reply = conn.command("FLUSHALL")
        if reply != b"+OK\r\n":
            raise AssertionError(f"FLUSHALL on the plain redis-server answered {reply!r}")

    def stop(self) -> None:
        self.process.stop()


class _Cache:
    """
    Fixtures by name, each started at most once per process while it stays
    usable; all stopped at exit (only the PIDs they started). A fixture
    that failed to start is not retried: later tests fail at once with the
    same explanation instead of waiting for the same failure again.
    """

    def __init__(self) -> None:
        self._items: Dict[str, Any] = {}
        self._failed: Dict[str, str] = {}

    def get(self, name: str, factory: Callable[[], Any]) -> Any:
        if name in self._failed:
            raise ClusterError(f"shared fixture {name!r} failed to start earlier in this run:\n{self._failed[name]}")
        item = self._items.get(name)
        if item is not None and not item.healthy():
            try:
                repair = getattr(item, "ensure_running", None)
                if repair is None:
                    raise ClusterError("cannot repair")
                repair()
            except Exception:
                self._items.pop(name, None)
                item.stop()
                item = None
        if item is None:
            try:
                item = self._items[name] = factory()
            except Exception as e:
                self._failed[name] = f"{type(e).__name__}: {e}"
                raise
        return item

    def close(self) -> None:
        items, self._items = list(self._items.values()), {}
        for item in items:
            try:
                item.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass


_cache = _Cache()
atexit.register(_cache.close)


def cluster(label: str) -> ClusterFixture:
    """The shared, started cluster of topology ``label`` (RACKS or TWO_DCS)."""
    return _cache.get(label, lambda: ClusterFixture(label))


def plain_redis() -> PlainRedis:
    """The shared plain redis-server."""
    return _cache.get("plain-redis", PlainRedis)


def close_all() -> None:
    """Stop every shared fixture now (also done at exit)."""
    _cache.close()


def sample(seq: Sequence[Any], k: int, rng: Any) -> List[Any]:
    return rng.sample(list(seq), min(k, len(seq)))


def chunks(items: Iterable[Any], size: int) -> Iterable[List[Any]]:
    batch: List[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
