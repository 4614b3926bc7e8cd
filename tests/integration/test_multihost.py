"""
A cluster across hosts (issue 16, item 5): one Linux network namespace per
node, each with its own address on a bridge and its own redis-server
(``tests/integration/fixtures/netns.py``), 1 DC x 3 racks.  Writes and
reads go through every node; every node is restarted in turn (SIGTERM,
then started again) under a pipelined writer; a host is cut off from the
others by nftables rules inside its namespace.  The promise checked: no
acknowledged write is lost (each one is read back from every replica's
own redis-server), each node's admin ``/info`` follows what happened, and
so does its readiness: ``/ready`` answers 200 ``NORMAL`` exactly when the
node is NORMAL (a restarted node is 503 ``RESUMING`` until its peers'
hints for it drained), asked of the cut node and of the others at each
phase.

Nodes bind ``0.0.0.0`` in their namespaces, advertise their host's
address (``dyn_advertise``) and find each other by ``dns_provider`` from
a DNS server the test runs (``TxtAddressing``: TXT and A records).
:class:`KubernetesDnsTests` runs nodes as deploy/kubernetes does: pods
named ``dynomite-<dc>-<rack>-<ordinal>`` found by the SRV records of a
headless service (``dns_seed_type: srv``), advertising and resolving
stable pod names through that DNS server as their only resolver; a pod
restarted leaves DNS meanwhile and keeps its place in the ring; a pod
rescheduled with a new address is reached again by its name (each
reconnection resolves it again).  Every
namespace, link, rule and resolver file is removed
afterwards, also when a test fails; the processes are stopped by the PIDs
the fixture started.  Needs root (``ip netns``) and nftables, which
``make test`` installs.

Run: ``.venv/bin/trial tests.integration.test_multihost``.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import signal
import subprocess
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import redis
from twisted.trial.unittest import SkipTest

from dynomite.launcher.cluster import ClusterError, ClusterNode
from dynomite.runtime.reconnect import MAX_DELAY
from tests.integration.fixtures.cases import FaultTestCase
from tests.integration.fixtures.cluster import SHORT_TIMEOUTS, Layout
from tests.integration.fixtures.common import SOCKET_TIMEOUT, no_retry, poll
from tests.integration.fixtures.readiness import ready
from tests.integration.fixtures.dns_addressing import GOS_INTERVAL, SrvAddressing, TxtAddressing
from tests.integration.fixtures.netns import (
    CUT_TABLE, Addressing, Network, NetnsClusterFixture, namespaces, unavailable,
)

#: The nftables table that keeps peers off a moved pod's old address.
MOVED_TABLE = "dynomite_test_moved"
ONE_DC_THREE_RACKS = {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}}
SETTINGS = {**SHORT_TIMEOUTS, "peer_heartbeat_interval": 500, "resume_timeout": 10000}

#: A peer's silence is noticed within peer_down_after, plus a heartbeat to miss and a reply timeout.
DOWN_WITHIN = (SETTINGS["peer_down_after"] + SETTINGS["peer_heartbeat_interval"] + SETTINGS["timeout"]) / 1000
#: A node back (or reachable again) is NORMAL everywhere once a reconnect attempt (at most
#: MAX_DELAY apart) succeeded and its hints drained (at most resume_timeout), plus DOWN_WITHIN.
NORMAL_WITHIN = MAX_DELAY + SETTINGS["resume_timeout"] / 1000 + DOWN_WITHIN
#: A SIGTERM'd node is gone within its graceful stop (clients and forwarded writes: timeout each;
#: peers told: peer_down_after), plus a second for the process to exit.
STOP_WITHIN = (2 * SETTINGS["timeout"] + SETTINGS["peer_down_after"]) / 1000 + 1.0
#: Hints replay in hint_replay_rate (5000/s by default) batches: far quicker than this.
CONVERGE_WITHIN = NORMAL_WITHIN

_unavailable: List[Optional[str]] = []


def skip_unless_namespaces() -> None:
    """SkipTest, saying why, where network namespaces cannot be made (asked once per process)."""
    if not _unavailable:
        _unavailable.append(unavailable())
    if _unavailable[0]:
        raise SkipTest(_unavailable[0])


class PipelinedWriter(threading.Thread):
    """
    SETs unique keys to write-once values in pipelines of ``batch``, each
    pipeline through the next node in turn; records the writes each reply
    acknowledged (``acked``) and, per node, when pipelines through it
    succeeded (``ok_times``) or failed (``errors``).  A pipeline that loses
    its connection counts as acknowledging nothing.  ``pause`` (seconds)
    between pipelines leaves the machine's cores to the servers.
    """

    def __init__(self, nodes: Sequence[ClusterNode], prefix: str, batch: int = 20, pause: float = 0.002) -> None:
        super().__init__(name=f"pipelined-writer-{prefix}", daemon=True)
        self.nodes = list(nodes)
        self.prefix = prefix
        self.batch = batch
        self.pause = pause
        self.acked: Dict[str, str] = {}
        self.ok_times: Dict[str, List[float]] = {n.name: [] for n in self.nodes}
        self.errors: List[Tuple[float, str, str]] = []
        self._halt = threading.Event()
        self._clients = {
            n.name: redis.Redis(host=n.client_address[0], port=n.client_address[1], socket_timeout=SOCKET_TIMEOUT,
                                socket_connect_timeout=SOCKET_TIMEOUT, retry=no_retry())
            for n in self.nodes
        }

    def run(self) -> None:
        counter = itertools.count()
        for node in itertools.cycle(self.nodes):
            if self._halt.is_set():
                return
            writes = []
            pipe = self._clients[node.name].pipeline(transaction=False)
            for _ in range(self.batch):
                i = next(counter)
                key, value = f"{self.prefix}:{i}", f"{self.prefix}:{i}:{node.name}"
                writes.append((key, value))
                pipe.set(key, value)
            try:
                replies = pipe.execute(raise_on_error=False)
            except redis.RedisError as e:
                self.errors.append((time.monotonic(), node.name, repr(e)))
                self._halt.wait(0.05)
                continue
            for (key, value), reply in zip(writes, replies):
                if reply is True:
                    self.acked[key] = value
                else:
                    self.errors.append((time.monotonic(), node.name, f"SET {key}: {reply!r}"))
            self.ok_times[node.name].append(time.monotonic())
            self._halt.wait(self.pause)

    def acked_between(self, node: ClusterNode, start: float, end: float) -> int:
        """Pipelines acknowledged through ``node`` between two monotonic times."""
        return sum(1 for t in self.ok_times[node.name] if start <= t <= end)

    def finish(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)
        for c in self._clients.values():
            c.close()


class MultiHostTests(FaultTestCase):
    """1 DC x 3 racks, one node and its redis-server per network namespace, seeds from DNS."""

    def addressing(self) -> Addressing:
        return TxtAddressing()

    def setUp(self) -> None:
        skip_unless_namespaces()
        self.parent = os.path.abspath(self.mktemp())
        os.makedirs(self.parent)

    def start_hosts(self, label: str) -> NetnsClusterFixture:
        fx = NetnsClusterFixture(Layout(f"mh_{label}", ONE_DC_THREE_RACKS, 0, 0, dict(SETTINGS)),
                                 self.addressing(), parent_dir=self.parent)
        self.addCleanup(fx.stop)
        self.fx = fx
        fx.wait_normal(NORMAL_WITHIN)
        self.t0 = time.monotonic()
        return fx

    def pipelined_writer(self, prefix: str) -> PipelinedWriter:
        w = PipelinedWriter(self.fx.nodes, prefix)
        self.addCleanup(w.finish)
        w.start()
        return w

    def wait_progress(self, writer: PipelinedWriter, node: ClusterNode, since: float, what: str) -> None:
        """Until a pipeline through ``node`` is acknowledged after ``since``."""
        if not poll(lambda: writer.acked_between(node, since, float("inf")) > 0, NORMAL_WITHIN, 0.05):
            self.fail_with(f"no pipeline through {node.name} acknowledged {what} within {NORMAL_WITHIN:g} s;"
                           f" last errors: {writer.errors[-3:]}")

    def assertReady(self, nodes: Sequence[ClusterNode], expected: Optional[Tuple[int, str]], phase: str) -> None:
        """Each of ``nodes`` answers /ready with ``expected`` (None: does not answer), and /info agrees."""
        for n in nodes:
            got = ready(n)
            if got != expected:
                self.fail_with(f"{phase}: /ready of {n.name} is {got}, expected {expected}")
            if expected is not None:
                self.assertEqual(self.fx.info(n)["state"], expected[1], f"{phase}: /info state of {n.name}")

    def watch_readiness(self, node: ClusterNode) -> List[Tuple[int, str]]:
        """/ready of ``node`` from now until it answers 200 (within NORMAL_WITHIN): what it said, in order."""
        seen: List[Tuple[int, str]] = []

        def normal() -> bool:
            got = ready(node)
            if got is not None and (not seen or seen[-1] != got):
                seen.append(got)
            return got is not None and got[0] == 200

        if not poll(normal, NORMAL_WITHIN, 0.02):
            self.fail_with(f"/ready of {node.name} not 200 within {NORMAL_WITHIN:g} s; it said {seen}")
        return seen

    def assertAllHeld(self, acked: Dict[str, str], what: str) -> None:
        self.assertHolding(self.fx.nodes, acked, CONVERGE_WITHIN, what)

    def test_every_node_has_its_own_host(self) -> None:
        """
        Each node listens on 0.0.0.0 in its own namespace, has no static
        seed, and knows its peers by the names DNS gave them.
        """
        fx = self.start_hosts("hosts")
        addresses = [n.host for n in fx.nodes]
        self.assertEqual(len(set(addresses)), 3)
        for n in fx.nodes:
            self.assertTrue(n.host.startswith("10.213."), n.host)
            peers = fx.info(n)["peers"]
            self.assertEqual(sorted(peers), sorted(fx.peer_name(o) for o in fx.nodes if o is not n))
            with open(n.config_path) as f:
                text = f.read()
            self.assertIn("dyn_seeds: []", text)
            self.assertIn("dyn_listen: 0.0.0.0:8101", text)
            # Listening on 0.0.0.0:8102 in its namespace (not in the test's: the node is elsewhere).
            out = subprocess.run(fx.host_of(n).wrap(["cat", "/proc/net/tcp"]), capture_output=True, text=True)
            self.assertIn(" 00000000:1FA6 ", out.stdout, f"{n.name}: no listener on 0.0.0.0:8102 in its namespace")
        self.assertReady(fx.nodes, (200, "NORMAL"), "started")

    def test_writes_and_reads_through_every_node(self) -> None:
        """A SET through any node reaches every rack's redis-server and reads back through every node."""
        fx = self.start_hosts("rw")
        clients = {n.name: fx.client(n) for n in fx.nodes}
        data: Dict[str, str] = {}
        for i in range(300):
            via = fx.nodes[i % 3]
            key, value = f"rw:{i}", f"value {i} via {via.name}"
            self.assertIs(clients[via.name].set(key, value), True)
            data[key] = value
        self.assertAllHeld(data, "SETs through every node")
        for n in fx.nodes:
            keys = sorted(data)
            got = clients[n.name].mget(keys)
            wrong = [k for k, v in zip(keys, got) if v is None or v.decode() != data[k]]
            self.assertEqual(wrong, [], f"reads through {n.name}")

    def test_rolling_restart_under_pipelined_writes_loses_no_acknowledged_write(self) -> None:
        """
        Each node in turn: SIGTERM, started again, the cluster NORMAL again
        before the next; a pipelined writer goes on through all three nodes
        the whole time.  Pipelines through the other nodes are acknowledged
        while one is down; afterwards every acknowledged SET is in every
        replica's redis-server.
        """
        fx = self.start_hosts("rolling")
        writer = self.pipelined_writer("roll")
        for node in fx.nodes:
            self.wait_progress(writer, node, time.monotonic(), "before its restart")
            stopped_at = time.monotonic()
            status = node.node_process.stop(STOP_WITHIN)
            took = time.monotonic() - stopped_at
            if status == -signal.SIGKILL or took > STOP_WITHIN:
                self.fail_with(f"{node.name} did not exit on SIGTERM within {STOP_WITHIN:g} s"
                               f" (status {status}, {took:.1f} s)")
            others = [o for o in fx.nodes if o is not node]
            for observer in others:
                self.wait_peer_state(observer, node, "DOWN", DOWN_WITHIN)
            for other in others:
                self.wait_progress(writer, other, stopped_at, f"while {node.name} was stopped")
            self.assertReady([node], None, f"{node.name} stopped")
            self.assertReady(others, (200, "NORMAL"), f"{node.name} stopped")
            try:
                node.node_process.start()
            except ClusterError as e:
                self.fail_with(f"{node.name} did not come back: {e}")
            # Its peers hold hints for it (writes went on): unready until they drained.
            seen = self.watch_readiness(node)
            self.assertEqual(seen[0], (503, "RESUMING"), f"/ready of {node.name} after its restart: {seen}")
            self.assertEqual(seen[-1], (200, "NORMAL"))
            fx.wait_normal(NORMAL_WITHIN)
            self.assertReady(fx.nodes, (200, "NORMAL"), f"{node.name} back")
            self.wait_progress(writer, node, time.monotonic(), "after its restart")
        writer.finish()
        self.assertGreater(len(writer.acked), 0)
        self.assertAllHeld(writer.acked, "after a rolling restart of every node")

    def test_host_cut_off_by_nftables(self) -> None:
        """
        rack3's host is cut off from the others (nftables inside its
        namespace): both sides see each other DOWN, writes go on being
        acknowledged through every node; once the rules are gone every
        node is NORMAL again and every acknowledged SET is on every replica.
        """
        fx = self.start_hosts("cut")
        cut_node = fx.node("dc1-rack3-0")
        others = [o for o in fx.nodes if o is not cut_node]
        host = fx.host_of(cut_node)
        writer = self.pipelined_writer("cut")
        self.wait_progress(writer, cut_node, time.monotonic(), "before the cut")
        self.assertReady(fx.nodes, (200, "NORMAL"), "before the cut")
        fx.network.cut(host)
        self.addCleanup(lambda: CUT_TABLE in fx.network.rules(host) and fx.network.heal(host))
        cut_at = time.monotonic()
        for observer in others:
            self.wait_peer_state(observer, cut_node, "DOWN", DOWN_WITHIN)
            self.wait_peer_state(cut_node, observer, "DOWN", DOWN_WITHIN)
        for node in fx.nodes:
            self.wait_progress(writer, node, cut_at, "during the cut")
        # Each side is NORMAL (a cut node goes on serving at DC_ONE, hinting for the others): ready.
        self.assertReady([cut_node], (200, "NORMAL"), "during the cut, the cut node")
        self.assertReady(others, (200, "NORMAL"), "during the cut, the others")
        fx.network.heal(host)
        self.assertNotIn(CUT_TABLE, fx.network.rules(host))
        fx.wait_normal(NORMAL_WITHIN)
        self.assertReady(fx.nodes, (200, "NORMAL"), "after the cut")
        writer.finish()
        self.assertAllHeld(writer.acked, "after rack3's host was cut off and reconnected")


