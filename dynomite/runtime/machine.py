# -*- test-case-name: tests.unit.test_reconnect -*-
"""
The engine of the project's explicit state machines.

A machine (an outbox, a reconnecting connection) keeps its whole
transition table in one place, ``{(state, event): (next state, action
name or None)}``, and its current state in ``state``; `fire` applies one
event.  Events a state does not list are ignored.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

__all__ = ["fire"]


def fire(machine, table: Dict[Tuple[str, str], Tuple[str, Optional[str]]], event: str) -> Optional[str]:
    """
    Move ``machine`` along ``table`` on ``event`` and run the action the
    entry names (a method of ``machine``, run after the state changed);
    return the state it was in, or None if the event was ignored.
    """
    entry = table.get((machine.state, event))
    if entry is None:
        return None
    old = machine.state
    machine.state, action = entry
    if action is not None:
        getattr(machine, action)()
    return old
