# -*- test-case-name: tests.integration.test_admin_cli -*-
"""
The commands of ``dynomite-admin``: ``status``, ``ring``, ``hash``,
``consistency`` and ``hints`` (``repair`` and ``decommission``, which
follow a long operation, have their own modules).

Each is a function ``(args, client) -> Result`` (:data:`COMMANDS`): it reads
/cluster_describe from the node asked, talks to every node it names through
the :class:`~dynomite.cli.admin.client.AdminClient` it is handed (a fake in
tests), and returns the JSON document, the table for people and one error
line, built by :mod:`dynomite.cli.admin.views`.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from dynomite.cli.admin.client import AdminClient, AdminError, parallel
from dynomite.cli.admin.repair import cmd_repair
from dynomite.cli.admin.scaleout import cmd_decommission
from dynomite.cli.admin.views import (Result, describe_nodes, find_node, hash_owners, move_progress, moving_ranges,
                                      ring_table, status_row, summary)
from dynomite.config.vocabulary import JOINING, LEAVING, NORMAL
from dynomite.launcher.tables import format_ranges, format_table

__all__ = ["COMMANDS", "Result", "cmd_consistency", "cmd_decommission", "cmd_hash", "cmd_hints", "cmd_ring",
           "cmd_status"]


def _describe(client: AdminClient, node: str) -> Dict[str, Any]:
    try:
        doc = client.get(node, "/cluster_describe")
    except AdminError as e:
        raise AdminError(f"cannot read the cluster from {e}") from None
    if not isinstance(doc, dict):
        raise AdminError(f"{node}/cluster_describe: unexpected answer")
    return doc


def cmd_status(args: argparse.Namespace, client: AdminClient) -> Result:
    nodes = describe_nodes(_describe(client, args.node), args.node)
    reachable = [n for n in nodes if n["admin"]]

    def sample(node: Mapping[str, Any]) -> Tuple[Dict[str, Any], float]:
        info = client.get(node["admin"], "/info")
        return info, time.monotonic()

    first = dict(zip((n["name"] for n in reachable), parallel(sample, reachable)))
    second: Dict[str, Tuple[Any, Optional[AdminError]]] = {}
    if args.interval > 0:
        time.sleep(args.interval)
        again = [n for n in reachable if first[n["name"]][1] is None]
        second = dict(zip((n["name"] for n in again), parallel(sample, again)))
    rows = []
    for n in nodes:
        before, error = first.get(n["name"], (None, None))
        after = None
        if n["name"] in second:
            after, error2 = second[n["name"]]
            error = error or error2
        rows.append(status_row(n, before, after, error.reason if error else None))
    failed = [(r["name"], r["error"]) for r in rows if r["error"]]
    table = format_table(
        ["DC", "RACK", "NODE", "STATE", "OPS/S", "P99 MS", "HINTS", "DATASTORE", "PEERS", "NOTE"],
        [[r["dc"], r["rack"], r["name"], r["state"],
          None if r["ops_per_second"] is None else f"{r['ops_per_second']:.1f}",
          r["p99_ms"], r["hint_backlog"],
          None if r["datastore_up"] is None else ("up" if r["datastore_up"] else "down"),
          None if r["peers_total"] is None else f"{r['peers_up']}/{r['peers_total']}",
          r["error"] or r["work"] or ""]
         for r in rows],
    )
    doc = {"node": args.node, "interval": args.interval, "nodes": rows}
    return Result(doc, table, summary("could not be read", failed, len(rows)))


def cmd_ring(args: argparse.Namespace, client: AdminClient) -> Result:
    describe = _describe(client, args.node)
    rows = ring_table(describe)
    table = format_table(
        ["DC", "RACK", "NODE", "TOKENS", "RANGES", "SHARE"],
        [[r["dc"], r["rack"], r["node"] if r["status"] == NORMAL else "%s (%s)" % (r["node"], r["status"]),
          ",".join(map(str, r["tokens"])), format_ranges(r["ranges"]) or None, f"{r['share_percent']:.2f}%"]
         for r in rows],
    )
    doc: Dict[str, Any] = {"racks": _group_racks(rows)}
    movers = [n for n in describe_nodes(describe, args.node) if n["status"] in (JOINING, LEAVING)]
    moving = moving_ranges(describe)
    if movers or moving:
        doc["moving"], doc["moves"] = moving, _moves(client, movers)
        table += "\n\n" + format_table(
            ["DC", "RACK", "MOVING RANGE", "FROM", "TO"],
            [[m["dc"], m["rack"], format_ranges([(m["start"], m["end"])]), m["from"], m["to"]] for m in moving])
        table += "\n\n" + format_table(
            ["NODE", "STATUS", "PROGRESS"],
            [[m["node"], m["status"], m["progress"] or "unknown: %s" % m["error"]] for m in doc["moves"]])
    return Result(doc, table)


def _moves(client: AdminClient, movers: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The progress of each node JOINING or LEAVING, from its own /scaleout (it drives its move)."""
    reachable = [n for n in movers if n["admin"]]
    answers = dict(zip((n["name"] for n in reachable),
                       parallel(lambda n: client.get(n["admin"], "/scaleout"), reachable)))
    out = []
    for n in movers:
        scaleout, error = answers.get(n["name"], (None, None))
        reason = n["why"] if not n["admin"] else (error.reason if error else None)
        if reason is None and not isinstance(scaleout, dict):
            reason = "unexpected /scaleout answer"
        out.append({"node": n["name"], "dc": n["dc"], "rack": n["rack"], "status": n["status"],
                    "progress": None if reason else move_progress(scaleout), "error": reason,
                    "scaleout": scaleout if not reason else None})
    return out


