# -*- test-case-name: tests.unit.test_ring -*-
"""
Token rings: which owner holds a 32-bit hash.

A rack splits the 32-bit hash space among its nodes by tokens. Token ``T``
owns the hashes ``(previous token, T]``, and the smallest token also owns
everything above the largest one: a hash goes to the owner of the smallest
token ``>= hash``, wrapping around to the smallest token (Dynomite's
``vnode_dispatch``; twemproxy nc_ketama.c ``if (right == end) right =
begin;``). A node may hold several tokens (virtual nodes).

:class:`Ring` answers for one rack; :class:`RingSet` answers for several
racks at once with a single binary search, which is what the coordinator
needs on every request (the owner of a key in each rack).

Pure arithmetic: no I/O, no clock, nothing cached per key.
"""

from __future__ import annotations

from bisect import bisect_left
from operator import itemgetter
from typing import Dict, Generic, Iterable, List, Sequence, Tuple, TypeVar

from dynomite.config.vocabulary import MAX_TOKEN

__all__ = ["Ring", "owner_table"]


T = TypeVar("T")


class Ring(Generic[T]):
    """
    One rack's continuum: sorted tokens, each with its owner.

    Built from ``(token, owner)`` pairs in any order. Tokens are integers in
    ``0..MAX_TOKEN`` and unique; an owner may appear with several tokens.
    Owners are never compared, but :meth:`owners` needs them hashable.
    Immutable once built.
    """

    __slots__ = ("_tokens", "_owners", "_lookup")

    def __init__(self, entries: Iterable[Tuple[int, T]]):
        pairs = sorted(entries, key=itemgetter(0))
        if not pairs:
            raise ValueError("a ring needs at least one token")
        tokens: List[int] = []
        for token, owner in pairs:
            if isinstance(token, bool) or not isinstance(token, int):
                raise ValueError(f"token {token!r} of {owner!r} is not an integer")
            if not 0 <= token <= MAX_TOKEN:
                raise ValueError(f"token {token} of {owner!r} is out of range 0..{MAX_TOKEN}")
            if tokens and tokens[-1] == token:
                raise ValueError(
                    f"token {token} is owned twice, by {pairs[len(tokens) - 1][1]!r} and {owner!r}"
                )
            tokens.append(token)
        self._tokens: List[int] = tokens
        self._owners: List[T] = [owner for _, owner in pairs]
        # Index len(tokens) (a hash above the largest token) wraps to the
        # smallest token's owner, so owner() needs no branch.
        self._lookup: List[T] = self._owners + self._owners[:1]

    def owner(self, position: int) -> T:
        """
        The owner of ring position ``position`` (``0..MAX_TOKEN``): the owner of the smallest
        token ``>= position``, or of the smallest token when ``position`` is above them all.
        """
        return self._lookup[bisect_left(self._tokens, position)]

    def token(self, position: int) -> int:
        """The token that owns ring position ``position`` (the one :meth:`owner` picks)."""
        i = bisect_left(self._tokens, position)
        return self._tokens[i] if i < len(self._tokens) else self._tokens[0]

    @property
    def tokens(self) -> Tuple[int, ...]:
        """All tokens, ascending."""
        return tuple(self._tokens)

    def entries(self) -> List[Tuple[int, T]]:
        """``(token, owner)`` pairs in ascending token order."""
        return list(zip(self._tokens, self._owners))

    def ranges(self) -> List[Tuple[int, int, T]]:
        """
        The inclusive ``(start, end, owner)`` hash ranges, ascending.

        One range per token: token ``T`` after token ``P`` holds
        ``[P + 1, T]``. The smallest token's share wraps around the top of
        the ring and is reported as two ranges, ``[0, first token]`` at the
        start of the list and ``[last token + 1, MAX_TOKEN]`` at the end
        (omitted when the last token is ``MAX_TOKEN``), so that every range
        has ``start <= end`` and the ranges tile ``0..MAX_TOKEN`` exactly once,
        in order. Adjacent ranges of one owner are not merged.
        """
        tokens, owners = self._tokens, self._owners
        result = [(0, tokens[0], owners[0])]
        for i in range(1, len(tokens)):
            result.append((tokens[i - 1] + 1, tokens[i], owners[i]))
        if tokens[-1] < MAX_TOKEN:
            result.append((tokens[-1] + 1, MAX_TOKEN, owners[0]))
        return result

    def owners(self) -> List[T]:
        """Distinct owners, in the order of their smallest token."""
        return list(dict.fromkeys(self._owners))

    def __len__(self) -> int:
        """The number of tokens."""
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"Ring({self.entries()!r})"


def owner_table(rings: Sequence[Ring[T]]) -> Tuple[List[int], List[Tuple[T, ...]]]:
    """
    Several rings asked together: the owner of a hash in each of them, as tables.

    The union of all their tokens cuts the hash space into segments inside
    which no ring changes owner, so each segment's answer is computed once;
    a lookup is one binary search plus an index, whatever the number of
    rings.  Equal answers are the same tuple object (cheap dict keys).

    Returns ``(bounds, answers)``: ``bounds`` is the sorted union of all the
    rings' tokens, and ``answers[bisect_left(bounds, position)]`` is the tuple of
    each ring's owner of ``position`` (``answers`` has one extra entry, equal to the
    first, for hashes above every token). With no rings every answer is ``()``.
    """
    bounds = sorted({token for ring in rings for token in ring._tokens})
    interned: Dict[Tuple[T, ...], Tuple[T, ...]] = {}
    answers: List[Tuple[T, ...]] = []
    cursors = [0] * len(rings)
    for bound in bounds:
        # Sweep every ring in step with the bounds: a ring's owner of
        # ``bound`` is the owner of its smallest token >= bound. No token of
        # any ring lies strictly between two bounds, so that owner holds the
        # whole segment (previous bound, bound].
        answer: List[T] = []
        for r, ring in enumerate(rings):
            tokens, i = ring._tokens, cursors[r]
            while i < len(tokens) and tokens[i] < bound:
                i += 1
            cursors[r] = i
            answer.append(ring._lookup[i])
        owners = tuple(answer)
        answers.append(interned.setdefault(owners, owners))
    answers.append(answers[0] if answers else ())
    return bounds, answers
