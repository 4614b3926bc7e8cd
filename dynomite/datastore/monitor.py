# -*- test-case-name: tests.integration.test_node_commands -*-
"""
The control-plane view of the local Redis, through txredisapi.

The hot path never uses txredisapi (it decodes replies; see
notes on fidelity in `dynomite.datastore.protocol`).  This monitor PINGs Redis every
second to know whether it is up (authenticating, and over TLS, as the data
path does: it dials the data path's endpoint), tells the data path to reconnect at once
whenever Redis answers while data connections are waiting to retry, and fetches INFO for the node's own INFO reply.
With every answered PING it reads Redis's run id: a new one (Redis
restarted, perhaps empty) is told to ``on_restart`` (repair's warm-up check).
"""

from __future__ import annotations

from typing import Callable, Optional

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from dynomite.config.model import Address


class DatastoreMonitor(Service):
    """Health checks and INFO for one Redis, on its own connection."""

    log = Logger()

    def __init__(
        self,
        address: Address,
        reactor,
        on_up: Callable[[], None] = lambda: None,
        on_restart: Callable[[], None] = lambda: None,
        interval: float = 1.0,
        endpoint=None,
        username: Optional[str] = None,
        password: Optional[str] = None,
    ) -> None:
        self._address = address
        self._clock = reactor
        self._on_up = on_up
        self._on_restart = on_restart
        self._interval = interval
        # charset=None and convertNumbers=False keep replies as the bytes
        # Redis sent; see ecosystem notes on txredisapi's conversions.
        self._factory = txredisapi.RedisFactory(
            str(address), None, 1, isLazy=True, charset=None, convertNumbers=False,
            password=password, username=username,
        )
        self._factory.initialDelay = 0.1
        self._factory.maxDelay = interval
        self._redis = self._factory.handler
        self._endpoint = endpoint if endpoint is not None else HostnameEndpoint(
            reactor, address.host, address.port, timeout=interval
        )
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor
        self.up: Optional[bool] = None
        self.redis_version: Optional[str] = None
        #: the run id of the Redis process last seen (a new one: it restarted)
        self.run_id: Optional[bytes] = None
        self.last_check: Optional[float] = None

    def startService(self) -> None:
        Service.startService(self)
        self._factory.startConnecting(self._endpoint)
        self._loop.start(self._interval, now=True)

    def stopService(self):
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
        return self._factory.disconnect()

    def check(self):
        """PING Redis once; errors are caught here and only change ``up``."""
        try:
            d = self._redis.ping()
        except Exception:
            self._set_up(False, Failure())
            return None
        d.addTimeout(self._interval, self._clock)
        d.addCallbacks(lambda _: self._set_up(True), lambda f: self._set_up(False, f))
        d.addErrback(lambda f: self.log.failure("datastore health check failed", f))
        return d

    def _set_up(self, up: bool, failure=None) -> None:
        self.last_check = self._clock.seconds()
        was = self.up
        self.up = up
        if up:
            # Every answered PING, not only a transition: Redis may have
            # restarted between two checks while the data path was ejected.
            self._on_up()
            self._fetch_server()
        if up and was is not True:
            self.log.info("datastore {address} answers PING", address=str(self._address))
        elif not up and was is not False:
            self.log.warn(
                "datastore {address} does not answer PING: {why}",
                address=str(self._address),
                why=failure.getErrorMessage() if failure else "unknown",
            )

    def _fetch_server(self) -> None:
        """Redis's version, and its run id: a new one means Redis restarted (maybe empty)."""
        def parse(text: bytes) -> None:
            for line in text.splitlines():
                if line.startswith(b"redis_version:"):
                    self.redis_version = line.split(b":", 1)[1].decode("ascii", "replace")
                elif line.startswith(b"run_id:"):
                    run_id = line.split(b":", 1)[1].strip()
                    if run_id != self.run_id:
                        if self.run_id is not None:
                            self.log.info("datastore {address} restarted", address=str(self._address))
                        self.run_id = run_id
                        self._on_restart()

        self.info([b"server"]).addCallbacks(parse, lambda f: None)

    def info(self, sections) -> Deferred:
        """Redis's INFO text for ``sections`` (a list of bytes), or a failure."""
        d = self._redis.execute_command("INFO", *sections)
        d.addTimeout(self._interval, self._clock)
        return d
