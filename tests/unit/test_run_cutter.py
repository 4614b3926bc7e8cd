"""
Tests for dynomite.placement.pipelines: how pipelined requests are cut into
runs, for a client's pipeline and an entry node's forwarded writes alike.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from dynomite.config.vocabulary import DC_ONE, DC_QUORUM
from dynomite.placement.pipelines import RunCutter
from dynomite.placement.router import Router
from dynomite.wire.requests import RequestParser

from tests.unit.test_router import cluster


def encode(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def parse(data: bytes):
    parser = RequestParser(1 << 20)
    requests = parser.feed(data)
    return requests, parser.bounds


class RunCutterTests(SynchronousTestCase):
    """Runs: one command, one plan, contiguous bytes; the first other request stops the cut."""

    def setUp(self):
        self.topology = cluster(per_rack=2)
        self.router = Router(self.topology, None)
        self.cutter = RunCutter(self.router)
        # keys on each of the two replica sets
        plans = {}
        for i in range(100):
            key = b"k%d" % i
            plans.setdefault(id(self.router.route(key, True, DC_ONE)), []).append(key)
        # (writes have one plan per replica set and leading rack)
        self.a, self.b = list(plans.values())[:2]

    def cut(self, data: bytes, i: int = 0, read=DC_ONE, write=DC_ONE):
        requests, bounds = parse(data)
        return self.cutter.cut(requests, bounds, i, self.router.reads[read], self.router.writes[write]), requests

    def test_same_command_same_replicas_is_one_run(self):
        data = b"".join(encode(b"SET", k, b"v") for k in self.a[:5])
        (runs, stop), requests = self.cut(data)
        self.assertEqual(stop, 5)
        ((cmd, plan, start, end, count, parts),) = runs
        self.assertIsNone(parts)
        self.assertEqual((cmd.name, start, end, count), ("set", 0, len(data), 5))
        self.assertIs(plan, self.router.route(self.a[0], True, DC_ONE))

    def test_a_new_read_replica_set_or_command_starts_a_new_run(self):
        data = (encode(b"SET", self.a[0], b"v") + encode(b"SET", self.b[0], b"v")
                + encode(b"GET", self.b[1]) + encode(b"GET", self.b[2]))
        (runs, stop), _ = self.cut(data)
        self.assertEqual(stop, 4)
        self.assertEqual([(cmd.name, count, plan is None) for cmd, plan, _, _, count, _ in runs],
                         [("set", 2, True), ("get", 2, False)])
        self.assertEqual(b"".join(data[s:e] for _, _, s, e, _, _ in runs), data)

    def test_stops_at_a_request_that_cannot_be_in_a_run(self):
        for stopper in (encode(b"MGET", self.a[0], self.a[1]),   # several keys
                        encode(b"GET"),                          # wrong arity
                        encode(b"PING"),                         # keyless
                        encode(b"NOSUCHCOMMAND", b"x")):         # unknown
            data = encode(b"GET", self.a[0]) + stopper + encode(b"GET", self.a[1])
            (runs, stop), _ = self.cut(data)
            self.assertEqual((stop, [r[4] for r in runs]), (1, [1]), stopper)
            (runs, stop), _ = self.cut(data, 2)
            self.assertEqual((stop, [r[4] for r in runs]), (3, [1]), stopper)

    def test_bytes_that_are_not_canonical_are_never_in_a_run(self):
        """An inline request's bytes are not RESP: it is re-encoded on its own."""
        data = encode(b"GET", self.a[0]) + b"GET " + self.a[1] + b"\r\n"
        (runs, stop), _ = self.cut(data)
        self.assertEqual((stop, len(runs)), (1, 1))

    def test_reads_and_writes_are_planned_at_their_own_levels(self):
        data = encode(b"GET", self.a[0]) + encode(b"SET", self.a[0], b"v")
        (runs, _), _ = self.cut(data, read=DC_QUORUM, write=DC_ONE)
        self.assertEqual([(p.write, p.level) for _, p, _, _, _, _ in runs],
                         [(False, DC_QUORUM), (True, DC_ONE)])

    def test_random_pipelines_cut_like_the_definition(self):
        """
        Runs tile the prefix they cover; each is maximal and one command;
        a run of reads has one route, a run of writes one part per route,
        each with its requests in the client's order.
        """
        rng = random.Random(3)
        keys = self.a[:3] + self.b[:3]
        makers = [lambda k: encode(b"SET", k, b"v"), lambda k: encode(b"GET", k),
                  lambda k: encode(b"INCR", k), lambda k: encode(b"MGET", k, k)]
        for _ in range(300):
            data = b"".join(rng.choice(makers)(rng.choice(keys)) for _ in range(rng.randrange(1, 30)))
            requests, bounds = parse(data)
            i = 0
            while i < len(requests):
                runs, stop = self.cutter.cut(requests, bounds, i, self.router.reads[DC_ONE],
                                             self.router.writes[DC_ONE])
                expected = []
                j = i
                while j < stop:
                    args = requests[j]
                    write = args[0] != b"GET"
                    route = self.router.route(args[1], write, DC_ONE)
                    last = expected[-1] if expected else None
                    if last and last[0] == args[0] and (write or last[1][0] is route):
                        last[1].append(route)
                        last[2].append(data[bounds[2 * j]:bounds[2 * j + 1]])
                    else:
                        expected.append([args[0], [route], [data[bounds[2 * j]:bounds[2 * j + 1]]]])
                    j += 1
                self.assertEqual(len(runs), len(expected))
                for (cmd, plan, start, end, count, parts), (name, routes, pieces) in zip(runs, expected):
                    self.assertEqual((cmd.name, count), (name.decode().lower(), len(routes)))
                    self.assertEqual(data[start:end], b"".join(pieces))
                    if len(set(map(id, routes))) == 1:
                        self.assertIs(plan, routes[0])
                        self.assertIsNone(parts)
                        continue
                    self.assertIsNone(plan)
                    got = {id(p): (b"".join(data[s:e] for s, e in spans), positions)
                           for p, spans, positions in parts}
                    want = {}
                    for position, (route, piece) in enumerate(zip(routes, pieces)):
                        joined, positions = want.setdefault(id(route), [b"", []])
                        want[id(route)] = [joined + piece, positions + [position]]
                    self.assertEqual(got, {k: tuple(v) for k, v in want.items()})
                if stop < len(requests):
                    self.assertEqual(requests[stop][0], b"MGET")
                i = stop + 1
