"""Unit tests: one module at a time, no sockets and no reactor; time is a Clock, transports are StringTransports."""
