"""
Tests for dynomite.topology: the cluster built from a node's configuration,
where each hash's replicas are, and the errors a bad seed list gets.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.model import Address, ConfigError, NodeConfig, Seed
from dynomite.config.vocabulary import MAX_TOKEN as MAX_HASH
from dynomite.placement.hashing import key_hash
from dynomite.placement.topology import NodeInfo, Topology

#: (dyn address, rack, dc, tokens) of every node of a cluster.
Spec = Sequence[Tuple[str, str, str, str]]

#: 1 DC x 3 racks x 2 nodes; each rack splits the ring at different points.
ONE_DC: Spec = [
    ("127.0.0.1:8101", "r1", "dc1", "1000000000"),
    ("127.0.0.2:8101", "r1", "dc1", "3000000000"),
    ("127.0.0.3:8101", "r2", "dc1", "500000000"),
    ("127.0.0.4:8101", "r2", "dc1", "2500000000"),
    ("127.0.0.5:8101", "r3", "dc1", "1500000000"),
    ("127.0.0.6:8101", "r3", "dc1", "4000000000"),
]

#: 2 DCs x 3 racks; dc1 has 2 nodes per rack, dc2 has 2 in r1 and 1 elsewhere.
TWO_DC: Spec = list(ONE_DC) + [
    ("127.0.1.1:8101", "r1", "dc2", "0"),
    ("127.0.1.2:8101", "r1", "dc2", "2147483648"),
    ("127.0.1.3:8101", "r2", "dc2", "100"),
    ("127.0.1.4:8101", "r3", "dc2", "4294967295"),
]


def seed_text(node: Tuple[str, str, str, str]) -> str:
    address, rack, dc, tokens = node
    return f"{address}:{rack}:{dc}:{tokens}"


def make_config(
    spec: Spec, local: int, seeds: Optional[List[str]] = None, **changes: Any
) -> NodeConfig:
    """The validated config of node ``spec[local]``; seeds default to the others."""
    address, rack, dc, tokens = spec[local]
    if seeds is None:
        seeds = [seed_text(node) for i, node in enumerate(spec) if i != local]
    settings: Dict[str, Any] = {
        "listen": "127.0.0.1:8102",
        "dyn_listen": address,
        "servers": ["127.0.0.1:6379:1"],
        "tokens": tokens,
        "datacenter": dc,
        "rack": rack,
        "dyn_seeds": seeds,
    }
    settings.update(changes)
    return NodeConfig.from_dict({"dyn_o_mite": settings}, source="node.yml")


def build(spec: Spec, local: int = 0, **kwargs: Any) -> Topology:
    return Topology.from_config(make_config(spec, local, **kwargs))


def brute_owner(topology: Topology, dc: str, rack: str, h: int) -> NodeInfo:
    """The node of dc/rack whose token is the smallest >= h, else the smallest token."""
    entries = [(t, n.name) for n in topology.nodes_in_rack(dc, rack) for t in n.tokens]
    above = [e for e in entries if e[0] >= h]
    name = min(above or entries)[1]
    node = topology.node(name)
    assert node is not None
    return node


def names(nodes: Sequence[NodeInfo]) -> List[str]:
    return [n.name for n in nodes]


class StructureTests(SynchronousTestCase):
    """What the cluster looks like once built."""

    def test_one_dc_three_racks(self) -> None:
        t = build(ONE_DC, local=2)
        self.assertEqual(t.datacenters, ("dc1",))
        self.assertEqual(t.racks("dc1"), ("r1", "r2", "r3"))
        self.assertEqual(t.remote_datacenters, ())
        self.assertEqual(len(t.nodes), 6)
        self.assertEqual(names(t.nodes_in_rack("dc1", "r2")), ["127.0.0.3:8101", "127.0.0.4:8101"])

    def test_local_node(self) -> None:
        t = build(ONE_DC, local=2)
        self.assertEqual(t.local.name, "127.0.0.3:8101")
        self.assertEqual(t.local.address, Address("127.0.0.3", 8101))
        self.assertEqual((t.local.datacenter, t.local.rack, t.local.tokens), ("dc1", "r2", (500000000,)))
        self.assertTrue(t.local.is_local)
        self.assertEqual([n.name for n in t.nodes if n.is_local], [t.local.name])

    def test_nodes_sorted_by_dc_rack_name(self) -> None:
        t = build(TWO_DC, local=5)
        keys = [(n.datacenter, n.rack, n.name) for n in t.nodes]
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(len(keys), len(TWO_DC))

    def test_two_dcs(self) -> None:
        t = build(TWO_DC, local=0)
        self.assertEqual(t.datacenters, ("dc1", "dc2"))
        self.assertEqual(t.remote_datacenters, ("dc2",))
        self.assertEqual(t.racks("dc2"), ("r1", "r2", "r3"))
        self.assertEqual(build(TWO_DC, local=7).remote_datacenters, ("dc1",))

    def test_node_by_name(self) -> None:
        t = build(TWO_DC)
        node = t.node("127.0.1.3:8101")
        assert node is not None
        self.assertEqual((node.datacenter, node.rack, node.tokens), ("dc2", "r2", (100,)))
        self.assertFalse(node.is_local)
        self.assertIsNone(t.node("127.0.9.9:8101"))

    def test_ring_of_a_rack(self) -> None:
        t = build(ONE_DC)
        ring = t.ring("dc1", "r1")
        self.assertEqual(names(ring.owners()), ["127.0.0.1:8101", "127.0.0.2:8101"])
        self.assertEqual(ring.owner(3000000001).name, "127.0.0.1:8101")

    def test_unknown_dc_or_rack(self) -> None:
        t = build(ONE_DC)
        self.assertRaises(KeyError, t.racks, "nowhere")
        self.assertRaises(KeyError, t.ring, "dc1", "r9")
        self.assertRaises(KeyError, t.nodes_in_rack, "dc9", "r1")
        self.assertRaises(KeyError, t.dc_replicas, "dc9", 1)
        self.assertRaises(KeyError, t.entry_candidates, "dc9")

    def test_vnodes_from_config(self) -> None:
        spec = [
            ("127.0.0.1:8101", "r1", "dc1", "10,30"),
            ("127.0.0.2:8101", "r1", "dc1", "20,40"),
        ]
        t = build(spec)
        self.assertEqual(t.local.tokens, (10, 30))
        owners = [t.local_replicas(h)[0].name for h in (5, 15, 25, 35, 45)]
        self.assertEqual(owners, ["127.0.0.1:8101", "127.0.0.2:8101"] * 2 + ["127.0.0.1:8101"])

    def test_ipv6_name(self) -> None:
        spec = [("[::1]:8101", "r1", "dc1", "0"), ("[::2]:8101", "r1", "dc1", "9")]
        t = build(spec, listen="[::1]:8102")
        self.assertEqual(t.local.name, "[::1]:8101")
        self.assertEqual(t.local.address, Address("::1", 8101))
        self.assertIsNotNone(t.node("[::2]:8101"))

    def test_without_dyn_listen_a_single_node(self) -> None:
        config = make_config(ONE_DC[:1], 0, seeds=[], dyn_listen=None, listen="10.0.0.7:8102")
        t = Topology.from_config(config)
        self.assertEqual(t.local.name, "10.0.0.7:0")
        self.assertEqual(t.local.address, Address("10.0.0.7", 0))
        self.assertEqual(t.nodes, (t.local,))
        self.assertEqual(t.local_replicas(123), (t.local,))

    def test_seed_identical_to_local_node_is_merged(self) -> None:
        """One seed list can be shared by every node, each finding itself in it."""
        seeds = [seed_text(node) for node in ONE_DC]
        t = build(ONE_DC, local=3, seeds=seeds)
        self.assertEqual(len(t.nodes), 6)
        self.assertEqual(t.local.name, "127.0.0.4:8101")
        self.assertEqual([n.is_local for n in t.nodes].count(True), 1)

    def test_seed_identical_with_tokens_in_another_order(self) -> None:
        spec = [("127.0.0.1:8101", "r1", "dc1", "1,2")]
        t = build(spec, seeds=["127.0.0.1:8101:r1:dc1:2,1"])
        self.assertEqual(t.nodes, (t.local,))

    def test_node_info_hash_and_equality(self) -> None:
        t = build(ONE_DC)
        node = t.nodes[1]
        self.assertEqual(hash(node), hash(node.name))
        self.assertEqual(node, dataclasses.replace(node))
        self.assertNotEqual(node, dataclasses.replace(node, is_local=True))
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, node, "rack", "x")


class PlacementTests(SynchronousTestCase):
    """local_replicas, dc_replicas and replica_key."""

    def test_local_racks_own_rack_first(self) -> None:
        self.assertEqual(build(ONE_DC, local=0).local_racks, ("r1", "r2", "r3"))
        self.assertEqual(build(ONE_DC, local=3).local_racks, ("r2", "r1", "r3"))
        self.assertEqual(build(ONE_DC, local=5).local_racks, ("r3", "r1", "r2"))

    def test_local_replicas_own_rack_first(self) -> None:
        t = build(ONE_DC, local=4)  # rack r3
        replicas = t.local_replicas(2000000000)
        self.assertEqual([n.rack for n in replicas], ["r3", "r1", "r2"])
        self.assertEqual(
            names(replicas), ["127.0.0.6:8101", "127.0.0.2:8101", "127.0.0.4:8101"]
        )

    def test_local_replicas_wrap_and_edges(self) -> None:
        t = build(ONE_DC, local=0)
        smallest = ["127.0.0.1:8101", "127.0.0.3:8101", "127.0.0.5:8101"]
        self.assertEqual(names(t.local_replicas(0)), smallest)
        self.assertEqual(names(t.local_replicas(MAX_HASH)), smallest)
        self.assertEqual(names(t.local_replicas(4000000001)), smallest)
        # A hash equal to a token goes to that token's owner.
        self.assertEqual(
            names(t.local_replicas(4000000000)),
            ["127.0.0.1:8101", "127.0.0.3:8101", "127.0.0.6:8101"],
        )
        self.assertEqual(
            names(t.local_replicas(500000000)),
            ["127.0.0.1:8101", "127.0.0.3:8101", "127.0.0.5:8101"],
        )
        self.assertEqual(
            names(t.local_replicas(500000001)),
            ["127.0.0.1:8101", "127.0.0.4:8101", "127.0.0.5:8101"],
        )

    def test_local_replicas_only_local_dc(self) -> None:
        t = build(TWO_DC, local=8)  # dc2, rack r2
        replicas = t.local_replicas(50)
        self.assertEqual([(n.datacenter, n.rack) for n in replicas], [("dc2", "r2"), ("dc2", "r1"), ("dc2", "r3")])
        self.assertEqual(names(replicas), ["127.0.1.3:8101", "127.0.1.2:8101", "127.0.1.4:8101"])

    def test_dc_replicas_in_sorted_rack_order(self) -> None:
        t = build(TWO_DC, local=3)  # dc1, rack r2
        self.assertEqual(
            names(t.dc_replicas("dc1", 2000000000)),
            ["127.0.0.2:8101", "127.0.0.4:8101", "127.0.0.6:8101"],
        )
        self.assertEqual(
            names(t.dc_replicas("dc2", 0)), ["127.0.1.1:8101", "127.0.1.3:8101", "127.0.1.4:8101"]
        )
        self.assertEqual(
            names(t.dc_replicas("dc2", 101)), ["127.0.1.2:8101", "127.0.1.3:8101", "127.0.1.4:8101"]
        )
        self.assertEqual(
            names(t.dc_replicas("dc2", 2147483649)),
            ["127.0.1.1:8101", "127.0.1.3:8101", "127.0.1.4:8101"],
        )
        # dc_replicas of the local DC is local_replicas in sorted rack order.
        for h in (0, 600000000, 2600000000, MAX_HASH):
            self.assertEqual(
                sorted(t.dc_replicas("dc1", h), key=lambda n: n.rack),
                sorted(t.local_replicas(h), key=lambda n: n.rack),
            )

    def test_replica_key_equal_iff_owners_equal(self) -> None:
        t = build(TWO_DC, local=0)
        rng = random.Random(17)
        tokens = {tok for n in t.nodes for tok in n.tokens}
        hashes = sorted(
            {0, MAX_HASH}
            | {x for tok in tokens for x in (tok - 1, tok, tok + 1) if 0 <= x <= MAX_HASH}
            | {rng.randrange(MAX_HASH + 1) for _ in range(300)}
        )

        def every_owner(h: int) -> Tuple[NodeInfo, ...]:
            return tuple(
                t.ring(dc, rack).owner(h) for dc in t.datacenters for rack in t.racks(dc)
            )

        keys = [t.replica_key(h) for h in hashes]
        owners = [every_owner(h) for h in hashes]
        distinct = set()
        for i in range(len(hashes)):
            for j in range(i, len(hashes)):
                self.assertEqual(keys[i] == keys[j], owners[i] == owners[j], (hashes[i], hashes[j]))
            distinct.add(keys[i])
        # The test means something only if both outcomes occur.
        self.assertGreater(len(distinct), 3)
        self.assertLess(len(distinct), len(hashes))

    def test_replica_key_groups_keys(self) -> None:
        """Grouping MGET keys by replica_key puts keys together iff all their owners match."""
        t = build(TWO_DC, local=1)
        groups: Dict[Tuple[str, ...], List[bytes]] = {}
        for i in range(500):
            key = b"key:%d" % i
            groups.setdefault(t.replica_key(key_hash(key)), []).append(key)
        for members in groups.values():
            first = key_hash(members[0])
            for key in members[1:]:
                h = key_hash(key)
                for dc in t.datacenters:
                    self.assertEqual(t.dc_replicas(dc, h), t.dc_replicas(dc, first))
        self.assertGreater(len(groups), 1)

    def test_replica_key_is_hashable_and_shared(self) -> None:
        t = build(ONE_DC)
        self.assertIs(t.replica_key(1), t.replica_key(2))
        self.assertEqual(
            t.replica_key(1), ("127.0.0.1:8101", "127.0.0.3:8101", "127.0.0.5:8101")
        )
        hash(t.replica_key(1))

    def test_owner_is_smallest_token_at_or_above_hash(self) -> None:
        """Property: for 10,000 random keys, every rack's owner matches brute force."""
        rng = random.Random(23)
        spec: List[Tuple[str, str, str, str]] = []
        used: Set[Tuple[str, str, int]] = set()
        for dc, racks in (("dc1", ("r1", "r2", "r3")), ("dc2", ("r1", "r2"))):
            for rack in racks:
                for n in range(rng.randint(1, 4)):
                    tokens = [rng.randrange(MAX_HASH + 1) for _ in range(rng.randint(1, 3))]
                    tokens = [tok for tok in tokens if (dc, rack, tok) not in used]
                    used.update((dc, rack, tok) for tok in tokens)
                    address = f"10.{len(spec)}.0.1:8101"
                    spec.append((address, rack, dc, ",".join(map(str, tokens))))
        spec.append(("10.99.0.1:8101", "r2", "dc1", f"0,{MAX_HASH}"))
        t = build(spec, local=len(spec) - 1)
        for i in range(10000):
            h = key_hash(b"%d:%d" % (rng.randrange(2**62), i))
            self.assertEqual(
                t.local_replicas(h),
                tuple(brute_owner(t, "dc1", rack, h) for rack in t.local_racks),
            )
            for dc in t.datacenters:
                self.assertEqual(
                    t.dc_replicas(dc, h),
                    tuple(brute_owner(t, dc, rack, h) for rack in t.racks(dc)),
                )


