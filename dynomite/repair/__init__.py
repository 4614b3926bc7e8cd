"""
Repair: replicas that lost or never got data are healed by the cluster.

Anti-entropy repair compares the replicas of every ring segment cell by
cell and repairs the keys that differ (`run`, over the pure comparison in
`compare` and the replica-side script in `script`); warm-up refills a node
whose Redis came back empty, or a replacement started with ``bootstrap``
(`warmup`); `manager` owns the running repair, the last result, the
background passes and read repair for the node.

Its own layer, between replication (the targets it sends to) and node
(which builds it and hands it quorum reads that disagreed).
"""
