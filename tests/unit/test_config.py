"""
Tests for dynomite.config: Dynomite YAML in, frozen NodeConfig or a
one-line ConfigError (file, key, reason) out.
"""

from __future__ import annotations

import copy
import glob
import os

import yaml
import re
from dataclasses import FrozenInstanceError
from typing import Any, Dict

from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.model import (
    CONSISTENCY_LEVELS,
    DYNOMITE_KEYS,
    PROJECT_KEYS,
    UNUSED_KEYS,
    Address,
    ConfigError,
    NodeConfig,
    Seed,
)
from dynomite.config.keys import CLASS_DEFAULT, KEYS
from dynomite.config.yamlio import Invalid, load_yaml, show, unknown_key

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "etc")

_DELETE = object()

BASE: Dict[str, Any] = {
    "listen": "127.0.0.1:8102",
    "dyn_listen": "127.0.0.1:8101",
    "servers": ["127.0.0.1:6379:1"],
    "tokens": "0",
    "datacenter": "dc1",
    "rack": "rack1",
}


def pool(**changes: Any) -> Dict[str, Any]:
    """A valid document with some keys changed (or removed with _DELETE)."""
    settings = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is _DELETE:
            settings.pop(key, None)
        else:
            settings[key] = value
    return {"dyn_o_mite": settings}


def load(**changes: Any) -> NodeConfig:
    return NodeConfig.from_dict(pool(**changes), source="test.yml")


class ConfigErrorTests(SynchronousTestCase):
    """The error type itself."""

    def test_str_is_source_key_reason(self) -> None:
        e = ConfigError("a.yml", "listen", "expected host:port")
        self.assertEqual(str(e), "a.yml: listen: expected host:port")
        self.assertEqual((e.source, e.key, e.reason), ("a.yml", "listen", "expected host:port"))

    def test_str_is_one_line(self) -> None:
        """A reason with line breaks (say, from a library) is flattened."""
        e = ConfigError("a.yml", "<file>", "first\nsecond\r\nthird")
        self.assertEqual(str(e), "a.yml: <file>: first second third")


class ExampleFileTests(SynchronousTestCase):
    """The files shipped in etc/ load and say what they promise."""

    def test_every_example_loads(self) -> None:
        paths = sorted(glob.glob(os.path.join(ETC, "*.yml")))
        names = {os.path.basename(p) for p in paths}
        self.assertTrue({"single.yml", "dynomite.yml", "redis-auth.yml"} <= names, names)
        for path in paths:
            with open(path) as f:
                if "datacenters" in yaml.safe_load(f):
                    continue  # a dynomite-cluster topology, tested with the launcher
            config = NodeConfig.from_yaml(path)
            self.assertEqual(config.source, path)

    def test_single(self) -> None:
        c = NodeConfig.from_yaml(os.path.join(ETC, "single.yml"))
        self.assertEqual(c.pool_name, "dyn_o_mite")
        self.assertEqual(c.listen, Address("127.0.0.1", 8102))
        self.assertEqual(c.dyn_listen, Address("127.0.0.1", 8101))
        self.assertEqual(c.stats_listen, Address("127.0.0.1", 22222))
        self.assertEqual(c.datastore, Address("127.0.0.1", 6379))
        self.assertEqual(c.tokens, (0,))
        self.assertEqual((c.datacenter, c.rack), ("dc1", "rack1"))
        self.assertEqual((c.read_consistency, c.write_consistency), ("DC_ONE", "DC_ONE"))
        self.assertEqual(c.timeout, 5.0)
        self.assertEqual(c.dyn_seeds, ())
        self.assertIsNone(c.requirepass)
        self.assertEqual(c.unused_keys, ())

    def test_dns_seeds(self) -> None:
        c = NodeConfig.from_yaml(os.path.join(ETC, "dns-seeds.yml"))
        self.assertEqual((c.seed_provider, c.dns_seed_name, c.gos_interval),
                         ("dns_provider", "dynomite.example.internal", 10.0))
        self.assertEqual(str(c.peer_address()), "10.0.1.5:8101")
        self.assertEqual(c.unused_keys, ())

    def test_redis_auth(self) -> None:
        c = NodeConfig.from_yaml(os.path.join(ETC, "redis-auth.yml"))
        self.assertEqual(c.requirepass, "s3cret-change-me")
        self.assertEqual(c.listen, Address("127.0.0.1", 8102))

    def _reference(self) -> str:
        with open(os.path.join(ETC, "dynomite.yml")) as f:
            return f.read()

    def test_reference_mentions_every_key(self) -> None:
        text = self._reference()
        for key in sorted(DYNOMITE_KEYS | PROJECT_KEYS):
            self.assertRegex(text, rf"(?m)^\s*(#\s*)?{key}:", key)

    def test_reference_uncommented_loads(self) -> None:
        """
        Uncommenting every commented-out key of the reference still gives a
        valid file, which then reports exactly the unused keys.
        """
        keys = "|".join(sorted(DYNOMITE_KEYS | PROJECT_KEYS))
        text = re.sub(rf"(?m)^(\s*)#\s?((?:{keys}):)", r"\1\2", self._reference())
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        c = NodeConfig.from_yaml(path)
        self.assertEqual(set(c.unused_keys), set(UNUSED_KEYS))
        self.assertEqual(c.requirepass, "change-me")


