"""
The datastore layer: the node's connections to its local Redis.

The data path: one pipelined raw-RESP connection with in-order matching
(`protocol`), kept up by a reconnecting link (`link`), and the pool of them
with ejection and timeouts (`pool`); and the control-plane view of that
Redis (`monitor`).

Layer 3, with peers and replication.  May import: layers 1 and 2 (wire,
config, stats, runtime; commands, placement, consistency); not peers or
replication.
"""
