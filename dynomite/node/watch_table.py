# -*- test-case-name: tests.unit.test_watch_table -*-
"""
A leader's table of watched keys (`dynomite.node.watch` says how WATCH
works): a version per watched key, bumped by every write of it the leader
orders or receives as a replica, and the leader's incarnation.  Plain
state, no I/O.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from dynomite.commands import table as commands
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FLAG_WATCH
from dynomite.wire.requests import parse_whole
from dynomite.wire.resp import ProtocolError

__all__ = ["ABORTED", "WATCH", "UNWATCH", "WATCHED", "WatchTable", "decode_versions"]

WATCH, UNWATCH, WATCHED = b"DYNO_WATCH", b"DYNO_UNWATCH", b"DYNO_WATCHED"
#: The leader's answer to EXEC when a watched key changed (a null array to the client).
ABORTED = b"-WATCHED keys changed\r\n"


class WatchTable:
    """A leader's versions of the keys watched through it; see the module docstring."""

    def __init__(self, limit: int = 100000, incarnation: Optional[bytes] = None) -> None:
        self.incarnation = incarnation or os.urandom(8).hex().encode()
        self.limit = limit
        # key -> [version, watchers]
        self._keys: Dict[bytes, List[int]] = {}
        self._counter = 0

    @property
    def active(self) -> bool:
        """Whether any key is watched (writes are looked at only then)."""
        return bool(self._keys)

    def watch(self, keys: Sequence[bytes]) -> List[int]:
        """Count one more watcher of ``keys``; their versions."""
        table = self._keys
        versions = []
        for key in keys:
            entry = table.get(key)
            if entry is None:
                if len(table) >= self.limit:
                    del table[next(iter(table))]
                self._counter += 1
                entry = table[key] = [self._counter, 0]
            entry[1] += 1
            versions.append(entry[0])
        return versions

    def unchanged(self, incarnation: bytes, versions: Dict[bytes, int]) -> bool:
        """Whether the keys still have ``versions`` in this incarnation."""
        if incarnation != self.incarnation:
            return False
        table = self._keys
        for key, version in versions.items():
            entry = table.get(key)
            if entry is None or entry[0] != version:
                return False
        return True

    def release(self, keys: Sequence[bytes]) -> None:
        """One watcher of ``keys`` fewer."""
        table = self._keys
        for key in keys:
            entry = table.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del table[key]

    def touched(self, payload: bytes) -> None:
        """Writes in ``payload`` (RESP commands) were ordered: new versions for the watched keys they name."""
        try:
            requests, _ = parse_whole(payload)
        except ProtocolError:
            self._touch_all()
            return
        table = self._keys
        for args in requests:
            cmd = commands.command_of(args)
            if cmd is None:
                continue
            keys = commands.keys(cmd, args)
            if not keys and cmd.name in ("flushall", "flushdb"):
                self._touch_all()
                return
            for key in keys:
                entry = table.get(key)
                if entry is not None:
                    self._counter += 1
                    entry[0] = self._counter

    def _touch_all(self) -> None:
        for entry in self._keys.values():
            self._counter += 1
            entry[0] = self._counter

    # -- the leader's side of the peer requests ----------------------------------

    def serve(self, payload: bytes) -> bytes:
        """
        A DYNOWATCH (answered with the incarnation and versions) or
        DYNOUNWATCH (answered ``:1`` if the versions it carries still
        hold, else ``:0``) for this leader.
        """
        try:
            requests, _ = parse_whole(payload)
        except ProtocolError:
            requests = []
        if len(requests) != 1 or len(requests[0]) < 2:
            return b"-ERR malformed watch request\r\n"
        args = requests[0]
        if args[0] == WATCH:
            versions = self.watch(args[1:])
            return _bulk(b" ".join([self.incarnation] + [b"%d" % v for v in versions]))
        if args[0] == UNWATCH:
            incarnation, versions = decode_versions(args[1:])
            ok = incarnation is not None and self.unchanged(incarnation, versions)
            self.release(list(versions))
            return b":1\r\n" if ok else b":0\r\n"
        return b"-ERR malformed watch request\r\n"

    def admit(self, request: Request) -> Optional[Request]:
        """
        A transaction led with its watched versions in front: the
        transaction alone when they hold (the keys are released), else None.
        """
        payload = request.payload
        try:
            requests, bounds = parse_whole(payload)
        except ProtocolError:
            return None
        if not requests or requests[0][0] != WATCHED:
            return None
        incarnation, versions = decode_versions(requests[0][1:])
        ok = incarnation is not None and self.unchanged(incarnation, versions)
        self.release(list(versions))
        if not ok:
            return None
        return Request(payload[bounds[1]:], request.resp, request.lane, request.count - 1, True,
                       request.flags & ~FLAG_WATCH)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def decode_versions(args: Sequence[bytes]) -> Tuple[Optional[bytes], Dict[bytes, int]]:
    """(incarnation, {key: version}) from ``incarnation key version ...``."""
    if not args or len(args) % 2 != 1:
        return None, {}
    try:
        return args[0], {args[i]: int(args[i + 1]) for i in range(1, len(args), 2)}
    except ValueError:
        return None, {}
