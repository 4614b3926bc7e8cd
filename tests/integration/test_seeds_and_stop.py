"""
Real node processes finding each other through DNS seeds, and a graceful
stop (SIGTERM) under load.

- Three nodes bound to 0.0.0.0 (each naming itself by ``dyn_advertise``)
  start with no static seeds, ``dyn_seed_provider: dns_provider`` and a
  DNS server this test starts (twisted.names, an ephemeral UDP port on
  127.7.<worker>.80): publishing the TXT and A records makes them peers
  within a few ``gos_interval``; writes reach every rack; a node removed
  from DNS is dropped.
- ``florida_provider`` reads Dynomite's seed list from an HTTP server
  (twisted.web) the test starts; nodes polling one (an HTTP server on a
  thread of the test) link up with the peers it lists and drop the one it
  stops listing.
- IPv6: three nodes bound to ``[::]`` reach each other over ``::1``; one
  names itself by ``dyn_advertise``, the others by their own entry in a
  shared ``dyn_seeds`` list.
- A writer goes through rack 1's node while rack 2's node gets SIGTERM:
  the node exits by itself, its peers show it DOWN as soon as it is gone
  (within one membership tick, not ``peer_down_after``) and say it told
  them it was leaving, /ready follows its state, and after a restart every
  acknowledged write is on every replica.
- SIGTERM while a client of that node is blocked, with a pipeline queued
  behind: new connections are refused at once, the blocked command and
  every request queued behind it are answered, then the connection is
  closed; the writes are on every replica.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import threading
import time
from typing import Dict, List, Tuple

import yaml
from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from dynomite.config.model import NodeConfig
from dynomite.launcher.cluster import Cluster, ClusterNode
from dynomite.launcher.host import port_busy
from tests.integration.fixtures import readiness
from dynomite.peers.seeds import SeedError, make_source
from tests.integration.fixtures.cases import FaultTestCase
from tests.integration.fixtures.common import OWN_CLUSTERS_SUBNET, address, poll
from tests.integration.fixtures.dns_server import DnsServer
from tests.integration.fixtures.resp import ConnectionClosed, RawConnection, decode_reply, encode_command
from tests.integration.fixtures.writer import merged

ONE_DC = {"dc1": {"rack1": 1, "rack2": 1, "rack3": 1}}
#: ms between seed polls in these tests
GOS_INTERVAL = 200
#: how often a node's membership is ticked (dynomite.service)
MEMBERSHIP_TICK = 0.5


def wildcard_ports(count: int) -> List[int]:
    """
    ``count`` ports free on 0.0.0.0, below the kernel's ephemeral range.

    A listener on 0.0.0.0:P conflicts with one on any address's P. The
    other trial worker's nodes and Redis servers take ephemeral ports on
    their own 127.x addresses, so a wildcard node must stay out of that
    range or it can collide with them.
    """
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    chosen: List[int] = []
    while len(chosen) < count:
        port = random.randrange(max(1024, low - 12000), low)
        if port not in chosen and port_busy("0.0.0.0", port) is None:
            chosen.append(port)
    return chosen


def ipv6_ports(count: int) -> List[int]:
    """``count`` of `wildcard_ports` also free on ``::`` (a dual-stack listener takes both)."""
    chosen: List[int] = []
    while len(chosen) < count:
        for port in wildcard_ports(count):
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("::", port))
                except OSError:
                    continue
            if port not in chosen and len(chosen) < count:
                chosen.append(port)
    return chosen


def no_ipv6_loopback() -> str:
    """Why ``::1`` cannot be listened on here ("" if it can)."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        return f"no IPv6 loopback on this machine (bind ::1: {e.strerror or e})"
    return ""


def tcp6_listeners() -> List[Tuple[str, int]]:
    """(address in /proc/net/tcp6's hex, port) of every IPv6 TCP listener of this network namespace."""
    out = []
    with open("/proc/net/tcp6") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":   # LISTEN
                host, port = fields[1].split(":")
                out.append((host, int(port, 16)))
    return out


def ready(node: ClusterNode) -> Tuple[int, str]:
    """(status, body) of ``node``'s /ready; (0, "no answer") if it does not answer."""
    return readiness.ready(node) or (0, "no answer")


