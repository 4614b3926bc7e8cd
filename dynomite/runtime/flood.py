# -*- test-case-name: tests.unit.test_flood -*-
"""
Floods of client connections that never ask anything valid.

Every connection a node accepts costs it 50-170 µs of CPU whatever it
sends (accept, transport, reads, the protocol error, the close; mostly
Twisted's and the kernel's), so a few thousand hostile connections a
second take a large share of its one core from the clients already
connected.  A `FloodGuard` watches the client connections that end
having sent bytes but not one valid request (*fruitless*: bad bytes, a
cut request, a failed TLS handshake).  A connection closed before it
sent anything does not count: an idle pooled connection closed at an
application's shutdown, a TCP health check:

- from one address, `FLOOD_ADDRESS_FRUITLESS` within a second and that
  address's new connections are refused (closed as soon as accepted,
  before any protocol is built) until `FLOOD_QUIET` seconds pass without
  it doing so again;
- from the addresses not refused, `FLOOD_FRUITLESS` within a second: a
  flood from many addresses, until `FLOOD_QUIET` seconds pass without
  that many.  Meanwhile the addresses that have sent a valid request
  before (*known*: the node's own clients, reconnecting) are served as
  ever, and new connections from the others are admitted at ``rate`` a
  second, the rest closed as soon as accepted.  The ports keep reading
  their backlog at full speed, so a known client never waits behind the
  flood, and a closed connection costs the node about a tenth of one it
  serves.  (Those a flooder had opened before it was refused do not count
  toward a flood: one address alone never bounds anyone else.)

Clients that send valid requests never count, however many connect at
once (a reconnect storm after a failover is not a flood).  Pure: it is
told the time.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from dynomite.runtime.accept import AcceptBudget

__all__ = ["FLOOD", "FLOODER", "FLOOD_ADDRESSES", "FLOOD_ADDRESS_FRUITLESS", "FLOOD_FRUITLESS", "FLOOD_QUIET",
           "FloodGuard"]

#: Fruitless connections within one second that make a flood: far above
#: what health checks and port scans cause, far below what a flood brings.
FLOOD_FRUITLESS = 100

#: ... from one address, that make it a flooder.
FLOOD_ADDRESS_FRUITLESS = 20

#: Seconds without that many after which a flood is over, and a flooder's
#: new connections are accepted again.
FLOOD_QUIET = 5.0

#: Addresses remembered at most, flooding and known (the oldest are forgotten first).
FLOOD_ADDRESSES = 100000

#: Why `FloodGuard.refuses` refuses a connection: its address floods, or a
#: flood from many addresses admits no more unknown ones this moment.
FLOODER, FLOOD = "flooder", "flood"


class _Window:
    """Events of the last second, from whole-second counts (a sliding window)."""

    __slots__ = ("second", "count", "before", "until")

    def __init__(self) -> None:
        self.second = -1     # the whole second being counted
        self.count = 0       # events in it
        self.before = 0      # ... and in the second before it
        self.until = 0.0     # (an address) refused until then

    def add(self, now: float) -> float:
        """Count one event at ``now``; the events of the second up to ``now``."""
        second = int(now)
        if second != self.second:
            self.before = self.count if second == self.second + 1 else 0
            self.second, self.count = second, 0
        self.count += 1
        # this second's, and the share of the one before that the last second still covers
        return self.count + self.before * (1.0 - (now - second))


class FloodGuard:
    """
    See the module docstring.  ``on_change(flooding, count)`` is called when
    a flood starts (with the fruitless connections of its last second) and
    when it ends; ``on_flooder(address)`` when an address starts being
    refused.
    """

    def __init__(self, rate: float, threshold: int = FLOOD_FRUITLESS,
                 address_threshold: int = FLOOD_ADDRESS_FRUITLESS, quiet: float = FLOOD_QUIET,
                 on_change: Optional[Callable[[bool, int], None]] = None,
                 on_flooder: Optional[Callable[[str], None]] = None,
                 addresses: int = FLOOD_ADDRESSES) -> None:
        if rate <= 0:
            raise ValueError("a flood guard needs a positive rate, not %r" % (rate,))
        self.rate = rate
        self.threshold = threshold
        self.address_threshold = address_threshold
        self.quiet = quiet
        self.on_change = on_change
        self.on_flooder = on_flooder
        self._limit = addresses
        #: fruitless connections and floods seen so far, and times an address started being refused
        self.fruitless_total = 0
        self.floods = 0
        self.flooders = 0
        self._window = _Window()
        self._last = 0.0       # when the last second reached the threshold
        self._budget: Optional[AcceptBudget] = None
        self._addresses: Dict[str, _Window] = {}
        self._known: Dict[str, None] = {}

    def fruitless(self, now: float, address: Optional[str] = None) -> None:
        """A client connection (from ``address``) ended without one valid request."""
        self.fruitless_total += 1
        if address is not None and self._flooder(now, address):
            # its connections are refused now: those accepted before are not
            # a flood from many addresses (one address alone must not make
            # every other unknown one wait for the flood's rate)
            return
        count = self._window.add(now)
        if count >= self.threshold:
            self._last = now
            if self._budget is None:
                self._budget = AcceptBudget(self.rate, now)
                self.floods += 1
                if self.on_change is not None:
                    self.on_change(True, int(count))

    def _flooder(self, now: float, address: str) -> bool:
        """Count a fruitless connection of ``address``: whether its connections are refused now."""
        window = self._addresses.get(address)
        if window is None:
            window = self._remember(self._addresses, address, _Window())
        if window.add(now) >= self.address_threshold:
            if window.until <= now:
                self.flooders += 1
                if self.on_flooder is not None:
                    self.on_flooder(address)
            window.until = now + self.quiet
        return window.until > now

    def asked(self, address: str) -> None:
        """A client at ``address`` sent a valid request: it is known (served during a flood)."""
        if address not in self._known:
            self._remember(self._known, address, None)

    def _remember(self, table: Dict[str, Any], address: str, value: Any) -> Any:
        """``table[address] = value``, forgetting the oldest address when the table is full."""
        if len(table) >= self._limit:
            del table[next(iter(table))]
        table[address] = value
        return value

    def refuses(self, address: str, now: float) -> Optional[str]:
        """
        Why a new connection from ``address`` is refused (`FLOODER`,
        `FLOOD`), or None: it is served.
        """
        window = self._addresses.get(address)
        if window is not None and window.until > now:
            return FLOODER
        budget = self._budget
        if budget is None or address in self._known or not self.flooding_at(now):
            return None
        if budget.available(now) >= 1:
            budget.spend(1)
            return None
        return FLOOD

    def flooding_at(self, now: float) -> bool:
        """Whether a flood from many addresses lasts at ``now`` (it ends `quiet` seconds after its last second)."""
        if self._budget is not None and now - self._last >= self.quiet:
            self._budget = None
            if self.on_change is not None:
                self.on_change(False, 0)
        return self._budget is not None

    @property
    def flooding(self) -> bool:
        """Whether a flood was on at the last `flooding_at`, `refuses` or `fruitless`."""
        return self._budget is not None
