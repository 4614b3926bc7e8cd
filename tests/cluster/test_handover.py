"""
Handing a range's lead over (dynomite.node.handover): the old leader stops
leading, waits until every write it led is answered, and only then sends
later writes to the new leader, so the replicas never get a key's writes
from two leaders in two orders.  A node leads only what it leads in its
view (or what another node sent on to it), and a range handed to a node
that cannot lead is led by its old leader again.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.vocabulary import MAX_TOKEN
from dynomite.node.handover import handover_request, leader_moved, moved_to, parse_handover
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_HANDOVER, LEAD, lead_payload

from tests.cluster.inprocess import make_cluster
from tests.cluster.test_runs import pipeline
from tests.cluster.test_write_order import KEYS, owners_in_every_rack, random_command


class Answers(list):
    """A sink that keeps what it is told."""

    def complete(self, raw: bytes) -> None:
        self.append(raw)

    fail = hinted = complete


def led_by(cluster, node, prefix: bytes = b"h"):
    """A key whose writes ``node`` leads (the first of its plan's leaders)."""
    router = node.parts.router
    for i in range(1000):
        key = prefix + b"%d" % i
        if router.route(key, True, "DC_ONE").leaders[0].name == node.name:
            return key
    raise AssertionError("no key led by %s" % node.name)


class HandoverTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1, "r3": 1}})
        self.old, self.new, self.third = self.cluster.nodes
        self.key = led_by(self.cluster, self.old)

    def lists(self):
        return {n.name: n.redis.data.get(self.key) for n in self.cluster.nodes}

    def test_a_handover_waits_for_what_the_old_leader_led(self) -> None:
        """Planted bug: a handover that does not drain lets the new leader's write pass the old one's."""
        cluster = self.cluster
        client = cluster.client(self.new)
        cluster.hold(self.old, self.third)   # what the old leader sends the third node is slow
        self.assertEqual(client.command("RPUSH", self.key, "a"), b":1\r\n")
        done = []
        self.old.parts.coordinator.leading.handovers.hand_over(0, MAX_TOKEN, self.new.name).addCallback(done.append)
        cluster.settle()
        self.assertEqual(done, [], "the handover ended before the old leader's write was answered")
        later = client.raw(pipeline(("RPUSH", self.key, "b")))
        self.assertEqual(later, b"", "the old leader let a write through while draining")
        cluster.release(self.old, self.third)
        self.assertEqual(done, [None])
        self.assertEqual(client.transport.value(), b":2\r\n")
        self.assertEqual(set(map(tuple, self.lists().values())), {(b"a", b"b")})
        self.assertEqual(self.new.parts.coordinator.leading.leaders_moved, 1)

    def test_after_the_handover_the_old_leader_sends_its_own_clients_writes_on(self) -> None:
        cluster = self.cluster
        self.old.parts.coordinator.leading.handovers.hand_over(0, MAX_TOKEN, self.new.name)
        cluster.settle()
        runs = self.new.redis.commands[:]
        self.assertEqual(cluster.client(self.old).command("SET", self.key, "v"), b"+OK\r\n")
        self.assertEqual(self.old.parts.coordinator.leading.leaders_moved, 1)
        # led by the new leader: it ran the SET on its own Redis first, then sent it on
        self.assertIn([b"SET", self.key, b"v"], self.new.redis.commands[len(runs):])
        self.assertEqual({n.redis.data.get(self.key) for n in cluster.nodes}, {b"v"})

    def test_a_node_answers_a_lead_it_does_not_lead_with_the_leader_of_its_view(self) -> None:
        plan = self.new.parts.router.route(self.key, True, "DC_ONE")
        answers = Answers()
        payload = lead_payload(plan.position, pipeline(("SET", self.key, "x")))
        self.new.parts.replica.handle_peer_request(self.third.name, LEAD, Request(payload, write=True), answers)
        self.assertEqual(answers, [leader_moved(self.old.name)])
        self.assertEqual(moved_to(answers[0]), self.old.name)
        self.assertNotIn(self.key, self.new.redis.data)

    def test_a_range_handed_to_a_node_that_cannot_lead_is_led_here_again(self) -> None:
        cluster = self.cluster
        self.old.parts.coordinator.leading.handovers.hand_over(0, MAX_TOKEN, self.new.name)
        cluster.settle()
        cluster.isolate(self.new)
        cluster.advance(self.old.config.peer_down_after / 1000 + 1)
        self.assertEqual(cluster.client(self.third).command("SET", self.key, "w"), b"+OK\r\n")
        self.assertEqual(self.old.redis.data.get(self.key), b"w")
        self.assertEqual(self.old.parts.coordinator.leading.leaders_moved, 0)

    def test_the_mark_goes_once_the_view_says_the_range_is_not_this_nodes(self) -> None:
        handovers = self.old.parts.coordinator.leading.handovers
        handovers.hand_over(0, MAX_TOKEN, self.new.name)
        self.cluster.settle()
        handovers.forget(self.old.parts.topology)   # still the owner: kept
        self.assertTrue(handovers.active)
        handovers.forget(self.new.parts.topology)   # a view where another node owns the range
        self.assertFalse(handovers.active)

    def test_a_handover_request_through_the_peer_link(self) -> None:
        answers = Answers()
        request = Request(lead_payload(0, handover_request(0, MAX_TOKEN, self.third.name)), 2, 0, 1, True,
                          FLAG_HANDOVER)
        self.new.parts.targets[self.old.name].lead(request, answers)
        self.cluster.settle()
        self.assertEqual(answers, [b"+OK\r\n"])
        self.assertTrue(self.old.parts.coordinator.leading.handovers.active)
        self.assertEqual(parse_handover(handover_request(5, 9, "n:1")), (5, 9, "n:1"))
        for bad in (b"", b"*1\r\n$4\r\nPING\r\n", b"*4\r\n$8\r\nHANDOVER\r\n$1\r\nx\r\n$1\r\n1\r\n$1\r\nn\r\n"):
            with self.assertRaises(ValueError):
                parse_handover(bad)
        garbled = Answers()
        self.new.parts.targets[self.old.name].lead(
            Request(lead_payload(0, b"*1\r\n$4\r\nPING\r\n"), 2, 0, 1, True, FLAG_HANDOVER), garbled)
        self.cluster.settle()
        self.assertEqual(garbled, [b"-ERR handover without a range and a node\r\n"])


