# -*- test-case-name: tests.integration.test_admin_cli -*-
"""
``dynomite-admin``: operate a running cluster through its nodes' admin APIs.

    dynomite-admin [--node HOST:PORT] [--token TOKEN] [--json] [--timeout S] COMMAND

    status [--interval S]                  every node: DC, rack, state, ops/s, p99, hint backlog,
                                           datastore, peers UP/total; a node joining or leaving
                                           says its phase and progress
    ring                                   token ranges per rack, with each node's share of the ring;
                                           nodes JOINING or LEAVING, the ranges moving and progress
    hash KEY [--hash-tag XY]               the key's hash and its owner in every rack of every DC
    consistency                            read/write consistency of every node
    consistency read|write LEVEL           set it on every node (mutating: needs the admin token)
    hints NODE|all pause|resume|truncate [--target T|all]
                                           act on hinted handoff on one node or all of them
    repair [--dry-run] [--source DC/RACK] [--all-dcs] [--rate KEYS/S] [--no-wait]
                                           anti-entropy repair run by the node asked, with a
                                           progress bar; prints the differences found
    decommission [NODE] [--no-wait]        the node (default: the one --node points at) leaves its
                                           rack; its keys move to the rack's other nodes, with a
                                           progress bar (mutating: needs the admin token)

``--node`` is any node's admin address (``stats_listen``; default
127.0.0.11:22222, the first node of the demo cluster, or $DYNOMITE_ADMIN);
``--token`` defaults to $DYNOMITE_ADMIN_TOKEN. The command reads
/cluster_describe from that node, which names every node of the cluster
with its admin address (learned over the peer handshake; unknown while the
peer link is DOWN), and then talks to every node directly. The global
options may also follow the command (``dynomite-admin status --json``).

Output is an aligned table for people, or with ``--json`` one JSON document
with the same data. Exit status: 0 on success; 1 when a node could not be
reached or refused (one line on stderr; ``status`` still prints its table,
with the node as DOWN and the reason); 2 on usage errors.

This module holds the arguments and the console script; the commands are
in :mod:`dynomite.cli.admin.commands` (see :mod:`dynomite.cli.admin` for
the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Mapping, Optional, Sequence

from dynomite.cli.admin.client import DEFAULT_TIMEOUT, ENV_TOKEN, AdminClient, AdminError, join_address, parse_address
from dynomite.cli.admin import repair, scaleout
from dynomite.cli.admin.commands import COMMANDS
from dynomite.config.vocabulary import CONSISTENCY_LEVELS as LEVELS

__all__ = ["build_parser", "main", "parse_args"]

PROG = "dynomite-admin"
DEFAULT_NODE = "127.0.0.11:22222"
DEFAULT_INTERVAL = 1.0
ENV_NODE = "DYNOMITE_ADMIN"
HINT_ACTIONS = ("pause", "resume", "truncate")
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


# -- arguments ------------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600, got {text!r}")
    return value


def _hash_tag(text: str) -> bytes:
    tag = os.fsencode(text)
    if len(tag) != 2:
        raise argparse.ArgumentTypeError(f"expected exactly two characters such as '{{}}', got {text!r}")
    return tag


def _level(text: str) -> str:
    if text.upper() not in LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(l.lower() for l in LEVELS)}, got {text!r}")
    return text.upper()


def build_parser() -> argparse.ArgumentParser:
    """The command line; the global options are accepted before and after the command."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--node", metavar="HOST:PORT",
                        help=f"any node's admin address (stats_listen); default ${ENV_NODE} or {DEFAULT_NODE}")
    common.add_argument("--token", metavar="TOKEN",
                        help=f"the cluster's admin_token, for commands that change something; default ${ENV_TOKEN}")
    common.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    common.add_argument("--timeout", metavar="S", type=_positive_seconds,
                        help=f"seconds to wait for each node (default {DEFAULT_TIMEOUT:g})")
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="Operate a dynomite-py cluster through its nodes' admin HTTP APIs.",
        epilog="Exit status: 0 success, 1 a node could not be reached or refused, 2 usage error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("status", parents=[common], help="every node: state, ops/s, p99, hint backlog, peers")
    p.add_argument("--interval", metavar="S", type=_interval, default=DEFAULT_INTERVAL,
                   help="seconds between the two /info samples that give ops/s (0: one sample, no ops/s)")
    sub.add_parser("ring", parents=[common], help="token ranges per rack and each node's share")
    p = sub.add_parser("hash", parents=[common], help="a key's hash and its owner in every rack")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--hash-tag", metavar="XY", type=_hash_tag, default=None,
                   help="the cluster's hash_tag, e.g. '{}' (the admin API does not report it)")
    p = sub.add_parser("consistency", parents=[common], help="show, or set on every node, the consistency levels")
    p.add_argument("which", nargs="?", choices=("read", "write"), metavar="read|write")
    p.add_argument("level", nargs="?", type=_level, metavar="LEVEL",
                   help="|".join(l.lower() for l in LEVELS))
    p = sub.add_parser("hints", parents=[common], help="pause, resume or truncate hinted handoff")
    p.add_argument("target_node", metavar="NODE", help='a node name ("host:port" as status lists it), or all')
    p.add_argument("action", choices=HINT_ACTIONS)
    p.add_argument("--target", metavar="T", default="all", help="the hint target (default all)")
    repair.add_parser(sub, common)
    scaleout.add_parser(sub, common)
    return parser


def parse_args(argv: Optional[Sequence[str]], environ: Mapping[str, str] = os.environ) -> argparse.Namespace:
    """Parse and complete the arguments (defaults, environment); argparse exits with 2 on errors."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.node = getattr(args, "node", None) or environ.get(ENV_NODE) or DEFAULT_NODE
    args.token = getattr(args, "token", None) or environ.get(ENV_TOKEN) or None
    args.json = getattr(args, "json", False)
    args.timeout = getattr(args, "timeout", DEFAULT_TIMEOUT)
    try:
        args.node = join_address(*parse_address(args.node))
    except ValueError as e:
        parser.error(f"--node: {e}")
    if args.command == "consistency" and (args.which is None) != (args.level is None):
        parser.error("consistency: give both read|write and LEVEL, or neither")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``dynomite-admin`` console script; returns the exit status."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse: usage errors (2) and --help (0)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    client = AdminClient(timeout=args.timeout, token=args.token)
    try:
        result = COMMANDS[args.command](args, client)
    except AdminError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    if args.json:
        sys.stdout.write(json.dumps(result.doc, indent=2) + "\n")
    else:
        sys.stdout.write(result.text + "\n")
    sys.stdout.flush()
    if result.error:
        print(f"{PROG}: {result.error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
