"""
Client limits on a real node: a trickling client and an idle one are cut at
their configured deadlines, ``maxclients`` refuses the next client as
Redis does, and a flood of connections that send nothing valid bounds the
accepts until it passes, while a well-behaved client keeps being served.
"""

from __future__ import annotations

import json
import socket
import time

from dynomite.runtime.flood import FLOOD_ADDRESS_FRUITLESS, FLOOD_FRUITLESS, FLOOD_QUIET
from tests.integration.fixtures.cases import NodeTestCase
from tests.integration.fixtures.common import poll
from tests.integration.fixtures.readiness import admin_get

# The node looks at its clients once a second (dynomite.service).
SWEEP = 1.0


class ClientLimitTests(NodeTestCase):
    node_overrides = {"client_read_timeout": 1000, "client_idle_timeout": 1, "maxclients": 8}

    def test_a_trickling_client_is_cut_at_its_read_deadline(self):
        conn = self.raw()
        conn.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n")      # and never the value
        read_limit = self.node.config["client_read_timeout"] / 1000
        reply = conn.read_reply(timeout=read_limit + SWEEP + 2)
        self.assertEqual(reply, b"-ERR Protocol error: request not completed within 1000 ms\r\n")
        self.assertTrue(conn.closed_by_peer(timeout=2))
        with self.raw() as other:
            self.assertEqual(other.command("PING"), b"+PONG\r\n")

    def test_an_idle_client_is_closed_and_an_active_one_is_not(self):
        idle, active = self.raw(), self.raw()
        idle_limit = self.node.config["client_idle_timeout"]
        deadline = time.monotonic() + idle_limit + SWEEP + 2
        while time.monotonic() < deadline:
            self.assertEqual(active.command("PING"), b"+PONG\r\n")
            time.sleep(0.2)
        self.assertTrue(idle.closed_by_peer(timeout=0.5))
        self.assertEqual(active.command("PING"), b"+PONG\r\n")

    def test_maxclients_refuses_the_next_client(self):
        limit = self.node.config["maxclients"]
        # the fixture's own connections may be open too: fill up to the limit
        opened = []
        reply = b""
        for _ in range(limit + 1):
            conn = self.raw()
            opened.append(conn)
            conn.send(b"PING\r\n")
            reply = conn.read_reply(timeout=5)
            if reply != b"+PONG\r\n":
                break
        self.assertEqual(reply, b"-ERR max number of clients reached\r\n")
        self.assertTrue(opened[-1].closed_by_peer(timeout=2))
        opened[0].close()
        poll_until = time.monotonic() + 5
        while True:
            with self.raw() as again:
                again.send(b"PING\r\n")
                if again.read_reply(timeout=5) == b"+PONG\r\n":
                    break
            self.assertLess(time.monotonic(), poll_until, "a freed slot was never given to a new client")
            time.sleep(0.1)


class FloodTests(NodeTestCase):
    """Bad connections from many addresses make a flood; from one, a flooder (`dynomite.runtime.flood`)."""

    node_overrides = {"client_flood_accept_rate": 20}

    def client_info(self):
        return json.loads(admin_get(self.node, "/info"))["client"]

    def connect_each(self, count: int, data: bytes, source: str = "127.0.0.1") -> None:
        for _ in range(count):
            with socket.create_connection(self.node.address, timeout=5, source_address=(source, 0)) as s:
                s.sendall(data)

    def ping_from(self, source: str) -> bytes:
        """PING's answer to a new connection from ``source``; b"" if it was closed unanswered."""
        with socket.create_connection(self.node.address, timeout=5, source_address=(source, 0)) as s:
            try:
                s.sendall(b"PING\r\n")
                return s.recv(100)
            except ConnectionResetError:
                return b""

    def test_a_flood_admits_unknown_addresses_at_its_rate_and_known_ones_always(self):
        rate = self.node.config["client_flood_accept_rate"]
        before = self.client_info()
        # valid requests, as fast as they come: no flood (and 127.0.0.1 is known)
        self.connect_each(2 * FLOOD_FRUITLESS, b"PING\r\n")
        self.assertEqual(self.ping_from("127.0.0.1"), b"+PONG\r\n")
        self.assertEqual(self.client_info()["floods"], before["floods"])
        # bad bytes from many addresses, none a flooder: a flood after
        # FLOOD_FRUITLESS of them; then unknown addresses are admitted at
        # the flood's rate, the rest closed at once
        sources = ["127.0.1.%d" % i for i in range(1, 2 * FLOOD_FRUITLESS // (FLOOD_ADDRESS_FRUITLESS // 2) + 2)]
        for source in sources:
            self.connect_each(FLOOD_ADDRESS_FRUITLESS // 2, b"\x00", source)
        self.assertTrue(poll(lambda: self.client_info()["flooded"], 5), "no flood seen")
        answers = [self.ping_from("127.0.4.%d" % i) for i in range(1, 4 * rate)]   # unknown, all at once
        self.assertIn(b"", answers, "every unknown address was admitted during the flood")
        self.assertEqual(self.ping_from("127.0.0.1"), b"+PONG\r\n", "a known address waited for the flood")
        during = self.client_info()
        self.assertEqual((during["floods"], during["flooders"]), (before["floods"] + 1, before["flooders"]))
        refused = during["limits"]["flood"]
        self.assertGreater(refused, before["limits"]["flood"])
        # once it is over, everyone is admitted again
        time.sleep(FLOOD_QUIET + SWEEP)
        self.assertFalse(self.client_info()["flooded"])
        self.assertEqual(self.ping_from("127.0.5.1"), b"+PONG\r\n")
        self.assertEqual(self.client_info()["limits"]["flood"], refused)

    def test_an_address_that_floods_is_refused_and_others_are_not(self):
        before = self.client_info()
        # connections closed before sending anything (idle pooled ones at a
        # shutdown, health checks) make nobody a flooder
        self.connect_each(3 * FLOOD_ADDRESS_FRUITLESS, b"", "127.0.2.3")
        self.assertEqual(self.ping_from("127.0.2.3"), b"+PONG\r\n")
        flooder = "127.0.2.1"
        self.connect_each(FLOOD_ADDRESS_FRUITLESS + 10, b"\x00", flooder)
        # (the node counts them as they close, a moment after this side is done)
        self.assertTrue(poll(lambda: self.client_info()["flooders"] > before["flooders"], 5), "no flooder seen")
        self.assertEqual(self.ping_from(flooder), b"", "a flooder's new connection was served")
        self.assertEqual(self.ping_from("127.0.2.2"), b"+PONG\r\n")
        info = self.client_info()
        self.assertEqual((info["flooders"], info["floods"]), (before["flooders"] + 1, before["floods"]))
        self.assertGreater(info["limits"]["flooder"], before["limits"]["flooder"])
        time.sleep(FLOOD_QUIET)
        self.assertEqual(self.ping_from(flooder), b"+PONG\r\n", "quiet, it is served again")
