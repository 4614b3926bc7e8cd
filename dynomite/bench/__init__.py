"""
The benchmark layer: dynomite-py measured against plain Redis.

`dynomite.bench.benchmark` is the ``dynomite-bench`` command: redis-benchmark
against plain Redis, a single node and 3-rack clusters, with ratios against
the plain Redis measured in the same round.  `dynomite.bench.redisbench`,
`dynomite.bench.cpu`, `dynomite.bench.targets`,
`dynomite.bench.interpreters` and `dynomite.bench.report` are its parts.
Scripts such as ``hint_replay.py`` are run by hand.

Layer 7, the top, with cli and launcher.  May import: any layer below, and
cli and launcher.
"""
