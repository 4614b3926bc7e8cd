"""
dynomite-py: a Dynamo layer for Redis, built on Twisted.

Redis clients connect to any node; each node fronts one local redis-server,
knows the cluster, and places and replicates keys on a 32-bit token ring.
"""

__version__ = "0.1.0"
