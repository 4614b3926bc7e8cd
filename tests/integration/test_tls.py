"""
TLS on real processes: a node's TLS client port with redis-cli and
redis-py, its datastore reached over TLS with an ACL user's AUTH, and a
cluster of two datacenters with ``secure_server_option: datacenter`` whose
cross-DC links run mutual TLS while same-DC links do not, and which a node
holding a certificate from another CA never joins.

Certificates come from tools/make-test-certs (the README's recipe) in the
test's own directory; the Makefile's test target installs openssl.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
from typing import Dict, List

import redis
import yaml
from twisted.trial.unittest import SynchronousTestCase

from dynomite.launcher import processes
from dynomite.runtime.reconnect import MAX_DELAY
from tests.integration.fixtures.cluster import SHORT_TIMEOUTS, ClusterFixture, Layout
from tests.integration.fixtures.common import OWN_CLUSTERS_SUBNET, address, poll, shared
from tests.integration.fixtures.processes import TWISTD, NodeProcess, RedisProcess, node_settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERTS = os.path.join(ROOT, "tools", "make-test-certs")
#: 127.7.<worker>.x blocks of this module (test_ha and test_pipelines use 1-71 and 201-221)
NODE_BLOCK, CLUSTER_BLOCK = 241, 231


def make_certs(directory: str, name: str, *hosts: str) -> Dict[str, str]:
    """``name``'s certificate for ``hosts`` signed by ``directory``'s CA (made on first use)."""
    subprocess.run([MAKE_CERTS, directory, name] + [f"IP:{h}" for h in hosts], check=True)
    return {"tls_cert_file": os.path.join(directory, f"{name}.crt"),
            "tls_key_file": os.path.join(directory, f"{name}.key"),
            "tls_ca_cert_file": os.path.join(directory, "ca.crt")}


def redis_cli(port: int, host: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["redis-cli", "-h", host, "-p", str(port), "--tls"] + list(args),
                          capture_output=True, text=True, timeout=15)


class _TLSNode:
    """A redis-server reachable over TLS with an ACL user, and a node with a TLS client port before it."""

    def __init__(self) -> None:
        self.host = address(OWN_CLUSTERS_SUBNET, NODE_BLOCK)
        self.tmpdir = tempfile.mkdtemp(prefix="tls-node-", dir=os.getcwd())
        self.certs = make_certs(os.path.join(self.tmpdir, "ca"), "node", self.host)
        self.rogue = make_certs(os.path.join(self.tmpdir, "other-ca"), "rogue", self.host)
        plain, self.redis_tls_port, self.tls_port = processes.free_ports(self.host, 3)
        self.node = None
        self.redis = RedisProcess(host=self.host, port=plain, tmpdir=os.path.join(self.tmpdir, "redis"), extra_args=[
            "--tls-port", str(self.redis_tls_port), "--tls-cert-file", self.certs["tls_cert_file"],
            "--tls-key-file", self.certs["tls_key_file"], "--tls-ca-cert-file", self.certs["tls_ca_cert_file"],
            "--user", "default", "off", "--user", "dyno", "on", ">datastore-secret", "~*", "&*", "+@all",
        ])
        self.redis.start()
        try:
            settings = node_settings(redis_address=(self.host, self.redis_tls_port), host=self.host,
                                     tls_listen=f"{self.host}:{self.tls_port}", tls_auth_clients="optional",
                                     datastore_tls=True, datastore_username="dyno",
                                     datastore_password="datastore-secret", **self.certs)
            self.node = NodeProcess(settings, os.path.join(self.tmpdir, "node")).start()
        except BaseException:
            self.stop()
            raise

    def backend(self) -> redis.Redis:
        """The redis-server on its plain port, as the node's ACL user."""
        return self.redis.client(username="dyno", password="datastore-secret")

    def healthy(self) -> bool:
        return self.redis.running() and self.node is not None and self.node.running()

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        self.redis.stop()


