"""
Multi-key commands through a cluster of real processes: MGET, MSET, DEL,
EXISTS, UNLINK and TOUCH split over keys of different owners answer
exactly what a plain redis-server answers and leave the same data on the
owners; hash tags (``hash_tag: "{}"``) keep keys together so that commands
such as RENAME and SMOVE work, and answer CROSSSLOT when they cannot.
Uses the shared 1 DC x 3 racks x 2 nodes cluster and plain redis-server of
``tests/integration/fixtures/cases.py``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from dynomite.launcher.cluster import ClusterNode
from tests.integration.fixtures.cases import CONVERGE_TIMEOUT, ClusterTestCase, plain_redis
from tests.integration.fixtures.common import poll
from tests.integration.fixtures.resp import decode_reply


# ---------------------------------------------------------------------------
# split multi-key commands vs a plain redis-server


class MultiKeyDifferentialTests(ClusterTestCase):
    """MGET/MSET/DEL/EXISTS/UNLINK/TOUCH over keys of different owners answer like Redis."""

    def setUp(self) -> None:
        super().setUp()
        self.plain = plain_redis()
        self.plain.reset()
        groups = self.fx.keys_by_replica_set(self.prefix + "k", per_set=4, sets=2)
        # interleave the two owners' keys: k[0] on one replica set, k[1] on the other, ...
        self.keys = [k for pair in zip(*groups) for k in pair]
        self.assertEqual(len({self.fx.replica_set(k) for k in self.keys}), 2)
        self.missing = [self.prefix + "missing-a", self.prefix + "missing-b"]

    def compare(self, commands: Sequence[Sequence[Any]], coordinator: ClusterNode,
                consistency: Optional[str] = None, resp: int = 2) -> None:
        node_conn = self.raw(coordinator, consistency, resp)
        plain_conn = self.plain.raw()
        self.addCleanup(plain_conn.close)
        if resp == 3:
            plain_conn.command("HELLO", "3")
        mismatches = []
        for command in commands:
            want = plain_conn.command(*command)
            got = node_conn.command(*command)
            if got != want:
                mismatches.append(f"  {' '.join(map(str, command))}\n    redis: {want!r}\n    node:  {got!r}")
        self.assertEqual(mismatches, [], f"via {coordinator.name} at {consistency or 'DC_ONE'}, RESP{resp}:\n"
                         + "\n".join(mismatches))

    def scripted(self) -> List[Tuple[Any, ...]]:
        k, m = self.keys, self.missing
        lst = self.prefix + "list"
        return [
            ("MSET", *[x for i, key in enumerate(k) for x in (key, f"v{i}")]),
            ("MGET", *k),
            ("MSET", k[0], "first", k[5], "x", k[0], "second"),  # a duplicate key: the last value wins
            ("MGET", k[0], k[5], m[0], k[0], k[1], m[1], k[7], m[0]),
            ("EXISTS", k[0], k[0], m[0], k[1], k[5], m[1], k[5]),
            ("TOUCH", k[1], k[1], m[0], k[6], k[2]),
            ("RPUSH", lst, "a"),
            ("MGET", k[1], lst, k[2]),  # a list is a nil in MGET
            ("EXISTS", lst, k[3], lst),
            ("DEL", k[0], k[0], m[0], k[1], k[4]),
            ("MGET", k[0], k[1], k[4], k[5]),
            ("UNLINK", k[5], k[5], k[6], m[1]),
            ("DEL", m[0], m[1]),
            ("UNLINK", m[1]),
            ("EXISTS", *k),
            ("TOUCH", m[0], m[1]),
            ("MGET", *k, *m),
            ("MSET", k[7], "", k[6], "7" * 300),
            ("MGET", k[6], k[7]),
            ("DEL", *k, lst, *m),
            ("MGET", *k),
            ("EXISTS", *k),
        ]

    def assertFinalStateMatchesPlain(self) -> None:
        """Each key's owners hold what the plain redis-server holds; other nodes hold nothing."""
        everything = self.keys + self.missing + [self.prefix + "list"]
        with self.plain.raw() as conn:
            want = {k.encode(): decode_reply(conn.command("DUMP", k)) is not None for k in everything}
            values = {k.encode(): decode_reply(conn.command("GET", k)) if want[k.encode()] else None
                      for k in self.keys}

        def state() -> List[str]:
            bad = []
            for key in everything:
                owners = {o.name for o in self.fx.owners(key)}
                for n in self.fx.nodes:
                    has = self.fx.backend(n).exists(key) == 1
                    should = want[key.encode()] and n.name in owners
                    if has != should:
                        bad.append(f"{n.name} {'has' if has else 'lacks'} {key!r}")
                    elif has and key in self.keys and self.fx.backend(n).get(key) != values[key.encode()]:
                        bad.append(f"{n.name}: {key!r} differs")
            return bad

        poll(lambda: not state(), CONVERGE_TIMEOUT, 0.1)
        self.assertEqual(state(), [])

    def test_scripted_sequence_dc_one_resp2(self) -> None:
        self.compare(self.scripted(), self.fx.node("dc1-rack2-0"))
        self.assertFinalStateMatchesPlain()

    def test_scripted_sequence_dc_safe_quorum_resp3(self) -> None:
        self.compare(self.scripted(), self.fx.node("dc1-rack3-1"), "DC_SAFE_QUORUM", resp=3)
        self.assertFinalStateMatchesPlain()

    def test_state_left_by_the_sequence(self) -> None:
        """Stop half-way: the owners of every key hold exactly what Redis holds."""
        self.compare(self.scripted()[:12], self.fx.node("dc1-rack1-1"))
        self.assertFinalStateMatchesPlain()

    def test_random_sequence_matches_redis(self) -> None:
        keys = self.keys + self.missing
        commands: List[Tuple[Any, ...]] = []
        for i in range(300):
            name = self.rng.choice(["MGET", "MSET", "DEL", "EXISTS", "UNLINK", "TOUCH", "MGET", "MSET"])
            chosen = [self.rng.choice(keys) for _ in range(self.rng.randint(1, 7))]
            if name == "MSET":
                commands.append((name, *[x for key in chosen for x in (key, f"r{i}-{key}")]))
            else:
                commands.append((name, *chosen))
        coordinator = self.rng.choice(self.fx.nodes)
        self.compare(commands, coordinator)
        self.assertFinalStateMatchesPlain()

    def test_large_commands_match_redis(self) -> None:
        keys = [f"{self.prefix}big{i}" for i in range(1000)]
        self.assertEqual(len({self.fx.replica_set(k) for k in keys}), 2)
        commands = [
            ("MSET", *[x for i, k in enumerate(keys[::2]) for x in (k, f"{i}" * (i % 50))]),
            ("MGET", *keys, *keys[:10]),
            ("EXISTS", *keys),
            ("TOUCH", *reversed(keys)),
            ("UNLINK", *keys[:300]),
            ("DEL", *keys[250:600]),
            ("MGET", *reversed(keys)),
        ]
        self.compare(commands, self.fx.node("dc1-rack2-1"))

    def test_wrong_arity_errors_match_redis(self) -> None:
        k = self.keys
        commands = [("MGET",), ("MSET",), ("MSET", k[0]), ("MSET", k[0], "v", k[1]), ("DEL",),
                    ("EXISTS",), ("UNLINK",), ("TOUCH",), ("PING",)]
        self.compare(commands, self.fx.node("dc1-rack1-0"))


