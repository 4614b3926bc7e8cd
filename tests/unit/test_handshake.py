"""
The peer handshake (dynomite.peers.handshake) without a transport: two
machines driven against each other, frames passed by hand.
"""

from __future__ import annotations

import itertools
from typing import List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from dynomite.peers.handshake import (
    AUTH_SENT, DONE, DropPeer, Handshake, Identity, Ready, RejectedByPeer, RejectPeer, Step,
)
from dynomite.wire.peer_frames import (
    AUTH, CHALLENGE, FRAME_NAMES, HELLO, REJECT, REPLY, REQUEST, WELCOME, Frame, decode_control,
    encode_control,
)

A = "127.0.0.1:8101"
B = "127.0.0.2:8101"
SECRET = b"correct horse battery staple"


def identity(name: str, cluster: str = "dyn_o_mite", secret: Optional[bytes] = None,
             rack: str = "rack1") -> Identity:
    return Identity(cluster, name, "dc1", rack, secret, name.replace("8101", "22222"))


def counter(prefix: str):
    """Nonces that differ per call and per side, and are known in advance."""
    numbers = itertools.count(1)
    return lambda: "%s%02d" % (prefix, next(numbers)) * 4


def anyone(name: str, dc: str, rack: str) -> bool:
    return True


class Conversation:
    """A connecting and an accepting machine, and every frame between them."""

    def __init__(self, connector: Identity, acceptor: Identity, expected: str = B,
                 known=anyone) -> None:
        self.connecting = Handshake(connector, expected=expected, nonce=counter("c"))
        self.accepting = Handshake(acceptor, known=known, nonce=counter("a"))
        self.frames: List[Tuple[str, Frame]] = []
        self.decisions = {"connecting": None, "accepting": None}

    def run(self) -> "Conversation":
        """Start the connector and pass frames until both sides fall silent."""
        pending = [("accepting", f) for f in self._note("connecting", self.connecting.start())]
        while pending:
            to, frame = pending.pop(0)
            machine = self.accepting if to == "accepting" else self.connecting
            other = "connecting" if to == "accepting" else "accepting"
            step = machine.receive(frame)
            pending.extend((other, f) for f in self._note(to, step))
        return self

    def _note(self, side: str, step: Step) -> Tuple[Frame, ...]:
        for frame in step.send:
            self.frames.append((side, frame))
        if step.decision is not None:
            self.decisions[side] = step.decision
        return step.send

    def types(self) -> List[str]:
        return [FRAME_NAMES[f.type] for _, f in self.frames]


