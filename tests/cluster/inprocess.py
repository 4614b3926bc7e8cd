"""
An in-process cluster: several nodes in one reactor, wired by iosim pumps,
each in front of a small in-memory datastore.  For routing, quorum and
failure tests under a `Clock`, without sockets (Tahoe-LAFS's no_network
idea).  Each node is built by the production factory
(`dynomite.node.assembly.NodeParts`), so its writes go through outboxes
and hint logs (in a temporary directory) exactly as a real node's do.
"""

from __future__ import annotations

import fnmatch
import pickle
import random
import shutil
import tempfile
from typing import Dict, List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.test import iosim

from dynomite.commands import lww
from dynomite.config.model import NodeConfig
from dynomite.node.assembly import NodeParts
from dynomite.node.client import ClientFactory
from dynomite.node.control import NodeControl
from dynomite.peers.listener import PeerServerFactory
from dynomite.placement.hashing import key_hash
from dynomite.wire.requests import RequestParser
from dynomite.wire.resp import bulk, integer, null

from tests.fakes import FakeMonitor, Transport

UNAVAILABLE = b"-ERR datastore unavailable\r\n"


class _NoReply:
    def complete(self, raw: bytes) -> None:
        pass

    fail = complete


def _scan_reply(cursor: int, scanned: int, items: List[bytes]) -> bytes:
    text = b"%d" % cursor
    return b"*3\r\n$%d\r\n%s\r\n%s" % (len(text), text, integer(scanned)) + (
        b"*%d\r\n" % len(items) + b"".join(i if i[:1] == b":" else bulk(i) for i in items))


class _Set(list):
    """A set's members (MemoryRedis keeps them in a list, in the order added)."""