class KeySetTests(SynchronousTestCase):
    def test_documented_keys(self) -> None:
        self.assertEqual(len(DYNOMITE_KEYS), 42)
        self.assertTrue(UNUSED_KEYS < DYNOMITE_KEYS)
        self.assertFalse(PROJECT_KEYS & DYNOMITE_KEYS)

    def test_every_documented_key_accepted(self) -> None:
        """Each of Dynomite's keys, at Dynomite's default, is accepted."""
        dynomite_defaults = {
            "hash": "murmur", "hash_tag": "{}", "distribution": "vnode",
            "timeout": 5000, "backlog": 512, "client_connections": 0,
            "data_store": 0, "preconnect": True, "auto_eject_hosts": True,
            "server_connections": 1, "server_retry_timeout": 10000,
            "server_failure_limit": 3, "dyn_read_timeout": 10000,
            "dyn_write_timeout": 10000, "dyn_seed_provider": "simple_provider",
            "dyn_seeds": [], "dyn_port": 8101, "dyn_connections": 100,
            "gos_interval": 30000, "secure_server_option": "none",
            "pem_key_file": "conf/dynomite.pem",
            "recon_key_file": "conf/recon_key.pem",
            "recon_iv_file": "conf/recon_iv.pem", "env": "aws",
            "conn_msg_rate": 50000, "read_consistency": "DC_ONE",
            "write_consistency": "DC_ONE", "stats_listen": "0.0.0.0:22222",
            "stats_interval": 30000, "enable_gossip": False,
            "mbuf_size": 16384, "max_msgs": 200000,
            "datastore_connections": 1, "local_peer_connections": 1,
            "remote_peer_connections": 1, "read_repairs_enabled": False,
        }
        self.assertEqual(set(dynomite_defaults) | set(BASE), set(DYNOMITE_KEYS))
        c = load(**dynomite_defaults)
        self.assertEqual(set(c.unused_keys), set(UNUSED_KEYS))
        self.assertEqual(c.stats_listen, Address("0.0.0.0", 22222))
        self.assertEqual(c.datastore_connections, 1)


class DefaultsTests(SynchronousTestCase):
    def test_minimal(self) -> None:
        c = NodeConfig.from_dict(
            {"pool": {"listen": "0.0.0.0:8102", "servers": ["127.0.0.1:6379"], "tokens": 7}}
        )
        self.assertEqual(c.source, "<dict>")
        self.assertEqual(c.pool_name, "pool")
        self.assertIsNone(c.dyn_listen)
        self.assertEqual(c.stats_listen, Address("127.0.0.1", 22222))
        self.assertEqual(c.datastore, Address("127.0.0.1", 6379))
        self.assertEqual(c.tokens, (7,))
        self.assertEqual((c.datacenter, c.rack), ("localdc", "localrack"))
        self.assertEqual(c.dyn_seeds, ())
        self.assertIsNone(c.hash_tag)
        self.assertEqual((c.read_consistency, c.write_consistency), ("DC_ONE", "DC_ONE"))
        self.assertEqual(c.timeout, 5.0)
        self.assertEqual(c.server_retry_timeout, 10.0)
        self.assertEqual(c.server_failure_limit, 3)
        self.assertIs(c.auto_eject_hosts, True)
        self.assertEqual(c.datastore_connections, 2)
        self.assertEqual((c.local_peer_connections, c.remote_peer_connections), (1, 1))
        self.assertEqual(c.secure_server_option, "none")
        self.assertEqual(c.backlog, 512)
        self.assertIsNone(c.requirepass)
        self.assertEqual(c.max_request_bytes, 64 * 1024 * 1024)
        self.assertEqual(c.client_max_outstanding_bytes, 8 * 1024 * 1024)
        self.assertEqual(c.unused_keys, ())

    def test_frozen(self) -> None:
        c = load()
        self.assertRaises(FrozenInstanceError, setattr, c, "timeout", 1.0)
        self.assertRaises(FrozenInstanceError, setattr, c.listen, "port", 1)

    def test_password_not_in_repr(self) -> None:
        c = load(requirepass="hunter2")
        self.assertEqual(c.requirepass, "hunter2")
        self.assertNotIn("hunter2", repr(c))


