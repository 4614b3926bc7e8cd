# -*- test-case-name: tests.unit.test_seeds,tests.unit.test_srv_seeds -*-
"""
Seed providers: where a node learns who its peers are, besides ``dyn_seeds``.

``dyn_seed_provider`` names one of Dynomite's providers:

- ``simple_provider``: the static ``dyn_seeds`` (no source here);
- ``dns_provider`` (`DnsSeeds`): the TXT records of ``dns_seed_name``, one
  node per record, ``host=H port=P rack=R dc=D tokens=T`` (or Dynomite's
  ``host:port:rack:dc:tokens|...``), filtered by the name's A/AAAA records:
  a TXT host that is an IP address missing from them is not there (yet);
  with ``dns_seed_type: srv`` (`SrvSeeds`), the SRV records of the name
  instead: the pods of Kubernetes StatefulSets (below);
- ``florida_provider`` (`FloridaSeeds`): an HTTP GET of ``florida_url``
  whose body is ``host:port:rack:dc:tokens|...`` (Dynomite's florida.js), or
  a JSON string or list of such strings.

SRV records (a Kubernetes headless Service publishes, for its port named
``peer``, ``_peer._tcp.<service>.<namespace>.svc.cluster.local`` -> one
``<pod>.<service>.<namespace>.svc.cluster.local:<port>`` per pod) carry no
rack, datacenter or tokens, and Kubernetes DNS serves no TXT, so with
``dns_seed_type: srv`` a node reads them from the pod's name, by the
convention deploy/kubernetes follows (one StatefulSet ``<app>-<dc>-<rack>``
per rack; `srv_seeds`):

- the first label of an SRV target is the pod name
  ``<app>-<dc>-<rack>-<ordinal>``: its last three ``-``-separated fields
  are the datacenter, the rack and the StatefulSet ordinal (so datacenter
  and rack names hold no ``-``);
- its token is ``ordinal * (2**32 // size)``, ``size`` being the rack's
  ``dns_seed_rack_size`` (the StatefulSet's replicas): what
  deploy/docker/render-config.sh gives the pod itself, and what the
  launcher's ``rack_tokens`` gives;
- the seed's host is the SRV target itself (the pod's stable name, which
  the pod advertises with ``dyn_advertise``), its port the SRV port; peers
  resolve the name again on every reconnection.

A list in which a rack lacks an ordinal below its size, or a rack seen
before is missing, is refused as a whole (the node keeps its current
peers): a pod being restarted leaves DNS for a while, and dropping it
would hand its tokens to another pod of its rack, or its rack's replicas
to nobody.  Writes for it are hinted meanwhile, as for any peer that is
down.  (So a rack is removed by restarting the nodes, not by DNS alone.)

A source's ``fetch()`` returns a Deferred firing with the seeds, parsed and
checked as ``dyn_seeds`` entries are (`parse_seed_text`, `parse_txt_records`,
`srv_seeds` do no I/O).  `SeedPoller` fetches every ``gos_interval`` and hands a list
that changed to ``apply`` -- the node's reload path
(`dynomite.node.control.NodeControl.apply_seeds`), which adds and removes
peers as SIGHUP does.  A failed fetch keeps the current peers.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from dynomite.config.keys import parse_seed
from dynomite.config.model import Address, NodeConfig, Seed
from dynomite.config.vocabulary import RING_SIZE
from dynomite.config.yamlio import Invalid

__all__ = [
    "DEFAULT_DNS_NAME", "DEFAULT_FLORIDA_URL", "DnsSeeds", "FloridaSeeds", "SeedError", "SeedPoller",
    "SrvSeeds", "florida_url", "make_source", "parse_pod_name", "parse_seed_text", "parse_txt_records",
    "pod_token", "rack_size", "srv_seeds",
]

#: Dynomite's defaults when neither the config nor the environment says.
DEFAULT_DNS_NAME = "_dynomite.ec2-internal"
DEFAULT_FLORIDA_URL = "http://127.0.0.1:8080/REST/v1/admin/get_seeds"
DEFAULT_PEER_PORT = 8101


class SeedError(Exception):
    """A seed list that cannot be read; the message says which entry and why."""


def _seed(text: str, where: str) -> Seed:
    try:
        return parse_seed(text.strip())
    except Invalid as e:
        raise SeedError("%s: %r: %s" % (where, text.strip(), e)) from None


def parse_seed_text(text: str, where: str = "seed list") -> Tuple[Seed, ...]:
    """Dynomite's ``host:port:rack:dc:tokens`` entries joined by ``|`` (or newlines)."""
    entries = [e for e in text.replace("\n", "|").split("|") if e.strip()]
    return tuple(_seed(entry, where) for entry in entries)


