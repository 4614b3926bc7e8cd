"""
Property-based fuzzing of the peer link's input: the frame parser
(dynomite.wire.peer_frames) and the handshake machine
(dynomite.peers.handshake).

Valid frames cut anywhere come back as they were sent; any other bytes
raise `PeerProtocolError` and nothing else, with no more buffered than one
frame within the size limit.  Whatever frames reach either side of a
handshake, and whatever a man in the middle does to them, only its
documented steps and decisions come out, and without ``peer_secret`` a
connector never takes the link as open unless the acceptor did too.
"""

from __future__ import annotations

import itertools
import json
from typing import Callable, List, Optional, Tuple

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fuzzing import cut

from dynomite.peers.handshake import DropPeer, Handshake, Identity, Ready, RejectedByPeer, RejectPeer, Step
from dynomite.wire.peer_frames import (
    AUTH, CHALLENGE, FRAME_NAMES, HEADER_SIZE, HELLO, MAGIC, MAX_ORIGIN, REJECT, VERSION, WELCOME, Frame,
    FrameTooLarge, PeerFramer, PeerProtocolError, decode_control, encode_frame,
)

#: Bounded and reproducible: the same examples on every run, nothing stored on disk.
FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

A = "127.0.0.1:8101"
B = "127.0.0.2:8101"
SECRET = b"correct horse battery staple"

frames = st.builds(
    Frame, st.sampled_from(sorted(FRAME_NAMES)), st.integers(0, 0xFFFF), st.integers(0, 2 ** 64 - 1),
    st.text(max_size=20).filter(lambda o: len(o.encode("utf-8")) <= MAX_ORIGIN) | st.just("é" * 127),
    st.binary(max_size=64))


def raw_header(magic: int, version: int, ftype: int, olen: int, plen: int) -> bytes:
    return b"%c%c%c%c" % (magic >> 8, magic & 0xFF, version, ftype) + bytes(10) + bytes((olen,)) + \
        plen.to_bytes(4, "big")


