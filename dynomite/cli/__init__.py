"""
The operator's command lines: ``dynomite-cluster``
(:mod:`~dynomite.cli.cluster`, a local cluster from a topology file) and
``dynomite-admin`` (:mod:`dynomite.cli.admin`, a running cluster through
its nodes' admin APIs).

Owns: arguments, output for people and JSON, exit statuses.

May import: :mod:`dynomite.launcher`, :mod:`dynomite.config` and the pure
placement math (:mod:`dynomite.placement`); it talks to nodes only over
HTTP. Nothing imports it: it is the top layer.
"""
