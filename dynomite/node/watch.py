# -*- test-case-name: tests.cluster.test_watch -*-
"""
WATCH and UNWATCH: optimistic locking on the keys of one leader.

The watched keys are checked where their writes are ordered: on their
leader (`dynomite.node.leader`), which keeps a `WatchTable`.  Every write
of a key in a datacenter passes through its leader (a client's, another
coordinator's LEAD, another datacenter's FORWARD), so the leader sees every
change in the order the replicas apply it.

- The table holds a version per watched key (only watched keys: nothing is
  kept, and nothing parsed, while nobody watches).  A write the leader
  leads gives each watched key it names a new version, taken from one
  counter that only grows; so does a write of the key that reaches this
  node as a replica from *another* leader (a failover elsewhere, a hint
  replay): the leader learns of writes it did not order, too.
- WATCH at any node asks the key's leader (a LEAD frame flagged
  `FLAG_WATCH`, or this node's own table) for the keys' versions and the
  leader's *incarnation* (random, drawn when the process starts), and the
  session keeps them (`Watching`) with the leader's name.  The leader
  answers once every replica of the datacenter has applied (or holds as a
  hint) the writes it led before (`Leader.watch`): the reads the client
  makes next, at whichever replica, see the state those versions stand
  for, so a transaction computed from them cannot overwrite a write it
  never saw.
- EXEC sends the transaction to that same leader with the versions in
  front (``DYNO_WATCHED``); the leader compares them, in its order of
  writes, before it leads the transaction: a moved version, a key evicted
  from the table or another incarnation and EXEC answers a null array, as
  Redis does, and nothing runs.  When the keys' leader at EXEC is not the
  one that answered WATCH (a failover, or a restart: new incarnation), EXEC
  answers null without asking anyone: a failover between WATCH and EXEC
  never lets EXEC succeed on keys whose changes the new leader has not
  counted.
- UNWATCH, EXEC, DISCARD, RESET and a disconnect release the keys at the
  leader (``DYNO_UNWATCH``), so the table holds only what is watched.  A
  release lost with a link is harmless: the table is bounded
  (`WatchTable.limit`), and a key evicted from it gives a watcher a null
  EXEC, never a wrong success (a key added again takes a new version).

Watched keys of several leaders answer ``-CROSSSLOT`` (at WATCH, or at
EXEC when the transaction's keys and the watched ones differ), as Redis
Cluster answers keys of several slots.  A transaction of reads only, when
watching, is led too (the check must be in the leader's order).  What
differs from Redis: a key expiring, or FLUSHALL/FLUSHDB sent to the leader
node's own clients, do not count as changes (FLUSHALL from another node
does: it reaches the leader as a replica write without keys); a leader
that other nodes could not reach learns of the writes another node led
meanwhile only when they reach it as a replica.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from dynomite.node.builtins import builtin
from dynomite.node.handover import LEADER_MOVED
from dynomite.node.leader import lead_flags
from dynomite.node.watch_table import ABORTED, UNWATCH as _UNWATCH, WATCH as _WATCH, WATCHED as _WATCHED
from dynomite.placement.router import CROSSSLOT
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_TRANSACTION, FLAG_WATCH, lead_payload
from dynomite.wire.resp import encode_command

__all__ = ["ABORTED", "Watching", "forget", "lead_watched", "release", "watched_check"]

_NULL = {2: b"*-1\r\n", 3: b"_\r\n"}
_IN_MULTI = b"-ERR WATCH inside MULTI is not allowed\r\n"
_NO_LEADER = b"-ERR no replica of the key can take writes now\r\n"


class Watching:
    """What a session watches: keys, their leader, and its versions (None until it answered)."""

    __slots__ = ("keys", "leader", "incarnation", "versions", "doomed", "released")

    def __init__(self, leader: str) -> None:
        self.keys: List[bytes] = []
        self.leader = leader
        self.incarnation: Optional[bytes] = None
        self.versions: Dict[bytes, int] = {}
        #: the leader could not be asked: EXEC answers null
        self.doomed = False
        #: released before the leader answered: release what it answers
        self.released = False

    def encoded(self) -> List[bytes]:
        """``incarnation key version ...`` as the leader reads them."""
        args = [self.incarnation or b"-"]
        for key, version in self.versions.items():
            args.extend((key, b"%d" % version))
        return args


def _leader_of(coordinator, plan):
    """The first of ``plan.leaders`` that can lead now (this node or a peer), or None."""
    name = coordinator.leading.leader_of(plan)
    return next((node for node in plan.leaders if node.name == name), None)


def _ask(coordinator, leader_name: str, plan, args: List[bytes], sink) -> None:
    """Send a watch request to ``leader_name``: this node's table, or a LEAD frame."""
    payload = encode_command(args)
    if leader_name == coordinator.name:
        coordinator.leader.watch(plan, payload, sink)
        return
    coordinator.targets[leader_name].lead(
        Request(lead_payload(plan.position, payload), 2, plan.lane, 1, True, FLAG_WATCH), sink)


