# -*- test-case-name: tests.unit.test_control -*-
"""
What operators change on a running node: the admin API's writes and SIGHUP.

`NodeControl` is the one place a running node is changed from outside: its
state, its default consistency levels, its timeout factor and log level,
its peer links and hint backlogs, and its whole configuration (a reload).
The admin API (`dynomite.ops.admin`) calls it; it acts on the node's parts
(`dynomite.node.assembly.NodeParts`) and on the live settings everything
else reads (`dynomite.node.settings`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import FrozenSet, Optional, Tuple

from twisted.logger import Logger
from zope.interface import Interface, implementer

from dynomite.commands import acl as acl_rules
from dynomite.config.model import ConfigError, NodeConfig, Seed
from dynomite.config.vocabulary import CONSISTENCY_LEVELS, SETTABLE_STATES
from dynomite.placement.topology import Topology
from dynomite.repair.run import RepairOptions
from dynomite.runtime import logs

__all__ = ["INodeControl", "NodeControl", "RESTART_KEYS"]

# Keys whose change needs a restart: they define the node's identity, its
# listeners and its hint logs.
RESTART_KEYS = (
    "pool_name", "listen", "dyn_listen", "stats_listen", "datastore", "datacenter", "rack",
    "tokens", "hash_tag", "datastore_connections", "local_peer_connections", "remote_peer_connections",
    "data_dir", "hints_fsync", "datacenter_conflicts", "hint_window", "hints_max_bytes", "hint_segment_bytes", "hint_replay_rate",
    "seed_provider", "gos_interval", "enable_gossip", "dns_seed_name", "dns_seed_server", "florida_url",
    "dns_seed_type", "dns_seed_rack_size",
    "tls_listen", "secure_server_option", "datastore_tls", "datastore_username", "datastore_password",
)


class INodeControl(Interface):
    """
    Every change the admin API may make to a running node.

    Arguments are validated by the caller (the admin API answers 400 or 404
    before calling); an implementation applies them and keeps `NodeStatus`'s
    ``settings`` the one owner of the live values.
    """

    def set_state(state: str) -> None:
        """Put the node in one of ``SETTABLE_STATES``."""

    def set_consistency(kind: str, level: str) -> None:
        """Set the node's ``"read"`` or ``"write"`` consistency to ``level`` (one of CONSISTENCY_LEVELS)."""

    def set_timeout_factor(factor: int) -> None:
        """Scale the datastore and peer timeouts by ``factor`` (1-10)."""

    def set_log_level(verbosity: int) -> str:
        """Set the log verbosity (0-11); returns the name of the resulting log level."""

    def reload() -> bool:
        """Re-read the configuration file (SIGHUP); False when it was refused and the running one kept."""

    def peer_up(name: str) -> None:
        """Start the link to peer ``name``."""

    def peer_down(name: str) -> None:
        """Stop the link to peer ``name``."""

    def peer_reset(name: str) -> None:
        """Drop and reopen the connections to peer ``name``."""

    def pause_hints(target: str) -> None:
        """Hold every write for ``target`` in its hint log; deliver nothing."""

    def resume_hints(target: str) -> None:
        """Replay ``target``'s backlog, then deliver directly again."""

    def truncate_hints(target: str) -> int:
        """Drop ``target``'s pending hints; returns how many."""

    def start_repair(options: RepairOptions) -> None:
        """Start an anti-entropy repair; RepairBusy if one runs, ValueError for a bad option."""

    def cancel_repair() -> bool:
        """Stop the running repair after its current step; False if none runs."""

    def remove_node(name: str) -> None:
        """
        Mark node ``name`` LEFT in the gossiped cluster view (it is gone for
        good; every node drops it).  LookupError when gossip is off or the
        view has no such node; ValueError for this node itself.
        """