class KubernetesDnsTests(MultiHostTests):
    """
    The same hosts as pods of three one-pod StatefulSets (one per rack),
    found as deploy/kubernetes finds them: SRV records of a headless
    service, stable pod names resolved through the cluster's DNS server.
    """

    def addressing(self) -> Addressing:
        return SrvAddressing(rack_size=1)

    def test_writes_and_reads_through_every_node(self) -> None:
        """Nodes know each other by pod name only; writes through any node reach every replica."""
        super().test_writes_and_reads_through_every_node()
        for n in self.fx.nodes:
            self.assertEqual(sorted(self.fx.info(n)["peers"]),
                             sorted(f"dynomite-{o.dc}-{o.rack}-0.dynomite.mh.svc.cluster.local:8101"
                                    for o in self.fx.nodes if o is not n))

    def test_restarted_pod_leaves_dns_and_keeps_its_place(self) -> None:
        """
        A pod restarted as Kubernetes does it: its records leave DNS while
        it is away.  Its peers refuse the shorter list (keeping it, DOWN,
        its writes hinted) rather than hand its tokens to nobody; back in
        DNS and started, it resumes, and every acknowledged write is on
        every replica.
        """
        fx = self.start_hosts("podrestart")
        addressing = fx.addressing
        assert isinstance(addressing, SrvAddressing)
        pod = fx.node("dc1-rack2-0")
        others = [o for o in fx.nodes if o is not pod]
        writer = self.pipelined_writer("pod")
        self.wait_progress(writer, pod, time.monotonic(), "before its restart")
        status = pod.node_process.stop(STOP_WITHIN)
        if status == -signal.SIGKILL:
            self.fail_with(f"{pod.name} did not exit on SIGTERM within {STOP_WITHIN:g} s")
        addressing.withdraw(pod)
        stopped_at = time.monotonic()
        # Several polls of the shorter list (gos_interval apart) go by: the pod stays a peer.
        time.sleep(3 * GOS_INTERVAL / 1000)
        for observer in others:
            self.assertEqual(fx.info(observer)["peers"].get(fx.peer_name(pod)), "DOWN", observer.name)
            self.assertIn("rack(s) dc1/rack2 gone from DNS", fx.log_text(observer))
            self.wait_progress(writer, observer, stopped_at, f"while {pod.name} was away")
        self.assertReady(others, (200, "NORMAL"), f"{pod.name} away")
        addressing.restore(pod)
        pod.node_process.start()
        seen = self.watch_readiness(pod)
        self.assertEqual(seen[0], (503, "RESUMING"), f"/ready of {pod.name} after its restart: {seen}")
        fx.wait_normal(NORMAL_WITHIN)
        self.assertReady(fx.nodes, (200, "NORMAL"), f"{pod.name} back")
        self.wait_progress(writer, pod, time.monotonic(), "after its restart")
        writer.finish()
        self.assertAllHeld(writer.acked, f"after {pod.name} left DNS and came back")


    def test_pod_with_a_new_address_is_reached_by_its_name(self) -> None:
        """
        A pod rescheduled elsewhere: stopped, back with a new address (DNS
        says so), its old address serving peers no more (nftables drops
        peer connections to it).  Its peers, which know it only by name,
        resolve the name again when they reconnect and reach it at the new
        address: UP, NORMAL, and writes reach it again.
        """
        fx = self.start_hosts("newip")
        addressing = fx.addressing
        assert isinstance(addressing, SrvAddressing)
        pod = fx.node("dc1-rack2-0")
        others = [o for o in fx.nodes if o is not pod]
        host = fx.host_of(pod)
        old, new = host.address, str(ipaddress.ip_address(host.address) + 100)
        self.assertIn(ipaddress.ip_address(new), fx.network.subnet)
        status = pod.node_process.stop(STOP_WITHIN)
        if status == -signal.SIGKILL:
            self.fail_with(f"{pod.name} did not exit on SIGTERM within {STOP_WITHIN:g} s")
        for observer in others:
            self.wait_peer_state(observer, pod, "DOWN", DOWN_WITHIN)
        host.run(["ip", "addr", "add", f"{new}/{fx.network.subnet.prefixlen}", "dev", "eth0"])
        # The old address is another pod's now, or nobody's: peers get no answer there.
        # (Its redis-server and admin port stay on it: the test reads them there.)
        host.run(["nft", "-f", "-"], stdin=f"""
        table inet {MOVED_TABLE} {{
            chain input {{
                type filter hook input priority 0; policy accept;
                iifname "eth0" ip daddr {old} tcp dport {pod.peer_address[1]} drop
            }}
        }}
        """)
        addressing.move(pod, new)
        pod.node_process.start()
        for observer in others:
            self.wait_peer_state(observer, pod, "UP", NORMAL_WITHIN)
        fx.wait_normal(NORMAL_WITHIN)
        for observer in others:
            remote = self.peer_addresses(observer, pod)
            self.assertIn(new, remote, f"{observer.name} reaches {pod.name} at {remote}, not at {new}")
            self.assertNotIn(old, remote, f"{observer.name} still connected to {pod.name}'s old address")
        data = {}
        for i, via in enumerate(fx.nodes * 20):
            data[f"moved:{i}"] = via.name
            self.assertIs(fx.client(via).set(f"moved:{i}", via.name), True)
        self.assertAllHeld(data, f"after {pod.name} moved to {new}")

    def peer_addresses(self, observer: ClusterNode, peer: ClusterNode) -> List[str]:
        """The addresses ``observer``'s established connections to ``peer``'s peer port go to."""
        out = self.fx.host_of(observer).run(["ss", "-Hnt", "state", "established",
                                             f"( dport = :{peer.peer_address[1]} )"])
        return [line.split()[-1].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()]


