# -*- test-case-name: tests.unit.test_scan -*-
"""
Composite SCAN cursors: one cursor that walks every node of a rack.

A rack holds one full copy of the keyspace split across its nodes, so
scanning every node of the local rack returns every key (at least once, as
Redis promises for SCAN).  The client's cursor packs the index of the node
being scanned into its low bits and that node's own cursor above them:

    cursor = node_cursor << bits | node_index,   bits = (nodes - 1).bit_length()

With one node ``bits`` is 0 and cursors are Redis's own.  A scan starts at
node 0 with cursor 0; when a node's scan ends (its cursor comes back 0) the
next node starts at 0; after the last node the client gets 0.  Redis
cursors stay below the hash table size (well under 2**48 in practice), so
composite cursors fit in 64 bits for any realistic rack.
"""

from __future__ import annotations

from typing import Optional


class ScanCursor:
    """Where a cluster-wide SCAN stands: which node, and that node's cursor."""

    __slots__ = ("node_index", "node_cursor", "nodes")

    def __init__(self, node_index: int, node_cursor: int, nodes: int) -> None:
        self.node_index = node_index
        self.node_cursor = node_cursor
        self.nodes = nodes

    @staticmethod
    def _bits(nodes: int) -> int:
        return (nodes - 1).bit_length()

    @classmethod
    def parse(cls, text: bytes, nodes: int) -> "ScanCursor":
        """The cursor a client sent; ValueError if it is not one of ours."""
        if not text.isdigit():
            raise ValueError("invalid cursor")
        value = int(text)
        bits = cls._bits(nodes)
        index = value & ((1 << bits) - 1)
        if index >= nodes:
            raise ValueError("invalid cursor")
        return cls(index, value >> bits, nodes)

    def encode(self) -> int:
        return (self.node_cursor << self._bits(self.nodes)) | self.node_index

    def advance(self, returned: int) -> Optional["ScanCursor"]:
        """The cursor after the current node answered ``returned``; None when done."""
        if returned != 0:
            return ScanCursor(self.node_index, returned, self.nodes)
        if self.node_index + 1 < self.nodes:
            return ScanCursor(self.node_index + 1, 0, self.nodes)
        return None
