"""
Tests for dynomite.launcher, the local cluster launcher, and dynomite.cli.cluster (``dynomite-cluster``).

Unit tests (no processes): the topology file and its errors, token
assignment, and the node configurations the launcher writes, read back with
the node's own ``NodeConfig.from_yaml``.

Integration tests (real redis-server and twistd processes on 127.0.0.x with
ephemeral ports): the Python API starts and stops a cluster and controls
single processes by PID; the command line starts a cluster detached or in
the foreground and stops it. Nodes cannot route to each other yet, so only
liveness is checked. Liveness is read from /proc here, independently of the
launcher's own bookkeeping.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from typing import Any, Dict, List

import yaml
from twisted.trial.unittest import SynchronousTestCase

from dynomite.cli import cluster as cluster_cli
from dynomite.launcher.cluster import Cluster, ClusterError
from dynomite.launcher import host
from dynomite.launcher.topology_file import STANDARD_PORTS, Ports, ClusterFile, owned_ranges, rack_tokens
from dynomite.config.model import Address, ConfigError, NodeConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "etc", "demo-cluster.yml")
CLI = os.path.join(os.path.dirname(sys.executable), "dynomite-cluster")
MAX = 2**32 - 1

#: What the integration tests run: 1 DC x 2 racks x 2 nodes.
SMALL: Dict[str, Any] = {
    "cluster": "itest",
    "datacenters": {"dc1": {"rack1": 2, "rack2": 2}},
    "node": {"timeout": 1000},
}


# -- helpers independent of the launcher --------------------------------------


def alive(pid: int) -> bool:
    """Is ``pid`` a live process? Zombies count as dead (nothing reaps orphans here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except FileNotFoundError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


def ping(address: Any, timeout: float = 2.0) -> bytes:
    """First reply line to an inline PING at ``(host, port)``, or b"" if there was none."""
    return host.ping(*address, timeout=timeout)


def state_pids(workdir: str) -> List[int]:
    """Every PID recorded in a cluster's state file."""
    with open(os.path.join(workdir, "cluster.json")) as f:
        state = json.load(f)
    return [n[k]["pid"] for n in state["nodes"] for k in ("node_process", "redis_process")]


def kill_recorded(workdir: str) -> None:
    """Cleanup after a failed CLI test: SIGKILL whatever the state file lists."""
    try:
        pids = state_pids(workdir)
    except OSError:
        return
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


# -- the topology file ------------------------------------------------------------


class TopologyFileTests(SynchronousTestCase):
    """A topology file is validated once; every problem names file, key and reason."""

    def test_demo_file(self) -> None:
        topology = ClusterFile.from_yaml(DEMO)
        self.assertEqual(topology.name, "dyn_o_mite")
        self.assertEqual(topology.datacenters, ("dc1", "dc2"))
        self.assertEqual(
            [(r.datacenter, r.rack, r.nodes) for r in topology.racks],
            [(dc, rack, 2 if dc == "dc1" else 1) for dc in ("dc1", "dc2") for rack in ("rack1", "rack2", "rack3")],
        )
        self.assertEqual(topology.node_count, 9)
        self.assertEqual(topology.base_address, "127.0.0.11")
        self.assertEqual(topology.ports, Ports(client=8102, peer=8101, stats=22222, redis=22122))
        self.assertEqual(dict(topology.node_settings)["read_consistency"], "DC_QUORUM")

    def test_defaults(self) -> None:
        topology = ClusterFile.from_dict({"datacenters": {"dc1": {"rack1": 2}}})
        self.assertEqual(topology.name, "dyn_o_mite")
        self.assertEqual(topology.base_address, "127.0.0.11")
        self.assertEqual(topology.ports, STANDARD_PORTS)
        self.assertEqual(topology.node_settings, ())

    def test_port_forms(self) -> None:
        def ports(value: Any) -> Any:
            return ClusterFile.from_dict({"datacenters": {"d": {"r": 1}}, "addresses": {"ports": value}}).ports

        self.assertIsNone(ports("auto"))
        self.assertEqual(ports("standard"), STANDARD_PORTS)
        self.assertEqual(ports({"client": 6380, "redis": 6379}), Ports(6380, 8101, 22222, 6379))

    BAD = [
        # (file text, key, fragment of the reason)
        ("- a\n- b\n", "<root>", "expected a mapping"),
        ("datacenter: {dc1: {rack1: 1}}\n", "datacenter", "did you mean 'datacenters'"),
        ("cluster: x\n", "datacenters", "required key is missing"),
        ("datacenters: {}\n", "datacenters", "expected a mapping of datacenter names"),
        ("datacenters: {dc1: [rack1]}\n", "datacenters.dc1", "expected a mapping of rack names"),
        ("datacenters: {'dc:1': {rack1: 1}}\n", "datacenters.dc:1", "expected a name"),
        ("datacenters: {dc1: {rack1: 0}}\n", "datacenters.dc1.rack1", "at least 1 node, got 0"),
        ("datacenters: {dc1: {rack1: two}}\n", "datacenters.dc1.rack1", "expected a number of nodes"),
        ("cluster: 'my pool'\ndatacenters: {dc1: {r: 1}}\n", "cluster", "expected a name"),
        ("datacenters: {dc1: {r: 1}}\naddresses: {bsae: 127.0.0.2}\n", "addresses.bsae", "did you mean 'base'"),
        ("datacenters: {dc1: {r: 1}}\naddresses: {base: 10.0.0.1}\n", "addresses.base", "loopback"),
        ("datacenters: {dc1: {r: 3}}\naddresses: {base: 127.255.255.253}\n", "addresses.base",
         "would leave 127.0.0.0/8"),
        ("datacenters: {dc1: {r: 1}}\naddresses: {ports: fast}\n", "addresses.ports", "expected auto, standard"),
        ("datacenters: {dc1: {r: 1}}\naddresses: {ports: {client: 8101}}\n", "addresses.ports",
         "client and peer both use port 8101"),
        ("datacenters: {dc1: {r: 1}}\naddresses: {ports: {client: 70000}}\n", "addresses.ports",
         "client: expected a port 1..65535"),
        ("datacenters: {dc1: {r: 1}}\nnode: {listen: '127.0.0.1:1'}\n", "node.listen", "set by the launcher"),
        ("datacenters: {dc1: {r: 1}}\nnode: {tls_listen: '127.0.0.1:1'}\n", "node.tls_listen", "set by the launcher"),
        ("datacenters: {dc1: {r: 1}}\nclients: ssl\n", "clients", "expected one of plain, tls, got 'ssl'"),
        ("datacenters: {dc1: {r: 1}}\nclients: tls\n", "node.tls_cert_file", "required by tls_listen"),
        ("datacenters: {dc1: {r: 1}}\nnode: {read_consistency: DC_MANY}\n", "node.read_consistency",
         "expected one of DC_ONE"),
        ("datacenters: {dc1: {r: 1}}\nnode: {read_consistancy: DC_ONE}\n", "node.read_consistancy",
         "did you mean 'read_consistency'"),
        ("datacenters: {dc1: {r: 1}}\nnode: {requirepass: 1234}\n", "node.requirepass", "quoted string"),
        ("datacenters: {a-b: {c: 1}, a: {b-c: 1}}\n", "datacenters", "both be named 'a-b-c-0'"),
        ("datacenters: {dc1: {r: 1}}\ndatacenters: {dc2: {r: 1}}\n", "datacenters", "duplicate key"),
        ("datacenters: {dc1: [}\n", "<file>", "invalid YAML"),
    ]

    def test_bad_files(self) -> None:
        for text, key, fragment in self.BAD:
            path = write(self.mktemp(), text)
            e = self.assertRaises(ConfigError, ClusterFile.from_yaml, path)
            self.assertEqual((e.source, e.key), (path, key), f"{text!r}: {e}")
            self.assertIn(fragment, e.reason, text)
            self.assertTrue(str(e).startswith(f"{path}: {key}: "), str(e))

    def test_missing_file(self) -> None:
        e = self.assertRaises(ConfigError, ClusterFile.from_yaml, "/nonexistent/topology.yml")
        self.assertEqual(e.key, "<file>")
        self.assertIn("cannot read", e.reason)

    def test_dict_through_the_api(self) -> None:
        e = self.assertRaises(ConfigError, Cluster.from_topology, {"datacenters": {"dc1": {}}}, self.mktemp())
        self.assertEqual((e.source, e.key), ("<dict>", "datacenters.dc1"))


# -- placement ---------------------------------------------------------------------


class TokenTests(SynchronousTestCase):
    """Node i of a rack of N gets token i * (2**32 // N); a token owns the hashes up to itself."""

    def test_rack_tokens(self) -> None:
        self.assertEqual(rack_tokens(1), [0])
        self.assertEqual(rack_tokens(2), [0, 2147483648])
        self.assertEqual(rack_tokens(3), [0, 1431655765, 2863311530])
        self.assertEqual(rack_tokens(4), [0, 1073741824, 2147483648, 3221225472])

    def test_owned_ranges(self) -> None:
        self.assertEqual(owned_ranges([0], [0]), [(0, MAX)])
        self.assertEqual(owned_ranges([0], [0, 2**31]), [(0, 0), (2**31 + 1, MAX)])
        self.assertEqual(owned_ranges([2**31], [0, 2**31]), [(1, 2**31)])

    def test_ranges_cover_the_ring_once(self) -> None:
        for n in (1, 2, 3, 5, 7):
            tokens = rack_tokens(n)
            pieces = sorted(r for t in tokens for r in owned_ranges([t], tokens))
            self.assertEqual(pieces[0][0], 0)
            self.assertEqual(pieces[-1][1], MAX)
            for (_, hi), (lo, _) in zip(pieces, pieces[1:]):
                self.assertEqual(lo, hi + 1)

    def test_cluster_plan(self) -> None:
        topology = {"datacenters": {"dc1": {"r1": 3, "r2": 1}, "dc2": {"r1": 2}}}
        plan = Cluster.from_topology(topology, self.mktemp(), ports="standard", base_address="127.0.0.20")
        self.assertEqual(
            [(n.name, n.host, n.tokens) for n in plan.nodes],
            [
                ("dc1-r1-0", "127.0.0.20", (0,)),
                ("dc1-r1-1", "127.0.0.21", (1431655765,)),
                ("dc1-r1-2", "127.0.0.22", (2863311530,)),
                ("dc1-r2-0", "127.0.0.23", (0,)),
                ("dc2-r1-0", "127.0.0.24", (0,)),
                ("dc2-r1-1", "127.0.0.25", (2147483648,)),
            ],
        )
        node = plan.node("dc2", "r1", 1)
        self.assertEqual(node.client_address, ("127.0.0.25", 8102))
        self.assertEqual(node.peer_address, ("127.0.0.25", 8101))
        self.assertEqual(node.stats_address, ("127.0.0.25", 22222))
        self.assertEqual(node.redis_address, ("127.0.0.25", 22122))
        self.assertEqual(node.ranges, ((1, 2147483648),))
        self.assertEqual(plan.node("dc1", "r2", 0).ranges, ((0, MAX),))
        self.assertRaises(KeyError, plan.node, "dc1", "r2", 1)
        table = plan.table()
        self.assertIn("dc2-r1-1", table)
        self.assertIn("127.0.0.25:8101", table)
        self.assertIn("2147483649..4294967295, 0", table)

    def test_auto_ports(self) -> None:
        plan = Cluster.from_topology(SMALL, self.mktemp(), base_address="127.0.0.30")
        for n in plan.nodes:
            ports = {n.client_address[1], n.peer_address[1], n.stats_address[1], n.redis_address[1]}
            self.assertEqual(len(ports), 4)
            self.assertTrue(ports.isdisjoint(STANDARD_PORTS), ports)


# -- generated node configurations -----------------------------------------------


class NodeConfigTests(SynchronousTestCase):
    """The YAML written for each node loads with the node's own parser and lists every other node."""

    def test_configs_load_and_list_every_other_node(self) -> None:
        topology = dict(SMALL, node={"timeout": 1500, "hash_tag": "{}", "read_consistency": "dc_quorum"})
        plan = Cluster.from_topology(topology, self.mktemp(), ports="standard", base_address="127.0.0.40")
        paths = plan.write_configs()
        self.assertEqual(paths, [n.config_path for n in plan.nodes])
        for n in plan.nodes:
            self.assertEqual(os.path.basename(n.config_path), f"dc1-{n.rack}-{n.index}.yml")
            self.assertEqual(stat.S_IMODE(os.stat(n.config_path).st_mode), 0o600)
            config = NodeConfig.from_yaml(n.config_path)
            self.assertEqual(config.pool_name, "itest")
            self.assertEqual(config.listen, Address(*n.client_address))
            self.assertEqual(config.dyn_listen, Address(*n.peer_address))
            self.assertEqual(config.stats_listen, Address(*n.stats_address))
            self.assertEqual(config.datastore, Address(*n.redis_address))
            self.assertEqual((config.datacenter, config.rack, config.tokens), (n.dc, n.rack, n.tokens))
            self.assertEqual((config.timeout, config.hash_tag, config.read_consistency), (1.5, b"{}", "DC_QUORUM"))
            seeds = {(s.address.host, s.address.port, s.rack, s.datacenter, s.tokens) for s in config.dyn_seeds}
            others = {(*o.peer_address, o.rack, o.dc, o.tokens) for o in plan.nodes if o is not n}
            self.assertEqual(seeds, others)

    def test_demo_configs(self) -> None:
        plan = Cluster.from_topology(ClusterFile.from_yaml(DEMO), self.mktemp(), ports=None, base_address=None)
        plan.write_configs()
        hosts = [f"127.0.0.{i}" for i in range(11, 20)]
        self.assertEqual([n.host for n in plan.nodes], hosts)
        for n in plan.nodes:
            config = NodeConfig.from_yaml(n.config_path)
            self.assertEqual(config.listen, Address(n.host, 8102))
            self.assertEqual(sorted(s.address.host for s in config.dyn_seeds), [h for h in hosts if h != n.host])
            self.assertTrue(all(s.address.port == 8101 for s in config.dyn_seeds))


class BusyPortTests(SynchronousTestCase):
    """A fixed port already taken stops start() before anything runs, naming the port."""

    def test_busy_port_is_named(self) -> None:
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.52", 0))
        listener.listen()
        port = listener.getsockname()[1]
        ports = {"client": 40001, "peer": 40002, "stats": 40003, "redis": port}
        topology = {"datacenters": {"dc1": {"rack1": 1, "rack2": 1}}}
        plan = Cluster.from_topology(topology, self.mktemp(), ports=ports, base_address="127.0.0.51")
        e = self.assertRaises(ClusterError, plan.start)
        self.assertIn(f"127.0.0.52:{port} (redis port of dc1-rack2-0) is busy", str(e))
        self.assertEqual([p.pid for p in plan.processes], [None] * 4)


class HostTests(SynchronousTestCase):
    """dynomite.launcher.host: ports, /proc and PING, host first as in every address."""

    def test_free_ports_takes_the_host_first(self) -> None:
        ports = host.free_ports("127.0.0.53", 3)
        self.assertEqual(len(set(ports)), 3)
        for port in ports:
            self.assertIsNone(host.port_busy("127.0.0.53", port))
        self.assertRaises(TypeError, host.free_ports, 3, "127.0.0.53")

    def test_port_busy_names_the_reason(self) -> None:
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.53", 0))
        listener.listen()
        self.assertIn("in use", host.port_busy("127.0.0.53", listener.getsockname()[1]))

    def test_proc_stat_tells_a_reused_pid(self) -> None:
        state, start_time = host.proc_stat(os.getpid())
        self.assertEqual(state, "R")
        self.assertTrue(host.pid_alive(os.getpid(), start_time))
        self.assertFalse(host.pid_alive(os.getpid(), start_time + 1))

    def test_ping_without_a_server(self) -> None:
        port = host.free_ports("127.0.0.53", 1)[0]
        self.assertEqual(host.ping("127.0.0.53", port), b"")
        self.assertRaises(OSError, host.ping_raw, "127.0.0.53", port)


# -- real processes through the API -------------------------------------------------


class ClusterProcessTests(SynchronousTestCase):
    """Cluster.start() runs one redis-server and one node per node; stop() leaves none alive."""

    def test_start_ping_stop(self) -> None:
        workdir = self.mktemp()
        cluster = Cluster.from_topology(SMALL, workdir, base_address="127.0.0.111")
        self.addCleanup(cluster.stop)
        cluster.start()
        self.assertEqual(len(cluster.nodes), 4)
        self.assertEqual(len({n.host for n in cluster.nodes}), 4)
        for n in cluster.nodes:
            self.assertEqual(ping(n.client_address), b"+PONG\r\n", n.name)
            self.assertEqual(ping(n.redis_address), b"+PONG\r\n", n.name)
            self.assertEqual(n.client_address[0], n.host)
            self.assertEqual(n.redis_address[0], n.host)
        pids = [p.pid for p in cluster.processes]
        self.assertEqual(len(set(pids)), 8)
        self.assertTrue(all(alive(pid) for pid in pids))
        self.assertEqual(sorted(state_pids(workdir)), sorted(pids))

        # A second cluster in the same workdir is refused and harms nothing.
        second = Cluster.from_topology(SMALL, workdir, base_address="127.0.0.111")
        e = self.assertRaises(ClusterError, second.start)
        self.assertIn("already running", str(e))
        second.stop()
        second.remove_files()
        self.assertEqual(ping(cluster.nodes[0].client_address), b"+PONG\r\n")

        cluster.stop()
        self.assertEqual([pid for pid in pids if alive(pid)], [])
        self.assertFalse(os.path.exists(os.path.join(workdir, "cluster.json")))
        cluster.remove_files()
        self.assertFalse(os.path.exists(workdir))

    def test_process_controls(self) -> None:
        workdir = self.mktemp()
        topology = {"datacenters": {"dc1": {"rack1": 1}}, "node": {"timeout": 1000}}
        with Cluster.from_topology(topology, workdir, base_address="127.0.0.121") as cluster:
            node = cluster.node("dc1", "rack1", 0)
            proc, redis = node.node_process, node.redis_process
            self.assertIn("listening on 127.0.0.121", proc.log_tail())

            proc.pause()
            self.assertEqual(ping(node.client_address, timeout=0.5), b"")
            out = io.StringIO()
            self.patch(sys, "stdout", out)
            self.assertEqual(cluster_cli.main(["status", "--workdir", workdir]), 1)
            self.assertRegex(out.getvalue(), r"dc1-rack1-0 +node +%d .*paused" % proc.pid)
            proc.resume()
            self.assertEqual(ping(node.client_address), b"+PONG\r\n")

            old = proc.pid
            proc.restart()
            self.assertNotEqual(proc.pid, old)
            self.assertFalse(alive(old))
            self.assertEqual(ping(node.client_address), b"+PONG\r\n")

            proc.kill()
            self.assertFalse(proc.running())
            self.assertFalse(alive(proc.pid))
            self.assertEqual(ping(node.client_address, timeout=0.5), b"")
            proc.restart()
            self.assertEqual(ping(node.client_address), b"+PONG\r\n")

            self.assertEqual(redis.stop(), 0)
            self.assertFalse(alive(redis.pid))
            redis.start()
            self.assertEqual(ping(node.redis_address), b"+PONG\r\n")
            pids = [p.pid for p in cluster.processes]
        self.assertEqual([pid for pid in pids if alive(pid)], [])

    def test_failed_start_shows_the_log_and_stops_everything(self) -> None:
        fake = write(self.mktemp(), "#!/bin/sh\necho 'boom: no plugin named dynomite' >&2\nexit 3\n")
        os.chmod(fake, 0o755)
        topology = {"datacenters": {"dc1": {"rack1": 1, "rack2": 1}}}
        cluster = Cluster.from_topology(topology, self.mktemp(), base_address="127.0.0.125", twistd=fake)
        e = self.assertRaises(ClusterError, cluster.start, timeout=20)
        self.assertIn("node (pid", str(e))
        self.assertIn("exited with status 3 before answering PING", str(e))
        self.assertIn("boom: no plugin named dynomite", str(e))
        self.assertEqual([p.pid for p in cluster.processes if p.pid and alive(p.pid)], [])


# -- the command line ------------------------------------------------------------------


class CommandLineTests(SynchronousTestCase):
    """``dynomite-cluster up/status/down`` as a user runs them."""

    def topology_file(self, base: str) -> str:
        topology = {
            "cluster": "clitest",
            "datacenters": {"dc1": {"rack1": 1, "rack2": 1}},
            "addresses": {"base": base, "ports": "auto"},
        }
        return write(self.mktemp(), yaml.safe_dump(topology))

    def run_cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)

    def test_detach_status_down(self) -> None:
        workdir = self.mktemp()
        self.addCleanup(kill_recorded, workdir)
        up = self.run_cli("up", self.topology_file("127.0.0.131"), "--workdir", workdir, "--detach")
        self.assertEqual(up.returncode, 0, up.stderr)
        self.assertIn("dc1-rack2-0", up.stdout)
        self.assertIn("redis-cli -h 127.0.0.131 -p ", up.stdout)
        pids = state_pids(workdir)
        self.assertEqual(len(pids), 4)
        self.assertTrue(all(alive(pid) for pid in pids))
        attached = Cluster.attach(workdir)
        self.assertEqual([n.host for n in attached.nodes], ["127.0.0.131", "127.0.0.132"])
        for n in attached.nodes:
            self.assertEqual(ping(n.client_address), b"+PONG\r\n", n.name)

        status = self.run_cli("status", "--workdir", workdir)
        self.assertEqual(status.returncode, 0, status.stdout + status.stderr)
        self.assertEqual(status.stdout.count("answers PING"), 4)

        down = self.run_cli("down", "--workdir", workdir)
        self.assertEqual(down.returncode, 0, down.stderr)
        self.assertEqual([pid for pid in pids if alive(pid)], [])
        self.assertFalse(os.path.exists(workdir))
        self.assertEqual(self.run_cli("status", "--workdir", workdir).returncode, 3)

    def start_foreground(self, base: str, workdir: str) -> subprocess.Popen:
        """Run ``up`` in the foreground and return once it says the cluster is up."""
        proc = subprocess.Popen(
            [CLI, "up", self.topology_file(base), "--workdir", workdir],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.addCleanup(kill_recorded, workdir)
        assert proc.stdout is not None
        output = b""
        deadline = time.monotonic() + 30
        while b"Ctrl-C stops the cluster" not in output:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, output)
            if select.select([proc.stdout], [], [], left)[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                self.assertTrue(chunk, output)
                output += chunk
        return proc

    def test_foreground_ctrl_c(self) -> None:
        workdir = self.mktemp()
        proc = self.start_foreground("127.0.0.141", workdir)
        pids = state_pids(workdir)
        self.assertTrue(all(alive(pid) for pid in pids))
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(30), 0)
        self.assertEqual([pid for pid in pids if alive(pid)], [])
        self.assertFalse(os.path.exists(workdir))

    def test_down_stops_a_foreground_cluster_through_its_launcher(self) -> None:
        workdir = self.mktemp()
        proc = self.start_foreground("127.0.0.151", workdir)
        pids = state_pids(workdir)
        down = self.run_cli("down", "--workdir", workdir)
        self.assertEqual(down.returncode, 0, down.stderr)
        self.assertIn(f"its launcher, pid {proc.pid}", down.stdout)
        self.assertEqual(proc.wait(30), 0)
        self.assertEqual([pid for pid in pids if alive(pid)], [])
        self.assertFalse(os.path.exists(workdir))

    def test_nodes_run_under_the_twistd_given(self) -> None:
        workdir = self.mktemp()
        self.addCleanup(kill_recorded, workdir)
        marker = os.path.abspath(self.mktemp())
        real = os.path.join(os.path.dirname(sys.executable), "twistd")
        wrapper = write(self.mktemp(), f"#!/bin/sh\necho $$ >> {marker}\nexec {real} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        up = self.run_cli("up", self.topology_file("127.0.0.161"), "--workdir", workdir, "--detach",
                          "--twistd", wrapper)
        self.assertEqual(up.returncode, 0, up.stderr)
        nodes = Cluster.attach(workdir).nodes
        with open(marker) as f:
            started = sorted(int(line) for line in f)
        self.assertEqual(started, sorted(n.node_process.pid for n in nodes))  # exec keeps the PID
        for n in nodes:
            self.assertEqual(ping(n.client_address), b"+PONG\r\n", n.name)
        self.assertEqual(self.run_cli("down", "--workdir", workdir).returncode, 0)

    def test_errors(self) -> None:
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        bad = write(self.mktemp(), "datacenters: {dc1: {rack1: 0}}\n")
        self.assertEqual(cluster_cli.main(["up", bad, "--workdir", self.mktemp()]), 1)
        self.assertIn(f"topology error: {bad}: datacenters.dc1.rack1: a rack needs at least 1 node", err.getvalue())
        empty = self.mktemp()
        self.assertEqual(cluster_cli.main(["status", "--workdir", empty]), 3)
        self.assertEqual(cluster_cli.main(["down", "--workdir", empty]), 1)
        self.assertIn("cluster.json is missing", err.getvalue())
        topology = self.topology_file("127.0.0.171")
        self.assertEqual(cluster_cli.main(["up", topology, "--workdir", self.mktemp(), "--twistd", "/no/twistd"]), 1)
        self.assertIn("dynomite-cluster: --twistd: /no/twistd is not an executable file", err.getvalue())