class MemoryRedis:
    """
    Enough of Redis for routing and ordering tests: strings (APPEND, INCR,
    INCRBYFLOAT with a replica's own rounding), lists (LPUSH, RPUSH, LPOP, RPOP, LMOVE),
    sets (SADD, SREM, SPOP with a replica's own choice), HSET, MULTI/EXEC,
    DEL/EXISTS/MGET/MSET, KEYS/SCAN/DBSIZE/FLUSHALL.  ``down`` makes every
    request fail like an unreachable datastore; ``mute`` applies requests
    and loses their answers.
    """

    def __init__(self, seed: int = 0) -> None:
        self.data: Dict[bytes, object] = {}
        #: apply requests but never answer them
        self.mute = False
        # database 15: the marks of numbered writes applied, and the versions of keys
        self.meta: Dict[bytes, bytes] = {}
        self.versions: Dict[bytes, Dict[bytes, bytes]] = {}
        self.db = 0
        # SPOP's choices: each replica its own, as each Redis its own
        self.rng = random.Random(seed)
        self.down = False
        self.in_flight = 0
        self.timed_out_total = 0
        self.timeout = 1.0
        self.commands: List[List[bytes]] = []

    @property
    def is_up(self) -> bool:
        return not self.down

    def retry_now(self) -> None:
        pass

    def note_errors(self, count: int) -> None:
        pass

    def send(self, request, sink) -> None:
        if self.down:
            sink.fail(UNAVAILABLE)
            return
        if self.mute:
            sink = _NoReply()   # applied, but the answer is lost (a frozen Redis, a cut link)
        replies = []
        queued: Optional[List[List[bytes]]] = None
        for args in RequestParser().feed(request.payload):
            name = args[0].lower()
            if name == b"multi":
                queued = []
                replies.append(b"+OK\r\n")
            elif name == b"exec":
                results = [self.execute(a, request.resp) for a in queued or []]
                replies.append(b"*%d\r\n" % len(results) + b"".join(results))
                queued = None
            elif queued is not None:
                queued.append(args)
                replies.append(b"+QUEUED\r\n")
            else:
                replies.append(self.execute(args, request.resp))
        assert len(replies) == request.count, (replies, request.count)
        sink.complete(b"".join(replies))

    def _script(self, argv: List[bytes], keys: List[bytes]) -> bytes:
        """The scale-out modes of `dynomite.repair.lua` (list, drop, dump, tombstones), values as pickles."""
        d = self.data
        mode = argv[0]
        if mode == b"dump":
            out = []
            for key in keys:
                if key in d:
                    out.append(b"*3\r\n" + bulk(key) + bulk(pickle.dumps(d[key])) + integer(-1))
                else:
                    out.append(b"*1\r\n" + bulk(key))
            dumped = b"*%d\r\n" % len(out) + b"".join(out)
            if argv[1:2] != [b"versions"]:
                return dumped
            held = [self.versions.get(argv[3] + key) for key in keys]
            return b"*2\r\n" + dumped + b"*%d\r\n" % len(keys) + b"".join(
                b"*2\r\n" + bulk(pickle.dumps(v)) + integer(-1) if v is not None else b"*0\r\n" for v in held)
        if mode == b"tombstones":
            # one step: every hash of versions of a key in the ranges without data
            tag, n = argv[3] or None, int(argv[4])
            ranges = [(int(argv[5 + 2 * i]), int(argv[6 + 2 * i])) for i in range(n)]
            prefix = argv[6 + 2 * n]
            keys = [name[len(prefix):] for name in sorted(self.versions) if name.startswith(prefix)]
            dead = [k for k in keys if k not in d and any(lo <= key_hash(k, tag) <= hi for lo, hi in ranges)]
            return _scan_reply(0, len(keys), dead)
        if mode in (b"list", b"drop"):
            cursor, count, tag = int(argv[1]), int(argv[2]), argv[3] or None
            ranges = [(int(argv[5 + 2 * i]), int(argv[6 + 2 * i])) for i in range(int(argv[4]))]
            names = sorted(d)[cursor:cursor + count]
            inside = [k for k in names if any(lo <= key_hash(k, tag) <= hi for lo, hi in ranges)]
            outside = [k for k in names if k not in inside] if mode == b"drop" else []
            for key in outside:
                del d[key]
            following = cursor + len(names) - len(outside)
            following = following if names and following < len(d) else 0
            if mode == b"list":
                return _scan_reply(following, len(names), inside)
            return _scan_reply(following, len(names), [integer(len(outside))])
        return b"-ERR MemoryRedis knows no script mode %s\r\n" % mode

    def _bookkeeping(self, name: bytes, args: List[bytes], resp: int) -> bytes:
        """Database 15: applied-once marks (dynomite.replication.applied_once), versions (dynomite.commands.lww)."""
        if name == b"set":
            self.meta[args[1]] = args[2]
            return b"+OK\r\n"
        if name == b"hset":
            self.versions.setdefault(args[1], {}).update(zip(args[2::2], args[3::2]))
            return integer(len(args[2::2]))
        if name == b"hdel":
            held = self.versions.get(args[1], {})
            removed = sum(1 for f in args[2:] if held.pop(f, None) is not None)
            return integer(removed)
        if name == b"del":
            return integer(1 if self.versions.pop(args[1], None) is not None else 0)
        if name == b"pexpire":
            return integer(1 if args[1] in self.versions else 0)
        if name == b"restore":
            self.versions[args[1]] = pickle.loads(args[3])
            return b"+OK\r\n"
        value = self.meta.get(args[1])
        return null(resp) if value is None else bulk(value)

    def _checked(self, args: List[bytes]) -> bytes:
        """The script of dynomite.commands.lww, by its Python twin `decide`."""
        check = lww.parse_check(args)
        if check is None:
            return b"-ERR MemoryRedis knows no such script\r\n"

        def members(key: bytes):
            value = self.data.get(key)
            if isinstance(value, dict):
                return b"hash", sorted(value)
            if isinstance(value, _Set):
                return b"set", sorted(value)
            return (b"list" if isinstance(value, list) else b"string"), []

        ran = lww.decide(check, lambda key: dict(self.versions.get(lww.version_key(key), {})), members)
        db = self.db
        for command in ran:
            self.execute(command)
        self.db = db
        return integer(len(ran))

    def execute(self, args: List[bytes], resp: int = 2) -> bytes:
        name = args[0].lower()
        if name == b"select":
            self.db = int(args[1])
            return b"+OK\r\n"
        if self.db:
            return self._bookkeeping(name, args, resp)
        self.commands.append(args)
        d = self.data
        if name == b"set":
            d[args[1]] = args[2]
            return b"+OK\r\n"
        if name == b"hset":
            fields = d.setdefault(args[1], {})
            added = sum(1 for f in args[2::2] if f not in fields)
            fields.update(zip(args[2::2], args[3::2]))  # type: ignore[union-attr]
            return integer(added)
        if name == b"get":
            value = d.get(args[1])
            return null(resp) if value is None else bulk(value)  # type: ignore[arg-type]
        if name == b"mset":
            for i in range(1, len(args), 2):
                d[args[i]] = args[i + 1]
            return b"+OK\r\n"
        if name == b"mget":
            return b"*%d\r\n" % (len(args) - 1) + b"".join(
                null(resp) if d.get(k) is None else bulk(d[k]) for k in args[1:]  # type: ignore[arg-type]
            )
        if name in (b"del", b"unlink"):
            return integer(sum(1 for k in args[1:] if d.pop(k, None) is not None))
        if name == b"exists":
            return integer(sum(1 for k in args[1:] if k in d))
        if name == b"sadd":
            members = d.setdefault(args[1], _Set())
            added = [m for m in args[2:] if m not in members]
            members.extend(added)  # type: ignore[union-attr]
            return integer(len(added))
        if name == b"srem":
            members = d.get(args[1], [])
            removed = [m for m in args[2:] if m in members]
            for m in removed:
                members.remove(m)  # type: ignore[union-attr]
            if not members:
                d.pop(args[1], None)
            return integer(len(removed))
        if name == b"spop":
            members = d.get(args[1], [])
            if not members:
                return null(resp)
            member = members.pop(self.rng.randrange(len(members)))  # type: ignore[union-attr]
            if not members:
                d.pop(args[1], None)
            return bulk(member)
        if name in (b"lpush", b"rpush"):
            items = d.setdefault(args[1], [])
            for item in args[2:]:
                if name == b"lpush":
                    items.insert(0, item)  # type: ignore[union-attr]
                else:
                    items.append(item)  # type: ignore[union-attr]
            return integer(len(items))  # type: ignore[arg-type]
        if name in (b"lpop", b"rpop"):
            items = d.get(args[1])
            if not items:
                return null(resp)
            item = items.pop(0 if name == b"lpop" else -1)  # type: ignore[union-attr]
            if not items:
                d.pop(args[1])
            return bulk(item)
        if name == b"lmove":
            items = d.get(args[1])
            if not items:
                return null(resp)
            item = items.pop(0 if args[3].lower() == b"left" else -1)  # type: ignore[union-attr]
            if not items:
                d.pop(args[1])
            target = d.setdefault(args[2], [])
            if args[4].lower() == b"left":
                target.insert(0, item)  # type: ignore[union-attr]
            else:
                target.append(item)  # type: ignore[union-attr]
            return bulk(item)
        if name == b"append":
            value = d.get(args[1], b"") + args[2]  # type: ignore[operator]
            d[args[1]] = value
            return integer(len(value))
        if name in (b"incr", b"incrbyfloat"):
            by = float(args[2]) if name == b"incrbyfloat" else 1
            value = float(d.get(args[1], b"0")) + by  # type: ignore[arg-type]
            # each replica's own rounding, as libc's may differ
            text = (b"%d" % value if name == b"incr" else
                    (b"%.17g" % value if self.rng.random() < 0.5 else repr(value).encode()))
            d[args[1]] = text
            return integer(int(value)) if name == b"incr" else bulk(text)
        if name == b"smembers":
            members = d.get(args[1], [])
            return b"*%d\r\n" % len(members) + b"".join(bulk(m) for m in members)  # type: ignore[union-attr]
        if name == b"keys":
            pattern = args[1].decode()
            keys = [k for k in d if fnmatch.fnmatchcase(k.decode(), pattern)]
            return b"*%d\r\n" % len(keys) + b"".join(bulk(k) for k in keys)
        if name == b"scan":
            cursor = int(args[1])
            keys = sorted(d)
            batch, nxt = keys[cursor:cursor + 2], cursor + 2
            text = b"%d" % (nxt if nxt < len(keys) else 0)
            return b"*2\r\n$%d\r\n%s\r\n*%d\r\n%s" % (
                len(text), text, len(batch), b"".join(bulk(k) for k in batch))
        if name == b"dbsize":
            return integer(len(d))
        if name == b"pexpireat":
            return integer(1 if args[1] in d else 0)
        if name in (b"flushall", b"flushdb"):
            d.clear()
            return b"+OK\r\n"
        if name == b"evalsha" and args[1] == lww.SHA:
            return self._checked(args)
        if name == b"evalsha" and args[1] == lww.NOTE_SHA:
            db = self.db
            for command in lww.noted(args):
                self.execute(command)
            self.db = db
            return integer(int(args[2]))
        if name == b"hdel":
            fields = d.get(args[1], {})
            removed = sum(1 for f in args[2:] if fields.pop(f, None) is not None)  # type: ignore[union-attr]
            if not fields:
                d.pop(args[1], None)
            return integer(removed)
        if name == b"dump":
            return null(resp) if args[1] not in d else bulk(pickle.dumps(d[args[1]]))
        if name == b"pexpiretime":
            return integer(-1 if args[1] in d else -2)
        if name == b"incrby":
            value = int(d.get(args[1], b"0")) + int(args[2])  # type: ignore[arg-type]
            d[args[1]] = b"%d" % value
            return integer(value)
        if name == b"eval":
            return self._script(args[3 + int(args[2]):], args[3:3 + int(args[2])])
        if name == b"restore":
            if args[1] in d and b"REPLACE" not in [a.upper() for a in args[4:]]:
                return b"-BUSYKEY Target key name already exists.\r\n"
            d[args[1]] = pickle.loads(args[3])
            return b"+OK\r\n"
        return b"-ERR MemoryRedis does not know '%s'\r\n" % name


