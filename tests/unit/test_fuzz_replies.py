"""
Fuzzing of the reply framer (dynomite.wire.replies), and what it found.
"""

from __future__ import annotations

from typing import List

from twisted.trial.unittest import SynchronousTestCase

from dynomite.wire import replies as replies_module
from dynomite.wire.replies import HiredisReplyParser, ReplyParser


def factories() -> List[type]:
    return [ReplyParser] if replies_module._hiredis is None else [ReplyParser, HiredisReplyParser]


class ReplyFramerFuzzTests(SynchronousTestCase):
    """Replies found by fuzzing, against both framers."""

    def test_map_with_an_aggregate_key(self) -> None:
        # RESP3 lets a map key be any reply; hiredis raises TypeError building
        # a dict keyed by a list or a dict, and that must not escape `feed`.
        stream = b"%1\r\n*0\r\n:1\r\n%1\r\n%0\r\n:2\r\n+OK\r\n"
        for factory in factories():
            self.assertEqual(factory().feed(stream), [b"%1\r\n*0\r\n:1\r\n", b"%1\r\n%0\r\n:2\r\n", b"+OK\r\n"])
