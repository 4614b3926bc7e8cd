"""
``dynomite-admin`` and scale-out (issue: online scale-out, item 3): the
NOTE of ``status`` for a node joining or leaving, ``ring`` with the nodes
JOINING and LEAVING, the moving ranges and the progress of the node driving
each move, and ``decommission`` following a leave to its end.

Views are fed fixed documents shaped as a real in-process join answered
them (`dynomite.scaleout.manager.ScaleOut.status`); commands run through
``main`` with the HTTP client replaced by a table of answers.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any, Dict, List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from dynomite.cli.admin import main as admin_main, scaleout as scaleout_cli
from dynomite.cli.admin.client import AdminError
from dynomite.cli.admin.main import main
from dynomite.cli.admin.views import (
    copy_progress,
    describe_nodes,
    find_node,
    hash_owners,
    moving_ranges,
    ring_table,
    scaleout_work,
    status_row,
)

HALF = 2 ** 31
OLD, NEW, OTHER = "10.0.0.1:8101", "10.0.0.10:8101", "10.0.0.2:8101"

#: the copy of a join halfway (what ScaleOut.status() says under ``copy``)
COPYING = {"started": 2.25, "finished": None, "error": None, "scanned": 500, "to_scan": 1000, "copied": 251,
           "copy_errors": 0, "last_copy_error": None, "keys_per_second": 125.0, "eta_seconds": 4.0}


def scaleout(status: str = "JOINING", operation: Optional[str] = "join", phase: str = "copying",
             reason: Optional[str] = "1 ranges", copy: Optional[Dict[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
    """A /scaleout document."""
    doc: Dict[str, Any] = {
        "enabled": True, "status": status, "tokens": [HALF], "operation": operation, "phase": phase,
        "reason": reason, "started": 1.75, "finished": None, "ranges": [[1, HALF, OLD, NEW]], "dropped": 0,
        "moving": [],
    }
    if copy is not None:
        doc["copy"] = copy
    doc.update(extra)
    return doc


def server(name: str, tokens: List[int], status: str = "NORMAL", admin: Optional[str] = None,
           local: bool = False) -> Dict[str, Any]:
    host, port = name.split(":")
    return {"name": name, "host": host, "port": int(port), "tokens": tokens, "state": "NORMAL", "status": status,
            "local": local, "admin": admin}


#: dc1: rack1 with OLD and NEW joining it (1..2**31 moving), rack2 with OTHER.
DESCRIBE = {"dcs": [{"name": "dc1", "racks": [
    {"name": "rack1", "servers": [server(OLD, [0], admin="10.0.0.1:22222", local=True),
                                  server(NEW, [HALF], "JOINING", admin="10.0.0.10:22222")],
     "moving": [{"start": 1, "end": HALF, "from": OLD, "to": NEW}]},
    {"name": "rack2", "servers": [server(OTHER, [0], admin="10.0.0.2:22222")], "moving": []},
]}]}


def info(name: str, **extra: Any) -> Dict[str, Any]:
    doc = {"name": name, "state": "NORMAL", "peers": {}, "client": {"requests": {}}, "datastore": {"up": True},
           "latency_seconds": {}, "hints": {}, "repair": {"warmup": None, "running": None},
           "scaleout": {"enabled": True, "status": "NORMAL", "operation": None, "phase": "idle"}}
    doc.update(extra)
    return doc


class FakeClient:
    """
    Answers GETs from ``{(address, path): answer}``; an answer that is a
    list is a sequence of answers, one per GET, its last one repeated; an
    `AdminError` is raised.  Records every call; a command still polling
    after `MAX_CALLS` fails the test instead of hanging it.
    """

    MAX_CALLS = 100

    def __init__(self, answers: Dict[Tuple[str, str], Any]) -> None:
        self.answers = answers
        self.calls: List[Tuple[str, str, bool]] = []

    def get(self, address: str, path: str, mutating: bool = False) -> Any:
        self.calls.append((address, path, mutating))
        if len(self.calls) > self.MAX_CALLS:
            raise AssertionError("still asking after %d calls: %s" % (self.MAX_CALLS, self.calls[-3:]))
        answer = self.answers.get((address, path), AdminError(f"{address}: connection refused",
                                                              reason="connection refused"))
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, AdminError):
            raise answer
        return answer


class Captured:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"<exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}>"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class CommandCase(SynchronousTestCase):

    def use(self, answers: Dict[Tuple[str, str], Any]) -> List[FakeClient]:
        made: List[FakeClient] = []

        def factory(timeout: float, token: Optional[str]) -> FakeClient:
            made.append(FakeClient(answers))
            return made[-1]

        self.patch(admin_main, "AdminClient", factory)
        self.patch(scaleout_cli.time, "sleep", lambda seconds: None)
        return made

    def run_main(self, *argv: str, err: Optional[io.StringIO] = None) -> Captured:
        out, err = io.StringIO(), err if err is not None else io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        try:
            code = main(list(argv))
        finally:
            self.patch(sys, "stdout", sys.__stdout__)
            self.patch(sys, "stderr", sys.__stderr__)
        return Captured(code, out.getvalue(), err.getvalue())


# -- views ---------------------------------------------------------------------------------------


class WorkTests(SynchronousTestCase):
    """What the NOTE column of ``status`` says of a node's own move."""

    def test_copying_shows_the_bar(self) -> None:
        self.assertEqual(scaleout_work(scaleout(copy=COPYING)),
                         "JOINING copying [##########..........]  50% 500/1000 keys ETA 4s, 251 copied 125/s")

    def test_other_phases_say_why(self) -> None:
        self.assertEqual(scaleout_work(scaleout(phase="waiting", reason="one move per rack at a time: x joins")),
                         "JOINING waiting: one move per rack at a time: x joins")
        # the copy of an earlier join is still in the document: not shown outside copying
        self.assertEqual(scaleout_work(scaleout("LEAVING", "leave", "announcing", "waiting for a to learn",
                                                copy=COPYING)),
                         "LEAVING announcing: waiting for a to learn")
        self.assertEqual(scaleout_work(scaleout("NORMAL", phase="cleaning", reason=None)), "NORMAL cleaning")

    def test_failed_done_and_idle(self) -> None:
        self.assertEqual(scaleout_work(scaleout(phase="failed", reason="stopped")), "join failed: stopped")
        self.assertIsNone(scaleout_work(scaleout("NORMAL", phase="done", reason=None)))
        self.assertEqual(scaleout_work(scaleout("LEFT", "leave", "done", "this node is no longer a member: stop it")),
                         "LEFT: this node is no longer a member: stop it")
        self.assertIsNone(scaleout_work(scaleout("NORMAL", None, "idle", None)))
        self.assertIsNone(scaleout_work({"enabled": False}))

    def test_copy_progress_with_errors(self) -> None:
        text = copy_progress(dict(COPYING, copy_errors=3, last_copy_error="copy: ERR busy", keys_per_second=0.0))
        self.assertEqual(text, "[##########..........]  50% 500/1000 keys ETA 4s, 251 copied,"
                               " 3 errors (last: copy: ERR busy)")

    def test_status_row_prefers_the_move_to_repair(self) -> None:
        node = {"dc": "dc1", "rack": "rack1", "name": NEW, "admin": "h:1", "why": None}
        doc = info(NEW, scaleout=scaleout(copy=COPYING),
                   repair={"warmup": None, "running": {"phase": "digests", "phase_scanned": 1, "phase_to_scan": 2,
                                                       "keys_per_second": 0, "eta_seconds": None}})
        self.assertTrue(status_row(node, None, (doc, 1.0))["work"].startswith("JOINING copying [##########"))
        doc["scaleout"] = scaleout("NORMAL", phase="done")
        self.assertTrue(status_row(node, None, (doc, 1.0))["work"].startswith("repair digests"))