class EntryCandidateTests(SynchronousTestCase):
    """Which node of a remote DC receives this node's cross-DC writes."""

    def test_preselected_rack_first_then_rotation(self) -> None:
        # Sender in dc1 rack r2 (index 1 of 3): dc2 rack index 1 first.
        t = build(TWO_DC, local=2)
        self.assertEqual([n.rack for n in t.entry_candidates("dc2")], ["r2", "r3", "r1"])
        t = build(TWO_DC, local=4)  # r3, index 2
        self.assertEqual([n.rack for n in t.entry_candidates("dc2")], ["r3", "r1", "r2"])
        t = build(TWO_DC, local=0)  # r1, index 0
        self.assertEqual([n.rack for n in t.entry_candidates("dc2")], ["r1", "r2", "r3"])

    def test_node_within_rack_follows_sender_index(self) -> None:
        # First node of its rack picks the first node; second picks the second.
        first = build(TWO_DC, local=0).entry_candidates("dc2")
        self.assertEqual(names(first), ["127.0.1.1:8101", "127.0.1.3:8101", "127.0.1.4:8101"])
        second = build(TWO_DC, local=1).entry_candidates("dc2")
        self.assertEqual(names(second), ["127.0.1.2:8101", "127.0.1.3:8101", "127.0.1.4:8101"])

    def test_rack_index_modulo_remote_rack_count(self) -> None:
        spec = [
            ("127.0.0.1:8101", "a", "east", "1"),
            ("127.0.0.2:8101", "b", "east", "1"),
            ("127.0.0.3:8101", "c", "east", "1"),
            ("127.0.1.1:8101", "x", "west", "1"),
            ("127.0.1.2:8101", "y", "west", "1"),
        ]
        # Rack c is index 2 in east; west has 2 racks: 2 mod 2 = 0 -> x.
        self.assertEqual([n.rack for n in build(spec, local=2).entry_candidates("west")], ["x", "y"])
        self.assertEqual([n.rack for n in build(spec, local=1).entry_candidates("west")], ["y", "x"])
        # From west (2 racks) to east (3 racks): y is index 1 -> b, c, a.
        self.assertEqual([n.rack for n in build(spec, local=4).entry_candidates("east")], ["b", "c", "a"])

    def test_one_candidate_per_rack_of_that_dc(self) -> None:
        t = build(TWO_DC, local=5)
        for dc in t.datacenters:
            candidates = t.entry_candidates(dc)
            self.assertEqual(sorted(n.rack for n in candidates), list(t.racks(dc)))
            self.assertTrue(all(n.datacenter == dc for n in candidates))

    def test_own_dc_starts_with_this_node(self) -> None:
        t = build(TWO_DC, local=3)
        self.assertEqual(t.entry_candidates("dc1")[0], t.local)


