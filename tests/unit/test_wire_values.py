"""dynomite.wire.values: whole replies decoded into Python values."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.wire.resp import ProtocolError
from dynomite.wire.values import ReplyError, decode


class DecodeTests(SynchronousTestCase):
    def test_scalars(self) -> None:
        self.assertEqual(decode(b"+OK\r\n"), b"OK")
        self.assertEqual(decode(b":-12\r\n"), -12)
        self.assertEqual(decode(b"$3\r\na\r\n\r\n"), b"a\r\n")
        self.assertIsNone(decode(b"$-1\r\n"))
        self.assertIsNone(decode(b"_\r\n"))
        self.assertEqual(decode(b",1.5\r\n"), 1.5)
        self.assertIs(decode(b"#t\r\n"), True)

    def test_nested_arrays_and_errors(self) -> None:
        value = decode(b"*3\r\n$1\r\n0\r\n:2\r\n*2\r\n-ERR no\r\n*-1\r\n")
        self.assertEqual(value[:2], [b"0", 2])
        self.assertIsInstance(value[2][0], ReplyError)
        self.assertEqual(value[2][0].message, b"ERR no")
        self.assertIsNone(value[2][1])

    def test_resp3_map_is_flat(self) -> None:
        self.assertEqual(decode(b"%1\r\n+a\r\n:1\r\n"), [b"a", 1])

    def test_incomplete_or_trailing_bytes_are_refused(self) -> None:
        for raw in (b"", b"$5\r\nab\r\n", b"*2\r\n:1\r\n", b":1\r\n:2\r\n", b"?x\r\n"):
            self.assertRaises(ProtocolError, decode, raw)
