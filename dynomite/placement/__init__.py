"""
The placement layer: which nodes hold a key.

Key hashing with hash tags (`hashing`), token rings that wrap around
(`ring`), the cluster map as this node sees it (`topology`), the routing
of a request to a plan of targets (`router`) and the cutting of pipelined
requests into runs (`pipelines`).  Pure functions and objects;
nothing here sends anything.

Layer 2, with commands and consistency.  May import: layer 1 (wire, config,
stats, runtime) and commands; not consistency (of the layer-2 subpackages,
only later ones import earlier ones: commands, placement, consistency).
"""