headers = st.builds(
    raw_header, st.sampled_from([MAGIC, MAGIC, 0x5944, 0]), st.sampled_from([VERSION, VERSION, 1, 255]),
    st.sampled_from(sorted(FRAME_NAMES)) | st.integers(0, 255), st.integers(0, 255), st.integers(0, 2 ** 32 - 1))


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """Random bytes, random headers, or valid frames with bytes replaced."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=80))
    if kind == 1:
        return draw(headers) + draw(st.binary(max_size=40))
    raw = bytearray(encode_frame(*draw(frames)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(raw)))
        raw[i:i + draw(st.integers(0, 2))] = draw(st.binary(max_size=2))
    return bytes(raw)


def reference(data: bytes, max_payload: int) -> Tuple[List[Frame], Optional[Exception]]:
    """The frames in *data* read whole, and the error after them: the spec in the module docstring."""
    out: List[Frame] = []
    pos = 0
    while len(data) - pos >= HEADER_SIZE:
        magic, version, ftype = int.from_bytes(data[pos:pos + 2], "big"), data[pos + 2], data[pos + 3]
        if magic != MAGIC or version != VERSION or ftype not in FRAME_NAMES:
            return out, PeerProtocolError()
        olen, plen = data[pos + 14], int.from_bytes(data[pos + 15:pos + 19], "big")
        if plen > max_payload:
            return out, FrameTooLarge()
        end = pos + HEADER_SIZE + olen + plen
        if end > len(data):
            break
        try:
            origin = data[pos + HEADER_SIZE:pos + HEADER_SIZE + olen].decode("utf-8")
        except UnicodeDecodeError:
            return out, PeerProtocolError()
        out.append(Frame(ftype, int.from_bytes(data[pos + 4:pos + 6], "big"),
                         int.from_bytes(data[pos + 6:pos + 14], "big"), origin, data[end - plen:end]))
        pos = end
    return out, None


class PeerFramerFuzzTests(SynchronousTestCase):
    """Valid frames and hostile bytes, cut anywhere."""

    def feed_checked(self, framer: PeerFramer, chunks: List[bytes]) -> Tuple[List[Frame], Optional[Exception]]:
        """The frames every feed returned until one raised, and that error."""
        got: List[Frame] = []
        for chunk in chunks:
            try:
                got.extend(framer.feed(chunk))
            except PeerProtocolError as e:
                return got, e
            self.assertLess(framer.buffered, HEADER_SIZE + MAX_ORIGIN + framer.max_payload)
        return got, None

    @FUZZ
    @given(st.data(), st.lists(frames, max_size=8))
    def test_frames_cut_anywhere_round_trip(self, data: st.DataObject, sent: List[Frame]) -> None:
        chunks = data.draw(cut(b"".join(encode_frame(*f) for f in sent)))
        framer = PeerFramer(max_payload=max([len(f.payload) for f in sent], default=0))
        self.assertEqual(self.feed_checked(framer, chunks), (sent, None))
        self.assertEqual(framer.buffered, 0)

    @FUZZ
    @given(st.data(), st.lists(frames.map(lambda f: encode_frame(*f)) | hostile(), min_size=1, max_size=5),
           st.sampled_from([0, 1, 16, 64, 1 << 20]))
    def test_other_bytes_raise_peer_protocol_error_only(self, data: st.DataObject, parts: List[bytes],
                                                        max_payload: int) -> None:
        stream = b"".join(parts)
        got, error = self.feed_checked(PeerFramer(max_payload), data.draw(cut(stream)))
        expected, expected_error = reference(stream, max_payload)
        self.assertEqual(got, expected[:len(got)])
        if error is None:
            self.assertIsNone(expected_error)
            self.assertEqual(got, expected)
        else:
            self.assertEqual(type(error), type(expected_error))

    @FUZZ
    @given(st.data(), frames, st.integers(0, 4096), st.integers(1, 2 ** 32 - 1))
    def test_an_oversize_frame_is_refused_from_its_header(self, data: st.DataObject, frame: Frame,
                                                          max_payload: int, excess: int) -> None:
        plen = min(max_payload + excess, 2 ** 32 - 1)
        head = encode_frame(*frame)[:HEADER_SIZE - 4] + plen.to_bytes(4, "big")
        framer = PeerFramer(max_payload)
        got, error = self.feed_checked(framer, data.draw(cut(head)) + [b"x" * 100])
        self.assertEqual(got, [])
        self.assertIsInstance(error, FrameTooLarge)


# -- the handshake -------------------------------------------------------------------

def identity(name: str, secret: Optional[bytes]) -> Identity:
    return Identity("dyn_o_mite", name, "dc1", "rack1", secret, name.replace("8101", "22222"))


def counter(prefix: str) -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: "%s%04d" % (prefix, next(numbers))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(
        [A, B, "dyn_o_mite", "dc1", "rack1", "", "\x00", "a\nb", "c0001", "a0001", "0" * 64]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
_FIELDS = ["cluster", "node", "dc", "rack", "nonce", "proof", "reason", "admin"]
payloads = st.one_of(
    st.binary(max_size=40),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(_FIELDS), json_values, max_size=8).map(lambda d: json.dumps(d).encode()),
)
handshake_frames = st.builds(
    Frame, st.sampled_from(sorted(FRAME_NAMES)) | st.integers(0, 255), st.just(0), st.just(0),
    st.sampled_from(["", A, B]), payloads)

# What the protocol passes to `Handshake.fail`: the reasons of its `PeerProtocolError`s.
reasons = st.text(min_size=1, max_size=10).filter(str.isprintable)
# What a man in the middle does with the next frame on the wire (or a frame he injects).
moves = st.sampled_from(["deliver"] * 6 + ["drop", "swap", "inject", "mutate", "replay"])
_SENDS = {True: {HELLO, AUTH}, False: {CHALLENGE, WELCOME, REJECT}}
_FIELDS_READ = {HELLO: ("cluster", "node", "dc", "rack", "nonce"), CHALLENGE: ("node", "nonce"),
                AUTH: ("proof",), WELCOME: ("node",), REJECT: ("reason",)}
_DECISIONS = {True: (Ready, RejectedByPeer, DropPeer), False: (Ready, RejectPeer)}


class HandshakeFuzzTests(SynchronousTestCase):
    """Random frames and a meddling man in the middle, against both sides."""

    def test_no_hello_after_a_decision(self) -> None:
        # A decision ends the machine's input, start included.
        machine = Handshake(identity(A, None), expected=B)
        self.assertEqual(machine.fail("bad magic"), Step((), DropPeer("bad magic")))
        self.assertEqual(machine.start(), Step())

    def check(self, machine: Handshake, step: Step, was_done: bool) -> None:
        """*step* is one the machine documents; after a decision nothing more comes out."""
        self.assertIsInstance(step, Step)
        if was_done:
            self.assertEqual(step, Step())
            return
        for frame in step.send:
            self.assertIn(frame.type, _SENDS[machine.connecting])
            encode_frame(*frame)
            decode_control(frame, _FIELDS_READ[frame.type])  # the peer can read what it is sent
        if step.decision is not None:
            self.assertIsInstance(step.decision, _DECISIONS[machine.connecting])
            self.assertTrue(machine.done)
            if isinstance(step.decision, RejectPeer):
                self.assertEqual([f.type for f in step.send][-1:], [REJECT])
        else:
            self.assertFalse(machine.done)

    @FUZZ
    @given(st.booleans(), st.sampled_from([None, SECRET]),
           st.lists(handshake_frames.map(lambda f: ("frame", f)) | reasons.map(lambda r: ("fail", r))
                    | st.just(("start", None)), max_size=6))
    def test_random_input_gives_documented_steps(self, connecting: bool, secret: Optional[bytes],
                                                 inputs: List[Tuple[str, object]]) -> None:
        me = identity(A, secret)
        machine = (Handshake(me, expected=B, nonce=counter("c")) if connecting
                   else Handshake(me, known=lambda n, d, r: n == B, nonce=counter("a")))
        for kind, value in inputs:
            was_done = machine.done
            if kind == "frame":
                step = machine.receive(value)  # type: ignore[arg-type]
            elif kind == "fail":
                step = machine.fail(value)  # type: ignore[arg-type]
            else:
                step = machine.start()
            self.check(machine, step, was_done)
            if secret is not None:
                # Proving a secret cannot happen by chance.
                self.assertNotIsInstance(step.decision, Ready)

    @FUZZ
    @given(st.sampled_from([(None, None), (SECRET, SECRET), (SECRET, None), (None, SECRET),
                            (SECRET, b"another secret")]),
           st.lists(st.one_of(*[moves] * 3, handshake_frames), max_size=10))
    def test_a_man_in_the_middle_gets_only_documented_decisions(
            self, secrets: Tuple[Optional[bytes], Optional[bytes]], moves: List[object]) -> None:
        connector = Handshake(identity(A, secrets[0]), expected=B, nonce=counter("c"))
        acceptor = Handshake(identity(B, secrets[1]), known=lambda n, d, r: n == A, nonce=counter("a"))
        decisions = {True: None, False: None}
        seen: List[Tuple[bool, Frame]] = []
        wire: List[Tuple[bool, Frame]] = []  # (to the connector?, frame)

        def run(machine: Handshake, step: Step, was_done: bool) -> None:
            self.check(machine, step, was_done)
            if step.decision is not None:
                decisions[machine.connecting] = step.decision
            wire.extend((not machine.connecting, f) for f in step.send)

        run(connector, connector.start(), False)
        for move in moves + ["deliver"] * 6:
            if isinstance(move, Frame):
                wire.insert(0, (len(wire) % 2 == 0, move))
                continue
            if not wire:
                continue
            to_connector, frame = wire.pop(0)
            if move == "drop":
                continue
            if move == "swap":
                to_connector = not to_connector
            elif move == "mutate":
                frame = frame._replace(payload=frame.payload.replace(b"dc1", b"dc2").replace(b"0", b"1"))
            elif move == "replay" and seen:
                wire.insert(0, (to_connector, frame))
                to_connector, frame = seen[0]
            elif move == "inject":
                frame = frame._replace(type=REJECT if frame.type != REJECT else WELCOME)
            seen.append((to_connector, frame))
            machine = connector if to_connector else acceptor
            was_done = machine.done
            run(machine, machine.receive(frame), was_done)
        if secrets[0] is not None and isinstance(decisions[True], Ready):
            # The acceptor proved it knows the secret only after it accepted this connector.
            self.assertEqual(secrets[0], secrets[1])
            self.assertEqual(decisions[False], Ready(A, "dc1", None))
