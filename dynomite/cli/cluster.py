# -*- test-case-name: tests.integration.test_cluster_launcher -*-
"""
``dynomite-cluster``: run a whole cluster on this machine from a topology file.

``up`` starts a :class:`dynomite.launcher.cluster.Cluster` and stays in the
foreground until Ctrl-C or SIGTERM (or returns at once with ``--detach``);
``status`` and ``down`` find a running cluster through its state file
(``<workdir>/cluster.json``) and act on its processes by PID. Everything
the launcher starts gets its own session, so Ctrl-C in a terminal reaches
only the launcher, which then stops the nodes before their redis-servers;
and unless detached, children are killed by the kernel if the launcher
itself dies (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

from dynomite.launcher.cluster import STATE_FILE, Cluster, ClusterError, format_address
from dynomite.launcher.topology_file import ClusterFile
from dynomite.config.model import ConfigError
from dynomite.launcher.host import pid_alive, proc_stat
from dynomite.launcher.tables import format_table

__all__ = ["DEFAULT_WORKDIR", "main"]

#: Where ``up --prometheus`` serves Prometheus.
PROMETHEUS_ADDRESS = "127.0.0.1:9090"

#: Where ``up --detach``, ``status`` and ``down`` look when no --workdir is given.
DEFAULT_WORKDIR = os.path.join(tempfile.gettempdir(), "dynomite-cluster-%d" % os.getuid())


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


def _start_prometheus(config: str, workdir: str) -> Optional[subprocess.Popen]:
    """
    Prometheus scraping the cluster, when it is installed (``make demo``
    passes the demo's scrape configuration); otherwise say how to get it.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        _say(f"Prometheus is not installed (apt-get install prometheus); with it, `make demo` also"
             f" runs it with {config}, alert rules included")
        return None
    data = os.path.join(workdir, "prometheus")
    os.makedirs(data, exist_ok=True)
    log = open(os.path.join(workdir, "prometheus.log"), "wb")
    process = subprocess.Popen(
        [binary, "--config.file=" + os.path.abspath(config), "--storage.tsdb.path=" + data,
         "--web.listen-address=" + PROMETHEUS_ADDRESS],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    _say(f"Prometheus: http://{PROMETHEUS_ADDRESS} scrapes every node's /metrics"
         f" (alerts at /alerts; Grafana dashboard in monitoring/grafana)")
    return process


def _cmd_up(args: argparse.Namespace) -> int:
    topology = ClusterFile.from_yaml(args.topology)
    workdir = os.path.abspath(args.workdir or DEFAULT_WORKDIR)
    if workdir == DEFAULT_WORKDIR:
        _check_default_workdir(workdir)
    twistd = None
    if args.twistd is not None:
        twistd = os.path.abspath(args.twistd)
        if not (os.path.isfile(twistd) and os.access(twistd, os.X_OK)):
            raise ClusterError(f"--twistd: {args.twistd} is not an executable file")
    try:
        cluster = Cluster.from_topology(
            topology, workdir, ports=args.ports, base_address=args.base_address,
            twistd=twistd, die_with_parent=not args.detach,
        )
    except ValueError as e:
        raise ClusterError(f"--base-address: {e}") from None
    if not args.detach:
        stat = proc_stat(os.getpid())
        cluster.supervisor = (os.getpid(), stat[1] if stat else None)
    keep_running = False
    prometheus: Optional[subprocess.Popen] = None
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
        if args.prometheus:
            prometheus = _start_prometheus(args.prometheus, workdir)
        _say(f"Ctrl-C stops the cluster (or `dynomite-cluster down{hint}` from another terminal)")
        return _supervise(cluster)
    except _Interrupted:
        _say("\nstopping the cluster ...")
        return 0
    finally:
        _set_stop_signals(signal.SIG_IGN)  # cleanup must not be interrupted half-way
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(timeout=10)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait()
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
    rows = []
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
            rows.append((n.name, proc.role, str(proc.pid), format_address(proc.address), state))
    owner = (f"launcher pid {cluster.supervisor[0]}" if cluster.supervisor else "detached")
    _say(f"cluster {cluster.name!r} from {cluster.source} in {workdir} ({owner})")
    _say(format_table(("NODE", "PROCESS", "PID", "ADDRESS", "STATE"), rows))
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
    up.add_argument("--prometheus", metavar="CONFIG", default=None,
                    help="also run Prometheus with this scrape configuration when it is installed"
                         " (foreground only)")
    up.add_argument("--twistd", metavar="PATH", default=None,
                    help="run the nodes with this twistd, e.g. a PyPy venv's .pypy/bin/twistd"
                         " (default: the one next to this Python)")
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
