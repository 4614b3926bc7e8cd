# -*- test-case-name: tests.unit.test_seeds -*-
"""
Seed providers: where a node learns who its peers are, besides ``dyn_seeds``.

``dyn_seed_provider`` names one of Dynomite's providers:

- ``simple_provider``: the static ``dyn_seeds`` (no source here);
- ``dns_provider`` (`DnsSeeds`): the TXT records of ``dns_seed_name``, one
  node per record, ``host=H port=P rack=R dc=D tokens=T`` (or Dynomite's
  ``host:port:rack:dc:tokens|...``), filtered by the name's A/AAAA records:
  a TXT host that is an IP address missing from them is not there (yet);
- ``florida_provider`` (`FloridaSeeds`): an HTTP GET of ``florida_url``
  whose body is ``host:port:rack:dc:tokens|...`` (Dynomite's florida.js), or
  a JSON string or list of such strings.

A source's ``fetch()`` returns a Deferred firing with the seeds, parsed and
checked as ``dyn_seeds`` entries are (`parse_seed_text`, `parse_txt_records`
do no I/O).  `SeedPoller` fetches every ``gos_interval`` and hands a list
that changed to ``apply`` -- the node's reload path
(`dynomite.node.control.NodeControl.apply_seeds`), which adds and removes
peers as SIGHUP does.  A failed fetch keeps the current peers.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from dynomite.config.keys import parse_seed
from dynomite.config.model import Address, NodeConfig, Seed
from dynomite.config.yamlio import Invalid

__all__ = [
    "DEFAULT_DNS_NAME", "DEFAULT_FLORIDA_URL", "DnsSeeds", "FloridaSeeds", "SeedError", "SeedPoller",
    "florida_url", "make_source", "parse_seed_text", "parse_txt_records",
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
