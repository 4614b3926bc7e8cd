# -*- test-case-name: tests.unit.test_hints,tests.unit.test_hint_segments,tests.unit.test_hint_records -*-
"""
Durable hint logs: the writes one target (a peer node or a remote
datacenter) has not received yet, kept on local disk until it has.

Three modules, each using only the ones before it:

- `records`: the on-disk format and its pure codec (records, directory names);
- `segments`: the segment files, their repair at open, the read cursor and
  the fsync policy;
- `log`: `HintLog`, the queue the outboxes use (append, peek, ack, expire,
  tick, truncate, close), with the ack file, the lock and drop accounting.

The package re-exports what its users need; it imports only from
`dynomite.config` and Twisted.
"""

from __future__ import annotations

from dynomite.replication.hints.log import DROP_REASONS, HintLog, HintLogError
from dynomite.replication.hints.records import RECORD_OVERHEAD, Hint, safe_name, target_of

__all__ = [
    "DROP_REASONS", "RECORD_OVERHEAD", "Hint", "HintLog", "HintLogError", "safe_name", "target_of",
]