class PeerKeyTests(SynchronousTestCase):
    """The peer protocol's keys: secret, heartbeat interval, down-after."""

    def test_defaults(self) -> None:
        c = load()
        self.assertIsNone(c.peer_secret)
        self.assertEqual((c.peer_heartbeat_interval, c.peer_down_after), (1.0, 3.0))

    def test_values_in_seconds_and_secret_kept_out_of_repr(self) -> None:
        c = load(peer_secret="n0t-on-the-wire", peer_heartbeat_interval=250, peer_down_after="900")
        self.assertEqual(c.peer_secret, "n0t-on-the-wire")
        self.assertEqual((c.peer_heartbeat_interval, c.peer_down_after), (0.25, 0.9))
        self.assertNotIn("n0t-on-the-wire", repr(c))


class HintKeyTests(SynchronousTestCase):
    """The hinted-handoff keys: where hints live, how durable, how bounded."""

    def test_defaults(self) -> None:
        c = load()
        self.assertEqual((c.data_dir, c.hints_fsync), ("data", "everysec"))
        self.assertEqual((c.hint_window, c.resume_timeout), (10800.0, 60.0))
        self.assertEqual((c.hints_max_bytes, c.hint_segment_bytes), (1024 ** 3, 64 * 1024 ** 2))
        self.assertEqual(c.hint_replay_rate, 5000)

    def test_values(self) -> None:
        c = load(data_dir="/var/lib/dynomite", hints_fsync=" Always ", hint_window=2000,
                 hints_max_bytes=0, hint_replay_rate="0", hint_segment_bytes=4096,
                 resume_timeout=0)
        self.assertEqual((c.data_dir, c.hints_fsync), ("/var/lib/dynomite", "always"))
        self.assertEqual((c.hint_window, c.resume_timeout), (2.0, 0.0))
        self.assertEqual((c.hints_max_bytes, c.hint_replay_rate, c.hint_segment_bytes),
                         (0, 0, 4096))
        self.assertEqual(load(hints_fsync="no").hints_fsync, "no")


class ValueTests(SynchronousTestCase):
    """Accepted forms and the values they become."""

    def test_consistency_any_case(self) -> None:
        c = load(read_consistency="dc_quorum", write_consistency=" Dc_Each_Safe_Quorum ")
        self.assertEqual(c.read_consistency, "DC_QUORUM")
        self.assertEqual(c.write_consistency, "DC_EACH_SAFE_QUORUM")
        for level in CONSISTENCY_LEVELS:
            self.assertEqual(load(read_consistency=level.lower()).read_consistency, level)

    def test_tokens_forms(self) -> None:
        self.assertEqual(load(tokens=0).tokens, (0,))
        self.assertEqual(load(tokens="4294967295").tokens, (4294967295,))
        self.assertEqual(load(tokens="1,2,3").tokens, (1, 2, 3))
        self.assertEqual(load(tokens=" 30 , 10 ").tokens, (30, 10))

    def test_seed_one_token(self) -> None:
        c = load(dyn_seeds=["127.0.0.2:8101:rack2:dc1:1383429731"])
        self.assertEqual(
            c.dyn_seeds,
            (Seed(Address("127.0.0.2", 8101), "rack2", "dc1", (1383429731,)),),
        )

    def test_seed_several_tokens(self) -> None:
        c = load(dyn_seeds=["h2:8101:rack2:dc1:1,2,3", "[::1]:8201:r3:dc2:0"])
        self.assertEqual(c.dyn_seeds[0].tokens, (1, 2, 3))
        self.assertEqual(c.dyn_seeds[0].address, Address("h2", 8101))
        self.assertEqual(c.dyn_seeds[1], Seed(Address("::1", 8201), "r3", "dc2", (0,)))

    def test_empty_seed_list(self) -> None:
        """``dyn_seeds:`` with nothing under it is an empty list."""
        self.assertEqual(load(dyn_seeds=None).dyn_seeds, ())

    def test_durations_in_seconds(self) -> None:
        c = load(timeout=250, server_retry_timeout="0")
        self.assertEqual(c.timeout, 0.25)
        self.assertEqual(c.server_retry_timeout, 0.0)

    def test_numbers_as_strings(self) -> None:
        """Dynomite reads every scalar as text, so "512" is a number there."""
        self.assertEqual(load(backlog="1024").backlog, 1024)

    def test_hash(self) -> None:
        load(hash="murmur")
        load(hash="murmur3")
        load(hash="MURMUR3")

    def test_hash_tag(self) -> None:
        self.assertEqual(load(hash_tag="{}").hash_tag, b"{}")
        self.assertIsNone(load(hash_tag="").hash_tag)
        self.assertIsNone(load(hash_tag=None).hash_tag)

    def test_servers_without_weight(self) -> None:
        self.assertEqual(load(servers=["[::1]:6380"]).datastore, Address("::1", 6380))

    def test_ephemeral_listen_port(self) -> None:
        c = load(listen="127.0.0.1:0", dyn_listen="127.0.0.1:0", stats_listen="127.0.0.1:0")
        self.assertEqual(c.listen.port, 0)

    def test_secure_server_option(self) -> None:
        files = {"tls_cert_file": "n.crt", "tls_key_file": "n.key", "tls_ca_cert_file": "ca.crt"}
        self.assertEqual(load(secure_server_option="Datacenter", **files).secure_server_option, "datacenter")

    def test_rack_as_number(self) -> None:
        self.assertEqual(load(rack=1).rack, "1")

    def test_unused_keys_reported_in_file_order(self) -> None:
        c = load(stats_interval=1000, mbuf_size=16384, preconnect=True, hash="murmur")
        self.assertEqual(c.unused_keys, ("stats_interval", "mbuf_size", "preconnect"))

    def test_enable_gossip_is_used(self) -> None:
        self.assertFalse(load().enable_gossip)
        c = load(enable_gossip=True)
        self.assertTrue(c.enable_gossip)
        self.assertEqual(c.unused_keys, ())
        with self.assertRaises(ConfigError) as e:
            load(enable_gossip="maybe")
        self.assertEqual(e.exception.key, "enable_gossip")

    def test_address(self) -> None:
        self.assertEqual(str(Address("10.0.0.1", 8102)), "10.0.0.1:8102")
        self.assertEqual(str(Address("::1", 8102)), "[::1]:8102")
        self.assertEqual(Address.parse("[fe80::1]:80"), Address("fe80::1", 80))
        self.assertRaises(ValueError, Address.parse, "nohost")


