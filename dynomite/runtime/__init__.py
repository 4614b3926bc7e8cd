"""
The runtime layer: process-wide reactor tweaks a running node installs.

Write coalescing per reactor turn (`batching`), the lean epoll turn
(`fastpoll`), live log levels (`logs`), the reconnect state machine and
backoff every outbound link shares (`reconnect`), and the engine of the
explicit state machines (`machine`).  Every Twisted private API they
need is behind `twisted_private`, with a test that fails loudly when a
Twisted release changes one.

Layer 1, the lowest, with wire, config and stats.  May import: the standard
library, Twisted, and the other lowest-layer modules; nothing above
(`tests.unit.test_layers` checks every import).
"""
