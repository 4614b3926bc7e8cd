"""
Tests for dynomite.hashing and dynomite.ring: MurmurHash3 placement hashes,
hash tags, and token rings that wrap around.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from typing import List, Sequence, Tuple

import mmh3
from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.vocabulary import MAX_TOKEN
from dynomite.placement.hashing import hash_part, key_hash
from dynomite.placement.ring import Ring, owner_table


def brute_owner(entries: Sequence[Tuple[int, str]], h: int) -> str:
    """The owner of h by definition: smallest token >= h, else smallest token."""
    above = [(token, owner) for token, owner in entries if token >= h]
    return min(above or entries)[1]


def random_entries(rng: random.Random, owners: int, per_owner: int) -> List[Tuple[int, str]]:
    tokens = rng.sample(range(MAX_TOKEN + 1), owners * per_owner)
    return [(token, f"n{i % owners}") for i, token in enumerate(tokens)]


def probes(entries: Sequence[Tuple[int, str]], rng: random.Random, count: int) -> List[int]:
    """Hashes worth checking: the ends, every token and its neighbours, random ones."""
    points = {0, 1, MAX_TOKEN - 1, MAX_TOKEN}
    for token, _ in entries:
        points.update(t for t in (token - 1, token, token + 1) if 0 <= t <= MAX_TOKEN)
    points.update(rng.randrange(MAX_TOKEN + 1) for _ in range(count))
    return sorted(points)


class KeyHashTests(SynchronousTestCase):
    """MurmurHash3 x86 32-bit, unsigned, seed 0."""

    def test_reference_values(self) -> None:
        """
        Published MurmurHash3_x86_32 values (seed 0), independent of mmh3:
        a hash change would silently move every key of a running cluster.
        """
        self.assertEqual(key_hash(b"foo"), 4138058784)
        self.assertEqual(key_hash(b""), 0)
        self.assertEqual(key_hash(b"hello"), 0x248BFA47)
        self.assertEqual(key_hash(b"The quick brown fox jumps over the lazy dog"), 0x2E4FF723)

    def test_matches_mmh3_unsigned_seed_0(self) -> None:
        rng = random.Random(7)
        keys = [b"user:1", b"\x00\xff\x80binary", "ключ".encode("utf-8")]
        keys += [bytes(rng.randrange(256) for _ in range(rng.randrange(64))) for _ in range(200)]
        for key in keys:
            self.assertEqual(key_hash(key), mmh3.hash(key, 0, signed=False))
            self.assertTrue(0 <= key_hash(key) <= MAX_TOKEN)

    def test_some_hashes_use_the_top_bit(self) -> None:
        """Unsigned: values above 2**31 come back positive, not negative."""
        self.assertGreater(key_hash(b"foo"), 2**31)

    def test_no_tag_is_whole_key(self) -> None:
        self.assertEqual(key_hash(b"{user1}.a", None), key_hash(b"{user1}.a"))
        self.assertNotEqual(key_hash(b"{user1}.a"), key_hash(b"{user1}.b"))


class HashTagTests(SynchronousTestCase):
    """Twemproxy / Redis Cluster hash tag rules."""

    tag = b"{}"

    def test_same_tag_same_hash(self) -> None:
        a = key_hash(b"{user1}.a", self.tag)
        self.assertEqual(a, key_hash(b"{user1}.b", self.tag))
        self.assertEqual(a, key_hash(b"user1", self.tag))
        self.assertEqual(a, key_hash(b"user1"))
        self.assertEqual(a, key_hash(b"prefix{user1}suffix", self.tag))

    def test_empty_tag_hashes_whole_key(self) -> None:
        self.assertEqual(hash_part(b"{}x", self.tag), b"{}x")
        self.assertEqual(key_hash(b"{}x", self.tag), key_hash(b"{}x"))

    def test_unclosed_tag_hashes_whole_key(self) -> None:
        self.assertEqual(hash_part(b"x{", self.tag), b"x{")
        self.assertEqual(key_hash(b"x{", self.tag), key_hash(b"x{"))
        self.assertEqual(hash_part(b"x{abc", self.tag), b"x{abc")

    def test_no_opening_byte_hashes_whole_key(self) -> None:
        self.assertEqual(hash_part(b"plain", self.tag), b"plain")
        self.assertEqual(hash_part(b"a}b", self.tag), b"a}b")

    def test_closing_before_opening_is_ignored(self) -> None:
        """Only a closing byte after the first opening byte counts."""
        self.assertEqual(hash_part(b"a}b{c", self.tag), b"a}b{c")
        self.assertEqual(hash_part(b"}x{tag}", self.tag), b"tag")

    def test_first_opening_and_first_closing_after_it(self) -> None:
        self.assertEqual(hash_part(b"{a}{b}", self.tag), b"a")
        self.assertEqual(hash_part(b"{{a}}", self.tag), b"{a")
        self.assertEqual(hash_part(b"x{}{y}", self.tag), b"x{}{y}")

    def test_other_tag_bytes(self) -> None:
        """Both tag bytes may be the same character."""
        tag = b"$$"
        self.assertEqual(hash_part(b"order$42$lines", tag), b"42")
        self.assertEqual(key_hash(b"order$42$lines", tag), key_hash(b"user$42$", tag))
        self.assertEqual(hash_part(b"$$x", tag), b"$$x")
        self.assertEqual(hash_part(b"a$b", tag), b"a$b")
        self.assertEqual(hash_part(b"{x}", tag), b"{x}")
        self.assertEqual(hash_part(b"a[b]c", b"[]"), b"b")

    def test_bad_tag_length(self) -> None:
        for tag in (b"", b"{", b"{}}"):
            self.assertRaises(ValueError, key_hash, b"k", tag)


class RingOwnerTests(SynchronousTestCase):
    """Ring.owner: the smallest token >= h, wrapping to the smallest token."""

    def setUp(self) -> None:
        self.ring = Ring([(300, "c"), (100, "a"), (200, "b")])

    def test_hash_equal_to_token(self) -> None:
        self.assertEqual(self.ring.owner(100), "a")
        self.assertEqual(self.ring.owner(200), "b")
        self.assertEqual(self.ring.owner(300), "c")

    def test_hash_between_tokens_goes_up(self) -> None:
        self.assertEqual(self.ring.owner(101), "b")
        self.assertEqual(self.ring.owner(199), "b")
        self.assertEqual(self.ring.owner(201), "c")

    def test_hash_above_largest_token_wraps_to_smallest(self) -> None:
        self.assertEqual(self.ring.owner(301), "a")
        self.assertEqual(self.ring.owner(MAX_TOKEN), "a")
        self.assertEqual(self.ring.token(301), 100)

    def test_zero(self) -> None:
        self.assertEqual(self.ring.owner(0), "a")
        ring = Ring([(0, "zero"), (10, "ten")])
        self.assertEqual(ring.owner(0), "zero")
        self.assertEqual(ring.owner(11), "zero")

    def test_token_at_the_top(self) -> None:
        ring = Ring([(MAX_TOKEN, "top"), (5, "low")])
        self.assertEqual(ring.owner(MAX_TOKEN), "top")
        self.assertEqual(ring.owner(MAX_TOKEN - 1), "top")
        self.assertEqual(ring.owner(6), "top")
        self.assertEqual(ring.owner(0), "low")

    def test_single_token_owns_everything(self) -> None:
        ring = Ring([(12345, "only")])
        for h in (0, 12344, 12345, 12346, MAX_TOKEN):
            self.assertEqual(ring.owner(h), "only")

    def test_virtual_nodes(self) -> None:
        ring = Ring([(10, "A"), (20, "B"), (30, "A"), (40, "B")])
        self.assertEqual([ring.owner(h) for h in (5, 15, 25, 35, 45)], ["A", "B", "A", "B", "A"])
        self.assertEqual(ring.owners(), ["A", "B"])
        self.assertEqual(len(ring), 4)
        self.assertEqual(ring.tokens, (10, 20, 30, 40))

    def test_owners_in_token_order(self) -> None:
        ring = Ring([(50, "late"), (7, "early"), (60, "early"), (20, "middle")])
        self.assertEqual(ring.owners(), ["early", "middle", "late"])

    def test_input_order_does_not_matter(self) -> None:
        rng = random.Random(3)
        entries = random_entries(rng, 5, 4)
        shuffled = list(entries)
        rng.shuffle(shuffled)
        a, b = Ring(entries), Ring(shuffled)
        self.assertEqual(a.entries(), b.entries())
        self.assertEqual(a.entries(), sorted(entries))

    def test_matches_brute_force(self) -> None:
        rng = random.Random(5)
        for owners, per_owner in ((1, 1), (3, 1), (4, 8)):
            entries = random_entries(rng, owners, per_owner)
            ring = Ring(entries)
            for h in probes(entries, rng, 500):
                self.assertEqual(ring.owner(h), brute_owner(entries, h), h)


class RingRangesTests(SynchronousTestCase):
    """Ring.ranges: inclusive ranges tiling 0..2**32-1 exactly once."""

    def assertTiles(self, ring: Ring[str]) -> None:
        ranges = ring.ranges()
        self.assertEqual(ranges[0][0], 0)
        self.assertEqual(ranges[-1][1], MAX_TOKEN)
        for (_, end, _), (start, _, _) in zip(ranges, ranges[1:]):
            self.assertEqual(start, end + 1)
        for start, end, owner in ranges:
            self.assertLessEqual(start, end)
            self.assertEqual(ring.owner(start), owner)
            self.assertEqual(ring.owner(end), owner)

    def test_wrapping_range_is_two_pieces(self) -> None:
        ring = Ring([(100, "a"), (200, "b")])
        self.assertEqual(
            ring.ranges(),
            [(0, 100, "a"), (101, 200, "b"), (201, MAX_TOKEN, "a")],
        )

    def test_token_at_the_top_has_no_tail(self) -> None:
        ring = Ring([(100, "a"), (MAX_TOKEN, "b")])
        self.assertEqual(ring.ranges(), [(0, 100, "a"), (101, MAX_TOKEN, "b")])

    def test_token_zero(self) -> None:
        ring = Ring([(0, "a"), (100, "b")])
        self.assertEqual(ring.ranges(), [(0, 0, "a"), (1, 100, "b"), (101, MAX_TOKEN, "a")])

    def test_single_token(self) -> None:
        self.assertEqual(Ring([(7, "x")]).ranges(), [(0, 7, "x"), (8, MAX_TOKEN, "x")])

    def test_virtual_nodes_keep_one_range_per_token(self) -> None:
        ring = Ring([(10, "A"), (20, "A"), (30, "B")])
        self.assertEqual(
            ring.ranges(),
            [(0, 10, "A"), (11, 20, "A"), (21, 30, "B"), (31, MAX_TOKEN, "A")],
        )

    def test_cover_whole_space_exactly_once(self) -> None:
        rng = random.Random(9)
        for owners, per_owner in ((1, 1), (2, 1), (3, 5), (8, 16)):
            ring = Ring(random_entries(rng, owners, per_owner))
            self.assertTiles(ring)
            total = sum(end - start + 1 for start, end, _ in ring.ranges())
            self.assertEqual(total, 2**32)
        self.assertTiles(Ring([(0, "a"), (MAX_TOKEN, "b")]))


class RingValidationTests(SynchronousTestCase):
    """Rings refuse what would make placement ambiguous."""

    def test_duplicate_token(self) -> None:
        e = self.assertRaises(ValueError, Ring, [(5, "a"), (7, "b"), (5, "c")])
        self.assertIn("token 5", str(e))
        self.assertIn("'a'", str(e))
        self.assertIn("'c'", str(e))

    def test_duplicate_token_same_owner(self) -> None:
        e = self.assertRaises(ValueError, Ring, [(5, "a"), (5, "a")])
        self.assertIn("token 5", str(e))

    def test_empty(self) -> None:
        self.assertRaises(ValueError, Ring, [])

    def test_out_of_range(self) -> None:
        self.assertIn("out of range", str(self.assertRaises(ValueError, Ring, [(-1, "a")])))
        self.assertIn("out of range", str(self.assertRaises(ValueError, Ring, [(2**32, "a")])))

    def test_not_an_integer(self) -> None:
        self.assertRaises(ValueError, Ring, [("5", "a")])
        self.assertRaises(ValueError, Ring, [(True, "a")])


def owners(table, h):
    """The owners of ``h`` in every ring, looked up in an `owner_table`."""
    bounds, answers = table
    return answers[bisect_left(bounds, h)]


class OwnerTableTests(SynchronousTestCase):
    """Several rings answered with one lookup."""

    def test_agrees_with_each_ring(self) -> None:
        rng = random.Random(13)
        entry_lists = [random_entries(rng, n, v) for n, v in ((2, 1), (3, 4), (1, 1), (5, 2))]
        entry_lists.append([(0, "zero"), (MAX_TOKEN, "top")])
        rings = [Ring(entries) for entries in entry_lists]
        ring_set = owner_table(rings)
        every = [pair for entries in entry_lists for pair in entries]
        for h in probes(every, rng, 2000):
            self.assertEqual(owners(ring_set, h), tuple(ring.owner(h) for ring in rings), h)

    def test_equal_answers_are_shared(self) -> None:
        rings = [Ring([(10, "a"), (20, "b")]), Ring([(10, "c"), (30, "d")])]
        ring_set = owner_table(rings)
        self.assertEqual(owners(ring_set, 5), ("a", "c"))
        self.assertEqual(owners(ring_set, 15), ("b", "d"))
        self.assertEqual(owners(ring_set, 25), ("a", "d"))
        self.assertIs(owners(ring_set, 5), owners(ring_set, MAX_TOKEN))
        self.assertIs(owners(ring_set, 5), owners(ring_set, 10))

    def test_no_rings(self) -> None:
        self.assertEqual(owners(owner_table([]), 123), ())
        self.assertEqual(owner_table([]), ([], [()]))

    def test_table_shape(self) -> None:
        bounds, answers = owner_table([Ring([(30, "a")]), Ring([(10, "b"), (20, "c")])])
        self.assertEqual(bounds, [10, 20, 30])
        self.assertEqual(answers, [("a", "b"), ("a", "c"), ("a", "b"), ("a", "b")])
