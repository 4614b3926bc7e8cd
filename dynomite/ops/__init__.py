"""
The ops layer: what operators see of a running node.

The admin HTTP API (`admin`) and the Prometheus metrics (`metrics`), which
read a node through the narrow, read-only view of `status` and change it
through `dynomite.node.control.INodeControl`, both handed to them by the
service that builds them.

Layer 5.  May import: layers 1 to 4 (everything up to node); not service or
tap, which import ops to build the admin site and the metrics registry.
"""
