# -*- test-case-name: tests.cluster.test_handover -*-
"""
Passing the lead of a moving range's keys from its old leader to its new one.

A key's writes are ordered by its leader (`dynomite.node.leader`): the
key's owner in the rack its hash picks.  When a range of that rack moves
(`dynomite.scaleout`), its lead passes from the old owner to the new one:
at a join's cut-over from the old owner to the joining node, at a
leave's from the leaving node to its successor.  Nodes learn the new ring
by gossip, one after another.  Were the new leader to lead the keys as
soon as it knew, while the old one still led the writes of coordinators
that did not know yet, the replicas would get the key's writes from two
leaders in two orders; and a copy the new leader made of a key for a
pending replica (`Leader.copy`) could miss a write the old leader had
sent there, which the copy then replaced: lost for good.

So the lead passes in one step, before the ring changes:

1. The node that moves asks the old leader to hand the range over (a
   LEAD with FLAG_HANDOVER; or `Handovers.hand_over` itself when it is
   the old leader, leaving).
2. The old leader marks the range.  The writes and copies it would lead
   there from now on wait.
3. It drains: one marker on every lane it led writes on, to every node
   of its datacenter, behind everything it led (`Leader.drain`).  Once
   all are answered, every write it led has been applied, or is held as
   a hint.
4. From then on it answers each waiting and later LEAD of the range
   `LEADER_MOVED` and the new leader's name; the coordinator sends the
   write there, flagged FLAG_REDIRECTED, and it is led there without
   question (`dynomite.node.coordinator`).
5. The move's cut-over then changes the ring.  Once this node's own view
   says it no longer owns the range the mark goes: a node leads only
   what it leads in its view, and answers any other LEAD `LEADER_MOVED`
   with the leader of its view (`dynomite.node.replica`).

A coordinator that knew the new ring early sends its writes straight to
the new leader, which leads them: the old one has stopped by then.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from twisted.internet.defer import Deferred

from dynomite.wire.requests import parse_whole
from dynomite.wire.resp import ProtocolError, encode_command

__all__ = ["Handovers", "LEADER_MOVED", "MAX_LEADER_MOVES", "MOVED_TOO_OFTEN", "moved_to", "leader_moved",
           "handover_request", "parse_handover"]

#: The start of the error a node answers a LEAD it does not lead with:
#: the name of the node that does follows.
LEADER_MOVED = b"-LEADERMOVED "


#: How many `LEADER_MOVED` answers a write follows before it fails, and how.
MAX_LEADER_MOVES = 3
MOVED_TOO_OFTEN = b"-ERR the key's leader moved while the write was under way; try again\r\n"


def leader_moved(name: str) -> bytes:
    """The answer to a LEAD that ``name`` leads."""
    return LEADER_MOVED + name.encode() + b"\r\n"


def moved_to(raw: bytes) -> Optional[str]:
    """The leader a `leader_moved` answer names, or None for any other answer."""
    if not raw.startswith(LEADER_MOVED):
        return None
    return raw[len(LEADER_MOVED):].strip().decode("utf-8", "replace") or None


def handover_request(start: int, end: int, gainer: str) -> bytes:
    """What a FLAG_HANDOVER LEAD carries after its ring position: the range and its new leader."""
    return encode_command([b"HANDOVER", b"%d" % start, b"%d" % end, gainer.encode()])


def parse_handover(data: bytes) -> Tuple[int, int, str]:
    """``(start, end, gainer)`` of a `handover_request`; ValueError if it is not one."""
    try:
        requests, _ = parse_whole(data)
        (verb, start, end, gainer), = requests
        if verb != b"HANDOVER":
            raise ValueError(verb)
        return int(start), int(end), gainer.decode()
    except (ProtocolError, ValueError, UnicodeDecodeError):
        raise ValueError("handover without a range and a node") from None


class _Mark:
    """One range handed over: ``start..end`` inclusive (wrapping past the top when start > end)."""

    __slots__ = ("start", "end", "gainer", "waiting")

    def __init__(self, start: int, end: int, gainer: str) -> None:
        self.start = start
        self.end = end
        self.gainer = gainer
        #: what waits for the drain to end; None once it has
        self.waiting: Optional[List[Callable[[], None]]] = []

    def holds(self, position: int) -> bool:
        if self.start <= self.end:
            return self.start <= position <= self.end
        return position >= self.start or position <= self.end


class Handovers:
    """
    The ranges this node handed over (see the module docstring).

    ``drain(done)`` calls ``done()`` once every write this node led so far
    has been answered (`dynomite.node.leader.Leader.drain`);
    ``can_lead(name)`` says whether a node can take writes to lead now
    (a range handed to a node that cannot is led here again: a join that
    died after its handover).
    """

    def __init__(self, name: str, drain: Callable[[Callable[[], None]], None],
                 can_lead: Callable[[str], bool]) -> None:
        self.name = name
        self._drain = drain
        self._can_lead = can_lead
        self._marks: List[_Mark] = []

    @property
    def active(self) -> bool:
        """Whether any range is marked (the hot path looks no further when not)."""
        return bool(self._marks)

    def hand_over(self, start: int, end: int, gainer: str) -> Deferred:
        """
        Stop leading ``start..end`` here: its writes wait until the writes
        led so far are answered, then go to ``gainer``.  The Deferred fires
        (with None) then.
        """
        mark = _Mark(start, end, gainer)
        self._marks.append(mark)
        done: Deferred = Deferred()

        def drained() -> None:
            waiting, mark.waiting = mark.waiting, None
            for resume in waiting or ():
                resume()
            done.callback(None)

        self._drain(drained)
        return done

    def gainer(self, plan, position: int, resume: Callable[[], None]) -> Optional[str]:
        """
        For a write or copy of ``plan`` (at ring ``position``) this node
        would lead: None to lead it here; else the node to send it to.
        While the range drains, ``resume`` is kept and called after the
        drain, and the answer is this node's own name: wait.
        """
        if not plan.leaders or plan.leaders[0].name != self.name:
            return None   # led here only as a failover: no move of this node's range
        for mark in self._marks:
            if mark.holds(position):
                if mark.waiting is not None:
                    mark.waiting.append(resume)
                    return self.name
                return mark.gainer if self._can_lead(mark.gainer) else None
        return None

    def forget(self, topology) -> None:
        """The view changed: drop the drained marks of ranges this node no longer owns in it."""
        local = topology.local
        try:
            ring = topology.ring(local.datacenter, local.rack)
        except KeyError:   # no owner left in this node's rack: it owns nothing
            ring = None

        def owned(mark: _Mark) -> bool:
            return ring is not None and len(ring) > 0 and ring.owner(mark.end).name == self.name

        self._marks = [m for m in self._marks if m.waiting is not None or owned(m)]
