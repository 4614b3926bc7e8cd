"""
Property-based fuzzing of the reply framer (dynomite.wire.replies).

Random RESP2/RESP3 replies, nested and streamed, joined and cut anywhere,
frame into exactly the replies joined, byte for byte, with the pure and the
hiredis framer; bytes that are not RESP raise `ProtocolError` and nothing
else; `simple_replies_end` frames what it accepts as the parser does.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fuzzing import cut

from dynomite.wire import replies as replies_module
from dynomite.wire.replies import HiredisReplyParser, ReplyParser, simple_replies_end
from dynomite.wire.resp import ProtocolError

#: Bounded and reproducible: the same examples on every run, nothing stored on disk.
FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

line_text = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"r").replace(b"\n", b"n"))
blob = st.one_of(st.binary(max_size=16), st.sampled_from([b"\r\n", b"a\r\nb", b"\r", b"\n", b"$3\r\n"]))


def sized(kind: bytes, data: bytes) -> bytes:
    return b"%s%d\r\n%s\r\n" % (kind, len(data), data)


def streamed_string(chunks: List[bytes]) -> bytes:
    return b"$?\r\n" + b"".join(sized(b";", c) for c in chunks) + b";0\r\n"


leaves = st.one_of(
    line_text.map(lambda t: b"+" + t + b"\r\n"),
    line_text.map(lambda t: b"-ERR " + t + b"\r\n"),
    st.integers(-2 ** 63, 2 ** 63 - 1).map(lambda n: b":%d\r\n" % n),
    blob.map(lambda b: sized(b"$", b)),
    st.just(b"$-1\r\n"),
    st.just(b"*-1\r\n"),
    st.just(b"_\r\n"),
    st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr).map(str.encode),
              st.sampled_from([b"inf", b"-inf", b"nan"])).map(lambda d: b"," + d + b"\r\n"),
    st.sampled_from([b"#t\r\n", b"#f\r\n"]),
    st.integers(-2 ** 200, 2 ** 200).map(lambda n: b"(%d\r\n" % n),
    blob.map(lambda b: sized(b"!", b)),
    blob.map(lambda b: sized(b"=", b"txt:" + b)),
    st.lists(st.binary(min_size=1, max_size=8), max_size=4).map(streamed_string),
)


def aggregates(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    items = st.lists(children, max_size=4)
    pairs = st.lists(st.tuples(children, children), max_size=3)
    return st.one_of(
        st.tuples(st.sampled_from([b"*", b"~", b">"]), items).map(
            lambda t: b"%s%d\r\n" % (t[0], len(t[1])) + b"".join(t[1])),
        pairs.map(lambda p: b"%%%d\r\n" % len(p) + b"".join(k + v for k, v in p)),
        st.tuples(st.sampled_from([b"*", b"~"]), items).map(
            lambda t: t[0] + b"?\r\n" + b"".join(t[1]) + b".\r\n"),
        pairs.map(lambda p: b"%?\r\n" + b"".join(k + v for k, v in p) + b".\r\n"),
        # an attribute is one element with the value it annotates
        st.tuples(pairs, children).map(
            lambda t: b"|%d\r\n" % len(t[0]) + b"".join(k + v for k, v in t[0]) + t[1]),
    )


replies = st.recursive(leaves, aggregates, max_leaves=12)
simple = st.one_of(
    line_text.map(lambda t: b"+" + t + b"\r\n"), st.just(b"+OK\r\n"),
    line_text.map(lambda t: b"-ERR " + t + b"\r\n"),
    st.integers(-2 ** 63, 2 ** 63 - 1).map(lambda n: b":%d\r\n" % n),
    st.binary(max_size=1100).map(lambda b: sized(b"$", b)), st.just(b"$-1\r\n"),
)

# Framing bytes that break RESP in interesting ways, and a few that do not.
_NOISE = [b"\r\n", b"\r", b"\n", b"?", b".\r\n", b";0\r\n", b";3\r\n", b"$?\r\n", b"*?\r\n", b"|1\r\n",
          b"|-1\r\n", b"$-2\r\n", b"$" + b"9" * 25 + b"\r\n", b"*9" * 12, b"\x00", b"x",
          b"$4\r\nabc\r\n", b"*2\r\n", b":", b"%1\r\n"]
# Large ones are built, not listed, so that hypothesis's reports stay readable.
_BIG_NOISE = st.sampled_from([300, 70000]).map(
    lambda n: b"*1\r\n" * n if n == 300 else b"$%d\r\n%s\r\n" % (n, b"z" * n))


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """Valid replies with bytes replaced or inserted, noise, or random bytes."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=60))
    if kind == 1:
        return b"".join(draw(st.lists(st.sampled_from(_NOISE) | _BIG_NOISE | replies, max_size=6)))
    raw = bytearray(draw(replies))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(raw)))
        raw[i:i + draw(st.integers(0, 2))] = draw(st.sampled_from(_NOISE[:12]) | st.binary(max_size=2))
    return bytes(raw)


def factories() -> List[type]:
    return [ReplyParser] if replies_module._hiredis is None else [ReplyParser, HiredisReplyParser]


def frame_all(factory: type, chunks: Sequence[bytes]) -> Tuple[List[bytes], Optional[str]]:
    """The frames every feed returned until one raised, and that error (None if none did)."""
    parser = factory()
    frames: List[bytes] = []
    for chunk in chunks:
        try:
            frames.extend(parser.feed(chunk))
        except ProtocolError as e:
            # The stream is dead: every later feed raises the same error.
            for later in (b"", b"+OK\r\n"):
                try:
                    parser.feed(later)
                except ProtocolError as again:
                    assert str(again) == str(e), (again, e)
                else:
                    raise AssertionError("a framer fed again after an error did not raise")
            return frames, str(e)
    return frames, None


class ReplyFramerFuzzTests(SynchronousTestCase):
    """Random replies and random bytes, cut anywhere, against both framers."""

    @FUZZ
    @given(st.data(), st.lists(replies, max_size=8))
    def test_replies_cut_anywhere_frame_into_the_replies(self, data: st.DataObject,
                                                         joined: List[bytes]) -> None:
        stream = b"".join(joined)
        chunks = data.draw(cut(stream))
        for factory in factories():
            parser = factory()
            frames = [frame for chunk in chunks for frame in parser.feed(chunk)]
            self.assertEqual(frames, joined, factory)
            self.assertFalse(parser.in_frame)

    def test_map_with_an_aggregate_key(self) -> None:
        # RESP3 lets a map key be any reply; hiredis raises TypeError building
        # a dict keyed by a list or a dict, and that must not escape `feed`.
        stream = b"%1\r\n*0\r\n:1\r\n%1\r\n%0\r\n:2\r\n+OK\r\n"
        for factory in factories():
            self.assertEqual(factory().feed(stream), [b"%1\r\n*0\r\n:1\r\n", b"%1\r\n%0\r\n:2\r\n", b"+OK\r\n"])

    @FUZZ
    @given(st.data(), st.lists(replies, min_size=1, max_size=4))
    def test_feed_to_boundary_stops_after_each_reply(self, data: st.DataObject, joined: List[bytes]) -> None:
        stream = b"".join(joined)
        parser = ReplyParser()
        frames: List[bytes] = []
        for chunk in data.draw(cut(stream)):
            while True:
                out, used = parser.feed_to_boundary(chunk)
                self.assertLessEqual(len(out), 1)
                frames.extend(out)
                self.assertTrue(0 <= used <= len(chunk))
                if used == len(chunk):
                    break
                self.assertTrue(out)
                chunk = chunk[used:]
        self.assertEqual(frames, joined)

    @FUZZ
    @given(st.data(), st.lists(hostile(), min_size=1, max_size=4).map(b"".join))
    def test_bytes_that_are_not_resp_raise_protocol_error_only(self, data: st.DataObject,
                                                               stream: bytes) -> None:
        chunks = data.draw(cut(stream))
        results = [frame_all(factory, chunks) for factory in factories()]
        self.assertEqual(results[-1], results[0])
        whole, error = frame_all(ReplyParser, [stream])
        if error is None:
            self.assertEqual(results[0], (whole, None))
        # Each frame is whole: alone, it frames as itself.
        for frame in results[0][0]:
            self.assertEqual(ReplyParser().feed(frame), [frame])

    @FUZZ
    @given(st.data(), st.lists(st.one_of(simple, replies), max_size=10), st.integers(0, 12),
           st.binary(max_size=8))
    def test_simple_replies_end_frames_as_the_parser(self, data: st.DataObject, joined: List[bytes],
                                                     count: int, junk: bytes) -> None:
        prefix = data.draw(st.binary(max_size=3))
        stream = prefix + b"".join(joined) + junk
        end, errors = simple_replies_end(stream, len(prefix), count)
        if end == -2:
            # Waiting only when the stream ends before the run does.
            try:
                framed = len(ReplyParser().feed(stream[len(prefix):]))
            except ProtocolError:
                framed = -1
            self.assertLess(framed, count)
        elif end >= 0:
            frames = ReplyParser().feed(stream[len(prefix):end])
            self.assertEqual(len(frames), count)
            self.assertEqual(sum(map(len, frames)), end - len(prefix))
            self.assertEqual(errors, sum(1 for f in frames if f[:1] == b"-"))
        else:
            self.assertEqual(end, -1)
        if not prefix and not junk and all(r in simple_set(r) for r in joined) and count <= len(joined):
            # A run of simple replies is always recognised.
            self.assertEqual(end, sum(map(len, joined[:count])))


def simple_set(reply: bytes) -> Tuple[bytes, ...]:
    """(reply,) when `simple_replies_end` is meant to accept *reply*, else ()."""
    if reply[:1] in (b"+", b"-", b":"):
        return (reply,)
    if reply == b"$-1\r\n":
        return (reply,)
    if reply[:1] == b"$" and reply[1:2] != b"?":
        length = int(reply[1:reply.index(b"\r\n")])
        return (reply,) if length < 1024 else ()
    return ()