class RingViewTests(SynchronousTestCase):
    """A node JOINING owns nothing yet; its status and the moving ranges come from the node asked."""

    def test_joining_node_owns_nothing_yet(self) -> None:
        rows = {r["node"]: r for r in ring_table(DESCRIBE)}
        self.assertEqual((rows[NEW]["status"], rows[NEW]["ranges"], rows[NEW]["share_percent"]),
                         ("JOINING", [], 0.0))
        self.assertEqual((rows[OLD]["status"], rows[OLD]["ranges"], rows[OLD]["share_percent"]),
                         ("NORMAL", [[0, 2 ** 32 - 1]], 100.0))
        owners = hash_owners(DESCRIBE, b"k")["owners"]
        self.assertEqual([o["node"] for o in owners], [OLD, OTHER])

    def test_leaving_node_still_owns_its_ranges(self) -> None:
        describe = json.loads(json.dumps(DESCRIBE))
        describe["dcs"][0]["racks"][0]["servers"][1]["status"] = "LEAVING"
        rows = {r["node"]: r for r in ring_table(describe)}
        self.assertEqual((rows[NEW]["status"], rows[NEW]["ranges"]), ("LEAVING", [[1, HALF]]))

    def test_a_rack_with_only_a_joining_node(self) -> None:
        describe = {"dcs": [{"name": "dc1", "racks": [
            {"name": "rack1", "servers": [server(OLD, [0], local=True)]},
            {"name": "rack9", "servers": [server(NEW, [HALF], "JOINING")]}]}]}
        rows = {r["node"]: r for r in ring_table(describe)}
        self.assertEqual(rows[NEW]["share_percent"], 0.0)
        self.assertEqual([o["node"] for o in hash_owners(describe, b"k")["owners"]], [OLD])

    def test_moving_ranges(self) -> None:
        self.assertEqual(moving_ranges(DESCRIBE), [
            {"dc": "dc1", "rack": "rack1", "start": 1, "end": HALF, "from": OLD, "to": NEW}])
        older = {"dcs": [{"name": "dc1", "racks": [{"name": "rack1", "servers": [server(OLD, [0])]}]}]}
        for s in older["dcs"][0]["racks"][0]["servers"]:
            del s["status"]
        self.assertEqual(moving_ranges(older), [])
        self.assertEqual(describe_nodes(older)[0]["status"], "NORMAL")
        with self.assertRaises(AdminError):
            moving_ranges({"dcs": [{"name": "dc1", "racks": [{"name": "r", "moving": [{"start": 1}]}]}]})

    def test_find_node(self) -> None:
        nodes = describe_nodes(DESCRIBE, "10.0.0.1:22222")
        self.assertEqual(find_node(nodes, NEW)["admin"], "10.0.0.10:22222")
        self.assertEqual(find_node(nodes, "10.0.0.2:22222")["name"], OTHER)
        with self.assertRaises(AdminError) as e:
            find_node(nodes, "10.9.9.9:8101")
        self.assertEqual(str(e.exception), "no node 10.9.9.9:8101 in the cluster (nodes: %s, %s, %s)"
                         % (OLD, NEW, OTHER))