# (name, changes to BASE, expected key, fragment of the reason)
BAD_VALUES = [
    ("listen_no_port", {"listen": "localhost"}, "listen", "expected host:port, got 'localhost'"),
    ("listen_port_range", {"listen": "127.0.0.1:65536"}, "listen", "out of range 0..65535"),
    ("listen_port_text", {"listen": "127.0.0.1:http"}, "listen", "port 'http' is not a number"),
    ("listen_bare_ipv6", {"listen": "::1:8102"}, "listen", "in brackets"),
    ("listen_bad_ipv6", {"listen": "[localhost]:8102"}, "listen", "not an IPv6 address"),
    ("listen_int", {"listen": 8102}, "listen", "expected host:port, got 8102"),
    ("listen_empty_host", {"listen": ":8102"}, "listen", "bad host"),
    ("dyn_listen_no_port", {"dyn_listen": "127.0.0.1"}, "dyn_listen", "expected host:port"),
    ("stats_listen_negative", {"stats_listen": "0.0.0.0:-1"}, "stats_listen", "not a number"),
    ("servers_string", {"servers": "127.0.0.1:6379:1"}, "servers", "expected a list with exactly one"),
    ("servers_two", {"servers": ["a:1:1", "b:2:1"]}, "servers", "got 2 entries"),
    ("servers_none", {"servers": []}, "servers", "got 0 entries"),
    ("servers_port_zero", {"servers": ["127.0.0.1:0:1"]}, "servers", "out of range 1..65535"),
    ("servers_weight", {"servers": ["127.0.0.1:6379:heavy"]}, "servers", "weight 'heavy'"),
    ("tokens_duplicate", {"tokens": "1,1"}, "tokens", "token 1 is listed twice"),
    ("tokens_too_big", {"tokens": "4294967296"}, "tokens", "out of range 0..4294967295"),
    ("tokens_negative", {"tokens": -1}, "tokens", "out of range"),
    ("tokens_text", {"tokens": "abc"}, "tokens", "token 'abc' is not an integer"),
    ("tokens_empty_piece", {"tokens": "1,,2"}, "tokens", "empty token"),
    ("tokens_list", {"tokens": [1, 2]}, "tokens", "expected a token"),
    ("tokens_bool", {"tokens": True}, "tokens", "expected a token"),
    ("seed_short", {"dyn_seeds": ["127.0.0.2:8101:rack2:dc1"]}, "dyn_seeds",
     "entry 1: expected host:port:rack:dc:tokens"),
    ("seed_token", {"dyn_seeds": ["127.0.0.2:8101:rack2:dc1:x"]}, "dyn_seeds",
     "entry 1: token 'x' is not an integer"),
    ("seed_second", {"dyn_seeds": ["h:1:r:d:0", "h:2:r:d"]}, "dyn_seeds", "entry 2:"),
    ("seed_port_zero", {"dyn_seeds": ["h:0:r:d:0"]}, "dyn_seeds", "out of range 1..65535"),
    ("seed_empty_rack", {"dyn_seeds": ["h:1::d:0"]}, "dyn_seeds", "must not be empty"),
    ("seeds_string", {"dyn_seeds": "h:1:r:d:0"}, "dyn_seeds", "expected a list"),
    ("hash_tag_one", {"hash_tag": "{"}, "hash_tag", "exactly 2"),
    ("hash_tag_unquoted", {"hash_tag": {}}, "hash_tag", "quote them"),
    ("hash_tag_unicode", {"hash_tag": "\u00ab\u00bb"}, "hash_tag", "ASCII"),
    ("read_consistency", {"read_consistency": "DC_ALL"}, "read_consistency",
     "expected one of DC_ONE, DC_QUORUM, DC_SAFE_QUORUM, DC_EACH_SAFE_QUORUM, got 'DC_ALL'"),
    ("write_consistency", {"write_consistency": 1}, "write_consistency", "expected one of DC_ONE"),
    ("timeout_zero", {"timeout": 0}, "timeout", "positive number of milliseconds"),
    ("timeout_negative", {"timeout": -5}, "timeout", "positive"),
    ("timeout_float", {"timeout": 1.5}, "timeout", "expected an integer, got 1.5"),
    ("retry_negative", {"server_retry_timeout": -1}, "server_retry_timeout", "non-negative"),
    ("failure_limit", {"server_failure_limit": 0}, "server_failure_limit", "at least 1"),
    ("eject_quoted", {"auto_eject_hosts": "true"}, "auto_eject_hosts",
     "expected true or false (unquoted)"),
    ("eject_int", {"auto_eject_hosts": 1}, "auto_eject_hosts", "expected true or false"),
    ("datastore_connections", {"datastore_connections": 0}, "datastore_connections", "at least 1"),
    ("local_peer_connections", {"local_peer_connections": "two"}, "local_peer_connections",
     "expected an integer, got 'two'"),
    ("remote_peer_connections", {"remote_peer_connections": 0}, "remote_peer_connections",
     "at least 1"),
    ("secure_option", {"secure_server_option": "tls"}, "secure_server_option",
     "expected one of none, rack, datacenter, all"),
    ("backlog_bool", {"backlog": True}, "backlog", "expected an integer, got true"),
    ("hash_other", {"hash": "fnv1a_64"}, "hash", "only murmur3 placement is supported"),
    ("data_store_memcached", {"data_store": 1}, "data_store", "memcached is not supported"),
    ("data_store_other", {"data_store": 2}, "data_store", "expected 0 (redis)"),
    ("provider_other", {"dyn_seed_provider": "magic"}, "dyn_seed_provider",
     "expected one of simple_provider, dns_provider, florida_provider"),
    ("provider_needs_dyn_listen", {"dyn_listen": _DELETE, "dyn_seed_provider": "dns_provider"},
     "dyn_listen", "required with dyn_seed_provider dns_provider"),
    ("advertise_wildcard", {"dyn_advertise": "0.0.0.0:8101"}, "dyn_advertise", "is a wildcard"),
    ("advertise_no_port", {"dyn_advertise": "node1"}, "dyn_advertise", "expected host:port"),
    ("advertise_bare_v6", {"dyn_advertise": "fd00::1:8101"}, "dyn_advertise", "in brackets"),
    ("wildcard_unnamed", {"dyn_listen": "0.0.0.0:8101", "dyn_seeds": ["10.0.0.2:8101:rack2:dc1:0"]},
     "dyn_advertise", "set dyn_advertise to the host:port peers reach this node by"),
    ("dns_seed_server_bad", {"dns_seed_server": "10.0.0.2"}, "dns_seed_server", "expected host:port"),
    ("dns_seed_name_space", {"dns_seed_name": "a b"}, "dns_seed_name", "expected a DNS name"),
    ("florida_url_scheme", {"florida_url": "ftp://x/seeds"}, "florida_url", "http://"),
    ("rack_colon", {"rack": "a:b"}, "rack", "must not contain ':'"),
    ("datacenter_empty", {"datacenter": ""}, "datacenter", "must not be empty"),
    ("datacenter_list", {"datacenter": ["dc1"]}, "datacenter", "expected a name, got a list"),
    ("requirepass_number", {"requirepass": 1234}, "requirepass", "expected a quoted string"),
    ("requirepass_empty", {"requirepass": ""}, "requirepass", "must not be empty"),
    ("max_request_bytes", {"max_request_bytes": 0}, "max_request_bytes", "at least 1"),
    ("peer_secret_number", {"peer_secret": 1234}, "peer_secret", "expected a quoted string"),
    ("peer_secret_empty", {"peer_secret": ""}, "peer_secret", "must not be empty"),
    ("admin_token_number", {"admin_token": 42}, "admin_token", "expected a quoted string"),
    ("log_level_range", {"log_level": 12}, "log_level", "0..11"),
    ("peer_heartbeat_zero", {"peer_heartbeat_interval": 0}, "peer_heartbeat_interval",
     "expected a positive number of milliseconds"),
    ("peer_down_after_short", {"peer_heartbeat_interval": 2000, "peer_down_after": 2000},
     "peer_down_after", "must be longer than peer_heartbeat_interval (2000 ms), got 2000 ms"),
    ("hints_fsync_other", {"hints_fsync": "sometimes"}, "hints_fsync",
     "expected one of always, everysec, no, got 'sometimes'"),
    ("hints_fsync_bool", {"hints_fsync": False}, "hints_fsync", "expected one of always"),
    ("datacenter_conflicts_other", {"datacenter_conflicts": "newest"}, "datacenter_conflicts",
     "expected one of arrival, last_writer_wins, got 'newest'"),
    ("hint_window_zero", {"hint_window": 0}, "hint_window",
     "expected a positive number of milliseconds"),
    ("hints_max_bytes_negative", {"hints_max_bytes": -1}, "hints_max_bytes", "at least 0"),
    ("hint_replay_rate_text", {"hint_replay_rate": "fast"}, "hint_replay_rate",
     "expected an integer"),
    ("hint_segment_bytes_small", {"hint_segment_bytes": 100}, "hint_segment_bytes",
     "at least 4096"),
    ("data_dir_empty", {"data_dir": ""}, "data_dir", "non-empty string"),
    ("resume_timeout_negative", {"resume_timeout": -1}, "resume_timeout", "non-negative"),
    ("outstanding_bytes", {"client_max_outstanding_bytes": "lots"},
     "client_max_outstanding_bytes", "expected an integer"),
    ("mbuf_not_multiple", {"mbuf_size": 1000}, "mbuf_size", "multiple of 16"),
    ("mbuf_too_small", {"mbuf_size": 256}, "mbuf_size", "512..512000"),
    ("preconnect_yes_quoted", {"preconnect": "yes"}, "preconnect", "expected true or false"),
    ("gossip_empty", {"enable_gossip": None}, "enable_gossip", "got an empty value"),
    ("gos_interval", {"gos_interval": 0}, "gos_interval", "positive"),
    ("pem_key_file", {"pem_key_file": ""}, "pem_key_file", "non-empty string"),
    ("dyn_connections", {"dyn_connections": 0}, "dyn_connections", "at least 1"),
    ("max_msgs", {"max_msgs": "x"}, "max_msgs", "expected an integer"),
    ("distribution", {"distribution": 5}, "distribution", "non-empty string"),
    ("read_repairs", {"read_repairs_enabled": "false"}, "read_repairs_enabled",
     "expected true or false"),
    ("unknown_close", {"listne": "x"}, "listne", "unknown key; did you mean 'listen'?"),
    ("unknown_close_2", {"read_consitency": "DC_ONE"}, "read_consitency",
     "did you mean 'read_consistency'?"),
    ("missing_listen", {"listen": _DELETE}, "listen", "required key is missing"),
    ("missing_servers", {"servers": _DELETE}, "servers", "required key is missing"),
    ("missing_tokens", {"tokens": _DELETE}, "tokens", "required key is missing"),
    ("seeds_need_dyn_listen", {"dyn_listen": _DELETE, "dyn_seeds": ["h:1:r:d:0"]},
     "dyn_listen", "required when dyn_seeds lists peers"),
    ("seed_twice", {"dyn_seeds": ["h:1:r2:d:0", "h:1:r3:d:0"]}, "dyn_seeds",
     "seed h:1 is listed twice"),
    ("seed_token_clash", {"dyn_seeds": ["a:1:r2:d:5", "b:1:r2:d:1,5"]}, "dyn_seeds",
     "seeds a:1 and b:1 both own token 5 in d/r2"),
    ("stats_on_listen", {"stats_listen": "127.0.0.1:8102"}, "stats_listen",
     "127.0.0.1:8102 is already used by listen"),
]


