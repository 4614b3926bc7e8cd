"""dynomite.bench.blocked: the blocked clients' requests and the summary."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.bench.blocked import Sample, blocking_command, format_rows, summarize
from dynomite.wire.requests import parse_whole


class BlockedBenchTests(SynchronousTestCase):
    def test_half_blpop_half_xread_block_forever(self):
        requests, _ = parse_whole(b"".join(blocking_command(i) for i in range(4)))
        self.assertEqual(requests[0], [b"BLPOP", b"bench:blocked:list:0", b"0"])
        self.assertEqual(requests[1], [b"XREAD", b"BLOCK", b"0", b"STREAMS", b"bench:blocked:stream:1", b"$"])
        self.assertEqual([r[0] for r in requests], [b"BLPOP", b"XREAD", b"BLPOP", b"XREAD"])

    def test_summary_is_the_median_of_per_round_ratios(self):
        samples = [Sample(1, "SET", False, 100.0, None, None), Sample(1, "SET", True, 90.0, None, None),
                   Sample(2, "SET", True, 50.0, None, None), Sample(2, "SET", False, 100.0, None, None),
                   Sample(3, "SET", False, 100.0, None, None), Sample(3, "SET", True, 99.0, None, None)]
        row, = summarize(samples)
        self.assertEqual((row["ratio"], row["ratio_min"], row["ratio_max"]), (0.9, 0.5, 0.99))
        self.assertIn("0.90x", format_rows([row], 50))
