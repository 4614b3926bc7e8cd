"""
Tests for TLS (dynomite.runtime.tls) and what uses it: the TLS keys of the
configuration, the peer listener deciding per connecting node whether TLS is
required, mutual TLS between nodes, and the datastore's greeting (AUTH).

Certificates are made by tools/make-test-certs (openssl) in a temporary
directory once per run; TLS runs in memory over iosim pumps, no sockets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any, Dict, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.model import ConfigError, NodeConfig
from dynomite.datastore.pool import _greetings
from dynomite.node.assembly import NodeParts
from dynomite.node.control import NodeControl
from dynomite.peers.listener import PeerServerFactory
from dynomite.peers.protocol import LocalNode, PeerProtocol
from dynomite.runtime import tls
from dynomite.stats import NodeMetrics
from tests.fakes import FakeDatastore, FakeMonitor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERTS = os.path.join(ROOT, "tools", "make-test-certs")

_certs: Dict[str, str] = {}


def certs() -> Dict[str, str]:
    """Paths of the test certificates: CA 'ca' signs a, b, c, liar; CA 'other' signs rogue."""
    if not _certs:
        if shutil.which("openssl") is None:
            raise RuntimeError("openssl is required (make test installs it)")
        base = tempfile.mkdtemp(prefix="dynomite-tls-test-")
        for ca, name, san in (("ca", "a", "IP:127.0.0.1"), ("ca", "b", "IP:127.0.0.2"),
                              ("ca", "c", "IP:127.0.0.3"), ("ca", "liar", "IP:127.0.0.9"),
                              ("other", "rogue", "IP:127.0.0.2")):
            subprocess.run([MAKE_CERTS, os.path.join(base, ca), name, san], check=True)
            _certs[name + ".crt"] = os.path.join(base, ca, name + ".crt")
            _certs[name + ".key"] = os.path.join(base, ca, name + ".key")
            _certs[ca + "-ca"] = os.path.join(base, ca, "ca.crt")
        _certs["dir"] = base
    return _certs


def config(host: str = "127.0.0.1", dc: str = "dc1", rack: str = "rack1", cert: Optional[str] = "a",
           ca: str = "ca", **overrides: Any) -> NodeConfig:
    """A node on ``host`` presenting certificate ``cert`` and trusting CA ``ca``."""
    c = certs()
    pool: Dict[str, Any] = {
        "listen": f"{host}:8102", "dyn_listen": f"{host}:8101", "stats_listen": f"{host}:22222",
        "servers": ["127.0.0.1:6379:1"], "tokens": "0", "datacenter": dc, "rack": rack,
        "secure_server_option": "datacenter", "tls_ca_cert_file": c[ca + "-ca"],
    }
    if cert is not None:
        pool.update(tls_cert_file=c[cert + ".crt"], tls_key_file=c[cert + ".key"])
    else:
        pool["secure_server_option"] = "none"
    pool.update(overrides)
    pool = {k: v for k, v in pool.items() if v is not None}   # None: leave the key out
    return NodeConfig.from_dict({"dyn_o_mite": pool}, source="test.yml")


def refused(key: str, **overrides: Any) -> str:
    """The error a node without a certificate but with ``overrides`` is refused with, for ``key``."""
    try:
        config(cert=None, **overrides)
    except ConfigError as e:
        if e.key != key:
            raise AssertionError(f"refused for {e.key}, not {key}: {e}")
        return str(e)
    raise AssertionError(f"{overrides} was accepted")


class ConfigKeyTests(SynchronousTestCase):
    """The TLS keys: defaults, Redis's spellings, and what they need besides themselves."""

    def test_defaults(self) -> None:
        c = NodeConfig.from_dict(
            {"dyn_o_mite": {"listen": "127.0.0.1:8102", "servers": ["127.0.0.1:6379:1"], "tokens": "0"}})
        self.assertEqual((c.tls_listen, c.tls_cert_file, c.tls_auth_clients, c.tls_protocols, c.datastore_tls),
                         (None, None, "no", ("TLSv1.2", "TLSv1.3"), False))

    def test_auth_clients_defaults_to_yes_with_a_ca(self) -> None:
        self.assertEqual(config().tls_auth_clients, "yes")
        self.assertEqual(config(tls_auth_clients="optional").tls_auth_clients, "optional")
        self.assertEqual(config(tls_auth_clients=False).tls_auth_clients, "no")   # unquoted YAML no

    def test_protocols(self) -> None:
        self.assertEqual(config(tls_protocols="tlsv1.3").tls_protocols, ("TLSv1.3",))
        self.assertIn("unknown TLS version 'TLSv1.1'", refused("tls_protocols", tls_protocols="TLSv1.1 TLSv1.2"))

    def test_what_needs_what(self) -> None:
        c = certs()
        self.assertIn("tls_key_file: required with tls_cert_file",
                      refused("tls_key_file", tls_cert_file=c["a.crt"]))
        self.assertIn("tls_cert_file: required by tls_listen", refused("tls_cert_file", tls_listen="127.0.0.1:8103"))
        self.assertIn("required by secure_server_option",
                      refused("tls_cert_file", secure_server_option="all"))
        self.assertIn("needs tls_ca_cert_file",
                      refused("tls_auth_clients", tls_ca_cert_file=None, tls_auth_clients="optional"))
        self.assertIn("required by datastore_tls",
                      refused("tls_ca_cert_file", tls_ca_cert_file=None, datastore_tls=True))
        self.assertIn("needs datastore_password", refused("datastore_username", datastore_username="dyno"))
        self.assertIn("already used by listen", refused("tls_listen", tls_listen="127.0.0.1:8102",
                                                        tls_cert_file=c["a.crt"], tls_key_file=c["a.key"]))