class AddressTests(SynchronousTestCase):
    """The name a node gives its peers (`NodeConfig.peer_address`), and IPv6 seeds."""

    def test_dyn_listen_by_default(self) -> None:
        self.assertEqual(str(load().peer_address()), "127.0.0.1:8101")

    def test_advertise_wins(self) -> None:
        config = load(dyn_listen="0.0.0.0:8101", dyn_advertise="node-a.example:8101")
        self.assertEqual(str(config.peer_address()), "node-a.example:8101")

    def test_wildcard_takes_its_seed_entry(self) -> None:
        """A wildcard dyn_listen is named by the shared seed list's entry with its dc, rack and tokens."""
        config = load(dyn_listen="0.0.0.0:8101", tokens="7,9", dyn_seeds=[
            "10.0.0.2:8101:rack2:dc1:7", "10.0.0.1:8101:rack1:dc1:9,7", "10.0.0.3:8101:rack1:dc1:5"])
        self.assertEqual(str(config.peer_address()), "10.0.0.1:8101")

    def test_ipv6_wildcard_and_bracket_seeds(self) -> None:
        config = load(dyn_listen="[::]:8101", dyn_seeds=["[fd00::1]:8101:rack1:dc1:0", "[fd00::2]:8101:rack2:dc1:0"])
        self.assertEqual(config.peer_address().host, "fd00::1")
        self.assertEqual(str(config.peer_address()), "[fd00::1]:8101")
        self.assertEqual(str(config.dyn_seeds[1].address), "[fd00::2]:8101")

    def test_provider_keys(self) -> None:
        config = load(dyn_seed_provider="dns_provider", dns_seed_name="dynomite.test.",
                      dns_seed_server="127.0.0.9:5353", gos_interval=250)
        self.assertEqual((config.seed_provider, config.dns_seed_name, str(config.dns_seed_server),
                          config.gos_interval), ("dns_provider", "dynomite.test", "127.0.0.9:5353", 0.25))


