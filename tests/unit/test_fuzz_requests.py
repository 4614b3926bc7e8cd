"""
Property-based fuzzing of the client request parsers (dynomite.wire.requests).

Whatever a client sends, cut wherever the network cuts it: `feed` raises
nothing, a bad frame sets ``error`` and the parser stays dead, the bytes held
for an unfinished request stay within the request size limit (or Redis's
64 KiB header and inline line limits when those are larger), and the pure
and hiredis parsers return the same requests, bounds and errors.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.unit.fuzzing import cut

from dynomite.wire import requests as requests_module
from dynomite.wire.requests import HiredisRequestParser, RequestParser, make_request_parser, parse_whole
from dynomite.wire.resp import ProtocolError, encode_command

Parser = Union[RequestParser, HiredisRequestParser]

#: Bounded and reproducible: the same examples on every run, nothing stored on disk.
FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_INLINE_MAX = requests_module._INLINE_MAX
DEFAULT_CAP = 64 * 1024 * 1024

# Bytes that matter to a RESP or inline parser, and a few that do not.
_SPECIAL = [b" ", b"\t", b"\r", b"\n", b"\x0b", b"\x0c", b'"', b"'", b"\\", b"\\x4", b"\\x41", b"$",
            b"*", b"0", b"1", b"9", b"-", b"\r\n", b"\x00", b"%", b"+", b"~", b"|", b">", b"a", b"\xff"]

tokens = st.lists(st.sampled_from(_SPECIAL), max_size=6).map(b"".join)
arguments = st.lists(st.one_of(tokens, st.binary(max_size=20)), min_size=1, max_size=5)
multibulk = arguments.map(encode_command)
inline = st.builds(lambda args, end: b" ".join(args) + end, st.lists(tokens, max_size=4),
                   st.sampled_from([b"\r\n", b"\n"]))

# Headers and lines at and beyond every limit, deep nesting and huge counts.
_HOSTILE = [
    b"*0\r\n", b"*-1\r\n", b"*-5\r\n", b"*1048576\r\n", b"*1048577\r\n", b"*2147483647\r\n",
    b"*9223372036854775807\r\n", b"*99999999999999999999\r\n", b"$536870912\r\n", b"$536870913\r\n",
    b"$-1\r\n", b"$01\r\n", b"*01\r\n", b"*+1\r\n", b"*1\r\n" * 50,
    b"~1000\r\n", b"|99999\r\n", b">1234\r\n", b"%7\r\n", b"*1\r\n%2147483647\r\n",
    b"*2\r\n$1\r\na\r\n*999\r\n", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\n",
    b"*1\r\n$70000\r\n", b"\x00PING\r\n", b"\x00" * 10, b'SET "a\\x4" b\r\n',
    b"'unbalanced\r\n", b'"closed"x\r\n', b"\r\n", b"\n", b"*\r\n", b"$\r\n",
]
# Large ones are built, not listed, so that hypothesis's reports stay readable:
# (prefix, repeated byte, count, end).
_BIG = [
    (b"", b"*1\r\n", 2000, b""), (b"*", b"9", 70000, b"\r\n"), (b"*1\r\n$", b"1", 70000, b"\r\n"),
    (b"*", b"1", 70000, b""), (b"", b"a", _INLINE_MAX - 1, b"\r\n"), (b"", b"a", _INLINE_MAX, b"\n"),
    (b"", b"a", _INLINE_MAX + 1, b""), (b"", b"a", _INLINE_MAX + 100, b"\r\n"),
    (b"*1\r\n$70000\r\n", b"x", 70000, b"\r\n"), (b"*1\r\n$70000\r\n", b"x", 1000, b""),
]
hostile = st.one_of(
    st.sampled_from(_HOSTILE),
    st.sampled_from(range(len(_BIG))).map(lambda i: _BIG[i][0] + _BIG[i][1] * _BIG[i][2] + _BIG[i][3]),
    st.integers(-2 ** 64, 2 ** 64).map(lambda n: b"*%d\r\n" % n),
    st.integers(-2 ** 64, 2 ** 64).map(lambda n: b"$%d\r\n" % n),
    st.binary(max_size=40),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request with a few bytes replaced, inserted or cut off."""
    raw = bytearray(draw(st.one_of(multibulk, inline)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(raw)))
        raw[i:i + draw(st.integers(0, 2))] = draw(st.sampled_from(_SPECIAL))
    return bytes(raw)


