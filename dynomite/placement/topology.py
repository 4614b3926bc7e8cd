# -*- test-case-name: tests.unit.test_topology -*-
"""
The cluster as this node sees it: datacenters, racks, nodes, and the replica
set of a hash.

Every rack holds a full copy of the keyspace split by tokens, so a hash has
one owner per rack (:mod:`dynomite.placement.ring`) and the replicas of a key in a
datacenter are those owners, one per rack. :class:`Topology` is built once
from the node's configuration (:meth:`Topology.from_config`: this node plus
``dyn_seeds``), checks that it is coherent, and precomputes everything the
request path asks so that each question costs one binary search:

- :meth:`~Topology.local_replicas`: where a key lives in this datacenter,
  this node's rack first (DC_ONE reads go there; writes go to all of them);
- :meth:`~Topology.dc_replicas`: the same for any datacenter (what a remote
  entry node fans out to);
- :meth:`~Topology.replica_key`: a token naming the whole replica set, to
  group the keys of MGET/MSET that can travel together;
- :meth:`~Topology.entry_candidates`: which node of a remote datacenter this
  node forwards its writes to, with fallbacks.

Scale-out (`dynomite.scaleout`): a node gossip calls JOINING owns nothing
yet; the tokens it will own make it a *pending* replica of their ranges
(:meth:`~Topology.pending`), which receives writes but serves no reads, as
Cassandra's pending ranges.  A LEAVING node still owns its tokens, and the
nodes that will own its ranges once it is gone are pending for them.  The
rings without the JOINING nodes are the *current* ones, the rings without
the LEAVING ones the *future* ones; :meth:`~Topology.moving_ranges` is where
they differ.

A topology is immutable. Liveness (UP/DOWN, node states) is membership's
business and is kept out of here, so that placement never depends on who
happens to be reachable.

Nodes are named by their peer address (``"host:port"``, ``"[v6]:port"``), the
same text other nodes list in their ``dyn_seeds``: for this node
`NodeConfig.peer_address` (``dyn_advertise``, or the seed entry naming it
when ``dyn_listen`` is a wildcard, or ``dyn_listen``).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from dynomite.config.model import Address, ConfigError, NodeConfig
from dynomite.config.vocabulary import JOINING, LEAVING, LEFT, MAX_TOKEN, NORMAL
from dynomite.placement.ring import Ring, owner_table

__all__ = ["NodeInfo", "Topology"]

#: the owner table of a datacenter with no rack holding data
_NOTHING: Tuple[List[int], List[tuple]] = ([], [()])


@dataclass(frozen=True)
class NodeInfo:
    """
    One node of the cluster: its name, place, peer address and tokens.

    Equality compares every field; the hash is the name's alone (names are
    unique in a topology), so nodes are cheap dict keys when requests are
    grouped by target.
    """

    name: str
    datacenter: str
    rack: str
    address: Address
    tokens: Tuple[int, ...]
    is_local: bool = False
    #: its place on the ring (`dynomite.config.vocabulary.RING_STATUSES`)
    status: str = NORMAL
    #: its gossip generation (0 without gossip): of two moves in a rack the older goes first
    generation: int = 0

    @property
    def moves(self) -> bool:
        """Whether it asks to move ranges: JOINING with its tokens, or LEAVING."""
        return self.status == LEAVING or (self.status == JOINING and bool(self.tokens))

    @property
    def owns_now(self) -> bool:
        """Whether its tokens are on the current rings (it is neither JOINING nor LEFT)."""
        return self.status not in (JOINING, LEFT) and bool(self.tokens)

    @property
    def owns_later(self) -> bool:
        """Whether its tokens are on the future rings (it is neither LEAVING nor LEFT)."""
        return self.status not in (LEAVING, LEFT) and bool(self.tokens)

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return f"{self.name} ({self.datacenter}/{self.rack})"


class Topology:
    """
    Datacenters, racks and nodes, with per-rack token rings.

    Built from every node of the cluster, exactly one of them local; raises
    ``ValueError`` if names repeat, a node has no tokens, two nodes of one
    rack share a token, a token is outside ``0..2**32-1``, or there is not
    exactly one local node.
    :meth:`from_config` makes the same checks and reports them as
    :class:`~dynomite.config.ConfigError`.

    Attributes (read-only by convention):

    - ``local``: this node's :class:`NodeInfo`;
    - ``nodes``: every node, this one included, sorted by (dc, rack, name);
    - ``datacenters``: datacenter names, sorted;
    - ``local_racks``: the racks of this node's datacenter, this node's rack
      first, then the others sorted; :meth:`local_replicas` follows it;
    - ``remote_datacenters``: the other datacenters, sorted.

    Methods taking a datacenter or rack name raise ``KeyError`` for one the
    cluster does not have.
    """

    def __init__(self, nodes: Iterable[NodeInfo]):
        ordered = tuple(sorted(nodes, key=lambda n: (n.datacenter, n.rack, n.name)))
        problem = _check_nodes(ordered)
        if problem is not None:
            raise ValueError(problem[1])
        (local,) = [n for n in ordered if n.is_local]
        self.local: NodeInfo = local
        self.nodes: Tuple[NodeInfo, ...] = ordered
        self._by_name: Dict[str, NodeInfo] = {n.name: n for n in ordered}

        rack_nodes: Dict[Tuple[str, str], List[NodeInfo]] = {}
        for node in ordered:
            rack_nodes.setdefault((node.datacenter, node.rack), []).append(node)
        #: every node of each rack, joining ones included (links, status)
        self._all_rack_nodes: Dict[Tuple[str, str], Tuple[NodeInfo, ...]] = {
            place: tuple(members) for place, members in rack_nodes.items()
        }
        #: the nodes on each rack's current ring
        self._rack_nodes: Dict[Tuple[str, str], Tuple[NodeInfo, ...]] = {
            place: tuple(n for n in members if n.owns_now) for place, members in rack_nodes.items()
        }
        # a rack with no node owning tokens yet (only a node joining it,
        # before it has heard of the others) has no ring and holds nothing
        self._rings: Dict[Tuple[str, str], Ring[NodeInfo]] = {
            place: Ring((token, n) for n in members for token in n.tokens)
            for place, members in self._rack_nodes.items() if members
        }
        # the future rings, where they differ from the current ones (a rack
        # whose every node is LEAVING keeps its current ring: nobody could
        # take its ranges over)
        # One move per rack at a time: of the nodes asking to move, the one
        # with the oldest (generation, name) moves; the others wait, as if
        # they did not ask yet (`dynomite.scaleout.moves.busy_rack`).
        self._future: Dict[Tuple[str, str], Ring[NodeInfo]] = {}
        for place, members in rack_nodes.items():
            movers = [n for n in members if n.moves]
            if not movers or place not in self._rings:
                continue
            first = min(movers, key=lambda n: (n.generation, n.name))
            later = [n for n in self._rack_nodes[place] if n is not first or n.owns_later]
            if first.status == JOINING:
                later.append(first)
            if later and later != list(self._rack_nodes[place]):
                self._future[place] = Ring((token, n) for n in later for token in n.tokens)
        self.datacenters: Tuple[str, ...] = tuple(sorted({dc for dc, _ in self._rings}))
        self._racks: Dict[str, Tuple[str, ...]] = {
            dc: tuple(sorted(rack for d, rack in self._rings if d == dc))
            for dc in self.datacenters
        }

        here = local.datacenter
        self.local_racks: Tuple[str, ...] = tuple(
            r for r in self._racks.get(here, ()) if r == local.rack) + tuple(
            r for r in self._racks.get(here, ()) if r != local.rack
        )
        self.remote_datacenters: Tuple[str, ...] = tuple(
            dc for dc in self.datacenters if dc != here
        )

        self._local_bounds, self._local_answers = owner_table(
            [self._rings[here, rack] for rack in self.local_racks]
        )
        self._pending_bounds, self._pending_answers = self._pending_table(here)
        self._dc_tables = {
            dc: owner_table([self._rings[dc, rack] for rack in racks])
            for dc, racks in self._racks.items()
        }
        # this node's datacenter holds nothing yet while its only node here joins
        self._dc_tables.setdefault(here, _NOTHING)
        # The replica key is the tuple of owner names over every rack of
        # every DC: equal exactly when the replica sets are equal, shared
        # between segments (so usually compared by identity), and hashed from
        # strings whose hashes Python caches.
        # Pending replicas are part of it (the future rings of the racks
        # that change), so that a segment never straddles a moving range.
        self._key_bounds, self._key_answers = owner_table([
            Ring((token, n.name) for token, n in ring.entries())
            for dc in self.datacenters
            for rack in self._racks[dc]
            for ring in (self._rings[dc, rack], self._future.get((dc, rack)))
            if ring is not None
        ])
        self._entries: Dict[str, Tuple[NodeInfo, ...]] = {
            dc: self._entry_candidates(dc) for dc in self.datacenters
        }

    # -- structure -----------------------------------------------------------

    def racks(self, dc: str) -> Tuple[str, ...]:
        """The racks of datacenter ``dc`` that hold data (a node owns tokens there), sorted."""
        racks = self._racks.get(dc)
        if racks is None:
            if not any(n.datacenter == dc for n in self.nodes):
                raise KeyError(dc)
            return ()
        return racks

    def ring(self, dc: str, rack: str) -> Ring[NodeInfo]:
        """The token ring of one rack."""
        return self._rings[dc, rack]

    def nodes_in_rack(self, dc: str, rack: str) -> Tuple[NodeInfo, ...]:
        """The nodes on one rack's current ring (not those JOINING), sorted by name."""
        return self._rack_nodes[dc, rack]

    def joining_in_rack(self, dc: str, rack: str) -> Tuple[NodeInfo, ...]:
        """The nodes of one rack that are JOINING or LEAVING, sorted by name."""
        return tuple(n for n in self._all_rack_nodes[dc, rack] if n.status in (JOINING, LEAVING))

    # -- scale-out -------------------------------------------------------------

    @property
    def moving(self) -> bool:
        """Whether any rack's ring is changing (a node JOINING or LEAVING with tokens)."""
        return bool(self._future)

    def future_ring(self, dc: str, rack: str) -> Ring[NodeInfo]:
        """One rack's ring once its moves are done (the current one when nothing moves)."""
        return self._future.get((dc, rack)) or self._rings[dc, rack]

    def pending(self, position: int) -> Tuple[NodeInfo, ...]:
        """
        The pending replicas of ring ``position`` in this datacenter: in each
        rack whose owner of it is changing, the future owner.  Usually ``()``.
        """
        return self._pending_answers[bisect_left(self._pending_bounds, position)]

    def moving_ranges(self, dc: str, rack: str) -> List[Tuple[int, int, NodeInfo, NodeInfo]]:
        """
        The inclusive ``(start, end, current owner, future owner)`` hash
        ranges of one rack whose owner is changing, ascending.
        """
        future = self._future.get((dc, rack))
        if future is None:
            return []
        bounds, answers = owner_table([self._rings[dc, rack], future])
        out: List[Tuple[int, int, NodeInfo, NodeInfo]] = []
        start = 0
        for i, bound in enumerate(bounds + [MAX_TOKEN]):
            now, later = answers[i]
            if now is not later and start <= bound:
                if out and out[-1][1] == start - 1 and out[-1][2:] == (now, later):
                    out[-1] = (out[-1][0], bound, now, later)
                else:
                    out.append((start, bound, now, later))
            start = bound + 1
        return out

    def _pending_table(self, dc: str) -> Tuple[List[int], List[Tuple[NodeInfo, ...]]]:
        racks = [rack for rack in self._racks.get(dc, ()) if (dc, rack) in self._future]
        if not racks:
            return [], [()]
        rings = [ring for rack in racks for ring in (self._rings[dc, rack], self._future[dc, rack])]
        bounds, answers = owner_table(rings)
        interned: Dict[Tuple[NodeInfo, ...], Tuple[NodeInfo, ...]] = {}
        pending = []
        for answer in answers:
            moving = tuple(later for now, later in zip(answer[::2], answer[1::2]) if later is not now)
            pending.append(interned.setdefault(moving, moving))
        return bounds, pending

    def node(self, name: str) -> Optional[NodeInfo]:
        """The node called ``name`` (its peer address), or ``None``."""
        return self._by_name.get(name)

    # -- placement (the request path) ----------------------------------------

    def local_replicas(self, position: int) -> Tuple[NodeInfo, ...]:
        """
        The owner of ring position ``position`` in each rack of this datacenter, in
        ``local_racks`` order: this node's rack first.
        """
        return self._local_answers[bisect_left(self._local_bounds, position)]

    def dc_replicas(self, dc: str, position: int) -> Tuple[NodeInfo, ...]:
        """The owner of ring position ``position`` in each rack of ``dc``, in sorted rack order."""
        bounds, answers = self._dc_tables[dc]
        return answers[bisect_left(bounds, position)]

    def replica_key(self, position: int) -> Tuple[str, ...]:
        """
        A value identifying every replica of ring position ``position``, in every rack of
        every datacenter.

        Two hashes have equal keys exactly when they have the same owner in
        every rack, so keys of a multi-key command whose hashes share a
        replica key can be sent together wherever they go. The value is the
        owners' names, racks ordered by (dc, rack); it is precomputed and
        shared, so the call is one binary search.
        """
        return self._key_answers[bisect_left(self._key_bounds, position)]

    def segments(self) -> Tuple[List[int], List[Tuple[str, ...]]]:
        """
        The ring cut where any rack changes owner: ``(bounds, replica_keys)``,
        with `replica_key` of a ring position ``position`` equal to
        ``replica_keys[bisect_left(bounds, position)]`` (for precomputed routing
        tables, `dynomite.placement.router.PlanTable`).
        """
        return self._key_bounds, self._key_answers

    def entry_candidates(self, dc: str) -> Tuple[NodeInfo, ...]:
        """
        Where to forward a write for datacenter ``dc``: one node per rack of
        ``dc``, best first. Meant for remote datacenters (for this node's own
        datacenter the first candidate is this node).

        The first rack is Dynomite's preselected one (this node's index among
        its datacenter's sorted racks, modulo ``dc``'s rack count); the other
        racks follow in rotation from it (index + 1, + 2, ... wrapping), so
        senders that fail over spread over the remaining racks instead of all
        landing on the first one. Within a rack the node is chosen the same
        way: this node's index among its own rack's nodes (sorted by name),
        modulo that rack's node count. With equally sized racks every node
        of a rack therefore has its own entry node, spreading the cross-DC
        load; the choice depends only on the topology, so it is stable.
        """
        return self._entries[dc]

    def _entry_candidates(self, dc: str) -> Tuple[NodeInfo, ...]:
        local = self.local
        here = sorted({n.rack for n in self.nodes if n.datacenter == local.datacenter})
        rack_index = here.index(local.rack)
        node_index = self._all_rack_nodes[local.datacenter, local.rack].index(local)
        racks = self._racks[dc]
        chosen = []
        for step in range(len(racks)):
            members = self._rack_nodes[dc, racks[(rack_index + step) % len(racks)]]
            chosen.append(members[node_index % len(members)])
        return tuple(chosen)

    # -- building ------------------------------------------------------------

    @staticmethod
    def address_of(config: NodeConfig) -> Address:
        """
        The address that names this node (`NodeConfig.peer_address`; its
        client host with port 0 when it has no peers); ``ConfigError`` when
        it has none.
        """
        source = config.source
        if config.dyn_listen is None:
            if config.dyn_seeds:
                raise ConfigError(source, "dyn_listen", "required when dyn_seeds lists peers")
            return Address(config.client_host, 0)
        peer_address = config.peer_address()
        if peer_address is None:
            raise ConfigError(source, "dyn_advertise",
                              f"dyn_listen {config.dyn_listen} is a wildcard: set dyn_advertise")
        return peer_address

    @classmethod
    def from_config(cls, config: NodeConfig, status: str = NORMAL,
                    tokens: Optional[Tuple[int, ...]] = None, generation: int = 0) -> Topology:
        """
        The cluster described by a node's configuration: this node
        (`NodeConfig.peer_address`, ``datacenter``, ``rack``, ``tokens``) plus
        ``dyn_seeds``.

        Without ``dyn_listen`` the node is alone and is named after its
        client host (``listen``, else ``tls_listen``) with port 0. A seed
        that repeats this node's own entry (same address, dc, rack and
        tokens, in any order) is accepted and merged, so every node of a
        cluster can share one seed list. Problems raise ``ConfigError(config.source, key, reason)`` with
        key ``dyn_seeds`` (a seed listed twice; a seed with this node's
        address but another dc, rack or tokens; two seeds sharing a token in
        one rack), ``tokens`` (this node shares a token with a seed of its
        rack, or owns none) or ``dyn_listen`` (seeds without it).
        ``status``, ``tokens`` and ``generation`` are this node's place on
        the ring when scale-out has changed it (`dynomite.scaleout`):
        JOINING, or the tokens ``tokens: auto`` chose, and since when.
        """
        source = config.source
        address = cls.address_of(config)
        local = NodeInfo(
            name=str(address), datacenter=config.datacenter, rack=config.rack,
            address=address, tokens=tuple(config.tokens if tokens is None else tokens), is_local=True,
            status=status, generation=generation,
        )
        nodes = [local]
        seen: Set[Address] = set()
        for seed in config.dyn_seeds:
            if seed.address in seen:
                raise ConfigError(source, "dyn_seeds", f"seed {seed.address} is listed twice")
            seen.add(seed.address)
            node = NodeInfo(
                name=str(seed.address), datacenter=seed.datacenter, rack=seed.rack,
                address=seed.address, tokens=tuple(seed.tokens), status=seed.status,
                generation=seed.generation,
            )
            if seed.address == address:
                if _place(node) != _place(local):
                    raise ConfigError(
                        source, "dyn_seeds",
                        f"seed {seed.address} contradicts this node's own entry:"
                        f" the seed says {_describe(node)}, this node is {_describe(local)}",
                    )
                continue
            nodes.append(node)
        problem = _check_nodes(nodes)
        if problem is not None:
            raise ConfigError(source, *problem)
        return cls(nodes)

    def __repr__(self) -> str:
        return (
            f"<Topology local={self.local.name} datacenters={len(self.datacenters)}"
            f" nodes={len(self.nodes)}>"
        )


