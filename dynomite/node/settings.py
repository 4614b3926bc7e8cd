# -*- test-case-name: tests.unit.test_node -*-
"""
What operators change while a node runs, with one owner.

The consistency levels a node uses when a client has not chosen its own,
the timeout factor and the log level start from the configuration and
change through the admin API or a reload.  Everything that acts on them or
shows them (the coordinator, INFO, /info, metrics) reads this one object,
so what is shown is what is used.
"""

from __future__ import annotations

__all__ = ["LiveSettings"]


class LiveSettings:
    """The live values; `dynomite.node.control.NodeControl` changes them."""

    __slots__ = ("read_consistency", "write_consistency", "timeout_factor", "log_level")

    def __init__(self, config) -> None:
        self.read_consistency: str = config.read_consistency
        self.write_consistency: str = config.write_consistency
        self.timeout_factor: int = 1
        self.log_level: int = config.log_level

    def consistency(self, write: bool) -> str:
        """The node's level for writes or for reads."""
        return self.write_consistency if write else self.read_consistency