class NetworkTeardownTests(FaultTestCase):
    """Namespaces, links and rules are removed afterwards, also when starting fails."""

    def setUp(self) -> None:
        skip_unless_namespaces()

    def test_destroy_removes_namespaces_links_and_rules(self) -> None:
        net = Network(2)
        self.addCleanup(net.destroy)
        self.assertEqual(len(net.leftovers()), 4, "switch, two hosts and the test's link")
        net.cut(net.hosts[0])
        self.assertIn(CUT_TABLE, net.rules(net.hosts[0]))
        net.destroy()
        self.assertEqual(net.leftovers(), [])

    def test_failed_start_removes_everything_it_made(self) -> None:
        """A node that refuses its config: ClusterError, no namespace and no process left."""
        parent = os.path.abspath(self.mktemp())
        os.makedirs(parent)
        before = namespaces()
        layout = Layout("mh_bad", ONE_DC_THREE_RACKS, 0, 0, {**SETTINGS, "read_consistency": "DC_NONE"})
        with self.assertRaises(ClusterError):
            NetnsClusterFixture(layout, parent_dir=parent)
        self.assertEqual(namespaces() - before, set())
        self.assertEqual(_processes_under(parent), [])


def _processes_under(path: str) -> List[int]:
    """PIDs whose command line mentions ``path``."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids
