"""
Tests for L{dynomite.wire.inflight}: the request value every hop carries.
"""

from twisted.trial.unittest import SynchronousTestCase

from dynomite.wire.inflight import REPLAY_LANE, Request
from dynomite.wire.peer_frames import FLAG_RESP3, FLAG_WRITE


class RequestFlagsTests(SynchronousTestCase):
    """A request's version and kind survive the trip through frame and hint flags."""

    def test_flags_round_trip(self) -> None:
        """Every combination of RESP version and kind comes back as it was."""
        for resp in (2, 3):
            for write in (False, True):
                request = Request(b"*1\r\n$4\r\nPING\r\n", resp, 7, 1, write)
                back = Request.from_flags(request.flags, request.payload, REPLAY_LANE)
                self.assertEqual((back.resp, back.write, back.payload, back.lane),
                                 (resp, write, request.payload, REPLAY_LANE))

    def test_flag_bits(self) -> None:
        """RESP3 and write are the peer frame's bits, so hint files stay readable."""
        self.assertEqual(Request(b"", 3, write=True).flags, FLAG_RESP3 | FLAG_WRITE)
        self.assertEqual(Request(b"", 2).flags, 0)

    def test_count_rides_along(self) -> None:
        """A run keeps its count when rebuilt from flags."""
        self.assertEqual(Request.from_flags(FLAG_WRITE, b"x", 1, count=16).count, 16)
