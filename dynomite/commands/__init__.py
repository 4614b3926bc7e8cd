"""
The commands layer: what the node knows about each Redis 7.0 command.

The facts generated from Redis itself (`redis_commands`), the node's route
for each command (`table`), where a request's keys are (`keys`), how each
write reaches the replicas, as sent or with its relative times made
absolute (`determinism`), and the COMMAND INFO/DOCS replies
(`introspection`).  Pure data and functions.

Layer 2, with placement and consistency.  May import: layer 1 (wire, config,
stats, runtime); not placement or consistency (of the layer-2 subpackages,
only later ones import earlier ones: commands, placement, consistency).
"""