# Bytes a valid inline argument holds none of: whitespace, quotes and control bytes.
_NOT_INLINE = set(b" \"'\x7f") | set(range(0x20))
streams = st.lists(st.one_of(multibulk, inline, mutated(), hostile), max_size=8).map(b"".join)
caps = st.sampled_from([None, 1, 8, 20, 60, 1000, _INLINE_MAX - 1, _INLINE_MAX + 10])


def make(factory: type, cap: Optional[int]) -> Parser:
    return factory() if cap is None else factory(cap)


def held(parser: Parser) -> int:
    """The bytes the parser keeps for a request still arriving."""
    pure = getattr(parser, "_pure", parser)
    assert sum(map(len, pure._pending)) == pure._pending_len
    return pure._pending_len


def factories() -> List[type]:
    return [RequestParser] if requests_module._hiredis is None else [RequestParser, HiredisRequestParser]


class RequestParserFuzzTests(SynchronousTestCase):
    """Random, truncated, oversize and nested requests, cut anywhere, against both parsers."""

    def feed_checked(self, parser: Parser, chunks: Sequence[bytes], cap: Optional[int]
                     ) -> Tuple[List[List[bytes]], Optional[str], List[List[int]]]:
        """
        Feed *chunks* one at a time, checking after each the contract every
        caller relies on; return the requests, the error, and each feed's
        bounds followed by whether a request was in progress after it.
        """
        limit = max(DEFAULT_CAP if cap is None else cap, _INLINE_MAX) + 2
        got: List[List[bytes]] = []
        all_bounds: List[List[int]] = []
        for chunk in chunks:
            before = parser.error
            out = parser.feed(chunk)
            bounds = list(parser.bounds)
            if held(parser):
                self.assertTrue(parser.in_request)
            if before is not None:
                self.assertEqual(out, [])
                self.assertIs(parser.error, before)
            if parser.error is not None:
                self.assertIsInstance(parser.error, ProtocolError)
                self.assertEqual(held(parser), 0)
            self.assertLessEqual(held(parser), limit)
            self.assertEqual(len(bounds), 2 * len(out))
            for i, args in enumerate(out):
                self.assertIsInstance(args, list)
                self.assertTrue(args)
                start, end = bounds[2 * i], bounds[2 * i + 1]
                if start >= 0:
                    # A request with bounds can be forwarded as those bytes: they parse back to it.
                    alone = make(RequestParser, cap)
                    self.assertEqual(alone.feed(chunk[start:end]), [args])
                    self.assertEqual((alone.error, alone._pending, alone._left), (None, [], 0))
            got.extend(out)
            all_bounds.append(bounds + [parser.in_request])
        return got, None if parser.error is None else str(parser.error), all_bounds

    @FUZZ
    @given(st.data(), streams, caps)
    def test_any_stream_cut_anywhere(self, data: st.DataObject, stream: bytes, cap: Optional[int]) -> None:
        """However a stream is cut, both parsers see what the pure parser sees in one read."""
        whole = make(RequestParser, cap)
        expected = (whole.feed(stream), None if whole.error is None else str(whole.error))
        chunks = data.draw(cut(stream))
        results = []
        for factory in factories():
            got, error, bounds = self.feed_checked(make(factory, cap), chunks, cap)
            self.assertEqual((got, error), expected)
            results.append(bounds)
        self.assertEqual(results[-1], results[0])  # the same bounds and state, feed by feed

    @FUZZ
    @given(st.data(), st.lists(st.one_of(arguments.map(lambda a: ("multibulk", a)),
                                         st.lists(st.binary(min_size=1, max_size=8).filter(
                                             lambda t: not set(t) & _NOT_INLINE and t[:1] != b"*"),
                                             min_size=1, max_size=4).map(lambda a: ("inline", a))),
                               max_size=10))
    def test_valid_requests_cut_anywhere(self, data: st.DataObject,
                                         requests: List[Tuple[str, List[bytes]]]) -> None:
        """Valid requests come out whole and in order, and nothing is held after the last."""
        stream = b"".join(encode_command(args) if kind == "multibulk" else b" ".join(args) + b"\r\n"
                          for kind, args in requests)
        chunks = data.draw(cut(stream))
        for factory in factories():
            parser = make(factory, None)
            got, error, _ = self.feed_checked(parser, chunks, None)
            self.assertEqual(got, [args for _, args in requests])
            self.assertIsNone(error)
            self.assertEqual(held(parser), 0)

    @FUZZ
    @given(st.data(), st.integers(1, 4096), arguments, st.integers(1, 1 << 20))
    def test_oversize_requests_are_refused_from_their_headers(
            self, data: st.DataObject, cap: int, args: List[bytes], extra: int) -> None:
        """A request declaring more than the cap is refused before its body arrives."""
        size = sum(map(len, args)) + cap + extra
        head = b"*%d\r\n" % (len(args) + 1) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        head += b"$%d\r\n" % (cap + extra)
        body = b"x" * min(size, 4096)
        chunks = data.draw(cut(head))
        for factory in factories():
            parser = make(factory, cap)
            got, error, _ = self.feed_checked(parser, chunks + [body], cap)
            self.assertEqual(got, [])
            self.assertEqual(error, "request exceeds max_request_bytes (%d)" % cap)

    @FUZZ
    @given(st.data(), st.sampled_from([None, 8, 1000]),
           st.integers(1, 3000), st.sampled_from([b"*1\r\n", b"*2\r\n$1\r\na\r\n", b"~1\r\n", b"*1048576\r\n"]))
    def test_deep_nesting_is_a_clear_error(self, data: st.DataObject, cap: Optional[int], depth: int,
                                           level: bytes) -> None:
        """Nested aggregates are not requests: the first one is refused, nothing is held."""
        chunks = data.draw(cut(b"*1\r\n" + level * depth + b":1\r\n"))
        for factory in factories():
            parser = make(factory, cap)
            got, error, _ = self.feed_checked(parser, chunks, cap)
            self.assertEqual(got, [])
            self.assertIsNotNone(error)

    def test_make_request_parser_is_one_of_the_fuzzed(self) -> None:
        self.assertIn(type(make_request_parser()), factories())