class DnsSeedTests(FaultTestCase):
    def records(self, nodes: List[ClusterNode]):
        txt = [f"host={n.peer_address[0]} port={n.peer_address[1]} rack={n.rack} dc={n.dc}"
               f" tokens={','.join(map(str, n.tokens))}" for n in nodes]
        return {"dynomite.test": {"TXT": txt, "A": [n.peer_address[0] for n in nodes]}}

    def test_nodes_join_and_leave_through_dns_records(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        dns = DnsServer(address(OWN_CLUSTERS_SUBNET, 80), directory)
        self.addCleanup(dns.stop)
        write_configs = Cluster.write_configs

        def wildcard_without_seeds(cluster: Cluster) -> List[str]:
            """The launcher's files, each node bound to 0.0.0.0, named by dyn_advertise, with no static seeds."""
            ports = wildcard_ports(len(cluster.nodes))
            cluster.nodes[:] = [dataclasses.replace(n, peer_address=(n.peer_address[0], port))
                                for n, port in zip(cluster.nodes, ports)]
            paths = write_configs(cluster)
            for n in cluster.nodes:
                with open(n.config_path) as f:
                    doc = yaml.safe_load(f)
                pool = doc[cluster.name]
                pool["dyn_advertise"] = pool["dyn_listen"]
                pool["dyn_listen"] = f"0.0.0.0:{n.peer_address[1]}"
                pool["dyn_seeds"] = []
                with open(n.config_path, "w") as f:
                    yaml.safe_dump(doc, f)
            return paths

        self.patch(Cluster, "write_configs", wildcard_without_seeds)
        fx = self.start_cluster("dns-seeds", ONE_DC, 81, {
            "dyn_seed_provider": "dns_provider", "dns_seed_name": "dynomite.test",
            "dns_seed_server": dns.address, "gos_interval": GOS_INTERVAL})
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        self.assertEqual(fx.info(r1)["peers"], {}, "the nodes knew each other before DNS said anything")
        bound = 10 * GOS_INTERVAL / 1000 + fx.layout.peer_down_after()

        # two nodes published, plus a third whose A record is missing (not ready): it stays out
        records = self.records([r1, r2, r3])
        records["dynomite.test"]["A"].remove(r3.peer_address[0])
        dns.publish(records)
        self.assertTrue(poll(lambda: fx.peer_state_seen_by(r1, r2) == "UP"
                             and fx.peer_state_seen_by(r2, r1) == "UP", bound),
                        f"rack 1 and 2 did not link up through DNS: {fx.try_info(r1)}")
        self.assertNotIn(fx.peer_name(r3), fx.info(r1)["peers"])

        dns.publish(self.records([r1, r2, r3]))
        try:
            fx.wait_normal(bound)
        except AssertionError as e:
            self.fail_with(f"the third node did not join through DNS: {e}")
        # a write is replicated to the replicas its key's leader knows: wait
        # until every node has polled DNS and knows every other one
        nodes = [r1, r2, r3]
        if not poll(lambda: all(fx.peer_state_seen_by(a, b) == "UP" for a in nodes for b in nodes
                                if a is not b), bound):
            self.fail_with("the nodes do not all see each other UP after joining through DNS", nodes)
        fx.client(r1).set("joined", "yes")
        self.assertHolding([r1, r2, r3], {"joined": "yes"}, 5, "a write after joining through DNS")

        dns.publish(self.records([r1, r2]))
        self.assertTrue(poll(lambda: fx.peer_name(r3) not in (fx.try_info(r1) or {"peers": {}})["peers"], bound),
                        "rack 3's node stayed a peer after it left DNS")
        self.assertIn("seed list applied", fx.log_text(r1))


class SeedListServer:
    """Dynomite's florida seed list (``GET /REST/v1/admin/get_seeds``) served from ``body``, on a thread."""

    PATH = "/REST/v1/admin/get_seeds"

    def __init__(self, host: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = server.body.encode() if self.path == server.PATH else b""
                self.send_response(200 if self.path == server.PATH else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.body = ""
        self.http = ThreadingHTTPServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.http.server_address[:2]
        return f"http://{host}:{port}{self.PATH}"

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(10)


class FloridaSeedTests(FaultTestCase):
    def test_nodes_join_and_leave_through_the_florida_seed_list(self) -> None:
        florida = SeedListServer(address(OWN_CLUSTERS_SUBNET, 80))
        self.addCleanup(florida.stop)
        write_configs = Cluster.write_configs

        def without_seeds(cluster: Cluster) -> List[str]:
            paths = write_configs(cluster)
            for n in cluster.nodes:
                with open(n.config_path) as f:
                    doc = yaml.safe_load(f)
                doc[cluster.name]["dyn_seeds"] = []
                with open(n.config_path, "w") as f:
                    yaml.safe_dump(doc, f)
            return paths

        self.patch(Cluster, "write_configs", without_seeds)
        fx = self.start_cluster("florida", ONE_DC, 221, {
            "dyn_seed_provider": "florida_provider", "florida_url": florida.url,
            "gos_interval": GOS_INTERVAL})
        r1, r2, r3 = nodes = [fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3)]
        self.assertEqual(fx.info(r1)["peers"], {}, "the nodes knew each other before the seed list said anything")
        bound = 10 * GOS_INTERVAL / 1000 + fx.layout.peer_down_after()

        florida.body = f"{r1.seed}|{r2.seed}"
        if not poll(lambda: fx.peer_state_seen_by(r1, r2) == "UP" and fx.peer_state_seen_by(r2, r1) == "UP", bound):
            self.fail_with("rack 1 and 2 did not link up through the florida seed list", nodes)
        self.assertNotIn(fx.peer_name(r3), fx.info(r1)["peers"])

        florida.body = "|".join(n.seed for n in nodes)
        if not poll(lambda: all(fx.peer_state_seen_by(a, b) == "UP" for a in nodes for b in nodes if a is not b),
                    bound):
            self.fail_with("the nodes do not all see each other UP through the florida seed list", nodes)
        fx.client(r3).set("florida", "joined")
        self.assertHolding(nodes, {"florida": "joined"}, 5, "a write after joining through florida")

        florida.body = f"{r1.seed}|{r2.seed}"
        self.assertTrue(poll(lambda: fx.peer_name(r3) not in (fx.try_info(r1) or {"peers": {}})["peers"], bound),
                        "rack 3's node stayed a peer after it left the seed list")
        self.assertIn("seed list applied", fx.log_text(r1))


class Ipv6Tests(FaultTestCase):
    """Nodes on the IPv6 wildcard, reached by their peers over ::1."""

    def setUp(self) -> None:
        # a machine (or container) with IPv6 switched off has no ::1 to bind:
        # nothing of this test can run there, and the reason says what is missing
        reason = no_ipv6_loopback()
        if reason:
            raise SkipTest(reason)

    def test_nodes_on_the_ipv6_wildcard_reach_each_other_over_ipv6(self) -> None:
        """
        Every node's dyn_listen is ``[::]:P``.  Rack 1's node names itself
        by ``dyn_advertise: [::1]:P`` and lists only the others; racks 2 and
        3 have no dyn_advertise and are named by their own entry of the
        seed list they share.  All link up over ::1, each names the others
        ``[::1]:P``, and writes through any node reach every rack.
        """
        write_configs = Cluster.write_configs
        names: Dict[str, str] = {}

        def on_ipv6(cluster: Cluster) -> List[str]:
            ports = ipv6_ports(len(cluster.nodes))
            paths = write_configs(cluster)
            seeds = {n.name: f"[::1]:{port}:{n.rack}:{n.dc}:{','.join(map(str, n.tokens))}"
                     for n, port in zip(cluster.nodes, ports)}
            for i, (n, port) in enumerate(zip(cluster.nodes, ports)):
                names[n.name] = f"[::1]:{port}"
                with open(n.config_path) as f:
                    doc = yaml.safe_load(f)
                pool = doc[cluster.name]
                pool["dyn_listen"] = f"[::]:{port}"
                if i == 0:
                    pool["dyn_advertise"] = names[n.name]
                    pool["dyn_seeds"] = [seeds[o.name] for o in cluster.nodes if o is not n]
                else:
                    pool["dyn_seeds"] = list(seeds.values())
                with open(n.config_path, "w") as f:
                    yaml.safe_dump(doc, f)
            return paths

        self.patch(Cluster, "write_configs", on_ipv6)
        fx = self.start_cluster("ipv6", ONE_DC, 191)
        nodes = [fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3)]
        listening = tcp6_listeners()
        for n in nodes:
            self.assertEqual(fx.info(n)["name"], names[n.name])
            self.assertEqual(fx.info(n)["peers"], {names[o.name]: "UP" for o in nodes if o is not n},
                             f"peers of {n.name}")
            port = int(names[n.name].rsplit(":", 1)[1])
            self.assertIn(("0" * 32, port), listening, f"{n.name} does not listen on [::]:{port}")
        data = {}
        for i in range(30):
            via = nodes[i % 3]
            self.assertIs(fx.client(via).set(f"v6:{i}", f"via {via.name}"), True)
            data[f"v6:{i}"] = f"via {via.name}"
        self.assertHolding(nodes, data, 5, "writes between nodes linked over IPv6")


class GracefulStopTests(FaultTestCase):
    def test_sigterm_under_load_loses_no_acknowledged_write(self) -> None:
        fx = self.start_cluster("graceful", ONE_DC, 91, {"hints_fsync": "everysec"})
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        for n in (r1, r2, r3):
            self.assertEqual(ready(n), (200, "NORMAL"))
        writers = [self.writer(r1, f"gs{i}", seed=i) for i in range(3)]
        for w in writers:
            w.start()
        self.wait_acked(writers, 300)

        stopped_at = time.monotonic()
        r2.node_process.terminate()
        exited = r2.node_process.wait(fx.layout.timeout() * 2 + fx.layout.peer_down_after() + 5)
        exited_at = time.monotonic()
        self.assertTrue(exited, f"{r2.name} did not exit after SIGTERM")
        # twistd ends a clean SIGTERM stop by re-raising the signal: -15 is a clean exit here
        self.assertIn(r2.node_process.returncode, (0, -15), fx.log_text(r2)[-2000:])
        down = poll(lambda: fx.peer_state_seen_by(r1, r2) == "DOWN" and fx.peer_state_seen_by(r3, r2) == "DOWN",
                    MEMBERSHIP_TICK)
        down_at = time.monotonic()
        self.assertTrue(down, f"peers did not show {r2.name} DOWN within {MEMBERSHIP_TICK}s of its exit")
        self.assertLess(down_at - stopped_at, fx.layout.peer_down_after() + fx.layout.timeout(),
                        "peers took peer_down_after to notice a graceful stop")
        log = fx.log_text(r2)
        self.assertIn("leaving: clients drained, hints flushed", log)
        self.assertToldLeaving(fx, r2, [r1, r3])
        self.wait_acked(writers, sum(len(w.acked) for w in writers) + 200)   # writes go on without it

        r2.node_process.spawn()
        self.wait_node_ready(r2)
        # it stays RESUMING while its peers hold hints for it: writers that
        # never pause keep adding some, so they stop here
        for w in writers:
            w.halt()
        states = set()

        def became_ready() -> bool:
            state = ready(r2)   # asked once a look: asked twice, it may change in between
            states.add(state)
            return state == (200, "NORMAL")

        poll(became_ready, 20, 0.02)
        self.assertIn((200, "NORMAL"), states, f"{r2.name} never became ready: {states}")
        for w in writers:
            w.finish()
        acked = merged(writers)
        self.assertNoClientErrors(writers, f"while {r2.name} stopped gracefully and restarted")
        self.assertGreater(sum(1 for w in writers for t, _ in w.ack_times if stopped_at < t < exited_at + 1), 0,
                           "no write was acknowledged around the stop: nothing was tested")
        self.assertHolding([r1, r2, r3], acked, 30, f"{len(acked)} writes around {r2.name}'s SIGTERM")


    def assertToldLeaving(self, fx, leaving: ClusterNode, peers: List[ClusterNode]) -> None:
        """
        Each of ``peers`` heard ``leaving`` say so (a heartbeat, before its
        connections closed) and marked it DOWN then, not after peer_down_after.
        """
        for peer in peers:
            self.assertIn(f"peer {fx.peer_name(leaving)} is leaving: DOWN now", fx.log_text(peer),
                          f"{peer.name} was not told that {leaving.name} was leaving")

    def test_sigterm_answers_what_clients_sent_and_refuses_new_ones(self) -> None:
        fx = self.start_cluster("inflight", ONE_DC, 211)
        r1, r2, r3 = (fx.rack_node("dc1", f"rack{i}") for i in (1, 2, 3))
        timeout = fx.layout.timeout()
        block = timeout / 2   # answered within the time a graceful stop gives clients
        queued = {f"inflight:{i}": f"v{i}" for i in range(50)}
        conn = RawConnection(*r2.client_address, timeout=timeout * 2 + fx.layout.peer_down_after() + 5)
        self.addCleanup(conn.close)
        conn.send(encode_command("BLPOP", "inflight:empty", f"{block:.2f}")
                  + b"".join(encode_command("SET", k, v) for k, v in queued.items()))
        time.sleep(block / 4)   # the node has read the pipeline; BLPOP waits, the SETs behind it
        sent_term = time.monotonic()
        r2.node_process.terminate()
        refused = poll(lambda: port_refuses(r2.client_address), block / 2, 0.01)
        refused_at = time.monotonic()
        self.assertTrue(refused, f"{r2.name} still accepted clients {block / 2:.2f}s after SIGTERM")
        replies = []
        try:
            for _ in range(1 + len(queued)):
                replies.append(decode_reply(conn.read_reply()))
        except ConnectionClosed as e:
            self.fail(f"connection closed after {len(replies)} replies {replies[:3]} at"
                      f" +{time.monotonic() - sent_term:.2f}s from SIGTERM: {e}")
        answered_at = time.monotonic()
        self.assertLess(refused_at, answered_at, "new clients refused only after the blocked one was answered")
        self.assertEqual(replies, [None] + [b"OK"] * len(queued),
                         "the blocked command and the pipeline queued behind it at SIGTERM")
        self.assertGreater(answered_at - sent_term, block / 2, "the blocked command was cut short")
        self.assertTrue(conn.closed_by_peer(timeout * 2 + fx.layout.peer_down_after()),
                        "the connection stayed open after its replies")
        self.assertTrue(r2.node_process.wait(timeout * 2 + fx.layout.peer_down_after() + 5))
        self.assertToldLeaving(fx, r2, [r1, r3])
        self.assertHolding([r1, r2, r3], queued, 5, "writes answered during a graceful stop")


def port_refuses(address: Tuple[str, int]) -> bool:
    """Whether a TCP connection to ``address`` is refused."""
    try:
        socket.create_connection(address, timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


class FloridaTests(TestCase):
    """florida_provider against a real HTTP server (twisted.web) the test starts on an ephemeral port."""

    def setUp(self):
        from twisted.internet import reactor
        from twisted.web.resource import Resource
        from twisted.web.server import Site
        from twisted.web.static import Data

        self.reactor = reactor
        self.body = Data(b"", "application/json")
        root = Resource()
        rest = Resource()
        v1 = Resource()
        admin = Resource()
        root.putChild(b"REST", rest)
        rest.putChild(b"v1", v1)
        v1.putChild(b"admin", admin)
        admin.putChild(b"get_seeds", self.body)
        site = Site(root)
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def source(self, **keys):
        pool = {"listen": "127.0.0.1:1", "dyn_listen": "127.0.0.1:2", "servers": ["127.0.0.1:3"], "tokens": 0,
                "dyn_seed_provider": "florida_provider", "timeout": 2000}
        pool.update(keys)
        return make_source(NodeConfig.from_dict({"dyn_o_mite": pool}), self.reactor)

    @defer.inlineCallbacks
    def test_dynomite_florida_reply(self):
        self.body.data = b"127.0.0.5:8101:rack1:dc1:0|127.0.0.6:8101:rack2:dc1:0,7"
        url = f"http://127.0.0.1:{self.port.getHost().port}/REST/v1/admin/get_seeds"
        seeds = yield self.source(florida_url=url).fetch()
        self.assertEqual([(str(s.address), s.rack, s.tokens) for s in seeds],
                         [("127.0.0.5:8101", "rack1", (0,)), ("127.0.0.6:8101", "rack2", (0, 7))])

    @defer.inlineCallbacks
    def test_missing_path_is_an_error(self):
        url = f"http://127.0.0.1:{self.port.getHost().port}/nothing"
        with self.assertRaises(SeedError):
            yield self.source(florida_url=url).fetch()