class TLSOnlyTests(SynchronousTestCase):
    """``tls_listen`` instead of ``listen``: TLS clients only, nothing in clear."""

    def test_tls_listen_stands_in_for_listen(self) -> None:
        c = config(listen=None, tls_listen="127.0.0.1:8103")
        self.assertEqual((c.listen, str(c.tls_listen), c.client_host), (None, "127.0.0.1:8103", "127.0.0.1"))

    def test_neither_is_refused_naming_both(self) -> None:
        e = self.assertRaises(ConfigError, config, listen=None)
        self.assertEqual(e.key, "listen")
        self.assertIn("required key is missing (or give tls_listen instead)", str(e))

    def test_a_lone_node_is_named_after_its_tls_host(self) -> None:
        from dynomite.placement.topology import Topology

        c = config(host="127.0.0.9", listen=None, tls_listen="127.0.0.9:8103", dyn_listen=None,
                   secure_server_option="none")
        self.assertEqual(Topology.from_config(c).local.name, "127.0.0.9:0")

    def test_the_service_listens_for_no_client_in_clear(self) -> None:
        from dynomite.service import NodeService

        c = config(listen=None, tls_listen="127.0.0.1:0", stats_listen="127.0.0.1:0", dyn_listen="127.0.0.1:0",
                   data_dir=self.mktemp())
        service = NodeService(c, Clock())
        self.assertIsNone(service.client_listener)
        self.assertIsNotNone(service.tls_client_listener)
        with_plain = NodeService(config(tls_listen="127.0.0.1:0", stats_listen="127.0.0.1:0",
                                        listen="127.0.0.1:0", dyn_listen="127.0.0.1:0",
                                        data_dir=self.mktemp()), Clock())
        self.assertIsNotNone(with_plain.client_listener)


class FileTests(SynchronousTestCase):
    """Reading the files: every problem names the key and the reason."""

    def problem(self, **overrides: Any) -> ConfigError:
        return self.assertRaises(ConfigError, tls.NodeTLS.from_config, config(**overrides))

    def test_good_files(self) -> None:
        node = tls.NodeTLS.from_config(config())
        self.assertTrue(node.enabled)
        self.assertIsNotNone(node.peer_server())
        self.assertIsNotNone(node.client_server().getContext())

    def test_unreadable_certificate(self) -> None:
        e = self.problem(tls_cert_file="/nonexistent/node.crt")
        self.assertEqual(e.key, "tls_cert_file")
        self.assertIn("cannot read /nonexistent/node.crt", str(e))

    def test_key_not_matching_the_certificate(self) -> None:
        e = self.problem(tls_key_file=certs()["b.key"])
        self.assertEqual(e.key, "tls_key_file")
        self.assertIn("does not match the certificate", str(e))

    def test_not_pem(self) -> None:
        c = certs()
        self.assertIn("holds no PEM certificate", str(self.problem(tls_cert_file=c["a.key"])))
        self.assertIn("holds no PEM private key", str(self.problem(tls_key_file=c["a.crt"])))
        e = self.problem(tls_ca_cert_file=c["a.key"])
        self.assertEqual(e.key, "tls_ca_cert_file")

    def test_unknown_ciphers(self) -> None:
        e = self.problem(tls_ciphers="NO-SUCH-CIPHER")
        self.assertEqual(e.key, "tls_ciphers")


