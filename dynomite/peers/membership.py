# -*- test-case-name: tests.unit.test_membership -*-
"""
Membership: this node's state, and what its peers say about theirs.

Nodes exchange a small status with every heartbeat (PING and PONG carry
``{"state": ..., "hints": n}``, where ``hints`` is how many hints the
sender holds for the receiver).  A peer is DOWN when its link is down
(refused, or silent for ``peer_down_after``), and otherwise in the state it
reports.  States use Dynomite's names:

| state       | as a replica                      | as a coordinator         |
|-------------|-----------------------------------|--------------------------|
| NORMAL      | reads and writes                  | serves clients           |
| RESUMING    | writes only (it may be stale)     | serves clients           |
| WRITES_ONLY | writes only                       | refuses client reads     |
| STANDBY     | nothing: writes for it are hinted | refuses data commands    |
| DOWN        | nothing: writes for it are hinted | (unreachable)            |

A node starts RESUMING when it has peers, or a seed provider that will
name them: other nodes may hold hints for it.  It turns NORMAL once every peer it can reach has said it holds no
hints for it (waiting at least ``peer_down_after`` for peers to connect,
unless all have already answered), or when ``resume_timeout`` has passed.
Transitions are in `Membership.set_state` and `Membership.tick`.

A node warming up (its Redis came back empty: `dynomite.repair.warmup`)
is held RESUMING by `Membership.hold_resuming` until its data is back.

A node that is stopping sets `Membership.leaving`: its heartbeats then say
``"leaving": true`` and its peers mark it DOWN at once (writes for it are
hinted) instead of after ``peer_down_after``.  Older nodes ignore the field.
"""

from __future__ import annotations

from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from twisted.logger import Logger
from zope.interface import implementer

from dynomite.peers.interfaces import IPeerStatus
from dynomite.config.vocabulary import DOWN, NORMAL, RESUMING, SETTABLE_STATES, STANDBY, WRITES_ONLY

# states in which a node must not be read from (its data may be stale or it refuses)
_UNREADABLE = frozenset({RESUMING, WRITES_ONLY, STANDBY, DOWN})