# -- commands ------------------------------------------------------------------------------------


class RingCommandTests(CommandCase):

    def test_ring_shows_moves_with_the_progress_of_the_node_driving_them(self) -> None:
        made = self.use({("10.0.0.1:22222", "/cluster_describe"): DESCRIBE,
                         ("10.0.0.10:22222", "/scaleout"): scaleout(copy=COPYING)})
        result = self.run_main("--node", "10.0.0.1:22222", "ring")
        self.assertEqual(result.code, 0, result)
        lines = result.out.splitlines()
        self.assertEqual(lines[0].split(), ["DC", "RACK", "NODE", "TOKENS", "RANGES", "SHARE"])
        self.assertEqual(lines[1].split(), ["dc1", "rack1", OLD, "0", "all", "100.00%"])
        self.assertEqual(lines[2].split(), ["dc1", "rack1", NEW, "(JOINING)", str(HALF), "-", "0.00%"])
        self.assertIn(["dc1", "rack1", "1..%d" % HALF, OLD, NEW], [line.split() for line in lines])
        self.assertIn("%s  JOINING  copying [##########..........]  50%% 500/1000 keys ETA 4s, 251 copied 125/s"
                      % NEW, result.out)
        self.assertIn(("10.0.0.10:22222", "/scaleout", False), made[0].calls)

    def test_ring_json_and_an_unreachable_mover(self) -> None:
        self.use({("10.0.0.1:22222", "/cluster_describe"): DESCRIBE})
        result = self.run_main("--node", "10.0.0.1:22222", "ring", "--json")
        self.assertEqual(result.code, 0, result)
        doc = json.loads(result.out)
        self.assertEqual(doc["moving"], moving_ranges(DESCRIBE))
        self.assertEqual(doc["moves"], [{"node": NEW, "dc": "dc1", "rack": "rack1", "status": "JOINING",
                                         "progress": None, "error": "connection refused", "scaleout": None}])
        text = self.run_main("--node", "10.0.0.1:22222", "ring")
        self.assertIn("unknown: connection refused", text.out)

    def test_ring_without_moves_has_no_moving_section(self) -> None:
        describe = {"dcs": [{"name": "dc1", "racks": [
            {"name": "rack1", "servers": [server(OLD, [0], admin="10.0.0.1:22222", local=True)], "moving": []}]}]}
        self.use({("10.0.0.1:22222", "/cluster_describe"): describe})
        result = self.run_main("--node", "10.0.0.1:22222", "ring")
        self.assertEqual(result.code, 0, result)
        self.assertEqual(len(result.out.splitlines()), 2)
        self.assertNotIn("moving", json.loads(self.run_main("--node", "10.0.0.1:22222", "ring", "--json").out))


