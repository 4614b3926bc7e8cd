"""Integration tests: real redis-server and node processes on 127.0.0.x loopback addresses with ephemeral ports and temp dirs."""