class TLSClientPortTests(SynchronousTestCase):
    """redis-cli ``--tls`` and redis-py ``ssl=True`` on ``tls_listen`` (``tls_auth_clients: optional``)."""

    def setUp(self) -> None:
        self.fx = shared.get("tls-node", _TLSNode)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return redis_cli(self.fx.tls_port, self.fx.host, "--cacert", self.fx.certs["tls_ca_cert_file"], *args)

    def test_redis_cli_with_a_client_certificate(self) -> None:
        certs = self.fx.certs
        key_args = ("--cert", certs["tls_cert_file"], "--key", certs["tls_key_file"])
        self.assertEqual(self.cli(*key_args, "SET", "tls:a", "1").stdout.strip(), "OK")
        self.assertEqual(self.cli(*key_args, "GET", "tls:a").stdout.strip(), "1")
        # the write went through the node to Redis, over TLS, as the ACL user
        self.assertEqual(self.fx.backend().get("tls:a"), b"1")

    def test_redis_cli_without_a_client_certificate(self) -> None:
        self.assertEqual(self.cli("SET", "tls:b", "2").stdout.strip(), "OK")
        self.assertEqual(self.cli("GET", "tls:b").stdout.strip(), "2")

    def test_a_client_certificate_from_another_ca_is_refused(self) -> None:
        rogue = self.fx.rogue
        done = self.cli("--cert", rogue["tls_cert_file"], "--key", rogue["tls_key_file"], "PING")
        self.assertNotIn("PONG", done.stdout)
        self.assertTrue(self.fx.node.running())

    def test_redis_py_ssl(self) -> None:
        client = redis.Redis(host=self.fx.host, port=self.fx.tls_port, ssl=True,
                             ssl_ca_certs=self.fx.certs["tls_ca_cert_file"], socket_timeout=5)
        self.addCleanup(client.close)
        self.assertTrue(client.set("tls:c", "3"))
        self.assertEqual(client.get("tls:c"), b"3")
        self.assertEqual(client.ping(), True)

    def test_a_plaintext_client_on_the_tls_port_is_closed_and_the_node_keeps_serving(self) -> None:
        conn = RawTLSProbe(self.fx.host, self.fx.tls_port)
        self.assertTrue(conn.closed_after(b"PING\r\n"))
        self.assertEqual(self.cli("PING").stdout.strip(), "PONG")


class TLSFloodTests(SynchronousTestCase):
    """Failed TLS handshakes count toward a flood (`dynomite.runtime.flood`): their address is refused."""

    def setUp(self) -> None:
        self.fx = shared.get("tls-node", _TLSNode)

    def test_an_address_failing_handshakes_is_refused_and_others_are_served(self) -> None:
        from dynomite.runtime.flood import FLOOD_ADDRESS_FRUITLESS, FLOOD_QUIET
        flooder = "127.0.3.1"
        for _ in range(FLOOD_ADDRESS_FRUITLESS + 5):
            with socket.create_connection((self.fx.host, self.fx.tls_port), timeout=5,
                                          source_address=(flooder, 0)) as s:
                s.sendall(b"PING\r\n")   # plaintext: the handshake fails
                try:
                    s.recv(100)
                except OSError:
                    pass

        def refused() -> bool:
            with socket.create_connection((self.fx.host, self.fx.tls_port), timeout=1,
                                          source_address=(flooder, 0)) as s:
                try:   # closed at accept, before any handshake; else the node waits for a ClientHello
                    return s.recv(100) == b""
                except ConnectionResetError:
                    return True
                except socket.timeout:
                    return False

        self.assertTrue(poll(refused, FLOOD_QUIET / 2), "the address failing handshakes is still served")
        self.assertEqual(self.cli_from_here("PING"), "PONG")

    def cli_from_here(self, *args: str) -> str:
        return redis_cli(self.fx.tls_port, self.fx.host, "--cacert", self.fx.certs["tls_ca_cert_file"],
                         *args).stdout.strip()