class ValidationTests(SynchronousTestCase):
    """Incoherent clusters are refused at start with the key and the reason."""

    def assertConfigError(self, config: NodeConfig, key: str, *fragments: str) -> ConfigError:
        e = self.assertRaises(ConfigError, Topology.from_config, config)
        self.assertEqual((e.source, e.key), ("node.yml", key))
        for fragment in fragments:
            self.assertIn(fragment, e.reason)
        self.assertTrue(str(e).startswith(f"node.yml: {key}: "))
        return e

    def test_local_token_clashes_with_seed_in_same_rack(self) -> None:
        seeds = ["127.0.0.2:8101:r1:dc1:1000000000"]
        config = make_config(ONE_DC, 0, seeds=seeds)
        self.assertConfigError(
            config, "tokens", "127.0.0.1:8101", "127.0.0.2:8101", "token 1000000000", "dc1/r1"
        )

    def test_same_token_in_other_racks_and_dcs_is_fine(self) -> None:
        seeds = ["127.0.0.2:8101:r2:dc1:1000000000", "127.0.0.3:8101:r1:dc2:1000000000"]
        t = Topology.from_config(make_config(ONE_DC, 0, seeds=seeds))
        self.assertEqual(len(t.nodes), 3)

    def test_seeds_clash_with_each_other(self) -> None:
        # The config parser already refuses this ...
        seeds = ["127.0.0.2:8101:r1:dc1:7", "127.0.0.3:8101:r1:dc1:7"]
        e = self.assertRaises(ConfigError, make_config, ONE_DC, 0, seeds=seeds)
        self.assertEqual(e.key, "dyn_seeds")
        # ... and so does the topology, for configs built without it.
        config = dataclasses.replace(
            make_config(ONE_DC, 0, seeds=[]),
            dyn_seeds=(
                Seed(Address("127.0.0.2", 8101), "r1", "dc1", (7,)),
                Seed(Address("127.0.0.3", 8101), "r1", "dc1", (8, 7)),
            ),
        )
        self.assertConfigError(config, "dyn_seeds", "127.0.0.2:8101", "127.0.0.3:8101", "token 7")

    def test_seed_listed_twice(self) -> None:
        seed = Seed(Address("127.0.0.2", 8101), "r1", "dc1", (7,))
        config = dataclasses.replace(make_config(ONE_DC, 0, seeds=[]), dyn_seeds=(seed, seed))
        self.assertConfigError(config, "dyn_seeds", "127.0.0.2:8101", "listed twice")

    def test_seed_contradicts_local_dc(self) -> None:
        config = make_config(ONE_DC, 0, seeds=["127.0.0.1:8101:r1:dc9:1000000000"])
        self.assertConfigError(
            config, "dyn_seeds", "127.0.0.1:8101", "contradicts this node's own entry", "dc9", "dc1"
        )

    def test_seed_contradicts_local_rack(self) -> None:
        config = make_config(ONE_DC, 0, seeds=["127.0.0.1:8101:r2:dc1:1000000000"])
        self.assertConfigError(config, "dyn_seeds", "contradicts this node's own entry", "r2")

    def test_seed_contradicts_local_tokens(self) -> None:
        config = make_config(ONE_DC, 0, seeds=["127.0.0.1:8101:r1:dc1:1000000001"])
        self.assertConfigError(
            config, "dyn_seeds", "contradicts this node's own entry", "1000000001", "1000000000"
        )

    def test_seeds_without_dyn_listen(self) -> None:
        config = dataclasses.replace(make_config(ONE_DC, 0), dyn_listen=None)
        self.assertConfigError(config, "dyn_listen", "required")

    def test_local_node_without_tokens(self) -> None:
        config = dataclasses.replace(make_config(ONE_DC, 0), tokens=())
        self.assertConfigError(config, "tokens", "127.0.0.1:8101", "no tokens")

    def test_local_token_listed_twice(self) -> None:
        config = dataclasses.replace(make_config(ONE_DC, 0), tokens=(5, 5))
        self.assertConfigError(config, "tokens", "token 5", "twice")

    def test_token_out_of_range(self) -> None:
        config = dataclasses.replace(make_config(ONE_DC, 0, seeds=[]), tokens=(2**32,))
        self.assertConfigError(config, "tokens", "out of range")

    def test_constructor_checks(self) -> None:
        """Topology() itself refuses the same problems, as ValueError."""
        a = NodeInfo("a:1", "dc", "r", Address("a", 1), (1,), is_local=True)
        b = NodeInfo("b:1", "dc", "r", Address("b", 1), (2,))
        self.assertIn("exactly one local", str(self.assertRaises(ValueError, Topology, [b])))
        self.assertIn(
            "exactly one local",
            str(self.assertRaises(ValueError, Topology, [a, dataclasses.replace(b, is_local=True)])),
        )
        self.assertIn(
            "listed twice",
            str(self.assertRaises(ValueError, Topology, [a, b, dataclasses.replace(b, tokens=(3,))])),
        )
        clash = dataclasses.replace(b, tokens=(1,))
        self.assertIn("both own token 1", str(self.assertRaises(ValueError, Topology, [a, clash])))
        self.assertEqual(len(Topology([a, b]).nodes), 2)