class HandshakeTests(SynchronousTestCase):

    def test_without_secret(self) -> None:
        c = Conversation(identity(A), identity(B), known=lambda n, d, r: (n, d, r) == (A, "dc1", "rack1"))
        c.run()
        self.assertEqual(c.types(), ["HELLO", "WELCOME"])
        self.assertEqual(c.decisions["connecting"], Ready(B, None, "127.0.0.2:22222", ("publish", "numbered-forward")))
        self.assertEqual(c.decisions["accepting"], Ready(A, "dc1", None))
        hello = decode_control(c.frames[0][1], ("cluster", "node", "dc", "rack", "nonce"))
        self.assertEqual(hello, {"cluster": "dyn_o_mite", "node": A, "dc": "dc1", "rack": "rack1",
                                 "nonce": "c01c01c01c01"})
        self.assertTrue(c.connecting.done)
        self.assertTrue(c.accepting.done)

    def test_with_secret_both_prove_it_and_it_stays_home(self) -> None:
        c = Conversation(identity(A, secret=SECRET), identity(B, secret=SECRET)).run()
        self.assertEqual(c.types(), ["HELLO", "CHALLENGE", "AUTH", "WELCOME"])
        self.assertEqual(c.decisions["connecting"], Ready(B, None, "127.0.0.2:22222", ("publish", "numbered-forward")))
        self.assertEqual(c.decisions["accepting"], Ready(A, "dc1", None))
        for _, frame in c.frames:
            self.assertNotIn(SECRET, frame.payload)
            self.assertNotIn(SECRET.hex().encode(), frame.payload)

    def test_every_frame_comes_from_its_sender(self) -> None:
        c = Conversation(identity(A, secret=SECRET), identity(B, secret=SECRET)).run()
        self.assertEqual([(side, f.origin, f.flags, f.request_id) for side, f in c.frames],
                         [("connecting", A, 0, 0), ("accepting", B, 0, 0),
                          ("connecting", A, 0, 0), ("accepting", B, 0, 0)])

    def test_wrong_cluster(self) -> None:
        c = Conversation(identity(A), identity(B, cluster="other_pool")).run()
        reason = "cluster 'dyn_o_mite' is not this node's cluster 'other_pool'"
        self.assertEqual(c.types(), ["HELLO", "REJECT"])
        self.assertEqual(c.decisions, {"accepting": RejectPeer(reason), "connecting": RejectedByPeer(reason)})

    def test_unknown_node(self) -> None:
        asked = []
        c = Conversation(identity(A), identity(B), known=lambda *who: asked.append(who) or False).run()
        reason = "node %s (dc1/rack1) is not a known peer of %s" % (A, B)
        self.assertEqual(asked, [(A, "dc1", "rack1")])
        self.assertEqual(c.decisions, {"accepting": RejectPeer(reason), "connecting": RejectedByPeer(reason)})

    def test_nobody_is_known_without_a_check(self) -> None:
        c = Conversation(identity(A), identity(B), known=None).run()
        self.assertIsInstance(c.decisions["accepting"], RejectPeer)

    def test_bad_secret(self) -> None:
        c = Conversation(identity(A, secret=b"wrong one"), identity(B, secret=SECRET)).run()
        self.assertEqual(c.types(), ["HELLO", "CHALLENGE", "AUTH", "REJECT"])
        reason = "authentication failed (peer_secret differs)"
        self.assertEqual(c.decisions, {"accepting": RejectPeer(reason), "connecting": RejectedByPeer(reason)})

    def test_secret_on_acceptor_only(self) -> None:
        c = Conversation(identity(A), identity(B, secret=SECRET)).run()
        self.assertEqual(c.types(), ["HELLO", "CHALLENGE"])
        self.assertEqual(c.decisions["connecting"],
                         DropPeer("peer %s requires peer_secret, which this node lacks" % B))
        self.assertIsNone(c.decisions["accepting"])

    def test_secret_on_connector_only(self) -> None:
        """The connector does not trust a peer that did not prove it knows the secret."""
        c = Conversation(identity(A, secret=SECRET), identity(B)).run()
        self.assertEqual(c.types(), ["HELLO", "WELCOME"])
        self.assertEqual(c.decisions["connecting"],
                         DropPeer("peer %s did not prove it knows peer_secret" % B))

    def test_welcome_from_wrong_node(self) -> None:
        c = Conversation(identity(A), identity(B), expected="127.0.0.9:8101").run()
        self.assertEqual(c.decisions["connecting"],
                         DropPeer("reached %s instead of 127.0.0.9:8101" % B))

    def test_challenge_from_wrong_node(self) -> None:
        c = Conversation(identity(A, secret=SECRET), identity(B, secret=SECRET),
                         expected="127.0.0.9:8101").run()
        self.assertEqual(c.types(), ["HELLO", "CHALLENGE"])
        self.assertEqual(c.decisions["connecting"],
                         DropPeer("reached %s instead of 127.0.0.9:8101" % B))

    def test_forged_welcome_proof(self) -> None:
        me = Handshake(identity(A, secret=SECRET), expected=B, nonce=counter("c"))
        me.start()
        step = me.receive(Frame(CHALLENGE, 0, 0, B, encode_control({"node": B, "nonce": "ab" * 16})))
        self.assertEqual([f.type for f in step.send], [AUTH])
        self.assertEqual(me.state, AUTH_SENT)
        step = me.receive(Frame(WELCOME, 0, 0, B, encode_control({"node": B, "proof": "00" * 32})))
        self.assertEqual(step, Step((), DropPeer("peer %s did not prove it knows peer_secret" % B)))

    def test_replayed_auth_refused(self) -> None:
        """A recorded AUTH is worthless against a new challenge."""
        first = Conversation(identity(A, secret=SECRET), identity(B, secret=SECRET)).run()
        hello, auth = [f for side, f in first.frames if side == "connecting"]
        acceptor = Handshake(identity(B, secret=SECRET), known=anyone, nonce=counter("x"))
        self.assertEqual([f.type for f in acceptor.receive(hello).send], [CHALLENGE])
        step = acceptor.receive(auth)
        self.assertEqual(step.decision, RejectPeer("authentication failed (peer_secret differs)"))
        self.assertEqual([f.type for f in step.send], [REJECT])

    def test_unexpected_frames(self) -> None:
        """Before the handshake completes, any other frame ends it: refused, or dropped."""
        acceptor = Handshake(identity(B), known=anyone)
        step = acceptor.receive(Frame(REQUEST, 0, 1, A, b"*1\r\n$4\r\nPING\r\n"))
        self.assertEqual(step.decision, RejectPeer("unexpected REQUEST frame (handshake)"))
        self.assertEqual([(f.type, f.payload) for f in step.send],
                         [(REJECT, b'{"reason":"unexpected REQUEST frame (handshake)"}')])
        connector = Handshake(identity(A), expected=B)
        connector.start()
        self.assertEqual(connector.receive(Frame(REPLY, 0, 1, B, b"+OK\r\n")),
                         Step((), DropPeer("unexpected REPLY frame (handshake)")))
        # the connector never takes a HELLO, nor the acceptor a WELCOME
        self.assertIsInstance(Handshake(identity(A), expected=B).receive(
            Frame(HELLO, 0, 0, B, b"{}")).decision, DropPeer)
        self.assertIsInstance(Handshake(identity(B), known=anyone).receive(
            Frame(WELCOME, 0, 0, A, b"{}")).decision, RejectPeer)

    def test_malformed_frames(self) -> None:
        for payload in (b"not json", b"[]", b'{"cluster":"dyn_o_mite"}',
                        b'{"cluster":"dyn_o_mite","node":1,"dc":"dc1","rack":"r","nonce":"n"}'):
            step = Handshake(identity(B), known=anyone).receive(Frame(HELLO, 0, 0, A, payload))
            self.assertEqual(step.decision, RejectPeer("malformed HELLO frame"))
        connector = Handshake(identity(A), expected=B)
        connector.start()
        self.assertEqual(connector.receive(Frame(REJECT, 0, 0, B, b"{}")).decision,
                         DropPeer("malformed REJECT frame"))

    def test_failure_reported_by_the_transport(self) -> None:
        """Bad bytes or a frame too large: the acceptor says why in a REJECT, the connector drops."""
        step = Handshake(identity(B), known=anyone).fail("handshake frame too large")
        self.assertEqual(step.decision, RejectPeer("handshake frame too large"))
        self.assertEqual([f.type for f in step.send], [REJECT])
        self.assertEqual(Handshake(identity(A), expected=B).fail("bad magic"),
                         Step((), DropPeer("bad magic")))

    def test_no_input_after_a_decision(self) -> None:
        c = Conversation(identity(A), identity(B)).run()
        for machine in (c.connecting, c.accepting):
            self.assertEqual(machine.state, DONE)
            self.assertEqual(machine.receive(c.frames[0][1]), Step())
            self.assertEqual(machine.fail("late"), Step())
        self.assertEqual(c.connecting.start(), Step())

    def test_acceptor_says_nothing_first(self) -> None:
        self.assertEqual(Handshake(identity(B), known=anyone).start(), Step())
