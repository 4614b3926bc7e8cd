# -*- test-case-name: tests.unit.test_node -*-
"""
The node: what happens to each client request.

`Node.execute` is the hot path.  It looks the command up once in the
command table, applies Redis's own checks in Redis's order (unknown command,
arity, authentication, ACL permissions), and then either answers the request itself
(`dynomite.node.builtins`), refuses it, or hands it to the `Coordinator`,
which routes it to the replicas of its keys.  It
never logs or formats strings for a request that succeeds.

`Node.execute_batch` takes everything one client read brought: consecutive
requests of one single-key command whose keys have the same replicas go to
the coordinator as one run (`dynomite.placement.pipelines`; a single
request is a run of one), in the client's own bytes; anything else goes
through `execute`, one by one, in order.

A RESP2 client in pub/sub subscriber mode (``Session.pubsub_only``) runs
no runs and only the commands `SUBSCRIBER_ALLOWED`
(`dynomite.node.pubsub_commands`): one attribute test per request.

ACL permissions (`dynomite.node.access`) cost one attribute test per
request, or per run, while the client's user may run everything
(``Session.acl`` is None); a restricted user's requests are checked one by
one, every key of a run included, before they are cut into runs.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dynomite.commands import acl as acl_rules
from dynomite.commands import table as commands
from dynomite.node import access
from dynomite.node.builtins import BUILTINS, NOAUTH_ALLOWED
from dynomite.node.errorlog import ProtocolErrorLog
from dynomite.node.pubsub_bus import PubSubBus
from dynomite.node.pubsub_commands import SUBSCRIBER_ALLOWED, subscriber_refusal
from dynomite.node import blocking, streams
from dynomite.node.transactions import IMMEDIATE, queue
from dynomite.node import watch
from dynomite.node.coordinator import SCRIPT_WRITES
from dynomite.config.model import NodeConfig
from dynomite.config.vocabulary import DC_EACH_SAFE_QUORUM, NORMAL, STANDBY, WRITES_ONLY
from dynomite.placement.pipelines import RunCutter
from dynomite.runtime import batching
from dynomite.runtime.flood import FLOOD_QUIET, FloodGuard
from dynomite.stats import Histogram, NodeMetrics

NOAUTH = b"-NOAUTH Authentication required.\r\n"

#: Blocking pops, served by `dynomite.node.blocking` (imported for its @builtin registrations).
BLOCKING = blocking.BLOCKING
#: Node commands that read or write keys, so wait like data commands (`_must_wait`).
_WAITING = BLOCKING | streams.STREAM_BLOCKING


def unknown_command(args) -> bytes:
    """Redis 7's wording for a command name it does not know."""
    name = args[0][:128].decode("utf-8", "replace")
    shown = "".join("'%s' " % a[:128].decode("utf-8", "replace") for a in args[1:])
    text = "-ERR unknown command '%s', with args beginning with: %s" % (name, shown)
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8") + b"\r\n"


def wrong_arity(name: str) -> bytes:
    return b"-ERR wrong number of arguments for '%s' command\r\n" % name.encode()


def unknown_subcommand(name: str, sub: bytes) -> bytes:
    text = "-ERR unknown subcommand '%s'. Try %s HELP." % (
        sub[:128].decode("utf-8", "replace"),
        name.upper(),
    )
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8") + b"\r\n"


def _subscriptions_refused(user, subscriptions) -> bool:
    """Whether ``user`` may not keep one of these subscriptions (`dynomite.node.pubsub_commands`' rule)."""
    if subscriptions is None or user.all_channels:
        return False
    granted = set(user.channel_patterns)
    return (any(not user.may_use_channel(name) for name in (*subscriptions.channels, *subscriptions.shard))
            or any(name.decode("utf-8", "replace") not in granted for name in subscriptions.patterns))


def unsupported(name: str) -> bytes:
    return b"-ERR unsupported command '%s'\r\n" % name.replace("|", " ").encode()


#: Seconds between log lines about addresses that flood the client ports.
FLOODERS_LOG_INTERVAL = 10.0


