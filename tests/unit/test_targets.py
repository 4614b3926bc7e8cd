"""
Tests for dynomite.replication.targets: where a request goes, and each
target's own framing.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dynomite.config.vocabulary import DC_ONE
from dynomite.placement.router import Router
from dynomite.replication.targets import ITarget, LocalRedis, PeerNode, RemoteDatacenter, Targets
from dynomite.wire.inflight import Request
from dynomite.wire.peer_frames import FORWARD, REQUEST

from tests.fakes import FakeDatastore, Sink
from tests.unit.test_router import cluster


class Link:
    """A peer link: records frames; up or down."""

    def __init__(self, up: bool = True) -> None:
        self.is_up = up
        self.sent = []

    def send(self, frame_type, request, sink) -> None:
        self.sent.append((frame_type, request))


class Membership:
    def __init__(self, standby=()) -> None:
        self.standby = set(standby)

    def writable(self, name: str) -> bool:
        return name not in self.standby


class TargetTests(SynchronousTestCase):
    def setUp(self):
        self.topology = cluster(dcs=("dc1", "dc2"), per_rack=1)
        self.router = Router(self.topology, None)
        self.datastore = FakeDatastore()
        self.links = {n.name: Link() for n in self.topology.nodes if not n.is_local}
        self.membership = Membership()
        self.targets = Targets(self.router, self.datastore, self.links, self.membership)

    def test_one_target_per_node_and_remote_datacenter(self):
        names = set(self.targets)
        self.assertEqual(names, {n.name for n in self.topology.nodes} | {"dc:dc2"})
        for name in names:
            self.assertTrue(verifyObject(ITarget, self.targets[name]))
        self.assertIsInstance(self.targets[self.topology.local.name], LocalRedis)
        self.assertIsInstance(self.targets["dc:dc2"], RemoteDatacenter)

    def test_local_redis_gets_the_request_as_it_is(self):
        request = Request(b"*1\r\n$4\r\nPING\r\n", 3, 42)
        self.targets[self.topology.local.name].send(request, Sink())
        ((lane, resp, payload, _),) = self.datastore.sent
        self.assertEqual((lane, resp, payload), (42, 3, request.payload))
        self.datastore.is_up = False
        self.assertFalse(self.targets[self.topology.local.name].available())

    def test_a_peer_gets_a_request_frame(self):
        peer = self.router.route(b"k", True, DC_ONE).local[1]
        target = self.targets[peer.name]
        self.assertIsInstance(target, PeerNode)
        request = Request(b"x", write=True)
        target.send(request, Sink())
        self.assertEqual(self.links[peer.name].sent, [(REQUEST, request)])
        self.membership.standby.add(peer.name)
        self.assertFalse(target.available())

    def test_a_removed_peer_fails_at_once(self):
        peer = next(iter(self.links))
        target = self.targets[peer]
        del self.links[peer]
        sink = Sink()
        target.send(Request(b"x"), sink)
        self.assertEqual(sink.failures, [b"-ERR peer %s is no longer in the cluster\r\n" % peer.encode()])

    def test_a_remote_datacenter_gets_a_forward_to_its_first_reachable_entry_node(self):
        target = self.targets["dc:dc2"]
        first, second = self.topology.entry_candidates("dc2")[:2]
        request = Request(b"x", write=True)
        target.send(request, Sink())
        self.assertEqual(self.links[first.name].sent, [(FORWARD, request)])
        self.links[first.name].is_up = False
        target.send(request, Sink())
        self.assertEqual(self.links[second.name].sent, [(FORWARD, request)])
        self.membership.standby.add(second.name)
        self.assertEqual(target.available(), len(self.topology.entry_candidates("dc2")) > 2)

    def test_no_reachable_entry_node(self):
        for link in self.links.values():
            link.is_up = False
        target = self.targets["dc:dc2"]
        sink = Sink()
        target.send(Request(b"x"), sink)
        self.assertEqual(sink.failures, [b"-ERR no entry node of dc2 is reachable\r\n"])
        self.assertFalse(target.available())

    def test_update_adds_targets_for_a_new_topology(self):
        bigger = cluster(dcs=("dc1", "dc2", "dc3"), per_rack=1)
        self.router.update(bigger)
        self.targets.refresh()
        self.assertIn("dc:dc3", set(self.targets))
