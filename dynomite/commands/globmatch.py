# -*- test-case-name: tests.unit.test_acl -*-
"""
Redis's glob matching (``stringmatchlen`` in src/util.c), for ACL key and
channel patterns.

The same pattern must grant the same keys here as in Redis, quirks
included: ``*`` matches any run of bytes, ``?`` one byte, ``[abc]``,
``[^abc]`` and ``[a-z]`` one byte of a set (a reversed range is swapped,
``\\`` escapes inside brackets, an unclosed ``[`` ends at the end of the
pattern), ``\\x`` is a literal ``x``; and an empty string matches no
pattern but the empty one (Redis's loop never runs).

`compile_pattern` turns a pattern into a predicate once, when the ACL is
loaded: a literal compares bytes, ``prefix*`` is ``startswith``, and only
the rest walks the pattern.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["compile_pattern", "match"]

_SPECIAL = frozenset(b"*?[\\")


def match(pattern: bytes, string: bytes) -> bool:
    """Whether ``string`` matches ``pattern`` as Redis matches it (case-sensitive)."""
    return _match(pattern, 0, string, 0, [False])


def _match(p: bytes, pi: int, s: bytes, si: int, give_up: list) -> bool:
    plen, slen = len(p), len(s)
    while pi < plen and si < slen:
        c = p[pi]
        if c == 42:   # '*'
            while pi + 1 < plen and p[pi + 1] == 42:
                pi += 1
            if pi + 1 == plen:
                return True
            while si < slen:
                if _match(p, pi + 1, s, si, give_up):
                    return True
                if give_up[0]:
                    return False
                si += 1
            give_up[0] = True   # later starts cannot match either
            return False
        elif c == 63:   # '?'
            si += 1
        elif c == 91:   # '['
            pi += 1
            negate = pi < plen and p[pi] == 94   # '^'
            if negate:
                pi += 1
            matched = False
            byte = s[si]
            while True:
                if pi < plen and p[pi] == 92 and plen - pi >= 2:   # '\\'
                    pi += 1
                    matched = matched or p[pi] == byte
                elif pi < plen and p[pi] == 93:   # ']'
                    break
                elif pi >= plen:
                    pi -= 1
                    break
                elif plen - pi >= 3 and p[pi + 1] == 45:   # 'a-z'
                    low, high = sorted((p[pi], p[pi + 2]))
                    pi += 2
                    matched = matched or low <= byte <= high
                else:
                    matched = matched or p[pi] == byte
                pi += 1
            if matched == negate:
                return False
            si += 1
        else:
            if c == 92 and plen - pi >= 2:   # '\\': the next byte is literal
                pi += 1
            if p[pi] != s[si]:
                return False
            si += 1
        pi += 1
        if si == slen:
            while pi < plen and p[pi] == 42:
                pi += 1
            break
    return pi == plen and si == slen


def compile_pattern(pattern: bytes) -> Callable[[bytes], bool]:
    """A predicate equivalent to ``lambda s: match(pattern, s)``, cheaper for the common shapes."""
    if not _SPECIAL.intersection(pattern):
        return pattern.__eq__
    body = pattern.rstrip(b"*")
    if body and not _SPECIAL.intersection(body):
        return lambda s: s.startswith(body)
    return lambda s: match(pattern, s)
