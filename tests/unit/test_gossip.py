"""
Gossip membership: the cluster view's merge rule and exchange
(dynomite.peers.gossip), the rounds and admission of `Gossiper`
(dynomite.peers.gossiper) with a Clock and fake links, and the handshake
carrying a node's entry.
"""

from __future__ import annotations

import json
import random
from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.model import NodeConfig
from dynomite.config.values import Address, Seed
from dynomite.peers.gossip import (
    LEFT, BadGossip, ClusterView, Entry, GossipExchange, decode_message, encode_message,
)
from dynomite.peers.gossiper import FANOUT, FAST_PERIOD, Gossiper
from dynomite.peers.handshake import Handshake, Identity, Ready, RejectPeer
from dynomite.placement.topology import Topology
from dynomite.wire.peer_frames import decode_control

A, B, C, D, E = ("10.0.0.%d:8101" % i for i in range(1, 6))


def entry(name: str, rack: str = "rack1", tokens=(0,), generation: int = 1, version: int = 1,
          status: str = "NORMAL", dc: str = "dc1") -> Entry:
    return Entry(name, name, dc, rack, tuple(tokens), status, generation, version)


class EntryTests(SynchronousTestCase):

    def test_json_round_trip_and_seed(self) -> None:
        e = entry(A, tokens=(7, 3), generation=5, version=9)
        self.assertEqual(Entry.from_json(json.loads(json.dumps(e.to_json()))), e._replace(tokens=(3, 7)))
        self.assertEqual(e.seed(), Seed(Address("10.0.0.1", 8101), "rack1", "dc1", (7, 3), "NORMAL", e.generation))

    def test_bad_entries_are_refused(self) -> None:
        good = entry(A).to_json()
        for field, value in [("name", ""), ("name", 5), ("status", "HAPPY"), ("tokens", []),
                             ("tokens", [2 ** 32]), ("tokens", ["1"]), ("gen", -1), ("ver", True),
                             ("addr", "nowhere"), ("dc", "a\nb")]:
            with self.assertRaises(BadGossip, msg="%s=%r" % (field, value)):
                Entry.from_json(dict(good, **{field: value}))
        with self.assertRaises(BadGossip):
            Entry.from_json([1, 2])


class MergeTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.view = ClusterView(entry(A, generation=10))

    def test_higher_version_wins(self) -> None:
        self.view.merge([entry(B, version=3)])
        accepted = self.view.merge([entry(B, tokens=(5,), version=4)])
        self.assertEqual(self.view.entries[B].tokens, (5,))
        self.assertEqual([new.version for _, new in accepted], [4])

    def test_lower_or_equal_version_never_overwrites(self) -> None:
        self.view.merge([entry(B, tokens=(5,), version=4)])
        version = self.view.version
        self.assertEqual(self.view.merge([entry(B, tokens=(9,), version=3),
                                          entry(B, tokens=(9,), version=4)]), [])
        self.assertEqual(self.view.entries[B].tokens, (5,))
        self.assertEqual(self.view.entries[B].version, 4)
        self.assertEqual(self.view.version, version, "nothing learned: the view's version stays")

    def test_a_newer_generation_beats_a_higher_version(self) -> None:
        self.view.merge([entry(B, generation=1, version=50)])
        self.view.merge([entry(B, tokens=(8,), generation=2, version=1)])
        self.assertEqual(self.view.entries[B].stamp, (2, 1))
        self.view.merge([entry(B, generation=1, version=51)])
        self.assertEqual(self.view.entries[B].tokens, (8,), "the previous run's entry lost")

    def test_only_the_owner_changes_its_entry_and_refutes_a_newer_copy(self) -> None:
        own = self.view.own
        self.assertEqual(self.view.merge([own._replace(status=LEFT, version=own.version + 5)]), [])
        self.assertEqual(self.view.own.status, "NORMAL")
        self.assertGreater(self.view.own.version, own.version + 5)
        other = ClusterView(entry(B))
        other.merge([own._replace(status=LEFT, version=own.version + 5)])
        other.merge([self.view.own])
        self.assertEqual(other.entries[A].status, "NORMAL", "the refutation beats the removal")

    def test_update_own_bumps_the_version(self) -> None:
        before = self.view.own.version
        self.view.update_own(status="JOINING")
        self.assertEqual(self.view.own.version, before + 1)

    def test_removal_is_a_tombstone_and_down_is_not_removal(self) -> None:
        self.view.merge([entry(B, rack="rack2"), entry(C, rack="rack3")])
        gone = self.view.remove(B)
        self.assertEqual((gone.status, gone.version), (LEFT, 2))
        self.assertEqual([e.name for e in self.view.members()], [A, C])
        self.assertEqual(self.view.gone(), [B])
        self.view.merge([entry(B, rack="rack2", version=1)])
        self.assertEqual(self.view.entries[B].status, LEFT, "an older copy does not bring it back")
        with self.assertRaises(ValueError):
            self.view.remove(A)

    def test_clash_is_a_token_of_the_same_rack(self) -> None:
        self.view.merge([entry(B, rack="rack2", tokens=(0,))])
        self.assertIsNone(self.view.clash(entry(C, rack="rack3", tokens=(0,))))
        self.assertIsNone(self.view.clash(entry(C, rack="rack1", tokens=(5,))))
        self.assertIn("owned by " + A, self.view.clash(entry(C, rack="rack1", tokens=(5, 0))))


