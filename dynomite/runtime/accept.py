# -*- test-case-name: tests.unit.test_accept -*-
"""
Client listening ports whose accepts take a bounded share of the node:
per reactor turn, and (``client_accept_rate``) per second.

Twisted's ``tcp.Port.doRead`` accepts up to ``numberAccepts`` connections
each time the listening socket is readable, and grows that number by 20
every time it uses it all (from 100): a flood of connections is taken in
turns of hundreds of accepts, each building a protocol, and the next turn
reads all of them, while the established clients wait for both.  A
`BoundedPort` caps ``numberAccepts`` at `ACCEPTS_PER_TURN`: the rest of a
flood waits in the kernel's backlog and is accepted over the next turns,
each of which serves the established clients too.

That bounds what a client waits behind in one turn, not how much of the
node a flood takes: every connection accepted costs the node about 100 µs
(accept, transport, reads, the protocol error, the close) whatever it
sends, so 2,000 a second take a fifth of its one core from the clients
already connected.  With an `AcceptBudget` (a token bucket of ``rate``
accepts a second, a tenth of a second's worth at once) the port takes no
more: when the budget is spent it stops reading its socket until the next
token, and connections wait in the kernel's backlog (beyond ``backlog``,
the kernel drops their SYNs and the client retries, as for any full
backlog); it reads again once a turn's worth of accepts is allowed.  The connections accepted after a pause or a turn the budget
cut short, up to the turn that finds the backlog empty, are reported
(``on_limited``) as delayed by the limit.

A fixed bound also delays the legitimate clients that reconnect by
thousands after a failover, so it is off by default.  What is on is a
`dynomite.runtime.flood.FloodGuard` (``client_flood_accept_rate``) in
front of the client factories (`ScreeningFactory`): the connections it
refuses are closed as soon as accepted, before any protocol is built
(the cheapest a connection can be), and spend no accept budget.  The
connections accepted late are reported (``on_limited``) with the reason
``accept_rate``, those refused with the guard's (``flooder``, ``flood``).

`BoundedServerEndpoint` is the endpoint a node's client listeners are
opened with.  On a reactor that is not a POSIX one (a test's fake reactor)
it listens through ``reactor.listenTCP`` as a plain endpoint would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from twisted.internet import defer, tcp
from twisted.internet.protocol import Factory
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.posixbase import PosixReactorBase
from zope.interface import implementer

if TYPE_CHECKING:
    from dynomite.runtime.flood import FloodGuard

__all__ = ["ACCEPTS_PER_TURN", "AcceptBudget", "BoundedPort", "BoundedServerEndpoint", "ScreeningFactory"]

#: Connections accepted at most per reactor turn: at about 100 µs each, a
#: few milliseconds, and still thousands a second when turns are short.
ACCEPTS_PER_TURN = 16


class AcceptBudget:
    """
    A token bucket of accepts: ``rate`` a second, at most ``burst`` saved
    (by default a tenth of a second's worth, and never fewer than a turn's
    accepts).  Pure: it is told the time.
    """

    def __init__(self, rate: float, now: float, burst: Optional[float] = None) -> None:
        if rate <= 0:
            raise ValueError("an accept budget needs a positive rate, not %r" % (rate,))
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(float(ACCEPTS_PER_TURN), rate / 10.0)
        self._tokens = self.burst
        self._when = now

    def available(self, now: float) -> int:
        """Whole accepts allowed at ``now``."""
        if now > self._when:
            self._tokens = min(self.burst, self._tokens + (now - self._when) * self.rate)
            self._when = now
        return int(self._tokens)

    def spend(self, accepts: int) -> None:
        self._tokens -= accepts

    def wait(self, accepts: int = 1) -> float:
        """Seconds from the last `available` until ``accepts`` more are allowed (at most the burst)."""
        return max(0.0, (min(float(accepts), self.burst) - self._tokens) / self.rate)


class BoundedPort(tcp.Port):
    """
    A ``tcp.Port`` that accepts at most ``accepts_per_turn`` connections
    per turn and, with a ``budget``, no more than it allows.
    """

    accepts_per_turn = ACCEPTS_PER_TURN
    budget: Optional[AcceptBudget] = None
    #: called with how many connections were accepted late because the
    #: budget was spent (``accept_rate``), and with ``(1, why)`` for each one `refused`
    on_limited: Optional[Callable[[int, str], None]] = None
    _accepted = 0          # connections accepted so far
    _delaying = False      # paused for the budget, and the backlog not yet found empty since
    _resume_call = None

    @property  # type: ignore[override]
    def numberAccepts(self) -> int:
        return self._number_accepts

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        # Twisted sets it when it starts listening and after every turn
        self._number_accepts = max(1, min(value, self.accepts_per_turn))

    def _buildAddr(self, address):
        # once per connection accepted, before its protocol is built
        self._accepted += 1
        return tcp.Port._buildAddr(self, address)

    def refused(self, why: str) -> None:
        """The connection just accepted was refused (closed with no protocol): it spends no budget."""
        self._accepted -= 1
        if self.on_limited is not None:
            self.on_limited(1, why)

    def doRead(self) -> None:
        budget = self.budget
        if budget is None:
            return tcp.Port.doRead(self)
        allowed = budget.available(self.reactor.seconds())
        if allowed < 1:
            self._delaying = True
            if self._resume_call is not None:   # already waiting for the next token
                return None
            self.stopReading()
            # a turn's worth, not one: a wake-up per accept would cut the
            # clients' turns short as much as the accepts themselves
            self._resume_call = self.reactor.callLater(budget.wait(self.accepts_per_turn), self._resume)
            return None
        late = self._delaying
        clipped = allowed < self._number_accepts
        turn = self._number_accepts = min(self._number_accepts, allowed)
        before = self._accepted
        tcp.Port.doRead(self)
        accepted = self._accepted - before
        budget.spend(accepted)
        if late and accepted and self.on_limited is not None:
            self.on_limited(accepted, "accept_rate")
        if accepted < turn:   # the backlog is empty: whoever comes next is not late
            self._delaying = False
        elif clipped:         # the budget cut this turn short: the next ones wait for it
            self._delaying = True
        return None

    def _resume(self) -> None:
        self._resume_call = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def connectionLost(self, reason) -> None:
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        self._resume_call = None
        tcp.Port.connectionLost(self, reason)


class ScreeningFactory(Factory):
    """
    A port's factory in front of ``factory``: a connection from an address
    for which ``refuses(host)`` gives a reason gets no protocol (the port
    closes it at once) and is reported to ``on_refused(reason)``.
    `BoundedServerEndpoint` puts one in front of a guarded port, with
    `BoundedPort.refused`: such a connection spends no accept budget.
    """

    noisy = False

    def __init__(self, factory, refuses: Callable[[str], Optional[str]],
                 on_refused: Callable[[str], None]) -> None:
        self.factory = factory
        self._refuses = refuses
        self._on_refused = on_refused

    def buildProtocol(self, addr):
        why = self._refuses(getattr(addr, "host", ""))
        if why is not None:
            self._on_refused(why)
            return None
        return self.factory.buildProtocol(addr)

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def logPrefix(self) -> str:
        return self.factory.__class__.__name__


@implementer(IStreamServerEndpoint)
class BoundedServerEndpoint:
    """
    A TCP server endpoint (IPv4 or IPv6, by ``interface``) listening with a
    `BoundedPort`; ``accept_rate`` (0: none) gives it an `AcceptBudget`,
    ``guard`` a `FloodGuard` screening its connections; the connections
    the budget delays are reported to ``on_limited(n, "accept_rate")``,
    those the guard refuses to ``on_limited(1, why)``.
    """

    def __init__(self, reactor, port: int, backlog: int, interface: str,
                 accepts_per_turn: int = ACCEPTS_PER_TURN, accept_rate: float = 0,
                 on_limited: Optional[Callable[[int, str], None]] = None,
                 guard: Optional[FloodGuard] = None) -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface
        self.accepts_per_turn = accepts_per_turn
        self.accept_rate = accept_rate
        self.on_limited = on_limited
        self.guard = guard

    def listen(self, factory) -> defer.Deferred:
        return defer.execute(self._listen, factory)

    def _listen(self, factory):
        if not isinstance(self._reactor, PosixReactorBase):
            return self._reactor.listenTCP(self._port, factory, backlog=self._backlog, interface=self._interface)
        guard = self.guard
        if guard is not None:
            clock = self._reactor.seconds
            factory = ScreeningFactory(factory, lambda host: guard.refuses(host, clock()),
                                       lambda why: port.refused(why))
        port = BoundedPort(self._port, factory, self._backlog, self._interface, self._reactor)
        port.accepts_per_turn = self.accepts_per_turn
        if self.accept_rate:
            port.budget = AcceptBudget(self.accept_rate, self._reactor.seconds())
        port.on_limited = self.on_limited
        port.startListening()
        return port
