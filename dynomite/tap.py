# -*- test-case-name: tests.unit.test_plugin -*-
"""
``twistd dynomite``: command-line options and the service maker.

Options are validated in `Options.postOptions`, so a bad configuration file
stops twistd before it daemonizes, with one line naming the file, the key
and the reason, and exit status 1 (TLS certificate files included: they are
read here too).  ``--check-config`` (Dynomite's ``-t``)
validates and exits.
"""

from __future__ import annotations

import sys

from twisted.python import usage

from dynomite.commands.acl import load as load_acl
from dynomite.config.model import ConfigError, NodeConfig
from dynomite.runtime.tls import NodeTLS


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run one dynomite node: a Redis-speaking Dynamo layer in front of a local redis-server."
    optParameters = [
        ["config", "c", "dynomite.yml", "Dynomite YAML configuration file."],
    ]
    optFlags = [
        ["check-config", "t", "Validate the configuration file and exit."],
    ]

    def postOptions(self) -> None:
        try:
            self.node_config = NodeConfig.from_yaml(self["config"])
            NodeTLS.from_config(self.node_config)   # certificate files: readable, matching, not expired
            load_acl(self.node_config)   # ACL rules need the command table: checked here
        except ConfigError as e:
            sys.stderr.write("dynomite: configuration error: %s\n" % (e,))
            sys.stderr.flush()
            raise SystemExit(1)
        if self["check-config"]:
            sys.stdout.write("%s: configuration OK\n" % (self["config"],))
            sys.stdout.flush()
            raise SystemExit(0)


def makeService(options: Options):
    from twisted.internet import reactor

    from dynomite.runtime import batching

    from dynomite.runtime import fastpoll
    from dynomite.service import NodeService

    batching.per_reactor_turn(reactor)
    fastpoll.install(reactor)
    return NodeService(options.node_config, reactor)
