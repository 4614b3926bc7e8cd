# -*- test-case-name: tests.unit.test_scan -*-
"""
Whole-keyspace commands, served by the coordinator for its clients.

They read one copy of the data from every node of the local rack (a rack
holds a full copy): SCAN walks the rack's nodes one after another behind a
composite cursor (`dynomite.node.scan`), KEYS and DBSIZE combine every node's
answer, RANDOMKEY asks the nodes in random order until one has a key.
FLUSHDB, FLUSHALL and SCRIPT LOAD/EXISTS/FLUSH reach every node of every
datacenter; other commands of the kind (TIME, ...) go to the local Redis.
"""

from __future__ import annotations

import random
from typing import List, Optional, Sequence

from dynomite.node.scan import ScanCursor
from dynomite.node.sinks import AnyOutcome, Gather
from dynomite.placement.router import Router
from dynomite.placement.topology import NodeInfo
from dynomite.wire.inflight import Request
from dynomite.wire.replies import bulk_value, elements, is_error
from dynomite.wire.resp import encode_command

__all__ = ["BROADCAST", "Keyspace", "concat_arrays", "sum_integers", "first_error_or_local"]

# Commands that reach every node of every DC: the keyspace is flushed
# everywhere, and a script loaded anywhere can be called through any node.
BROADCAST = frozenset({"flushdb", "flushall", "script|load", "script|exists", "script|flush"})


class Keyspace:
    """The whole-keyspace commands of one coordinator, sent to its `Targets`."""

    def __init__(self, router: Router, targets, rng: Optional[random.Random] = None) -> None:
        self._router = router
        self._targets = targets
        self._random = rng or random.Random()

    def execute(self, session, cmd, args, client) -> None:
        """A KEYSPACE command: SCAN, KEYS, DBSIZE, RANDOMKEY, a broadcast, or one for the local Redis."""
        name = cmd.name
        data = encode_command(args)
        slot = client.slot(len(data))
        request = Request(data, session.resp, session.id, 1, name in BROADCAST)
        targets = self._targets
        if name == "scan":
            self._scan(args, session, slot)
        elif name in ("keys", "dbsize"):
            nodes = self._rack_nodes()
            combine = concat_arrays if name == "keys" else sum_integers
            gather = Gather(len(nodes), lambda replies: slot.complete(combine(replies)))
            for i, node in enumerate(nodes):
                targets[node.name].send(request, gather.part(i))
        elif name == "randomkey":
            nodes = list(self._rack_nodes())
            self._random.shuffle(nodes)
            self._random_key(nodes, request, slot)
        elif name in BROADCAST:
            nodes = self._router.topology.nodes
            gather = Gather(len(nodes),
                            lambda replies: slot.complete(first_error_or_local(replies, nodes)))
            for i, node in enumerate(nodes):
                targets[node.name].send(request, gather.part(i))
        else:
            targets[self._router.topology.local.name].send(request, slot)

    def _rack_nodes(self) -> Sequence[NodeInfo]:
        topology = self._router.topology
        local = topology.local
        return topology.nodes_in_rack(local.datacenter, local.rack)

    def _random_key(self, nodes: List[NodeInfo], request: Request, slot) -> None:
        """RANDOMKEY: ask the rack's nodes in random order until one has a key."""
        node = nodes.pop()

        def done(raw: bytes) -> None:
            if nodes and raw in (b"$-1\r\n", b"_\r\n"):
                self._random_key(nodes, request, slot)
            else:
                slot.complete(raw)

        self._targets[node.name].send(request, AnyOutcome(done))

    def _scan(self, args, session, slot) -> None:
        nodes = self._rack_nodes()
        try:
            cursor = ScanCursor.parse(args[1], len(nodes))
        except ValueError:
            slot.complete(b"-ERR invalid cursor\r\n")
            return
        node_args = list(args)
        node_args[1] = b"%d" % cursor.node_cursor

        def done(raw: bytes) -> None:
            items = elements(raw)
            if is_error(raw) or len(items) != 2:
                slot.complete(raw)
                return
            after = cursor.advance(int(bulk_value(items[0])))
            text = b"%d" % (after.encode() if after is not None else 0)
            slot.complete(b"*2\r\n$%d\r\n%s\r\n%s" % (len(text), text, items[1]))

        request = Request(encode_command(node_args), session.resp, session.id)
        self._targets[nodes[cursor.node_index].name].send(request, AnyOutcome(done))


def concat_arrays(replies: List[bytes]) -> bytes:
    for raw in replies:
        if is_error(raw):
            return raw
    items: List[bytes] = []
    for raw in replies:
        items.extend(elements(raw))
    return b"*%d\r\n%s" % (len(items), b"".join(items))


def sum_integers(replies: List[bytes]) -> bytes:
    for raw in replies:
        if is_error(raw):
            return raw
    return b":%d\r\n" % sum(int(raw[1:-2]) for raw in replies)


def first_error_or_local(replies: List[bytes], nodes: Sequence[NodeInfo]) -> bytes:
    """Broadcast commands: any node's error, else the local node's reply."""
    for raw, node in zip(replies, nodes):
        if is_error(raw):
            return raw
    for raw, node in zip(replies, nodes):
        if node.is_local:
            return raw
    return replies[0]