# ---------------------------------------------------------------------------
# hash tags (hash_tag: "{}")


class HashTagTests(ClusterTestCase):
    """Keys with the same tag share a node; multi-key commands need one owner."""

    def tags_on_both_owners(self) -> List[str]:
        """Two tags with different owners (one per node of each rack)."""
        found: Dict[Tuple[str, ...], str] = {}
        for i in range(10_000):
            found.setdefault(self.fx.replica_set(f"user{i}"), f"user{i}")
            if len(found) == 2:
                return list(found.values())
        raise AssertionError("no tags on two owners")

    def untagged_pair(self, same_owner: bool, same_leader: bool = False) -> Tuple[str, str]:
        a = self.prefix + "plain-a"
        for i in range(10_000):
            b = f"{self.prefix}plain-b{i}"
            if (self.fx.replica_set(a) == self.fx.replica_set(b)) != same_owner:
                continue
            if same_owner and (self.fx.leaders(a)[0] == self.fx.leaders(b)[0]) != same_leader:
                continue
            return a, b
        raise AssertionError("no pair")

    def test_tagged_keys_share_a_backend_in_every_rack(self) -> None:
        tags = [f"user{i}" for i in range(1, 17)]
        owner_sets = {self.fx.replica_set(t) for t in tags}
        self.assertEqual(len(owner_sets), 2, "precondition: the tags cover both nodes of each rack")
        writer = self.client(self.fx.node("dc1-rack2-1"))
        data = {}
        for tag in tags:
            for suffix in ("a", "b", "c"):
                key = f"{{{tag}}}.{suffix}".encode()
                self.assertIs(writer.set(key, tag), True)
                data[key] = tag.encode()
        self.assertReplicated(data)
        scattered = 0
        for tag in tags:
            keys = [f"{{{tag}}}.{s}" for s in ("a", "b", "c")]
            for (dc, rack), rack_nodes in self.fx.racks().items():
                holders = {n.name for n in rack_nodes for k in keys if self.fx.backend(n).exists(k)}
                self.assertEqual(holders, {self.fx.owner(tag, dc, rack).name},
                                 f"keys of tag {tag!r} in {dc}/{rack}")
            # without the tag the keys would not all be on one node
            scattered += len({self.fx.owner(k, "dc1", "rack1", tagged=False).name for k in keys}) > 1
        self.assertGreater(scattered, 0, "precondition: untagged, some of these keys would be split")

    def test_multi_key_commands_on_tagged_keys_work(self) -> None:
        for tag in self.tags_on_both_owners():
            t = "{%s}" % tag
            coordinator = self.fx.node("dc1-rack3-0")
            conn = self.raw(coordinator)
            self.assertEqual(conn.command("SET", t + ".a", "hello"), b"+OK\r\n")
            self.assertEqual(conn.command("RENAME", t + ".a", t + ".c"), b"+OK\r\n")
            self.assertEqual(conn.command("GET", t + ".c"), b"$5\r\nhello\r\n")
            self.assertEqual(conn.command("EXISTS", t + ".a"), b":0\r\n")
            self.assertEqual(conn.command("SADD", t + ".s1", "x", "y", "z"), b":3\r\n")
            self.assertEqual(conn.command("SADD", t + ".s2", "y"), b":1\r\n")
            self.assertEqual(conn.command("SMOVE", t + ".s1", t + ".s2", "z"), b":1\r\n")
            self.assertEqual(conn.command("SINTERSTORE", t + ".dst", t + ".s1", t + ".s2"), b":1\r\n")
            self.assertEqual(conn.command("SMEMBERS", t + ".dst"), b"*1\r\n$1\r\ny\r\n")
            self.assertEqual(conn.command("MSETNX", t + ".n1", "1", t + ".n2", "2"), b":1\r\n")
            # every rack's owner of the tag ran them
            for owner in self.fx.owners(tag):
                b = self.fx.backend(owner)

                def applied() -> bool:
                    return (b.get(t + ".c") == b"hello" and not b.exists(t + ".a")
                            and b.smembers(t + ".s2") == {b"y", b"z"} and b.smembers(t + ".dst") == {b"y"}
                            and b.get(t + ".n2") == b"2")

                self.assertTrue(poll(applied, CONVERGE_TIMEOUT), f"tag {tag!r} on {owner.name}: {b.keys()}")

    def test_multi_key_commands_across_owners_answer_crossslot(self) -> None:
        a, b = self.untagged_pair(same_owner=False)
        conn = self.raw(self.fx.node("dc1-rack1-0"))
        self.assertEqual(conn.command("SET", a, "1"), b"+OK\r\n")
        self.assertEqual(conn.command("SADD", a + "-set", "m"), b":1\r\n")
        c, d = a + "-set", None
        for i in range(10_000):  # a set key on the other owner
            d = f"{self.prefix}other-set{i}"
            if self.fx.replica_set(d) != self.fx.replica_set(c):
                break
        attempts = [
            ("RENAME", a, b),
            ("SMOVE", c, d, "m"),
            ("SINTERSTORE", d, c, c),
            ("SINTERSTORE", c, c, d),
            ("MSETNX", a, "1", b, "2"),
        ]
        for command in attempts:
            reply = conn.command(*command)
            self.assertTrue(reply.startswith(b"-CROSSSLOT"), f"{command}: {reply!r}")
        self.assertEqual(conn.command("PING"), b"+PONG\r\n")
        self.assertEqual(conn.command("GET", a), b"$1\r\n1\r\n", "nothing was renamed")
        self.assertEqual(conn.command("EXISTS", b), b":0\r\n")
        # keys that happen to share their owners and their leader need no tag
        e, f = self.untagged_pair(same_owner=True, same_leader=True)
        self.assertEqual(conn.command("SET", e, "v"), b"+OK\r\n")
        self.assertEqual(conn.command("RENAME", e, f), b"+OK\r\n")
        self.assertEqual(conn.command("GET", f), b"$1\r\nv\r\n")
        # the same owners but another leader: a write would not be in either
        # key's order (`dynomite.node.leader`); a read may go
        g, h = self.untagged_pair(same_owner=True, same_leader=False)
        self.assertEqual(conn.command("SET", g, "w"), b"+OK\r\n")
        self.assertTrue(conn.command("RENAME", g, h).startswith(b"-CROSSSLOT"))
        self.assertTrue(conn.command("SUNION", g, h).startswith(b"-WRONGTYPE"))   # Redis answered