class _Ignore:
    def complete(self, raw: bytes) -> None:
        pass

    fail = complete


class _Registered:
    """WATCH's reply from the leader: keep the versions, answer +OK."""

    __slots__ = ("_coordinator", "_watching", "_keys", "_slot")

    def __init__(self, coordinator, watching: Watching, keys: List[bytes], slot) -> None:
        self._coordinator = coordinator
        self._watching = watching
        self._keys = keys
        self._slot = slot

    def complete(self, raw: bytes) -> None:
        watching = self._watching
        words = raw.split(b"\r\n", 2)[1].split(b" ") if raw[:1] == b"$" else []
        if len(words) != len(self._keys) + 1 or (
                watching.incarnation is not None and watching.incarnation != words[0]):
            watching.doomed = True
            self._slot.complete(raw if raw[:1] == b"-" else b"+OK\r\n")
            return
        watching.incarnation = words[0]
        for key, version in zip(self._keys, words[1:]):
            if key not in watching.versions:
                watching.versions[key] = int(version)
        if watching.released:
            forget(self._coordinator, watching)
        self._slot.complete(b"+OK\r\n")

    def fail(self, raw: bytes) -> None:
        self._watching.doomed = True
        # the keys' leader changed (`dynomite.node.handover`): EXEC will answer null
        self._slot.complete(b"+OK\r\n" if raw.startswith(LEADER_MOVED) else raw)


@builtin("watch")
def watch(node, client, args):
    session = client.session
    if session.multi is not None:
        return _IN_MULTI
    coordinator = node.coordinator
    router = coordinator.router
    watching = session.watching
    keys = list(args[1:])
    everything = (watching.keys if watching is not None else []) + [
        k for k in keys if watching is None or k not in watching.keys]
    plan = router.route_keys(everything, True, coordinator.level(session, True))
    if plan is None:
        return CROSSSLOT
    leader = _leader_of(coordinator, plan)
    if leader is None:
        return _NO_LEADER
    if watching is None:
        watching = session.watching = Watching(leader.name)
    elif watching.leader != leader.name:
        watching.doomed = True   # its leader changed since the first WATCH
    new = [k for k in keys if k not in watching.keys]
    watching.keys.extend(new)
    if not new:
        return b"+OK\r\n"
    client.writing = True   # EXEC waits for the versions
    slot = client.slot(0)
    client.writing = False
    _ask(coordinator, watching.leader, plan, [_WATCH] + new, _Registered(coordinator, watching, new, slot))
    return None


@builtin("unwatch")
def unwatch(node, client, args):
    release(node, client.session)
    return b"+OK\r\n"


def release(node, session) -> None:
    """Forget what ``session`` watches, at its leader too (UNWATCH, DISCARD, RESET, a disconnect)."""
    watching = session.watching
    if watching is None:
        return
    session.watching = None
    forget(node.coordinator, watching)


