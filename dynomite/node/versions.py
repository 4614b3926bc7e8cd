# -*- test-case-name: tests.cluster.test_lww_cluster -*-
"""
Versioned writes between datacenters (`dynomite.commands.lww`): the
leader's side.

A run of writes the leader accepts from its own datacenter
(`Versions.stamp`): each write gets a version; the replicas of this
datacenter get the run as it was and, right behind it on the same lane,
the notes of its versions; other datacenters get each write of one key as
a `dynomite.commands.lww.check_command`, which every replica there runs
in the order its leader gives it: each decides by its own versions, so a
replica that missed a write meanwhile (a leader that failed over) decides
as the others do once it has it.  A replayed check changes nothing.

A command that runs once (an effect, `dynomite.commands.effects`) ships
the state it left, under one version the leader stamps before running it
and notes on its own Redis right behind it (`dynomite.node.leader`):
`Versions.notes` and `Versions.checks_of_state`.  So do a write whose
result depends on its key (`dynomite.commands.lww.ships_state`) and every
transaction (`dynomite.node.transactions`).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from dynomite.commands import lww
from dynomite.commands import table as commands
from dynomite.consistency.hlc import HybridClock
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_TRANSACTION
from dynomite.wire.requests import parse_whole
from dynomite.wire.resp import ProtocolError, encode_command, encode_commands

__all__ = ["Versions", "versions_of", "CHECK_TAG"]

#: Bytes every `dynomite.commands.lww.check_command` carries (a FORWARD without them has none).
CHECK_TAG = lww.SHA

_SKIP = frozenset({b"multi", b"exec"})


class Versions:
    """Stamps the writes a leader accepts from its datacenter; ``ttl_ms``: how long versions live."""

    def __init__(self, clock: HybridClock, ttl_ms: int) -> None:
        self.clock = clock
        self.ttl_ms = ttl_ms
        #: writes stamped, and those sent to other datacenters as checks
        self.stamped = 0

    def stamp(self, request: Request) -> Tuple[Optional[Request], Request]:
        """
        (the notes this datacenter's replicas run behind ``request``, or
        None; what the other datacenters get instead of ``request``).
        """
        payload = request.payload
        try:
            requests, bounds = parse_whole(payload)
        except ProtocolError:
            return None, request
        transaction = bool(request.flags & FLAG_TRANSACTION)
        versions = self.clock.stamp(len(requests))
        notes: List = []
        # what the other datacenters get, as encoded bytes: the write as
        # sent, or its check (the write's own bytes behind the check's head)
        remote: List[bytes] = []
        checked = False
        for i, (args, version) in enumerate(zip(requests, versions)):
            command = payload[bounds[2 * i]:bounds[2 * i + 1]]
            kind, layout, keys = _kind(args)
            if kind is None or (kind == lww.ALWAYS and len(keys) != 1):
                remote.append(command)
                continue
            notes += lww.note_entries(kind, layout, keys, args, version)
            if transaction:
                remote.append(command)
            else:
                remote.append(lww.encode_check(kind, layout, keys, version, self.ttl_ms, command, len(args)))
                checked = True
        self.stamped += len(requests)
        note = (Request(encode_command(lww.notes_command(notes, self.ttl_ms)), request.resp, request.lane, 1, True)
                if notes else None)
        if not checked:
            return note, request
        return note, Request(b"".join(remote), request.resp, request.lane, len(remote), True, request.flags)

    def notes(self, keys: Sequence[bytes], version: bytes, resp: int, lane: int) -> Request:
        """The notes of a write that replaced ``keys`` whole (the state an effect left) at ``version``."""
        entries = lww.note_entries(lww.KEY, (0, 0, 0), keys, (), version)
        return Request(encode_command(lww.notes_command(entries, self.ttl_ms)), resp, lane, 1, True)

    def checks_of_state(self, commands: Sequence[Sequence[bytes]], version: bytes, effect: Request) -> Request:
        """
        What other datacenters get of the state an effect left (RESTORE or
        DEL of each key, `dynomite.commands.effects`): a whole-key check of each.
        """
        checks = [lww.check_command(lww.KEY, (0, 0, 0), [c[1]], c, version, self.ttl_ms) for c in commands]
        return Request(encode_commands(checks), effect.resp, effect.lane, len(checks), True)


def _kind(args: Sequence[bytes]):
    """(`lww` kind, member layout, keys) of a write; (None, ..) for anything else."""
    if not args or args[0].lower() in _SKIP:
        return None, None, ()
    cmd = commands.command_of(args)
    if cmd is None or not cmd.write:
        return None, None, ()
    keys = commands.keys(cmd, args)
    if not keys:
        return None, None, ()
    kind, layout = lww.kind_of(cmd.name, args)
    return kind, layout, keys


def versions_of(requests: Sequence[Sequence[bytes]]) -> List[bytes]:
    """The versions of the `dynomite.commands.lww.check_command` among ``requests``."""
    return [v for v in map(lww.check_version, requests) if v is not None]