class BadValueTests(SynchronousTestCase):
    """
    Each bad value raises a ConfigError naming the key, with a reason a user
    can act on, printed on one line that starts with the file. One generated
    test per case in BAD_VALUES.
    """

    def check(self, changes: Dict[str, Any], key: str, fragment: str) -> None:
        e = self.assertRaises(ConfigError, load, **changes)
        self.assertEqual(e.source, "test.yml")
        self.assertEqual(e.key, key)
        self.assertIn(fragment, e.reason)
        text = str(e)
        self.assertTrue(text.startswith(f"test.yml: {key}: "), text)
        self.assertNotIn("\n", text)

    def test_unknown_far_has_no_suggestion(self) -> None:
        e = self.assertRaises(ConfigError, load, frobnicate=1)
        self.assertEqual((e.key, e.reason), ("frobnicate", "unknown key"))


def _make_case(changes: Dict[str, Any], key: str, fragment: str):
    def test(self: BadValueTests) -> None:
        self.check(changes, key, fragment)

    test.__doc__ = f"{key}: {fragment}"
    return test


for _name, _changes, _key, _fragment in BAD_VALUES:
    setattr(BadValueTests, f"test_{_name}", _make_case(_changes, _key, _fragment))
assert len({case[0] for case in BAD_VALUES}) == len(BAD_VALUES)