class PrometheusTests(SynchronousTestCase):
    """`up --prometheus` runs Prometheus when it is installed, and says how to get it otherwise."""

    def fake_prometheus(self) -> str:
        bindir = self.mktemp()
        os.makedirs(bindir)
        path = os.path.join(bindir, "prometheus")
        with open(path, "w") as f:
            # written aside and renamed, so the test never reads a half-written file
            args = os.path.join(os.path.abspath(bindir), "args")
            f.write('#!/bin/sh\necho "$@" > %s.tmp && /bin/mv %s.tmp %s\nexec /bin/sleep 30\n' % (args, args, args))
        os.chmod(path, 0o755)
        return bindir

    def test_started_with_the_config_and_stopped(self):
        from dynomite.cli import cluster as cluster_cli

        bindir = self.fake_prometheus()
        workdir = self.mktemp()
        os.makedirs(workdir)
        self.patch(os, "environ", dict(os.environ, PATH=bindir))
        process = cluster_cli._start_prometheus("monitoring/prometheus/prometheus.yml", workdir)
        self.addCleanup(process.kill)
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(bindir, "args")) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(os.path.join(bindir, "args")) as f:
            args = f.read()
        self.assertIn("--config.file=" + os.path.abspath("monitoring/prometheus/prometheus.yml"), args)
        self.assertIn("--web.listen-address=127.0.0.1:9090", args)
        process.terminate()
        self.assertIsNotNone(process.wait(timeout=10))

    def test_not_installed_says_how_to_get_it(self):
        from dynomite.cli import cluster as cluster_cli

        self.patch(os, "environ", dict(os.environ, PATH=self.mktemp()))
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertIsNone(cluster_cli._start_prometheus("monitoring/prometheus/prometheus.yml", self.mktemp()))
        self.assertIn("apt-get install prometheus", out.getvalue())
