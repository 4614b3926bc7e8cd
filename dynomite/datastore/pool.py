# -*- test-case-name: tests.unit.test_datastore -*-
"""
The data path to the local Redis: a pool of pipelined raw-RESP connections.

The connections are `dynomite.datastore.protocol.DatastoreProtocol`, each
kept up by a `dynomite.datastore.link.DatastoreLink`; this module owns the
pool: which connection a request goes on (its lane's, among the UP
connections of its RESP version), ejection, the timeout sweeper and the
counters.

Failures are counted across the pool.  With ``auto_eject_hosts`` the
datastore is ejected after ``server_failure_limit`` consecutive failures:
reconnects pause for ``server_retry_timeout`` (Dynomite's behaviour), unless
the health monitor sees Redis answer again sooner and calls `retry_now`.
While no connection is up, requests fail at once with
``-ERR datastore unavailable``; a request without a reply after ``timeout``
fails every request on its connection and drops it, since in-order matching
can no longer be trusted.  "Without a reply" means the connection made no
progress: a deep pipeline that Redis answers steadily never times out.

Credentials and TLS: with ``datastore_password`` (and ``datastore_username``)
every connection authenticates before it carries requests (`greeting`:
``AUTH``, or ``HELLO 3 AUTH`` on a RESP3 connection); with ``datastore_tls``
it reaches Redis over TLS, verifying Redis's certificate against
``tls_ca_cert_file`` and the host of ``servers`` and presenting the node's
certificate (`dynomite.runtime.tls.NodeTLS.datastore_client`).

Counting is cheap: each connection bumps plain integers and the `Datastore`
keeps the totals of closed connections, so nothing is lost when one goes
away; sampled latency goes into the `Datastore`'s `Histogram`.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Set

from twisted.application.service import Service
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dynomite.commands import lww
from dynomite.config.model import Address, NodeConfig
from dynomite.config.vocabulary import LAST_WRITER_WINS
from dynomite.datastore.link import DatastoreLink
from dynomite.datastore.protocol import HELLO_3, UNAVAILABLE, DatastoreProtocol
from dynomite.runtime.reconnect import UP, WAITING, Backoff
from dynomite.runtime.tls import ReloadingTLSEndpoint
from dynomite.stats import Histogram
from dynomite.wire.inflight import Request
from dynomite.wire.resp import encode_command


def _greetings(username: Optional[str], password: Optional[str]) -> Dict[int, Optional[bytes]]:
    """The first command of a RESP2 and of a RESP3 connection: AUTH with the credentials, HELLO 3."""
    if password is None:
        return {2: None, 3: HELLO_3}
    secret = password.encode("utf-8")
    user = username.encode("utf-8") if username is not None else None
    auth = [b"AUTH", user, secret] if user is not None else [b"AUTH", secret]
    return {2: encode_command(auth),
            3: encode_command([b"HELLO", b"3", b"AUTH", user or b"default", secret])}


def _timed_out_reply(timeout: float) -> bytes:
    return b"-ERR datastore unavailable: no reply within %d ms\r\n" % (timeout * 1000,)



class Datastore(Service):
    """
    The local Redis as the hot path sees it: ``send`` a request, get the
    raw reply in a sink.

    There is a pool of ``datastore_connections`` connections per RESP
    version (RESP3 clients get connections that said HELLO 3, so Redis
    itself encodes their replies).  A request's lane picks one connection of
    its pool, so the requests of one lane (a client session, a peer) execute
    in the order they were sent.
    """

    log = Logger()

    def __init__(
        self,
        config: NodeConfig,
        reactor,
        jitter: Callable[[], float] = random.random,
        endpoint_factory: Optional[Callable[[Address], object]] = None,
        tls=None,
    ) -> None:
        self._config = config
        self.timeout = config.timeout  # seconds; the admin timeout factor scales it
        self._clock = reactor
        self.backoff = Backoff(jitter)
        address = config.datastore
        if endpoint_factory is None:
            endpoint = HostnameEndpoint(
                reactor, address.host, address.port, timeout=max(config.timeout, 0.1)
            )
            if config.datastore_tls:
                endpoint = ReloadingTLSEndpoint(lambda: tls.datastore_client(address.host), endpoint)
        else:
            endpoint = endpoint_factory(address)
        #: how connections reach Redis (the health monitor dials it too)
        self.endpoint = endpoint
        self._greetings = _greetings(config.datastore_username, config.datastore_password)
        #: scripts every connection loads before it carries requests, so that
        #: EVALSHA of them finds them (`dynomite.commands.lww`), as RESP
        self.preload = ((encode_command([b"SCRIPT", b"LOAD", lww.SCRIPT])
                         + encode_command([b"SCRIPT", b"LOAD", lww.NOTE_SCRIPT]), 2)
                        if config.datacenter_conflicts == LAST_WRITER_WINS else (b"", 0))
        n = config.datastore_connections
        self.links = [DatastoreLink(self, resp, reactor, endpoint, self.backoff)
                      for resp in (2, 3) for _ in range(n)]
        # the UP connections of each RESP version, in link order
        self._ready: Dict[int, List[DatastoreProtocol]] = {2: [], 3: []}
        self.consecutive_failures = 0
        self.ejected_until: Optional[float] = None
        self._sweeper = LoopingCall(self.expire_requests)
        self._sweeper.clock = reactor
        self.timed_out_total = 0
        # requests failed at once because no connection was up
        self.unavailable_total = 0
        # connections made and not yet closed; totals of closed ones:
        # sent, answered, error replies, lost
        self._live: Set[DatastoreProtocol] = set()
        self._closed = [0, 0, 0, 0]
        # sampled request latency (one request in SAMPLE_EVERY per connection)
        self.latency = Histogram()

    def greeting(self, resp: int) -> Optional[bytes]:
        """What a new connection speaking ``resp`` sends before any request (None: nothing)."""
        return self._greetings[resp]

    # -- hot path ----------------------------------------------------------

    def send(self, request: Request, sink) -> None:
        """
        Send ``request`` (one request, or a run of ``request.count``) on the
        connection of its lane among those speaking its RESP version;
        ``sink`` gets the replies joined (`DatastoreProtocol.send`).
        """
        ready = self._ready[request.resp]
        if ready:
            ready[request.lane % len(ready)].send(request.payload, sink, request.count)
        else:
            self.unavailable_total += request.count
            sink.fail(UNAVAILABLE)

    # -- counters ----------------------------------------------------------

    def track(self, protocol: DatastoreProtocol) -> None:
        """A new connection: its counts are part of the totals from now on."""
        self._live.add(protocol)

    def retire(self, protocol: DatastoreProtocol) -> None:
        """A connection closed: keep its counts in the totals."""
        if protocol in self._live:
            self._live.discard(protocol)
            closed = self._closed
            closed[0] += protocol.sent
            closed[1] += protocol.answered
            closed[2] += protocol.errors
            closed[3] += protocol.lost

    def note_errors(self, count: int) -> None:
        """Error replies Redis gave inside a transaction's reply (`dynomite.replication.applied_once`)."""
        self._closed[2] += count

    def _totals(self) -> List[int]:
        sent, answered, errors, lost = self._closed
        for p in self._live:
            sent += p.sent
            answered += p.answered
            errors += p.errors
            lost += p.lost
        return [sent, answered, errors, lost]

    @property
    def requests_total(self) -> int:
        """Requests written to Redis, on every connection so far."""
        return self._totals()[0]

    def request_counts(self) -> Dict[str, int]:
        """
        Requests by result: ``ok`` and ``error`` replies (an error is an
        error reply, or a request failed when its connection closed),
        ``timeout`` (connections dropped for no reply: `timed_out_total`),
        ``unavailable`` (failed at once, no connection up).
        """
        _, answered, errors, lost = self._totals()
        return {
            "ok": answered - errors,
            "error": errors + lost,
            "timeout": self.timed_out_total,
            "unavailable": self.unavailable_total,
        }

    # -- state -------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return bool(self._ready[2])

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for ready in self._ready.values() for p in ready)

    def link_changed(self, link: DatastoreLink, up: bool) -> None:
        """``link`` became UP (the datastore answers: no more failures) or stopped being UP."""
        was_up = self.is_up
        self._ready = {resp: [l.protocol for l in self.links
                              if l.resp == resp and l.state == UP and l.protocol is not None]
                       for resp in (2, 3)}
        if up:
            if not was_up:
                self.log.info("datastore {address} is up", address=str(self._config.datastore))
            self.consecutive_failures = 0
            self.ejected_until = None
        elif was_up and not self.is_up:
            self.log.warn("datastore {address} is down", address=str(self._config.datastore))

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        config = self._config
        if (
            config.auto_eject_hosts
            and self.ejected_until is None
            and self.consecutive_failures >= config.server_failure_limit
        ):
            self.ejected_until = self._clock.seconds() + config.server_retry_timeout
            self.log.warn(
                "datastore {address} ejected for {seconds}s after {n} failures",
                address=str(config.datastore),
                seconds=config.server_retry_timeout,
                n=self.consecutive_failures,
            )

    def reconnect_delay(self, failures: int) -> float:
        """Seconds before a link's next attempt: until the ejection ends, or the backoff."""
        if self.ejected_until is not None:
            return max(self.ejected_until - self._clock.seconds(), 0.0)
        return self.backoff.delay(failures)

    def retry_now(self) -> None:
        """Redis answers (the health monitor says so): reconnect waiting links now."""
        waiting = [link for link in self.links if link.state == WAITING]
        if waiting:
            self.ejected_until = None
            for link in waiting:
                link.retry_now()

    def expire_requests(self) -> None:
        """Fail and drop connections that made no progress for ``timeout``."""
        now = self._clock.seconds()
        timeout = self.timeout
        for ready in self._ready.values():
            for protocol in list(ready):
                if protocol.stalled_for(now) > timeout:
                    self.timed_out_total += protocol.in_flight
                    self.log.warn(
                        "datastore gave no reply within {timeout}s; dropping connection",
                        timeout=timeout,
                    )
                    protocol.fail_all(_timed_out_reply(timeout))
                    protocol.drop()

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        for link in self.links:
            link.start()
        interval = min(self._config.timeout / 4.0, 0.25)
        self._sweeper.start(interval, now=False)

    def stopService(self):
        Service.stopService(self)
        if self._sweeper.running:
            self._sweeper.stop()
        for link in self.links:
            link.stop()