def _whole_by_pure_parser(payload: bytes):
    """`parse_whole` as the pure parser alone decides it: (requests, bounds), or None for ProtocolError."""
    parser = RequestParser(len(payload) + 1)
    got = parser.feed(payload)
    if parser.error is not None or parser.in_request or -1 in parser.bounds:
        return None
    return got, parser.bounds


def _whole(payload: bytes):
    try:
        return parse_whole(payload)
    except ProtocolError:
        return None


# Peer payloads: canonical requests, big values and counts among them.
_canonical_payloads = st.lists(st.one_of(
    multibulk,
    st.integers(1, 1100).map(lambda n: encode_command([b"DEL"] + [b"k"] * n)),
    st.integers(65530, 65540).map(lambda n: encode_command([b"SET", b"k", b"v" * n])),
), min_size=1, max_size=6).map(b"".join)


class ParseWholeFuzzTests(SynchronousTestCase):
    """
    `parse_whole` (peer payloads) takes hiredis's fast way where it can;
    whatever the bytes, it answers what the pure parser answers.
    """

    @FUZZ
    @given(st.one_of(_canonical_payloads, streams))
    def test_same_as_the_pure_parser(self, payload: bytes) -> None:
        self.assertEqual(_whole(payload), _whole_by_pure_parser(payload))

    @FUZZ
    @given(_canonical_payloads)
    def test_canonical_payloads_are_whole(self, payload: bytes) -> None:
        requests, bounds = parse_whole(payload)
        self.assertEqual(b"".join(payload[bounds[i]:bounds[i + 1]] for i in range(0, len(bounds), 2)),
                         payload)
        self.assertEqual(b"".join(map(encode_command, requests)), payload)

    def test_the_fast_way_is_taken_on_cpython_with_hiredis(self) -> None:
        """A canonical payload is parsed by hiredis when it is there."""
        if not requests_module._FAST_WHOLE:
            raise SkipTest("no hiredis, or not CPython: parse_whole is the pure parser alone")
        payload = encode_command([b"SET", b"k", b"v"]) * 3
        self.assertEqual(requests_module._parse_whole_hiredis(payload), _whole_by_pure_parser(payload))

    def test_non_canonical_layouts_go_to_the_pure_parser(self) -> None:
        """Layouts hiredis reads but nodes never send: a simple string, an integer, nesting, nil."""
        if not requests_module._FAST_WHOLE:
            raise SkipTest("no hiredis, or not CPython: parse_whole is the pure parser alone")
        for payload in (b"*2\r\n$3\r\nGET\r\n+k\r\n", b"*2\r\n$3\r\nGET\r\n:1\r\n",
                        b"*2\r\n$3\r\nGET\r\n*1\r\n$1\r\nk\r\n", b"*2\r\n$3\r\nGET\r\n$-1\r\n",
                        b"*2\r\n$3\r\nGET\r\n$01\r\nk\r\n"):
            self.assertIsNone(requests_module._parse_whole_hiredis(payload), payload)
            self.assertEqual(_whole(payload), _whole_by_pure_parser(payload))