class MemoryEndpoint:
    """Dials a node of the cluster in memory; each connection gets an iosim pump."""

    def __init__(self, cluster: "InProcessCluster", source: "InProcessNode", target: str) -> None:
        self.cluster = cluster
        self.source = source
        self.target = target

    def connect(self, factory):
        target = self.cluster.by_name.get(self.target)
        if (target is None or not target.reachable or not self.source.reachable
                or frozenset((self.source, target)) in self.cluster.cut_off):
            from twisted.internet.defer import fail
            from twisted.internet.error import ConnectionRefusedError

            return fail(ConnectionRefusedError())
        client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        server = target.peer_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2))
        client_transport = iosim.FakeTransport(client, isServer=False)
        server_transport = iosim.FakeTransport(server, isServer=True)
        pump = iosim.connect(server, server_transport, client, client_transport, greet=False)
        self.cluster.pumps.append((pump, self.source, target))
        return succeed(client)


class InProcessNode:
    """One node of the cluster: the production parts, an in-memory Redis, iosim peer links."""

    def __init__(self, cluster: "InProcessCluster", config: NodeConfig) -> None:
        self.config = config
        self.name = str(config.dyn_listen)
        self.redis = MemoryRedis(seed=len(cluster.nodes))
        self.reachable = True
        self.parts = NodeParts(
            config, cluster.clock, self.redis, FakeMonitor(),
            connect_peer=lambda address, c=cluster: MemoryEndpoint(c, self, str(address)),
            jitter=lambda: 1.0,
        )
        self.topology = self.parts.topology
        self.coordinator = self.parts.coordinator
        self.node = self.parts.node
        self.membership = self.parts.membership
        self.peers = self.parts.links
        self.outboxes = self.parts.outboxes
        self.control = None
        if self.parts.gossip is None:
            known = lambda name, dc, rack: True  # noqa: E731
        else:
            # gossip: peers are admitted as the service admits them, and what
            # the view learns is applied as the service applies it
            known = self._known
            self.control = NodeControl(self.parts)
            self.parts.gossip.listeners.append(self.control.apply_gossip)
        self.peer_factory = PeerServerFactory(
            config, self.parts.replica, self.membership, known, cluster.clock,
            name=self.name, gossip=self.parts.gossip)
        self.clients = ClientFactory(self.node, cluster.clock)

    def _known(self, name: str, dc: str, rack: str) -> bool:
        info = self.parts.topology.node(name)
        return info is not None and (info.datacenter, info.rack) == (dc, rack)

    @property
    def datacenter(self) -> str:
        return self.config.datacenter

    @property
    def rack(self) -> str:
        return self.config.rack


