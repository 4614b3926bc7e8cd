"""
Benchmarks of dynomite-py.

:mod:`bench.benchmark` is the ``dynomite-bench`` command: redis-benchmark
against plain Redis, a single node and 3-rack clusters, with ratios against
the plain Redis measured in the same round. :mod:`bench.redisbench`,
:mod:`bench.cpu`, :mod:`bench.targets`, :mod:`bench.interpreters` and
:mod:`bench.report` are its parts. Scripts such as ``hint_replay.py`` are
run by hand.
"""
