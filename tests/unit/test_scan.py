"""Composite SCAN cursors across the nodes of a rack."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.node.scan import ScanCursor


class ScanCursorTests(SynchronousTestCase):
    def walk(self, nodes, node_cursors):
        """Simulate a client scan; node_cursors[i] is the cursors node i returns in turn."""
        script = {i: list(c) for i, c in enumerate(node_cursors)}
        visited = []
        text = b"0"
        while True:
            cursor = ScanCursor.parse(text, nodes)
            visited.append((cursor.node_index, cursor.node_cursor))
            after = cursor.advance(script[cursor.node_index].pop(0))
            value = after.encode() if after is not None else 0
            if value == 0:
                return visited
            text = b"%d" % value

    def test_single_node_cursors_are_redis_cursors(self):
        c = ScanCursor.parse(b"12345", 1)
        self.assertEqual((c.node_index, c.node_cursor, c.encode()), (0, 12345, 12345))
        self.assertEqual(c.advance(99).encode(), 99)
        self.assertIsNone(c.advance(0))

    def test_walks_every_node_in_order(self):
        visited = self.walk(3, [[5, 0], [0], [7, 9, 0]])
        self.assertEqual(visited, [(0, 0), (0, 5), (1, 0), (2, 0), (2, 7), (2, 9)])

    def test_large_node_cursor_round_trips(self):
        c = ScanCursor(4, 2 ** 40 + 3, 6)
        self.assertEqual(ScanCursor.parse(b"%d" % c.encode(), 6).node_cursor, 2 ** 40 + 3)

    def test_invalid_cursors(self):
        for text in (b"-1", b"abc", b"", b"3"):
            self.assertRaises(ValueError, ScanCursor.parse, text, 3)
