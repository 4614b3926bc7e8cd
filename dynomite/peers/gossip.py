# -*- test-case-name: tests.unit.test_gossip -*-
"""
The cluster view that gossip spreads (``enable_gossip: true``): pure core.

Each node keeps one `Entry` per node it has heard of: its name (the peer
address its peers know it by), the address to dial, datacenter, rack,
tokens, status, and a stamp ``(generation, version)``.  The generation is
the owner's start time (milliseconds), so the entries of a restarted node
beat those of its previous run; the version is bumped by the owner at every
change of its own entry.  Merge rule: per node, the higher stamp wins.
Only a node changes its own entry; the one exception is `ClusterView.remove`,
an operator's word that a node is gone for good (status LEFT), which a node
still alive refutes by re-stamping its own entry above it.  An entry marked
LEFT stays in the view as a tombstone, so an older copy heard later does
not bring the node back; a node that is merely DOWN keeps its entry (DOWN
is the failure detector's business, `dynomite.peers.membership`).

The exchange is the classic three-way digest exchange, one JSON object per
GOSSIP frame (`dynomite.wire.peer_frames.GOSSIP`)::

    SYN   {"d": {name: [generation, version], ...}}                 -->
    ACK   {"e": [entries the sender lacks or has older], "w": [names wanted]}  <--
    ACK2  {"e": [the entries asked for]}                            -->

`GossipExchange.receive` answers any such object the same way (merge its
entries; answer its digests with newer entries and wants, and its wants
with entries), so the exchange ends by itself: a reply never carries
digests.  Digests rather than whole views: a quiet round of a few hundred
nodes costs a few kilobytes instead of every node's tokens, and a view
that changed moves only the changed entries.

`dynomite.peers.gossiper` drives rounds over the node's peer links and
applies what the view learns; this module does no I/O and keeps no clock.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from dynomite.config.values import Address, Seed
from dynomite.config.vocabulary import JOINING, LEAVING, LEFT, RING_STATUSES

__all__ = [
    "Entry", "ClusterView", "GossipExchange", "BadGossip", "LEFT", "JOINING", "LEAVING", "STATUSES",
    "decode_message", "encode_message",
]

#: The statuses an entry may have (`dynomite.config.vocabulary.RING_STATUSES`):
#: NORMAL, JOINING and LEAVING while it moves ranges (`dynomite.scaleout`),
#: LEFT once it is gone for good.  A JOINING entry may have no tokens yet
#: (it waits for its rack, or has ``tokens: auto`` still to choose).
STATUSES = RING_STATUSES

#: Most entries, digests or wants one message may carry (a cluster has at
#: most a few hundred nodes); beyond it the message is refused.
MAX_ITEMS = 4096
_MAX_TOKENS = 4096


class BadGossip(ValueError):
    """A gossip message or entry that is not well formed; it is ignored (and counted)."""


class Entry(NamedTuple):
    """One node as the cluster view knows it; see the module docstring."""

    name: str
    address: str
    datacenter: str
    rack: str
    tokens: Tuple[int, ...]
    status: str
    generation: int
    version: int

    @property
    def stamp(self) -> Tuple[int, int]:
        return (self.generation, self.version)

    @property
    def member(self) -> bool:
        """Whether the node belongs to the cluster (it has not LEFT)."""
        return self.status != LEFT

    def same_place(self, other: "Entry") -> bool:
        """Everything but the stamp is equal: nothing the topology sees changed."""
        return self[:6] == other[:6]

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "addr": self.address, "dc": self.datacenter, "rack": self.rack,
                "tokens": list(self.tokens), "status": self.status, "gen": self.generation,
                "ver": self.version}

    @classmethod
    def from_json(cls, body: Any) -> "Entry":
        """An entry from its JSON object; `BadGossip` if any field is missing or wrong."""
        if not isinstance(body, dict):
            raise BadGossip("gossip entry is not an object")
        texts = []
        for field in ("name", "addr", "dc", "rack", "status"):
            value = body.get(field)
            if not isinstance(value, str) or not value or not value.isprintable() or len(value) > 255:
                raise BadGossip("gossip entry field %r is not a non-empty printable string" % field)
            texts.append(value)
        name, address, dc, rack, status = texts
        if status not in STATUSES:
            raise BadGossip("gossip entry of %s has unknown status %r" % (name, status))
        tokens = body.get("tokens")
        if (not isinstance(tokens, list) or (not tokens and status != JOINING) or len(tokens) > _MAX_TOKENS
                or not all(_is_int(t) and 0 <= t < 2 ** 32 for t in tokens)):
            raise BadGossip("gossip entry of %s has bad tokens" % name)
        gen, ver = body.get("gen"), body.get("ver")
        if not (_is_int(gen) and _is_int(ver) and gen >= 0 and ver >= 0):
            raise BadGossip("gossip entry of %s has a bad generation or version" % name)
        try:
            Address.parse(address, allow_zero_port=False)
        except ValueError:
            raise BadGossip("gossip entry of %s has a bad address %r" % (name, address)) from None
        return cls(name, address, dc, rack, tuple(sorted(set(tokens))), status, gen, ver)

    def seed(self) -> Seed:
        """This entry as a ``dyn_seeds`` line says it (host:port:rack:dc:tokens)."""
        return Seed(Address.parse(self.address, allow_zero_port=False), self.rack, self.datacenter, self.tokens,
                    self.status, self.generation)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ClusterView:
    """
    Every node this node has heard of, by name, with the merge rule.

    ``version`` counts the changes of the view (any entry accepted, own
    changes included): /info shows it, and equal versions on one node mean
    nothing was learned in between.
    """

    def __init__(self, own: Entry) -> None:
        self.name = own.name
        self.entries: Dict[str, Entry] = {own.name: own}
        self.version = 1
        #: the newest copy of this node's own entry a peer held (refuted by `merge`), or None
        self.refuted: Optional[Entry] = None

    @property
    def own(self) -> Entry:
        return self.entries[self.name]

    def update_own(self, **fields: Any) -> Entry:
        """Change this node's own entry (status, tokens...): its version goes up."""
        own = self.own
        new = own._replace(version=own.version + 1, **fields)
        self.entries[self.name] = new
        self.version += 1
        return new

    def merge(self, entries: Iterable[Entry]) -> List[Tuple[Optional[Entry], Entry]]:
        """
        Take what a peer said: per node, the higher stamp wins.  Returns the
        (previous, new) pairs accepted, previous None for a node first heard of.
        A copy of this node's own entry with a higher stamp (an operator's
        removal, or a previous run's entry with a clock gone back) is
        refuted: the own entry is re-stamped above it, content unchanged.
        """
        accepted: List[Tuple[Optional[Entry], Entry]] = []
        for entry in entries:
            current = self.entries.get(entry.name)
            if current is not None and entry.stamp <= current.stamp:
                continue
            if entry.name == self.name:
                assert current is not None
                self.refuted = entry
                self.entries[self.name] = current._replace(
                    generation=max(current.generation, entry.generation), version=entry.version + 1)
                self.version += 1
                continue
            self.entries[entry.name] = entry
            accepted.append((current, entry))
        if accepted:
            self.version += 1
        return accepted

    def remove(self, name: str) -> Entry:
        """
        An operator's word that node ``name`` is gone: its entry becomes a
        LEFT tombstone one version above.  KeyError for a node not in the
        view; ValueError for this node itself.
        """
        if name == self.name:
            raise ValueError("a node cannot remove itself from the view")
        current = self.entries[name]
        gone = current._replace(status=LEFT, version=current.version + 1)
        self.entries[name] = gone
        self.version += 1
        return gone

    def digests(self) -> Dict[str, List[int]]:
        """name -> [generation, version] of every entry (a SYN's body)."""
        return {name: [e.generation, e.version] for name, e in self.entries.items()}

    def newer_than(self, digests: Dict[str, Tuple[int, int]]) -> List[Entry]:
        """The entries the holder of ``digests`` lacks or holds older."""
        out = []
        for name, entry in sorted(self.entries.items()):
            theirs = digests.get(name)
            if theirs is None or tuple(theirs) < entry.stamp:
                out.append(entry)
        return out

    def wanted(self, digests: Dict[str, Tuple[int, int]]) -> List[str]:
        """The names ``digests`` holds newer than this view (or this view lacks)."""
        out = []
        for name, stamp in sorted(digests.items()):
            ours = self.entries.get(name)
            if ours is None or ours.stamp < tuple(stamp):
                out.append(name)
        return out

    def members(self) -> List[Entry]:
        """The entries of nodes that belong to the cluster (not LEFT), this node's own included."""
        return [e for _, e in sorted(self.entries.items()) if e.member]

    def gone(self) -> List[str]:
        """Names of the nodes marked LEFT."""
        return sorted(name for name, e in self.entries.items() if not e.member)

    def clash(self, entry: Entry) -> Optional[str]:
        """Why ``entry`` cannot join the view as it stands (a token of its rack owned by another node), or None."""
        mine = set(entry.tokens)
        for other in self.members():
            if other.name == entry.name or (other.datacenter, other.rack) != (entry.datacenter, entry.rack):
                continue
            shared = mine.intersection(other.tokens)
            if shared:
                return "token %d in %s/%s is owned by %s" % (min(shared), entry.datacenter, entry.rack, other.name)
        return None


