# -*- test-case-name: tests.integration.test_cluster_launcher -*-
"""
A whole cluster on this machine, from a small topology file.

:class:`Cluster` turns a :class:`dynomite.launcher.topology_file.ClusterFile`
(the validated topology file) into a plan (names, 127.0.0.x addresses, ports,
tokens, one Dynomite YAML per node) and runs it: one ``redis-server`` and
one ``twistd -n dynomite`` per node. Integration tests drive it directly;
each process is a :class:`dynomite.launcher.processes.ManagedProcess` that can be
stopped, killed, paused, resumed and restarted by PID, which is what fault
injection needs.

The ``dynomite-cluster`` command (``up``, ``status``, ``down``) is
:mod:`dynomite.cli.cluster`.

A started cluster records its PIDs in ``<workdir>/cluster.json`` (see
:meth:`Cluster.write_state`), so another process can inspect or stop it by
PID.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from dynomite.launcher.topology_file import (
    DEFAULT_BASE_ADDRESS,
    Ports,
    ClusterFile,
    node_hosts,
    node_label,
    owned_ranges,
    parse_base_address,
    parse_ports,
    rack_tokens,
)
from dynomite.launcher.host import free_ports, port_busy, tls_probe
from dynomite.launcher.tables import format_ranges, format_table
from dynomite.launcher.processes import (
    ClusterError,
    ManagedProcess,
    NodeProcess,
    RedisProcess,
    stop_all,
    wait_all_ready,
)

__all__ = [
    "STATE_FILE",
    "Cluster",
    "ClusterError",
    "ClusterNode",
    "RedisProcess",
    "free_ports",
]

STATE_FILE = "cluster.json"
STATE_FORMAT = 1


# -- the cluster -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClusterNode:
    """One node of a cluster plan: where it listens, what it owns, its two processes."""

    name: str
    dc: str
    rack: str
    index: int
    tokens: Tuple[int, ...]
    ranges: Tuple[Tuple[int, int], ...]
    client_address: Tuple[str, int]
    peer_address: Tuple[str, int]
    stats_address: Tuple[str, int]
    redis_address: Tuple[str, int]
    config_path: str
    node_process: NodeProcess
    redis_process: RedisProcess

    @property
    def host(self) -> str:
        return self.client_address[0]

    @property
    def processes(self) -> Tuple[ManagedProcess, ManagedProcess]:
        return (self.node_process, self.redis_process)

    @property
    def seed(self) -> str:
        """This node as other nodes list it in ``dyn_seeds``: host:port:rack:dc:tokens."""
        host, port = self.peer_address
        return f"{host}:{port}:{self.rack}:{self.dc}:{','.join(map(str, self.tokens))}"

    def config_document(self, cluster: str, seeds: Iterable[str], settings: Iterable[Tuple[str, Any]],
                        client_tls: bool = False) -> Dict[str, Any]:
        """This node's Dynomite YAML as a dict: launcher keys, then the topology's settings."""
        pool: Dict[str, Any] = {
            "tls_listen" if client_tls else "listen": format_address(self.client_address),
            "dyn_listen": format_address(self.peer_address),
            "stats_listen": format_address(self.stats_address),
            "servers": [format_address(self.redis_address) + ":1"],
            "tokens": ",".join(map(str, self.tokens)),
            "datacenter": self.dc,
            "rack": self.rack,
            "dyn_seeds": list(seeds),
        }
        pool.update(settings)
        return {cluster: pool}


def format_address(address: Tuple[str, int]) -> str:
    """``host:port``, as configs, seeds and tables write an address."""
    return f"{address[0]}:{address[1]}"


class Cluster:
    """
    A cluster on this machine: one redis-server and one node per
    :class:`ClusterNode`, all files in ``workdir``.

    Build it with :meth:`from_topology` (a plan; nothing runs yet) or
    :meth:`attach` (a running cluster from its state file). :meth:`start`
    writes the configs and starts everything; :meth:`stop` stops what it
    started, nodes before redis-servers. As a context manager it starts on
    entry (unless already started) and stops on exit; it never deletes
    files unless asked (:meth:`remove_files`), so logs outlive a failed test.
    """

    def __init__(
        self,
        name: str,
        nodes: Sequence[ClusterNode],
        workdir: str,
        node_settings: Iterable[Tuple[str, Any]] = (),
        source: str = "<dict>",
        client_tls: bool = False,
    ) -> None:
        self.name = name
        self.nodes: List[ClusterNode] = list(nodes)
        self.workdir = workdir
        self.node_settings = tuple(node_settings)
        self.source = source
        #: clients: tls: every node takes its clients on tls_listen alone
        self.client_tls = client_tls
        #: True if start() created workdir (then remove_files() removes all of it).
        self.created_workdir = False
        #: PID and start time of a launcher supervising this cluster (``up`` in
        #: the foreground); ``down`` asks it to stop the cluster.
        self.supervisor: Optional[Tuple[int, Optional[int]]] = None
        self._started = False

    # -- building

    @classmethod
    def from_topology(
        cls,
        topology: Union[ClusterFile, Mapping[str, Any]],
        workdir: str,
        ports: Union[str, Ports, Mapping[str, int], None] = "auto",
        base_address: Optional[str] = DEFAULT_BASE_ADDRESS,
        *,
        twistd: Optional[str] = None,
        redis_server: Optional[str] = None,
        die_with_parent: bool = True,
    ) -> Cluster:
        """
        Plan a cluster from a topology (a :class:`ClusterFile` or its dict).

        ``ports`` and ``base_address`` override the topology's ``addresses``
        section; pass None to use it. The defaults (ephemeral ports from
        127.0.0.11) suit tests. Ephemeral ports are chosen now, each free
        on its node's address. ``die_with_parent=False`` lets the processes
        outlive this Python process (``up --detach``).
        """
        if not isinstance(topology, ClusterFile):
            topology = ClusterFile.from_dict(topology)
        port_plan = topology.ports if ports is None else parse_ports(ports)
        base = topology.base_address if base_address is None else parse_base_address(base_address)
        workdir = os.path.abspath(workdir)
        hosts = iter(node_hosts(base, topology.node_count))
        probe = tls_probe(dict(topology.node_settings), workdir) if topology.client_tls else None
        nodes = []
        for spec in topology.racks:
            tokens = rack_tokens(spec.nodes)
            for index in range(spec.nodes):
                host = next(hosts)
                plan = Ports(*free_ports(host, 4)) if port_plan is None else port_plan
                name = node_label(spec.datacenter, spec.rack, index)
                stem = os.path.join(workdir, name)
                nodes.append(ClusterNode(
                    name=name, dc=spec.datacenter, rack=spec.rack, index=index,
                    tokens=(tokens[index],),
                    ranges=tuple(owned_ranges([tokens[index]], tokens)),
                    client_address=(host, plan.client), peer_address=(host, plan.peer),
                    stats_address=(host, plan.stats), redis_address=(host, plan.redis),
                    config_path=stem + ".yml",
                    node_process=NodeProcess.create(
                        name, (host, plan.client), stem + ".yml", stem + ".log", stem + ".out",
                        twistd=twistd, die_with_parent=die_with_parent, tls=probe,
                    ),
                    redis_process=RedisProcess.create(
                        name, (host, plan.redis), stem + "-redis", stem + "-redis.log",
                        redis_server=redis_server, die_with_parent=die_with_parent,
                    ),
                ))
        return cls(topology.name, nodes, workdir, topology.node_settings, topology.source, topology.client_tls)

    @classmethod
    def attach(cls, workdir: str) -> Cluster:
        """The cluster recorded in ``<workdir>/cluster.json``, its processes attached by PID."""
        workdir = os.path.abspath(workdir)
        path = os.path.join(workdir, STATE_FILE)
        try:
            with open(path) as f:
                state = json.load(f)
            nodes = [
                ClusterNode(
                    name=n["name"], dc=n["dc"], rack=n["rack"], index=n["index"],
                    tokens=tuple(n["tokens"]), ranges=tuple(tuple(r) for r in n["ranges"]),
                    client_address=tuple(n["client"]), peer_address=tuple(n["peer"]),
                    stats_address=tuple(n["stats"]), redis_address=tuple(n["redis"]),
                    config_path=n["config_path"],
                    node_process=ManagedProcess.from_state(n["node_process"]),
                    redis_process=ManagedProcess.from_state(n["redis_process"]),
                )
                for n in state["nodes"]
            ]
        except FileNotFoundError:
            raise ClusterError(f"no cluster in {workdir}: {STATE_FILE} is missing") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ClusterError(f"{path}: unreadable cluster state ({e!r}); remove it if no cluster runs") from None
        cluster = cls(state["cluster"], nodes, workdir, [tuple(s) for s in state.get("node_settings", [])],
                      state.get("topology", "<dict>"), bool(state.get("client_tls")))
        cluster.created_workdir = bool(state.get("created_workdir"))
        supervisor = state.get("supervisor")
        cluster.supervisor = (supervisor["pid"], supervisor.get("start_time")) if supervisor else None
        cluster._started = True
        return cluster

    # -- looking things up

    def node(self, dc: str, rack: str, index: int = 0) -> ClusterNode:
        """The ``index``-th node (from 0) of ``rack`` in ``dc``."""
        for n in self.nodes:
            if (n.dc, n.rack, n.index) == (dc, rack, index):
                return n
        raise KeyError(f"no node {node_label(dc, rack, index)} in cluster {self.name!r}")

    @property
    def node_processes(self) -> List[NodeProcess]:
        return [n.node_process for n in self.nodes]

    @property
    def redis_processes(self) -> List[RedisProcess]:
        return [n.redis_process for n in self.nodes]

    @property
    def processes(self) -> List[ManagedProcess]:
        """Every process, nodes first (the order they are stopped in)."""
        return [*self.node_processes, *self.redis_processes]

    @property
    def state_path(self) -> str:
        return os.path.join(self.workdir, STATE_FILE)

    def running(self) -> bool:
        """True while any process of the cluster is alive."""
        return any(p.running() for p in self.processes)

    # -- running

    def check_ports(self) -> None:
        """Raise ClusterError naming the first address:port something already listens on."""
        for n in self.nodes:
            for what, (host, port) in (("client", n.client_address), ("peer", n.peer_address),
                                       ("stats", n.stats_address), ("redis", n.redis_address)):
                reason = port_busy(host, port)
                if reason:
                    raise ClusterError(
                        f"{host}:{port} ({what} port of {n.name}) is busy: {reason}; stop whatever"
                        f" listens there, or use ephemeral ports (--ports auto)"
                    )

    def write_configs(self) -> List[str]:
        """Write every node's Dynomite YAML (mode 0600: it may hold secrets); return the paths."""
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)
        for n in self.nodes:
            seeds = [other.seed for other in self.nodes if other is not n]
            doc = n.config_document(self.name, seeds, self.node_settings, self.client_tls)
            header = (
                f"# Generated by dynomite-cluster from {self.source} for node {n.name}.\n"
                f"# Run: twistd -n dynomite -c {n.config_path}\n"
            )
            _write_private(n.config_path, header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        return [n.config_path for n in self.nodes]

    def start(self, timeout: float = 30.0) -> Cluster:
        """
        Start every redis-server, then every node, and wait until all answer
        PING (within ``timeout`` seconds in all). On any failure everything
        started is stopped and ClusterError explains, with the log tail of
        the process that failed.
        """
        if self._started:
            raise ClusterError(f"cluster {self.name!r} in {self.workdir} was already started")
        self._prepare_workdir()
        self._started = True
        try:
            self.check_ports()
            self.write_configs()
            deadline = time.monotonic() + timeout
            for proc in self.redis_processes:
                proc.spawn()
            self.write_state()
            wait_all_ready(self.redis_processes, deadline)
            for proc in self.node_processes:
                proc.spawn()
            self.write_state()
            wait_all_ready(self.node_processes, deadline)
            self.write_state(ready=True)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def started(self) -> bool:
        """True once start() began (or for an attached cluster): stop() and remove_files() act only then."""
        return self._started

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process (nodes first, then redis-servers; SIGKILL after ``timeout``) and drop the state file."""
        if not self._started:
            return
        stop_all(self.node_processes, timeout)
        stop_all(self.redis_processes, timeout)
        try:
            os.unlink(self.state_path)
        except FileNotFoundError:
            pass

    def remove_files(self) -> None:
        """Delete the workdir if start() created it, else only the files the cluster wrote."""
        if not self._started:
            return
        if self.created_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        for n in self.nodes:
            for path in (n.config_path, n.node_process.output_path, n.redis_process.output_path):
                _unlink(path)
            log = n.node_process.log_path
            if log:
                _unlink(log)
                prefix = os.path.basename(log) + "."
                for entry in os.listdir(os.path.dirname(log)) if os.path.isdir(os.path.dirname(log)) else ():
                    if entry.startswith(prefix) and entry[len(prefix):].isdigit():  # twistd's rotated logs
                        _unlink(os.path.join(os.path.dirname(log), entry))
            shutil.rmtree(n.redis_process.cwd, ignore_errors=True)
        _unlink(self.state_path)

    def _prepare_workdir(self) -> None:
        if os.path.exists(self.state_path):
            old = Cluster.attach(self.workdir)
            live = [p for p in old.processes if p.running()]
            if live:
                raise ClusterError(
                    f"a cluster is already running from {self.workdir} (pids"
                    f" {', '.join(str(p.pid) for p in live)}); stop it with"
                    f" `dynomite-cluster down --workdir {self.workdir}` or choose another --workdir"
                )
            old.remove_files()  # stale: its launcher died and took its processes along
        existed = os.path.isdir(self.workdir)
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)
        self.created_workdir = not existed

    def write_state(self, ready: bool = False) -> None:
        """
        Record the cluster in ``<workdir>/cluster.json`` (atomically, mode
        0600): the cluster name, whether start() created the workdir, the
        supervising launcher if any, and per node its addresses, tokens and
        both processes (argv, PID, /proc start time). ``status`` and ``down``
        read it through :meth:`attach`.
        """
        state = {
            "format": STATE_FORMAT,
            "cluster": self.name,
            "topology": self.source,
            "workdir": self.workdir,
            "created_workdir": self.created_workdir,
            "ready": ready,
            "supervisor": (
                {"pid": self.supervisor[0], "start_time": self.supervisor[1]} if self.supervisor else None
            ),
            "node_settings": [list(s) for s in self.node_settings],
            "client_tls": self.client_tls,
            "nodes": [
                {
                    "name": n.name, "dc": n.dc, "rack": n.rack, "index": n.index,
                    "tokens": list(n.tokens), "ranges": [list(r) for r in n.ranges],
                    "client": list(n.client_address), "peer": list(n.peer_address),
                    "stats": list(n.stats_address), "redis": list(n.redis_address),
                    "config_path": n.config_path,
                    "node_process": n.node_process.to_state(),
                    "redis_process": n.redis_process.to_state(),
                }
                for n in self.nodes
            ],
        }
        _write_private(self.state_path, json.dumps(state, indent=1) + "\n")

    def __enter__(self) -> Cluster:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- presenting

    def table(self) -> str:
        """One line per node: DC, rack, name, addresses, token and the hash ranges it owns in its rack."""
        header = ("DC", "RACK", "NODE", "CLIENT", "PEER", "STATS", "REDIS", "TOKEN", "OWNS (IN ITS RACK)")
        rows = []
        for n in self.nodes:
            rows.append((
                n.dc, n.rack, n.name, format_address(n.client_address), format_address(n.peer_address),
                format_address(n.stats_address), format_address(n.redis_address),
                ",".join(map(str, n.tokens)), format_ranges(n.ranges),
            ))
        return format_table(header, rows)

    def redis_cli_hint(self) -> str:
        """A redis-cli line to try against the first node."""
        host, port = self.nodes[0].client_address
        auth = " --askpass" if dict(self.node_settings).get("requirepass") else ""
        tls = self.nodes[0].node_process.tls
        if tls is not None:
            auth += " --tls" + (f" --cacert {tls['ca']}" if tls["ca"] else " --insecure")
        return f"redis-cli -h {host} -p {port}{auth} set greeting hello"


def _write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by this user only."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
