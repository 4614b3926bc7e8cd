"""
A whole cluster on this machine: the layer ``dynomite-cluster``, the
integration tests and the benchmark start clusters with.

Owns: the topology file (:mod:`~dynomite.launcher.topology_file`), the
cluster plan and its state file (:mod:`~dynomite.launcher.cluster`),
redis-server and node processes handled by PID
(:mod:`~dynomite.launcher.processes`), what the host says about ports and
processes (:mod:`~dynomite.launcher.host`), and the one table and
hash-range format every command prints (:mod:`~dynomite.launcher.tables`).

May import: :mod:`dynomite.config` only. It runs nodes as processes
(``twistd -n dynomite``) and never imports them; :mod:`dynomite.cli` and
the benchmark import it, never the reverse.
"""
