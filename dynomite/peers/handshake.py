# -*- test-case-name: tests.unit.test_handshake -*-
"""
The peer handshake as a Sans-IO state machine: frames in, frames to send and
a decision out; no transport, no clock.

The connecting side speaks first; payloads are JSON objects::

    HELLO {cluster, node, dc, rack, nonce[, entry]}  -->
                                            <--  REJECT {reason}, close
                                            <--  WELCOME {node, admin, features}  (no peer_secret)
                                            <--  CHALLENGE {node, nonce}        (peer_secret set)
    AUTH {proof}                            -->
                                            <--  WELCOME {node, admin, features, proof}  or  REJECT

``features`` lists, comma-separated, the optional frames the accepting node
takes (``publish``: PUBLISH, `dynomite.wire.peer_frames.FEATURE_PUBLISH`;
``numbered-forward``: FORWARDs with their writes' numbers, `FEATURE_NUMBERED_FORWARD`);
the connecting side sends those frames only when it is listed, so a node
that predates a frame never receives it (it would drop the connection).

With gossip (``enable_gossip``, `dynomite.peers.gossip`) HELLO also carries
the connecting node's ``entry`` in the cluster view and WELCOME lists
``gossip``.  The accepting side then asks ``newcomer(name, dc, rack,
entry)`` instead of ``known``: a node the topology does not know yet may
join if its entry does not clash with the view.  `Ready` carries the entry
so the node learns it only once the peer has proved itself (peer_secret);
older nodes ignore the field.

With ``peer_secret`` both sides prove they know it with HMAC-SHA256 over
the cluster, both node names and both random nonces, under different labels
for each direction, so the secret never crosses the wire, a proof cannot be
replayed, and the accepting side proves itself only to a connector that has
already proved itself.  The accepting side checks the cluster name and asks
``known(name, dc, rack)`` whether it expects that node; the connecting side
checks that CHALLENGE and WELCOME name the node it meant to reach.  Before
the handshake completes, any other frame ends it.

Each input returns a `Step`: the frames to send, in order, and at most one
decision, after which the machine takes no more input:

- `Ready`: the handshake completed; the connection is open to that peer;
- `RejectPeer`: this side refuses the peer (a REJECT saying why is among the
  frames to send); close once it is written;
- `RejectedByPeer`: the peer sent REJECT; close;
- `DropPeer`: the peer broke the protocol (connecting side); drop at once.

`dynomite.peers.protocol.PeerProtocol` feeds it the frames of a new
connection and acts on its steps.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

from dynomite.config.model import NodeConfig
from dynomite.wire.peer_frames import (
    ACCEPTING_SIDE, AUTH, CHALLENGE, CONNECTING_SIDE, FEATURE_GOSSIP, FEATURE_NUMBERED_FORWARD, FEATURE_PUBLISH,
    FRAME_NAMES, HELLO, REJECT, WELCOME, Frame, PeerProtocolError, decode_control, encode_control, handshake_proof,
    new_nonce, proofs_match,
)

__all__ = [
    "Identity", "Handshake", "Step", "Ready", "RejectPeer", "RejectedByPeer", "DropPeer",
    "node_name",
]


def node_name(config: NodeConfig) -> str:
    """A node's name among its peers: its peer address as seeds list it (`NodeConfig.peer_address`)."""
    return str(config.peer_address())


class Identity(NamedTuple):
    """Who this node is to its peers, as the handshake states and checks it."""

    cluster: str
    name: str
    datacenter: str
    rack: str
    #: ``peer_secret`` as bytes, or None when the cluster has none
    secret: Optional[bytes]
    #: where this node's admin API listens; peers learn it from WELCOME so
    #: /cluster_describe can tell operators (and dynomite-admin) every node's
    admin: str

    @classmethod
    def from_config(cls, config: NodeConfig, name: Optional[str] = None) -> "Identity":
        """This node's identity; ``name`` defaults to `node_name`."""
        return cls(
            config.pool_name,
            name if name is not None else node_name(config),
            config.datacenter,
            config.rack,
            config.peer_secret.encode("utf-8") if config.peer_secret else None,
            str(config.stats_listen),
        )


class Ready(NamedTuple):
    """The handshake completed: the connection is open to ``peer``."""

    peer: str
    #: the peer's datacenter, as its HELLO said (None on the connecting side)
    datacenter: Optional[str]
    #: the peer's admin API address, as its WELCOME said (connecting side)
    admin: Optional[str]
    #: the optional frames the peer takes, as its WELCOME said (connecting side)
    features: Tuple[str, ...] = ()
    #: the peer's entry in the cluster view, as its HELLO carried it (accepting side, gossip)
    entry: Optional[Dict[str, Any]] = None


class RejectPeer(NamedTuple):
    """This side refuses the peer; the REJECT is among the frames to send."""

    reason: str


