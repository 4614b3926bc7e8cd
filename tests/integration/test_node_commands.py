"""
A real node in front of a real redis-server: the commands the node answers
itself (PING, ECHO, SELECT, CLIENT, COMMAND, INFO, QUIT, ...), inline and
unsupported commands, malformed and oversized input (only the offending
connection closes), and ``twistd dynomite --check-config`` on good and bad
configuration files.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Any, Dict, List

import yaml
from twisted.trial import unittest

from dynomite.launcher import processes
from tests.integration.fixtures.cases import NodeTestCase
from tests.integration.fixtures.processes import TWISTD, node_settings
from tests.integration.fixtures.resp import decode_reply, encode_command


# ---------------------------------------------------------------------------
# commands the node answers itself, inline commands, unsupported commands


class NodeCommandTests(NodeTestCase):
    """Commands the node answers itself, inline commands, unsupported and unknown commands."""

    def test_inline_commands(self) -> None:
        conn = self.raw()
        conn.send(b"PING\r\n")
        self.assertEqual(conn.read_reply(), b"+PONG\r\n")
        conn.send(b"SET a b\r\n")
        self.assertEqual(conn.read_reply(), b"+OK\r\n")
        conn.send(b"GET a\r\n")
        self.assertEqual(conn.read_reply(), b"$1\r\nb\r\n")
        conn.send(b"PING\r\nGET a\r\n")  # pipelined inline
        self.assertEqual(conn.read_replies(2), [b"+PONG\r\n", b"$1\r\nb\r\n"])

    def test_echo_and_ping(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("ECHO", "hello"), b"$5\r\nhello\r\n")
        self.assertEqual(conn.command("PING", "msg"), b"$3\r\nmsg\r\n")

    def test_select(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("SELECT", "0"), b"+OK\r\n")
        self.assertErrorReply(conn.command("SELECT", "1"))
        self.assertEqual(conn.command("PING"), b"+PONG\r\n")
        self.assertEqual(self.client(protocol=2, db=0).ping(), True)

    def test_client_subcommands(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("CLIENT", "GETNAME"), b"$-1\r\n")
        self.assertEqual(conn.command("CLIENT", "SETNAME", "myname"), b"+OK\r\n")
        self.assertEqual(conn.command("CLIENT", "GETNAME"), b"$6\r\nmyname\r\n")
        self.assertTrue(re.fullmatch(rb":\d+\r\n", conn.command("CLIENT", "ID")))
        other = self.raw()
        self.assertNotEqual(conn.command("CLIENT", "ID"), other.command("CLIENT", "ID"))
        self.assertEqual(conn.command("CLIENT", "SETINFO", "LIB-NAME", "mylib"), b"+OK\r\n")
        self.assertEqual(conn.command("CLIENT", "SETINFO", "LIB-VER", "1.2.3"), b"+OK\r\n")

    def test_command_introspection(self) -> None:
        conn = self.raw()
        count = decode_reply(conn.command("COMMAND", "COUNT"))
        self.assertIsInstance(count, int)
        self.assertGreater(count, 100)
        info = decode_reply(conn.command("COMMAND", "INFO", "get"))
        self.assertEqual(len(info), 1)
        self.assertEqual(info[0][0], b"get")
        self.assertEqual(info[0][1], 2)  # arity
        docs_raw = conn.command("COMMAND", "DOCS", "get")
        self.assertTrue(docs_raw.startswith(b"*"), docs_raw[:80])
        docs = decode_reply(docs_raw)
        self.assertTrue(docs == [] or b"get" in docs, docs)
        self.assertEqual(conn.command("PING"), b"+PONG\r\n")

    def test_info(self) -> None:
        info = decode_reply(self.raw().command("INFO")).decode()
        self.assertIn("# Dynomite", info)
        self.assertIn("# Server", info)
        self.assertRegex(info, r"redis_version:7\.")
        parsed = self.client(protocol=2).info()
        self.assertIn("redis_version", parsed)

    def test_config_get(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("CONFIG", "GET", "save"), b"*0\r\n")
        self.assertEqual(self.client(protocol=2).config_get("save"), {})

    def test_time(self) -> None:
        t = decode_reply(self.raw().command("TIME"))
        self.assertEqual(len(t), 2)
        self.assertLess(abs(int(t[0]) - time.time()), 60)
        self.assertTrue(0 <= int(t[1]) < 1_000_000)

    def test_dbsize_flushdb_flushall(self) -> None:
        conn = self.raw()
        for k in ("a", "b", "c"):
            conn.command("SET", k, "1")
        self.assertEqual(conn.command("DBSIZE"), b":3\r\n")
        self.assertEqual(conn.command("FLUSHDB"), b"+OK\r\n")
        self.assertEqual(conn.command("DBSIZE"), b":0\r\n")
        self.assertEqual(self.direct().dbsize(), 0)
        conn.command("SET", "d", "1")
        self.assertEqual(conn.command("FLUSHALL"), b"+OK\r\n")
        self.assertEqual(conn.command("DBSIZE"), b":0\r\n")
        self.assertEqual(self.direct().dbsize(), 0)

    def test_quit(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.command("QUIT"), b"+OK\r\n")
        self.assertTrue(conn.closed_by_peer(2.0), "QUIT did not close the connection")

    def test_unsupported_commands(self) -> None:
        conn = self.raw()
        for cmd in (("MONITOR",), ("SYNC",)):
            self.assertErrorReply(conn.command(*cmd), "unsupported command")
            self.assertEqual(conn.command("PING"), b"+PONG\r\n", f"after {cmd}")
        # nothing half-started: a SET after them runs immediately
        self.assertEqual(conn.command("SET", "k", "v"), b"+OK\r\n")
        self.assertEqual(self.direct().get("k"), b"v")

    def test_unknown_command(self) -> None:
        conn = self.raw()
        self.assertErrorReply(conn.command("NOSUCHCOMMAND", "a", "b"))
        self.assertEqual(conn.command("PING"), b"+PONG\r\n")


# ---------------------------------------------------------------------------
# malformed and oversized input


class MalformedInputTests(NodeTestCase):
    """A protocol error closes only the connection that sent it."""

    def test_protocol_error_closes_only_that_connection(self) -> None:
        before = self.raw()
        self.assertEqual(before.command("SET", "k", "v"), b"+OK\r\n")
        bad = self.raw()
        bad.send(b"*1\r\n$x\r\n")
        reply = bad.read_reply()
        self.assertTrue(reply.startswith(b"-ERR Protocol error"), reply)
        self.assertTrue(bad.closed_by_peer(2.0), "connection left open after a protocol error")
        self.assertEqual(before.command("GET", "k"), b"$1\r\nv\r\n")
        self.assertEqual(self.raw().command("PING"), b"+PONG\r\n")

    def test_bad_multibulk_length(self) -> None:
        bad = self.raw()
        bad.send(b"*abc\r\n")
        self.assertTrue(bad.read_reply().startswith(b"-ERR Protocol error"))
        self.assertTrue(bad.closed_by_peer(2.0))
        self.assertEqual(self.raw().command("PING"), b"+PONG\r\n")


class OversizedRequestTests(NodeTestCase):
    """A request over ``max_request_bytes`` is refused with an error naming the size, and not run."""

    node_overrides = {"max_request_bytes": 1024}

    def test_oversized_request_is_refused(self) -> None:
        before = self.raw()
        self.assertEqual(before.command("PING"), b"+PONG\r\n")
        bad = self.raw()
        bad.send(encode_command("SET", "big", "x" * 2048))
        reply = bad.read_reply()
        self.assertErrorReply(reply, "Protocol error")
        sizes = [int(n) for n in re.findall(rb"\d+", reply)]
        self.assertTrue(any(n >= 1024 for n in sizes), f"error does not name the size: {reply!r}")
        self.assertTrue(bad.closed_by_peer(2.0), "connection left open after oversized request")
        self.assertIsNone(self.direct().get("big"))
        self.assertEqual(before.command("PING"), b"+PONG\r\n")
        ok = self.raw()
        self.assertEqual(ok.command("SET", "small", "y" * 500), b"+OK\r\n")
        self.assertEqual(self.direct().get("small"), b"y" * 500)


# ---------------------------------------------------------------------------
# configuration checking


class ConfigCheckTests(unittest.TestCase):
    """``twistd dynomite --check-config``: a bad file fails with one line naming the file and the key."""

    def _write(self, tmp: str, name: str, config: Dict[str, Any]) -> str:
        os.makedirs(tmp, exist_ok=True)
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            yaml.safe_dump({"dyn_o_mite": config}, f)
        return path

    def _twistd(self, argv: List[str], cwd: str) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30
            )
        finally:
            self._reap_daemon(cwd)
        return proc

    def _reap_daemon(self, cwd: str) -> None:
        """If a twistd daemonized anyway, stop the PID it wrote, and fail."""
        pidfile = os.path.join(cwd, "twistd.pid")
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                pid = int(f.read().strip())
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
            self.fail(f"twistd daemonized (pid {pid}) instead of only checking the config")

    def _config(self, **extra: Any) -> Dict[str, Any]:
        return node_settings(redis_address=("127.0.0.1", processes.free_ports("127.0.0.1", 1)[0]), **extra)

    def _one_line_naming(self, output: str, path: str, key: str) -> None:
        self.assertNotIn("Traceback", output)
        lines = [
            line for line in output.splitlines()
            if key in line and (path in line or os.path.basename(path) in line)
        ]
        self.assertTrue(lines, f"no line names both {path!r} and {key!r}:\n{output}")

    def test_check_config_good(self) -> None:
        tmp = os.path.abspath(self.mktemp())
        config = self._config()
        path = self._write(tmp, "good.yml", config)
        proc = self._twistd([TWISTD, "dynomite", "--check-config", "-c", path], tmp)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        with self.assertRaises(OSError):
            processes.ping_raw("127.0.0.1", int(config["listen"].rsplit(":", 1)[1]))

    def test_check_config_unknown_key(self) -> None:
        tmp = os.path.abspath(self.mktemp())
        path = self._write(tmp, "bad.yml", self._config(bogus_option=1))
        proc = self._twistd([TWISTD, "dynomite", "--check-config", "-c", path], tmp)
        self.assertNotEqual(proc.returncode, 0)
        self._one_line_naming((proc.stdout + proc.stderr).decode(), path, "bogus_option")

    def test_check_config_bad_value(self) -> None:
        tmp = os.path.abspath(self.mktemp())
        path = self._write(tmp, "bad.yml", self._config(timeout="soon"))
        proc = self._twistd([TWISTD, "dynomite", "--check-config", "-c", path], tmp)
        self.assertNotEqual(proc.returncode, 0)
        self._one_line_naming((proc.stdout + proc.stderr).decode(), path, "timeout")

    def test_start_with_bad_config(self) -> None:
        tmp = os.path.abspath(self.mktemp())
        path = self._write(tmp, "bad.yml", self._config(bogus_option=1))
        log = os.path.join(tmp, "node.log")
        proc = self._twistd(
            [TWISTD, "-n", "--pidfile=", "--logfile", log, "dynomite", "-c", path], tmp
        )
        self.assertNotEqual(proc.returncode, 0)
        output = (proc.stdout + proc.stderr).decode()
        if os.path.exists(log):
            with open(log) as f:
                output += f.read()
        self._one_line_naming(output, path, "bogus_option")
