# -*- test-case-name: tests.unit.test_targets -*-
"""
Targets: the places a request can go from this node.

Every request the coordinator sends, and every write an outbox delivers,
goes to a `Target`.  There are three kinds, and each owns its own framing:

- `LocalRedis`: this node's own Redis (`dynomite.datastore`), raw RESP;
- `PeerNode`: another node of the cluster (`dynomite.peers`), a REQUEST
  frame that the peer runs on its Redis (or a LEAD frame, a write the
  peer orders for its datacenter: `dynomite.node.leader`);
- `RemoteDatacenter`: another datacenter as a whole, a FORWARD frame to the
  first reachable of its entry nodes, which applies the write to every rack
  of its datacenter (`dynomite.node.replica`).

A target has a `name` (a node's name, or ``dc:<name>``), ``send(request,
sink)`` and ``available()``, whether sending makes sense right now; an
outbox hints writes for a target that is not available.  `Targets` holds
them all by name and follows configuration reloads.
"""

from __future__ import annotations

from typing import Dict, Mapping

from zope.interface import Attribute, Interface, implementer

from dynomite.placement.router import Router
from dynomite.wire.inflight import Request
from dynomite.replication.applied_once import AppliedOnce
from dynomite.wire.peer_frames import FLAG_SEQUENCED, FORWARD, LEAD, REQUEST

__all__ = ["ITarget", "LocalRedis", "PeerNode", "RemoteDatacenter", "Targets", "dc_target_name"]


class ITarget(Interface):
    """Somewhere a request can be sent."""

    name = Attribute("The target's name: a node's name, or 'dc:<datacenter>'.")

    def send(request: Request, sink) -> None:
        """Send ``request``; exactly one of ``sink.complete(raw)``/``sink.fail(raw)`` follows."""

    def available() -> bool:
        """Whether the target can take requests now (else writes for it are hinted)."""


def dc_target_name(datacenter: str) -> str:
    """The name of the target (and outbox) for datacenter ``datacenter``."""
    return "dc:" + datacenter


@implementer(ITarget)
class LocalRedis:
    """This node's own Redis; numbered writes (its outbox's) are applied once."""

    __slots__ = ("name", "_datastore", "_send", "applied_once")

    def __init__(self, name: str, datastore) -> None:
        self.name = name
        self._datastore = datastore
        self._send = datastore.send
        #: numbered writes from this node's own outbox (`dynomite.replication.applied_once`)
        self.applied_once = AppliedOnce(datastore.send, datastore.note_errors)

    def send(self, request: Request, sink) -> None:
        if request.flags & FLAG_SEQUENCED:
            self.applied_once.send(self.name, request, sink)
        else:
            self._send(request, sink)

    def available(self) -> bool:
        return self._datastore.is_up


@implementer(ITarget)
class PeerNode:
    """Another node: requests run on its Redis."""

    __slots__ = ("name", "_links", "_membership", "_gone")

    def __init__(self, name: str, links: Mapping[str, object], membership) -> None:
        self.name = name
        self._links = links
        self._membership = membership
        self._gone = b"-ERR peer %s is no longer in the cluster\r\n" % name.encode()

    def send(self, request: Request, sink) -> None:
        link = self._links.get(self.name)
        if link is None:  # removed by a configuration reload
            sink.fail(self._gone)
            return
        link.send(REQUEST, request, sink)

    def available(self) -> bool:
        """Neither DOWN nor STANDBY (`dynomite.peers.membership.Membership.writable`)."""
        return self._membership.writable(self.name)

    def lead(self, request: Request, sink) -> None:
        """Have the peer lead a write (`dynomite.node.leader`): a LEAD frame."""
        link = self._links.get(self.name)
        if link is None:
            sink.fail(self._gone)
            return
        link.send(LEAD, request, sink)

    def can_lead(self) -> bool:
        """Whether the peer can take writes to lead now: writable, and connected."""
        link = self._links.get(self.name)
        return link is not None and link.is_up and self._membership.writable(self.name)


@implementer(ITarget)
class RemoteDatacenter:
    """
    Another datacenter: a write goes to the first of its entry nodes
    (`dynomite.placement.topology.Topology.entry_candidates`) that is up
    and writable, which applies it to every rack there.
    """

    __slots__ = ("name", "datacenter", "_router", "_links", "_membership", "_unreachable")

    def __init__(self, datacenter: str, router: Router, links: Mapping[str, object], membership) -> None:
        self.name = dc_target_name(datacenter)
        self.datacenter = datacenter
        self._router = router
        self._links = links
        self._membership = membership
        self._unreachable = b"-ERR no entry node of %s is reachable\r\n" % datacenter.encode()

    def _entry(self):
        writable = self._membership.writable
        links = self._links
        for node in self._router.topology.entry_candidates(self.datacenter):
            link = links.get(node.name)
            if link is not None and link.is_up and writable(node.name):
                return link
        return None

    def send(self, request: Request, sink) -> None:
        link = self._entry()
        if link is None:
            sink.fail(self._unreachable)
        else:
            link.send(FORWARD, request, sink)

    def available(self) -> bool:
        return self._entry() is not None


class Targets(Dict[str, object]):
    """
    Every target of this node, by name: its own Redis, each peer, each
    remote datacenter (a dict, so the request path looks one up at C
    speed).  `refresh` follows a reload (targets are added for new peers
    and datacenters; those of removed peers stay, and fail).
    """

    def __init__(self, router: Router, datastore, links: Mapping[str, object], membership) -> None:
        super().__init__()
        self._router = router
        self._datastore = datastore
        self._links = links
        self._membership = membership
        self.refresh()

    def refresh(self) -> None:
        """Add the targets the router's current topology needs."""
        topology = self._router.topology
        local = topology.local.name
        if local not in self:
            self[local] = LocalRedis(local, self._datastore)
        for node in topology.nodes:
            if not node.is_local and node.name not in self:
                self[node.name] = PeerNode(node.name, self._links, self._membership)
        for dc in topology.remote_datacenters:
            name = dc_target_name(dc)
            if name not in self:
                self[name] = RemoteDatacenter(dc, self._router, self._links, self._membership)
