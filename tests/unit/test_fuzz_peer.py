"""
Fuzzing of the peer link's input: the frame parser (dynomite.wire.peer_frames)
and the handshake machine (dynomite.peers.handshake), and what it found.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.peers.handshake import DropPeer, Handshake, Identity, Step

A = "127.0.0.1:8101"
B = "127.0.0.2:8101"


class HandshakeFuzzTests(SynchronousTestCase):
    """Inputs found by fuzzing, against both sides."""

    def test_no_hello_after_a_decision(self) -> None:
        # A decision ends the machine's input, start included.
        machine = Handshake(Identity("dyn_o_mite", A, "dc1", "rack1", None, "127.0.0.1:22222"), expected=B)
        self.assertEqual(machine.fail("bad magic"), Step((), DropPeer("bad magic")))
        self.assertEqual(machine.start(), Step())
