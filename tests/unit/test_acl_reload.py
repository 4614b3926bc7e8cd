"""
ACL users reloaded on SIGHUP (`dynomite.node.control.NodeControl.reload`,
`dynomite.node.dispatch.Node.set_acl`): new AUTHs check the new users, a
connected client gets its user's new rules at its next command, and a
client whose user was removed or disabled is closed.
"""

from __future__ import annotations

import yaml
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.model import NodeConfig
from dynomite.node.assembly import NodeParts
from dynomite.node.client import ClientFactory
from dynomite.node.control import NodeControl

from tests.fakes import FakeDatastore, FakeMonitor, Transport

NOPERM_KEY = b"-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
NOAUTH = b"-NOAUTH Authentication required.\r\n"

USERS = [
    "user alice on >alicepw ~app:* +@read +@write",
    "user bob on >bobpw ~* +@all",
]


class AclReloadTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.pool = {
            "listen": "127.0.0.1:8102", "servers": ["127.0.0.1:6379:1"], "tokens": "0",
            "datacenter": "dc1", "rack": "rack1", "data_dir": self.mktemp(),
            "requirepass": "defaultpw", "users": list(USERS),
        }
        self.write()
        self.clock = Clock()
        self.datastore = FakeDatastore()
        self.parts = NodeParts(NodeConfig.from_yaml(self.path), self.clock, self.datastore, FakeMonitor())
        self.parts.start()
        self.addCleanup(self.parts.stop)
        self.control = NodeControl(self.parts, is_running=lambda: False)
        self.factory = ClientFactory(self.parts.node, self.clock)

    def write(self, **changes) -> None:
        self.pool.update(changes)
        with open(self.path, "w") as f:
            yaml.safe_dump({"dyn_o_mite": self.pool}, f)

    def reload(self, **changes) -> None:
        self.write(**changes)
        self.assertTrue(self.control.reload())

    def connect(self):
        client = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = Transport()
        client.makeConnection(transport)
        return client, transport

    def ask(self, client, transport, data: bytes) -> bytes:
        client.dataReceived(data)
        value = transport.value()
        transport.clear()
        return value

    def login(self, name: bytes, password: bytes):
        client, transport = self.connect()
        self.assertEqual(self.ask(client, transport, b"AUTH %s %s\r\n" % (name, password)), b"+OK\r\n")
        return client, transport

    def test_a_new_user_and_a_changed_password_apply_to_new_auths(self):
        bob, bob_transport = self.login(b"bob", b"bobpw")
        client, transport = self.connect()
        self.assertEqual(self.ask(client, transport, b"AUTH carol carolpw\r\n"), WRONGPASS)
        self.reload(users=[USERS[0], "user bob on >bobpw2 ~* +@all", "user carol on >carolpw ~* +@all"])
        self.assertEqual(self.ask(client, transport, b"AUTH carol carolpw\r\nAUTH bob bobpw\r\n"
                                                      b"AUTH bob bobpw2\r\n"),
                         b"+OK\r\n" + WRONGPASS + b"+OK\r\n")
        # bob logged in with the old password stays logged in, as in Redis
        self.assertEqual(self.ask(bob, bob_transport, b"ACL WHOAMI\r\n"), b"$3\r\nbob\r\n")
        self.assertFalse(bob_transport.disconnecting)

    def test_requirepass_is_reloaded(self):
        self.reload(requirepass="newpw")
        client, transport = self.connect()
        self.assertEqual(self.ask(client, transport, b"AUTH defaultpw\r\nAUTH newpw\r\n"),
                         WRONGPASS + b"+OK\r\n")

    def test_changed_rules_apply_at_the_next_command(self):
        alice, transport = self.login(b"alice", b"alicepw")
        self.assertEqual(self.ask(alice, transport, b"GET other\r\n"), NOPERM_KEY)
        self.reload(users=["user alice on >alicepw ~other +@read", USERS[1]])
        self.assertEqual(self.ask(alice, transport, b"GET app:1\r\nSET other x\r\n"),
                         NOPERM_KEY + b"-NOPERM this user has no permissions to run the 'set' command\r\n")
        self.ask(alice, transport, b"GET other\r\n")
        self.assertEqual(len(self.datastore.sent), 1)
        self.datastore.answer(b"$1\r\nv\r\n")
        self.assertEqual(transport.value(), b"$1\r\nv\r\n")
        self.assertFalse(transport.disconnecting)

    def test_a_removed_or_disabled_users_clients_are_closed(self):
        alice, alice_transport = self.login(b"alice", b"alicepw")
        bob, bob_transport = self.login(b"bob", b"bobpw")
        default, default_transport = self.login(b"default", b"defaultpw")
        self.reload(users=["user bob off >bobpw ~* +@all"])
        self.assertTrue(alice_transport.disconnecting)
        self.assertTrue(bob_transport.disconnecting)
        self.assertFalse(default_transport.disconnecting)
        self.assertEqual(self.ask(default, default_transport, b"PING\r\n"), b"+PONG\r\n")
        client, transport = self.connect()
        self.assertEqual(self.ask(client, transport, b"AUTH alice alicepw\r\nAUTH bob bobpw\r\n"), WRONGPASS * 2)

    def test_subscribers_to_channels_no_longer_granted_are_closed(self):
        self.reload(users=["user alice on >alicepw ~* &news.* &sport +@all", USERS[1]])
        kept, kept_transport = self.login(b"alice", b"alicepw")
        lost, lost_transport = self.login(b"alice", b"alicepw")
        by_pattern, pattern_transport = self.login(b"alice", b"alicepw")
        self.ask(kept, kept_transport, b"SUBSCRIBE news.1\r\n")
        self.ask(lost, lost_transport, b"SUBSCRIBE sport\r\n")
        self.assertTrue(self.ask(by_pattern, pattern_transport, b"PSUBSCRIBE news.*\r\n").startswith(b"*3\r\n"))
        self.reload(users=["user alice on >alicepw ~* &news.[0-9] +@all", USERS[1]])
        self.assertFalse(kept_transport.disconnecting)
        self.assertTrue(lost_transport.disconnecting)
        self.assertTrue(pattern_transport.disconnecting, "a pattern is granted only by the same pattern")

    def test_a_client_owed_replies_gets_them_before_it_is_closed(self):
        alice, transport = self.login(b"alice", b"alicepw")
        self.ask(alice, transport, b"GET app:1\r\n")
        self.reload(users=[USERS[1]])
        self.assertFalse(transport.disconnecting)
        self.ask(alice, transport, b"GET app:2\r\n")
        self.assertEqual(len(self.datastore.sent), 1, "nothing more is read from it")
        self.datastore.answer(b"$1\r\nv\r\n")
        self.assertEqual(transport.value(), b"$1\r\nv\r\n")
        self.assertTrue(transport.disconnecting)

    def test_unauthenticated_clients_follow_the_default_user(self):
        client, transport = self.connect()
        self.assertEqual(self.ask(client, transport, b"PING\r\n"), NOAUTH)
        del self.pool["requirepass"]
        self.reload()
        self.assertEqual(self.ask(client, transport, b"PING\r\n"), b"+PONG\r\n")

    def test_a_bad_acl_line_refuses_the_reload_and_keeps_the_users(self):
        alice, transport = self.login(b"alice", b"alicepw")
        self.write(users=["user alice on >alicepw +@nosuchcategory"])
        self.assertFalse(self.control.reload())
        self.assertEqual(self.parts.metrics.reloads["failure"], 1)
        self.assertEqual(self.ask(alice, transport, b"GET other\r\n"), NOPERM_KEY)
        self.assertFalse(transport.disconnecting)