class ExchangeTests(SynchronousTestCase):

    def test_three_way_exchange_converges_and_ends(self) -> None:
        a = ClusterView(entry(A))
        b = ClusterView(entry(B, rack="rack2"))
        a.merge([entry(C, rack="rack3", version=2), entry(D, version=1, tokens=(9,))])
        b.merge([entry(C, rack="rack3", version=5), entry(E, rack="rack2", tokens=(4,))])
        ea, eb = GossipExchange(a), GossipExchange(b)
        messages: List[bytes] = [ea.syn()]
        side = [eb, ea]
        turn = 0
        while messages[-1] is not None:
            reply, _ = side[turn % 2].receive(decode_message(messages[-1]))
            messages.append(reply)
            turn += 1
        self.assertEqual(len(messages), 4, "SYN, ACK, ACK2, then silence")
        self.assertEqual(a.entries, b.entries)
        self.assertEqual(a.entries[C].version, 5)
        self.assertNotIn(b'"d"', messages[1])
        # nothing new: the SYN is answered by nothing
        self.assertIsNone(eb.receive(decode_message(ea.syn()))[0])

    def test_bad_messages(self) -> None:
        for payload in [b"nope", b"[]", b'{"d": []}', b'{"d": {"x": [1]}}', b'{"e": {}}',
                        b'{"w": [1]}', b'{"e": [{"name": "x"}]}']:
            with self.assertRaises(BadGossip, msg=payload):
                decode_message(payload)
        self.assertEqual(decode_message(encode_message()).entries, [])


class FakeConnection:
    def __init__(self, name: str) -> None:
        self.peer_name = name
        self.sent: List[bytes] = []

    def send_gossip(self, payload: bytes) -> None:
        self.sent.append(payload)


class FakeLink:
    def __init__(self, name: str, gossips: bool = True) -> None:
        self.name = name
        self.gossips = gossips
        self.sent: List[bytes] = []

    def gossip(self, payload: bytes) -> bool:
        self.sent.append(payload)
        return self.gossips


def config(**pool) -> NodeConfig:
    base = {"listen": "10.0.0.1:8102", "dyn_listen": A, "servers": ["127.0.0.1:6379:1"], "tokens": "0",
            "datacenter": "dc1", "rack": "rack1", "gos_interval": 30000, "enable_gossip": True,
            "dyn_seeds": ["%s:rack2:dc1:0" % B]}
    base.update(pool)
    return NodeConfig.from_dict({"dyn_o_mite": base})


class GossiperTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.config = config()
        self.topology = Topology.from_config(self.config)
        self.links = {name: FakeLink(name) for name in (B, C, D, E)}
        self.links[E].gossips = False
        self.gossiper = Gossiper.from_config(self.config, A, self.links, lambda: self.topology, self.clock,
                                             random.Random(1))
        self.heard: List = []
        self.gossiper.listeners.append(lambda seeds, gone: self.heard.append((seeds, gone)))

    def test_own_entry_from_config(self) -> None:
        own = self.gossiper.view.own
        self.assertEqual((own.name, own.datacenter, own.rack, own.tokens, own.status, own.generation),
                         (A, "dc1", "rack1", (0,), "NORMAL", 100000))

    def test_a_round_reaches_up_to_three_gossiping_peers(self) -> None:
        chosen = self.gossiper.round(self.clock.seconds())
        self.assertEqual(len(chosen), FANOUT)
        self.assertNotIn(E, chosen, "a peer whose link does not gossip is skipped")
        for name in chosen:
            self.assertEqual(json.loads(self.links[name].sent[0]), {"d": {A: [100000, 1]}})
        self.assertEqual(self.gossiper.counts["rounds"], 1)

    def test_rounds_are_fast_after_a_change_then_every_gos_interval(self) -> None:
        g = self.gossiper
        g.tick(self.clock.seconds())
        self.assertEqual(g.counts["rounds"], 1)
        self.clock.advance(1.0)
        g.tick(self.clock.seconds())
        self.assertEqual(g.counts["rounds"], 2, "a starting node gossips every second")
        self.clock.advance(FAST_PERIOD)
        g.tick(self.clock.seconds())
        rounds = g.counts["rounds"]
        for _ in range(29):
            self.clock.advance(1.0)
            g.tick(self.clock.seconds())
        self.assertEqual(g.counts["rounds"], rounds, "quiet: one round per gos_interval (30 s)")
        self.clock.advance(1.0)
        g.tick(self.clock.seconds())
        self.assertEqual(g.counts["rounds"], rounds + 1)
        g.received(FakeConnection(B), encode_message(None, [entry(C, rack="rack3", tokens=(0,))]))
        self.clock.advance(1.0)
        g.tick(self.clock.seconds())
        self.assertEqual(g.counts["rounds"], rounds + 2, "a change makes rounds fast again")

    def test_a_received_message_is_answered_on_its_connection_and_applied(self) -> None:
        connection = FakeConnection(B)
        self.gossiper.received(connection, encode_message(
            {B: [1, 1], C: [1, 3]}, [entry(B, rack="rack2")]))
        reply = json.loads(connection.sent[0])
        self.assertEqual(reply["w"], [C])
        self.assertEqual([e["name"] for e in reply["e"]], [A])
        seeds, gone = self.heard[-1]
        self.assertEqual([str(s.address) for s in seeds], [B])
        self.assertEqual(gone, frozenset())
        self.assertEqual(self.gossiper.counts["learned"], 1)
        # the same entry again: nothing learned, nobody told
        self.gossiper.received(connection, encode_message(None, [entry(B, rack="rack2")]))
        self.assertEqual(len(self.heard), 1)

    def test_a_new_stamp_without_a_new_place_is_not_applied(self) -> None:
        self.gossiper.received(FakeConnection(B), encode_message(None, [entry(B, rack="rack2")]))
        self.gossiper.received(FakeConnection(B), encode_message(None, [entry(B, rack="rack2", version=7)]))
        self.assertEqual(len(self.heard), 1)
        self.assertEqual(self.gossiper.view.entries[B].version, 7)

    def test_bad_messages_are_counted_not_raised(self) -> None:
        self.gossiper.received(FakeConnection(B), b"{not json")
        self.assertEqual(self.gossiper.counts["bad_messages"], 1)

    def test_admit_a_newcomer_without_a_clash(self) -> None:
        self.assertIs(self.gossiper.admit(C, "dc1", "rack1", entry(C, tokens=(5,)).to_json()), True)
        self.assertEqual(self.gossiper.counts["refused"], 0)

    def test_admit_refuses_a_token_clash_clearly_and_counts_it(self) -> None:
        why = self.gossiper.admit(C, "dc1", "rack2", entry(C, rack="rack2", tokens=(0,)).to_json())
        self.assertEqual(why, "gossip: node %s refused: token 0 in dc1/rack2 is owned by %s" % (C, B))
        why = self.gossiper.admit(C, "dc1", "rack1", entry(C, tokens=(0,)).to_json())
        self.assertIn("owned by %s" % A, why)
        self.assertEqual(self.gossiper.counts["refused"], 2)

    def test_admit_refuses_an_entry_that_is_not_its_hello(self) -> None:
        self.assertIn("does not match", self.gossiper.admit(C, "dc1", "rack3", entry(C, tokens=(5,)).to_json()))
        self.assertIn("bad tokens", self.gossiper.admit(C, "dc1", "rack1", dict(entry(C).to_json(), tokens=[])))
        self.assertIn("is known in dc1/rack2", self.gossiper.admit(
            B, "dc1", "rack3", entry(B, rack="rack3", tokens=(9,)).to_json()))

    def test_a_removed_node_is_refused_until_it_restarts(self) -> None:
        self.gossiper.learn(entry(C, rack="rack3").to_json())
        self.gossiper.remove(C)
        self.assertEqual(self.heard[-1][1], frozenset({C}))
        self.assertNotIn(C, [str(s.address) for s in self.heard[-1][0]])
        self.assertIn("removed", self.gossiper.admit(C, "dc1", "rack3", entry(C, rack="rack3").to_json()))
        self.assertIs(self.gossiper.admit(C, "dc1", "rack3", entry(C, rack="rack3", generation=2).to_json()),
                      True)

    def test_status(self) -> None:
        self.gossiper.round(self.clock.seconds())
        status = self.gossiper.status()
        self.assertEqual(status["last_round"], 100.0)
        self.assertEqual(status["peers"], [B, C, D])
        self.assertEqual(status["entries"][A]["generation"], 100000)


