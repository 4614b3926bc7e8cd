"""The lean epoll turn (dynomite.fastpoll) dispatches like Twisted's own."""

from __future__ import annotations

import socket

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.runtime import fastpoll


class Reader:
    """A descriptor the reactor polls: one end of a socket pair."""

    def __init__(self, sock: socket.socket, fail: bool = False) -> None:
        self.sock = sock
        self.fail = fail
        self.read = []
        self.lost = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "Reader"

    def doRead(self):
        data = self.sock.recv(100)
        if self.fail:
            raise RuntimeError("protocol bug")
        self.read.append(data)

    def connectionLost(self, reason) -> None:
        self.lost.append(reason)


class FastPollTests(SynchronousTestCase):
    def reactor(self) -> EPollReactor:
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.assertTrue(fastpoll.install(reactor))
        return reactor

    def pair(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        return a, b

    def test_ready_descriptors_are_read(self):
        reactor = self.reactor()
        a, b = self.pair()
        reader = Reader(a)
        reactor.addReader(reader)
        b.send(b"hello")
        reactor.doIteration(0)
        self.assertEqual(reader.read, [b"hello"])
        reactor.doIteration(0)   # nothing more to read: not called again
        self.assertEqual(reader.read, [b"hello"])

    def test_an_exception_in_a_protocol_is_logged_and_disconnects_only_it(self):
        reactor = self.reactor()
        a, b = self.pair()
        c, d = self.pair()
        bad, good = Reader(a, fail=True), Reader(c)
        reactor.addReader(bad)
        reactor.addReader(good)
        b.send(b"x")
        d.send(b"y")
        reactor.doIteration(0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(bad.lost), 1)
        self.assertEqual(good.read, [b"y"])
        self.assertNotIn(bad, reactor.getReaders())

    def test_other_reactors_are_left_alone(self):
        self.assertFalse(fastpoll.install(Clock()))
