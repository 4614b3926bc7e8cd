# -*- test-case-name: tests.integration.test_cluster_launcher -*-
"""
Server processes on this machine, handled by PID.

A :class:`ManagedProcess` (:class:`RedisProcess`, :class:`NodeProcess`) is
one ``redis-server`` or ``twistd -n dynomite`` of a local cluster
(:mod:`dynomite.launcher.cluster`) or of an integration test: it is started and
waited for until it answers PING, signalled (stop, kill, pause, resume,
restart) and asked for its log tail. One rebuilt from a state file is not
our child; it is watched through /proc, and its recorded start time guards
against signalling a reused PID. Every process gets its own session, so
Ctrl-C in a terminal reaches only the launcher; unless told otherwise, the
kernel kills it if the launcher dies (Linux ``PR_SET_PDEATHSIG``).

The port, /proc and PING helpers this builds on are in
:mod:`dynomite.launcher.host`; :func:`free_ports` and :func:`ping_raw` are
importable from here too, as they always were.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from dynomite.launcher.host import free_ports, pid_alive, ping, ping_raw, proc_stat, tls_probe

__all__ = [
    "ClusterError",
    "ManagedProcess",
    "NodeProcess",
    "RedisProcess",
    "default_redis_server",
    "default_twistd",
    "free_ports",
    "ping_raw",
    "stop_all",
    "tls_probe",
    "wait_all_ready",
]


class ClusterError(Exception):
    """A cluster could not be started, inspected or stopped; the message says why."""


# -- spawning and logs ------------------------------------------------------------


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


def _tail(path: str, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


# -- processes ---------------------------------------------------------------------


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
        tls: Optional[Dict[str, Optional[str]]] = None,
    ) -> None:
        self.name = name
        #: PING over TLS (`dynomite.launcher.host.tls_probe_context`): a node with only tls_listen
        self.tls = tls
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
        stat = proc_stat(self._pid)
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
        return ping(self.host, self.port, timeout, self.tls).startswith(self.ready_replies)

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
            "tls": self.tls,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ManagedProcess:
        """Rebuild a process recorded by :meth:`to_state` (of any role), attached to its PID."""
        kind = _ROLES.get(state.get("role", ""), ManagedProcess)
        proc = kind(
            state["name"], state["argv"], tuple(state["address"]), state["cwd"],
            state["output_path"], state.get("log_path"), die_with_parent=False, tls=state.get("tls"),
        )
        proc._pid = state.get("pid")
        proc._start_time = state.get("start_time")
        if proc._pid is not None:
            stat = proc_stat(proc._pid)
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
        argv = cls.command(address, datadir, redis_server, extra_args)
        return cls(name, argv, address, datadir, output_path, None, die_with_parent)

    @staticmethod
    def command(
        address: Tuple[str, int],
        datadir: str,
        redis_server: Optional[str] = None,
        extra_args: Sequence[str] = (),
    ) -> List[str]:
        """The ``redis-server`` command line: listen on ``address``, no persistence, files in ``datadir``."""
        host, port = address
        return [
            _program(redis_server or default_redis_server()),
            "--bind", host, "--port", str(port),
            "--save", "", "--appendonly", "no",
            "--dir", datadir, "--daemonize", "no",
            *extra_args,
        ]


class NodeProcess(ManagedProcess):
    """
    A ``twistd -n dynomite -c <config>`` node; ``address`` is its client
    listener, its ``tls_listen`` (probed over TLS) when it has no ``listen``.
    """

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
        tls: Optional[Dict[str, Optional[str]]] = None,
    ) -> NodeProcess:
        argv = cls.command(config_path, log_path, twistd)
        return cls(name, argv, address, os.path.dirname(config_path), output_path, log_path, die_with_parent,
                   tls)

    @staticmethod
    def command(config_path: str, log_path: str, twistd: Optional[str] = None) -> List[str]:
        """The ``twistd -n dynomite`` command line: in the foreground, no pidfile, logging to ``log_path``."""
        return [
            _program(twistd or default_twistd()), "-n", "--pidfile=", "--logfile", log_path,
            "dynomite", "-c", config_path,
        ]


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