class ViewChangeTests(SynchronousTestCase):
    """
    A coordinator whose view changes while a LEAD is on its way holds its
    next writes until that one is answered: a write to a key's new leader
    never passes one still going to its old leader.  Planted bug: a view
    change that holds nothing sends the second write at once.
    """

    def test_writes_after_a_change_of_view_wait_for_the_leads_sent_before(self) -> None:
        cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1, "r3": 1}})
        leader, coordinator, _ = cluster.nodes
        key = led_by(cluster, leader)
        link = coordinator.peers[leader.name]
        client = cluster.client(coordinator)
        cluster.hold(coordinator, leader)
        before = link.requests_total
        client.send(pipeline(("RPUSH", key, "a")))
        self.assertEqual(link.requests_total, before + 1)
        leading = coordinator.parts.coordinator.leading
        leading.view_changed()
        client.send(pipeline(("RPUSH", key, "b")))
        self.assertEqual(link.requests_total, before + 1, "the second write left before the first was answered")
        cluster.release(coordinator, leader)
        self.assertEqual(client.transport.value(), b":1\r\n:2\r\n")
        self.assertEqual(link.requests_total, before + 2)
        self.assertEqual({tuple(n.redis.data[key]) for n in cluster.nodes}, {(b"a", b"b")})
        # nothing in flight: a change of view holds nothing
        leading.view_changed()
        self.assertEqual(client.command("RPUSH", key, "c"), b":3\r\n")


class HandoverModelTests(SynchronousTestCase):
    """
    Random writers through every node while the network delivers bytes in
    a random order, and the leader of one rack's keys hands them over
    halfway: every replica ends the same.  Planted bug: a handover that
    does not wait for the writes already led (no drain) fails it.
    """

    def run_model(self, seed: int, steps: int = 60) -> None:
        cluster = make_cluster(self, {"dc1": {"r1": 1, "r2": 1, "r3": 1}})
        rng = random.Random(seed)
        clients = [cluster.client(node) for node in cluster.nodes]
        old, new = rng.sample(cluster.nodes, 2)
        handed = []
        hand_at = rng.randrange(steps // 4, steps // 2)
        for step in range(steps):
            if step == hand_at:
                old.parts.coordinator.leading.handovers.hand_over(0, MAX_TOKEN, new.name).addCallback(
                    handed.append)
            c = rng.randrange(len(clients))
            clients[c].send(pipeline(*[random_command(rng, c, step) for _ in range(rng.randrange(1, 5))]))
            # the network moves a few connections' bytes, in a random order
            # (few: much is in flight when the lead passes)
            pumps = list(cluster.pumps)
            for pump, _, _ in rng.sample(pumps, rng.randrange(len(pumps) // 3 + 1)):
                pump.pump()
        for _ in range(5):
            cluster.advance(0.1)
        self.assertEqual(handed, [None])
        for prefix in (b"s", b"n", b"f", b"l", b"t"):
            for key in KEYS:
                key = prefix + key
                values = {n.name: n.redis.data.get(key) for n in owners_in_every_rack(cluster, key)}
                self.assertEqual(len(set(map(repr, values.values()))), 1,
                                 "seed %d: replicas of %r differ: %r" % (seed, key, values))
        moved = sum(n.parts.coordinator.leading.leaders_moved for n in cluster.nodes)
        self.assertGreater(moved, 0, "seed %d: no write followed the handover" % seed)

    def test_random_writers_across_a_handover_leave_identical_replicas(self) -> None:
        for seed in range(48):
            self.run_model(seed)
