"""
``dynomite-cluster``: a whole cluster on this machine, from a small topology file.

Three layers, usable separately:

* :class:`Topology` reads and validates the topology file (cluster name,
  datacenters with racks and node counts, addresses, settings passed to
  every node). Errors are :class:`dynomite.config.ConfigError`: file, key,
  reason on one line.
* :class:`Cluster` turns a topology into a plan (names, 127.0.0.x
  addresses, ports, tokens, one Dynomite YAML per node) and runs it: one
  ``redis-server`` and one ``twistd -n dynomite`` per node. Integration
  tests drive it directly; each process is a :class:`ManagedProcess` that
  can be stopped, killed, paused, resumed and restarted by PID, which is
  what fault injection needs.
* :func:`main`, the ``dynomite-cluster`` command: ``up`` (foreground until
  Ctrl-C or SIGTERM, or ``--detach``), ``status`` and ``down``.

A started cluster records its PIDs in ``<workdir>/cluster.json`` (see
:meth:`Cluster.write_state`), so another process can inspect or stop it by
PID. Everything the launcher starts gets its own session, so Ctrl-C in a
terminal reaches only the launcher, which then stops the nodes before
their redis-servers; and unless detached, children are killed by the
kernel if the launcher itself dies (Linux ``PR_SET_PDEATHSIG``).

Token convention (Dynomite's ``generate_yamls.py``): in a rack of N nodes,
node i owns token ``i * (2**32 // N)``; a key belongs to the node with the
smallest token >= its hash, wrapping around.
"""

from __future__ import annotations

import argparse
import ctypes
import difflib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import yaml

from .config import MAX_TOKEN, ConfigError

# The strict loader and value printer of dynomite.config, so topology errors
# read exactly like node configuration errors (duplicate keys, line numbers).
from .config import NodeConfig, _load_yaml, _show

__all__ = [
    "DEFAULT_WORKDIR",
    "STANDARD_PORTS",
    "STATE_FILE",
    "Cluster",
    "ClusterError",
    "ClusterNode",
    "ManagedProcess",
    "NodeProcess",
    "Ports",
    "RackSpec",
    "RedisProcess",
    "Topology",
    "format_ranges",
    "main",
    "owned_ranges",
    "pid_alive",
    "rack_tokens",
]

RING_SIZE = MAX_TOKEN + 1
STATE_FILE = "cluster.json"
STATE_FORMAT = 1
DEFAULT_CLUSTER_NAME = "dyn_o_mite"
DEFAULT_BASE_ADDRESS = "127.0.0.11"
#: Where ``up --detach``, ``status`` and ``down`` look when no --workdir is given.
DEFAULT_WORKDIR = os.path.join(tempfile.gettempdir(), "dynomite-cluster-%d" % os.getuid())


class ClusterError(Exception):
    """A cluster could not be started, inspected or stopped; the message says why."""


class Ports(NamedTuple):
    """The four ports of one node's address."""

    client: int
    peer: int
    stats: int
    redis: int


#: Dynomite's conventional ports (and twemproxy's 22122 for the datastore).
STANDARD_PORTS = Ports(client=8102, peer=8101, stats=22222, redis=22122)

# -- the topology file --------------------------------------------------------

TOPOLOGY_KEYS = ("cluster", "datacenters", "addresses", "node")
ADDRESS_KEYS = ("base", "ports")
#: Node keys the launcher writes itself; a topology may not set them.
LAUNCHER_KEYS = frozenset(
    {"listen", "dyn_listen", "stats_listen", "servers", "tokens", "datacenter", "rack", "dyn_seeds"}
)
_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


class _Invalid(ValueError):
    """A topology value is wrong; ``key`` is its dotted path."""

    def __init__(self, key: str, reason: str):
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class RackSpec:
    """One rack of the topology and how many nodes it has."""

    datacenter: str
    rack: str
    nodes: int


