# -*- test-case-name: tests.unit.test_scaleout_cli -*-
"""
``dynomite-admin decommission``: a node leaves its rack while the cluster
serves, followed to the end.

The node leaving is the one ``--node`` points at, or the NODE named (as
``status`` lists it, or by its admin address).  This command asks it
through ``/decommission`` (`dynomite.scaleout.manager.ScaleOut.decommission`:
it says LEAVING, its ranges are copied to the nodes of its rack that take
them over, then it says LEFT), polls ``/scaleout`` and draws the copy's
progress bar on standard error as ``repair`` does, then prints what moved.
A refusal (the last node of its rack, another move under way in the rack)
is the node's own words; a leave that fails exits 1 with its reason.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, Mapping

from dynomite.cli.admin.client import AdminClient, AdminError
from dynomite.cli.admin.repair import POLL, ProgressLine
from dynomite.cli.admin.views import Result, copy_progress, describe_nodes, find_node, move_progress

__all__ = ["add_parser", "cmd_decommission"]

#: phases after which a leave is over
ENDED = ("done", "failed")


def add_parser(sub, common) -> None:
    p = sub.add_parser("decommission", parents=[common],
                       help="a node leaves its rack: its ranges and keys move to the rack's other nodes")
    p.add_argument("target_node", metavar="NODE", nargs="?", default=None,
                   help='the node to remove ("host:port" as status lists it, or its admin address);'
                        " default: the node --node points at")
    p.add_argument("--no-wait", action="store_true", help="start it and return")


def _admin_of(args: argparse.Namespace, client: AdminClient) -> str:
    """The admin address of the node that is to leave."""
    if args.target_node is None:
        return args.node
    try:
        describe = client.get(args.node, "/cluster_describe")
    except AdminError as e:
        raise AdminError(f"cannot read the cluster from {e}") from None
    node = find_node(describe_nodes(describe, args.node), args.target_node)
    if node["admin"] is None:
        raise AdminError(f"node {node['name']}: {node['why']}")
    return node["admin"]


def cmd_decommission(args: argparse.Namespace, client: AdminClient) -> Result:
    admin = _admin_of(args, client)
    started = client.get(admin, "/decommission", True)
    mine = started.get("started")
    if args.no_wait:
        return Result(started, "%s is leaving: %s" % (admin, move_progress(started)))
    line = ProgressLine(args)
    while True:
        time.sleep(POLL)
        doc = client.get(admin, "/scaleout")
        if doc.get("operation") != "leave" or doc.get("started") != mine:
            raise AdminError("%s: the leave started at %s is no longer this node's move (did it restart?)"
                             % (admin, mine))
        if doc.get("phase") in ENDED:
            break
        copy = doc.get("copy") or {}
        line.draw(str(doc.get("phase")), copy_progress(copy) if doc.get("phase") == "copying" and copy
                  else str(doc.get("reason") or ""))
    line.end()
    if doc["phase"] == "failed":
        return Result(doc, _report(admin, doc), "%s: decommission failed: %s" % (admin, doc.get("reason")))
    return Result(doc, _report(admin, doc))


def _report(admin: str, doc: Mapping[str, Any]) -> str:
    """What a finished leave did: how long, keys scanned and copied, to whom, and what is left to do."""
    copy: Dict[str, Any] = doc.get("copy") or {}
    took = (doc.get("finished") or doc.get("started") or 0) - (doc.get("started") or 0)
    takers = sorted({str(r[3]) for r in doc.get("ranges") or () if len(r) == 4})
    if doc.get("phase") == "failed":
        head = "%s: the leave failed after %.1fs" % (admin, took)
    else:
        head = "%s left in %.1fs" % (admin, took)
    text = "%s: %d keys scanned, %d copied to %s" % (head, copy.get("scanned", 0), copy.get("copied", 0),
                                                      ", ".join(takers) or "nobody")
    if copy.get("copy_errors"):
        text += " (%d copy errors, tried again; last: %s)" % (copy["copy_errors"], copy.get("last_copy_error"))
    if doc.get("phase") == "done" and doc.get("reason"):
        text += "\n" + str(doc["reason"])
    return text
