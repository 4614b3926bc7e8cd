"""
The peers layer: this node's links with the other nodes.

One node-to-node connection with its multiplexed requests (`protocol`) and
its handshake as a Sans-IO machine (`handshake`), the links toward each
peer (`link`) and the listener for theirs (`listener`), what the layer
needs from the node above it (`interfaces`), and membership: this node's
state and what its peers say about theirs (`membership`).

Layer 3, with datastore and replication.  May import: layers 1 and 2 (wire,
config, stats, runtime; commands, placement, consistency); not datastore or
replication.
"""
