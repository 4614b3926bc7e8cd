"""
`dynomite.runtime.flood`: connections that end without a valid request
make a flood once 100 end within a second (the client ports then accept
at a bound), and make an address a flooder once 20 of its own do (its new
connections are refused); both end after a quiet spell.
"""

from __future__ import annotations

from typing import List

from twisted.trial.unittest import SynchronousTestCase

from dynomite.runtime.flood import (
    FLOOD, FLOOD_ADDRESS_FRUITLESS, FLOOD_FRUITLESS, FLOOD_QUIET, FLOODER, FloodGuard,
)


class FloodGuardTests(SynchronousTestCase):
    """Connections that end without a valid request: a flood once 100 end within one second."""

    def setUp(self) -> None:
        self.changes: List[tuple] = []
        self.guard = FloodGuard(500, on_change=lambda *change: self.changes.append(change))

    def test_a_flood_starts_within_one_second_and_ends_after_a_quiet_spell(self) -> None:
        guard = self.guard
        for i in range(FLOOD_FRUITLESS - 1):
            guard.fruitless(10.0 + i * 0.009)
        self.assertFalse(guard.flooding_at(10.95))
        guard.fruitless(10.99)
        self.assertTrue(guard.flooding_at(10.99))
        self.assertEqual((guard.floods, self.changes), (1, [(True, FLOOD_FRUITLESS)]))
        # fruitless connections at the admitted rate keep it on
        for t in range(1, 20):
            for i in range(FLOOD_FRUITLESS):
                guard.fruitless(10.99 + t + i * 0.001)
            self.assertTrue(guard.flooding_at(11.5 + t))
        last = 10.99 + 19 + (FLOOD_FRUITLESS - 1) * 0.001
        self.assertTrue(guard.flooding_at(last + FLOOD_QUIET - 0.01))
        self.assertFalse(guard.flooding_at(last + FLOOD_QUIET + 0.001))
        self.assertEqual((guard.flooding, self.changes[-1], guard.floods), (False, (False, 0), 1))

    def test_during_a_flood_known_addresses_are_served_and_others_admitted_at_the_rate(self) -> None:
        """Planted bug: a flood that bounds known clients makes them wait behind it."""
        guard = FloodGuard(100)
        guard.asked("10.9.0.1")   # a client that sent a valid request once
        for i in range(FLOOD_FRUITLESS):
            guard.fruitless(1.0 + i * 0.001, "10.1.%d.%d" % divmod(i, 250))
        self.assertTrue(guard.flooding_at(1.1))
        outcomes = [guard.refuses("10.2.0.%d" % (i % 250), 1.1) for i in range(200)]
        # a tenth of a second's worth at once (at least 16), then none until the rate allows
        self.assertEqual((outcomes.count(None), outcomes.count(FLOOD)), (16, 184))
        self.assertIsNone(guard.refuses("10.9.0.1", 1.1), "a known client waits for nobody")
        self.assertEqual([guard.refuses("10.2.1.1", 1.1 + t / 10) for t in range(1, 4)], [None] * 3)
        # over: everyone is admitted again
        self.assertIsNone(guard.refuses("10.3.0.1", 1.1 + FLOOD_QUIET))
        self.assertFalse(guard.flooding)

    def test_fewer_a_second_are_no_flood(self) -> None:
        # 90 a second for a minute: health checks and scans, not a flood
        for t in range(60 * 90):
            self.guard.fruitless(t / 90)
        self.assertFalse(self.guard.flooding_at(60.0))
        self.assertEqual(self.changes, [])

    def test_a_rate_must_be_positive(self) -> None:
        self.assertRaises(ValueError, FloodGuard, 0)


    def test_an_address_that_floods_is_refused_until_it_has_been_quiet(self) -> None:
        flooders: List[str] = []
        guard = FloodGuard(500, on_flooder=flooders.append)
        for i in range(FLOOD_ADDRESS_FRUITLESS - 1):
            guard.fruitless(1.0 + i * 0.01, "10.0.0.9")
            guard.fruitless(1.0 + i * 0.01, "10.1.0.%d" % i)   # others, one each
        self.assertFalse(guard.refuses("10.0.0.9", 1.5))
        guard.fruitless(1.5, "10.0.0.9")
        self.assertEqual((flooders, guard.flooders), (["10.0.0.9"], 1))
        self.assertTrue(guard.refuses("10.0.0.9", 1.5))
        self.assertFalse(guard.refuses("10.1.0.1", 1.5))
        self.assertFalse(guard.flooding, "39 fruitless connections in all are no flood")
        # refused connections are not fruitless ones: quiet, it is let in again
        self.assertTrue(guard.refuses("10.0.0.9", 1.5 + FLOOD_QUIET - 0.01))
        self.assertFalse(guard.refuses("10.0.0.9", 1.5 + FLOOD_QUIET))
        # ... and refused again as soon as it floods again
        for i in range(FLOOD_ADDRESS_FRUITLESS):
            guard.fruitless(10.0 + i * 0.01, "10.0.0.9")
        self.assertTrue(guard.refuses("10.0.0.9", 10.5))
        self.assertEqual(guard.flooders, 2)

    def test_one_address_alone_makes_no_flood_however_much_it_sends(self) -> None:
        """Planted bug: counting a flooder's connections toward a flood makes every new client wait."""
        guard = FloodGuard(500)
        for i in range(5 * FLOOD_FRUITLESS):   # accepted before it was refused, ending now
            guard.fruitless(1.0 + i * 0.001, "10.0.0.9")
        self.assertEqual((guard.flooders, guard.floods, guard.flooding), (1, 0, False))
        # the same from many addresses, none of them a flooder: a flood
        for i in range(FLOOD_FRUITLESS):
            guard.fruitless(2.0 + i * 0.001, "10.1.%d.%d" % divmod(i % 50, 250))
        self.assertEqual((guard.flooders, guard.floods, guard.flooding), (1, 1, True))

    def test_addresses_remembered_are_bounded(self) -> None:
        guard = FloodGuard(500, address_threshold=2, addresses=3)
        for host in ("a", "b", "c", "d"):
            guard.fruitless(1.0, host)
        guard.fruitless(1.1, "a")   # forgotten when d came: counted anew
        guard.fruitless(1.1, "d")
        self.assertEqual((guard.refuses("a", 1.2), guard.refuses("d", 1.2)), (None, FLOODER))
        self.assertEqual(len(guard._addresses), 3)