class InProcessCluster:
    """``layout`` is {dc: {rack: node count}}; node i of a rack of N gets token i * 2**32 // N."""

    def __init__(self, layout: Dict[str, Dict[str, int]], **settings) -> None:
        self.clock = Clock()
        self.pumps: List = []
        #: pairs of nodes whose connections move nothing until released (`hold`)
        self.held: List[object] = []
        #: pairs of nodes that cannot reach each other (`cut`)
        self.cut_off: set = set()
        self.directory = tempfile.mkdtemp(prefix="dynomite-inprocess-")
        self.settings = settings
        entries = []
        n = 0
        for dc, racks in layout.items():
            for rack, count in racks.items():
                for i in range(count):
                    n += 1
                    entries.append((dc, rack, "10.0.0.%d:8101" % n, i * (2 ** 32 // count)))
        self.nodes: List[InProcessNode] = []
        for dc, rack, address, token in entries:
            seeds = ["%s:%s:%s:%d" % (a, r, d, t) for d, r, a, t in entries if a != address]
            self.nodes.append(InProcessNode(self, self._config(address, dc, rack, token, seeds, "inprocess.yml")))
        self.by_name = {node.name: node for node in self.nodes}
        for node in self.nodes:
            node.peer_factory.startFactory()
            node.parts.start()
        self.settle()
        # one round of heartbeats: every node learns its peers hold no hints
        # for it and leaves RESUMING
        self.advance(1.5)

    def stop(self) -> None:
        """Stop every node (closing its hint logs) and remove their files."""
        for node in self.nodes:
            node.parts.stop()
            node.peer_factory.stopFactory()
        shutil.rmtree(self.directory, ignore_errors=True)

    def settle(self, rounds: int = 50) -> None:
        """Move bytes between nodes until nothing moves."""
        for _ in range(rounds):
            moved = False
            for pump, source, target in list(self.pumps):
                if self.held and (frozenset((source, target)) in self.held or (source, target) in self.held):
                    continue
                if pump.pump():
                    moved = True
            if not moved:
                return

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.settle()
        now = self.clock.seconds()
        for node in self.nodes:
            node.membership.tick(now)
            node.parts.tick_outboxes(now)
            if node.parts.gossip is not None:
                node.parts.gossip.tick(now)
        self.settle()

    def _config(self, address: str, dc: str, rack: str, token: int, seeds: List[str], source: str,
                **settings) -> NodeConfig:
        """One node's configuration: the cluster's settings, then ``settings``."""
        pool = {
            "listen": address.replace("8101", "8102"),
            "dyn_listen": address,
            "servers": ["127.0.0.1:6379:1"],
            "tokens": str(token),
            "datacenter": dc,
            "rack": rack,
            "timeout": 1000,
            "dyn_seeds": seeds,
            "data_dir": self.directory,
        }
        pool.update(self.settings)
        pool.update(settings)
        return NodeConfig.from_dict({"dyn_o_mite": pool}, source=source)

    def add_node(self, address: str, dc: str, rack: str, token: int, seeds: List[str], **settings) -> InProcessNode:
        """Start one more node, which knows only ``seeds`` (host:port:rack:dc:tokens); the others are untouched."""
        node = InProcessNode(self, self._config(address, dc, rack, token, seeds, "inprocess-added.yml", **settings))
        self.nodes.append(node)
        self.by_name[node.name] = node
        node.peer_factory.startFactory()
        node.parts.start()
        self.settle()
        return node

    def node(self, dc: str, rack: str, index: int = 0) -> InProcessNode:
        return [n for n in self.nodes if n.datacenter == dc and n.rack == rack][index]

    def client(self, node: InProcessNode) -> "InProcessClient":
        return InProcessClient(self, node)

    def isolate(self, node: InProcessNode) -> None:
        """Cut every connection to and from ``node`` and refuse new ones."""
        node.reachable = False
        for pump, source, target in self.pumps:
            if node in (source, target):
                pump.clientIO.loseConnection()
                pump.serverIO.loseConnection()
        self.settle()
        self.pumps = [entry for entry in self.pumps if node not in entry[1:]]

    def hold(self, a: InProcessNode, b: InProcessNode, dialed_by_a: bool = False) -> None:
        """
        Nothing moves between ``a`` and ``b`` (either way) until `release`:
        bytes in flight, not lost.  ``dialed_by_a``: only on the connection
        ``a`` dialed (what ``a`` asks ``b``, and its answers).
        """
        self.held.append((a, b) if dialed_by_a else frozenset((a, b)))

    def release(self, a: InProcessNode, b: InProcessNode, dialed_by_a: bool = False) -> None:
        self.held.remove((a, b) if dialed_by_a else frozenset((a, b)))
        self.settle()

    def cut(self, one, other) -> None:
        """Cut every connection between the nodes ``one`` and the nodes ``other``, and refuse new ones."""
        pairs = {frozenset((a, b)) for a in one for b in other}
        self.cut_off |= pairs
        for pump, source, target in self.pumps:
            if frozenset((source, target)) in pairs:
                pump.clientIO.loseConnection()
                pump.serverIO.loseConnection()
        self.settle()
        self.pumps = [entry for entry in self.pumps if frozenset(entry[1:]) not in pairs]

    def mend(self) -> None:
        """Let every node reach every other again (`cut`); links reconnect as time passes."""
        self.cut_off = set()

    def rejoin(self, node: InProcessNode, seconds: float = 3.0) -> None:
        """Let ``node`` be reached again and give links time to reconnect."""
        node.reachable = True
        for _ in range(int(seconds / 0.25)):
            self.advance(0.25)


class InProcessClient:
    """A Redis client connection to one in-process node."""

    def __init__(self, cluster: InProcessCluster, node: InProcessNode) -> None:
        self.cluster = cluster
        self.protocol = node.clients.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.transport = Transport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        """Send raw request bytes, nothing more: the cluster moves them when pumped."""
        self.protocol.dataReceived(data)

    def raw(self, data: bytes) -> bytes:
        """Send raw request bytes; settle the cluster; return everything answered."""
        self.transport.clear()
        self.protocol.dataReceived(data)
        self.cluster.settle()
        return self.transport.value()

    def command(self, *args) -> bytes:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        return self.raw(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))

    def consistency(self, level: str) -> None:
        assert self.command("DYNO_CONFIG:CONN_CONSISTENCY", level) == b"+OK\r\n"


def owners(cluster: InProcessCluster, key: bytes) -> List[InProcessNode]:
    """The nodes whose datastore holds ``key``."""
    return [n for n in cluster.nodes if key in n.redis.data]


def expected_owner(cluster: InProcessCluster, dc: str, rack: str, key: bytes,
                   hash_tag: Optional[bytes] = None) -> InProcessNode:
    from dynomite.placement.hashing import key_hash

    h = key_hash(key, hash_tag)
    info = cluster.nodes[0].topology.ring(dc, rack).owner(h)
    return cluster.by_name[info.name]


def make_cluster(test, layout: Dict[str, Dict[str, int]], **settings) -> InProcessCluster:
    """An `InProcessCluster` that ``test`` stops (and whose files it removes) when it ends."""
    cluster = InProcessCluster(layout, **settings)
    test.addCleanup(cluster.stop)
    return cluster
