"""Node states, peer status from heartbeats, and leaving RESUMING."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.peers.membership import DOWN, NORMAL, RESUMING, STANDBY, WRITES_ONLY, Membership


class Link:
    def __init__(self, up=True):
        self.is_up = up


class MembershipTests(SynchronousTestCase):
    def make(self, peers=("a", "b"), hints=None):
        self.clock = Clock()
        self.links = {name: Link() for name in peers}
        self.hints = hints or {}
        m = Membership(self.clock, "me", self.links, resume_timeout=60.0, settle_time=3.0,
                       hints_for=lambda peer: self.hints.get(peer, 0))
        self.changes = []
        m.listeners.append(self.changes.append)
        return m

    def test_single_node_starts_normal(self):
        self.assertEqual(self.make(peers=()).state, NORMAL)

    def test_starts_resuming_and_is_not_read_from(self):
        m = self.make()
        self.assertEqual(m.state, RESUMING)
        self.assertIn("me", m.unreadable)

    def test_normal_once_every_peer_says_no_hints(self):
        m = self.make()
        m.peer_status("a", {"state": NORMAL, "hints": 0})
        self.assertEqual(m.state, RESUMING)
        m.peer_status("b", {"state": NORMAL, "hints": 0})
        self.assertEqual(m.state, NORMAL)
        self.assertEqual(self.changes, [NORMAL])
        self.assertNotIn("me", m.unreadable)

    def test_stays_resuming_while_a_peer_holds_hints(self):
        m = self.make()
        m.peer_status("a", {"state": NORMAL, "hints": 0})
        m.peer_status("b", {"state": NORMAL, "hints": 12})
        self.clock.advance(10)
        m.tick(self.clock.seconds())
        self.assertEqual(m.state, RESUMING)
        m.peer_status("b", {"state": NORMAL, "hints": 0})
        self.assertEqual(m.state, NORMAL)

    def test_unreachable_peer_does_not_block_after_settle_time(self):
        m = self.make()
        self.links["b"].is_up = False
        m.peer_status("a", {"state": NORMAL, "hints": 0})
        self.assertEqual(m.state, RESUMING)
        self.clock.advance(3.5)
        m.tick(self.clock.seconds())
        self.assertEqual(m.state, NORMAL)

    def test_waits_for_a_seed_providers_first_peers(self):
        """A node told to resume with no peers yet (they come from DNS) is not NORMAL at its first tick."""
        self.clock = Clock()
        links = {}
        m = Membership(self.clock, "me", links, resume_timeout=60.0, settle_time=3.0, resuming=True)
        m.tick(self.clock.seconds())
        self.assertEqual(m.state, RESUMING)
        links["a"] = Link()
        m.peer_status("a", {"state": NORMAL, "hints": 4})
        self.assertEqual(m.state, RESUMING)
        m.peer_status("a", {"state": NORMAL, "hints": 0})
        self.assertEqual(m.state, NORMAL)
        alone = Membership(self.clock, "me", {}, resume_timeout=60.0, settle_time=3.0, resuming=True)
        self.clock.advance(3.5)
        alone.tick(self.clock.seconds())
        self.assertEqual(alone.state, NORMAL)

    def test_resume_timeout(self):
        m = self.make()
        m.peer_status("a", {"state": NORMAL, "hints": 5})
        self.clock.advance(61)
        m.tick(self.clock.seconds())
        self.assertEqual(m.state, NORMAL)

    def test_peer_states_decide_reads_and_writes(self):
        m = self.make()
        m.peer_status("a", {"state": WRITES_ONLY, "hints": 0})
        m.peer_status("b", {"state": STANDBY, "hints": 0})
        self.assertEqual(m.unreadable, frozenset({"a", "b"}))
        self.assertTrue(m.writable("a"))
        self.assertFalse(m.writable("b"))
        m.peer_status("a", {"state": NORMAL, "hints": 0})
        self.assertNotIn("a", m.unreadable)

    def test_down_link_is_down(self):
        m = self.make()
        m.peer_status("a", {"state": NORMAL, "hints": 0})
        self.links["a"].is_up = False
        m.link_changed("a")
        self.assertEqual(m.peer_state("a"), DOWN)
        self.assertIn("a", m.unreadable)
        self.assertFalse(m.writable("a"))

    def test_status_for_peer_counts_its_hints(self):
        m = self.make(hints={"a": 7})
        self.assertEqual(m.status_for("a"), {"state": RESUMING, "hints": 7})
        self.assertEqual(m.status_for("b")["hints"], 0)

    def test_bad_status_ignored(self):
        m = self.make()
        m.peer_status("a", {"state": "SLEEPY"})
        self.assertNotIn("a", m.reported)
        m.peer_status("a", {"state": NORMAL, "hints": "lots"})
        self.assertEqual(m.reported["a"]["hints"], 0)


class LeavingTests(SynchronousTestCase):
    """A stopping node says so in its heartbeats; its peers mark it DOWN at once."""

    def make(self):
        self.clock = Clock()
        self.links = {"a": Link(), "b": Link()}
        return Membership(self.clock, "me", self.links, resume_timeout=60.0, settle_time=3.0,
                          resuming=False)

    def test_leaving_heartbeat_marks_the_peer_down_at_once(self):
        m = self.make()
        m.peer_status("a", {"state": NORMAL, "hints": 0})
        self.assertTrue(m.writable("a"))
        m.peer_status("a", {"state": NORMAL, "hints": 0, "leaving": True})
        self.assertEqual(m.peer_state("a"), DOWN)
        self.assertFalse(m.writable("a"))
        self.assertIn("a", m.unreadable)
        self.assertTrue(m.writable("b"))

    def test_back_after_its_connection_closes_and_returns(self):
        m = self.make()
        m.peer_status("a", {"state": NORMAL, "hints": 0, "leaving": True})
        self.links["a"].is_up = False
        m.link_changed("a")
        self.links["a"].is_up = True
        m.link_changed("a")
        m.peer_status("a", {"state": RESUMING, "hints": 0})
        self.assertEqual(m.peer_state("a"), RESUMING)
        self.assertTrue(m.writable("a"))

    def test_status_says_leaving_only_when_leaving(self):
        m = self.make()
        self.assertNotIn("leaving", m.status_for("a"))
        m.leaving = True
        self.assertEqual(m.status_for("a"), {"state": NORMAL, "hints": 0, "leaving": True})
