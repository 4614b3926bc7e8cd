"""
``dynomite-admin``: operate a running cluster through its nodes' admin APIs.

    dynomite-admin [--node HOST:PORT] [--token TOKEN] [--json] [--timeout S] COMMAND

    status [--interval S]                  every node: DC, rack, state, ops/s, p99, hint backlog,
                                           datastore, peers UP/total
    ring                                   token ranges per rack, with each node's share of the ring
    hash KEY [--hash-tag XY]               the key's hash and its owner in every rack of every DC
    consistency                            read/write consistency of every node
    consistency read|write LEVEL           set it on every node (mutating: needs the admin token)
    hints NODE|all pause|resume|truncate [--target T|all]
                                           act on hinted handoff on one node or all of them

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

DESIGN: the pure parts (argument checks, the table formatter, ring shares,
key owners, ops/s from two /info samples, one status row from /info) are
plain functions on plain data, tested without HTTP. :class:`AdminClient` is
the only code that does I/O (urllib, standard library, no proxies); each
command is a function ``(args, client) -> Result`` so tests can hand it a
fake client. Nodes are asked in parallel (a thread pool), so one node that
does not answer costs ``--timeout`` once, not once per node.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, TypeVar

from dynomite.placement.hashing import key_hash
from dynomite.config.vocabulary import CONSISTENCY_LEVELS as LEVELS, RING_SIZE
from dynomite.placement.ring import Ring

__all__ = [
    "AdminClient",
    "AdminError",
    "Result",
    "build_parser",
    "describe_nodes",
    "format_table",
    "hash_owners",
    "main",
    "ops_per_second",
    "parse_address",
    "request_count",
    "ring_table",
    "status_row",
]

PROG = "dynomite-admin"
DEFAULT_NODE = "127.0.0.11:22222"
DEFAULT_ADMIN_PORT = 22222
DEFAULT_TIMEOUT = 5.0
DEFAULT_INTERVAL = 1.0
ENV_NODE = "DYNOMITE_ADMIN"
ENV_TOKEN = "DYNOMITE_ADMIN_TOKEN"
HINT_ACTIONS = ("pause", "resume", "truncate")
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
#: Most nodes asked at once.
MAX_PARALLEL = 32

T = TypeVar("T")
R = TypeVar("R")


class AdminError(Exception):
    """A node could not be asked, or refused; ``str()`` is one line for a person."""

    def __init__(self, message: str, status: Optional[int] = None, reason: Optional[str] = None) -> None:
        super().__init__(message)
        #: The HTTP status of a refusal, else None.
        self.status = status
        #: The message without the address asked (for tables that already name the node).
        self.reason = message if reason is None else reason


class Result(NamedTuple):
    """What a command produced: the JSON document, the text for people, and one error line or None."""

    doc: Any
    text: str
    error: Optional[str] = None


# -- addresses -------------------------------------------------------------------


def parse_address(text: str, default_port: int = DEFAULT_ADMIN_PORT) -> Tuple[str, int]:
    """
    ``host:port``, ``[v6]:port``, or a bare host (``default_port``) as ``(host, port)``.

    Raises ``ValueError`` with a reason a person can act on.
    """
    text = text.strip()
    port_text: Optional[str] = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"expected HOST:PORT or [IPv6]:PORT, got {text!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:  # a bare host name or IPv4 address, or a bare IPv6 address
        host = text
    if not host:
        raise ValueError(f"expected HOST:PORT, got {text!r} (no host)")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port 1..65535, got {text!r}")
    return host, int(port_text)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


# -- HTTP ------------------------------------------------------------------------------


class AdminClient:
    """
    GETs JSON from admin APIs with urllib. Ignores proxy settings (admin
    ports are internal). The token goes only with mutating paths, in the
    ``X-Admin-Token`` header. Every failure is an :class:`AdminError` whose
    message starts with the address asked.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, token: Optional[str] = None) -> None:
        self.timeout = timeout
        self.token = token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, address: str, path: str, mutating: bool = False) -> Any:
        try:
            host, port = parse_address(address)
        except ValueError as e:
            raise AdminError(f"{address}: {e}", reason=str(e)) from None
        url = "http://%s%s" % (join_address(host, port), path)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if mutating and self.token is not None:
            request.add_header("X-Admin-Token", self.token)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            reason = self._refusal(e)
            raise AdminError(f"{address}{path}: {reason}", e.code, reason) from None
        except urllib.error.URLError as e:
            reason = self._reason(e.reason)
            raise AdminError(f"{address}: {reason}", reason=reason) from None
        except (OSError, http.client.HTTPException) as e:
            reason = self._reason(e)
            raise AdminError(f"{address}: {reason}", reason=reason) from None
        try:
            return json.loads(body)
        except ValueError:
            reason = "the answer is not JSON (is this a dynomite-py admin port?)"
            raise AdminError(f"{address}{path}: {reason}", reason=reason) from None

    def _reason(self, reason: Any) -> str:
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return f"no answer within {self.timeout:g} s"
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused (is the node running? is this its stats_listen address?)"
        if isinstance(reason, socket.gaierror):
            return f"cannot resolve the host name ({reason.strerror or reason})"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror[:1].lower() + reason.strerror[1:]
        if isinstance(reason, http.client.HTTPException):
            return f"not an HTTP answer ({type(reason).__name__})"
        return str(reason) or type(reason).__name__

    def _refusal(self, e: urllib.error.HTTPError) -> str:
        try:
            message = json.loads(e.read()).get("error") or ""
        except (ValueError, AttributeError, OSError):
            message = ""
        if e.code == 403:
            if self.token is None:
                return f"refused (403): this needs the cluster's admin token; pass --token or set ${ENV_TOKEN}"
            return "refused (403): the admin token was not accepted"
        return f"HTTP {e.code}: {message or e.reason}"


