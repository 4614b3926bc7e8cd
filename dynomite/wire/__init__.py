"""
The wire layer: Sans-IO framing and encoding of every byte stream.

RESP requests and replies (`resp`, `requests`, `replies`), the node-to-node
frames (`peer_frames`) and the request in flight that every hop carries
(`inflight`): bytes in, frames out, no transport and no clock.

Layer 1, the lowest, with config, stats and runtime.  May import: the
standard library, hiredis, and the other lowest-layer modules; nothing above
(`tests.unit.test_layers` checks every import).
"""
