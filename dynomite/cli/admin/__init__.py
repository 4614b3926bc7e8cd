# -*- test-case-name: tests.integration.test_admin_cli -*-
"""
``dynomite-admin``: operate a running cluster through its nodes' admin APIs.

The command is split along the line its design already drew: the pure parts
are plain functions on plain data, tested without HTTP, and one class does
I/O.

- :mod:`~dynomite.cli.admin.client`: :class:`~dynomite.cli.admin.client.AdminClient`
  (HTTP with urllib), :class:`~dynomite.cli.admin.client.AdminError`, admin
  addresses, and asking many nodes at once;
- :mod:`~dynomite.cli.admin.views`: pure functions turning /cluster_describe
  and /info documents into rows, tables and text;
- :mod:`~dynomite.cli.admin.commands`: one ``cmd_*`` function per command,
  ``(args, client) -> Result``, so tests can hand it a fake client;
- :mod:`~dynomite.cli.admin.main`: the arguments and the console script
  (``dynomite-admin = dynomite.cli.admin.main:main``).

The CLI sits at the top of the package: it may import the launcher, config
and placement, and nothing imports it.
"""