class RootTests(SynchronousTestCase):
    """The document must be one pool name mapping to settings."""

    def check(self, data: Any, key: str, fragment: str) -> None:
        e = self.assertRaises(ConfigError, NodeConfig.from_dict, data, "x.yml")
        self.assertEqual(e.key, key)
        self.assertIn(fragment, e.reason)
        self.assertTrue(str(e).startswith("x.yml: "))

    def test_empty(self) -> None:
        self.check(None, "<root>", "empty document")

    def test_not_mapping(self) -> None:
        self.check(["listen"], "<root>", "expected a mapping with one pool key")

    def test_two_pools(self) -> None:
        data = {"a": dict(BASE), "b": dict(BASE)}
        self.check(data, "<root>", "expected exactly one pool key such as 'dyn_o_mite', got 2")

    def test_settings_at_top_level(self) -> None:
        """A file that forgot the pool key has many root keys."""
        self.check(dict(BASE), "<root>", "settings such as 'listen' belong under the pool key")

    def test_pool_not_mapping(self) -> None:
        self.check({"dyn_o_mite": "listen"}, "dyn_o_mite", "expected a mapping of settings")

    def test_empty_pool(self) -> None:
        self.check({"dyn_o_mite": None}, "listen", "required key is missing")

    def test_any_pool_name(self) -> None:
        c = NodeConfig.from_dict({"cache_east": dict(BASE)})
        self.assertEqual(c.pool_name, "cache_east")