class WildcardListenTests(SynchronousTestCase):
    """A node bound to 0.0.0.0 is named as its peers name it, so the shared seed list does not clash."""

    def _config(self, **changes: Any) -> NodeConfig:
        pool = {"listen": "0.0.0.0:8102", "dyn_listen": "0.0.0.0:8101", "servers": ["127.0.0.1:6379:1"],
                "tokens": "0", "datacenter": "dc1", "rack": "rack1",
                "dyn_seeds": ["10.0.0.1:8101:rack1:dc1:0", "10.0.0.2:8101:rack2:dc1:0"]}
        pool.update(changes)
        return NodeConfig.from_dict({"dyn_o_mite": pool}, source="w.yml")

    def test_named_by_its_seed_entry(self) -> None:
        topology = Topology.from_config(self._config())
        self.assertEqual(topology.local.name, "10.0.0.1:8101")
        self.assertEqual(names(topology.nodes), ["10.0.0.1:8101", "10.0.0.2:8101"])

    def test_named_by_dyn_advertise(self) -> None:
        topology = Topology.from_config(self._config(
            dyn_advertise="node-1.dyn.svc:8101",
            dyn_seeds=["node-1.dyn.svc:8101:rack1:dc1:0", "node-2.dyn.svc:8101:rack2:dc1:0"]))
        self.assertEqual(topology.local.name, "node-1.dyn.svc:8101")
        self.assertEqual(len(topology.nodes), 2)