class RuleTests(SynchronousTestCase):
    """Dynomite's secure_server_option, and certificate names."""

    def test_link_encrypted(self) -> None:
        cases = {  # (option, same rack, same dc other rack, other dc)
            "none": (False, False, False),
            "datacenter": (False, False, True),
            "rack": (False, True, True),
            "all": (True, True, True),
        }
        for option, expected in cases.items():
            got = (tls.link_encrypted(option, "dc1", "r1", "dc1", "r1"),
                   tls.link_encrypted(option, "dc1", "r1", "dc1", "r2"),
                   tls.link_encrypted(option, "dc1", "r1", "dc2", "r1"))
            self.assertEqual(got, expected, option)

    def test_certificate_mismatch(self) -> None:
        identity = tls.load_identity("t", certs()["a.crt"], certs()["a.key"])
        self.assertIsNone(tls.certificate_mismatch(identity.certificate, "127.0.0.1"))
        self.assertEqual(tls.certificate_mismatch(identity.certificate, "127.0.0.2"),
                         "its certificate does not name 127.0.0.2")
        self.assertEqual(tls.certificate_mismatch(identity.certificate, "node.example"),
                         "its certificate does not name node.example")
        self.assertEqual(tls.certificate_mismatch(None, "127.0.0.1"), "it presented no certificate")


class Owner:
    """Stands in for a PeerLink slot."""

    def __init__(self) -> None:
        self.ready = self.rejected = self.tls_error = None
        self.lost = False

    def protocol_connected(self, protocol) -> None:
        pass

    def protocol_ready(self, protocol) -> None:
        self.ready = protocol

    def protocol_rejected(self, protocol, reason) -> None:
        self.rejected = reason

    def protocol_lost(self, protocol) -> None:
        self.lost = True
        self.tls_error = protocol.tls_error


class _Dialer(Factory):
    def __init__(self, build) -> None:
        self.build = build

    def buildProtocol(self, addr):
        return self.build()


A = "127.0.0.1:8101"


class PeerListenerTests(SynchronousTestCase):
    """
    Node A (dc1/rack1, secure_server_option datacenter) accepts: TLS where a
    link crosses datacenters, plaintext within its datacenter, and refuses
    the rest with a reason, counted.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = NodeMetrics()
        server_config = config()
        self.listener = PeerServerFactory(server_config, None, None, lambda *a: True, self.clock,
                                          tls=tls.NodeTLS.from_config(server_config), metrics=self.metrics)

    def dial(self, client_config: NodeConfig, use_tls: bool):
        owner = Owner()
        local = LocalNode(client_config)

        def peer() -> PeerProtocol:
            return PeerProtocol(local, self.clock, owner, expected=A, timeout=1.0)

        if use_tls:
            creator = tls.NodeTLS.from_config(client_config).peer_client("127.0.0.1")
            client = lambda: TLSMemoryBIOFactory(creator, True, _Dialer(peer), clock=self.clock).buildProtocol(None)  # noqa: E731
        else:
            client = peer
        server_side, client_side, pump = iosim.connectedServerAndClient(
            lambda: self.listener.buildProtocol(IPv4Address("TCP", "127.0.0.2", 40000)), client,
            clock=self.clock)
        pump.flush()
        return owner

    def test_cross_dc_link_over_tls(self) -> None:
        owner = self.dial(config("127.0.0.2", dc="dc2", cert="b"), use_tls=True)
        self.assertIsNotNone(owner.ready, owner.rejected)
        self.assertTrue(owner.ready.tls)
        (accepted,) = self.listener.connections
        self.assertTrue(accepted.tls)
        self.assertEqual(accepted.peer_name, "127.0.0.2:8101")

    def test_same_dc_link_in_clear(self) -> None:
        owner = self.dial(config("127.0.0.3", rack="rack2", cert="c"), use_tls=False)
        self.assertIsNotNone(owner.ready, owner.rejected)
        self.assertFalse(owner.ready.tls)
        self.assertEqual(sum(self.metrics.peer_tls_refusals.values()), 0)

    def test_plaintext_where_tls_is_required_is_refused_and_counted(self) -> None:
        owner = self.dial(config("127.0.0.2", dc="dc2", cert="b"), use_tls=False)
        self.assertIsNone(owner.ready)
        self.assertIn("plaintext refused: secure_server_option datacenter needs TLS between dc1/rack1 and dc2/rack1",
                      owner.rejected)
        self.assertEqual(self.metrics.peer_tls_refusals["plaintext"], 1)

    def test_certificate_from_another_ca_never_joins(self) -> None:
        owner = self.dial(config("127.0.0.2", dc="dc2", cert="rogue", ca="other"), use_tls=True)
        self.assertIsNone(owner.ready)
        self.assertTrue(owner.lost)
        self.assertIn("certificate verify failed", owner.tls_error)
        self.assertEqual(self.metrics.peer_tls_refusals["handshake"], 1)
        self.assertEqual(self.listener.connections, set())

    def test_listener_refuses_a_certificate_from_another_ca(self) -> None:
        # the connecting node trusts the cluster CA but presents a certificate from another
        owner = self.dial(config("127.0.0.2", dc="dc2", cert="rogue", ca="ca"), use_tls=True)
        self.assertIsNone(owner.ready)
        self.assertEqual(self.metrics.peer_tls_refusals["handshake"], 1)
        self.assertEqual(self.listener.connections, set())

    def test_certificate_naming_another_host_is_refused(self) -> None:
        owner = self.dial(config("127.0.0.2", dc="dc2", cert="liar"), use_tls=True)
        self.assertIsNone(owner.ready)
        self.assertIn("TLS refused: its certificate does not name 127.0.0.2", owner.rejected)
        self.assertEqual(self.metrics.peer_tls_refusals["certificate_name"], 1)

    def test_silent_connection_is_dropped(self) -> None:
        protocol = self.listener.buildProtocol(IPv4Address("TCP", "127.0.0.2", 40000))
        transport = iosim.FakeTransport(protocol, isServer=True)
        protocol.makeConnection(transport)
        self.clock.advance(config().peer_down_after)
        self.assertTrue(transport.disconnecting)


class DialTests(SynchronousTestCase):
    """The connecting side verifies the listener's certificate and name too."""

    def test_server_certificate_must_name_the_host_dialled(self) -> None:
        clock = Clock()
        liar_config = config("127.0.0.9", cert="liar")
        listener = PeerServerFactory(liar_config, None, None, lambda *a: True, clock,
                                     tls=tls.NodeTLS.from_config(liar_config))
        owner = Owner()
        client_config = config("127.0.0.2", dc="dc2", cert="b")
        creator = tls.NodeTLS.from_config(client_config).peer_client("127.0.0.1")   # dialled 127.0.0.1
        local = LocalNode(client_config)
        dialer = _Dialer(lambda: PeerProtocol(local, clock, owner, expected=A, timeout=1.0))
        _, client, pump = iosim.connectedServerAndClient(
            lambda: listener.buildProtocol(IPv4Address("TCP", "127.0.0.2", 40000)),
            lambda: TLSMemoryBIOFactory(creator, True, dialer, clock=clock).buildProtocol(None), clock=clock)
        pump.flush()
        self.assertIsNone(owner.ready)
        self.assertTrue(owner.lost)
        self.assertEqual(owner.tls_error, "its certificate does not name the host dialled")