class FileTests(SynchronousTestCase):
    """from_yaml: file problems are reported against the "<file>" key."""

    def write(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_loads(self) -> None:
        path = self.write(
            b"dyn_o_mite:\n"
            b"  listen: 127.0.0.1:8102\n"
            b"  servers:\n  - 127.0.0.1:6379:1\n"
            b"  tokens: '101134286'\n"
            b"  read_consistency: dc_safe_quorum\n"
        )
        c = NodeConfig.from_yaml(path)
        self.assertEqual(c.source, path)
        self.assertEqual(c.tokens, (101134286,))
        self.assertEqual(c.read_consistency, "DC_SAFE_QUORUM")

    def test_missing(self) -> None:
        path = self.mktemp()
        e = self.assertRaises(ConfigError, NodeConfig.from_yaml, path)
        self.assertEqual((e.source, e.key), (path, "<file>"))
        self.assertIn("No such file", e.reason)
        self.assertEqual(str(e), f"{path}: <file>: {e.reason}")

    def test_directory(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        e = self.assertRaises(ConfigError, NodeConfig.from_yaml, path)
        self.assertEqual(e.key, "<file>")
        self.assertIn("cannot read", e.reason)

    def test_bad_yaml(self) -> None:
        path = self.write(b"dyn_o_mite:\n  listen: [127.0.0.1:8102\n  tokens: '0'\n")
        e = self.assertRaises(ConfigError, NodeConfig.from_yaml, path)
        self.assertEqual(e.key, "<file>")
        self.assertIn("invalid YAML", e.reason)
        self.assertIn("line ", e.reason)
        self.assertNotIn("\n", str(e))
        self.assertTrue(str(e).startswith(path + ": <file>: "))

    def test_bad_indentation(self) -> None:
        path = self.write(b"dyn_o_mite:\n  listen: 127.0.0.1:8102\n tokens: '0'\n")
        e = self.assertRaises(ConfigError, NodeConfig.from_yaml, path)
        self.assertEqual(e.key, "<file>")
        self.assertIn("invalid YAML", e.reason)

    def test_not_utf8(self) -> None:
        path = self.write(b"dyn_o_mite:\n  rack: \xff\n")
        e = self.assertRaises(ConfigError, NodeConfig.from_yaml, path)
        self.assertEqual(e.key, "<file>")
        self.assertIn("UTF-8", e.reason)

    def test_empty_file(self) -> None:
        e = self.assertRaises(ConfigError, NodeConfig.from_yaml, self.write(b"# nothing\n"))
        self.assertEqual(e.key, "<root>")

    def test_duplicate_key(self) -> None:
        """YAML would keep the last one silently; a node must not."""
        path = self.write(
            b"dyn_o_mite:\n"
            b"  listen: 127.0.0.1:8102\n"
            b"  servers: ['127.0.0.1:6379:1']\n"
            b"  tokens: '0'\n"
            b"  tokens: '5'\n"
        )
        e = self.assertRaises(ConfigError, NodeConfig.from_yaml, path)
        self.assertEqual(e.key, "tokens")
        self.assertIn("duplicate key (again at line 5)", e.reason)

    def test_key_error_names_file(self) -> None:
        path = self.write(b"dyn_o_mite:\n  listen: localhost\n")
        e = self.assertRaises(ConfigError, NodeConfig.from_yaml, path)
        self.assertEqual(str(e), f"{path}: listen: expected host:port, got 'localhost'")


class KeyTableTests(SynchronousTestCase):
    """dynomite.config.keys: the one table of keys, and the class as the owner of defaults."""

    def test_every_field_is_a_node_config_field(self) -> None:
        fields = set(NodeConfig.__dataclass_fields__)
        kept = {spec.field for spec in KEYS.values() if spec.field is not None}
        self.assertEqual(kept - fields, set())
        self.assertEqual(set(KEYS), DYNOMITE_KEYS | PROJECT_KEYS)

    def test_class_defaults_come_from_the_dataclass(self) -> None:
        """A key without a default of its own gets its NodeConfig field's default."""
        c = load()
        for key, spec in KEYS.items():
            if spec.default is CLASS_DEFAULT and key not in BASE:
                self.assertEqual(getattr(c, spec.field), NodeConfig.__dataclass_fields__[spec.field].default, key)


class YamlioTests(SynchronousTestCase):
    """dynomite.config.yamlio: the strict loader and error wording both config files share."""

    def write(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_load_yaml_any_document(self) -> None:
        """Not only node configurations: any mapping, nested duplicates refused."""
        self.assertEqual(load_yaml(self.write(b"a: {b: 1}\n")), {"a": {"b": 1}})
        path = self.write(b"a:\n  b: 1\n  b: 2\n")
        e = self.assertRaises(ConfigError, load_yaml, path)
        self.assertEqual((e.source, e.key), (path, "b"))
        self.assertEqual(e.reason, "duplicate key (again at line 3)")

    def test_show(self) -> None:
        self.assertEqual(show(None), "an empty value")
        self.assertEqual(show(True), "true")
        self.assertEqual(show({"a": 1}), "a mapping")
        self.assertEqual(show([1]), "a list")
        self.assertEqual(show("x"), "'x'")
        self.assertEqual(show("y" * 100), repr("y" * 100)[:57] + "...")

    def test_unknown_key(self) -> None:
        self.assertEqual(unknown_key("bsae", ["base", "ports"]), "unknown key; did you mean 'base'?")
        self.assertEqual(unknown_key("zzz", ["base", "ports"]), "unknown key; expected one of base, ports")
        self.assertEqual(unknown_key("zzz", KEYS), "unknown key")
        self.assertEqual(unknown_key(7, ["base"]), "unknown key; expected one of base")

    def test_invalid(self) -> None:
        e = Invalid("must be positive", key="node.timeout")
        self.assertIsInstance(e, ValueError)
        self.assertEqual((str(e), e.reason, e.key), ("must be positive", "must be positive", "node.timeout"))
        self.assertIsNone(Invalid("bad").key)
