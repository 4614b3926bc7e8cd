"""
Process harness for integration, cluster and fault-injection tests.

Starts real ``redis-server`` and real ``twistd -n dynomite`` processes on
127.0.0.x addresses with ephemeral ports, each in its own directory, and
stops exactly the PIDs it started.  Everything here is synchronous and
blocking on purpose: the processes under test are other processes, so the
tests drive them like a user would, with blocking sockets and redis-py.

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
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import redis
import yaml

REDIS_SERVER = os.environ.get("DYNOMITE_TEST_REDIS_SERVER", "/usr/bin/redis-server")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
STANDIN = os.environ.get("DYNOMITE_TEST_STANDIN", "") not in ("", "0")


class HarnessError(Exception):
    """A process did not start, did not answer, or did not stop in time."""


# ---------------------------------------------------------------------------
# ports and small helpers


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """Return ``count`` distinct free ports on ``host``.

    All sockets are held open until every port is chosen, so the ports are
    distinct from each other (they can still race with other programs).
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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


def _tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return f"<no file {path}>"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child if the test runner dies (Linux only).

    The signal follows the *thread* that forked, so start processes from the
    main thread.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def ping_raw(host: str, port: int, timeout: float = 1.0) -> bytes:
    """Send an inline ``PING`` and return the first reply line (``b""`` on EOF)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"PING\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


# ---------------------------------------------------------------------------
# processes


class _Process:
    """A child process that answers on (host, port); start/stop/kill/pause."""

    host: str
    port: int
    tmpdir: str
    ready_timeout = 10.0
    stop_timeout = 10.0

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.paused = False
        self._out = None

    # subclasses provide these
    def _argv(self) -> List[str]:
        raise NotImplementedError

    def _output_path(self) -> str:
        raise NotImplementedError

    def log_text(self) -> str:
        """Everything the process wrote so far, for error messages."""
        raise NotImplementedError

    def _cwd(self) -> str:
        return self.tmpdir

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def address(self) -> Tuple[str, int]:
        return (self.host, self.port)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "_Process":
        """Start the process and wait until it answers PING."""
        if self.running():
            raise HarnessError(f"{self!r} already running")
        os.makedirs(self.tmpdir, exist_ok=True)
        self._out = open(self._output_path(), "ab")
        self.proc = subprocess.Popen(
            self._argv(),
            cwd=self._cwd(),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.paused = False
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last: Optional[BaseException] = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"{self!r} exited early with code {self.proc.returncode}; log tail:\n"
                    f"{self._log_tail()}"
                )
            try:
                if ping_raw(self.host, self.port, timeout=1.0)[:1] in (b"+", b"-"):
                    return
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise HarnessError(
            f"{self!r} did not answer PING within {self.ready_timeout}s "
            f"(last error: {last!r}); log tail:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 40) -> str:
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])

    def _signal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def stop(self) -> Optional[int]:
        """SIGTERM, wait, SIGKILL fallback.  Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            if self.paused:
                self._signal(signal.SIGCONT)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(self.stop_timeout)
        self.paused = False
        self._close_output()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait(self.stop_timeout)
        self.paused = False
        self._close_output()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> "_Process":
        """Stop (if running) and start again on the same address."""
        self.stop()
        return self.start()

    def _close_output(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def client(self, **kw: Any) -> redis.Redis:
        """A redis-py client for this process (socket timeouts default to 5 s)."""
        kw.setdefault("socket_timeout", 5)
        kw.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host=self.host, port=self.port, **kw)

    def raw(self, timeout: float = 5.0) -> "RawConnection":
        """A raw socket connection speaking RESP by hand."""
        return RawConnection(self.host, self.port, timeout=timeout)

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"<{type(self).__name__} {self.host}:{self.port} pid={pid}>"


class RedisProcess(_Process):
    """One ``redis-server`` with no persistence, in ``tmpdir``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        tmpdir: Optional[str] = None,
        extra_args: Sequence[str] = (),
        password: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.tmpdir = os.path.abspath(tmpdir or tempfile.mkdtemp(prefix="redis-"))
        self.extra_args = list(extra_args)
        self.password = password
        if password is not None:
            self.extra_args += ["--requirepass", password]

    def client(self, **kw: Any) -> redis.Redis:
        if self.password is not None:
            kw.setdefault("password", self.password)
        return super().client(**kw)

    def _argv(self) -> List[str]:
        return [
            REDIS_SERVER,
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", self.tmpdir,
            "--daemonize", "no",
            *self.extra_args,
        ]

    def _output_path(self) -> str:
        return os.path.join(self.tmpdir, f"redis-{self.host}-{self.port}.log")

    def log_text(self) -> str:
        return _tail(self._output_path(), 10_000)

    def _wait_ready(self) -> None:
        super()._wait_ready()
        # -LOADING also answers PING; wait for a real PONG or NOAUTH.
        wait_until(
            lambda: ping_raw(self.host, self.port).startswith((b"+PONG\r", b"-NOAUTH")),
            self.ready_timeout,
            message=f"{self!r} to finish loading",
        )


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


class NodeProcess(_Process):
    """One ``twistd -n dynomite`` node, configured from a dict."""

    ready_timeout = 20.0

    def __init__(self, config: Dict[str, Any], tmpdir: str, name: str = "node") -> None:
        super().__init__()
        self.config = dict(config)
        self.tmpdir = os.path.abspath(tmpdir)
        self.name = name
        self.host, self.port = _split_address(self.config["listen"])
        self.config_path = os.path.join(self.tmpdir, f"{name}.yml")
        self.log_path = os.path.join(self.tmpdir, f"{name}.log")
        self._standin: Optional[RedisProcess] = None

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

    def _argv(self) -> List[str]:
        if STANDIN:
            # a transparent TCP forwarder (Twisted's own) to the datastore
            dest_host, dest_port, _ = self.config["servers"][0].rsplit(":", 2)
            return [
                TWISTD, "-n", "--pidfile=", "--logfile", self.log_path,
                "portforward", "-p", f"tcp:{self.port}:interface={self.host}",
                "-h", dest_host, "-d", dest_port,
            ]
        return [
            TWISTD, "-n", "--pidfile=", "--logfile", self.log_path,
            "dynomite", "-c", self.config_path,
        ]

    def _output_path(self) -> str:
        return os.path.join(self.tmpdir, f"{self.name}.out")

    def start(self) -> "NodeProcess":
        self.write_config()
        super().start()
        return self

    def log_text(self) -> str:
        """The node's log file followed by anything it wrote to stdout/stderr."""
        return _tail(self.log_path, 10_000) + "\n--- stdout/stderr ---\n" + _tail(
            self._output_path(), 10_000
        )


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