def _place(node: NodeInfo) -> Tuple[str, str, Tuple[int, ...]]:
    return node.datacenter, node.rack, tuple(sorted(node.tokens))


def _describe(node: NodeInfo) -> str:
    tokens = ",".join(str(t) for t in node.tokens)
    return f"{node.datacenter}/{node.rack} tokens {tokens}"


def _check_nodes(nodes: Sequence[NodeInfo]) -> Optional[Tuple[str, str]]:
    """
    The first problem with a set of nodes, as ``(config key, reason)``, or
    ``None``. The key is ``tokens`` when the local node is involved.
    """
    local = [n for n in nodes if n.is_local]
    if len(local) != 1:
        return "dyn_listen", f"expected exactly one local node, got {len(local)}"
    names: Dict[str, NodeInfo] = {}
    owners: Dict[Tuple[str, str, int], NodeInfo] = {}
    for node in nodes:
        key = "tokens" if node.is_local else "dyn_seeds"
        if node.name in names:
            return key, f"node {node.name} is listed twice"
        names[node.name] = node
        if not node.tokens and node.status != JOINING:
            return key, f"node {node.name} owns no tokens"
        for token in node.tokens:
            if not 0 <= token <= MAX_TOKEN:
                return key, f"node {node.name}: token {token} is out of range 0..{MAX_TOKEN}"
            place = (node.datacenter, node.rack, token)
            other = owners.get(place)
            if other is node:
                return key, f"node {node.name} lists token {token} twice"
            if other is not None:
                if other.is_local:
                    key = "tokens"
                return key, (
                    f"nodes {other.name} and {node.name} both own token {token}"
                    f" in {node.datacenter}/{node.rack}"
                )
            owners[place] = node
    return None
