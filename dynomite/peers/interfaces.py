# -*- test-case-name: tests.unit.test_peer -*-
"""
What the peer layer needs from the node above it: two collaborators, each
passed explicitly to every peer connection (`dynomite.peers.protocol`).

- `IPeerRequests` serves the requests peers send (as a replica, or as the
  entry node of a datacenter for forwarded writes), and the pub/sub
  messages they relay;
- `IPeerStatus` is membership, as heartbeats carry it: this node's status
  for a peer, and the status a peer reported.

The peer layer decodes frames into `dynomite.wire.inflight.Request` values
before handing them up, so nothing above it sees frame flags.
"""

from __future__ import annotations

from zope.interface import Interface

__all__ = ["IPeerRequests", "IPeerStatus"]


class IPeerRequests(Interface):
    """Serves the requests peers send to this node."""

    def handle_peer_request(peer_name, frame_type, request, sink):
        """
        Run ``request`` (a `dynomite.wire.inflight.Request`), which peer
        ``peer_name`` sent in a REQUEST (run it here) or FORWARD (this node is
        the entry of its datacenter) frame (``frame_type``); answer ``sink``
        once with ``complete(raw)`` or ``fail(raw)``.  ``request.lane`` is a
        stable integer per peer, so one peer's requests keep their order.
        """

    def handle_peer_publish(peer_name, channel, message, shard):
        """
        Peer ``peer_name`` published ``message`` on ``channel`` (bytes; a
        shard channel when ``shard``): deliver it to this node's own
        subscribers, and forward it nowhere.  Nothing is answered.
        """


class IPeerStatus(Interface):
    """Membership as heartbeats carry it."""

    def status_for(peer):
        """This node's status as peer ``peer`` should see it: a JSON-able dict."""

    def peer_status(peer, status):
        """Peer ``peer`` reported ``status`` (a dict, unchecked) in a heartbeat."""
