# -*- test-case-name: tests.unit.test_ring -*-
"""
Key hashing for placement: MurmurHash3 x86 32-bit, unsigned, seed 0.

Every node of a cluster must map a key to the same 32-bit ring position, so
this is the one place that decides it. Dynomite's own ``murmur3`` setting is a
stub (the call is commented out in dyn_murmur3.c) and its default ``murmur``
is MurmurHash2; this project always uses real MurmurHash3 from ``mmh3``.

With a hash tag (two bytes such as ``b"{}"``) only the part of the key
between the first opening byte and the first closing byte after it is hashed,
so ``{user1}.a`` and ``{user1}.b`` land on the same node and can be used
together in multi-key commands. The rules are twemproxy's and Redis
Cluster's: no opening byte, no closing byte after it, or nothing between the
two means the whole key is hashed.
"""

from __future__ import annotations

from typing import Optional

import mmh3

__all__ = ["hash_part", "key_hash"]


_murmur3 = mmh3.hash  # (data, seed, signed); positional args are the fast path


def key_hash(key: bytes, hash_tag: Optional[bytes] = None) -> int:
    """
    The ring position (``0..2**32-1``) of ``key``.

    ``key`` must be ``bytes`` (what the RESP parser yields). ``hash_tag`` is
    ``None`` or exactly two bytes; see :func:`hash_part` for what it selects.
    """
    if hash_tag is None:
        return _murmur3(key, 0, False)
    return _murmur3(hash_part(key, hash_tag), 0, False)


def hash_part(key: bytes, hash_tag: bytes) -> bytes:
    """
    The part of ``key`` that decides its placement under ``hash_tag``.

    That is the bytes between the first ``hash_tag[0]`` and the first
    ``hash_tag[1]`` after it, when both exist and the part is non-empty;
    otherwise the whole key. The two tag bytes may be equal (``b"$$"``).
    """
    if len(hash_tag) != 2:
        raise ValueError(f"hash_tag must be exactly 2 bytes, got {hash_tag!r}")
    start = key.find(hash_tag[:1])
    if start < 0:
        return key
    end = key.find(hash_tag[1:], start + 1)
    if end <= start + 1:  # no closing byte (-1), or an empty tag like "{}"
        return key
    return key[start + 1:end]
