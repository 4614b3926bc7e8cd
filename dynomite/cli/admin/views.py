# -*- test-case-name: tests.integration.test_admin_cli -*-
"""
What ``dynomite-admin`` shows, computed from what nodes answer.

Pure functions on plain data, tested without HTTP: the nodes of a
/cluster_describe document and how to reach each one's admin API, ring
shares and key owners per rack, the ranges moving while a node joins or
leaves, ops/s and the other figures of a status row from /info samples,
progress bars, and the text of tables and error summaries.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from dynomite.cli.admin.client import AdminError, join_address, parse_address
from dynomite.config.vocabulary import JOINING, LEFT, NORMAL, RING_SIZE
from dynomite.placement.hashing import key_hash
from dynomite.placement.ring import Ring

__all__ = [
    "Result",
    "describe_nodes",
    "find_node",
    "hash_owners",
    "copy_progress",
    "hint_backlog",
    "move_progress",
    "moving_ranges",
    "ops_per_second",
    "p99_ms",
    "progress_text",
    "repair_work",
    "request_count",
    "ring_table",
    "scaleout_work",
    "status_row",
    "summary",
]


class Result(NamedTuple):
    """
    What a command produced: the JSON document, the text for people (without
    a final newline) and one error line or None.
    """

    doc: Any
    text: str
    error: Optional[str] = None


# -- the cluster as /cluster_describe tells it ------------------------------------------


def describe_nodes(describe: Mapping[str, Any], asked: Optional[str] = None) -> List[Dict[str, Any]]:
    """
    Every node of a /cluster_describe document, in its order, as flat dicts:
    dc, rack, name, host, port, tokens, state, status (on the ring: NORMAL,
    JOINING, LEAVING; NORMAL when the node does not say), local, admin, and
    ``why`` (why ``admin`` is None, else None).

    ``admin`` is the address to reach the node's admin API at: ``asked``
    for the node that answered (``local``), else the address it announced,
    with an unspecified host (0.0.0.0, ::) replaced by the node's own host.
    A loopback admin address announced by a node whose peer address is not
    loopback is only reachable on that node's host, so it is not used.
    """
    try:
        nodes = []
        for dc in describe["dcs"]:
            for rack in dc["racks"]:
                for server in rack["servers"]:
                    node = {
                        "dc": str(dc["name"]), "rack": str(rack["name"]), "name": str(server["name"]),
                        "host": server["host"], "port": server["port"],
                        "tokens": sorted(int(t) for t in server["tokens"]),
                        "state": server["state"], "status": str(server.get("status") or NORMAL),
                        "local": bool(server.get("local")),
                    }
                    node["admin"], node["why"] = _admin_address(server, asked)
                    nodes.append(node)
    except (KeyError, TypeError, ValueError) as e:
        raise AdminError(f"unexpected /cluster_describe document ({type(e).__name__}: {e})") from None
    return nodes


def find_node(nodes: List[Dict[str, Any]], wanted: str) -> Dict[str, Any]:
    """The node of :func:`describe_nodes` named ``wanted``, or whose admin address it is; AdminError if none."""
    for key in ("name", "admin"):
        for node in nodes:
            if node[key] == wanted:
                return node
    raise AdminError(f"no node {wanted} in the cluster (nodes: {', '.join(n['name'] for n in nodes)})")


def _admin_address(server: Mapping[str, Any], asked: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    if server.get("local") and asked:
        return asked, None
    admin = server.get("admin")
    if not admin:
        if server.get("state") == "DOWN":
            return None, "admin address unknown: the peer link to it is DOWN"
        return None, "admin address unknown: the node did not announce it"
    try:
        host, port = parse_address(admin)
    except ValueError:
        return None, f"admin address {admin!r} is not HOST:PORT"
    if _is_unspecified(host):
        host = str(server.get("host") or host)
    elif _is_loopback(host) and not _is_loopback(str(server.get("host", ""))):
        return None, f"its admin API listens on loopback ({admin}), reachable only on its own host"
    return join_address(host, port), None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _rings(describe: Mapping[str, Any]) -> List[Tuple[str, str, List[Dict[str, Any]], Optional[Ring[str]]]]:
    """
    (dc, rack, nodes, ring of node names) for every rack: the current ring,
    without the nodes JOINING it (None while no node of the rack owns tokens).
    """
    racks: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for node in describe_nodes(describe):
        racks.setdefault((node["dc"], node["rack"]), []).append(node)
    out = []
    for (dc, rack), nodes in racks.items():
        owners = [n for n in nodes if n["status"] not in (JOINING, LEFT)]
        try:
            ring = Ring((token, n["name"]) for n in owners for token in n["tokens"]) if owners else None
        except ValueError as e:
            raise AdminError(f"rack {dc}/{rack}: {e}") from None
        out.append((dc, rack, nodes, ring))
    return out


def _merge(ranges: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    merged: List[Tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and merged[-1][1] + 1 == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def ring_table(describe: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """
    One dict per node, racks in document order: dc, rack, node, state,
    status, tokens, ranges (inclusive ``[start, end]`` hash ranges it owns,
    adjacent ones merged; the smallest token's wrap-around share is two
    ranges) and share_percent (of the 2**32 hashes). The shares of a rack
    add up to 100; a node JOINING owns nothing yet.
    """
    rows = []
    for dc, rack, nodes, ring in _rings(describe):
        owned: Dict[str, List[Tuple[int, int]]] = {n["name"]: [] for n in nodes}
        for start, end, owner in (ring.ranges() if ring is not None else ()):
            owned[owner].append((start, end))
        for n in nodes:
            ranges = _merge(owned[n["name"]])
            size = sum(end - start + 1 for start, end in ranges)
            rows.append({
                "dc": dc, "rack": rack, "node": n["name"], "state": n["state"], "status": n["status"],
                "tokens": n["tokens"],
                "ranges": [[start, end] for start, end in ranges],
                "share_percent": 100.0 * size / RING_SIZE,
            })
    return rows


def moving_ranges(describe: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """
    The hash ranges changing owner while nodes join or leave, as the node
    asked computed them: ``{dc, rack, start, end, from, to}``, racks in
    document order (none from a node that does not say).
    """
    try:
        return [{"dc": str(dc["name"]), "rack": str(rack["name"]), "start": int(m["start"]), "end": int(m["end"]),
                 "from": str(m["from"]), "to": str(m["to"])}
                for dc in describe["dcs"] for rack in dc["racks"] for m in rack.get("moving") or ()]
    except (KeyError, TypeError, ValueError) as e:
        raise AdminError(f"unexpected /cluster_describe document ({type(e).__name__}: {e})") from None


def hash_owners(describe: Mapping[str, Any], key: bytes, hash_tag: Optional[bytes] = None) -> Dict[str, Any]:
    """
    The key's ring position and its owner in every rack of every DC:
    ``{"key", "hash", "hash_tag", "owners": [{dc, rack, node, token, state}]}``.
    """
    h = key_hash(key, hash_tag)
    owners = []
    for dc, rack, nodes, ring in _rings(describe):
        if ring is None:
            continue
        owner = ring.owner(h)
        state = next(n["state"] for n in nodes if n["name"] == owner)
        owners.append({"dc": dc, "rack": rack, "node": owner, "token": ring.token(h), "state": state})
    return {
        "key": key.decode("utf-8", "backslashreplace"),
        "hash": h,
        "hash_tag": hash_tag.decode("utf-8", "backslashreplace") if hash_tag else None,
        "owners": owners,
    }


# -- numbers from /info -------------------------------------------------------------------


def request_count(info: Mapping[str, Any]) -> int:
    """Client requests a node has answered since it started (ok + error, every command family)."""
    families = (info.get("client") or {}).get("requests") or {}
    return sum(int(c.get("ok", 0)) + int(c.get("error", 0)) for c in families.values())


def ops_per_second(before: int, after: int, elapsed: float) -> Optional[float]:
    """Requests per second between two counts ``elapsed`` seconds apart; None if unknowable (restart, no time)."""
    if elapsed <= 0 or after < before:
        return None
    return (after - before) / elapsed


def p99_ms(info: Mapping[str, Any]) -> Optional[float]:
    """The worse of the read and write p99 latencies since start, in ms; None before any request."""
    values = [float(v["p99"]) for v in (info.get("latency_seconds") or {}).values() if v.get("count")]
    return max(values) * 1000.0 if values else None


def hint_backlog(info: Mapping[str, Any]) -> int:
    """Hints waiting, over every target."""
    return sum(int(stats.get("pending", 0)) for stats in (info.get("hints") or {}).values())


def status_row(
    node: Mapping[str, Any],
    before: Optional[Tuple[Mapping[str, Any], float]] = None,
    after: Optional[Tuple[Mapping[str, Any], float]] = None,
    error: Optional[str] = None,
) -> Dict[str, Any]:
    """
    One row of ``status`` from a node of :func:`describe_nodes` and its
    /info samples ``(document, monotonic time)``: ``after`` alone gives no
    ops/s. With ``error`` (or no sample) the node is DOWN and ``error`` says why.
    """
    row: Dict[str, Any] = {
        "dc": node["dc"], "rack": node["rack"], "name": node["name"], "admin": node.get("admin"),
        "state": "DOWN", "ops_per_second": None, "p99_ms": None, "hint_backlog": None,
        "datastore_up": None, "peers_up": None, "peers_total": None, "error": error, "work": None,
    }
    sample = after or before
    if error is not None or sample is None:
        row["error"] = error or node.get("why") or "no answer"
        return row
    info = sample[0]
    if info.get("name") not in (None, node["name"]):
        row["error"] = f"{node.get('admin')} answered as node {info.get('name')}, not {node['name']}"
        return row
    peers = info.get("peers") or {}
    row.update(
        state=info.get("state", "?"),
        p99_ms=p99_ms(info),
        hint_backlog=hint_backlog(info),
        datastore_up=(info.get("datastore") or {}).get("up"),
        peers_up=sum(1 for state in peers.values() if state == "UP"),
        peers_total=len(peers),
    )
    row["work"] = scaleout_work(info.get("scaleout") or {}) or repair_work(info.get("repair") or {})
    if before is not None and after is not None:
        row["ops_per_second"] = ops_per_second(request_count(before[0]), request_count(after[0]), after[1] - before[1])
    return row


def repair_work(repair: Mapping[str, Any]) -> Optional[str]:
    """What a node's /info ``repair`` section says it is busy with: warm-up or a repair, with progress."""
    warmup = repair.get("warmup") or {}
    if warmup and warmup.get("finished") is None:
        return "warming up %s" % progress_text(warmup.get("scanned", 0), warmup.get("to_scan", 0),
                                               warmup.get("keys_per_second"), warmup.get("eta_seconds"))
    running = repair.get("running") or {}
    if running:
        return "repair %s %s" % (running.get("phase"), progress_text(
            running.get("phase_scanned", 0), running.get("phase_to_scan", 0),
            running.get("keys_per_second"), running.get("eta_seconds")))
    return None


