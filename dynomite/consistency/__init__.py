"""
The consistency layer: deciding a reply from the replicas' replies.

Consistency levels and the reconciliation of replica replies into one
(`quorum`), how replicas' replies are compared (`compare`), and runs of
pipelined requests that travel and are decided together (`runs`).  Pure
objects; no transport, no clock.

Layer 2, with commands and placement.  May import: layer 1 (wire, config,
stats, runtime), commands and placement.
"""
