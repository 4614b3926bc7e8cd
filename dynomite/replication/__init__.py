"""
The replication layer: writes that must reach a target later.

The targets a request can go to from this node, the local Redis, a peer
node or a remote datacenter (`targets`); one ordered outbox of writes per
target (`outbox`); and the durable hint logs that hold them while the
target is away (`hints`).

Layer 3, with datastore and peers.  May import: layers 1 and 2 (wire,
config, stats, runtime; commands, placement, consistency), datastore and
peers.
"""
