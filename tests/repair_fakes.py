"""
Replicas for repair's unit tests: a `send` that answers repair's script
requests (`dynomite.repair.script`) from plain dicts, as the Lua would.

Each node holds ``key -> (value, expiry)``; a key's digest is SHA1 over
its name, value and expiry, its "dump" is its value.  Its versions between
datacenters (``versions``: the name of a key's hash -> (value, expiry))
merge by keeping the greater value, as the hash's fields would.  SCAN steps walk the
sorted keys (the cursor is an index).  ``hooks[mode]`` runs before a
request of that mode is answered (a client's write landing meanwhile).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from typing import Callable, Dict, List, Optional, Tuple

from dynomite.config.values import Address
from dynomite.placement.hashing import key_hash
from dynomite.placement.topology import NodeInfo, Topology
from dynomite.wire.requests import parse_whole


def three_racks(local: str = "r1") -> Topology:
    """1 DC x 3 racks x 1 node, every node at token 0: names r1, r2, r3."""
    return Topology([NodeInfo(name, "dc1", "rack" + name[1], Address("127.0.0.1", 1 + i), (0,), name == local)
                     for i, name in enumerate(("r1", "r2", "r3"))])


def two_dcs(local: str = "a1") -> Topology:
    """2 DCs x 2 racks x 1 node at token 0: a1, a2 in dc1, b1, b2 in dc2."""
    return Topology([NodeInfo(name, "dc1" if name[0] == "a" else "dc2", "rack" + name[1],
                              Address("127.0.0.1", 1 + i), (0,), name == local)
                     for i, name in enumerate(("a1", "a2", "b1", "b2"))])


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _array(items: List[bytes]) -> bytes:
    return b"*%d\r\n%s" % (len(items), b"".join(items))


def _int(n: int) -> bytes:
    return b":%d\r\n" % n


class FakeReplicas:
    def __init__(self, names, hash_tag: Optional[bytes] = None) -> None:
        self.data: Dict[str, Dict[bytes, Tuple[bytes, int]]] = {name: {} for name in names}
        self.tag = hash_tag
        self.hooks: Dict[bytes, Callable[[], None]] = {}
        self.asked: List[Tuple[str, bytes]] = []
        self.down: set = set()
        #: script modes answered with an error
        self.broken: set = set()
        #: node -> versions between datacenters: version hash name -> (value, expiry)
        self.versions: Dict[str, Dict[bytes, Tuple[bytes, int]]] = {name: {} for name in names}
        #: node -> since when its Redis is marked as holding its data set (0: never)
        self.markers: Dict[str, int] = {name: 0 for name in names}

    def put(self, key: bytes, value: bytes, expiry: int = -1, on=None) -> None:
        for name in on or self.data:
            self.data[name][key] = (value, expiry)

    def digest(self, name: str, key: bytes) -> bytes:
        if key not in self.data[name]:
            return b""
        value, expiry = self.data[name][key]
        return hashlib.sha1(b"%s|%s|%d" % (key, value, expiry)).hexdigest().encode()

    def send(self, name: str, request, sink) -> None:
        (args,), _ = parse_whole(request.payload)
        if name in self.down:
            sink.fail(b"-ERR peer %s is down\r\n" % name.encode())
            return
        if args[0] == b"DBSIZE":
            sink.complete(_int(len(self.data[name])))
            return
        if args[0] == b"RESTORE":
            sink.complete(self._restore_new(name, args))
            return
        numkeys = int(args[2])
        keys, argv = args[3:3 + numkeys], args[3 + numkeys:]
        mode = argv[0]
        self.asked.append((name, mode))
        hook = self.hooks.pop(mode, None)
        if hook is not None:
            hook()
        if mode in self.broken:
            sink.complete(b"-ERR broken\r\n")
            return
        sink.complete(getattr(self, "_" + mode.decode())(name, keys, argv))

    def _step(self, name: str, argv) -> Tuple[int, List[bytes]]:
        cursor, count = int(argv[1]), int(argv[2])
        ordered = sorted(self.data[name])
        chunk = ordered[cursor:cursor + count]
        after = cursor + count if cursor + count < len(ordered) else 0
        return after, chunk

    def _cells(self, name, keys, argv) -> bytes:
        after, chunk = self._step(name, argv)
        bounds = [int(b) for b in argv[5:5 + int(argv[4])]]
        cells: Dict[Tuple[int, int], List[int]] = {}
        for key in chunk:
            h = key_hash(key, self.tag)
            d = self.digest(name, key)
            words = cells.setdefault((bisect_left(bounds, h), h >> 16), [0, 0])
            words[0] ^= int(d[:8], 16)
            words[1] ^= int(d[8:16], 16)
        flat = [_int(v) for (s, b), (w1, w2) in cells.items() for v in (s, b, w1, w2)]
        return _array([_bulk(b"%d" % after), _int(len(chunk)), _array(flat)])

    def _keys(self, name, keys, argv) -> bytes:
        after, chunk = self._step(name, argv)
        bitmap = argv[4]
        out = []
        for key in chunk:
            b = key_hash(key, self.tag) >> 16
            if bitmap[b >> 3] & (1 << (b & 7)):
                out += [_bulk(key), _bulk(self.digest(name, key))]
        return _array([_bulk(b"%d" % after), _int(len(chunk)), _array(out)])

    def _stream(self, name, keys, argv) -> bytes:
        after, chunk = self._step(name, argv)
        ranges = [(int(argv[5 + 2 * i]), int(argv[6 + 2 * i])) for i in range(int(argv[4]))]
        out = []
        for key in chunk:
            h = key_hash(key, self.tag)
            if any(lo <= h <= hi for lo, hi in ranges):
                value, expiry = self.data[name][key]
                out += [_bulk(key), _bulk(value), _int(expiry)]
        return _array([_bulk(b"%d" % after), _int(len(chunk)), _array(out)])

    def _versions(self, name, keys, argv) -> bytes:
        n = int(argv[4])
        ranges = [(int(argv[5 + 2 * i]), int(argv[6 + 2 * i])) for i in range(n)]
        prefix = argv[6 + 2 * n]
        cursor, count = int(argv[1]), int(argv[2])
        ordered = sorted(self.versions[name])
        chunk = ordered[cursor:cursor + count]
        after = cursor + count if cursor + count < len(ordered) else 0
        out = []
        for where in chunk:
            if any(lo <= key_hash(where[len(prefix):], self.tag) <= hi for lo, hi in ranges):
                value, expiry = self.versions[name][where]
                out += [_bulk(where), _bulk(value), _int(expiry)]
        return _array([_bulk(b"%d" % after), _int(len(chunk)), _array(out)])

    def _merge(self, name, keys, argv) -> bytes:
        held = self.versions[name]
        for i, where in enumerate(keys):
            value, expiry = argv[2 + 2 * i], int(argv[3 + 2 * i])
            mine = held.get(where)
            held[where] = (max(mine[0], value), max(mine[1], expiry)) if mine else (value, expiry)
        return _int(len(keys))

    def _keyversions(self, name, keys, argv) -> bytes:
        prefix = argv[2]
        found = [self.versions[name].get(prefix + key) for key in keys]
        return _array([_array([_bulk(v[0]), _int(v[1])]) if v else _array([]) for v in found])

    def _digest(self, name, keys, argv) -> bytes:
        return _array([_bulk(self.digest(name, k)) for k in keys])

    def _fetch(self, name, keys, argv) -> bytes:
        items = []
        for k in keys:
            if k in self.data[name]:
                value, expiry = self.data[name][k]
                items.append(_array([_bulk(self.digest(name, k)), _bulk(value), _int(expiry)]))
            else:
                items.append(_array([_bulk(b"")]))
        return _array(items)

    def _restore_if(self, name, keys, argv) -> bytes:
        key = keys[0]
        if self.digest(name, key) != argv[1]:
            return _int(0)
        self.data[name][key] = (argv[2], int(argv[3]))
        return _int(1)


    def _marker(self, name, keys, argv) -> bytes:
        if argv[1] == b"set":
            self.markers[name] = int(argv[2])
            return _int(1)
        return _array([_bulk(b"%d" % self.markers[name]), _int(len(self.data[name]))])

    def _restore_new(self, name, args) -> bytes:
        """Warm-up's RESTORE without REPLACE."""
        key, ttl, dump = args[1], int(args[2]), args[3]
        if key in self.data[name]:
            return b"-BUSYKEY Target key name already exists.\r\n"
        self.data[name][key] = (dump, ttl if b"ABSTTL" in args else -1)
        return b"+OK\r\n"


__all__ = ["FakeReplicas", "three_racks", "two_dcs"]
