"""
Process harness for integration, cluster and fault-injection tests.

Starts real ``redis-server`` and real ``twistd -n dynomite`` processes on
127.0.0.x addresses with ephemeral ports, each in its own directory, and
stops exactly the PIDs it started.  Starting, waiting for, signalling and
stopping processes is :mod:`dynomite.processes`, the same code the cluster
launcher uses; the classes here only add what tests want: a constructor
from a host and a directory (or a node config dict), redis-py and raw
clients, and the whole log.  Everything here is synchronous and blocking
on purpose: the processes under test are other processes, so the tests
drive them like a user would, with blocking sockets and redis-py.

Also holds a small Sans-IO RESP2/RESP3 reply reader and a raw socket client,
written independently of ``dynomite.resp`` so that the tests do not share
their oracle with the code under test.

Setting ``DYNOMITE_TEST_STANDIN=1`` replaces every node by Twisted's
``twistd portforward`` in front of the node's datastore (which then enforces
``requirepass`` itself).  It exists to check the tests and the harness
without the node; node-specific assertions then fail, which is expected.
"""

from __future__ import annotations

import atexit
import os
import socket
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import redis
import yaml

from dynomite.launcher import processes
from dynomite.launcher.processes import ping_raw  # noqa: F401 - part of the harness API

REDIS_SERVER = os.environ.get("DYNOMITE_TEST_REDIS_SERVER", "/usr/bin/redis-server")
TWISTD = processes.default_twistd()
STANDIN = os.environ.get("DYNOMITE_TEST_STANDIN", "") not in ("", "0")


class HarnessError(Exception):
    """A condition did not hold in time, or /proc did not say what was asked.

    A process that does not start, answer or stop raises
    :class:`dynomite.processes.ClusterError` instead.
    """


# ---------------------------------------------------------------------------
# ports and small helpers


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    return processes.free_ports(host, 1)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """Return ``count`` distinct free ports on ``host`` (they can still race with other programs)."""
    return processes.free_ports(host, count)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns a true value; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {message}{extra}")
        time.sleep(interval)


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise HarnessError(f"no VmRSS for pid {pid}")


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return f"<no file {path}>"


# ---------------------------------------------------------------------------
# processes: dynomite.processes plus clients and logs for the tests


class _Process(processes.ManagedProcess):
    """What the tests add to a managed process: clients, and everything it logged."""

    def client(self, **kw: Any) -> redis.Redis:
        """A redis-py client for this process (socket timeouts default to 5 s)."""
        kw.setdefault("socket_timeout", 5)
        kw.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host=self.host, port=self.port, **kw)

    def raw(self, timeout: float = 5.0) -> RawConnection:
        """A raw socket connection speaking RESP by hand."""
        return RawConnection(self.host, self.port, timeout=timeout)

    def log_text(self) -> str:
        """Everything the process wrote so far: its log file if it keeps one, then its stdout/stderr."""
        return "\n--- stdout/stderr ---\n".join(_read_text(path) for path in self.log_paths())