class ReloadTests(SynchronousTestCase):
    """SIGHUP re-reads the certificates; a bad file refuses the reload."""

    def test_reload_reads_new_certificates(self) -> None:
        c = certs()
        directory = tempfile.mkdtemp(prefix="dynomite-tls-reload-")
        self.addCleanup(shutil.rmtree, directory, True)
        cert, key = os.path.join(directory, "node.crt"), os.path.join(directory, "node.key")
        shutil.copy(c["a.crt"], cert)
        shutil.copy(c["a.key"], key)
        path = os.path.join(directory, "node.yml")
        with open(path, "w") as f:
            f.write("dyn_o_mite:\n  listen: 127.0.0.1:8102\n  servers: ['127.0.0.1:6379:1']\n  tokens: '0'\n"
                    f"  tls_listen: 127.0.0.1:8103\n  tls_cert_file: {cert}\n  tls_key_file: {key}\n"
                    f"  data_dir: {directory}/data\n")
        parts = NodeParts(NodeConfig.from_yaml(path), Clock(), FakeDatastore(), FakeMonitor())
        control = NodeControl(parts, is_running=lambda: False)
        before = parts.tls.client_server()
        shutil.copy(c["c.crt"], cert)
        shutil.copy(c["c.key"], key)
        self.assertTrue(control.reload())
        after = parts.tls.client_server()
        self.assertIsNot(after, before)
        self.assertEqual(parts.tls.identity.certificate.subject.rfc4514_string(), "CN=c")
        shutil.copy(c["b.key"], key)   # no longer matches c.crt
        self.assertFalse(control.reload())
        self.assertIs(parts.tls.client_server(), after)
        self.assertEqual(parts.metrics.reloads["failure"], 1)


class GreetingTests(SynchronousTestCase):
    """What a datastore connection says before any request."""

    def test_without_password(self) -> None:
        self.assertEqual(_greetings(None, None), {2: None, 3: b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"})

    def test_password(self) -> None:
        g = _greetings(None, "pw")
        self.assertEqual(g[2], b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n")
        self.assertEqual(g[3], b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$2\r\npw\r\n")

    def test_user_and_password(self) -> None:
        g = _greetings("dyno", "pw")
        self.assertEqual(g[2], b"*3\r\n$4\r\nAUTH\r\n$4\r\ndyno\r\n$2\r\npw\r\n")
        self.assertIn(b"$4\r\ndyno\r\n$2\r\npw\r\n", g[3])