def _release_at_leader(coordinator, watching: Watching, sink) -> None:
    watching.released = True
    if not watching.versions:
        sink.complete(b":0\r\n")
        return
    plan = coordinator.router.route_keys(watching.keys, True, coordinator.settings.write_consistency)
    target = coordinator.targets.get(watching.leader)
    if plan is None or target is None or (watching.leader != coordinator.name and not target.can_lead()):
        sink.complete(b":0\r\n")
        return
    _ask(coordinator, watching.leader, plan, [_UNWATCH] + watching.encoded(), sink)


class _Checked:
    """An empty EXEC's check of the watched keys: ``*0`` if unchanged, else null."""

    __slots__ = ("_slot", "_resp")

    def __init__(self, slot, resp: int) -> None:
        self._slot = slot
        self._resp = resp

    def complete(self, raw: bytes) -> None:
        self._slot.complete(b"*0\r\n" if raw == b":1\r\n" else _NULL[self._resp])

    def fail(self, raw: bytes) -> None:
        self._slot.complete(_NULL[self._resp])


def watched_check(node, session, slot) -> None:
    """EXEC of an empty transaction while watching: null if a watched key changed."""
    watching = session.watching
    session.watching = None
    if watching.doomed:
        forget(node.coordinator, watching)
        slot.complete(_NULL[session.resp])
        return
    _release_at_leader(node.coordinator, watching, _Checked(slot, session.resp))


def forget(coordinator, watching: Watching) -> None:
    """Release ``watching``'s keys at their leader, nobody waiting for the answer."""
    _release_at_leader(coordinator, watching, _Ignore())


class _NullIfAborted:
    """A watched EXEC's reply: the leader's refusal becomes a null array in the client's slot."""

    __slots__ = ("_sink", "_slot", "_resp")

    def __init__(self, sink, slot, resp: int) -> None:
        self._sink = sink
        self._slot = slot
        self._resp = resp

    def complete(self, raw: bytes) -> None:
        if raw == ABORTED:
            self._slot.complete(_NULL[self._resp])
        else:
            self._sink.complete(raw)

    def fail(self, raw: bytes) -> None:
        if raw == ABORTED or raw.startswith(LEADER_MOVED):   # aborted, or the keys' leader changed
            self._slot.complete(_NULL[self._resp])
        else:
            self._sink.fail(raw)

    def hinted(self, raw: bytes) -> None:
        hinted = getattr(self._sink, "hinted", None)
        if hinted is not None:
            hinted(raw)
        else:
            self._sink.fail(raw)


def lead_watched(coordinator, watching: Watching, plan, request: Request, level: str, sink,
                 effect, slot, resp: int) -> None:
    """
    Lead a transaction (``request``, FLAG_TRANSACTION) with the watched
    versions in front, at the leader that answered WATCH, replying into
    ``sink``; a null array into ``slot`` when that is no longer the keys'
    leader or a watched key changed.
    """
    leader = _leader_of(coordinator, plan)
    if watching.doomed or leader is None or leader.name != watching.leader:
        forget(coordinator, watching)
        slot.complete(_NULL[resp])
        return
    check = encode_command([_WATCHED] + watching.encoded())
    sink = _NullIfAborted(sink, slot, resp)
    watched = Request(check + request.payload, request.resp, plan.lane, request.count + 1, True,
                      FLAG_TRANSACTION | FLAG_WATCH)
    if leader.name == coordinator.name:
        admitted = coordinator.leader.watches.admit(watched)
        if admitted is None:
            sink.complete(ABORTED)
            return
        coordinator.leader.lead(plan, admitted, sink, level, plan.local[0], None, effect)
        return
    coordinator.targets[leader.name].lead(
        Request(lead_payload(plan.position, watched.payload), request.resp, plan.lane, watched.count,
                True, lead_flags(level, effect is not None) | FLAG_TRANSACTION | FLAG_WATCH),
        sink)
