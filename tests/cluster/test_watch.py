"""
WATCH/UNWATCH through an in-process cluster (dynomite.node.watch): the
watched keys are checked by their leader, whichever node the change or the
EXEC comes through, and a leader failover between WATCH and EXEC makes
EXEC answer null.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.placement.hashing import key_hash
from dynomite.placement.router import leader_turn
from tests.cluster.inprocess import make_cluster
from tests.cluster.test_runs import pipeline

LAYOUT = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}
NULL = b"*-1\r\n"
QUEUED = b"+OK\r\n+QUEUED\r\n"


class WatchTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = make_cluster(self, LAYOUT, hash_tag="{}")
        self.leader = self.leader_of(b"{w}k")
        self.others = [n for n in self.cluster.nodes if n is not self.leader]
        # a client on a node that does not lead the key, another on the leader
        self.client = self.cluster.client(self.others[0])
        self.on_leader = self.cluster.client(self.leader)

    def leader_of(self, key: bytes):
        nodes = sorted(self.cluster.nodes, key=lambda n: n.rack)
        return nodes[leader_turn(key_hash(key, b"{}"), len(nodes))]

    def watched_exec(self, client=None):
        client = client or self.client
        return client.raw(pipeline(("MULTI",), ("SET", "{w}k", "mine"), ("EXEC",)))

    def test_exec_runs_when_nothing_changed(self):
        self.client.command("SET", "{w}k", "0")
        self.assertEqual(self.client.command("WATCH", "{w}k", "{w}other"), b"+OK\r\n")
        self.assertEqual(self.watched_exec(), QUEUED + b"*1\r\n+OK\r\n")
        for node in self.cluster.nodes:
            self.assertEqual(node.redis.data[b"{w}k"], b"mine")
        self.assertFalse(self.leader.coordinator.leader.watches.active, "EXEC released the keys")

    def test_a_change_through_another_node_makes_exec_null(self):
        self.assertEqual(self.client.command("WATCH", "{w}k"), b"+OK\r\n")
        third = self.cluster.client(self.others[1])
        self.assertEqual(third.command("SET", "{w}k", "theirs"), b"+OK\r\n")
        self.assertEqual(self.watched_exec(), QUEUED + NULL)
        for node in self.cluster.nodes:
            self.assertEqual(node.redis.data[b"{w}k"], b"theirs", "nothing ran")

    def test_a_change_through_the_leaders_own_client_makes_exec_null(self):
        self.client.command("WATCH", "{w}k")
        self.on_leader.command("INCR", "{w}k")
        self.assertEqual(self.watched_exec(), QUEUED + NULL)

    def test_a_change_of_another_key_does_not(self):
        self.client.command("WATCH", "{w}k")
        self.on_leader.command("SET", "{w}unwatched", "1")
        self.assertEqual(self.watched_exec(), QUEUED + b"*1\r\n+OK\r\n")

    def test_watch_on_the_leader_itself_and_resp3_null(self):
        self.on_leader.command("HELLO", "3")
        self.on_leader.command("WATCH", "{w}k")
        self.client.command("SET", "{w}k", "x")
        self.assertEqual(self.watched_exec(self.on_leader), QUEUED + b"_\r\n")

    def test_unwatch_discard_reset_and_disconnect_release_the_keys(self):
        watches = self.leader.coordinator.leader.watches
        for release in (("UNWATCH",), ("RESET",)):
            self.client.command("WATCH", "{w}k")
            self.assertTrue(watches.active)
            self.client.command(*release)
            self.cluster.settle()
            self.assertFalse(watches.active, release)
        self.client.raw(pipeline(("WATCH", "{w}k"), ("MULTI",), ("DISCARD",)))
        self.cluster.settle()
        self.assertFalse(watches.active, "DISCARD")
        self.client.command("WATCH", "{w}k")
        self.client.protocol.connectionLost(None)
        self.cluster.settle()
        self.assertFalse(watches.active, "disconnect")

    def test_unwatch_forgets_a_change(self):
        self.client.command("WATCH", "{w}k")
        self.on_leader.command("SET", "{w}k", "x")
        self.client.command("UNWATCH")
        self.assertEqual(self.watched_exec(), QUEUED + b"*1\r\n+OK\r\n")

    def test_empty_exec_checks_the_watch_too(self):
        self.client.command("WATCH", "{w}k")
        self.assertEqual(self.client.raw(pipeline(("MULTI",), ("EXEC",))), b"+OK\r\n*0\r\n")
        self.client.command("WATCH", "{w}k")
        self.on_leader.command("SET", "{w}k", "x")
        self.assertEqual(self.client.raw(pipeline(("MULTI",), ("EXEC",))), b"+OK\r\n" + NULL)

    def test_watch_inside_multi_and_keys_of_several_leaders(self):
        out = self.client.raw(pipeline(("MULTI",), ("WATCH", "{w}k"), ("EXEC",)))
        self.assertEqual(out, b"+OK\r\n-ERR WATCH inside MULTI is not allowed\r\n*0\r\n")
        keys = ["x%d" % i for i in range(40)]
        self.assertEqual(self.client.command("WATCH", *keys),
                         b"-CROSSSLOT Keys in request don't hash to the same node\r\n")
        self.client.command("WATCH", "{w}k")
        far = next(k for k in keys if self.leader_of(k.encode()) is not self.leader)
        out = self.client.raw(pipeline(("MULTI",), ("SET", far, "1"), ("EXEC",)))
        self.assertEqual(out, QUEUED + b"-CROSSSLOT Keys in request don't hash to the same node\r\n")

    def test_a_transaction_of_reads_is_checked_too(self):
        self.client.command("SET", "{w}k", "1")
        self.client.command("WATCH", "{w}k")
        self.on_leader.command("SET", "{w}k", "2")
        self.assertEqual(self.client.raw(pipeline(("MULTI",), ("GET", "{w}k"), ("EXEC",))), QUEUED + NULL)
        self.client.command("WATCH", "{w}k")
        self.assertEqual(self.client.raw(pipeline(("MULTI",), ("GET", "{w}k"), ("EXEC",))),
                         QUEUED + b"*1\r\n$1\r\n2\r\n")

    def test_a_leader_failover_between_watch_and_exec_makes_exec_null(self):
        self.client.command("SET", "{w}k", "0")
        self.client.command("WATCH", "{w}k")
        self.cluster.isolate(self.leader)
        self.cluster.advance(10)   # the others mark the leader down: the next one leads
        self.assertEqual(self.watched_exec(), QUEUED + NULL)
        self.assertEqual(self.others[0].redis.data[b"{w}k"], b"0", "nothing ran")
        # a new WATCH at the new leader works
        self.client.command("WATCH", "{w}k")
        self.assertEqual(self.watched_exec(), QUEUED + b"*1\r\n+OK\r\n")

    def test_a_read_after_watch_sees_every_write_led_before_it(self):
        """
        Planted bug: a WATCH answered before the replicas applied what the
        leader led lets a transaction built on a stale read succeed.
        """
        reader = self.others[0]   # self.client's node, and the replica it reads from
        self.assertEqual(self.client.command("SET", "{w}k", "1"), b"+OK\r\n")
        self.cluster.hold(self.leader, reader, dialed_by_a=True)   # the leader's writes to it are slow
        self.assertEqual(self.on_leader.command("SET", "{w}k", "2"), b"+OK\r\n")
        self.client.transport.clear()
        self.client.send(pipeline(("WATCH", "{w}k"), ("GET", "{w}k")))
        self.cluster.settle()
        self.assertEqual(self.client.transport.value(), b"", "WATCH answered before the write it counts was applied")
        self.cluster.release(self.leader, reader, dialed_by_a=True)
        self.assertEqual(self.client.transport.value(), b"+OK\r\n$1\r\n2\r\n")
        self.client.transport.clear()
        self.assertEqual(self.watched_exec(), QUEUED + b"*1\r\n+OK\r\n")

    def test_a_watch_on_the_leader_waits_for_its_replicas_too(self):
        reader = self.others[0]
        self.cluster.hold(self.leader, reader, dialed_by_a=True)
        self.client.command("SET", "{w}k", "1")
        self.on_leader.send(pipeline(("WATCH", "{w}k")))
        self.cluster.settle()
        self.assertEqual(self.on_leader.transport.value(), b"")
        self.cluster.release(self.leader, reader, dialed_by_a=True)
        self.assertEqual(self.on_leader.transport.value(), b"+OK\r\n")

    def test_a_restarted_leader_refuses_versions_of_its_former_incarnation(self):
        self.client.command("WATCH", "{w}k")
        watches = self.leader.coordinator.leader.watches
        watches.incarnation = b"0" * 16   # what a restart draws anew
        self.assertEqual(self.watched_exec(), QUEUED + NULL)

    def test_a_write_reaching_the_leader_as_a_replica_counts(self):
        # a write another leader ordered (a failover seen by some nodes only,
        # a hint replay) reaches the leader as a replica write
        watches = self.leader.coordinator.leader.watches
        self.client.command("WATCH", "{w}k")
        self.assertTrue(watches.active)
        from dynomite.wire.inflight import Request
        from dynomite.wire.peer_frames import REQUEST
        replica = self.leader.parts.replica

        class Sink:
            def complete(self, raw):
                pass
            fail = complete

        replica.handle_peer_request(self.others[1].name, REQUEST,
                                    Request(b"*3\r\n$3\r\nSET\r\n$4\r\n{w}k\r\n$1\r\nz\r\n", 2, 0, 1, True),
                                    Sink())
        self.assertEqual(self.watched_exec(), QUEUED + NULL)