@implementer(IPeerStatus)
class Membership:
    """See the module docstring."""

    log = Logger()

    def __init__(
        self,
        clock,
        local_name: str,
        peers: Dict[str, object],
        resume_timeout: float,
        settle_time: float,
        hints_for: Callable[[str], int] = lambda peer: 0,
        resuming: Optional[bool] = None,
    ) -> None:
        self._clock = clock
        self.local_name = local_name
        self._peers = peers
        self._resume_timeout = resume_timeout
        self._settle_time = settle_time
        self._hints_for = hints_for
        self.started = clock.seconds()
        # other nodes may hold hints for a node with peers: it starts RESUMING
        self.state = RESUMING if (bool(peers) if resuming is None else resuming) else NORMAL
        self.reported: Dict[str, dict] = {}
        self.listeners: List[Callable[[str], None]] = []
        # names of nodes (peers, or this one) that must not be read from;
        # usually empty, so the read path pays one truth test
        self.unreadable: FrozenSet[str] = frozenset()
        # peers whose writes go straight to them (`writable`), for the write path
        self._writable: FrozenSet[str] = frozenset()
        #: this node is stopping (graceful stop): heartbeats tell peers so
        self.leaving = False
        #: warming up (`dynomite.repair.warmup`): RESUMING until released, no timeout
        self.warming = False
        #: with gossip: the stamp of a peer's own entry in this node's view
        #: (`dynomite.peers.gossiper.Gossiper.stamp_of`); heartbeats carry
        #: it as ``"ring"``, so a node moving ranges learns that every peer
        #: knows its latest entry (`ring_seen`)
        self.ring_stamp_of: Optional[Callable[[str], Optional[Tuple[int, int]]]] = None
        self._recompute()

    # -- this node -----------------------------------------------------------

    def set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.log.info("node state {old} -> {new}", old=self.state, new=state)
        self.state = state
        self._recompute()
        for listener in self.listeners:
            listener(state)

    def hold_resuming(self, hold: bool) -> None:
        """
        Warm-up: while ``hold``, a NORMAL or RESUMING node is RESUMING (reads
        go to other racks) and stays so whatever the time; once released it
        leaves RESUMING as a starting node does.
        """
        self.warming = hold
        if hold:
            if self.state in (NORMAL, RESUMING):
                self.set_state(RESUMING)
        else:
            self.tick(self._clock.seconds())

    def tick(self, now: float) -> None:
        """Leave RESUMING when peers hold no more hints for us, or on timeout."""
        if self.state != RESUMING or self.warming:
            return
        waited = now - self.started
        if waited >= self._resume_timeout:
            self.log.warn("resume_timeout passed; serving reads although peers may hold hints")
            self.set_state(NORMAL)
            return
        reachable = [name for name, link in self._peers.items() if getattr(link, "is_up", False)]
        # no peers yet (a seed provider's first list may be on its way): wait as for absent ones
        everyone = bool(self._peers) and len(reachable) == len(self._peers)
        if not everyone and waited < self._settle_time:
            return
        if all(name in self.reported and not self.reported[name].get("hints") for name in reachable):
            self.set_state(NORMAL)

    # -- peers ---------------------------------------------------------------

    def status_for(self, peer: str) -> dict:
        """What this node tells ``peer`` with each heartbeat."""
        status = {"state": self.state, "hints": self._hints_for(peer)}
        if self.leaving:
            status["leaving"] = True
        if self.ring_stamp_of is not None:
            stamp = self.ring_stamp_of(peer)
            if stamp is not None:
                status["ring"] = list(stamp)
        return status

    def ring_seen(self, peer: str) -> Optional[Tuple[int, int]]:
        """The stamp of this node's gossip entry ``peer`` said it holds in its last heartbeat, or None."""
        stamp = self.reported.get(peer, {}).get("ring")
        if (isinstance(stamp, list) and len(stamp) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) for n in stamp)):
            return (stamp[0], stamp[1])
        return None

    def peer_status(self, peer: str, status: dict) -> None:
        """A heartbeat from ``peer`` said ``status``."""
        if status.get("leaving") is True:
            hints = status.get("hints")
            if self.reported.get(peer, {}).get("state") != DOWN:
                self.log.info("peer {peer} is leaving: DOWN now", peer=peer)
                self.reported[peer] = {"state": DOWN, "hints": hints if isinstance(hints, int) else 0}
                self._recompute()
            return
        state = status.get("state")
        if state not in SETTABLE_STATES:
            return
        if not isinstance(status.get("hints"), int):
            status = {"state": state, "hints": 0}
        previous = self.reported.get(peer)
        self.reported[peer] = status
        if previous is None or previous.get("state") != state:
            self._recompute()
        if self.state == RESUMING:
            self.tick(self._clock.seconds())

    def peer_state(self, peer: str) -> str:
        link = self._peers.get(peer)
        if link is None or not getattr(link, "is_up", False):
            return DOWN
        reported = self.reported.get(peer)
        return reported["state"] if reported else NORMAL

    def link_changed(self, peer: str) -> None:
        """A link went UP or DOWN: recompute who may be read from."""
        if not getattr(self._peers.get(peer), "is_up", False):
            self.reported.pop(peer, None)
        self._recompute()

    def writable(self, peer: str) -> bool:
        """Whether writes for ``peer`` can go straight to it (neither DOWN nor STANDBY; else they are hinted)."""
        return peer in self._writable

    def _recompute(self) -> None:
        """After any change of a link or of a reported state: who may be read from, and written to."""
        names = {name for name in self._peers if self.peer_state(name) in _UNREADABLE}
        if self.state in _UNREADABLE:
            names.add(self.local_name)
        self.unreadable = frozenset(names)
        self._writable = frozenset(
            name for name in self._peers if self.peer_state(name) not in (DOWN, STANDBY))