class RejectedByPeer(NamedTuple):
    """The peer refused this node."""

    reason: str


class DropPeer(NamedTuple):
    """The peer broke the protocol; drop the connection at once."""

    reason: str


Decision = Union[Ready, RejectPeer, RejectedByPeer, DropPeer]


class Step(NamedTuple):
    """What one input produced: frames to send, in order, and maybe a decision."""

    send: Tuple[Frame, ...] = ()
    decision: Optional[Decision] = None


_NOTHING = Step()

#: The optional frames this node takes (a WELCOME's ``features``); with gossip, `GOSSIP_FEATURES`.
FEATURES = FEATURE_PUBLISH + "," + FEATURE_NUMBERED_FORWARD
GOSSIP_FEATURES = FEATURES + "," + FEATURE_GOSSIP

# states
HELLO_SENT = "HELLO_SENT"      # connecting side, waiting for CHALLENGE, WELCOME or REJECT
AUTH_SENT = "AUTH_SENT"        # connecting side, waiting for WELCOME or REJECT
AWAIT_HELLO = "AWAIT_HELLO"    # accepting side
CHALLENGED = "CHALLENGED"      # accepting side, waiting for AUTH
DONE = "DONE"                  # a decision was made


class Handshake:
    """
    One side of one connection's handshake.

    ``expected`` (the name of the node dialled) makes this the connecting
    side; ``known(name, dc, rack)`` is the accepting side's membership check
    (None: nobody is known); it may return a reason (a str) to refuse a node
    it knows (the peer listener does when a link must run TLS and does not).  ``nonce`` makes the random nonces (injectable
    for tests).  ``entry()`` (gossip on) is this node's entry in the
    cluster view, which HELLO carries; ``newcomer(name, dc, rack, entry)``
    is the accepting side's check of a HELLO that carries one.
    """

    _TABLE: Dict[str, Dict[int, Callable[["Handshake", Frame], Step]]] = {}

    def __init__(self, identity: Identity, expected: Optional[str] = None,
                 known: Optional[Callable[[str, str, str], Union[bool, str]]] = None,
                 nonce: Callable[[], str] = new_nonce,
                 entry: Optional[Callable[[], Dict[str, Any]]] = None,
                 newcomer: Optional[Callable[[str, str, str, Any], Union[bool, str]]] = None) -> None:
        self._identity = identity
        self._entry = entry
        self._newcomer = newcomer
        self._features = FEATURES if entry is None else GOSSIP_FEATURES
        self._peer_entry: Optional[Dict[str, Any]] = None
        self._expected = expected
        self._known = known
        self._new_nonce = nonce
        self._nonce = ""
        self._peer_nonce = ""
        self._peer: Optional[str] = expected
        self._peer_datacenter: Optional[str] = None
        self.connecting = expected is not None
        self.state = HELLO_SENT if self.connecting else AWAIT_HELLO
        self._started = False

    @property
    def done(self) -> bool:
        """A decision was made: no more input is taken."""
        return self.state == DONE

    # -- inputs ----------------------------------------------------------------

    def start(self) -> Step:
        """The connection is made: the connecting side says HELLO (unless a decision was made)."""
        if not self.connecting or self._started or self.state == DONE:
            return _NOTHING
        self._started = True
        me = self._identity
        self._nonce = self._new_nonce()
        hello: Dict[str, Any] = {
            "cluster": me.cluster, "node": me.name, "dc": me.datacenter, "rack": me.rack,
            "nonce": self._nonce,
        }
        if self._entry is not None:
            hello["entry"] = self._entry()
        return Step((self._control(HELLO, hello),))

    def receive(self, frame: Frame) -> Step:
        """A frame arrived before the handshake completed."""
        if self.state == DONE:
            return _NOTHING
        handler = self._TABLE[self.state].get(frame.type)
        if handler is None:
            return self.fail("unexpected %s frame (handshake)" % FRAME_NAMES.get(frame.type, frame.type))
        return handler(self, frame)

    def fail(self, reason: str) -> Step:
        """
        The peer broke the protocol (bad bytes, a frame too large, an
        unexpected frame): the accepting side refuses it with a REJECT, the
        connecting side drops it.
        """
        if self.state == DONE:
            return _NOTHING
        if self.connecting:
            return self._decide(DropPeer(reason))
        return self._reject(reason)

    # -- accepting side --------------------------------------------------------

    def _on_hello(self, frame: Frame) -> Step:
        try:
            hello = decode_control(frame, ("cluster", "node", "dc", "rack", "nonce"))
        except PeerProtocolError as e:
            return self.fail(str(e))
        me = self._identity
        node, dc, rack = hello["node"], hello["dc"], hello["rack"]
        if hello["cluster"] != me.cluster:
            return self._reject("cluster %r is not this node's cluster %r" % (hello["cluster"], me.cluster))
        entry = hello.get("entry")
        if entry is not None and self._newcomer is not None:
            verdict = self._newcomer(node, dc, rack, entry)
            self._peer_entry = entry
        else:
            verdict = self._known(node, dc, rack) if self._known is not None else False
        if isinstance(verdict, str):  # known, but refused for the reason it names
            return self._reject(verdict)
        if not verdict:
            return self._reject("node %s (%s/%s) is not a known peer of %s" % (node, dc, rack, me.name))
        self._peer, self._peer_datacenter = node, dc
        self._peer_nonce = hello["nonce"]
        if me.secret is None:
            return self._welcome({"node": me.name, "admin": me.admin, "features": self._features})
        self._nonce = self._new_nonce()
        self.state = CHALLENGED
        return Step((self._control(CHALLENGE, {"node": me.name, "nonce": self._nonce}),))

    def _on_auth(self, frame: Frame) -> Step:
        try:
            auth = decode_control(frame, ("proof",))
        except PeerProtocolError as e:
            return self.fail(str(e))
        me = self._identity
        secret = me.secret
        assert secret is not None and self._peer is not None
        expected = handshake_proof(secret, CONNECTING_SIDE, me.cluster, self._peer, me.name,
                                   self._peer_nonce, self._nonce)
        if not proofs_match(expected, auth["proof"]):
            return self._reject("authentication failed (peer_secret differs)")
        return self._welcome({"node": me.name, "admin": me.admin, "features": self._features, "proof": handshake_proof(
            secret, ACCEPTING_SIDE, me.cluster, self._peer, me.name, self._peer_nonce, self._nonce)})

    def _welcome(self, body: Dict[str, str]) -> Step:
        assert self._peer is not None
        return self._decide(Ready(self._peer, self._peer_datacenter, None, (), self._peer_entry),
                            self._control(WELCOME, body))

    def _reject(self, reason: str) -> Step:
        return self._decide(RejectPeer(reason), self._control(REJECT, {"reason": reason}))

    # -- connecting side -------------------------------------------------------

    def _on_challenge(self, frame: Frame) -> Step:
        try:
            challenge = decode_control(frame, ("node", "nonce"))
        except PeerProtocolError as e:
            return self.fail(str(e))
        me = self._identity
        if challenge["node"] != self._expected:
            return self.fail("reached %s instead of %s" % (challenge["node"], self._expected))
        if me.secret is None:
            return self.fail("peer %s requires peer_secret, which this node lacks" % self._expected)
        self._peer_nonce = challenge["nonce"]
        self.state = AUTH_SENT
        return Step((self._control(AUTH, {"proof": handshake_proof(
            me.secret, CONNECTING_SIDE, me.cluster, me.name, self._expected,
            self._nonce, self._peer_nonce)}),))

    def _on_welcome(self, frame: Frame) -> Step:
        try:
            welcome = decode_control(frame, ("node",))
        except PeerProtocolError as e:
            return self.fail(str(e))
        me = self._identity
        peer = self._expected
        assert peer is not None
        if welcome["node"] != peer:
            return self.fail("reached %s instead of %s" % (welcome["node"], peer))
        if me.secret is not None:
            expected = handshake_proof(me.secret, ACCEPTING_SIDE, me.cluster, me.name, peer,
                                       self._nonce, self._peer_nonce)
            if self.state != AUTH_SENT or not proofs_match(expected, welcome.get("proof")):
                return self.fail("peer %s did not prove it knows peer_secret" % peer)
        admin = welcome.get("admin")
        features = welcome.get("features")
        features = tuple(features.split(",")) if isinstance(features, str) and features else ()
        return self._decide(Ready(peer, None, admin if isinstance(admin, str) else None, features))

    def _on_reject(self, frame: Frame) -> Step:
        try:
            rejection = decode_control(frame, ("reason",))
        except PeerProtocolError as e:
            return self.fail(str(e))
        return self._decide(RejectedByPeer(rejection["reason"]))

    # -- helpers ---------------------------------------------------------------

    def _decide(self, decision: Decision, *send: Frame) -> Step:
        self.state = DONE
        return Step(send, decision)

    def _control(self, frame_type: int, body: Dict[str, Any]) -> Frame:
        return Frame(frame_type, 0, 0, self._identity.name, encode_control(body))


#: Which frames each state accepts, and what handles them.
Handshake._TABLE = {
    # accepting side
    AWAIT_HELLO: {HELLO: Handshake._on_hello},
    CHALLENGED: {AUTH: Handshake._on_auth},
    # connecting side
    HELLO_SENT: {
        CHALLENGE: Handshake._on_challenge,
        WELCOME: Handshake._on_welcome,
        REJECT: Handshake._on_reject,
    },
    AUTH_SENT: {WELCOME: Handshake._on_welcome, REJECT: Handshake._on_reject},
    DONE: {},
}
