"""
A node's configuration, and the words the cluster speaks.

Owns: the Dynomite YAML a node starts from, parsed once into the frozen
:class:`~dynomite.config.model.NodeConfig` (:mod:`~dynomite.config.model`,
with its key table in :mod:`~dynomite.config.keys` and its small value
types in :mod:`~dynomite.config.values`); the strict YAML reading and error
wording every configuration file shares (:mod:`~dynomite.config.yamlio`);
and the vocabulary of levels, states, policies and the ring size
(:mod:`~dynomite.config.vocabulary`).

May import: nothing else of :mod:`dynomite`; it is at the bottom, and every
layer above imports it.
"""
