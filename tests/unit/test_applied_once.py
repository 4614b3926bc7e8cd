"""Tests for dynomite.replication.applied_once and the numbering of an outbox's writes."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dynomite.replication.applied_once import META_DB, AppliedOnce, mark_key
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_REPLAY, FLAG_SEQUENCED, sequenced_payload
from dynomite.wire.requests import RequestParser
from dynomite.wire.resp import encode_command

from tests.fakes import Sink


class Recorder:
    """A datastore's ``send`` that records what it was given."""

    def __init__(self) -> None:
        self.sent = []

    def __call__(self, request, sink) -> None:
        self.sent.append((request, sink))


def numbered(first: int, *commands, replay: bool = False) -> Request:
    data = b"".join(encode_command(list(c)) for c in commands)
    return Request(sequenced_payload(first, data), 2, 7, len(commands), True,
                   FLAG_SEQUENCED | (FLAG_REPLAY if replay else 0))


class AppliedOnceTests(SynchronousTestCase):
    def setUp(self):
        self.send = Recorder()
        self.noted = []
        self.once = AppliedOnce(self.send, self.noted.append)

    def test_a_run_is_applied_with_the_mark_of_its_last_write_in_one_transaction(self):
        sink = Sink()
        self.once.send("n1", numbered(100, [b"INCR", b"a"], [b"LPUSH", b"l", b"x"]), sink)
        (request, reply_to), = self.send.sent
        commands = RequestParser().feed(request.payload)
        self.assertEqual(commands, [
            [b"MULTI"], [b"SELECT", b"%d" % META_DB], [b"SET", mark_key("n1"), b"101"],
            [b"SELECT", b"0"], [b"INCR", b"a"], [b"LPUSH", b"l", b"x"], [b"EXEC"]])
        self.assertEqual(request.count, 7)
        reply_to.complete(b"+OK\r\n" + b"+QUEUED\r\n" * 5 + b"*5\r\n+OK\r\n+OK\r\n+OK\r\n:1\r\n:3\r\n")
        self.assertEqual(sink.replies, [b":1\r\n:3\r\n"])

    def test_a_replay_the_mark_has_passed_is_answered_without_being_applied(self):
        sink = Sink()
        self.once.send("n1", numbered(100, [b"INCR", b"a"], replay=True), sink)
        (check, reply_to), = self.send.sent
        self.assertEqual(RequestParser().feed(check.payload),
                         [[b"SELECT", b"%d" % META_DB], [b"GET", mark_key("n1")], [b"SELECT", b"0"]])
        reply_to.complete(b"+OK\r\n$3\r\n100\r\n+OK\r\n")
        self.assertEqual((sink.replies, len(self.send.sent), self.once.skipped), ([b"+OK\r\n"], 1, 1))

    def test_a_replay_past_the_mark_is_applied(self):
        for mark in (b"$2\r\n99\r\n", b"$-1\r\n"):
            self.send.sent.clear()
            self.once.send("n1", numbered(100, [b"INCR", b"a"], replay=True), Sink())
            self.send.sent[0][1].complete(b"+OK\r\n" + mark + b"+OK\r\n")
            self.assertEqual(len(self.send.sent), 2, mark)
            self.assertIn(b"MULTI", self.send.sent[1][0].payload)

    def test_a_refused_transaction_fails_with_redis_words(self):
        sink = Sink()
        self.once.send("n1", numbered(5, [b"INCR", b"a"]), sink)
        self.send.sent[0][1].complete(
            b"+OK\r\n-ERR DB index is out of range\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
            b"-EXECABORT Transaction discarded because of previous errors.\r\n")
        self.assertEqual(sink.failures, [b"-ERR DB index is out of range\r\n"])

    def test_a_write_refused_when_queued_gets_its_error_and_the_others_are_applied(self):
        sink = Sink()
        self.once.send("n1", numbered(5, [b"SET", b"a", b"1"], [b"MSET", b"b"], [b"INCR", b"c"]), sink)
        arity = b"-ERR wrong number of arguments for 'mset' command\r\n"
        self.send.sent[0][1].complete(
            b"+OK\r\n" + b"+QUEUED\r\n" * 4 + arity + b"+QUEUED\r\n"
            b"-EXECABORT Transaction discarded because of previous errors.\r\n")
        again = RequestParser().feed(self.send.sent[1][0].payload)
        self.assertEqual(again[2:-1], [[b"SET", mark_key("n1"), b"7"], [b"SELECT", b"0"],
                                       [b"SET", b"a", b"1"], [b"INCR", b"c"]])
        self.send.sent[1][1].complete(b"+OK\r\n" + b"+QUEUED\r\n" * 5 + b"*5\r\n+OK\r\n+OK\r\n+OK\r\n"
                                      b"+OK\r\n:1\r\n")
        self.assertEqual(sink.replies, [b"+OK\r\n" + arity + b":1\r\n"])