def _txt_seed(text: str) -> Seed:
    """One ``key=value`` TXT record: host, port (default 8101), rack, dc, tokens."""
    fields: Dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or key not in ("host", "port", "rack", "dc", "tokens"):
            raise SeedError("TXT record %r: expected host= port= rack= dc= tokens=, got %r" % (text, word))
        fields[key] = value
    missing = [k for k in ("host", "rack", "dc", "tokens") if k not in fields]
    if missing:
        raise SeedError("TXT record %r: missing %s" % (text, ", ".join(missing)))
    host = fields["host"]
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host
    return _seed("%s:%s:%s:%s:%s" % (host, fields.get("port", DEFAULT_PEER_PORT), fields["rack"],
                                     fields["dc"], fields["tokens"]), "TXT record")


def _is_ip(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except (OSError, ValueError):
            pass
    return False


def parse_txt_records(texts: Iterable[str], addresses: Set[str]) -> Tuple[Seed, ...]:
    """
    The seeds a name's TXT records describe, keeping only hosts that are
    present: an IP-address host must be among ``addresses`` (the name's
    A/AAAA records) unless there are none; a hostname always counts.
    """
    seeds: List[Seed] = []
    for text in texts:
        if "=" in text:
            found: Tuple[Seed, ...] = (_txt_seed(text),)
        else:
            found = parse_seed_text(text, "TXT record")
        for seed in found:
            host = seed.address.host
            if addresses and _is_ip(host) and host not in addresses:
                continue
            seeds.append(seed)
    return tuple(seeds)


class DnsSeeds:
    """
    ``dns_provider``: seeds from the TXT and A/AAAA records of ``name``,
    asked of ``resolver`` (a ``twisted.names`` `IResolver`).
    """

    def __init__(self, name: str, resolver) -> None:
        self.name = name
        self._resolver = resolver

    def __str__(self) -> str:
        return "DNS %s" % self.name

    @defer.inlineCallbacks
    def fetch(self):
        from twisted.names import dns

        txt, a, aaaa = yield defer.DeferredList([
            self._resolver.lookupText(self.name),
            self._resolver.lookupAddress(self.name),
            self._resolver.lookupIPV6Address(self.name),
        ], consumeErrors=True)
        if not txt[0]:
            raise SeedError("no TXT records for %s (%s)" % (self.name, txt[1].getErrorMessage()))
        texts = [b"".join(r.payload.data).decode("utf-8", "replace")
                 for r in txt[1][0] if r.type == dns.TXT]
        addresses: Set[str] = set()
        for ok, result in (a, aaaa):
            if ok:
                for r in result[0]:
                    if r.type == dns.A:
                        addresses.add(r.payload.dottedQuad())
                    elif r.type == dns.AAAA:
                        addresses.add(socket.inet_ntop(socket.AF_INET6, r.payload.address))
        return parse_txt_records(texts, addresses)


# -- SRV records: the pods of Kubernetes StatefulSets ---------------------------


def parse_pod_name(host: str) -> Tuple[str, str, int]:
    """``(datacenter, rack, ordinal)`` of ``<app>-<dc>-<rack>-<ordinal>[.domain]``; SeedError if it is not one."""
    label = host.rstrip(".").split(".", 1)[0]
    fields = label.split("-")
    if len(fields) < 4 or not all(fields[-4:-1]) or not fields[-1].isdigit() or not fields[-1].isascii():
        raise SeedError("SRV target %r: expected a pod name <app>-<datacenter>-<rack>-<ordinal>" % host)
    return fields[-3], fields[-2], int(fields[-1])


def rack_size(sizes: Sequence[Tuple[str, int]], rack: str) -> Optional[int]:
    """The size ``dns_seed_rack_size`` gives ``rack``: its own entry, else the one for every rack (``*``)."""
    found = dict(sizes)
    return found.get(rack, found.get("*"))


def pod_token(ordinal: int, size: int) -> int:
    """The token of a rack's pod ``ordinal`` among ``size``: ``ordinal * (2**32 // size)``."""
    return ordinal * (RING_SIZE // size)


def srv_seeds(targets: Iterable[Tuple[str, int]], sizes: Sequence[Tuple[str, int]],
              racks: Iterable[Tuple[str, str]] = ()) -> Tuple[Seed, ...]:
    """
    The seeds that SRV ``(target, port)`` pairs describe (see the module
    docstring); SeedError for a target that is no pod name, an ordinal not
    below its rack's size, two targets at one place, a rack missing one,
    or a rack of ``racks`` (``(dc, rack)`` seen before) missing altogether.
    """
    places: Dict[Tuple[str, str, int], str] = {}
    seeds: List[Seed] = []
    for target, port in targets:
        host = target.rstrip(".").lower()
        dc, rack, ordinal = parse_pod_name(host)
        size = rack_size(sizes, rack)
        if size is None:
            raise SeedError("SRV target %r: rack %r has no dns_seed_rack_size" % (host, rack))
        if ordinal >= size:
            raise SeedError("SRV target %r: ordinal %d is not below rack %s's size %d (dns_seed_rack_size)"
                            % (host, ordinal, rack, size))
        other = places.setdefault((dc, rack, ordinal), host)
        if other != host:
            raise SeedError("SRV targets %r and %r are both pod %d of %s/%s" % (other, host, ordinal, dc, rack))
        seeds.append(Seed(Address(host, port), rack, dc, (pod_token(ordinal, size),)))
    present: Dict[Tuple[str, str], Set[int]] = {}
    for dc, rack, ordinal in places:
        present.setdefault((dc, rack), set()).add(ordinal)
    gone = sorted(set(racks) - set(present))
    if gone:
        raise SeedError("rack(s) %s gone from DNS (restarting?)" % ", ".join("%s/%s" % r for r in gone))
    for (dc, rack), ordinals in sorted(present.items()):
        missing = sorted(set(range(rack_size(sizes, rack) or 0)) - ordinals)
        if missing:
            raise SeedError("rack %s/%s lacks pod(s) %s in DNS (restarting?)"
                            % (dc, rack, ", ".join(map(str, missing))))
    return tuple(sorted(seeds, key=lambda s: (s.datacenter, s.rack, s.tokens)))


class SrvSeeds:
    """
    ``dns_provider`` with ``dns_seed_type: srv``: the SRV records of
    ``name``, asked of ``resolver`` (a ``twisted.names`` `IResolver`), read
    with the rack sizes ``sizes`` (``dns_seed_rack_size``).
    """

    def __init__(self, name: str, resolver, sizes: Sequence[Tuple[str, int]]) -> None:
        self.name = name
        self._resolver = resolver
        self._sizes = tuple(sizes)
        #: (dc, rack) of every rack a list applied so far named: none may go missing
        self.racks: Set[Tuple[str, str]] = set()

    def __str__(self) -> str:
        return "DNS SRV %s" % self.name

    @defer.inlineCallbacks
    def fetch(self):
        from twisted.names import dns

        try:
            answers, _authority, _additional = yield self._resolver.lookupService(self.name)
        except Exception as e:
            raise SeedError("no SRV records for %s (%s: %s)" % (self.name, type(e).__name__, e)) from None
        targets = [(r.payload.target.name.decode("ascii", "replace"), r.payload.port)
                   for r in answers if r.type == dns.SRV]
        if not targets:
            raise SeedError("no SRV records for %s" % self.name)
        seeds = srv_seeds(targets, self._sizes, self.racks)
        self.racks.update((s.datacenter, s.rack) for s in seeds)
        return seeds


class FloridaSeeds:
    """
    ``florida_provider``: an HTTP GET of ``url``; ``get(url)`` returns a
    Deferred firing with ``(status code, body bytes)``.
    """

    def __init__(self, url: str, get: Callable[[str], Any]) -> None:
        self.url = url
        self._get = get

    def __str__(self) -> str:
        return "florida %s" % self.url

    @defer.inlineCallbacks
    def fetch(self):
        code, body = yield self._get(self.url)
        if code != 200:
            raise SeedError("%s answered HTTP %s" % (self.url, code))
        return parse_florida(body)


def parse_florida(body: bytes) -> Tuple[Seed, ...]:
    """A florida body: ``a|b|...`` text, or a JSON string or list of such strings."""
    text = body.decode("utf-8", "replace").strip()
    if text[:1] in ('"', "["):
        try:
            value = json.loads(text)
        except ValueError:
            raise SeedError("florida body is not valid JSON: %r" % text[:80]) from None
        if isinstance(value, str):
            text = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            text = "|".join(value)
        else:
            raise SeedError("florida body: expected a string or a list of strings, got %r" % text[:80])
    return parse_seed_text(text, "florida seed list")


def florida_url(config: NodeConfig, environ: Mapping[str, str]) -> str:
    """``florida_url``, else Dynomite's ``DYNOMITE_FLORIDA_IP/PORT/REQUEST``, else its default."""
    if config.florida_url is not None:
        return config.florida_url
    ip = environ.get("DYNOMITE_FLORIDA_IP", "127.0.0.1")
    port = environ.get("DYNOMITE_FLORIDA_PORT", "8080")
    request = environ.get("DYNOMITE_FLORIDA_REQUEST", "/REST/v1/admin/get_seeds").strip()
    if request.startswith("GET "):   # Dynomite's C code takes a whole raw request
        request = request.split()[1]
    host = "[%s]" % ip if ":" in ip else ip
    return "http://%s:%s%s" % (host, port, request)


def _web_get(reactor, timeout: float) -> Callable[[str], Any]:
    from twisted.web.client import Agent, readBody

    agent = Agent(reactor, connectTimeout=timeout)

    @defer.inlineCallbacks
    def get(url: str):
        d = agent.request(b"GET", url.encode("ascii"))
        d.addTimeout(timeout, reactor)
        response = yield d
        body = yield readBody(response)
        return response.code, body

    return get


def make_source(config: NodeConfig, reactor, environ: Mapping[str, str] = os.environ):
    """The source ``dyn_seed_provider`` names, or None for ``simple_provider``."""
    if config.seed_provider == "dns_provider":
        from twisted.names import client

        name = config.dns_seed_name or environ.get("DYNOMITE_DNS_NAME") or DEFAULT_DNS_NAME
        server: Optional[Address] = config.dns_seed_server
        # each try waits up to ``timeout``; a poll gives up after two
        tries = (config.timeout, config.timeout)
        if server is not None:
            resolver = client.Resolver(servers=[(server.host, server.port)], timeout=tries, reactor=reactor)
        else:
            resolver = client.Resolver(resolv="/etc/resolv.conf", timeout=tries, reactor=reactor)
        if config.dns_seed_type == "srv":
            return SrvSeeds(name, resolver, config.dns_seed_rack_size)
        return DnsSeeds(name, resolver)
    if config.seed_provider == "florida_provider":
        return FloridaSeeds(florida_url(config, environ), _web_get(reactor, config.timeout))
    return None


class SeedPoller:
    """
    Fetches from ``source`` on each `poll` and hands a seed list that
    differs from the last one applied to ``apply(seeds) -> bool`` (False:
    refused, tried again at the next poll).  `poll` never fails: a
    failure is logged and counted, and the current peers stay.
    """

    log = Logger()

    def __init__(self, source, apply: Callable[[Tuple[Seed, ...]], bool]) -> None:
        self.source = source
        self._apply = apply
        self.applied: Optional[Tuple[Seed, ...]] = None
        self.polls = 0
        self.failures = 0
        self._last_error: Optional[str] = None

    @defer.inlineCallbacks
    def poll(self):
        self.polls += 1
        try:
            seeds = yield self.source.fetch()
        except Exception as e:
            self.failures += 1
            reason = "%s: %s" % (type(e).__name__, e) if not isinstance(e, SeedError) else str(e)
            if reason != self._last_error:
                self._last_error = reason
                self.log.warn("seeds from {source} unavailable, keeping the current peers: {reason}",
                              source=str(self.source), reason=reason)
            return None
        self._last_error = None
        key = tuple(sorted(seeds, key=str))
        if key == self.applied:
            return seeds
        if self._apply(seeds):
            self.applied = key
        return seeds
