# -*- test-case-name: tests.unit.test_hints -*-
"""
Durable hint logs: the writes one target (a peer node or a remote
datacenter) has not received yet, kept on local disk until it has.

`HintLog` (in `log`) is the queue the outboxes use; the package re-exports
the names its users need.
"""

from __future__ import annotations

from dynomite.replication.hints.log import (
    DROP_REASONS, FSYNC_POLICIES, RECORD_OVERHEAD, Hint, HintLog, HintLogError, safe_name, target_of,
)

__all__ = [
    "DROP_REASONS", "FSYNC_POLICIES", "RECORD_OVERHEAD", "Hint", "HintLog", "HintLogError",
    "safe_name", "target_of",
]