def scaleout_work(scaleout: Mapping[str, Any]) -> Optional[str]:
    """
    What a node's /info ``scaleout`` section says of its own join or leave:
    ``JOINING copying [###...] 45% ...``, ``LEAVING announcing: why``,
    ``join failed: why``; a node that has left says so; None when it moves nothing.
    """
    phase = scaleout.get("phase")
    if not scaleout.get("operation") or phase in (None, "idle"):
        return None
    if phase == "failed":
        return "%s failed: %s" % (scaleout["operation"], scaleout.get("reason") or "no reason given")
    if phase == "done":
        return "%s: %s" % (LEFT, scaleout.get("reason")) if scaleout.get("status") == LEFT else None
    return "%s %s" % (scaleout.get("status"), move_progress(scaleout))


def move_progress(scaleout: Mapping[str, Any]) -> str:
    """The phase of a join or leave: its copy progress while copying, else why it is in that phase."""
    phase = str(scaleout.get("phase"))
    copy = scaleout.get("copy") or {}
    if phase == "copying" and copy:
        return "copying " + copy_progress(copy)
    reason = scaleout.get("reason")
    return "%s: %s" % (phase, reason) if reason else phase


def copy_progress(copy: Mapping[str, Any]) -> str:
    """
    A scale-out copy (/scaleout ``copy``): the bar is the keys scanned on
    the ranges' owners of all they hold, then the keys copied and their rate:
    ``[#####.....] 50% 500/1000 keys ETA 4s, 120 copied 40/s``.
    """
    text = progress_text(copy.get("scanned", 0), copy.get("to_scan", 0), None, copy.get("eta_seconds"))
    text += ", %d copied" % copy.get("copied", 0)
    if copy.get("keys_per_second"):
        text += " %d/s" % copy["keys_per_second"]
    if copy.get("copy_errors"):
        text += ", %d errors (last: %s)" % (copy["copy_errors"], copy.get("last_copy_error"))
    return text


def progress_text(done: int, total: int, per_second: Optional[float], eta: Optional[float], width: int = 20) -> str:
    """``[#####.....] 50% 500/1000 keys 120/s ETA 4s``."""
    share = min(done / total, 1.0) if total else 0.0
    filled = int(share * width)
    text = "[%s%s] %3d%% %d/%d keys" % ("#" * filled, "." * (width - filled), share * 100, done, total)
    if per_second:
        text += " %d/s" % per_second
    if eta is not None:
        text += " ETA %ds" % eta
    return text


# -- errors ----------------------------------------------------------------------------------


def summary(what: str, failures: List[Tuple[str, str]], total: int) -> Optional[str]:
    """
    One line for stderr from ``(node name, reason)`` pairs: the failure
    itself, or how many of ``total`` nodes failed and why (the common reason
    when they share one, else the first).
    """
    if not failures:
        return None
    if len(failures) == 1:
        return "node %s: %s" % failures[0]
    reasons = {reason for _, reason in failures}
    if len(reasons) == 1:
        return f"{len(failures)} of {total} nodes {what}: {failures[0][1]}"
    return f"{len(failures)} of {total} nodes {what}; first: node {failures[0][0]}: {failures[0][1]}"
