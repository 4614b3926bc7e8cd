# -*- test-case-name: tests.unit.test_gossip -*-
"""
Gossip rounds over the node's peer links, and what the view learns.

`Gossiper` owns this node's `dynomite.peers.gossip.ClusterView` and drives
the exchange of `dynomite.peers.gossip.GossipExchange` over the links:

- every ``gos_interval`` (every `FAST_INTERVAL` while the view changed in
  the last `FAST_PERIOD` seconds, and at start) a round sends a SYN to up to
  `FANOUT` random peers whose link is UP and whose WELCOME listed the
  ``gossip`` feature; a link that comes UP gets a SYN at once;
- whatever a peer sends is answered on the connection it came by;
- a node saying HELLO that the topology does not know yet is admitted
  (`admit`) when its handshake carries its entry and that entry does not
  clash with this node's view or topology (another node of its rack owning
  one of its tokens): refused clearly otherwise, and counted; once its
  handshake completes its entry joins the view (`learn`);
- when the view's members, places or tokens change, ``listeners`` hear
  ``(seeds, gone)``: a seed per member (this node excepted) and the names
  marked LEFT; the node applies them as a seed list
  (`dynomite.node.control.NodeControl.apply_gossip`).

Links are duck-typed: ``gossips`` (an UP connection takes GOSSIP frames)
and ``gossip(payload)``; a connection that receives a GOSSIP frame hands it
to `received` with itself, and answers by ``send_gossip(payload)``.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple, Union

from twisted.logger import Logger

from dynomite.config.model import NodeConfig, Seed
from dynomite.config.vocabulary import NORMAL
from dynomite.peers.gossip import BadGossip, ClusterView, Entry, GossipExchange, decode_message

__all__ = ["Gossiper", "FANOUT", "FAST_INTERVAL", "FAST_PERIOD", "GOSSIP_EVENTS"]

#: Peers a round talks to.
FANOUT = 3
#: Seconds between rounds while the view changed recently.
FAST_INTERVAL = 1.0
#: How long after a change rounds stay fast.
FAST_PERIOD = 10.0
#: What `Gossiper.counts` counts: rounds started, messages received,
#: entries learned, joins refused, malformed messages ignored.
GOSSIP_EVENTS = ("rounds", "messages", "learned", "refused", "bad_messages")


class Gossiper:
    """
    See the module docstring.  ``links`` is the node's dict of `PeerLink`
    by name (changed in place by reloads); ``topology()`` the current
    `Topology`; ``clock`` gives "now" for messages that arrive (rounds take
    ``now``); ``rng`` chooses the peers of a round.
    """

    log = Logger()

    def __init__(self, own: Entry, links: Dict[str, Any], topology: Callable[[], Any], clock,
                 interval: float, rng: Optional[random.Random] = None) -> None:
        self.view = ClusterView(own)
        self._exchange = GossipExchange(self.view)
        self._links = links
        self._topology = topology
        self._clock = clock
        self.interval = interval
        self.fast_interval = min(FAST_INTERVAL, interval)
        self._rng = rng if rng is not None else random.Random()
        self.counts: Dict[str, int] = dict.fromkeys(GOSSIP_EVENTS, 0)
        #: clock seconds of the last round (None: none yet) and the peers it reached
        self.last_round: Optional[float] = None
        self.last_peers: Tuple[str, ...] = ()
        self.listeners: List[Callable[[Tuple[Seed, ...], FrozenSet[str]], None]] = []
        # a starting node knows little: it gossips fast
        self._changed_at = clock.seconds()
        self._next_round = clock.seconds()
        self._logged: Set[Tuple[str, str]] = set()

    @classmethod
    def from_config(cls, config: NodeConfig, name: str, links: Dict[str, Any], topology: Callable[[], Any],
                    clock, rng: Optional[random.Random] = None, status: str = NORMAL,
                    tokens: Optional[Tuple[int, ...]] = None) -> "Gossiper":
        """
        This node's gossiper: its entry from ``config`` (or ``status`` and
        ``tokens``: `dynomite.scaleout`), its generation the clock's
        milliseconds now.
        """
        tokens = config.tokens if tokens is None else tokens
        own = Entry(name, name, config.datacenter, config.rack, tuple(sorted(set(tokens))), status,
                    int(clock.seconds() * 1000), 1)
        return cls(own, links, topology, clock, config.gos_interval, rng)

    def set_own(self, **fields: Any) -> Entry:
        """
        Change this node's own entry (``status``, ``tokens``: scale-out); the
        change spreads from the next round, which comes fast, and the node's
        listeners hear it at once.
        """
        own = self.view.own
        new = self.view.update_own(**fields)
        self.log.info("gossip: this node is now {status} with {n} tokens", status=new.status, n=len(new.tokens))
        self._changed([(own, new)])
        return new

    def stamp_of(self, name: str) -> Optional[Tuple[int, int]]:
        """The stamp of node ``name``'s entry in this view (what heartbeats tell it), or None."""
        entry = self.view.entries.get(name)
        return entry.stamp if entry is not None else None

    def previous_own(self) -> Optional[Entry]:
        """
        The newest entry of this node's name heard from a peer (a previous
        run's, which this one refuted), or None: a node restarted with
        ``bootstrap`` learns from it that it was a member already.
        """
        return self.view.refuted

    # -- the handshake ------------------------------------------------------------

    def hello_entry(self) -> Dict[str, Any]:
        """This node's entry, as its HELLO carries it."""
        return self.view.own.to_json()

    def admit(self, name: str, datacenter: str, rack: str, body: Any) -> Union[bool, str]:
        """
        Whether a node saying HELLO with entry ``body`` may connect: True,
        or the reason it is refused (a node the topology knows is checked
        the same way: its place must not have changed).
        """
        try:
            entry = Entry.from_json(body)
        except BadGossip as e:
            return self._refuse(name, "gossip: %s" % e)
        if (entry.name, entry.datacenter, entry.rack) != (name, datacenter, rack):
            return self._refuse(name, "gossip: the entry of %s does not match its HELLO" % name)
        held = self.view.entries.get(name)
        if held is not None and not held.member and held.stamp >= entry.stamp:
            return self._refuse(name, "gossip: node %s was removed from the cluster" % name)
        if not entry.member:
            return self._refuse(name, "gossip: node %s says it has left" % name)
        topology = self._topology()
        known = topology.node(name)
        if known is not None and (known.datacenter, known.rack) != (datacenter, rack):
            return self._refuse(name, "gossip: node %s is known in %s/%s, not %s/%s" % (
                name, known.datacenter, known.rack, datacenter, rack))
        why = self.view.clash(entry)
        if why is None:
            mine = set(entry.tokens)
            for node in topology.nodes:
                if node.name != name and (node.datacenter, node.rack) == (datacenter, rack):
                    shared = mine.intersection(node.tokens)
                    if shared:
                        why = "token %d in %s/%s is owned by %s" % (min(shared), datacenter, rack, node.name)
                        break
        if why is not None:
            return self._refuse(name, "gossip: node %s refused: %s" % (name, why))
        return True

    def _refuse(self, name: str, reason: str) -> str:
        self.counts["refused"] += 1
        if self._first_time(name, reason):
            self.log.warn("refused peer {peer}: {reason}", peer=name, reason=reason)
        return reason

    def _first_time(self, peer: str, reason: str) -> bool:
        """Whether (peer, reason) is new: logged once, within a bounded memory (HELLOs are unauthenticated)."""
        if (peer, reason) in self._logged:
            return False
        if len(self._logged) >= 1024:
            self._logged.clear()
        self._logged.add((peer, reason))
        return True

    def learn(self, body: Any) -> None:
        """A peer's handshake completed carrying its entry: the view takes it."""
        try:
            entry = Entry.from_json(body)
        except BadGossip:
            self.counts["bad_messages"] += 1
            return
        self._accepted(self.view.merge([entry]))

    # -- rounds ------------------------------------------------------------------

    def current_interval(self, now: float) -> float:
        """Seconds to the next round: fast while the view changed recently."""
        return self.fast_interval if now - self._changed_at < FAST_PERIOD else self.interval

    def tick(self, now: float) -> None:
        """Periodic (every `fast_interval`): start a round when one is due."""
        if now >= self._next_round:
            self.round(now)

    def round(self, now: float) -> List[str]:
        """Send a SYN to up to `FANOUT` random gossiping peers; returns their names."""
        peers = sorted(name for name, link in self._links.items() if link.gossips)
        chosen = self._rng.sample(peers, min(FANOUT, len(peers)))
        if chosen:
            syn = self._exchange.syn()
            for name in chosen:
                self._links[name].gossip(syn)
        self.counts["rounds"] += 1
        self.last_round = now
        self.last_peers = tuple(sorted(chosen))
        self._next_round = now + self.current_interval(now)
        return chosen

    def peer_up(self, link: Any) -> None:
        """A link came UP: gossip with it at once (a joining node learns the cluster from its seed)."""
        if link.gossips:
            link.gossip(self._exchange.syn())

    def received(self, connection: Any, payload: bytes) -> None:
        """A GOSSIP frame arrived on ``connection``: merge it, answer on the same connection."""
        self.counts["messages"] += 1
        try:
            message = decode_message(payload)
        except BadGossip as e:
            self.counts["bad_messages"] += 1
            peer = getattr(connection, "peer_name", None) or "?"
            if self._first_time(peer, str(e)):
                self.log.warn("ignored gossip from {peer}: {reason}", peer=peer, reason=str(e))
            return
        reply, accepted = self._exchange.receive(message)
        if reply is not None:
            connection.send_gossip(reply)
        self._accepted(accepted)

    # -- operators -------------------------------------------------------------

    def remove(self, name: str) -> None:
        """An operator removes node ``name`` for good (LEFT); KeyError if unknown, ValueError for this node."""
        gone = self.view.remove(name)
        self.log.info("node {peer} marked LEFT", peer=name)
        self._changed([(None, gone)])

    # -- what the view learned -----------------------------------------------------

    def seeds(self) -> Tuple[Tuple[Seed, ...], FrozenSet[str]]:
        """
        The view as a seed list: a seed per member but this node, and the
        names marked LEFT.  Two members owning one token of one rack (two
        nodes admitted at once by different seeds) cannot both be applied:
        the node the topology already has keeps it, else the older
        generation (then the smaller name); the other is left out, logged,
        until an operator removes one of them.
        """
        view = self.view
        topology = self._topology()
        claimed: Dict[Tuple[str, str, int], str] = {}
        seeds: List[Seed] = []
        members = sorted(view.members(), key=lambda e: (
            e.name != view.name, topology.node(e.name) is None, e.generation, e.name))
        for e in members:
            if not e.tokens:
                continue   # JOINING, its tokens not chosen yet: no place on any ring
            places = [(e.datacenter, e.rack, t) for t in e.tokens]
            owner = next((claimed[p] for p in places if p in claimed), None)
            if owner is not None:
                if self._first_time(e.name, "clash"):
                    self.log.warn("gossip: node {peer} is left out: it shares a token of {dc}/{rack} with {owner}",
                                  peer=e.name, dc=e.datacenter, rack=e.rack, owner=owner)
                continue
            claimed.update((p, e.name) for p in places)
            if e.name != view.name:
                seeds.append(e.seed())
        return tuple(seeds), frozenset(view.gone())

    def _accepted(self, accepted: List[Tuple[Optional[Entry], Entry]]) -> None:
        if not accepted:
            return
        self.counts["learned"] += len(accepted)
        changed = [(old, new) for old, new in accepted if old is None or not old.same_place(new)]
        if changed:
            self._changed(changed)

    def _changed(self, changed: List[Tuple[Optional[Entry], Entry]]) -> None:
        now = self._clock.seconds()
        self._changed_at = now
        self._next_round = min(self._next_round, now + self.fast_interval)
        for old, new in changed:
            if old is None:
                self.log.info("gossip: learned node {peer} ({dc}/{rack})", peer=new.name,
                              dc=new.datacenter, rack=new.rack)
        seeds, gone = self.seeds()
        for listener in self.listeners:
            try:
                listener(seeds, gone)
            except Exception:
                self.log.failure("gossip listener failed")

    # -- status ------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """The /info ``gossip`` section."""
        return {
            "enabled": True,
            "view_version": self.view.version,
            "last_round": self.last_round,
            "last_round_peers": list(self.last_peers),
            "interval": self.interval,
            "peers": sorted(name for name, link in self._links.items() if link.gossips),
            "entries": {
                name: {"dc": e.datacenter, "rack": e.rack, "tokens": list(e.tokens), "status": e.status,
                       "generation": e.generation, "version": e.version}
                for name, e in sorted(self.view.entries.items())
            },
            "counts": dict(self.counts),
        }
