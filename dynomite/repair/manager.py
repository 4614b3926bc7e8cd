# -*- test-case-name: tests.unit.test_read_repair -*-
"""
A node's repairs: the one running, the last result, background passes,
warm-up when its Redis comes back empty, and read repair.

`Repairs` is built by `dynomite.node.assembly.NodeParts` and reached by the
admin API through `dynomite.node.control.NodeControl` (start, cancel) and
`dynomite.ops.status.NodeStatus` (what /info and /metrics show).

- `start` begins an anti-entropy repair (`dynomite.repair.run`) of the
  local datacenter (or all of them); one at a time per node.
- `tick` (once a second, from the service) starts a background pass every
  ``anti_entropy_interval``, and checks whether the local Redis came back
  empty when it has a new run id (`redis_restarted`): if it lost the warm
  marker (`script.marker_request`) that this node had set (a file in its
  data_dir remembers it across restarts of the node) while a replica in
  another rack holds keys, the node warms up (`dynomite.repair.warmup`).
  DBSIZE alone cannot tell: hints replayed at once refill it with the
  writes it missed, and in a cluster starting together clients may write
  before every node has looked.
  ``bootstrap: true`` warms up at start whatever the sizes say.
- `read_repair`: the keys of a quorum read whose replicas answered
  differently (`dynomite.consistency.read_repair`) are looked at again on
  every replica, twice ``READ_REPAIR_DELAY`` apart, and repaired as an
  anti-entropy repair would (at most ``READ_REPAIRS_PENDING`` at a time,
  the rest counted as dropped).

`counts` holds the totals /metrics exports.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from twisted.logger import Logger

from dynomite.repair.compare import Scope
from dynomite.commands import table
from dynomite.commands.keys import keys as command_keys
from dynomite.repair import script
from dynomite.repair.run import RepairOptions, RepairRun, ask, together
from dynomite.repair.warmup import WarmUp
from dynomite.wire.inflight import Request
from dynomite.wire.requests import parse_whole

__all__ = ["REPAIR_EVENTS", "RepairBusy", "Repairs"]

#: the events counted (dynomite_repair_keys_total{event})
REPAIR_EVENTS = ("scanned", "cells_differing", "differing", "undecided", "repaired", "skipped",
                 "streamed", "kept", "read_repairs", "read_repairs_dropped")
READ_REPAIR_DELAY = 0.1
READ_REPAIRS_PENDING = 64


class RepairBusy(Exception):
    """A repair is already running on this node, or a node is joining or leaving."""


class Repairs:
    """See the module docstring."""

    log = Logger()

    def __init__(self, topology: Callable[[], Any], send: Callable[[str, Request, Any], None], clock,
                 membership, hash_tag: Optional[bytes], rate: int, interval: float,
                 bootstrap: bool = False, marked_path: Optional[str] = None, versions: bool = False) -> None:
        self._topology = topology
        # whether warm-ups and repairs merge the versions between datacenters too
        self._versions = versions
        self._send = send
        self._clock = clock
        self._membership = membership
        self._tag = hash_tag
        self.rate = rate
        self.interval = interval
        self.counts: Dict[str, int] = dict.fromkeys(REPAIR_EVENTS, 0)
        self.current: Optional[RepairRun] = None
        self.last: Optional[RepairRun] = None
        self.warmup: Optional[WarmUp] = None
        self._last_pass = clock.seconds()
        # this node has seen its Redis hold its whole data set (the marker);
        # kept in ``marked_path`` across restarts of the node (None: in memory)
        self._marked_path = marked_path
        self._was_warm = False
        # whether the local Redis may have come back empty (checked by tick)
        self._suspect_empty = bootstrap
        self._bootstrap = bootstrap
        if bootstrap:
            # a replacement serves no reads before its data is back
            membership.hold_resuming(True)
        self._read_repairs = 0

    def _count(self, event: str, n: int) -> None:
        self.counts[event] += n

    # -- anti-entropy ----------------------------------------------------------

    def start(self, options: RepairOptions) -> RepairRun:
        """Start a repair; RepairBusy if one runs, ValueError for a bad option."""
        if self.current is not None:
            raise RepairBusy("a repair is running since %.0f" % self.current.progress.started)
        topology = self._topology()
        if topology.moving:
            # its restores would bypass the leaders, whose copies keep a
            # joining node's keys in their order (`dynomite.scaleout`)
            raise RepairBusy("a node is joining or leaving; repair once the move is done")
        dcs = topology.datacenters if options.all_datacenters else (topology.local.datacenter,)
        run = RepairRun(Scope(topology, dcs), self._send, self._clock, self._tag, options, self._count,
                        self._versions)
        self.current = run
        self.log.info("repair of {dcs} started (dry run: {dry})", dcs=",".join(dcs), dry=options.dry_run)

        def ended(progress):
            self.current = None
            self.last = run
            self.log.info("repair ended: {phase}, {diff} keys differing, {fixed} repaired{error}",
                          phase=progress.phase, diff=progress.keys_differing, fixed=progress.keys_repaired,
                          error="" if progress.error is None else ": " + progress.error)
            return progress

        run.run().addCallback(ended)
        return run

    def cancel(self) -> bool:
        if self.current is None:
            return False
        self.current.cancelled = True
        return True

    def status(self, now: float) -> Dict[str, Any]:
        """/info's ``repair`` section."""
        return {
            "running": None if self.current is None else self.current.progress.as_dict(now),
            "last": None if self.last is None else self.last.progress.as_dict(now),
            "warmup": None if self.warmup is None else self.warmup.progress.as_dict(now),
            "anti_entropy_interval": self.interval, "rate": self.rate,
            # this node has seen its Redis hold its whole data set (a Redis
            # restarted empty after this is refilled by warm-up)
            "data_set_marked": self._was_warm,
        }

    # -- background work -------------------------------------------------------

    def tick(self, now: float) -> None:
        if self._suspect_empty and (self.warmup is None or self.warmup.progress.finished is not None):
            self._suspect_empty = False
            self._check_empty()
        if (self.interval and self.current is None and now - self._last_pass >= self.interval
                and not self._topology().moving):
            self._last_pass = now
            self.start(RepairOptions(rate=self.rate))

    def redis_restarted(self) -> None:
        """The local Redis has a new run id (or answered for the first time): was it emptied?"""
        if self.warmup is None or self.warmup.progress.finished is not None:
            self._suspect_empty = False
            self._check_empty()
        else:
            self._suspect_empty = True

    def _check_empty(self) -> None:
        """
        Whether the local Redis lost its data: this node had marked it as
        holding its data set (in this process, or before a restart: the
        file at ``marked_path``), the mark (`script.marker_request`) is gone,
        and a replica in another rack holds keys.  A node that never marked
        its Redis is new: it marks it and takes it as it is (a replacement
        for a lost node says ``bootstrap: true``).  Replicas that do not
        answer yet: ask again at the next tick.
        """
        topology = self._topology()
        local = topology.local.name
        sources = [n for n in WarmUp.sources(topology) if n != local]
        if self._bootstrap:
            def reachable(answers: List[bytes]) -> None:
                if any(raw[:1] == b"*" for raw in answers):
                    self._bootstrap = False
                    self._warm("bootstrap: true", bootstrap=True)
                else:
                    self._suspect_empty = True     # no replica answers yet: next tick
            together([ask(self._send, name, script.marker_request()) for name in sources]).addCallback(reachable)
            return

        def compared(answers: List[bytes]) -> None:
            markers = []
            for raw in answers:
                try:
                    markers.append(script.read_marker(raw))
                except script.ReplicaError:
                    markers.append(None)
            held = [size for marker in markers if marker is not None for since, size in [marker] if since and size]
            if held:
                self._warm("its Redis lost its data while other racks hold %d keys" % max(held))
            elif None in markers:
                self._suspect_empty = True
            else:
                self._mark_warm()

        def marked(raw: bytes) -> None:
            try:
                since, _ = script.read_marker(raw)
            except script.ReplicaError:
                self._suspect_empty = True     # Redis not answering yet
                return
            if since:
                self._mark_warm(locally=False)
                return
            if not self._was_warm and not self._marked_before():
                # a new node (a replacement says bootstrap: true): whatever
                # its Redis holds is its data set from now on
                self._mark_warm()
                return
            together([ask(self._send, name, script.marker_request()) for name in sources]
                     ).addCallback(compared)

        ask(self._send, local, script.marker_request()).addCallback(marked)

    def _marked_before(self) -> bool:
        return self._marked_path is not None and os.path.exists(self._marked_path)

    def _mark_warm(self, locally: bool = True) -> None:
        """This node's Redis holds its data set: mark it there (``locally``) and in the node's data_dir."""
        self._was_warm = True
        if locally:
            topology = self._topology()
            ask(self._send, topology.local.name, script.marker_request(max(1, int(self._clock.seconds()))))
        if self._marked_path is not None and not os.path.exists(self._marked_path):
            try:
                os.makedirs(os.path.dirname(self._marked_path), exist_ok=True)
                with open(self._marked_path, "w") as f:
                    f.write("%d\n" % self._clock.seconds())
            except OSError as e:
                self.log.warn("cannot record that this node's Redis was whole ({path}): {why}",
                              path=self._marked_path, why=e)

    def _warm(self, why: str, bootstrap: bool = False) -> None:
        self.log.info("warming up: {why}", why=why)
        self.warmup = WarmUp(self._topology(), self._send, self._clock, self._tag, self.rate,
                             self._membership, self._count, self._versions)

        def ended(progress):
            if progress.error is None:
                self._mark_warm()
            else:
                # not marked: the next tick looks again, and warms up again
                self._bootstrap = bootstrap
                self._suspect_empty = True
            return progress

        self.warmup.run().addCallback(ended)

    # -- read repair -------------------------------------------------------------

    def read_repair(self, payload: bytes) -> None:
        """A quorum read (``payload``: its command, or a run of them) saw its replicas disagree."""
        try:
            commands, _ = parse_whole(payload)
        except Exception:
            return
        keys: List[bytes] = []
        for args in commands:
            cmd = table.lookup(args[0])
            if cmd is not None:
                keys.extend(command_keys(cmd, args))
        if keys:
            self.repair_keys(list(dict.fromkeys(keys)))

    def repair_keys(self, keys: List[bytes]) -> None:
        """Look at ``keys`` on every replica of the local DC and repair those that differ."""
        if self._read_repairs >= READ_REPAIRS_PENDING:
            self._count("read_repairs_dropped", len(keys))
            return
        self._read_repairs += 1
        topology = self._topology()
        run = RepairRun(Scope(topology, (topology.local.datacenter,)), self._send, self._clock, self._tag,
                        RepairOptions(recheck_delay=READ_REPAIR_DELAY), self._count, self._versions)

        def ended(repaired: int) -> None:
            self._read_repairs -= 1
            self._count("read_repairs", repaired)

        run.repair_keys(keys).addBoth(ended)
