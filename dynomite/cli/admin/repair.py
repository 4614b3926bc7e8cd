# -*- test-case-name: tests.integration.test_repair -*-
"""
``dynomite-admin repair``: start an anti-entropy repair on one node and
follow it to the end.

The node asked (``--node``) runs the repair (`dynomite.repair.run`) over
its datacenter (``--all-dcs``: every datacenter); this command starts it
through ``/repair/start``, polls ``/repair`` and draws a progress bar with
keys/s and ETA on standard error, then prints what was found: counts, and
per differing key which racks miss it or differ and who won.
``--dry-run`` repairs nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from typing import Any, Dict, List

from dynomite.cli.admin.client import AdminClient, AdminError
from dynomite.cli.admin.views import Result, progress_text
from dynomite.launcher.tables import format_table

__all__ = ["POLL", "ProgressLine", "add_parser", "cmd_repair"]

#: seconds between two polls of /repair (and of /scaleout)
POLL = 0.5


class ProgressLine:
    """
    One line on standard error, drawn again in place at every poll of a
    long operation: ``phase [#####.....] 50% ...``.  Drawn only when
    standard error is a terminal and the output is not ``--json``.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.show = sys.stderr.isatty() and not args.json
        self._width = 0

    def draw(self, label: str, text: str) -> None:
        if not self.show:
            return
        line = "%-11s %s" % (label, text)
        sys.stderr.write("\r" + line.ljust(self._width))
        sys.stderr.flush()
        self._width = len(line)

    def end(self) -> None:
        """Leave the last line drawn and go to the next one."""
        if self.show and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()


def add_parser(sub, common) -> None:
    p = sub.add_parser("repair", parents=[common],
                       help="compare the replicas of every range and repair what differs (anti-entropy)")
    p.add_argument("--dry-run", action="store_true", help="list the differences, change nothing")
    p.add_argument("--source", metavar="DC/RACK", default=None,
                   help="the rack whose value wins when the racks tie (no majority)")
    p.add_argument("--all-dcs", action="store_true", help="compare the racks of every datacenter")
    p.add_argument("--rate", metavar="KEYS/S", type=int, default=None,
                   help="keys per second each replica is scanned at (default: the node's repair_rate; 0: no limit)")
    p.add_argument("--no-wait", action="store_true", help="start it and return")


def _query(args: argparse.Namespace) -> str:
    query: Dict[str, str] = {}
    if args.dry_run:
        query["dry_run"] = "1"
    if args.source:
        query["source"] = args.source
    if args.all_dcs:
        query["all_dcs"] = "1"
    if args.rate is not None:
        query["rate"] = str(args.rate)
    return ("?" + urllib.parse.urlencode(query)) if query else ""


def cmd_repair(args: argparse.Namespace, client: AdminClient):
    started = client.get(args.node, "/repair/start" + _query(args), True)
    mine = (started.get("running") or {}).get("started")
    if args.no_wait:
        return Result(started, "repair started on %s" % args.node)
    line = ProgressLine(args)
    while True:
        time.sleep(POLL)
        doc = client.get(args.node, "/repair")
        running = doc.get("running")
        if running and running.get("started") == mine:
            line.draw(running["phase"], progress_text(running["phase_scanned"], running["phase_to_scan"],
                                                      running["keys_per_second"], running["eta_seconds"]))
            continue
        last = doc.get("last") or {}
        if last.get("started") == mine:
            break
        raise AdminError("%s: the repair started at %s is neither running nor the last one" % (args.node, mine))
    line.end()
    return Result(last, _report(last), None if last.get("error") is None else
                  "%s: repair failed: %s" % (args.node, last["error"]))


def _report(last: Dict[str, Any]) -> str:
    lines: List[str] = [
        "%s in %.1fs: %d keys scanned, %d cells and %d keys differing, %d changed meanwhile,"
        " %d repaired, %d skipped, %d undecided" % (
            last["phase"], (last["finished"] or last["started"]) - last["started"], last["scanned"],
            last["cells_differing"], last["keys_differing"], last["keys_changed"], last["keys_repaired"],
            last["keys_skipped"], last["keys_undecided"])]
    differences = last.get("differences") or []
    if differences:
        racks = sorted({rack for d in differences for rack in d["racks"]})
        lines.append(format_table(["KEY"] + [r.upper() for r in racks] + ["WINNER", "WHY"],
                                  [[d["key"]] + [d["racks"].get(r, "") for r in racks]
                                   + [d["winner"] or "-", d["reason"]] for d in differences]))
    return "\n".join(lines)