class StatusCommandTests(CommandCase):

    def test_note_says_each_nodes_own_move(self) -> None:
        self.use({("10.0.0.1:22222", "/cluster_describe"): DESCRIBE,
                  ("10.0.0.1:22222", "/info"): info(OLD),
                  ("10.0.0.10:22222", "/info"): info(NEW, scaleout=scaleout(copy=COPYING)),
                  ("10.0.0.2:22222", "/info"): info(OTHER, scaleout=scaleout(
                      "NORMAL", phase="failed", reason="stopped"))})
        result = self.run_main("--node", "10.0.0.1:22222", "status", "--interval", "0")
        self.assertEqual(result.code, 0, result)
        lines = result.out.splitlines()
        self.assertEqual(len(lines), 4)
        self.assertTrue(lines[1].endswith("0/0"), lines[1])
        self.assertTrue(lines[2].endswith("JOINING copying [##########..........]  50% 500/1000 keys ETA 4s,"
                                          " 251 copied 125/s"), lines[2])
        self.assertTrue(lines[3].endswith("join failed: stopped"), lines[3])


class DecommissionTests(CommandCase):

    def leave(self, phase: str, reason: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
        return scaleout("LEAVING", "leave", phase, reason, started=7.0,
                        ranges=[[1, HALF, NEW, OLD]], **extra)

    def test_follows_the_leave_to_the_end(self) -> None:
        copy = dict(COPYING, started=8.0)
        done = dict(self.leave("done", "this node is no longer a member: stop it", finished=10.5),
                    status="LEFT", copy=dict(copy, finished=9.0, scanned=1000, copied=500, eta_seconds=None))
        made = self.use({
            ("10.0.0.10:22222", "/decommission"): self.leave("announcing", "waiting for a to learn"),
            ("10.0.0.10:22222", "/scaleout"): [self.leave("announcing", "waiting for a to learn"),
                                               self.leave("copying", "1 ranges", copy=copy), done],
        })
        terminal = Terminal()
        result = self.run_main("--node", "10.0.0.10:22222", "--token", "t", "decommission", err=terminal)
        self.assertEqual(result.code, 0, result)
        self.assertEqual(result.out, "10.0.0.10:22222 left in 3.5s: 1000 keys scanned, 500 copied to %s\n"
                                     "this node is no longer a member: stop it\n" % OLD)
        self.assertEqual(made[0].calls[0], ("10.0.0.10:22222", "/decommission", True))
        # the progress bar, drawn in place on the terminal
        self.assertIn("\rannouncing  waiting for a to learn", result.err)
        self.assertIn("\rcopying     [##########..........]  50% 500/1000 keys ETA 4s, 251 copied 125/s", result.err)
        self.assertTrue(result.err.endswith("\n"))

    def test_no_bar_when_not_a_terminal_and_json(self) -> None:
        done = dict(self.leave("done", "this node is no longer a member: stop it", finished=10.5), status="LEFT")
        self.use({("10.0.0.10:22222", "/decommission"): self.leave("announcing"),
                  ("10.0.0.10:22222", "/scaleout"): [self.leave("copying", copy=COPYING), done]})
        result = self.run_main("--node", "10.0.0.10:22222", "decommission", "--json", err=Terminal())
        self.assertEqual((result.code, result.err), (0, ""))
        self.assertEqual(json.loads(result.out)["phase"], "done")

    def test_a_failed_leave_exits_1_with_its_reason(self) -> None:
        self.use({("10.0.0.10:22222", "/decommission"): self.leave("announcing"),
                  ("10.0.0.10:22222", "/scaleout"): [self.leave("failed", "stopped", finished=9.0)]})
        result = self.run_main("--node", "10.0.0.10:22222", "decommission")
        self.assertEqual(result.code, 1, result)
        self.assertEqual(result.err, "dynomite-admin: 10.0.0.10:22222: decommission failed: stopped\n")
        self.assertTrue(result.out.startswith("10.0.0.10:22222: the leave failed after 2.0s"), result.out)

    def test_a_refusal_is_the_nodes_own_words(self) -> None:
        why = "this node is the last of dc1/rack1: nobody could take its ranges"
        self.use({("10.0.0.1:22222", "/decommission"): AdminError(
            "10.0.0.1:22222/decommission: HTTP 409: " + why, 409, "HTTP 409: " + why)})
        result = self.run_main("--node", "10.0.0.1:22222", "decommission")
        self.assertEqual((result.code, result.out), (1, ""))
        self.assertEqual(result.err, "dynomite-admin: 10.0.0.1:22222/decommission: HTTP 409: %s\n" % why)

    def test_no_wait(self) -> None:
        made = self.use({("10.0.0.10:22222", "/decommission"): self.leave("announcing", "waiting for a to learn")})
        result = self.run_main("--node", "10.0.0.10:22222", "decommission", "--no-wait")
        self.assertEqual(result.code, 0, result)
        self.assertEqual(result.out, "10.0.0.10:22222 is leaving: announcing: waiting for a to learn\n")
        self.assertEqual([c[1] for c in made[0].calls], ["/decommission"])

    def test_named_node_is_found_in_the_cluster(self) -> None:
        done = dict(self.leave("done", finished=9.0), status="LEFT")
        made = self.use({("10.0.0.1:22222", "/cluster_describe"): DESCRIBE,
                         ("10.0.0.10:22222", "/decommission"): self.leave("announcing"),
                         ("10.0.0.10:22222", "/scaleout"): [done]})
        result = self.run_main("--node", "10.0.0.1:22222", "decommission", NEW)
        self.assertEqual(result.code, 0, result)
        self.assertEqual([c[:2] for c in made[0].calls], [("10.0.0.1:22222", "/cluster_describe"),
                                                           ("10.0.0.10:22222", "/decommission"),
                                                           ("10.0.0.10:22222", "/scaleout")])
        unknown = self.run_main("--node", "10.0.0.1:22222", "decommission", "10.9.9.9:8101")
        self.assertEqual(unknown.code, 1)
        self.assertIn("no node 10.9.9.9:8101 in the cluster", unknown.err)

    def test_another_move_in_its_place_is_an_error(self) -> None:
        self.use({("10.0.0.10:22222", "/decommission"): self.leave("announcing"),
                  ("10.0.0.10:22222", "/scaleout"): [dict(self.leave("announcing"), started=99.0)]})
        result = self.run_main("--node", "10.0.0.10:22222", "decommission")
        self.assertEqual(result.code, 1)
        self.assertIn("the leave started at 7.0 is no longer this node's move", result.err)