def parallel(fn: Callable[[T], R], items: Sequence[T]) -> List[Tuple[Optional[R], Optional[AdminError]]]:
    """``fn`` on every item at once: ``(value, None)`` or ``(None, AdminError)`` per item, in order."""
    if not items:
        return []

    def call(item: T) -> Tuple[Optional[R], Optional[AdminError]]:
        try:
            return fn(item), None
        except AdminError as e:
            return None, e

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(items))) as pool:
        return list(pool.map(call, items))


# -- the cluster as /cluster_describe tells it ------------------------------------------


def describe_nodes(describe: Mapping[str, Any], asked: Optional[str] = None) -> List[Dict[str, Any]]:
    """
    Every node of a /cluster_describe document, in its order, as flat dicts:
    dc, rack, name, host, port, tokens, state, local, admin, and ``why``
    (why ``admin`` is None, else None).

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
                        "state": server["state"], "local": bool(server.get("local")),
                    }
                    node["admin"], node["why"] = _admin_address(server, asked)
                    nodes.append(node)
    except (KeyError, TypeError, ValueError) as e:
        raise AdminError(f"unexpected /cluster_describe document ({type(e).__name__}: {e})") from None
    return nodes


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


def _rings(describe: Mapping[str, Any]) -> List[Tuple[str, str, List[Dict[str, Any]], Ring[str]]]:
    """(dc, rack, nodes, ring of node names) for every rack."""
    racks: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for node in describe_nodes(describe):
        racks.setdefault((node["dc"], node["rack"]), []).append(node)
    out = []
    for (dc, rack), nodes in racks.items():
        try:
            ring = Ring((token, n["name"]) for n in nodes for token in n["tokens"])
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
    tokens, ranges (inclusive ``[start, end]`` hash ranges it owns, adjacent
    ones merged; the smallest token's wrap-around share is two ranges) and
    share_percent (of the 2**32 hashes). The shares of a rack add up to 100.
    """
    rows = []
    for dc, rack, nodes, ring in _rings(describe):
        owned: Dict[str, List[Tuple[int, int]]] = {n["name"]: [] for n in nodes}
        for start, end, owner in ring.ranges():
            owned[owner].append((start, end))
        for n in nodes:
            ranges = _merge(owned[n["name"]])
            size = sum(end - start + 1 for start, end in ranges)
            rows.append({
                "dc": dc, "rack": rack, "node": n["name"], "state": n["state"], "tokens": n["tokens"],
                "ranges": [[start, end] for start, end in ranges],
                "share_percent": 100.0 * size / RING_SIZE,
            })
    return rows


def hash_owners(describe: Mapping[str, Any], key: bytes, hash_tag: Optional[bytes] = None) -> Dict[str, Any]:
    """
    The key's ring position and its owner in every rack of every DC:
    ``{"key", "hash", "hash_tag", "owners": [{dc, rack, node, token, state}]}``.
    """
    h = key_hash(key, hash_tag)
    owners = []
    for dc, rack, nodes, ring in _rings(describe):
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
        "datastore_up": None, "peers_up": None, "peers_total": None, "error": error,
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
    if before is not None and after is not None:
        row["ops_per_second"] = ops_per_second(request_count(before[0]), request_count(after[0]), after[1] - before[1])
    return row


# -- text -------------------------------------------------------------------------------------


def cell(value: Any) -> str:
    """How a value reads in a table: None is '-', booleans yes/no, floats with two decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart under a header row; no trailing spaces; ends with a newline."""
    text_rows = [[str(h) for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in text_rows) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in text_rows]
    return "\n".join(lines) + "\n"


def format_ranges(ranges: Sequence[Sequence[int]]) -> str:
    return ", ".join(f"{start}-{end}" for start, end in ranges)


def _summary(what: str, failures: List[Tuple[str, str]], total: int) -> Optional[str]:
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


# -- commands --------------------------------------------------------------------------------


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
          r["error"] or ""]
         for r in rows],
    )
    doc = {"node": args.node, "interval": args.interval, "nodes": rows}
    return Result(doc, table, _summary("could not be read", failed, len(rows)))


def cmd_ring(args: argparse.Namespace, client: AdminClient) -> Result:
    rows = ring_table(_describe(client, args.node))
    table = format_table(
        ["DC", "RACK", "NODE", "TOKENS", "RANGES", "SHARE"],
        [[r["dc"], r["rack"], r["node"], ",".join(map(str, r["tokens"])), format_ranges(r["ranges"]),
          f"{r['share_percent']:.2f}%"] for r in rows],
    )
    return Result({"racks": _group_racks(rows)}, table)


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
    return Result(doc, table, _summary(what, failed, len(rows)))


def cmd_hints(args: argparse.Namespace, client: AdminClient) -> Result:
    nodes = describe_nodes(_describe(client, args.node), args.node)
    if args.target_node == "all":
        chosen = nodes
    else:
        chosen = [n for n in nodes if n["name"] == args.target_node] or \
                 [n for n in nodes if n["admin"] == args.target_node]
        if not chosen:
            raise AdminError(f"no node {args.target_node} in the cluster (nodes: "
                             f"{', '.join(n['name'] for n in nodes)}; or all)")
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
    return Result(doc, table, _summary("failed", failed, len(chosen)))


COMMANDS: Dict[str, Callable[[argparse.Namespace, AdminClient], Result]] = {
    "status": cmd_status,
    "ring": cmd_ring,
    "hash": cmd_hash,
    "consistency": cmd_consistency,
    "hints": cmd_hints,
}


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
        sys.stdout.write(result.text)
    sys.stdout.flush()
    if result.error:
        print(f"{PROG}: {result.error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