class Node:
    """One node's request handling, independent of sockets."""

    log = Logger()

    def __init__(self, config: NodeConfig, coordinator, membership, settings, datastore, monitor,
                 clock, metrics: Optional[NodeMetrics] = None, pubsub: Optional[PubSubBus] = None) -> None:
        self.config = config
        self.membership = membership
        self.settings = settings
        self.metrics = metrics if metrics is not None else NodeMetrics()
        # per command name (str hashes are cached; the frozen Command's are
        # not): its family's [ok, error] counter and latency histogram
        self._accounts: Dict[str, Tuple[List[int], Optional[Histogram]]] = {}
        self.coordinator = coordinator
        self.datastore = datastore
        self.monitor = monitor
        self.clock = clock
        self.started = clock.seconds()
        self.clients: Set = set()
        self.connections_accepted = 0
        self.protocol_errors = 0
        self.protocol_error_log = ProtocolErrorLog(clock)   # one line per interval under a flood
        self._lookup = commands.lookup
        self._runs = RunCutter(coordinator.router, coordinator.versioned)
        #: ACL users (a bad acl_file or users entry raises ConfigError here)
        self.acl = acl_rules.load(config)
        self.auth = access.AuthGuard(self.acl, clock, self.metrics.auth_failures)
        #: this node's pub/sub subscriptions and message routing
        self.pubsub = pubsub if pubsub is not None else PubSubBus(metrics=self.metrics)
        #: whether the client ports are flooded, and by whom (`dynomite.runtime.flood`); None: off
        self.flood_guard = (FloodGuard(config.client_flood_accept_rate, on_change=self._flood,
                                       on_flooder=self._flooder)
                            if config.client_flood_accept_rate else None)
        self._flooders_logged = -FLOODERS_LOG_INTERVAL   # when the last flooder was logged
        self._flooders_since = 0                         # ... and those not logged since

    def set_acl(self, acl) -> int:
        """
        Take reloaded ACL users (SIGHUP).  New AUTHs check them; a connected
        client acts as its user's new definition from its next command on
        (Redis applies a changed user at once too); a client logged in as a
        user that is gone or disabled, or subscribed to a channel or pattern
        its user may no longer use (as Redis 7.2's ACL LOAD), is closed once
        the replies it is owed are written.  Unauthenticated clients act as
        the new ``default`` and, when it needs no password any more, are
        authenticated, as Redis decides that per command.  Returns how many
        were closed.
        """
        self.acl = acl
        self.auth.acl = acl
        closed = 0
        for client in list(self.clients):
            session = client.session
            if not session.authenticated:
                session.rebind(acl.default)
                session.authenticated = acl.default_authenticated
                continue
            user = acl.users.get(session.user.name if session.user is not None else "default")
            if user is None or not user.enabled or _subscriptions_refused(user, session.subscriptions):
                client.drain()
                closed += 1
            else:
                session.rebind(user)
        return closed

    @property
    def state(self) -> str:
        """This node's state (`dynomite.peers.membership`): whether it serves clients."""
        return self.membership.state

    # -- clients -----------------------------------------------------------

    def client_connected(self, client) -> None:
        self.clients.add(client)
        self.connections_accepted += 1

    def client_disconnected(self, client) -> None:
        self.clients.discard(client)
        self.pubsub.drop(client)
        watch.release(self, client.session)
        if client.asked is False and self.flood_guard is not None:
            self.flood_guard.fruitless(self.clock.seconds(), client.session.host)

    def client_asked(self, client) -> None:
        """``client`` sent its first valid request: its address is known to the flood guard."""
        if self.flood_guard is not None:
            self.flood_guard.asked(client.session.host)

    def _flood(self, flooding: bool, fruitless: int) -> None:
        if flooding:
            self.log.warn("{fruitless} client connections ended without a valid request within a second:"
                          " a flood; new connections from addresses that never sent a valid request are"
                          " admitted at {rate} a second until {quiet:g} s pass without one", fruitless=fruitless,
                          rate=self.config.client_flood_accept_rate, quiet=FLOOD_QUIET)
        else:
            self.log.info("the flood of client connections is over; every address is admitted again")

    def _flooder(self, address: str) -> None:
        """An address floods: logged once per `FLOODERS_LOG_INTERVAL`, with how many others did meanwhile."""
        now = self.clock.seconds()
        if now - self._flooders_logged < FLOODERS_LOG_INTERVAL:
            self._flooders_since += 1
            return
        self.log.warn("{address} opened {n} client connections that ended without a valid request within a"
                      " second: its new connections are refused until {quiet:g} s pass without that"
                      " ({others} other addresses since the last such line)", address=address,
                      n=self.flood_guard.address_threshold, quiet=FLOOD_QUIET, others=self._flooders_since)
        self._flooders_logged, self._flooders_since = now, 0

    def release_watch(self, client) -> None:
        """RESET: the keys ``client`` watches are released at their leader."""
        watch.release(self, client.session)

    def output_limit_reached(self, client, reason: str) -> None:
        """A subscriber's unread messages passed its output buffer limit: it is being closed."""
        self.metrics.client_limits["output_buffer"] += 1
        self.log.info("client {address} closed for overcoming its pub/sub output buffer limit ({reason})",
                      address=client.session.address, reason=reason)
        self.pubsub.drop(client)

    def refused_client(self) -> None:
        """A connection refused because ``maxclients`` clients are connected."""
        self.metrics.client_limits["maxclients"] += 1

    def sweep_clients(self, now: float) -> None:
        """
        Periodic: close the clients idle past ``client_idle_timeout`` and
        those that began a request more than ``client_read_timeout`` ago
        without completing it (a trickling or stuck client).
        """
        config = self.config
        idle_limit, read_limit = config.client_idle_timeout, config.client_read_timeout
        if not idle_limit and not read_limit:
            return
        limits = self.metrics.client_limits
        for client in list(self.clients):
            started = client.request_started
            if read_limit and started is not None and now - started >= read_limit:
                limits["read_timeout"] += 1
                self.log.info("client {address} did not complete a request in {limit}s; closing",
                              address=client.session.address, limit=read_limit)
                client.cut(b"-ERR Protocol error: request not completed within %d ms\r\n"
                           % int(read_limit * 1000))
                continue
            idle = client.idle_since()
            if idle_limit and idle is not None and now - idle >= idle_limit:
                limits["idle"] += 1
                client.cut()

    def protocol_error(self, client, reason: str) -> None:
        self.protocol_errors += 1
        kind = "oversize" if reason.startswith("request exceeds") else "malformed"
        self.metrics.count(self.metrics.protocol_errors, kind)
        self.protocol_error_log.report(client.session.address, kind, reason)

    def _account(self, cmd) -> Tuple[List[int], Optional[Histogram]]:
        m = self.metrics
        if cmd.route == commands.NODE or cmd.route == commands.UNSUPPORTED:
            latency = None
        else:
            latency = m.write_latency if cmd.write else m.read_latency
        account = self._accounts[cmd.name] = (m.family_counter(cmd.group), latency)
        return account

    @property
    def _unknown(self) -> List[int]:
        return self.metrics.family_counter("other")

    def _refused(self, cmd) -> bool:
        """Whether the node's state refuses ``cmd``: STANDBY everything, WRITES_ONLY reads."""
        state = self.membership.state
        if state == STANDBY:
            return True
        return state == WRITES_ONLY and not cmd.write

    # -- requests ----------------------------------------------------------

    def execute_batch(self, client, requests: List[List[bytes]], bounds: List[int], data: bytes) -> None:
        """
        Handle the requests one read from ``client`` brought, in order;
        ``bounds`` gives each one's place in ``data`` (`RequestParser.bounds`).
        Stops after a request that ends the session (QUIT).  Whether runs
        are allowed is looked at again after every request that is not in a
        run (AUTH, HELLO or CONN_CONSISTENCY may change it).

        A read waits for the client's writes that are not answered yet
        (their leader may be another node, so the read could overtake
        them): it and everything after it are held until they are
        (`ClientProtocol.hold`), then go on in order (`release_held`).
        """
        if client.session.quitting:   # closing (QUIT, a stop, its user gone): nothing more runs
            return
        if client.held:
            client.hold(requests, bounds, data, 0)
            return
        stop = self._execute_from(client, requests, bounds, data, 0)
        if stop is not None:
            client.hold(requests, bounds, data, stop)

    def release_held(self, client) -> None:
        """The client's writes are answered: its held requests go on, until a read must wait again."""
        held = client.held
        if client.releasing:
            return   # a reply came while held requests go on: that loop looks again
        client.releasing = True
        batching.begin()
        try:
            while held and not client.session.quitting:
                requests, bounds, data, index = held[0]
                stop = self._execute_from(client, requests, bounds, data, index)
                if stop is not None:
                    held[0] = (requests, bounds, data, stop)
                    return
                held.popleft()
                client.released(data)
        finally:
            client.releasing = False
            batching.end()

    def _execute_from(self, client, requests: List[List[bytes]], bounds: List[int], data: bytes,
                      i: int) -> Optional[int]:
        """`execute_batch` from request ``i``: None when done, else the index of a read that must wait."""
        session = client.session
        membership = self.membership
        levels = self.coordinator.levels
        n = len(requests)
        while i < n:
            if client.blocked:
                return i
            if (session.authenticated and membership.state == NORMAL and not session.pubsub_only
                    and session.multi is None):
                read_level, write_level = levels(session)
                if read_level != DC_EACH_SAFE_QUORUM and write_level != DC_EACH_SAFE_QUORUM:
                    stop = self._execute_runs(client, requests, bounds, data, i, read_level, write_level)
                    if stop < 0:
                        return -stop - 1
                    i = stop
                    if session.quitting:
                        return None
                    continue
            if (client.writes_pending or client.reads_pending) and self._must_wait(client, requests[i]):
                return i
            self.execute(client, requests[i])
            i += 1
            if session.quitting:
                return None
        return None

    @staticmethod
    def _reject(client, raw: bytes) -> None:
        """A request refused before it ran; inside MULTI it also dooms the transaction (EXECABORT)."""
        session = client.session
        if session.multi is not None:
            session.multi_aborted = True
        client.reply(raw)

    def _must_wait(self, client, args) -> bool:
        """
        Whether the request must wait for the client's requests in flight:
        a read the replicas answer while its writes are, or a write while
        its reads are (the node's own commands never wait).
        """
        cmd = self._lookup(args[0])
        if cmd is not None and cmd.name == "exec":
            return True   # a transaction, reads or writes: after everything before it
        if cmd is None or cmd.route == commands.NODE and cmd.name not in _WAITING \
                or cmd.route == commands.UNSUPPORTED:
            return False
        if cmd.subcommands:
            cmd = commands.resolve(cmd, args) or cmd
        if cmd.write or cmd.name in SCRIPT_WRITES or cmd.name in BLOCKING:
            return client.reads_pending > 0
        return client.writes_pending > 0

    def _execute_runs(self, client, requests: List[List[bytes]], bounds: List[int], data: bytes,
                      i: int, read_level: str, write_level: str) -> int:
        """
        From request ``i`` on, send runs (never under DC_EACH_SAFE_QUORUM)
        until a request that cannot be in one, which is executed on its own;
        return the index after it, or ``-index - 1`` for a read that must
        wait for the client's writes.
        """
        session = client.session
        coordinator = self.coordinator
        router = coordinator.router
        if session.acl is not None:
            # runs only up to the first request this user may not run
            limit = access.first_refused(session.acl, requests, i)
            cut_from = requests if limit == len(requests) else requests[:limit]
        else:
            cut_from = requests
        runs, stop = self._runs.cut(cut_from, bounds, i, router.reads[read_level], router.writes[write_level])
        accounts = self._accounts
        for cmd, plan, start, end, count, parts in runs:
            write = cmd.write
            if client.reads_pending if write else client.writes_pending:
                return -i - 1
            account = accounts.get(cmd.name)
            if account is None:
                account = self._account(cmd)
            client.counter, client.latency = account
            client.writing = write
            client.reading = not write
            if parts is None:
                coordinator.execute_run(session, cmd, plan, data[start:end], count, client)
            else:
                coordinator.execute_parts(session, cmd, parts, data, count, client)
            client.writing = client.reading = False
            i += count
        if stop < len(requests):
            if (client.writes_pending or client.reads_pending) and self._must_wait(client, requests[stop]):
                return -stop - 1
            self.execute(client, requests[stop])
            stop += 1
        return stop

    def execute(self, client, args) -> None:
        """Handle one request; the reply reaches ``client`` in order."""
        # the runs of writes gathered so far are led first: nothing overtakes them
        self.coordinator.gathering.flush()
        cmd = self._lookup(args[0])
        if cmd is None:
            client.counter = self._unknown
            client.latency = None
            self._reject(client, unknown_command(args))
            return
        account = self._accounts.get(cmd.name)
        if account is None:
            account = self._account(cmd)
        client.counter, client.latency = account
        if not commands.arity_ok(cmd, len(args)):
            self._reject(client, wrong_arity(cmd.name))
            return
        if cmd.subcommands and cmd.route != commands.NODE:
            sub = commands.resolve(cmd, args)
            if sub is None:
                self._reject(client, unknown_subcommand(cmd.name, args[1]))
                return
            if not commands.arity_ok(sub, len(args)):
                self._reject(client, wrong_arity(sub.name))
                return
            cmd = sub
        session = client.session
        route = cmd.route
        if not session.authenticated and cmd.name not in NOAUTH_ALLOWED:
            self._reject(client, NOAUTH)
            return
        if session.acl is not None:
            refused = access.refusal(session.acl, cmd, args)
            if refused is not None:
                self._reject(client, refused)
                return
        if session.pubsub_only and cmd.name not in SUBSCRIBER_ALLOWED:
            client.reply(subscriber_refusal(cmd, args))
            return
        if session.multi is not None and cmd.name not in IMMEDIATE:
            client.reply(queue(session, cmd, args))
            return
        if self.membership.state != NORMAL and route != commands.NODE and self._refused(cmd):
            client.reply(b"-ERR node is %s\r\n" % self.membership.state.encode())
        elif route == commands.NODE:
            result = BUILTINS[cmd.name](self, client, args)
            if isinstance(result, Deferred):
                slot = client.slot(0)
                result.addCallback(slot.complete)
            elif result is not None:   # None: it reserved its own reply slot (EXEC)
                client.reply(result)
        elif route == commands.UNSUPPORTED:
            client.reply(unsupported(cmd.name))
        else:
            client.writing = cmd.write or cmd.name in SCRIPT_WRITES
            client.reading = not client.writing
            self.coordinator.execute(session, cmd, args, client)
            client.writing = client.reading = False
