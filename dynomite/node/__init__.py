"""
The node layer: what happens to each client request.

The client-facing protocol (`client`) and per-connection state (`session`),
dispatch of each request (`dispatch`), the commands the node answers itself
(`builtins`), the coordinator that carries out routing plans
(`coordinator`), the replica side of requests from other nodes (`replica`),
whole-keyspace commands (`keyspace`, `scan`), shared sinks (`sinks`), the
settings operators change at run time (`settings`, `control`), and the one
factory that builds and wires a node's parts (`assembly`).

Layer 4.  May import: layers 1 to 3 (wire, config, stats, runtime; commands,
placement, consistency; datastore, peers, replication); not ops, service,
tap or anything above.
"""