@dataclass(frozen=True)
class Topology:
    """
    A validated topology file.

    ``ports`` is None for ephemeral ports (``ports: auto``). ``node_settings``
    are Dynomite keys copied into every node's YAML; they have been checked
    with :class:`NodeConfig`, so a bad value fails here, naming ``node.<key>``.
    """

    source: str
    name: str
    racks: Tuple[RackSpec, ...]
    base_address: str = DEFAULT_BASE_ADDRESS
    ports: Optional[Ports] = STANDARD_PORTS
    node_settings: Tuple[Tuple[str, Any], ...] = ()

    @classmethod
    def from_yaml(cls, path: str) -> Topology:
        """Read and validate a topology file."""
        source = os.fspath(path)
        return cls.from_dict(_load_yaml(source), source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Topology:
        """Validate an already-loaded topology document."""
        try:
            return _parse_topology(data, source)
        except _Invalid as e:
            raise ConfigError(source, e.key, e.reason) from None

    @property
    def datacenters(self) -> Tuple[str, ...]:
        """Datacenter names in file order."""
        return tuple(dict.fromkeys(r.datacenter for r in self.racks))

    @property
    def node_count(self) -> int:
        return sum(r.nodes for r in self.racks)


def _parse_topology(data: Any, source: str) -> Topology:
    if not isinstance(data, Mapping):
        raise _Invalid("<root>", f"expected a mapping with keys {', '.join(TOPOLOGY_KEYS)}, got {_show(data)}")
    for key in data:
        if key not in TOPOLOGY_KEYS:
            raise _Invalid(str(key), _unknown_key(key, TOPOLOGY_KEYS))
    name = _check_name("cluster", data.get("cluster", DEFAULT_CLUSTER_NAME))
    racks = _parse_racks(data.get("datacenters"))
    base, ports = _parse_addresses(data.get("addresses"))
    count = sum(r.nodes for r in racks)
    try:
        node_hosts(base, count)
    except ValueError as e:
        raise _Invalid("addresses.base", str(e)) from None
    names = [node_name(r.datacenter, r.rack, i) for r in racks for i in range(r.nodes)]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise _Invalid("datacenters", f"two nodes would both be named {n!r}; rename a datacenter or rack")
    settings = _parse_node_settings(data.get("node"), name, source)
    return Topology(source, name, racks, base, ports, settings)


def _unknown_key(key: Any, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(known)}"
    return f"unknown key; {hint}"


def _check_name(key: str, value: Any) -> str:
    """Names end up in file names and ``dyn_seeds`` entries: keep them plain."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _NAME.match(value):
        raise _Invalid(key, f"expected a name of letters, digits, '_', '-' or '.', got {_show(value)}")
    return value


def _parse_racks(value: Any) -> Tuple[RackSpec, ...]:
    if value is None:
        raise _Invalid("datacenters", "required key is missing; e.g. {dc1: {rack1: 1, rack2: 1}}")
    if not isinstance(value, Mapping) or not value:
        raise _Invalid("datacenters", f"expected a mapping of datacenter names to racks, got {_show(value)}")
    racks = []
    for dc, dc_racks in value.items():
        dc_name = _check_name(f"datacenters.{dc}", dc)
        key = f"datacenters.{dc_name}"
        if not isinstance(dc_racks, Mapping) or not dc_racks:
            raise _Invalid(key, f"expected a mapping of rack names to node counts, got {_show(dc_racks)}")
        for rack, count in dc_racks.items():
            rack_name = _check_name(f"{key}.{rack}", rack)
            if isinstance(count, bool) or not isinstance(count, int):
                raise _Invalid(f"{key}.{rack_name}", f"expected a number of nodes, got {_show(count)}")
            if count < 1:
                raise _Invalid(f"{key}.{rack_name}", f"a rack needs at least 1 node, got {count}")
            racks.append(RackSpec(dc_name, rack_name, count))
    return tuple(racks)


def _parse_addresses(value: Any) -> Tuple[str, Optional[Ports]]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _Invalid("addresses", f"expected a mapping with keys base, ports, got {_show(value)}")
    for key in value:
        if key not in ADDRESS_KEYS:
            raise _Invalid(f"addresses.{key}", _unknown_key(key, ADDRESS_KEYS))
    try:
        base = parse_base_address(value.get("base", DEFAULT_BASE_ADDRESS))
    except ValueError as e:
        raise _Invalid("addresses.base", str(e)) from None
    try:
        ports = parse_ports(value.get("ports", "standard"))
    except ValueError as e:
        raise _Invalid("addresses.ports", str(e)) from None
    return base, ports


def parse_base_address(value: Any) -> str:
    """The first node's address: IPv4 loopback, so every node can have its own."""
    try:
        address = ipaddress.IPv4Address(value if isinstance(value, str) else "")
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(f"expected an IPv4 loopback address such as 127.0.0.11, got {_show(value)}")
    return str(address)


def parse_ports(value: Any) -> Optional[Ports]:
    """
    ``auto`` (None: ephemeral ports), ``standard`` (:data:`STANDARD_PORTS`),
    a :class:`Ports`, or a mapping naming some of client/peer/stats/redis
    (the rest standard). Raises ``ValueError`` with a reason for a user.
    """
    if value is None or isinstance(value, Ports):
        return value
    if value == "auto":
        return None
    if value == "standard":
        return STANDARD_PORTS
    if not isinstance(value, Mapping):
        raise ValueError(
            f"expected auto, standard or a mapping of {', '.join(Ports._fields)} ports, got {_show(value)}"
        )
    chosen = STANDARD_PORTS._asdict()
    for key, port in value.items():
        if key not in chosen:
            raise ValueError(f"{key}: {_unknown_key(key, Ports._fields)}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"{key}: expected a port 1..65535, got {_show(port)}")
        chosen[key] = port
    ports = Ports(**chosen)
    for i, port in enumerate(ports):
        if port in ports[:i]:
            raise ValueError(f"{Ports._fields[ports.index(port)]} and {Ports._fields[i]} both use port {port}")
    return ports


def _parse_node_settings(value: Any, cluster: str, source: str) -> Tuple[Tuple[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise _Invalid("node", f"expected a mapping of Dynomite settings, got {_show(value)}")
    for key in value:
        if key in LAUNCHER_KEYS:
            raise _Invalid(f"node.{key}", "set by the launcher for each node; remove it")
    sample = {
        "listen": "127.0.0.1:1",
        "dyn_listen": "127.0.0.1:2",
        "stats_listen": "127.0.0.1:3",
        "servers": ["127.0.0.1:4:1"],
        "tokens": "0",
        **value,
    }
    try:
        NodeConfig.from_dict({cluster: sample}, source=source)
    except ConfigError as e:
        raise _Invalid(f"node.{e.key}", e.reason) from None
    return tuple(value.items())


# -- pure placement math -------------------------------------------------------


def rack_tokens(count: int) -> List[int]:
    """Tokens of a rack of ``count`` nodes: node i gets ``i * (2**32 // count)``."""
    if count < 1:
        raise ValueError("a rack needs at least one node")
    step = RING_SIZE // count
    return [i * step for i in range(count)]


def owned_ranges(mine: Iterable[int], rack: Iterable[int]) -> List[Tuple[int, int]]:
    """
    The inclusive hash ranges a node owns in its rack.

    A token owns the hashes after the previous token up to itself; the
    smallest token also owns the wrap-around above the largest one.
    """
    ring = sorted(set(rack))
    ranges: List[Tuple[int, int]] = []
    for token in mine:
        i = ring.index(token)
        if len(ring) == 1:
            return [(0, MAX_TOKEN)]
        if i == 0:
            if ring[-1] < MAX_TOKEN:
                ranges.append((ring[-1] + 1, MAX_TOKEN))
            ranges.append((0, token))
        else:
            ranges.append((ring[i - 1] + 1, token))
    return sorted(ranges)


def format_ranges(ranges: Sequence[Tuple[int, int]]) -> str:
    """``all``, or ``lo..hi`` pieces; wrap-around pieces join up (``4294967295`` then ``0``)."""
    if list(ranges) == [(0, MAX_TOKEN)]:
        return "all"
    pieces = sorted(ranges, key=lambda r: (r[0] == 0, r[0]))  # the wrapped piece last
    return ", ".join(str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in pieces)


def node_name(dc: str, rack: str, index: int) -> str:
    """``<dc>-<rack>-<index>``, also the stem of the node's files."""
    return f"{dc}-{rack}-{index}"


def node_hosts(base: str, count: int) -> List[str]:
    """``count`` consecutive IPv4 addresses from ``base``, all inside 127.0.0.0/8."""
    first = ipaddress.IPv4Address(base)
    last_allowed = ipaddress.IPv4Address("127.255.255.254")
    if int(first) + count - 1 > int(last_allowed):
        raise ValueError(f"{count} nodes from {base} would leave 127.0.0.0/8; choose a lower base")
    return [str(first + i) for i in range(count)]


def free_ports(host: str, count: int) -> List[int]:
    """``count`` distinct ports free on ``host`` a moment ago (sockets held until all are chosen)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_busy(host: str, port: int) -> Optional[str]:
    """Why ``host:port`` cannot be listened on, or None if it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # The servers use SO_REUSEADDR too: only a live listener is a conflict.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


# -- processes -------------------------------------------------------------------


def _proc_stat(pid: int) -> Optional[Tuple[str, Optional[int]]]:
    """(state letter, start time in clock ticks) of ``pid``, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: ask the kernel, without a start time
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ("?", None)
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def pid_alive(pid: int, start_time: Optional[int] = None) -> bool:
    """
    True if ``pid`` is a live process (zombies are dead) and, when
    ``start_time`` is given, still the same process rather than a reused PID.
    """
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_time is None or stat[1] is None or stat[1] == start_time


_libc: Any = None


def _child_setup(die_with_parent: bool) -> Callable[[], None]:
    """preexec_fn: unblock signals (see spawn) and, if asked, die with the launcher."""
    global _libc
    if die_with_parent and _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork, not in the child
        except OSError:
            _libc = False

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if die_with_parent and _libc:
            _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG; Linux only

    return setup


def ping(host: str, port: int, timeout: float = 1.0) -> bytes:
    """Send an inline PING; return the first reply line, or b"" if none came."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data
    except OSError:
        return b""


def _tail(path: str, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class ManagedProcess:
    """
    One server process of a cluster, handled by PID.

    :meth:`start` spawns it and waits until it answers PING on ``address``;
    :meth:`stop`, :meth:`kill`, :meth:`pause`, :meth:`resume` and
    :meth:`restart` signal it. A process rebuilt from a state file
    (:meth:`from_state`) is not our child: it is watched through /proc, and
    its recorded start time guards against signalling a reused PID.
    stdout and stderr go to ``output_path``; :meth:`log_tail` shows the end
    of that and of ``log_path`` (if the program keeps its own log).
    """

    role = "process"
    #: First bytes of a PING reply meaning "up". -LOADING is not up; -NOAUTH is.
    ready_replies: Tuple[bytes, ...] = (b"+PONG", b"-NOAUTH")
    ready_timeout = 20.0
    stop_timeout = 10.0

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        address: Tuple[str, int],
        cwd: str,
        output_path: str,
        log_path: Optional[str] = None,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.host, self.port = address[0], int(address[1])
        self.cwd = cwd
        self.output_path = output_path
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.paused = False
        self.returncode: Optional[int] = None
        self._popen: Optional[subprocess.Popen] = None
        self._pid: Optional[int] = None
        self._start_time: Optional[int] = None

    @property
    def address(self) -> Tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> Optional[int]:
        """The PID of the last start, or None if never started."""
        return self._pid

    def describe(self) -> str:
        return f"{self.name} {self.role} (pid {self._pid}, {self.host}:{self.port})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.host}:{self.port} pid={self._pid}>"

    def running(self) -> bool:
        """True while the process exists (a paused process is running)."""
        if self._popen is not None:
            if self._popen.poll() is None:
                return True
            self.returncode = self._popen.returncode
            return False
        return self._pid is not None and pid_alive(self._pid, self._start_time)

    # -- starting

    def spawn(self) -> ManagedProcess:
        """Start the process without waiting for it; see :meth:`start`."""
        if self.running():
            raise ClusterError(f"{self.describe()} is already running")
        os.makedirs(self.cwd, mode=0o700, exist_ok=True)
        # Block SIGINT/SIGTERM around the fork so a Ctrl-C handler cannot
        # raise between fork and recording the PID (an untracked child).
        # The child unblocks them in _child_setup.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            with open(self.output_path, "ab") as out:
                self._popen = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_child_setup(self.die_with_parent),
                )
        except OSError as e:
            raise ClusterError(f"cannot start {self.name} {self.role}: {self.argv[0]}: {e.strerror or e}") from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self._pid = self._popen.pid
        stat = _proc_stat(self._pid)
        self._start_time = stat[1] if stat else None
        self.returncode = None
        self.paused = False
        return self

    def start(self, timeout: Optional[float] = None) -> ManagedProcess:
        """Spawn and wait until it answers PING; on failure kill it and raise ClusterError."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def is_ready(self, timeout: float = 0.5) -> bool:
        """Does it answer PING as a ready server does?"""
        return ping(self.host, self.port, timeout).startswith(self.ready_replies)

    def wait_ready(self, timeout: Optional[float] = None) -> None:
        """Block until it answers PING; raise ClusterError with its log tail if it exits or times out."""
        wait_all_ready([self], time.monotonic() + (self.ready_timeout if timeout is None else timeout))

    # -- signals

    def send_signal(self, sig: int) -> bool:
        """Send ``sig`` if the process is still the one we started; False if it is gone."""
        if not self.running():
            return False
        assert self._pid is not None
        try:
            os.kill(self._pid, sig)
        except ProcessLookupError:
            return False
        return True

    def terminate(self) -> None:
        """SIGTERM (and SIGCONT, so a paused process can act on it); does not wait."""
        if self.send_signal(signal.SIGTERM):
            self.send_signal(signal.SIGCONT)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to exit; True if it has."""
        if self._popen is not None:
            try:
                self.returncode = self._popen.wait(max(timeout, 0))
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, timeout: Optional[float] = None) -> Optional[int]:
        """SIGTERM, wait, SIGKILL if it lingers. Returns the exit status (None if unknown)."""
        stop_all([self], self.stop_timeout if timeout is None else timeout)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL and wait: a crash, as far as the rest of the cluster can tell."""
        if self.send_signal(signal.SIGKILL):
            self.wait(self.stop_timeout)
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung server)."""
        if self.send_signal(signal.SIGSTOP):
            self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self, timeout: Optional[float] = None) -> ManagedProcess:
        """Stop (if running) and start again with the same command line and address."""
        self.stop()
        return self.start(timeout)

    # -- logs

    def log_paths(self) -> List[str]:
        return [p for p in (self.log_path, self.output_path) if p]

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each non-empty log of this process, with headers."""
        parts = []
        for path in self.log_paths():
            text = _tail(path, lines)
            if text:
                parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts) or f"(nothing logged in {', '.join(self.log_paths())})"

    # -- state file

    def to_state(self) -> Dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "argv": self.argv,
            "address": [self.host, self.port],
            "cwd": self.cwd,
            "output_path": self.output_path,
            "log_path": self.log_path,
            "pid": self._pid,
            "start_time": self._start_time,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ManagedProcess:
        """Rebuild a process recorded by :meth:`to_state` (of any role), attached to its PID."""
        kind = _ROLES.get(state.get("role", ""), ManagedProcess)
        proc = kind(
            state["name"], state["argv"], tuple(state["address"]), state["cwd"],
            state["output_path"], state.get("log_path"), die_with_parent=False,
        )
        proc._pid = state.get("pid")
        proc._start_time = state.get("start_time")
        if proc._pid is not None:
            stat = _proc_stat(proc._pid)
            proc.paused = bool(stat and stat[0] == "T" and proc.running())
        return proc


def _program(path: str) -> str:
    """A program path that still works from the child's working directory."""
    return os.path.abspath(path) if os.sep in path else path


def default_redis_server() -> str:
    """``$DYNOMITE_REDIS_SERVER``, else redis-server on PATH, else /usr/bin/redis-server."""
    return os.environ.get("DYNOMITE_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"


def default_twistd() -> str:
    """The twistd next to this Python, so nodes run in the same environment."""
    return os.path.join(os.path.dirname(sys.executable), "twistd")


class RedisProcess(ManagedProcess):
    """A ``redis-server`` without persistence, its working directory ``datadir``."""

    role = "redis"
    ready_timeout = 10.0

    @classmethod
    def create(
        cls,
        name: str,
        address: Tuple[str, int],
        datadir: str,
        output_path: str,
        redis_server: Optional[str] = None,
        extra_args: Sequence[str] = (),
        die_with_parent: bool = True,
    ) -> RedisProcess:
        host, port = address
        argv = [
            _program(redis_server or default_redis_server()),
            "--bind", host, "--port", str(port),
            "--save", "", "--appendonly", "no",
            "--dir", datadir, "--daemonize", "no",
            *extra_args,
        ]
        return cls(name, argv, address, datadir, output_path, None, die_with_parent)


class NodeProcess(ManagedProcess):
    """A ``twistd -n dynomite -c <config>`` node; ``address`` is its client listener."""

    role = "node"

    @classmethod
    def create(
        cls,
        name: str,
        address: Tuple[str, int],
        config_path: str,
        log_path: str,
        output_path: str,
        twistd: Optional[str] = None,
        die_with_parent: bool = True,
    ) -> NodeProcess:
        argv = [
            _program(twistd or default_twistd()), "-n", "--pidfile=", "--logfile", log_path,
            "dynomite", "-c", config_path,
        ]
        return cls(name, argv, address, os.path.dirname(config_path), output_path, log_path, die_with_parent)


_ROLES: Dict[str, type] = {"redis": RedisProcess, "node": NodeProcess}


def wait_all_ready(processes: Sequence[ManagedProcess], deadline: float) -> None:
    """
    Block until every process answers PING (polled together, so a cluster
    starts in the time of its slowest process). Raise ClusterError naming
    the first process that exited or is still silent at ``deadline``,
    with its log tail.
    """
    pending = list(processes)
    while pending:
        for proc in list(pending):
            if not proc.running():
                raise ClusterError(
                    f"{proc.describe()} exited with status {proc.returncode} before answering PING;"
                    f" log tail:\n{proc.log_tail()}"
                )
            if proc.is_ready():
                pending.remove(proc)
        if not pending:
            return
        if time.monotonic() >= deadline:
            others = f" (also silent: {', '.join(p.name + ' ' + p.role for p in pending[1:])})" if pending[1:] else ""
            raise ClusterError(
                f"{pending[0].describe()} did not answer PING in time{others}; log tail:\n{pending[0].log_tail()}"
            )
        time.sleep(0.05)


def stop_all(processes: Sequence[ManagedProcess], timeout: float) -> None:
    """SIGTERM all at once, wait up to ``timeout`` together, SIGKILL the rest."""
    live = [p for p in processes if p.running()]
    for proc in live:
        proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in live:
        if not proc.wait(deadline - time.monotonic()):
            proc.kill()
    for proc in processes:
        proc.paused = False


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

    def config_document(self, cluster: str, seeds: Iterable[str], settings: Iterable[Tuple[str, Any]]) -> Dict[str, Any]:
        """This node's Dynomite YAML as a dict: launcher keys, then the topology's settings."""
        pool: Dict[str, Any] = {
            "listen": _join(self.client_address),
            "dyn_listen": _join(self.peer_address),
            "stats_listen": _join(self.stats_address),
            "servers": [_join(self.redis_address) + ":1"],
            "tokens": ",".join(map(str, self.tokens)),
            "datacenter": self.dc,
            "rack": self.rack,
            "dyn_seeds": list(seeds),
        }
        pool.update(settings)
        return {cluster: pool}


def _join(address: Tuple[str, int]) -> str:
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
    ) -> None:
        self.name = name
        self.nodes: List[ClusterNode] = list(nodes)
        self.workdir = workdir
        self.node_settings = tuple(node_settings)
        self.source = source
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
        topology: Union[Topology, Mapping[str, Any]],
        workdir: str,
        ports: Union[str, Ports, Mapping[str, int], None] = "auto",
        base_address: Optional[str] = DEFAULT_BASE_ADDRESS,
        *,
        twistd: Optional[str] = None,
        redis_server: Optional[str] = None,
        die_with_parent: bool = True,
    ) -> Cluster:
        """
        Plan a cluster from a topology (a :class:`Topology` or its dict).

        ``ports`` and ``base_address`` override the topology's ``addresses``
        section; pass None to use it. The defaults (ephemeral ports from
        127.0.0.11) suit tests. Ephemeral ports are chosen now, each free
        on its node's address. ``die_with_parent=False`` lets the processes
        outlive this Python process (``up --detach``).
        """
        if not isinstance(topology, Topology):
            topology = Topology.from_dict(topology)
        port_plan = topology.ports if ports is None else parse_ports(ports)
        base = topology.base_address if base_address is None else parse_base_address(base_address)
        workdir = os.path.abspath(workdir)
        hosts = iter(node_hosts(base, topology.node_count))
        nodes = []
        for spec in topology.racks:
            tokens = rack_tokens(spec.nodes)
            for index in range(spec.nodes):
                host = next(hosts)
                plan = Ports(*free_ports(host, 4)) if port_plan is None else port_plan
                name = node_name(spec.datacenter, spec.rack, index)
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
                        twistd=twistd, die_with_parent=die_with_parent,
                    ),
                    redis_process=RedisProcess.create(
                        name, (host, plan.redis), stem + "-redis", stem + "-redis.log",
                        redis_server=redis_server, die_with_parent=die_with_parent,
                    ),
                ))
        return cls(topology.name, nodes, workdir, topology.node_settings, topology.source)

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
                      state.get("topology", "<dict>"))
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
        raise KeyError(f"no node {node_name(dc, rack, index)} in cluster {self.name!r}")

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
            doc = n.config_document(self.name, seeds, self.node_settings)
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
        rows = [("DC", "RACK", "NODE", "CLIENT", "PEER", "STATS", "REDIS", "TOKEN", "OWNS (IN ITS RACK)")]
        for n in self.nodes:
            rows.append((
                n.dc, n.rack, n.name, _join(n.client_address), _join(n.peer_address),
                _join(n.stats_address), _join(n.redis_address),
                ",".join(map(str, n.tokens)), format_ranges(n.ranges),
            ))
        return _format_table(rows)

    def redis_cli_hint(self) -> str:
        """A redis-cli line to try against the first node."""
        host, port = self.nodes[0].client_address
        auth = " --askpass" if dict(self.node_settings).get("requirepass") else ""
        return f"redis-cli -h {host} -p {port}{auth} set greeting hello"