@implementer(INodeControl)
class NodeControl:
    """
    The run-time changes of one node.  ``is_running()`` says whether the
    node's service runs (links added by a reload start at once then).
    """

    log = Logger()

    def __init__(self, parts, is_running=lambda: True) -> None:
        self._parts = parts
        self._is_running = is_running
        #: the last seed list a provider gave and this node took (None: none yet)
        self.provided_seeds: Optional[Tuple[Seed, ...]] = None
        #: the seeds of the configuration file as last read (the start of gossip)
        self._file_seeds: Tuple[Seed, ...] = parts.config.dyn_seeds
        #: what gossip last said (`apply_gossip`): seeds of the members, names gone
        self.learned: Optional[Tuple[Tuple[Seed, ...], FrozenSet[str]]] = None

    # -- state and settings ----------------------------------------------------

    def set_state(self, state: str) -> None:
        if state not in SETTABLE_STATES:
            raise ValueError("state must be one of %s, got %r" % (", ".join(SETTABLE_STATES), state))
        self._parts.membership.set_state(state)

    def set_consistency(self, kind: str, level: str) -> None:
        if kind not in ("read", "write") or level not in CONSISTENCY_LEVELS:
            raise ValueError("expected read|write and one of %s" % ", ".join(CONSISTENCY_LEVELS))
        settings = self._parts.settings
        if kind == "read":
            settings.read_consistency = level
        else:
            settings.write_consistency = level

    def set_timeout_factor(self, factor: int) -> None:
        self._parts.set_timeout_factor(factor)

    def set_log_level(self, verbosity: int) -> str:
        """Dynomite's log verbosity 0-11; returns the level name it maps to."""
        self._parts.settings.log_level = verbosity
        return logs.set_verbosity(verbosity)

    # -- peers and hints ---------------------------------------------------------

    def peer_up(self, name: str) -> None:
        self._parts.links[name].start()

    def peer_down(self, name: str) -> None:
        self._parts.links[name].stop()

    def peer_reset(self, name: str) -> None:
        self._parts.links[name].reset()

    def pause_hints(self, target: str) -> None:
        self._parts.outboxes[target].pause()

    def resume_hints(self, target: str) -> None:
        self._parts.outboxes[target].resume()

    def truncate_hints(self, target: str) -> int:
        return self._parts.outboxes[target].truncate()

    # -- reload --------------------------------------------------------------------

    def start_repair(self, options: RepairOptions) -> None:
        self._parts.repairs.start(options)

    def cancel_repair(self) -> bool:
        return self._parts.repairs.cancel()

    def remove_node(self, name: str) -> None:
        gossip = self._parts.gossip
        if gossip is None:
            raise LookupError("gossip is off on this node (enable_gossip)")
        if name not in gossip.view.entries:
            raise LookupError("no node %s in the gossiped view" % name)
        gossip.remove(name)

    def reload(self) -> bool:
        """
        Re-read the configuration file (SIGHUP).  Consistency, timeouts and
        seeds change in place, TLS certificates are read again for new
        connections (`dynomite.runtime.tls.NodeTLS.reload`), and the ACL
        users (``acl_file``, ``users``, ``requirepass``) are read again and
        apply to connected clients too (`dynomite.node.dispatch.Node.set_acl`:
        a client whose user is gone or disabled is closed); a change that
        needs a restart, or an invalid file (a bad certificate or ACL line
        included), is refused with a log line and the running configuration
        kept.
        """
        parts = self._parts
        metrics = parts.metrics
        try:
            new = NodeConfig.from_yaml(parts.config.source)
            fixed = [key for key in RESTART_KEYS if getattr(new, key) != getattr(parts.config, key)]
            if fixed:
                raise ConfigError(new.source, fixed[0], "changing it needs a restart")
            if new.peer_address() != parts.config.peer_address():
                raise ConfigError(new.source, "dyn_advertise",
                                  "this node's name among its peers would change; that needs a restart")
            file_seeds = new.dyn_seeds
            base = self.provided_seeds if self.provided_seeds is not None else file_seeds
            if self.provided_seeds is not None or self.learned is not None:
                new = self._with_seeds(new, self._and_learned(base))
            topology = self._topology(new)
            acl = acl_rules.load(new)
            parts.tls.reload(new)   # certificates: new connections use the files as they are now
        except ConfigError as e:
            metrics.reloads["failure"] += 1
            self.log.error("configuration reload refused, keeping the running one: {error}", error=str(e))
            return False
        parts.reconfigure(new, topology, self._is_running())
        self._file_seeds = file_seeds
        closed = parts.node.set_acl(acl)
        if closed:
            self.log.info("{n} clients closed: their ACL user was removed or disabled", n=closed)
        self.set_log_level(new.log_level)
        metrics.reloads["success"] += 1
        metrics.last_reload_success = time.time()
        self.log.info("configuration reloaded from {source}", source=new.source)
        return True

    def apply_seeds(self, seeds: Tuple[Seed, ...]) -> bool:
        """
        Take the seed list a seed provider gave (`dynomite.peers.seeds`):
        peers added and removed as by `reload`.  A list that contradicts
        this node (its own name with another place, a token clash) is
        refused with a log line, and the current peers kept.
        """
        if not self._apply(self._and_learned(tuple(seeds)), "seed list"):
            return False
        self.provided_seeds = tuple(seeds)
        return True

    def apply_gossip(self, seeds: Tuple[Seed, ...], gone: FrozenSet[str]) -> bool:
        """
        Take what gossip learned (`dynomite.peers.gossiper.Gossiper`'s
        listener): the members' seeds are added to the configured ones
        (``dyn_seeds``, or the provider's list), replacing a configured seed
        of the same address; the nodes ``gone`` (LEFT) are removed.  Refused
        as `apply_seeds` is when it contradicts this node.
        """
        learned = self.learned
        self.learned = (tuple(seeds), frozenset(gone))
        base = self.provided_seeds if self.provided_seeds is not None else self._file_seeds
        if not self._apply(self._and_learned(base), "gossip view"):
            self.learned = learned
            return False
        return True

    def _and_learned(self, base: Tuple[Seed, ...]) -> Tuple[Seed, ...]:
        """``base`` with what gossip learned: its members added (theirs win), the nodes gone left out."""
        if self.learned is None:
            return base
        seeds, gone = self.learned
        merged = {str(seed.address): seed for seed in base if str(seed.address) not in gone}
        for seed in seeds:
            merged[str(seed.address)] = seed
        return tuple(merged[name] for name in sorted(merged))

    def _topology(self, config: NodeConfig) -> Topology:
        """The topology ``config`` describes, with this node's place on the ring as gossip holds it."""
        gossip = self._parts.gossip
        if gossip is None:
            return Topology.from_config(config)
        own = gossip.view.own
        return Topology.from_config(config, own.status, own.tokens, own.generation)

    def _apply(self, seeds: Tuple[Seed, ...], what: str) -> bool:
        """Peers added and removed as by `reload`; False (logged) when ``seeds`` contradict this node."""
        parts = self._parts
        try:
            new = self._with_seeds(parts.config, seeds)
            topology = self._topology(new)
        except ConfigError as e:
            self.log.error("{what} refused, keeping the current peers: {error}", what=what, error=str(e))
            return False
        before = set(parts.links)
        parts.reconfigure(new, topology, self._is_running())
        if set(parts.links) != before:
            self.log.info("{what} applied: {n} peers", what=what, n=len(parts.links))
        return True

    def _with_seeds(self, config: NodeConfig, seeds: Tuple[Seed, ...]) -> NodeConfig:
        """``config`` with ``seeds``, this node keeping the name it runs under."""
        name = self._parts.config.peer_address()
        new = dataclasses.replace(config, dyn_seeds=tuple(seeds))
        if new.peer_address() != name:
            new = dataclasses.replace(new, advertise=name)
        return new
