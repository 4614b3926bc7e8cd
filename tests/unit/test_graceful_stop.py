"""
`dynomite.service.graceful_stop`, step by step, with fakes for the node's
parts and a `Clock`: what SIGTERM does before the services stop (issue 16,
item 3).  The same stop between real processes is in
``tests.integration.test_seeds_and_stop.GracefulStopTests``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import List

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dynomite.service import graceful_stop

TIMEOUT = 1.0
PEER_DOWN_AFTER = 1.5


class Events(list):
    """What happened, in order."""


class Client:
    def __init__(self, events: Events, name: str) -> None:
        self.events, self.name = events, name
        self.settled = False
        self.transport = SimpleNamespace(abortConnection=lambda: events.append(("abort", name)))

    def stop_reading(self) -> None:
        self.events.append(("stop_reading", self.name))

    def drain(self) -> None:
        self.events.append(("drain", self.name))


class Outbox:
    def __init__(self, events: Events, name: str) -> None:
        self.in_flight = 1
        self.started = True
        self.hints = SimpleNamespace(flush=lambda: events.append(("fsync", name)))


class Protocol:
    def __init__(self, events: Events, name: str) -> None:
        self.events, self.name = events, name
        self.is_open = True
        self.last_received = -1.0

    def ping(self) -> None:
        self.events.append(("ping", self.name))


class Service:
    def __init__(self, events: Events, clients: List[Client], protocols: List[Protocol]) -> None:
        self.events = events
        self.client_listener = "clients"
        self.tls_client_listener = None
        self.peer_factory = SimpleNamespace(connections=protocols[1:])
        self.membership = SimpleNamespace(leaving=False)
        self.outboxes = {"a": Outbox(events, "a")}
        self.parts = SimpleNamespace(
            config=SimpleNamespace(timeout=TIMEOUT, peer_down_after=PEER_DOWN_AFTER),
            node=SimpleNamespace(clients=set(clients)),
            outboxes=self.outboxes,
            membership=self.membership,
            links={"peer": SimpleNamespace(connections=protocols[:1])},
            datastore=SimpleNamespace(in_flight=0),
        )

    def removeService(self, service):
        self.events.append(("stop_listening", service))
        return defer.succeed(None)


class GracefulStopTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events = Events()
        self.client = Client(self.events, "c1")
        self.protocols = [Protocol(self.events, "out"), Protocol(self.events, "in")]
        self.service = Service(self.events, [self.client], self.protocols)
        self.done = graceful_stop(self.service, self.clock)

    def test_steps_in_order(self) -> None:
        """Stop listening, answer what was read, then close; writes settled; fsync; tell peers; done on PONGs."""
        self.assertEqual(self.events, [("stop_listening", "clients"), ("stop_reading", "c1")])
        self.clock.advance(0.1)
        self.assertNotIn(("drain", "c1"), self.events, "closed before its requests were answered")
        self.client.settled = True
        self.clock.advance(0.01)
        self.assertEqual(self.events[-1], ("drain", "c1"))
        self.service.parts.node.clients.clear()
        self.clock.advance(0.01)
        self.assertNotIn(("fsync", "a"), self.events, "hints flushed while writes were in flight")
        self.service.outboxes["a"].in_flight = 0
        self.clock.advance(0.01)
        self.assertEqual(self.events[-3:], [("fsync", "a"), ("ping", "out"), ("ping", "in")])
        self.assertTrue(self.service.membership.leaving)
        self.assertNoResult(self.done)
        self.clock.advance(0.01)
        self.assertNoResult(self.done)
        for p in self.protocols:
            p.last_received = self.clock.seconds()   # their PONGs
        self.clock.advance(0.01)
        self.successResultOf(self.done)
        self.assertNotIn(("abort", "c1"), self.events)

    def test_bounds(self) -> None:
        """A client never settled is cut after timeout; hints are fsynced anyway; silent peers wait peer_down_after."""
        self.clock.advance(TIMEOUT)
        self.assertIn(("abort", "c1"), self.events)
        self.service.parts.node.clients.clear()
        self.clock.advance(TIMEOUT)
        self.assertIn(("fsync", "a"), self.events)
        self.assertTrue(self.service.membership.leaving)
        self.clock.advance(PEER_DOWN_AFTER - 0.05)
        self.assertNoResult(self.done)
        self.clock.advance(0.1)
        self.successResultOf(self.done)