class HandshakeEntryTests(SynchronousTestCase):

    def run_handshake(self, newcomer):
        me = Identity("dyn_o_mite", A, "dc1", "rack1", None, "10.0.0.1:22222")
        them = Identity("dyn_o_mite", B, "dc1", "rack2", None, "10.0.0.2:22222")
        own = entry(A).to_json()
        connecting = Handshake(me, expected=B, entry=lambda: own)
        accepting = Handshake(them, known=lambda n, d, r: False, entry=lambda: entry(B).to_json(),
                              newcomer=newcomer)
        hello = connecting.start().send[0]
        self.assertEqual(decode_control(hello, ("node",))["entry"], own)
        answer = accepting.receive(hello)
        return connecting, answer

    def test_a_newcomer_with_its_entry_is_welcomed_and_its_entry_kept(self) -> None:
        asked = []
        connecting, answer = self.run_handshake(lambda *a: asked.append(a) or True)
        self.assertEqual(asked, [(A, "dc1", "rack1", entry(A).to_json())])
        self.assertEqual(answer.decision, Ready(A, "dc1", None, (), entry(A).to_json()))
        welcome = connecting.receive(answer.send[0]).decision
        self.assertEqual(welcome.features, ("publish", "numbered-forward", "gossip"))

    def test_a_node_without_gossip_ignores_the_entry_and_does_not_list_the_feature(self) -> None:
        me = Identity("dyn_o_mite", A, "dc1", "rack1", None, "10.0.0.1:22222")
        them = Identity("dyn_o_mite", B, "dc1", "rack2", None, "10.0.0.2:22222")
        connecting = Handshake(me, expected=B, entry=lambda: entry(A).to_json())
        accepting = Handshake(them, known=lambda n, d, r: n == A)
        answer = accepting.receive(connecting.start().send[0])
        self.assertEqual(answer.decision, Ready(A, "dc1", None))
        self.assertEqual(connecting.receive(answer.send[0]).decision.features, ("publish", "numbered-forward"))
        unknown = Handshake(them, known=lambda n, d, r: False)
        self.assertIsInstance(unknown.receive(Handshake(me, expected=B, entry=lambda: entry(A).to_json())
                                              .start().send[0]).decision, RejectPeer)

    def test_a_refused_newcomer_hears_why(self) -> None:
        _, answer = self.run_handshake(lambda *a: "gossip: node refused: token 0 clash")
        self.assertEqual(answer.decision, RejectPeer("gossip: node refused: token 0 clash"))


class ClashInViewTests(SynchronousTestCase):
    """Two members owning one token of a rack (admitted at once by different seeds): one is applied."""

    def test_the_node_already_known_keeps_the_token_else_the_older(self) -> None:
        clock = Clock()
        cfg = config()
        topology = Topology.from_config(cfg)
        gossiper = Gossiper.from_config(cfg, A, {}, lambda: topology, clock)
        gossiper.learn(entry(C, rack="rack3", tokens=(5,), generation=2).to_json())
        gossiper.learn(entry(D, rack="rack3", tokens=(5, 6), generation=1).to_json())
        gossiper.learn(entry(E, rack="rack2", tokens=(0,), generation=0).to_json())
        gossiper.learn(entry(B, rack="rack2", tokens=(0,), generation=9).to_json())
        seeds, _ = gossiper.seeds()
        self.assertEqual(sorted(str(s.address) for s in seeds), [B, D],
                         "rack3: the older generation; rack2: the node the topology has")
