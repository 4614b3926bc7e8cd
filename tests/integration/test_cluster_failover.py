"""
Failover in a cluster of real processes: reads and quorum writes survive
an owner killed with SIGKILL, frozen with SIGSTOP, or left without its
redis-server, and the cluster heals when the process comes back.  Uses the
shared 1 DC x 3 racks x 2 nodes cluster of
``tests/integration/fixtures/cases.py``; each test brings back what it
broke in its cleanup.
"""

from __future__ import annotations

import time

from dynomite.launcher.cluster import ClusterNode
from tests.integration.fixtures.cases import ClusterTestCase
from tests.integration.fixtures.common import poll


# ---------------------------------------------------------------------------
# failover


class FailoverTests(ClusterTestCase):
    """A read survives the death of its own rack's owner."""

    def test_reads_survive_a_killed_owner(self) -> None:
        victim = self.fx.node("dc1-rack1-1")
        neighbour = self.fx.node("dc1-rack1-0")
        keys = [self.key_owned_by(victim, f"{self.prefix}{i}:") for i in range(5)]
        data = {k.encode(): f"v-{k}".encode() for k in keys}
        writer = self.client(self.fx.node("dc1-rack2-0"))
        for k, v in data.items():
            self.assertIs(writer.set(k, v), True)
        self.assertReplicated(data)
        # Mark where a failed-over read comes from: the other racks' copies.
        for k in keys[:1]:
            for owner in self.fx.owners(k):
                if owner.rack != "rack1":
                    self.set_on_replicas(k, {owner.name: b"from-" + owner.rack.encode()})

        victim.node_process.kill()
        self.addCleanup(self.fx.ensure_running)  # even if an assertion below fails
        self.assertFalse(victim.node_process.running())

        one = self.client(neighbour)
        timeout = self.fx.layout.timeout()
        started = time.monotonic()
        self.assertIn(one.get(keys[0]), (b"from-rack2", b"from-rack3"),
                      f"DC_ONE GET through {neighbour.name} with {victim.name} (rack1 owner) killed")
        for k in keys[1:]:
            self.assertEqual(one.get(k), data[k.encode()], f"DC_ONE GET {k!r} through {neighbour.name}")
        # a dead owner refuses connections: no read may wait for the node's timeout
        self.assertLess(time.monotonic() - started, timeout,
                        f"{len(keys)} failover reads took longer than one timeout ({timeout:g} s): the slow path")

        for node in (neighbour, self.fx.node("dc1-rack2-1"), self.fx.node("dc1-rack3-0")):
            quorum = self.client(node, "DC_QUORUM")
            for k in keys[1:]:
                self.assertEqual(quorum.get(k), data[k.encode()], f"DC_QUORUM GET {k!r} through {node.name}")
        # writes at DC_ONE are still acknowledged by the racks that are up
        self.assertIs(one.set(keys[1], b"while-down"), True)
        self.assertEqual(self.client(neighbour, "DC_QUORUM").get(keys[1]), b"while-down")

        victim.node_process.start()
        self.fx.wait_connected()
        # back in service: it answers, and reads of its keys in rack1 work again
        back = self.client(victim)
        self.assertEqual(back.get(keys[2]), data[keys[2].encode()])
        self.assertTrue(self.fx.healthy())

    def test_reads_survive_a_dead_redis_behind_the_owner(self) -> None:
        owner = self.fx.node("dc1-rack1-1")
        key = self.key_owned_by(owner, self.prefix)
        self.assertIs(self.client(owner).set(key, "x"), True)
        self.assertReplicated({key.encode(): b"x"})
        for o in self.fx.owners(key):
            if o.rack != "rack1":
                self.set_on_replicas(key, {o.name: b"from-" + o.rack.encode()})
        owner.redis_process.kill()
        self.addCleanup(self.fx.restart, owner)  # whatever happens below, the next test gets a fresh pair
        # through the owner itself (its own Redis is gone) and through its rack neighbour
        for node in (owner, self.fx.node("dc1-rack1-0")):
            self.assertIn(self.client(node).get(key), (b"from-rack2", b"from-rack3"),
                          f"DC_ONE GET through {node.name} with {owner.name}'s redis-server killed")

        # The same Redis comes back: the node reconnects by itself, and from
        # then on every write through any node reaches it again.
        owner.redis_process.start()
        clients = {n.name: self.client(n, protocol=2) for n in self.fx.nodes}
        counter = iter(range(1_000_000))

        def lands(via: ClusterNode) -> bool:
            value = b"%d" % next(counter)
            clients[via.name].set(key, value)
            return poll(lambda: self.fx.backend(owner).get(key) == value, 1.0, 0.02)

        self.assertTrue(poll(lambda: all(lands(n) for n in self.fx.nodes), 5.0, 0.1),
                        f"writes do not reach {owner.name} 5s after its redis-server came back")
        lost = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            lost.extend(n.name for n in self.fx.nodes if not lands(n))
        self.assertEqual(lost, [], f"after recovering, writes through these nodes missed {owner.name}")

    def test_quorum_writes_survive_a_killed_replica(self) -> None:
        victim = self.fx.node("dc1-rack2-1")
        key = self.key_owned_by(victim, self.prefix)
        victim.node_process.kill()
        self.addCleanup(self.fx.ensure_running)
        for level in ("DC_QUORUM", "DC_SAFE_QUORUM"):
            c = self.client(self.fx.node("dc1-rack1-0"), level)
            self.assertIs(c.set(key, level), True, f"{level} SET with one of three replicas down")
            self.assertEqual(c.get(key), level.encode())
        others = [o for o in self.fx.owners(key) if o is not victim]
        self.assertEqual([self.fx.backend(o).get(key) for o in others], [b"DC_SAFE_QUORUM"] * 2)

    def test_reads_survive_a_paused_owner(self) -> None:
        """A hung owner (SIGSTOP) costs a DC_ONE read one timeout; a quorum read nothing."""
        victim = self.fx.node("dc1-rack1-0")
        neighbour = self.fx.node("dc1-rack1-1")
        key = self.key_owned_by(victim, self.prefix)
        self.assertIs(self.client(neighbour).set(key, "p"), True)
        self.assertReplicated({key.encode(): b"p"})
        one = self.client(neighbour)
        quorum = self.client(neighbour, "DC_QUORUM")
        victim.node_process.pause()
        self.addCleanup(self.fx.ensure_running)
        timeout = self.fx.layout.timeout()
        started = time.monotonic()
        self.assertEqual(quorum.get(key), b"p", f"DC_QUORUM GET through {neighbour.name}, {victim.name} paused")
        self.assertLess(time.monotonic() - started, timeout,
                        f"DC_QUORUM waited for the paused replica (as long as the timeout, {timeout:g} s)")
        started = time.monotonic()
        self.assertEqual(one.get(key), b"p", f"DC_ONE GET through {neighbour.name}, {victim.name} paused")
        # one timeout to give up on the paused owner, and at most as much again to fail over
        self.assertLess(time.monotonic() - started, 2 * timeout,
                        f"DC_ONE failover took longer than two timeouts ({timeout:g} s each)")

    def test_quorum_reads_survive_a_killed_owner_in_another_rack(self) -> None:
        victim = self.fx.node("dc1-rack3-0")
        key = self.key_owned_by(victim, self.prefix)
        self.assertIs(self.client(self.fx.node("dc1-rack1-0")).set(key, "q"), True)
        self.assertReplicated({key.encode(): b"q"})
        victim.node_process.kill()
        self.addCleanup(self.fx.ensure_running)
        for node in self.fx.nodes:
            if node is victim:
                continue
            self.assertEqual(self.client(node, "DC_QUORUM").get(key), b"q", f"DC_QUORUM via {node.name}")
            self.assertEqual(self.client(node, "DC_SAFE_QUORUM").get(key), b"q",
                             f"DC_SAFE_QUORUM via {node.name}")
