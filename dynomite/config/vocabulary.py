# -*- test-case-name: tests.unit.test_config -*-
"""
The words the cluster speaks, each defined once.

Consistency levels, node states, hint-log fsync policies, the peer TLS
options and the hash range appear in the configuration file, on the admin
API, in INFO, in metrics labels and in the code that acts on them.  They are
defined here, at the bottom of the package, and every other module imports
them; nothing else spells them out.
"""

from __future__ import annotations

__all__ = [
    "DC_ONE", "DC_QUORUM", "DC_SAFE_QUORUM", "DC_EACH_SAFE_QUORUM", "CONSISTENCY_LEVELS",
    "NORMAL", "STANDBY", "WRITES_ONLY", "RESUMING", "DOWN", "NODE_STATES", "SETTABLE_STATES",
    "JOINING", "LEAVING", "LEFT", "RING_STATUSES",
    "FSYNC_POLICIES", "CONFLICT_RULES", "SECURE_SERVER_OPTIONS", "MAX_TOKEN", "RING_SIZE",
]

# -- consistency levels (Dynomite's names) ------------------------------------

DC_ONE = "DC_ONE"
DC_QUORUM = "DC_QUORUM"
DC_SAFE_QUORUM = "DC_SAFE_QUORUM"
DC_EACH_SAFE_QUORUM = "DC_EACH_SAFE_QUORUM"
#: Every level, weakest first.
CONSISTENCY_LEVELS = (DC_ONE, DC_QUORUM, DC_SAFE_QUORUM, DC_EACH_SAFE_QUORUM)

# -- node states ----------------------------------------------------------------

NORMAL = "NORMAL"
STANDBY = "STANDBY"
WRITES_ONLY = "WRITES_ONLY"
RESUMING = "RESUMING"
DOWN = "DOWN"
#: Every state a node can be seen in: its own (the first four) or, for a
#: peer, DOWN as well.
NODE_STATES = (NORMAL, STANDBY, WRITES_ONLY, RESUMING, DOWN)
#: The states an operator may put a node in (admin ``/state/<name>``).
SETTABLE_STATES = (NORMAL, STANDBY, WRITES_ONLY, RESUMING)

# -- ring statuses (gossip: `dynomite.peers.gossip`) ---------------------------------

#: A node's place on the token ring, as gossip spreads it.  NORMAL: it owns
#: its tokens.  JOINING: it will own them once it holds their data; until
#: then it takes the writes of those ranges as a *pending* replica
#: (`dynomite.placement.topology`) and serves no reads of them.  LEAVING: it
#: still owns its tokens while the nodes that will own its ranges take them
#: over.  LEFT: gone for good.
JOINING = "JOINING"
LEAVING = "LEAVING"
LEFT = "LEFT"
RING_STATUSES = (NORMAL, JOINING, LEAVING, LEFT)

# -- hint log -------------------------------------------------------------------

#: When the hint log calls fsync: every append, once a second, never (the OS decides).
FSYNC_POLICIES = ("always", "everysec", "no")

#: How writes of one key from two datacenters at once are settled (``datacenter_conflicts``):
#: in each datacenter's order of arrival, or the last writer wins (`dynomite.commands.lww`).
ARRIVAL, LAST_WRITER_WINS = "arrival", "last_writer_wins"
CONFLICT_RULES = (ARRIVAL, LAST_WRITER_WINS)

# -- peer links -------------------------------------------------------------------

#: Dynomite's ``secure_server_option``: which peer links are encrypted.
SECURE_SERVER_OPTIONS = ("none", "rack", "datacenter", "all")

# -- the token ring ---------------------------------------------------------------

#: The largest token and the largest key hash: the ring is ``0..MAX_TOKEN``.
MAX_TOKEN = 2**32 - 1
#: How many points the ring has.
RING_SIZE = MAX_TOKEN + 1
