"""
The Twisted internals that dynomite.runtime.twisted_private relies on are
still there, and still behave as it expects.

Each failure names the attribute (or the changed method) and the installed
Twisted version, so that upgrading Twisted past the versions the module's
docstring lists fails here, loudly, instead of slowing down or silencing a
running node.
"""

from __future__ import annotations

import ast
import inspect
import os
import socket
import textwrap

import twisted
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import tcp
from twisted.internet.defer import fail
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogPublisher
from twisted.trial.unittest import SynchronousTestCase

import dynomite
from dynomite.runtime import logs, twisted_private
from dynomite.runtime.twisted_private import PRIVATE_NAMES

#: The body of ``EPollReactor.doPoll`` (no docstring, no comments) that
#: ``twisted_private.epoll_turn`` copies, less ``log.callWithLogger``.
DO_POLL = """\
if timeout is None:
    timeout = -1
try:
    l = self._poller.poll(timeout, len(self._selectables))
except OSError as err:
    if err.errno == errno.EINTR:
        return
    raise
_drdw = self._doReadOrWrite
for fd, event in l:
    try:
        selectable = self._selectables[fd]
    except KeyError:
        pass
    else:
        log.callWithLogger(selectable, _drdw, selectable, fd, event)"""


def _uses_elsewhere():
    """(path, name) for each module of dynomite/ but twisted_private that reads a private name."""
    private = {name for names in PRIVATE_NAMES.values() for name in names if name[0] == "_"}
    package = os.path.dirname(os.path.abspath(dynomite.__file__))
    root = os.path.dirname(package)
    found = set()
    for directory, _, files in os.walk(package):
        for name in files:
            path = os.path.join(directory, name)
            if not name.endswith(".py") or path == os.path.abspath(twisted_private.__file__):
                continue
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in private:
                    found.add((os.path.relpath(path, root).replace(os.sep, "/"), node.attr))
    return found


def _where(message: str) -> str:
    return (f"Twisted {twisted.__version__}: {message}; "
            "dynomite/runtime/twisted_private.py relies on it (see its docstring "
            "for the Twisted versions checked)")


class _NeverListens:
    """A server endpoint whose port is always taken."""

    def listen(self, factory):
        return fail(CannotListenError("127.0.0.1", 1, OSError("address in use")))


class PrivateNamesTests(SynchronousTestCase):
    """Every name in `PRIVATE_NAMES` exists on the installed Twisted."""

    def pair(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        return a, b

    def tcp_server(self, sock: socket.socket) -> tcp.Server:
        return tcp.Server(sock, Protocol(), ("127.0.0.1", 1), None, 1, MemoryReactor())

    def epoll_reactor(self) -> EPollReactor:
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        return reactor

    def probes(self):
        """One object of each kind `PRIVATE_NAMES` names, in its order."""
        return [
            self.tcp_server(self.pair()[0]),
            self.epoll_reactor(),
            LogPublisher(),
            StreamServerEndpointService,
        ]

    def test_every_private_name_exists(self):
        probes = self.probes()
        self.assertEqual(len(probes), len(PRIVATE_NAMES))
        missing = [
            _where(f"{where} has no attribute {name!r}")
            for (where, names), probe in zip(PRIVATE_NAMES.items(), probes)
            for name in names
            if not hasattr(probe, name)
        ]
        if missing:
            self.fail("\n".join(missing))

    def test_tcp_probe_is_both_transports_kind(self):
        """tcp.Client shares tcp.Server's buffers and flags (both are Connections)."""
        for cls in (tcp.Server, tcp.Client):
            self.assertTrue(issubclass(cls, tcp.Connection),
                            _where(f"{cls.__name__} is no longer a tcp.Connection"))

    def test_do_poll_is_still_what_epoll_turn_copies(self):
        source = textwrap.dedent(inspect.getsource(EPollReactor.doPoll))
        body = ast.parse(source).body[0].body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]   # the docstring
        self.assertEqual(
            ast.unparse(body), DO_POLL,
            _where("EPollReactor.doPoll changed; twisted_private.epoll_turn is a copy "
                   "of it: compare the two, update epoll_turn, then DO_POLL"))


class OneModuleTests(SynchronousTestCase):
    """No other module of the package reaches for those names itself."""

    def test_no_use_elsewhere(self):
        self.assertEqual(sorted(_uses_elsewhere()), [],
                         "use (or extend) dynomite.runtime.twisted_private instead")


class BehaviourTests(SynchronousTestCase):
    """The private names still mean what the functions using them assume."""

    def test_write_now_hands_bytes_to_an_idle_socket_at_once(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        reactor = MemoryReactor()
        transport = tcp.Server(a, Protocol(), ("127.0.0.1", 1), None, 1, reactor)
        twisted_private.write_now(transport, [b"x", b"y"])
        self.assertEqual(b.recv(10), b"xy")
        self.assertFalse(transport.dataBuffer or transport._tempDataBuffer,
                         _where("write_now left bytes in the transport's buffers"))
        self.assertNotIn(transport, reactor.getWriters(),
                         _where("write_now made an idle transport wait for writability"))

    def test_observers_lists_a_publishers_observers(self):
        seen = []
        publisher = LogPublisher(seen.append)
        self.assertEqual(twisted_private.observers(publisher), [seen.append])

    def test_logs_install_filters_what_observers_get(self):
        seen = []
        publisher = LogPublisher(seen.append)
        self.patch(logs, "_installed", False)
        self.addCleanup(logs.set_verbosity, 5)
        logs.install(publisher)
        logs.set_verbosity(4)
        publisher({"log_level": logs.LogLevel.info, "log_namespace": "t", "log_format": "i"})
        publisher({"log_level": logs.LogLevel.warn, "log_namespace": "t", "log_format": "w"})
        self.assertEqual([e["log_format"] for e in seen], ["w"])

    def test_fail_fast_makes_an_unbindable_port_raise(self):
        service = StreamServerEndpointService(_NeverListens(), Factory())
        twisted_private.fail_fast(service)
        self.assertRaises(CannotListenError, service.startService)

    def test_without_fail_fast_the_error_is_only_logged(self):
        """What `fail_fast` changes: the default swallows the error."""
        service = StreamServerEndpointService(_NeverListens(), Factory())
        service.startService()
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)
