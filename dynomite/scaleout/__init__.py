"""
Scale-out: nodes join a rack and leave it while the cluster serves.

A joining node is *pending* for the ranges it will own (gossip says
JOINING: `dynomite.placement.topology`): leaders send it the writes of
those ranges and copy it every key there in the key's order
(`dynomite.node.leader.Leader.copy`).  `moves` is the pure part (which
ranges move, from whom to whom; tokens for ``tokens: auto``), `copier` the
run that lists a moving range's keys and has their leaders copy them, and
`manager` a node's joins and leaves from start to cut-over and cleanup.

Its own layer beside repair (whose replica script it uses), between
replication and node.
"""