# -- messages ------------------------------------------------------------------------


class Message(NamedTuple):
    """One GOSSIP frame's body: digests (None in a reply), entries, names wanted."""

    digests: Optional[Dict[str, Tuple[int, int]]]
    entries: List[Entry]
    wants: List[str]


def encode_message(digests: Optional[Dict[str, List[int]]] = None, entries: Iterable[Entry] = (),
                   wants: Iterable[str] = ()) -> bytes:
    """The JSON payload of a GOSSIP frame (empty parts are left out)."""
    body: Dict[str, Any] = {}
    if digests is not None:
        body["d"] = digests
    listed = [e.to_json() for e in entries]
    if listed:
        body["e"] = listed
    wanted = list(wants)
    if wanted:
        body["w"] = wanted
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode_message(payload: bytes) -> Message:
    """A GOSSIP payload as a `Message`; `BadGossip` if it is not one."""
    try:
        body = json.loads(payload)
    except ValueError:
        raise BadGossip("gossip message is not JSON") from None
    if not isinstance(body, dict):
        raise BadGossip("gossip message is not an object")
    digests = body.get("d")
    if digests is not None:
        if not isinstance(digests, dict) or len(digests) > MAX_ITEMS:
            raise BadGossip("gossip digests are not an object of names")
        for name, stamp in digests.items():
            if (not isinstance(stamp, list) or len(stamp) != 2 or not all(_is_int(n) and n >= 0 for n in stamp)):
                raise BadGossip("gossip digest of %r is not [generation, version]" % name)
        digests = {name: (stamp[0], stamp[1]) for name, stamp in digests.items()}
    entries = body.get("e", [])
    wants = body.get("w", [])
    if not isinstance(entries, list) or len(entries) > MAX_ITEMS:
        raise BadGossip("gossip entries are not a list")
    if not isinstance(wants, list) or len(wants) > MAX_ITEMS or not all(isinstance(w, str) for w in wants):
        raise BadGossip("gossip wants are not a list of names")
    return Message(digests, [Entry.from_json(e) for e in entries], wants)


class GossipExchange:
    """
    One node's side of every exchange: SYNs to start rounds, and the answer
    to whatever a peer sent (see the module docstring).
    """

    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def syn(self) -> bytes:
        """The message that opens a round: this view's digests."""
        return encode_message(self.view.digests())

    def receive(self, message: Message) -> Tuple[Optional[bytes], List[Tuple[Optional[Entry], Entry]]]:
        """
        Merge what ``message`` carries; returns the reply to send back on the
        same connection (None: nothing to say) and the entries accepted.
        """
        view = self.view
        accepted = view.merge(message.entries)
        send: Dict[str, Entry] = {}
        for name in message.wants:
            entry = view.entries.get(name)
            if entry is not None:
                send[name] = entry
        wants: List[str] = []
        if message.digests is not None:
            for entry in view.newer_than(message.digests):
                send[entry.name] = entry
            wants = view.wanted(message.digests)
        if not send and not wants:
            return None, accepted
        return encode_message(None, [send[n] for n in sorted(send)], wants), accepted
