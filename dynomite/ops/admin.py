# -*- test-case-name: tests.unit.test_admin -*-
"""
The admin HTTP API on ``stats_listen``: Dynomite's paths, plus /metrics.

    GET /, /info                       JSON: identity, state, peers, counters, latency, hints
    GET /ping                          "pong" (liveness)
    GET /ready                         200 "NORMAL" only in NORMAL, else 503 and the state (readiness)
    GET /help                          the paths below
    GET /cluster_describe              JSON: dcs -> racks -> nodes (host, port, tokens, state)
    GET /get_consistency               JSON: read and write consistency
    GET /set_consistency/<read|write>/<level>
    GET /get_timeout_factor, /set_timeout_factor/<1-10>
    GET /state/<get_state|standby|writes_only|resuming|normal>
    GET /peer/<up|down|reset>/<name|all>
    GET /hints/<target|all>/<pause|resume|truncate>
    GET /setloglevel/<0-11>
    GET /repair                        JSON: the running and last anti-entropy repair, warm-up
    GET /repair/start?dry_run=1&source=dc/rack&all_dcs=1&rate=N   start one (409 if one runs)
    GET /repair/cancel                 stop the running one after its current step
    GET /gossip                        JSON: the gossiped cluster view (enable_gossip)
    GET /gossip/remove/<name>          mark a node gone for good (LEFT) in the view
    GET /scaleout                      JSON: this node's join or leave, its phase and copy progress
    GET /decommission                  this node leaves its rack (409 and why when it may not)
    GET /metrics                       Prometheus exposition

Every answer is JSON except /ping, /ready and /metrics.  When ``admin_token`` is
configured, paths that change something require it (header
``X-Admin-Token`` or query ``?token=``) and answer 403 without it; when it
is not, they answer only clients on a loopback address (``stats_listen``
is on loopback by default), so a node reachable from other hosts can be
changed from them only with the token.  Unknown
paths answer 404 (Dynomite answers them like /ping, which hides typos).
Mutating paths are GETs, as in Dynomite, so existing scripts keep working.

The resource knows the node only through a `NodeStatus` (what it reads), an
`INodeControl` (what it changes), the metrics registry, and the node's
`dynomite.scaleout.manager.ScaleOut` for the one change that is not a
setting (/decommission starts a leave; None when gossip is off); see
`dynomite.ops.status`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Site

from dynomite import __version__
from dynomite.config.vocabulary import CONSISTENCY_LEVELS as LEVELS, NORMAL, SETTABLE_STATES
from dynomite.node.control import INodeControl
from dynomite.ops.status import NodeStatus
from dynomite.repair.manager import RepairBusy
from dynomite.repair.run import RepairOptions
from dynomite.stats import Histogram


HELP = [
    "/info", "/ping", "/ready", "/help", "/cluster_describe", "/get_consistency",
    "/set_consistency/<read|write>/<level>", "/get_timeout_factor", "/set_timeout_factor/<1-10>",
    "/state/<get_state|standby|writes_only|resuming|normal>", "/peer/<up|down|reset>/<name|all>",
    "/hints/<target|all>/<pause|resume|truncate>", "/setloglevel/<0-11>", "/metrics",
    "/repair", "/repair/start[?dry_run=1&source=<dc/rack>&all_dcs=1&rate=<keys/s>]", "/repair/cancel",
    "/gossip", "/gossip/remove/<name>", "/scaleout", "/decommission",
]


class AdminSite(Site):
    """The admin site, without an access-log line per request (scrapes are frequent)."""

    noisy = False

    def log(self, request) -> None:
        pass


class HTTPError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def info(status: NodeStatus) -> Dict[str, Any]:
    """The /info document."""
    m = status.metrics
    now = status.now()
    requests = {family: {"ok": ok, "error": err} for family, (ok, err) in m.requests.items() if ok or err}
    ds = status.datastore()
    peers = status.peers()
    peer_results: Dict[str, Dict[str, int]] = {}
    peer_latency: Dict[str, Histogram] = {}
    for link in peers:
        results = peer_results.setdefault(link.datacenter, {})
        for result, n in link.requests.items():
            results[result] = results.get(result, 0) + n
        peer_latency.setdefault(link.datacenter, Histogram()).add(link.latency)
    hints = status.hints(now)
    replication = status.replica_writes(hints)
    return {
        "service": "dynomite",
        "source": "dynomite-py",
        "version": __version__,
        "uptime": int(status.uptime(now)),
        "timestamp": int(time.time()),
        "name": status.name,
        "dc": status.datacenter,
        "rack": status.rack,
        "state": status.state,
        "read_consistency": status.read_consistency,
        "write_consistency": status.write_consistency,
        "timeout_factor": status.timeout_factor,
        "log_level": status.log_level,
        "peers": status.peer_states(),
        "client": {
            "connections": status.client_connections,
            "accepted": status.connections_accepted,
            "floods": status.client_floods,
            "flooders": status.client_flooders,
            "flooded": status.client_flooded(now),
            "protocol_errors": dict(m.protocol_errors),
            "limits": dict(m.client_limits),
            "requests": requests,
        },
        "pubsub": {
            "messages": dict(m.pubsub),
            "subscriptions": dict(m.pubsub_subscriptions),
        },
        "datastore": {
            "address": ds.address,
            "up": ds.up,
            "in_flight": ds.in_flight,
            "timeouts": ds.timeouts,
            "requests": ds.requests,
            "latency_seconds": _percentiles(ds.latency),
        },
        "peer": {
            "in_flight": sum(link.in_flight for link in peers),
            "timeouts": sum(link.timeouts for link in peers),
            "ejections": sum(link.ejections for link in peers),
            "tls": sorted(link.name for link in peers if link.tls),
            "tls_refusals": dict(m.peer_tls_refusals),
            "requests": {dc: results for dc, results in sorted(peer_results.items())},
            "latency_seconds": {dc: _percentiles(h) for dc, h in sorted(peer_latency.items())},
        },
        "replication": {scope: {"acked": n["acked"], "failed": n["failed"]} for scope, n in replication.items()},
        "write_order": status.write_order(),
        "latency_seconds": {
            op: {"p50": h.quantile(0.5), "p99": h.quantile(0.99), "p999": h.quantile(0.999), "count": h.count}
            for op, h in (("read", m.read_latency), ("write", m.write_latency))
        },
        "hints": hints,
        "repair": status.repair(now),
        "gossip": status.gossip(),
        "scaleout": status.scaleout(),
    }


def _percentiles(h: Histogram) -> Dict[str, Any]:
    """p50/p99 (bucket upper bounds) and how many samples they rest on."""
    return {"p50": h.quantile(0.5), "p99": h.quantile(0.99), "samples": h.count}


def cluster_describe(status: NodeStatus) -> Dict[str, Any]:
    """
    The /cluster_describe document: dcs -> racks -> nodes, each node with
    its ``status`` on the ring (NORMAL, JOINING, LEAVING), and each rack
    with the hash ranges ``moving`` from one owner to another meanwhile.
    """
    dcs: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    for n in status.ring():
        servers = dcs.setdefault(n.datacenter, {}).setdefault(n.rack, [])
        servers.append({"name": n.name, "host": n.host, "port": n.port, "tokens": list(n.tokens),
                        "state": n.state, "status": n.status, "local": n.local, "admin": n.admin})
    moving: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for m in status.moving_ranges():
        moving.setdefault((m.datacenter, m.rack), []).append(
            {"start": m.start, "end": m.end, "from": m.source, "to": m.target})
    return {"dcs": [{"name": dc, "racks": [{"name": rack, "servers": servers, "moving": moving.get((dc, rack), [])}
                                           for rack, servers in racks.items()]}
                    for dc, racks in dcs.items()]}


class AdminResource(Resource):
    """
    Dispatches every admin path; see the module docstring.

    Reads come from ``status`` (a `NodeStatus`), changes go to ``control``
    (an `INodeControl`), /metrics renders ``registry``.
    """

    isLeaf = True

    def __init__(self, status: NodeStatus, control: INodeControl, registry: CollectorRegistry,
                 admin_token: Optional[str] = None, scaleout=None) -> None:
        Resource.__init__(self)
        self.status = status
        self.control = control
        self.registry = registry
        self.token = admin_token
        self.scaleout = scaleout
        self._read: Dict[str, Callable[[List[str]], Any]] = {
            "": lambda parts: info(self.status),
            "info": lambda parts: info(self.status),
            "help": lambda parts: {"paths": HELP},
            "cluster_describe": lambda parts: cluster_describe(self.status),
            "get_consistency": lambda parts: self._consistency(),
            "get_timeout_factor": lambda parts: {"timeout_factor": self.status.timeout_factor},
            "repair": lambda parts: self.status.repair(self.status.now()),
            "gossip": lambda parts: self.status.gossip(),
            "scaleout": lambda parts: self.status.scaleout(),
        }
        self._write: Dict[str, Callable[[List[str]], Any]] = {
            "set_consistency": self._set_consistency,
            "set_timeout_factor": self._set_timeout_factor,
            "state": self._state,
            "peer": self._peer,
            "hints": self._hints,
            "setloglevel": self._setloglevel,
            "gossip": self._gossip,
            "decommission": self._decommission,
        }

    def render_GET(self, request) -> bytes:
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if parts == ["metrics"]:
            # Rendered in the reactor thread: prometheus_client's
            # MetricsResource is a WSGI resource run in a thread pool, which
            # would read the node's counters while the reactor changes them.
            request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
            return generate_latest(self.registry)
        if parts == ["ping"]:
            request.setHeader(b"Content-Type", b"text/plain")
            return b"pong\n"
        if parts == ["ready"]:
            state = self.status.ready_state
            request.setHeader(b"Content-Type", b"text/plain")
            if state != NORMAL:
                request.setResponseCode(503)
            return state.encode("ascii") + b"\n"
        head = parts[0] if parts else ""
        try:
            if head in self._read and (len(parts) <= 1):
                body = self._read[head](parts)
            elif head == "state" and parts[1:] == ["get_state"]:
                body = {"state": self.status.state}
            elif head == "repair" and len(parts) == 2:
                self._authorise(request)
                body = self._repair(parts[1], request.args)
            elif head in self._write:
                self._authorise(request)
                body = self._write[head](parts[1:])
            else:
                raise HTTPError(404, "no such path: /%s (see /help)" % "/".join(parts))
        except HTTPError as e:
            request.setResponseCode(e.code)
            body = {"error": e.message}
        request.setHeader(b"Content-Type", b"application/json")
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8")

    def _authorise(self, request) -> None:
        if self.token is None:
            if _loopback(getattr(request.getClientAddress(), "host", "")):
                return
            raise HTTPError(403, "this path needs admin_token to be configured when asked from "
                                 "another host")
        given = request.getHeader(b"x-admin-token")
        if given is None:
            values = request.args.get(b"token")
            given = values[0] if values else b""
        elif isinstance(given, str):
            given = given.encode("utf-8")
        if not hmac.compare_digest(given, self.token.encode("utf-8")):
            raise HTTPError(403, "this path needs the admin token (X-Admin-Token header or ?token=)")

    # -- handlers ------------------------------------------------------------

    def _consistency(self) -> Dict[str, str]:
        s = self.status
        return {"read_consistency": s.read_consistency, "write_consistency": s.write_consistency}

    def _set_consistency(self, args: List[str]) -> Dict[str, str]:
        if len(args) != 2 or args[0] not in ("read", "write") or args[1].upper() not in LEVELS:
            raise HTTPError(400, "use /set_consistency/<read|write>/<%s>" % "|".join(l.lower() for l in LEVELS))
        self.control.set_consistency(args[0], args[1].upper())
        return self._consistency()

    def _set_timeout_factor(self, args: List[str]) -> Dict[str, int]:
        if len(args) != 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= 10:
            raise HTTPError(400, "use /set_timeout_factor/<1-10>")
        self.control.set_timeout_factor(int(args[0]))
        return {"timeout_factor": self.status.timeout_factor}

    def _state(self, args: List[str]) -> Dict[str, str]:
        states = {state.lower(): state for state in SETTABLE_STATES}
        if len(args) != 1 or args[0] not in states:
            raise HTTPError(400, "use /state/<get_state|%s>" % "|".join(states))
        self.control.set_state(states[args[0]])
        return {"state": self.status.state}

    def _peer(self, args: List[str]) -> Dict[str, Any]:
        actions = {"up": self.control.peer_up, "down": self.control.peer_down, "reset": self.control.peer_reset}
        if len(args) != 2 or args[0] not in actions:
            raise HTTPError(400, "use /peer/<up|down|reset>/<name|all>")
        known = self.status.peer_names()
        names = known if args[1] == "all" else [args[1]]
        for name in names:
            if name not in known:
                raise HTTPError(404, "no such peer: %s (peers: %s)" % (name, ", ".join(known)))
        for name in names:
            actions[args[0]](name)
        return {"peers": self.status.peer_states(names)}

    def _gossip(self, args: List[str]) -> Dict[str, Any]:
        if len(args) != 2 or args[0] != "remove":
            raise HTTPError(400, "use /gossip/remove/<name>")
        try:
            self.control.remove_node(args[1])
        except LookupError as e:
            raise HTTPError(404, str(e).strip("'\""))
        except ValueError as e:
            raise HTTPError(400, str(e))
        return self.status.gossip()

    def _decommission(self, args: List[str]) -> Dict[str, Any]:
        if args:
            raise HTTPError(404, "use /decommission (this node leaves; ask the node that should)")
        if self.scaleout is None:
            raise HTTPError(400, "gossip is off on this node (enable_gossip): it cannot leave while serving")
        why = self.scaleout.decommission()
        if why is not None:
            raise HTTPError(409, why)
        return self.status.scaleout()

    def _hints(self, args: List[str]) -> Dict[str, Any]:
        actions = {"pause": self.control.pause_hints, "resume": self.control.resume_hints,
                   "truncate": self.control.truncate_hints}
        if len(args) != 2 or args[1] not in actions:
            raise HTTPError(400, "use /hints/<target|all>/<pause|resume|truncate>")
        known = self.status.hint_targets()
        targets = known if args[0] == "all" else [args[0]]
        for target in targets:
            if target not in known:
                raise HTTPError(404, "no hints for %s (targets: %s)" % (target, ", ".join(known)))
        for target in targets:
            actions[args[1]](target)
        return {"hints": self.status.hints(self.status.now(), targets)}

    def _repair(self, action: str, query: Dict[bytes, List[bytes]]) -> Dict[str, Any]:
        if action == "cancel":
            return {"cancelled": self.control.cancel_repair(), "repair": self.status.repair(self.status.now())}
        if action != "start":
            raise HTTPError(404, "use /repair, /repair/start or /repair/cancel")
        args = {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace") for k, v in query.items()}
        unknown = set(args) - {"dry_run", "source", "all_dcs", "rate", "token"}
        if unknown:
            raise HTTPError(400, "unknown repair option %s (dry_run, source, all_dcs, rate)" % sorted(unknown)[0])
        rate = args.get("rate", str(self.status.repair(self.status.now())["rate"]))
        if not rate.isdigit():
            raise HTTPError(400, "rate must be keys per second (0: no limit), got %r" % rate)
        options = RepairOptions(dry_run=args.get("dry_run") in ("1", "true", "yes"), source=args.get("source"),
                                all_datacenters=args.get("all_dcs") in ("1", "true", "yes"), rate=int(rate))
        try:
            self.control.start_repair(options)
        except RepairBusy as e:
            raise HTTPError(409, str(e))
        except ValueError as e:
            raise HTTPError(400, str(e))
        return self.status.repair(self.status.now())

    def _setloglevel(self, args: List[str]) -> Dict[str, Any]:
        if len(args) != 1 or not args[0].isdigit() or not 0 <= int(args[0]) <= 11:
            raise HTTPError(400, "use /setloglevel/<0-11>")
        level = self.control.set_log_level(int(args[0]))
        return {"loglevel": int(args[0]), "level": level}


def _loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