class RedisProcess(_Process, processes.RedisProcess):
    """One ``redis-server`` with no persistence, in ``tmpdir``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        tmpdir: Optional[str] = None,
        extra_args: Sequence[str] = (),
        password: Optional[str] = None,
    ) -> None:
        port = port if port is not None else free_port(host)
        self.tmpdir = os.path.abspath(tmpdir or tempfile.mkdtemp(prefix="redis-"))
        self.extra_args = list(extra_args)
        self.password = password
        if password is not None:
            self.extra_args += ["--requirepass", password]
        super().__init__(
            os.path.basename(self.tmpdir),
            self.command((host, port), self.tmpdir, REDIS_SERVER, self.extra_args),
            (host, port),
            self.tmpdir,
            os.path.join(self.tmpdir, f"redis-{host}-{port}.log"),
        )

    def client(self, **kw: Any) -> redis.Redis:
        if self.password is not None:
            kw.setdefault("password", self.password)
        return super().client(**kw)


def node_config(
    redis_proc: Optional[RedisProcess] = None,
    host: str = "127.0.0.1",
    redis_address: Optional[Tuple[str, int]] = None,
    **overrides: Any,
) -> Dict[str, Any]:
    """A single-node config dict (the value under ``dyn_o_mite``).

    Ports are fresh ephemeral ports on ``host``; pass ``dyn_seeds``,
    ``rack``, ``tokens`` ... as overrides to build cluster members.
    """
    if redis_address is None:
        assert redis_proc is not None, "need redis_proc or redis_address"
        redis_address = redis_proc.address
    listen, dyn_listen, stats = free_ports(3, host)
    config: Dict[str, Any] = {
        "listen": f"{host}:{listen}",
        "dyn_listen": f"{host}:{dyn_listen}",
        "stats_listen": f"{host}:{stats}",
        "servers": [f"{redis_address[0]}:{redis_address[1]}:1"],
        "tokens": "0",
        "datacenter": "dc1",
        "rack": "rack1",
        "timeout": 1000,
    }
    config.update(overrides)
    return config


def _split_address(addr: str) -> Tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


class NodeProcess(_Process, processes.NodeProcess):
    """One ``twistd -n dynomite`` node, configured from a dict; :meth:`start` writes its YAML."""

    def __init__(self, config: Dict[str, Any], tmpdir: str, name: str = "node") -> None:
        self.config = dict(config)
        self.tmpdir = os.path.abspath(tmpdir)
        self.config_path = os.path.join(self.tmpdir, f"{name}.yml")
        address = _split_address(self.config["listen"])
        log_path = os.path.join(self.tmpdir, f"{name}.log")
        if STANDIN:  # a transparent TCP forwarder (Twisted's own) to the datastore
            dest_host, dest_port, _ = self.config["servers"][0].rsplit(":", 2)
            argv = [
                TWISTD, "-n", "--pidfile=", "--logfile", log_path,
                "portforward", "-p", f"tcp:{address[1]}:interface={address[0]}", "-h", dest_host, "-d", dest_port,
            ]
        else:
            argv = self.command(self.config_path, log_path, TWISTD)
        super().__init__(name, argv, address, self.tmpdir, os.path.join(self.tmpdir, f"{name}.out"), log_path)

    @property
    def dyn_address(self) -> Tuple[str, int]:
        return _split_address(self.config["dyn_listen"])

    @property
    def stats_address(self) -> Tuple[str, int]:
        return _split_address(self.config["stats_listen"])

    def write_config(self) -> str:
        os.makedirs(self.tmpdir, exist_ok=True)
        with open(self.config_path, "w") as f:
            yaml.safe_dump({"dyn_o_mite": self.config}, f, default_flow_style=False)
        return self.config_path

    def start(self, timeout: Optional[float] = None) -> NodeProcess:
        self.write_config()
        super().start(timeout)
        return self


# ---------------------------------------------------------------------------
# a blocking, unit-test-friendly cache for expensive shared fixtures


class FixtureCache:
    """Keeps at most one shared fixture alive.

    trial does not call ``setUpClass``; test classes instead ask this cache
    for a fixture by key.  Classes with the same key share it; asking for a
    different key stops the previous one, and the last one is stopped at
    interpreter exit.  A fixture exposes ``healthy()`` and ``stop()``.
    """

    def __init__(self) -> None:
        self._key: Any = None
        self._value: Any = None

    def get(self, key: Any, factory: Callable[[], Any]) -> Any:
        if self._value is not None and self._key == key and self._value.healthy():
            return self._value
        self.close()
        self._value = factory()
        self._key = key
        return self._value

    def close(self) -> None:
        value, self._value, self._key = self._value, None, None
        if value is not None:
            value.stop()


shared_fixtures = FixtureCache()
atexit.register(shared_fixtures.close)


class NodeFixture:
    """A fresh redis-server plus one node in front of it."""

    def __init__(self, tmpdir: str, host: str = "127.0.0.1", **overrides: Any) -> None:
        self.tmpdir = os.path.abspath(tmpdir)
        os.makedirs(self.tmpdir, exist_ok=True)
        password = overrides.get("requirepass") if STANDIN else None
        self.redis = RedisProcess(
            host=host, tmpdir=os.path.join(self.tmpdir, "redis"), password=password
        )
        self.node: Optional[NodeProcess] = None
        self.redis.start()
        try:
            self.node = NodeProcess(
                node_config(self.redis, host=host, **overrides),
                os.path.join(self.tmpdir, "node"),
            )
            self.node.start()
        except BaseException:
            self.stop()
            raise

    def healthy(self) -> bool:
        return self.redis.running() and self.node is not None and self.node.running()

    def reset(self) -> None:
        """Empty the datastore directly (not through the node)."""
        self.redis.client(protocol=2).flushall()

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        self.redis.stop()


# ---------------------------------------------------------------------------
# RESP: encoding, a Sans-IO reply reader, a decoder, a raw socket client


class RespProtocolError(Exception):
    """The bytes are not a valid RESP2/RESP3 reply."""


class RespError:
    """A decoded error reply (``-ERR ...`` or a RESP3 blob error)."""

    def __init__(self, message: bytes) -> None:
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RespError) and other.message == self.message

    def __repr__(self) -> str:
        return f"RespError({self.message!r})"


def encode_command(*args: Any) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, (int, float)):
            a = repr(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


_LINE_TYPES = b"+-:_,#("
_BLOB_TYPES = b"$!="
_ARRAY_TYPES = b"*~>"
_MAP_TYPES = b"%|"


def scan_reply(buf: bytes, pos: int = 0) -> Optional[int]:
    """End offset of the complete reply starting at ``pos``, or None if partial."""
    while True:
        if pos >= len(buf):
            return None
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        kind = buf[pos]
        if kind in _LINE_TYPES:
            return eol + 2
        try:
            n = int(buf[pos + 1:eol])
        except ValueError:
            raise RespProtocolError(f"bad length line {bytes(buf[pos:eol])!r}")
        if kind in _BLOB_TYPES:
            if n < 0:
                return eol + 2
            end = eol + 2 + n + 2
            if len(buf) < end:
                return None
            if buf[end - 2:end] != b"\r\n":
                raise RespProtocolError("blob not followed by CRLF")
            return end
        if kind in _ARRAY_TYPES or kind in _MAP_TYPES:
            count = n * 2 if kind in _MAP_TYPES else n
            p: Optional[int] = eol + 2
            for _ in range(max(count, 0)):
                assert p is not None
                p = scan_reply(buf, p)
                if p is None:
                    return None
            if kind == ord("|"):
                pos = p  # an attribute is followed by the reply it annotates
                continue
            return p
        raise RespProtocolError(f"unknown reply type byte {bytes([kind])!r}")


class ReplyReader:
    """Sans-IO: ``feed(bytes)`` returns the list of complete raw replies."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[bytes]:
        self._buf += data
        out: List[bytes] = []
        while True:
            end = scan_reply(self._buf, 0)
            if end is None:
                return out
            out.append(bytes(self._buf[:end]))
            del self._buf[:end]

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)