class RawTLSProbe:
    """A plain TCP client that says something and sees whether the server hangs up."""

    def __init__(self, host: str, port: int) -> None:
        import socket
        self.sock = socket.create_connection((host, port), timeout=5)

    def closed_after(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            while self.sock.recv(4096):
                pass
            return True
        except OSError:
            return True
        finally:
            self.sock.close()


def listening_ports(pid: int) -> List[int]:
    """The TCP ports process ``pid`` listens on (its socket inodes matched in /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:   # LISTEN
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


class TLSOnlyTests(SynchronousTestCase):
    """A node with ``tls_listen`` and no ``listen``: TLS clients only (client certificates required)."""

    def setUp(self) -> None:
        host = address(OWN_CLUSTERS_SUBNET, NODE_BLOCK + 1)
        tmp = tempfile.mkdtemp(prefix="tls-only-", dir=os.getcwd())
        self.certs = make_certs(os.path.join(tmp, "ca"), "node", host)
        self.redis = RedisProcess(host=host, tmpdir=os.path.join(tmp, "redis")).start()
        self.addCleanup(self.redis.stop)
        self.tls_port = processes.free_ports(host, 1)[0]
        settings = node_settings(self.redis, host=host, tls_listen=f"{host}:{self.tls_port}", **self.certs)
        del settings["listen"]
        self.node = NodeProcess(settings, os.path.join(tmp, "node"))
        self.node.start()   # ready once it answers PING over TLS (the fixture's probe)
        self.addCleanup(self.node.stop)
        self.host = host

    def test_tls_clients_only(self) -> None:
        certs = self.certs
        done = redis_cli(self.tls_port, self.host, "--cacert", certs["tls_ca_cert_file"],
                         "--cert", certs["tls_cert_file"], "--key", certs["tls_key_file"], "SET", "only:a", "1")
        self.assertEqual(done.stdout.strip(), "OK", done.stderr)
        client = redis.Redis(host=self.host, port=self.tls_port, ssl=True, socket_timeout=5,
                             ssl_ca_certs=certs["tls_ca_cert_file"], ssl_certfile=certs["tls_cert_file"],
                             ssl_keyfile=certs["tls_key_file"])
        self.addCleanup(client.close)
        self.assertEqual(client.get("only:a"), b"1")
        self.assertEqual(self.redis.client().get("only:a"), b"1")
        # nothing in clear: the node listens on its TLS, peer and admin ports and no other
        config = self.node.config
        expected = sorted([self.tls_port, self.node.dyn_address[1], self.node.stats_address[1]])
        self.assertEqual(listening_ports(self.node.pid), expected, config)
        self.assertTrue(RawTLSProbe(self.host, self.tls_port).closed_after(b"PING\r\n"))
        self.assertIn("no port in clear", self.node.log_text())


class TLSOnlyClusterTests(SynchronousTestCase):
    """``dynomite-cluster`` with ``clients: tls``: each node's client port is its tls_listen, probed over TLS."""

    def test_a_launched_cluster_serves_tls_clients_only(self) -> None:
        from dynomite.config.model import Address, NodeConfig
        from dynomite.launcher.cluster import Cluster

        tmp = tempfile.mkdtemp(prefix="tls-only-cluster-", dir=os.getcwd())
        hosts = [address(OWN_CLUSTERS_SUBNET, NODE_BLOCK + 2 + i) for i in range(2)]
        certs = make_certs(os.path.join(tmp, "ca"), "node", *hosts)
        topology = {"cluster": "tlsonly", "datacenters": {"dc1": {"rack1": 1, "rack2": 1}}, "clients": "tls",
                    "node": {**SHORT_TIMEOUTS, **certs, "tls_auth_clients": "optional"}}
        cluster = Cluster.from_topology(topology, os.path.join(tmp, "cluster"), base_address=hosts[0])
        self.addCleanup(cluster.stop)
        cluster.start(timeout=60)   # every node answered PING over TLS
        for n in cluster.nodes:
            config = NodeConfig.from_yaml(n.config_path)
            self.assertEqual((config.listen, config.tls_listen), (None, Address(*n.client_address)))
            self.assertEqual(listening_ports(n.node_process.pid),
                             sorted([n.client_address[1], n.peer_address[1], n.stats_address[1]]))
        self.assertIn(f"--tls --cacert {certs['tls_ca_cert_file']}", cluster.redis_cli_hint())
        first, second = (n.client_address for n in cluster.nodes)
        writer = redis.Redis(host=first[0], port=first[1], ssl=True, ssl_ca_certs=certs["tls_ca_cert_file"],
                             socket_timeout=5)
        self.addCleanup(writer.close)
        self.assertTrue(writer.set("only:cluster", "both racks"))
        # attached from its state file, the cluster still probes its nodes over TLS
        attached = Cluster.attach(cluster.workdir)
        self.assertTrue(all(p.is_ready() for p in attached.node_processes))
        reader = redis.Redis(host=second[0], port=second[1], ssl=True, ssl_ca_certs=certs["tls_ca_cert_file"],
                             socket_timeout=5)
        self.addCleanup(reader.close)
        self.assertTrue(poll(lambda: reader.get("only:cluster") == b"both racks", 10))


class BadCertificateTests(SynchronousTestCase):
    """A key that does not match its certificate stops the node at start, naming the key."""

    def test_key_not_matching_the_certificate(self) -> None:
        tmp = tempfile.mkdtemp(prefix="tls-bad-", dir=os.getcwd())
        good = make_certs(os.path.join(tmp, "ca"), "a", "127.0.0.1")
        other = make_certs(os.path.join(tmp, "ca"), "b", "127.0.0.1")
        path = os.path.join(tmp, "bad.yml")
        pool = {"listen": "127.0.0.1:0", "servers": ["127.0.0.1:6379:1"], "tokens": "0",
                "tls_cert_file": good["tls_cert_file"], "tls_key_file": other["tls_key_file"]}
        with open(path, "w") as f:
            yaml.safe_dump({"dyn_o_mite": pool}, f)
        done = subprocess.run([TWISTD, "-n", "--pidfile=", "dynomite", "-c", path],
                              capture_output=True, text=True, timeout=60, cwd=tmp)
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn(f"{path}: tls_key_file: the key in {other['tls_key_file']} does not match the certificate",
                      done.stderr)


TWO_DCS = {"dc1": {"rack1": 1, "rack2": 1}, "dc2": {"rack1": 1}}


class PeerTLSTests(SynchronousTestCase):
    """``secure_server_option: datacenter`` on a cluster of dc1 (two racks) and dc2 (one)."""

    def setUp(self) -> None:
        tmp = tempfile.mkdtemp(prefix="tls-cluster-", dir=os.getcwd())
        hosts = [address(OWN_CLUSTERS_SUBNET, CLUSTER_BLOCK + i) for i in range(3)]
        self.certs = make_certs(os.path.join(tmp, "ca"), "node", *hosts)
        self.rogue = make_certs(os.path.join(tmp, "other-ca"), "rogue", *hosts)
        settings = {**SHORT_TIMEOUTS, **self.certs, "secure_server_option": "datacenter",
                    "peer_secret": "inside-tls-too"}
        self.fx = ClusterFixture(Layout("tls", TWO_DCS, OWN_CLUSTERS_SUBNET, CLUSTER_BLOCK, settings),
                                 parent_dir=tmp)
        self.addCleanup(self.fx.stop)
        self.assertEqual(sorted(n.host for n in self.fx.nodes), sorted(hosts))
        self.fx.wait_normal(20)

    def tls_peers(self, node) -> List[str]:
        return self.fx.info(node)["peer"]["tls"]

    def test_datacenter_encrypts_cross_dc_links_only(self) -> None:
        fx = self.fx
        a, b, far = fx.rack_node("dc1", "rack1"), fx.rack_node("dc1", "rack2"), fx.rack_node("dc2", "rack1")
        name = fx.peer_name
        self.assertEqual(self.tls_peers(a), [name(far)])
        self.assertEqual(self.tls_peers(b), [name(far)])
        self.assertEqual(self.tls_peers(far), sorted([name(a), name(b)]))
        metrics = fx.metrics(a)
        self.assertRegex(metrics, rf'dynomite_peer_tls\{{[^}}]*peer="{re.escape(name(far))}"[^}}]*\}} 1\.0')
        self.assertRegex(metrics, rf'dynomite_peer_tls\{{[^}}]*peer="{re.escape(name(b))}"[^}}]*\}} 0\.0')
        # and the links carry writes: one written in dc1 reaches dc2's Redis
        fx.client(a).set("tls:x", "over the wire")
        self.assertTrue(poll(lambda: fx.backend(far).get("tls:x") == b"over the wire", 5 * fx.layout.timeout()))

    def test_a_node_with_a_certificate_from_another_ca_never_joins(self) -> None:
        fx = self.fx
        a, far = fx.rack_node("dc1", "rack1"), fx.rack_node("dc2", "rack1")
        far.node_process.stop()
        with open(far.config_path) as f:
            doc = yaml.safe_load(f)
        (pool,) = doc.values()
        pool.update(self.rogue)
        with open(far.config_path, "w") as f:
            yaml.safe_dump(doc, f)
        far.node_process.start()

        def refusals() -> int:
            return fx.info(a)["peer"]["tls_refusals"]["handshake"]

        # both directions fail their TLS handshakes, again and again (backoff at most MAX_DELAY)
        bound = 3 * (MAX_DELAY + fx.layout.peer_down_after())
        self.assertTrue(poll(lambda: refusals() >= 2, bound), fx.info(a)["peer"])
        self.assertNotEqual(fx.peer_state_seen_by(a, far), "UP")
        self.assertNotIn(fx.peer_name(far), self.tls_peers(a))
        self.assertNotEqual(fx.info(a)["peers"][fx.peer_name(far)], "UP")
        self.assertIn("TLS handshake failed", fx.log_text(far))
