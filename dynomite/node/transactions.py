# -*- test-case-name: tests.cluster.test_transactions -*-
"""
MULTI, EXEC, DISCARD: transactions on the keys of one leader.

The node keeps a transaction's commands, as Redis does: MULTI answers
``+OK``, each command ``+QUEUED`` once it passed the checks Redis makes
before queuing (known command, arity, authentication, permissions); a
command refused there is answered with its error and marks the transaction,
which EXEC then discards with ``-EXECABORT``.  Commands the node answers
itself or spreads over the cluster (CLIENT, SCAN, FLUSHALL, SUBSCRIBE...)
are refused inside a transaction with Redis's words for commands it does
not allow there; PING and ECHO are queued like data commands.

EXEC sends the transaction where its keys are (`Coordinator.execute_transaction`):

- its keys must share one write plan, i.e. one leader (a hash tag does
  that), else ``-CROSSSLOT`` and the transaction is discarded, as Redis
  Cluster answers keys of several slots;
- a transaction that writes is led like any write, as one run: the leader
  orders it among the keys' other writes and every replica applies it in
  one MULTI/EXEC (`dynomite.replication.applied_once`), so no replica ever
  shows half of it; one with a command that may not run twice (SPOP, a
  script...) runs once on the leader and the others get the state of its
  keys (`dynomite.commands.effects.transaction_effect`);
- one that only reads runs as MULTI/EXEC on the replicas a read of its keys
  goes to, at the connection's read level.

EXEC answers the array of the commands' replies, as Redis.  WATCH and
UNWATCH are not served yet.
"""

from __future__ import annotations

from dynomite.commands import table as commands
from dynomite.node.builtins import builtin

__all__ = ["IMMEDIATE", "NOT_IN_MULTI", "QUEUED", "queue"]

QUEUED = b"+QUEUED\r\n"
#: Redis's words for a command it does not allow inside a transaction.
NOT_IN_MULTI = b"-ERR Command not allowed inside a transaction\r\n"
EXECABORT = b"-EXECABORT Transaction discarded because of previous errors.\r\n"

#: Run at once even inside a transaction (the rest is queued).
IMMEDIATE = frozenset({"exec", "discard", "multi", "watch", "quit", "reset"})

# Commands the node answers itself that a transaction may carry to Redis.
_QUEUEABLE_NODE = frozenset({"ping", "echo"})


def queue(session, cmd, args) -> bytes:
    """Queue a checked command of a transaction; the reply for now."""
    if cmd.route in (commands.KEY, commands.MULTI_KEY) or cmd.name in _QUEUEABLE_NODE:
        session.multi.append((cmd, list(args)))
        return QUEUED
    session.multi_aborted = True
    return NOT_IN_MULTI


@builtin("multi")
def multi(node, client, args):
    session = client.session
    if session.multi is not None:
        return b"-ERR MULTI calls can not be nested\r\n"
    session.multi = []
    session.multi_aborted = False
    return b"+OK\r\n"


@builtin("discard")
def discard(node, client, args):
    session = client.session
    if session.multi is None:
        return b"-ERR DISCARD without MULTI\r\n"
    session.multi = None
    return b"+OK\r\n"


@builtin("exec")
def exec_(node, client, args):
    session = client.session
    queued, aborted = session.multi, session.multi_aborted
    if queued is None:
        return b"-ERR EXEC without MULTI\r\n"
    session.multi = None
    session.multi_aborted = False
    if aborted:
        return EXECABORT
    if not queued:
        return b"*0\r\n"
    node.coordinator.execute_transaction(session, queued, client)
    return None