def _decode(buf: bytes, pos: int) -> Tuple[Any, int]:
    eol = buf.index(b"\r\n", pos)
    kind = chr(buf[pos])
    line = buf[pos + 1:eol]
    nxt = eol + 2
    if kind == "+":
        return line, nxt
    if kind == "-":
        return RespError(line), nxt
    if kind in ":(":
        return int(line), nxt
    if kind == "_":
        return None, nxt
    if kind == ",":
        return float(line), nxt
    if kind == "#":
        return line == b"t", nxt
    if kind in "$!=":
        n = int(line)
        if n < 0:
            return None, nxt
        data = buf[nxt:nxt + n]
        return (RespError(data) if kind == "!" else data), nxt + n + 2
    if kind in "*~>":
        n = int(line)
        if n < 0:
            return None, nxt
        items = []
        for _ in range(n):
            item, nxt = _decode(buf, nxt)
            items.append(item)
        return items, nxt
    if kind in "%|":
        n = int(line)
        pairs = []
        for _ in range(n):
            k, nxt = _decode(buf, nxt)
            v, nxt = _decode(buf, nxt)
            pairs.append((k, v))
        if kind == "|":
            return _decode(buf, nxt)
        return dict(pairs), nxt
    raise RespProtocolError(f"unknown reply type {kind!r}")


def decode_reply(raw: bytes) -> Any:
    """Decode one complete raw reply into Python values.

    Simple and bulk strings become bytes, errors :class:`RespError`, integers
    int, doubles float, arrays/sets/pushes lists, maps dicts, nulls None.
    """
    value, end = _decode(raw, 0)
    if end != len(raw):
        raise RespProtocolError(f"{len(raw) - end} trailing bytes after reply")
    return value


def split_aggregate(raw: bytes) -> Tuple[bytes, List[bytes]]:
    """Split an array/set/map reply into its header line and raw elements."""
    eol = raw.index(b"\r\n")
    header = raw[:eol + 2]
    kind = raw[0]
    if kind not in _ARRAY_TYPES and kind not in _MAP_TYPES:
        raise RespProtocolError(f"not an aggregate: {raw[:20]!r}")
    n = int(raw[1:eol])
    count = max(n, 0) * (2 if kind in _MAP_TYPES else 1)
    items = []
    pos = eol + 2
    for _ in range(count):
        end = scan_reply(raw, pos)
        assert end is not None
        items.append(raw[pos:end])
        pos = end
    return header, items


class ConnectionClosed(Exception):
    """The peer closed the connection while a reply was expected."""


class RawConnection:
    """A blocking socket that sends raw bytes and reads whole RESP replies."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.reader = ReplyReader()
        self._ready: List[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, *args: Any) -> bytes:
        """Send one command and return its raw reply."""
        self.send(encode_command(*args))
        return self.read_reply()

    def read_reply(self, timeout: Optional[float] = None) -> bytes:
        """The next raw reply; ConnectionClosed on EOF, socket.timeout on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._ready:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete reply")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionClosed(
                    f"connection closed; unparsed bytes: {self.reader.pending[:200]!r}"
                )
            self._ready.extend(self.reader.feed(data))
        return self._ready.pop(0)

    def read_replies(self, n: int, timeout: Optional[float] = None) -> List[bytes]:
        return [self.read_reply(timeout) for _ in range(n)]

    def closed_by_peer(self, timeout: float = 2.0) -> bool:
        """True if the peer closes within ``timeout`` without sending more bytes."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        if data:
            self._ready.extend(self.reader.feed(data))
            return False
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
