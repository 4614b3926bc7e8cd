"""
MULTI/EXEC/DISCARD through an in-process cluster (dynomite.node.transactions):
queued as Redis queues them, run whole by the keys' leader, applied whole on
every replica, refused across leaders.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.cluster.inprocess import make_cluster
from tests.cluster.test_runs import pipeline
from tests.cluster.test_write_order import owners_in_every_rack

LAYOUT = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}
EXECABORT = b"-EXECABORT Transaction discarded because of previous errors.\r\n"


class TransactionTests(SynchronousTestCase):
    def setUp(self):
        self.cluster = make_cluster(self, LAYOUT, hash_tag="{}")
        self.client = self.cluster.client(self.cluster.nodes[0])

    def test_a_transaction_is_queued_then_applied_whole_on_every_replica(self):
        out = self.client.raw(pipeline(("MULTI",), ("SET", "{u}a", "1"), ("INCR", "{u}n"),
                                       ("GET", "{u}a"), ("EXEC",)))
        self.assertEqual(out, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
                              b"*3\r\n+OK\r\n:1\r\n$1\r\n1\r\n")
        for node in owners_in_every_rack(self.cluster, b"{u}a"):
            self.assertEqual((node.redis.data[b"{u}a"], node.redis.data[b"{u}n"]), (b"1", b"1"))
            # one transaction on each replica: MULTI, the mark, the three commands, EXEC
            self.assertIn([b"INCR", b"{u}n"], node.redis.commands)

    def test_keys_of_several_leaders_answer_crossslot_and_nothing_runs(self):
        keys = [b"x%d" % i for i in range(50)]
        out = self.client.raw(pipeline(("MULTI",), *[("SET", k, "v") for k in keys], ("EXEC",)))
        self.assertTrue(out.endswith(b"-CROSSSLOT Keys in request don't hash to the same node\r\n"), out)
        self.assertFalse(any(k in n.redis.data for n in self.cluster.nodes for k in keys))

    def test_a_command_refused_when_queued_aborts_the_transaction(self):
        out = self.client.raw(pipeline(("MULTI",), ("SET", "{u}b", "1"), ("NOSUCH",), ("GET",),
                                       ("EXEC",)))
        self.assertTrue(out.startswith(b"+OK\r\n+QUEUED\r\n-ERR unknown command 'NOSUCH'"), out)
        self.assertIn(b"-ERR wrong number of arguments for 'get' command\r\n", out)
        self.assertTrue(out.endswith(EXECABORT), out)
        self.assertFalse(any(b"{u}b" in n.redis.data for n in self.cluster.nodes))
        # the connection is out of the transaction
        self.assertEqual(self.client.command("GET", "{u}b"), b"$-1\r\n")

    def test_node_commands_are_refused_inside_a_transaction(self):
        out = self.client.raw(pipeline(("MULTI",), ("SCAN", "0"), ("CLIENT", "ID"), ("EXEC",)))
        self.assertEqual(out, b"+OK\r\n" + b"-ERR Command not allowed inside a transaction\r\n" * 2
                         + EXECABORT)

    def test_discard_nested_multi_and_exec_without_multi(self):
        self.assertEqual(self.client.command("EXEC"), b"-ERR EXEC without MULTI\r\n")
        self.assertEqual(self.client.command("DISCARD"), b"-ERR DISCARD without MULTI\r\n")
        out = self.client.raw(pipeline(("MULTI",), ("MULTI",), ("SET", "{u}c", "1"), ("DISCARD",),
                                       ("GET", "{u}c")))
        self.assertEqual(out, b"+OK\r\n-ERR MULTI calls can not be nested\r\n+QUEUED\r\n+OK\r\n$-1\r\n")
        self.assertEqual(self.client.raw(pipeline(("MULTI",), ("EXEC",))), b"+OK\r\n*0\r\n")

    def test_reset_leaves_a_transaction(self):
        out = self.client.raw(pipeline(("MULTI",), ("SET", "{u}d", "1"), ("RESET",), ("EXEC",)))
        self.assertEqual(out, b"+OK\r\n+QUEUED\r\n+RESET\r\n-ERR EXEC without MULTI\r\n")

    def test_a_transaction_of_reads_runs_where_reads_go(self):
        self.client.command("SET", "{u}e", "7")
        before = [len(n.redis.commands) for n in self.cluster.nodes]
        out = self.client.raw(pipeline(("MULTI",), ("GET", "{u}e"), ("EXISTS", "{u}e"), ("EXEC",)))
        self.assertEqual(out, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$1\r\n7\r\n:1\r\n")
        ran = [len(n.redis.commands) - b for n, b in zip(self.cluster.nodes, before)]
        self.assertEqual(sorted(ran), [0, 0, 2], "one replica, the client's rack's, ran it")