def _format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


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


# -- the command line ---------------------------------------------------------------


class _Interrupted(Exception):
    """SIGINT or SIGTERM reached the launcher."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def _set_stop_signals(handler: Any) -> None:
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _say(text: str = "", err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _workdir_hint(workdir: str) -> str:
    return "" if workdir == DEFAULT_WORKDIR else f" --workdir {workdir}"


def _check_default_workdir(workdir: str) -> None:
    """The shared default lives in a world-writable place: refuse one we do not own."""
    if os.path.islink(workdir):
        raise ClusterError(f"{workdir} is a symlink; refusing it (pass --workdir)")
    if os.path.exists(workdir) and os.stat(workdir).st_uid != os.getuid():
        raise ClusterError(f"{workdir} belongs to another user; pass --workdir")


def _cmd_up(args: argparse.Namespace) -> int:
    topology = Topology.from_yaml(args.topology)
    workdir = os.path.abspath(args.workdir or DEFAULT_WORKDIR)
    if workdir == DEFAULT_WORKDIR:
        _check_default_workdir(workdir)
    try:
        cluster = Cluster.from_topology(
            topology, workdir, ports=args.ports, base_address=args.base_address,
            die_with_parent=not args.detach,
        )
    except ValueError as e:
        raise ClusterError(f"--base-address: {e}") from None
    if not args.detach:
        stat = _proc_stat(os.getpid())
        cluster.supervisor = (os.getpid(), stat[1] if stat else None)
    keep_running = False
    saved = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    _set_stop_signals(_raise_interrupted)
    try:
        try:
            cluster.start(timeout=args.timeout)
        except ClusterError as e:
            spawned = any(p.pid is not None for p in cluster.processes)
            hint = " (run with --keep to keep its logs)" if spawned and not args.keep else ""
            raise ClusterError(f"{e}\ncluster not started{hint}") from None
        dcs = len(topology.datacenters)
        _say(f"cluster {cluster.name!r} is up: {len(cluster.nodes)} nodes in {dcs} datacenter{'s' * (dcs != 1)}"
             f" and {len(topology.racks)} racks, from {topology.source}")
        _say()
        _say(cluster.table())
        _say()
        _say(f"configs and logs: {workdir}/<node>.yml, <node>.log, <node>-redis.log")
        _say(f"try:  {cluster.redis_cli_hint()}")
        hint = _workdir_hint(workdir)
        if args.detach:
            keep_running = True
            _say(f"running in the background; `dynomite-cluster status{hint}` lists it,"
                 f" `dynomite-cluster down{hint}` stops it")
            return 0
        _say(f"Ctrl-C stops the cluster (or `dynomite-cluster down{hint}` from another terminal)")
        return _supervise(cluster)
    except _Interrupted:
        _say("\nstopping the cluster ...")
        return 0
    finally:
        _set_stop_signals(signal.SIG_IGN)  # cleanup must not be interrupted half-way
        if not keep_running:
            cluster.stop()
            if args.keep:
                _say(f"kept configs and logs in {workdir}")
            else:
                cluster.remove_files()
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


def _supervise(cluster: Cluster) -> int:
    """Wait for a stop signal; report processes that die meanwhile (they stay dead)."""
    reported: set = set()
    while True:
        time.sleep(0.5)
        for proc in cluster.processes:
            if id(proc) not in reported and not proc.running():
                reported.add(id(proc))
                tail = "\n".join("    " + line for line in proc.log_tail(15).splitlines())
                _say(f"dynomite-cluster: {proc.describe()} exited with status {proc.returncode}; log tail:\n{tail}",
                     err=True)
        if len(reported) == len(cluster.processes):
            _say("dynomite-cluster: every process has exited", err=True)
            return 1


def _cmd_down(args: argparse.Namespace) -> int:
    workdir = os.path.abspath(args.workdir or DEFAULT_WORKDIR)
    cluster = Cluster.attach(workdir)
    if cluster.supervisor and pid_alive(*cluster.supervisor):
        pid, start_time = cluster.supervisor
        # A foreground `up` owns this cluster: let it stop and clean up in order.
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while pid_alive(pid, start_time) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not os.path.exists(cluster.state_path):
            _say(f"stopped cluster {cluster.name!r} (its launcher, pid {pid}, stopped it)")
            return 0
    live = [p for p in cluster.processes if p.running()]
    cluster.stop()
    if args.keep:
        where = f"; kept configs and logs in {workdir}"
    else:
        cluster.remove_files()
        where = f"; removed {workdir}" if cluster.created_workdir else ""
    _say(f"stopped cluster {cluster.name!r}: {len(live)} processes{where}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    workdir = os.path.abspath(args.workdir or DEFAULT_WORKDIR)
    try:
        cluster = Cluster.attach(workdir)
    except ClusterError as e:
        _say(f"dynomite-cluster: {e}", err=True)
        return 3
    rows = [("NODE", "PROCESS", "PID", "ADDRESS", "STATE")]
    all_up = True
    for n in cluster.nodes:
        for proc in n.processes:
            if not proc.running():
                state = "not running"
            elif proc.is_ready(timeout=1.0):
                state = "answers PING"
            else:
                state = "paused (SIGSTOP)" if proc.paused else "running, no answer to PING"
            all_up = all_up and state == "answers PING"
            rows.append((n.name, proc.role, str(proc.pid), _join(proc.address), state))
    owner = (f"launcher pid {cluster.supervisor[0]}" if cluster.supervisor else "detached")
    _say(f"cluster {cluster.name!r} from {cluster.source} in {workdir} ({owner})")
    _say(_format_table(rows))
    return 0 if all_up else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynomite-cluster",
        description="Run a whole dynomite cluster on this machine: one redis-server and one node per"
                    " node of a topology file, each on its own 127.0.0.x address.",
        epilog=f"A running cluster is recorded in WORKDIR/{STATE_FILE} (PIDs, addresses);"
               f" the default WORKDIR is {DEFAULT_WORKDIR}.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def workdir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workdir", metavar="DIR",
                       help=f"configs, logs and {STATE_FILE} (default: {DEFAULT_WORKDIR})")

    up = commands.add_parser("up", help="start a cluster; stay in the foreground until Ctrl-C or SIGTERM")
    up.add_argument("topology", help="topology file, e.g. etc/demo-cluster.yml")
    workdir(up)
    up.add_argument("--detach", action="store_true", help="return once the cluster is up; stop it with `down`")
    up.add_argument("--keep", action="store_true", help="keep configs and logs when the cluster stops")
    up.add_argument("--ports", choices=("auto", "standard"), default=None,
                    help="override the topology's ports: ephemeral, or 8102/8101/22222/22122 on every address")
    up.add_argument("--base-address", metavar="IP", default=None, help="override the first node's 127.x address")
    up.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                    help="how long every process gets to answer PING (default 30)")
    up.set_defaults(func=_cmd_up)

    down = commands.add_parser("down", help="stop a cluster started by `up` (by PID) and remove its files")
    workdir(down)
    down.add_argument("--keep", action="store_true", help="keep configs and logs")
    down.set_defaults(func=_cmd_down)

    status = commands.add_parser(
        "status", help="list a running cluster's processes and whether each answers PING"
                       " (exit 0: all do, 1: some do not, 3: no cluster)")
    workdir(status)
    status.set_defaults(func=_cmd_status)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``dynomite-cluster`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        _say(f"dynomite-cluster: topology error: {e}", err=True)
        return 1
    except ClusterError as e:
        _say(f"dynomite-cluster: {e}", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