def _group_racks(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    racks: List[Dict[str, Any]] = []
    for r in rows:
        if not racks or (racks[-1]["dc"], racks[-1]["rack"]) != (r["dc"], r["rack"]):
            racks.append({"dc": r["dc"], "rack": r["rack"], "nodes": []})
        racks[-1]["nodes"].append({k: v for k, v in r.items() if k not in ("dc", "rack")})
    return racks


def cmd_hash(args: argparse.Namespace, client: AdminClient) -> Result:
    doc = hash_owners(_describe(client, args.node), os.fsencode(args.key), args.hash_tag)
    head = f"key {doc['key']!r}  hash {doc['hash']}"
    if doc["hash_tag"]:
        head += f"  hash tag {doc['hash_tag']}"
    table = format_table(["DC", "RACK", "NODE", "TOKEN", "STATE"],
                         [[o["dc"], o["rack"], o["node"], o["token"], o["state"]] for o in doc["owners"]])
    return Result(doc, head + "\n" + table)


def cmd_consistency(args: argparse.Namespace, client: AdminClient) -> Result:
    nodes = describe_nodes(_describe(client, args.node), args.node)
    if args.which is None:
        path, mutating, what = "/get_consistency", False, "did not answer"
    else:
        path, mutating, what = f"/set_consistency/{args.which}/{args.level.lower()}", True, "were not changed"
    reachable = [n for n in nodes if n["admin"]]
    answers = dict(zip((n["name"] for n in reachable),
                       parallel(lambda n: client.get(n["admin"], path, mutating), reachable)))
    rows = []
    for n in nodes:
        doc, error = answers.get(n["name"], (None, None))
        reason = n["why"] if not n["admin"] else (error.reason if error else None)
        doc = doc if isinstance(doc, dict) else {}
        rows.append({"dc": n["dc"], "rack": n["rack"], "name": n["name"],
                     "read_consistency": doc.get("read_consistency"),
                     "write_consistency": doc.get("write_consistency"), "error": reason})
    failed = [(r["name"], r["error"]) for r in rows if r["error"]]
    table = format_table(["DC", "RACK", "NODE", "READ", "WRITE", "NOTE"],
                         [[r["dc"], r["rack"], r["name"], r["read_consistency"], r["write_consistency"],
                           r["error"] or ""] for r in rows])
    doc: Dict[str, Any] = {"nodes": rows}
    if args.which is not None:
        doc["set"] = {args.which: args.level}
    return Result(doc, table, summary(what, failed, len(rows)))


def cmd_hints(args: argparse.Namespace, client: AdminClient) -> Result:
    nodes = describe_nodes(_describe(client, args.node), args.node)
    if args.target_node == "all":
        chosen = nodes
    else:
        try:
            chosen = [find_node(nodes, args.target_node)]
        except AdminError as e:
            raise AdminError(f"{e}; or all") from None
    path = "/hints/%s/%s" % (urllib.parse.quote(args.target, safe=":"), args.action)
    reachable = [n for n in chosen if n["admin"]]
    answers = dict(zip((n["name"] for n in reachable),
                       parallel(lambda n: client.get(n["admin"], path, True), reachable)))
    out_nodes, table_rows, failed = [], [], []
    for n in chosen:
        doc, error = answers.get(n["name"], (None, None))
        if not n["admin"]:
            reason: Optional[str] = n["why"]
        elif error is not None:
            reason = error.reason
            if error.status == 404 and reason.endswith("(targets: )"):
                reason = reason[: -len("(targets: )")] + "(this node has no hint targets)"
        else:
            reason = None
        hints = (doc.get("hints") if isinstance(doc, dict) else None) or {}
        out_nodes.append({"dc": n["dc"], "rack": n["rack"], "name": n["name"], "hints": hints, "error": reason})
        if reason:
            failed.append((n["name"], reason))
            table_rows.append([n["name"], args.target, None, None, None, None, reason])
        elif not hints:
            table_rows.append([n["name"], "-", None, None, None, None, "no hint targets"])
        for target, stats in sorted(hints.items()):
            stats = stats if isinstance(stats, dict) else {}
            table_rows.append([n["name"], target, stats.get("state"), stats.get("pending"),
                               stats.get("pending_bytes"), stats.get("oldest_age_seconds"), args.action + "d"])
    table = format_table(["NODE", "TARGET", "STATE", "PENDING", "BYTES", "OLDEST S", "NOTE"], table_rows)
    doc = {"action": args.action, "target": args.target, "nodes": out_nodes}
    return Result(doc, table, summary("failed", failed, len(chosen)))


COMMANDS: Dict[str, Callable[[argparse.Namespace, AdminClient], Result]] = {
    "status": cmd_status,
    "ring": cmd_ring,
    "hash": cmd_hash,
    "consistency": cmd_consistency,
    "hints": cmd_hints,
    "repair": cmd_repair,
    "decommission": cmd_decommission,
}
