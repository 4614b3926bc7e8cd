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

import time
from typing import Dict, List

from twisted.logger import Logger

from dynomite.config.model import ConfigError, NodeConfig
from dynomite.config.vocabulary import CONSISTENCY_LEVELS, SETTABLE_STATES
from dynomite.placement.topology import Topology
from dynomite.runtime import logs

__all__ = ["NodeControl", "RESTART_KEYS"]

# Keys whose change needs a restart: they define the node's identity, its
# listeners and its hint logs.
RESTART_KEYS = (
    "pool_name", "listen", "dyn_listen", "stats_listen", "datastore", "datacenter", "rack",
    "tokens", "hash_tag", "datastore_connections", "local_peer_connections", "remote_peer_connections",
    "data_dir", "hints_fsync", "hint_window", "hints_max_bytes", "hint_segment_bytes", "hint_replay_rate",
)


class NodeControl:
    """
    The run-time changes of one node.  ``is_running()`` says whether the
    node's service runs (links added by a reload start at once then).
    """

    log = Logger()

    def __init__(self, parts, is_running=lambda: True) -> None:
        self._parts = parts
        self._is_running = is_running

    # -- state and settings ----------------------------------------------------

    def set_state(self, state: str) -> str:
        """Dynomite's settable node states: NORMAL, STANDBY, WRITES_ONLY, RESUMING."""
        if state not in SETTABLE_STATES:
            raise ValueError("state must be one of %s, got %r" % (", ".join(SETTABLE_STATES), state))
        self._parts.membership.set_state(state)
        return self._parts.membership.state

    def set_consistency(self, kind: str, level: str) -> Dict[str, str]:
        """The node's default level for ``kind`` ("read" or "write") requests."""
        if kind not in ("read", "write") or level not in CONSISTENCY_LEVELS:
            raise ValueError("expected read|write and one of %s" % ", ".join(CONSISTENCY_LEVELS))
        settings = self._parts.settings
        if kind == "read":
            settings.read_consistency = level
        else:
            settings.write_consistency = level
        return {"read_consistency": settings.read_consistency,
                "write_consistency": settings.write_consistency}

    def set_timeout_factor(self, factor: int) -> int:
        """Scale the datastore and peer timeouts (Dynomite's timeout factor, 1-10)."""
        self._parts.set_timeout_factor(factor)
        return factor

    def set_log_level(self, verbosity: int) -> str:
        """Dynomite's log verbosity 0-11; returns the level name it maps to."""
        self._parts.settings.log_level = verbosity
        return logs.set_verbosity(verbosity)

    # -- peers and hints ---------------------------------------------------------

    def peer_names(self) -> List[str]:
        return sorted(self._parts.links)

    def peer(self, action: str, name: str) -> str:
        """``up`` (connect), ``down`` (disconnect) or ``reset`` the link to ``name``; its state after."""
        link = self._parts.links[name]
        {"up": link.start, "down": link.stop, "reset": link.reset}[action]()
        return link.state

    def hint_targets(self) -> List[str]:
        return sorted(self._parts.outboxes)

    def hints(self, action: str, target: str) -> None:
        """``pause``, ``resume`` or ``truncate`` the backlog of writes for ``target``."""
        outbox = self._parts.outboxes[target]
        {"pause": outbox.pause, "resume": outbox.resume, "truncate": outbox.truncate}[action]()

    # -- reload --------------------------------------------------------------------

    def reload(self) -> bool:
        """
        Re-read the configuration file (SIGHUP).  Consistency, timeouts and
        seeds change in place; a change that needs a restart, or an invalid
        file, is refused with a log line and the running configuration kept.
        """
        parts = self._parts
        metrics = parts.metrics
        try:
            new = NodeConfig.from_yaml(parts.config.source)
            fixed = [key for key in RESTART_KEYS if getattr(new, key) != getattr(parts.config, key)]
            if fixed:
                raise ConfigError(new.source, fixed[0], "changing it needs a restart")
            topology = Topology.from_config(new)
        except ConfigError as e:
            metrics.reloads["failure"] += 1
            self.log.error("configuration reload refused, keeping the running one: {error}", error=str(e))
            return False
        parts.reconfigure(new, topology, self._is_running())
        self.set_log_level(new.log_level)
        metrics.reloads["success"] += 1
        metrics.last_reload_success = time.time()
        self.log.info("configuration reloaded from {source}", source=new.source)
        return True
