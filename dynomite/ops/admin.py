"""
The admin HTTP API on ``stats_listen``: Dynomite's paths, plus /metrics.

    GET /, /info                       JSON: identity, state, peers, counters, latency, hints
    GET /ping                          "pong"
    GET /help                          the paths below
    GET /cluster_describe              JSON: dcs -> racks -> nodes (host, port, tokens, state)
    GET /get_consistency               JSON: read and write consistency
    GET /set_consistency/<read|write>/<level>
    GET /get_timeout_factor, /set_timeout_factor/<1-10>
    GET /state/<get_state|standby|writes_only|resuming|normal>
    GET /peer/<up|down|reset>/<name|all>
    GET /hints/<target|all>/<pause|resume|truncate>
    GET /setloglevel/<0-11>
    GET /metrics                       Prometheus exposition

Every answer is JSON except /ping and /metrics.  When ``admin_token`` is
configured, paths that change something require it (header
``X-Admin-Token`` or query ``?token=``) and answer 403 without it.  Unknown
paths answer 404 (Dynomite answers them like /ping, which hides typos).
Mutating paths are GETs, as in Dynomite, so existing scripts keep working.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, Callable, Dict, List, Optional

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Site

from dynomite import __version__
from dynomite.stats import Histogram
from dynomite.config.vocabulary import CONSISTENCY_LEVELS as LEVELS, SETTABLE_STATES


HELP = [
    "/info", "/ping", "/help", "/cluster_describe", "/get_consistency",
    "/set_consistency/<read|write>/<level>", "/get_timeout_factor", "/set_timeout_factor/<1-10>",
    "/state/<get_state|standby|writes_only|resuming|normal>", "/peer/<up|down|reset>/<name|all>",
    "/hints/<target|all>/<pause|resume|truncate>", "/setloglevel/<0-11>", "/metrics",
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


def info(service) -> Dict[str, Any]:
    """The /info document."""
    node = service.node
    m = service.metrics
    config = service.config
    now = service.clock.seconds()
    requests = {family: {"ok": ok, "error": err} for family, (ok, err) in m.requests.items() if ok or err}
    ds = service.datastore
    peers = service.peers.values()
    peer_results: Dict[str, Dict[str, int]] = {}
    peer_latency: Dict[str, Histogram] = {}
    for link in peers:
        results = peer_results.setdefault(link.datacenter, {})
        for result, n in link.request_counts().items():
            results[result] = results.get(result, 0) + n
        peer_latency.setdefault(link.datacenter, Histogram()).add(link.latency)
    return {
        "service": "dynomite",
        "source": "dynomite-py",
        "version": __version__,
        "uptime": int(now - node.started),
        "timestamp": int(time.time()),
        "name": service.topology.local.name,
        "dc": config.datacenter,
        "rack": config.rack,
        "state": service.state,
        "read_consistency": service.coordinator.read_consistency,
        "write_consistency": service.coordinator.write_consistency,
        "timeout_factor": service.timeout_factor,
        "log_level": service.log_level,
        "peers": {name: link.state for name, link in sorted(service.peers.items())},
        "client": {
            "connections": len(node.clients),
            "accepted": node.connections_accepted,
            "protocol_errors": dict(m.protocol_errors),
            "requests": requests,
        },
        "datastore": {
            "address": str(config.datastore),
            "up": ds.is_up,
            "in_flight": ds.in_flight,
            "timeouts": ds.timed_out_total,
            "requests": ds.request_counts(),
            "latency_seconds": _percentiles(ds.latency),
        },
        "peer": {
            "in_flight": sum(link.in_flight for link in peers),
            "timeouts": sum(link.timed_out_total for link in peers),
            "ejections": sum(link.dropped_total for link in peers),
            "requests": {dc: results for dc, results in sorted(peer_results.items())},
            "latency_seconds": {dc: _percentiles(h) for dc, h in sorted(peer_latency.items())},
        },
        "replication": {
            "local_rack": {"acked": service.coordinator.local_writes[0],
                           "failed": service.coordinator.local_writes[1]},
            "remote_dc": {"acked": service.coordinator.remote_writes[0],
                          "failed": service.coordinator.remote_writes[1]},
        },
        "latency_seconds": {
            op: {"p50": h.quantile(0.5), "p99": h.quantile(0.99), "p999": h.quantile(0.999), "count": h.count}
            for op, h in (("read", m.read_latency), ("write", m.write_latency))
        },
        "hints": {target: outbox.stats(now) for target, outbox in sorted(service.outboxes.items())},
    }


def _percentiles(h: Histogram) -> Dict[str, Any]:
    """p50/p99 (bucket upper bounds) and how many samples they rest on."""
    return {"p50": h.quantile(0.5), "p99": h.quantile(0.99), "samples": h.count}


def cluster_describe(service) -> Dict[str, Any]:
    """The /cluster_describe document: dcs -> racks -> nodes."""
    topology = service.topology
    dcs: List[Dict[str, Any]] = []
    for dc in topology.datacenters:
        racks = []
        for rack in topology.racks(dc):
            servers = []
            for n in topology.nodes_in_rack(dc, rack):
                if n.is_local:
                    state = service.state
                    admin = str(service.config.stats_listen)
                else:
                    link = service.peers[n.name]
                    state = "NORMAL" if link.is_up else "DOWN"
                    admin = link.admin
                servers.append({"name": n.name, "host": n.address.host, "port": n.address.port,
                                "tokens": list(n.tokens), "state": state, "local": n.is_local,
                                "admin": admin})
            racks.append({"name": rack, "servers": servers})
        dcs.append({"name": dc, "racks": racks})
    return {"dcs": dcs}


class AdminResource(Resource):
    """Dispatches every admin path; see the module docstring."""

    isLeaf = True

    def __init__(self, service, token: Optional[str] = None) -> None:
        Resource.__init__(self)
        self.service = service
        self.token = token
        self._read: Dict[str, Callable[[List[str]], Any]] = {
            "": lambda parts: info(self.service),
            "info": lambda parts: info(self.service),
            "help": lambda parts: {"paths": HELP},
            "cluster_describe": lambda parts: cluster_describe(self.service),
            "get_consistency": lambda parts: self._consistency(),
            "get_timeout_factor": lambda parts: {"timeout_factor": self.service.timeout_factor},
        }
        self._write: Dict[str, Callable[[List[str]], Any]] = {
            "set_consistency": self._set_consistency,
            "set_timeout_factor": self._set_timeout_factor,
            "state": self._state,
            "peer": self._peer,
            "hints": self._hints,
            "setloglevel": self._setloglevel,
        }

    def render_GET(self, request) -> bytes:
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if parts == ["metrics"]:
            # Rendered in the reactor thread: prometheus_client's
            # MetricsResource is a WSGI resource run in a thread pool, which
            # would read the node's counters while the reactor changes them.
            request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
            return generate_latest(self.service.registry)
        if parts == ["ping"]:
            request.setHeader(b"Content-Type", b"text/plain")
            return b"pong\n"
        head = parts[0] if parts else ""
        try:
            if head in self._read and (len(parts) <= 1):
                body = self._read[head](parts)
            elif head == "state" and parts[1:] == ["get_state"]:
                body = {"state": self.service.state}
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
            return
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
        c = self.service.coordinator
        return {"read_consistency": c.read_consistency, "write_consistency": c.write_consistency}

    def _set_consistency(self, args: List[str]) -> Dict[str, str]:
        if len(args) != 2 or args[0] not in ("read", "write") or args[1].upper() not in LEVELS:
            raise HTTPError(400, "use /set_consistency/<read|write>/<%s>" % "|".join(l.lower() for l in LEVELS))
        setattr(self.service.coordinator, args[0] + "_consistency", args[1].upper())
        return self._consistency()

    def _set_timeout_factor(self, args: List[str]) -> Dict[str, int]:
        if len(args) != 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= 10:
            raise HTTPError(400, "use /set_timeout_factor/<1-10>")
        self.service.set_timeout_factor(int(args[0]))
        return {"timeout_factor": self.service.timeout_factor}

    def _state(self, args: List[str]) -> Dict[str, str]:
        states = {state.lower(): state for state in SETTABLE_STATES}
        if len(args) != 1 or args[0] not in states:
            raise HTTPError(400, "use /state/<get_state|%s>" % "|".join(states))
        self.service.set_state(states[args[0]])
        return {"state": self.service.state}

    def _peer(self, args: List[str]) -> Dict[str, Any]:
        if len(args) != 2 or args[0] not in ("up", "down", "reset"):
            raise HTTPError(400, "use /peer/<up|down|reset>/<name|all>")
        peers = self.service.peers
        names = sorted(peers) if args[1] == "all" else [args[1]]
        for name in names:
            if name not in peers:
                raise HTTPError(404, "no such peer: %s (peers: %s)" % (name, ", ".join(sorted(peers))))
        for name in names:
            link = peers[name]
            {"up": link.start, "down": link.stop, "reset": link.reset}[args[0]]()
        return {"peers": {name: peers[name].state for name in names}}

    def _hints(self, args: List[str]) -> Dict[str, Any]:
        outboxes = self.service.outboxes
        if len(args) != 2 or args[1] not in ("pause", "resume", "truncate"):
            raise HTTPError(400, "use /hints/<target|all>/<pause|resume|truncate>")
        targets = sorted(outboxes) if args[0] == "all" else [args[0]]
        for target in targets:
            if target not in outboxes:
                raise HTTPError(404, "no hints for %s (targets: %s)" % (target, ", ".join(sorted(outboxes))))
        now = self.service.clock.seconds()
        for target in targets:
            getattr(outboxes[target], args[1])()
        return {"hints": {t: outboxes[t].stats(now) for t in targets}}

    def _setloglevel(self, args: List[str]) -> Dict[str, Any]:
        if len(args) != 1 or not args[0].isdigit() or not 0 <= int(args[0]) <= 11:
            raise HTTPError(400, "use /setloglevel/<0-11>")
        level = self.service.set_log_level(int(args[0]))
        return {"loglevel": int(args[0]), "level": level}
