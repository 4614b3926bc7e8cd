"""
Client limits on a real node: a trickling client and an idle one are cut at
their configured deadlines, and ``maxclients`` refuses the next client as
Redis does, while a well-behaved client keeps being served.
"""

from __future__ import annotations

import time

from tests.integration.fixtures.cases import NodeTestCase

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
