# -*- test-case-name: tests.unit.test_errorlog -*-
"""
The log line for clients closed on a protocol error, rate-limited and
aggregated.

A flood of hostile connections is a flood of protocol errors: logging a
formatted line for each cost the reactor thread about 40 µs a connection
(a sixth of what such a connection cost in all) and filled the log with
lines that say nothing new.  `ProtocolErrorLog` logs the first error of a
quiet spell in full, as before; the errors that follow within
`INTERVAL` seconds are only counted, and one line per interval gives
their number by kind and the last one's address and reason.  Every error
still counts in the metrics at once (``dynomite_client_protocol_errors_total``,
counted by `dynomite.node.dispatch.Node.protocol_error`); only the log
line is aggregated.

It sets no timer of its own: `flush` is called with the time by the
node's once-a-second client sweep (`dynomite.service.NodeService`), and
`report` flushes a finished interval itself, so a node without that
sweep (a unit test) loses no count either.
"""

from __future__ import annotations

from typing import Dict, Optional

from twisted.logger import Logger

__all__ = ["INTERVAL", "ProtocolErrorLog"]

#: Seconds over which the protocol errors after a logged one are counted into one line.
INTERVAL = 10.0


class ProtocolErrorLog:
    """One log line per protocol error while they are rare, one per `INTERVAL` while they are not."""

    log = Logger()

    __slots__ = ("_clock", "interval", "_until", "_counts", "_last")

    def __init__(self, clock, interval: float = INTERVAL) -> None:
        self._clock = clock
        self.interval = interval
        #: end of the current interval (None: quiet, the next error is logged in full)
        self._until: Optional[float] = None
        #: errors counted and not logged yet in this interval, by kind
        self._counts: Dict[str, int] = {}
        self._last = ("", "")   # the last counted error's address and reason

    def report(self, address: str, kind: str, reason: str) -> None:
        """A client at ``address`` is closed for a protocol error of ``kind`` ("malformed", "oversize")."""
        now = self._clock.seconds()
        if self._until is not None and now >= self._until:
            self.flush(now)
        if self._until is None:
            self._until = now + self.interval
            self.log.info("protocol error from {address}: {reason}; closing", address=address, reason=reason)
            return
        counts = self._counts
        counts[kind] = counts.get(kind, 0) + 1
        self._last = (address, reason)

    @property
    def pending(self) -> int:
        """Errors counted in this interval and not logged yet."""
        return sum(self._counts.values())

    def flush(self, now: float) -> None:
        """
        Periodic: at the end of an interval, log the errors counted in it
        (one line) and start the next; after an interval without any, go
        quiet (the next error is logged in full).
        """
        if self._until is None or now < self._until:
            return
        counts = self._counts
        if not counts:
            self._until = None
            return
        total = sum(counts.values())
        address, reason = self._last
        self.log.info(
            "{count} more protocol errors in the last {seconds:.0f}s ({kinds}), the last from {address}:"
            " {reason}; each connection was closed",
            count=total, seconds=self.interval + (now - self._until),
            kinds=", ".join("%s %d" % item for item in sorted(counts.items())),
            address=address, reason=reason,
        )
        self._counts = {}
        self._until = now + self.interval
