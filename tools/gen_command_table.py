#!/usr/bin/env python
"""Generate ``dynomite/commands/redis_commands.py`` from a live redis-server 7.0.

Why generated: the node must describe commands (arity, flags, key specs, docs)
exactly as Redis 7.0 does, and copying that by hand rots. This script starts
its own throw-away ``redis-server`` (127.0.0.1, ephemeral port, temp dir, no
persistence), reads ``COMMAND INFO`` and ``COMMAND DOCS`` over RESP3, keeps
only what the node needs (argument trees are dropped) and writes a sorted,
deterministic Python literal. The node never needs a Redis to load it.

Usage::

    python tools/gen_command_table.py [--redis-server PATH] [--out FILE]
    python tools/gen_command_table.py --check

``--check`` asks a live Redis for ``COMMAND INFO`` and ``COMMAND DOCS`` of
every command the node serves, in RESP2 and RESP3, and compares them with the
replies of ``dynomite.commands.table``, after putting unordered collections (sets,
subcommands, which Redis emits in hash order) in a canonical order and
dropping ``arguments`` from docs. It also compares ``keys()`` with
``COMMAND GETKEYS`` for the sample argument lists of the unit tests.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "dynomite", "commands", "redis_commands.py")

Node = Tuple[str, Any]   # a typed reply: (RESP type char, value)


# -- a tiny typed RESP reader (the tool must not depend on dynomite.resp) ----

class Reader:
    """Parse RESP2/RESP3 replies into ``(type_char, value)`` tuples.

    ``recv`` supplies more bytes (a socket's, or nothing for in-memory data);
    every byte received is kept in ``received`` so callers can cut out the
    exact bytes of one reply.
    """

    def __init__(self, recv: Callable[[int], bytes], data: bytes = b"") -> None:
        self.recv = recv
        self.buf = data
        self.received = data

    def _more(self) -> None:
        chunk = self.recv(1 << 16)
        if not chunk:
            raise ConnectionError("connection closed in the middle of a reply")
        self.buf += chunk
        self.received += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self) -> Node:
        line = self._line()
        kind, rest = chr(line[0]), line[1:]
        if kind in "+-":
            return kind, rest
        if kind == ":":
            return kind, int(rest)
        if kind in "$=":
            size = int(rest)
            return (kind, None) if size < 0 else (kind, self._exact(size))
        if kind == "_":
            return kind, None
        if kind in "*~>":
            size = int(rest)
            return (kind, None) if size < 0 else (kind, [self.read() for _ in range(size)])
        if kind == "%":
            return kind, [(self.read(), self.read()) for _ in range(int(rest))]
        raise ValueError("unexpected RESP type %r" % kind)

    def read_raw(self) -> bytes:
        """Read one reply and return its exact bytes."""
        start = len(self.received) - len(self.buf)
        self.read()
        return self.received[start:len(self.received) - len(self.buf)]


def parse_bytes(data: bytes) -> Node:
    """Parse exactly one complete reply held in memory."""
    reader = Reader(lambda n: b"", data)
    node = reader.read()
    if reader.buf:
        raise ValueError("trailing bytes after reply: %r" % reader.buf[:40])
    return node


def encode_request(*args: bytes) -> bytes:
    return b"".join([b"*%d\r\n" % len(args)]
                    + [b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


def plain(node: Node) -> Any:
    """Typed reply -> plain Python (str, int, list, dict, None)."""
    kind, value = node
    if value is None:
        return None
    if kind in "+-$=":
        return value.decode()
    if kind in "*~>":
        return [plain(v) for v in value]
    if kind == "%":
        return {plain(k): plain(v) for k, v in value}
    return value


# -- a private redis-server ---------------------------------------------------

class RedisProcess:
    """A redis-server on 127.0.0.1, ephemeral port, temp dir, no persistence."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.tmp = tempfile.mkdtemp(prefix="gen-command-table-")
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0

    def __enter__(self) -> "RedisProcess":
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _start(self) -> None:
        for _ in range(5):   # the probed port may be taken before Redis binds it
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
            probe.close()
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self.tmp,
                 "--logfile", os.path.join(self.tmp, "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                    return
                except OSError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        raise RuntimeError("could not start %s" % self.binary)

    def session(self, resp: int) -> "Session":
        return Session(self.port, resp)


class Session:
    """One connection speaking RESP2 or RESP3 (via ``HELLO 3``)."""

    def __init__(self, port: int, resp: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 10)
        self.reader = Reader(self.sock.recv)
        if resp == 3:
            self.call(b"HELLO", b"3")

    def call(self, *args: bytes) -> Node:
        self.sock.sendall(encode_request(*args))
        return self.reader.read()

    def call_raw(self, *args: bytes) -> bytes:
        self.sock.sendall(encode_request(*args))
        return self.reader.read_raw()

    def close(self) -> None:
        self.sock.close()


# -- table extraction ---------------------------------------------------------

def _info_entry(info: List[Any]) -> Dict[str, Any]:
    """One COMMAND INFO entry (plain) -> the compact table entry."""
    name, arity, flags, first, last, step, acl, tips, specs, subs = info
    entry: Dict[str, Any] = {
        "name": name, "arity": arity, "flags": flags,
        "first_key": first, "last_key": last, "step": step,
        "acl_categories": acl,
    }
    if tips:
        entry["tips"] = tips
    if specs:
        entry["key_specs"] = specs
    if subs:
        entry["subcommands"] = {sub[0]: _info_entry(sub) for sub in subs}
    return entry


_DOC_FIELDS = ("summary", "since", "group", "complexity", "doc_flags",
               "deprecated_since", "replaced_by", "history")


def _merge_docs(entry: Dict[str, Any], docs: Dict[str, Any]) -> None:
    unknown = set(docs) - set(_DOC_FIELDS) - {"arguments", "subcommands"}
    if unknown:
        raise ValueError("%s: unexpected docs fields %s" % (entry["name"], sorted(unknown)))
    for field in _DOC_FIELDS:
        if field in docs:
            entry[field] = docs[field]
    for sub_name, sub_docs in (docs.get("subcommands") or {}).items():
        _merge_docs(entry["subcommands"][sub_name], sub_docs)


def extract(redis: RedisProcess) -> Tuple[str, Dict[str, Any]]:
    """Read the live server's command table; return (version, table)."""
    session = redis.session(3)
    try:
        hello = plain(session.call(b"HELLO", b"3"))
        info = plain(session.call(b"COMMAND", b"INFO"))
        docs = plain(session.call(b"COMMAND", b"DOCS"))
    finally:
        session.close()
    table = {}
    for item in info:
        entry = _info_entry(item)
        _merge_docs(entry, docs[entry["name"]])
        table[entry["name"]] = entry
    return hello["version"], table


def _sorted(obj: Any) -> Any:
    """Dicts rebuilt with sorted keys, recursively; lists keep Redis' order."""
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted(v) for v in obj]
    return obj


def _entry_text(entry: Dict[str, Any], indent: str) -> str:
    """One command per line; its subcommands one per line below it."""
    fields = ["%r: %r" % (k, _sorted(entry[k])) for k in sorted(entry) if k != "subcommands"]
    subs = entry.get("subcommands")
    if subs:
        inner = indent + "    "
        lines = ["%s%r: %s," % (inner, name, _entry_text(subs[name], inner))
                 for name in sorted(subs)]
        fields.append("'subcommands': {\n%s\n%s}" % ("\n".join(lines), inner))
    return "{%s}" % ", ".join(fields)


def render(version: str, table: Dict[str, Any]) -> str:
    """The data module's text: deterministic (sorted names and keys)."""
    lines = ["    %r: %s," % (name, _entry_text(table[name], "    ")) for name in sorted(table)]
    return (
        "# -*- test-case-name: tests.unit.test_commands -*-\n"
        '"""Redis %s command table (COMMAND INFO + COMMAND DOCS, no arguments).\n\n'
        "Generated by tools/gen_command_table.py; do not edit by hand.\n"
        '"""\n'
        "# flake8: noqa\n"
        "REDIS_VERSION = %r\n\n"
        "COMMANDS = {\n%s\n}\n" % (version, version, "\n".join(lines))
    )


# -- --check: the node's replies against the live server -----------------------

def canonical(node: Node, docs: bool = False) -> Any:
    """Typed reply with unordered parts sorted, for structural comparison.

    Sets are unordered by definition; command lists and subcommand maps come
    out of Redis in hash-table order, which changes from process to process.
    So aggregates are compared as sorted tuples, except a 10-field COMMAND
    INFO entry (kept in order). With ``docs``, ``arguments`` (which the node
    leaves out) is dropped from maps and from RESP2's flat maps.
    """
    kind, value = node
    if kind in "*~" and value is not None:
        if docs:
            value = _drop_arguments(value)
        items = [canonical(v, docs) for v in value]
        if kind == "*" and _is_info(items):
            return (kind, tuple(items))
        return (kind, tuple(sorted(items, key=repr)))
    if kind == "%":
        pairs = [(canonical(k), canonical(v, docs)) for k, v in value
                 if not (docs and k == ("$", b"arguments"))]
        return (kind, tuple(sorted(pairs, key=repr)))
    return node


def _drop_arguments(items: List[Node]) -> List[Node]:
    out = []
    skip = False
    for i, item in enumerate(items):
        if skip:
            skip = False
        elif i % 2 == 0 and item == ("$", b"arguments"):
            skip = True
        else:
            out.append(item)
    return out


def _is_info(items: List[Any]) -> bool:
    return len(items) == 10 and items[0][0] == "$" and items[1][0] == ":"


def check(redis: RedisProcess) -> int:
    """Compare dynomite.commands' replies with Redis; return mismatches."""
    sys.path.insert(0, ROOT)
    from dynomite.commands import table as commands

    failures = 0
    names = []
    partial = set()    # containers whose unsupported subcommands the node hides
    for cmd in commands.served():
        if ":" in cmd.name:
            continue       # Dynomite pseudo-commands: Redis does not know them
        names.append(cmd.name.encode())
        for sub, sub_cmd in sorted(cmd.subcommands.items()):
            if sub_cmd.route == commands.UNSUPPORTED:
                partial.add(cmd.name.encode())
            else:
                names.append(cmd.name.encode() + b"|" + sub)
    for resp in (2, 3):
        session = redis.session(resp)
        try:
            for name in names + [b"no-such-command", b"get|sub"]:
                for sub, fn in ((b"INFO", commands.command_info_reply),
                                (b"DOCS", commands.command_docs_reply)):
                    theirs = session.call_raw(b"COMMAND", sub, name)
                    ours = fn([name], resp)
                    if theirs == ours or name in partial:
                        continue
                    a = canonical(parse_bytes(theirs), sub == b"DOCS")
                    b = canonical(parse_bytes(ours), sub == b"DOCS")
                    if a != b:
                        failures += 1
                        print("MISMATCH RESP%d COMMAND %s %s\n redis: %r\n  ours: %r"
                              % (resp, sub.decode(), name.decode(), theirs[:600], ours[:600]))
        finally:
            session.close()
    print("COMMAND INFO/DOCS: %d names in RESP2 and RESP3, %d mismatches (%s: subset)"
          % (len(names), failures, b", ".join(sorted(partial)).decode()))
    return failures + _check_keys(redis, commands)


def _check_keys(redis: RedisProcess, commands: Any) -> int:
    try:
        from tests.unit.test_commands import GETKEYS_DIFFERENCES, KEY_CASES
    except ImportError:
        return 0
    failures = 0
    session = redis.session(2)
    try:
        for args, expected in KEY_CASES:
            cmd = commands.lookup(args[0])
            ours = commands.keys(cmd, args) if cmd else []
            kind, value = session.call(b"COMMAND", b"GETKEYS", *args)
            theirs = [v for _, v in value] if kind == "*" else []
            known = b" ".join(args).decode() in GETKEYS_DIFFERENCES
            if ours != theirs and not known:
                print("GETKEYS differs for %r: redis %r ours %r (test expects %r)"
                      % (args, theirs, ours, expected))
                failures += 1
            elif ours == theirs and known:
                print("GETKEYS agrees now for %r: drop it from GETKEYS_DIFFERENCES" % (args,))
    finally:
        session.close()
    print("COMMAND GETKEYS: %d cases, %d known differences, %d mismatches"
          % (len(KEY_CASES), len(GETKEYS_DIFFERENCES), failures))
    return failures


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-server", default=shutil.which("redis-server")
                        or "/usr/bin/redis-server")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true",
                        help="compare dynomite.commands' replies with live Redis")
    opts = parser.parse_args(argv)
    with RedisProcess(opts.redis_server) as redis:
        if opts.check:
            return 1 if check(redis) else 0
        version, table = extract(redis)
    if not version.startswith("7.0."):
        print("warning: expected redis 7.0, got %s" % version, file=sys.stderr)
    text = render(version, table)
    with open(opts.out + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(opts.out + ".tmp", opts.out)
    print("wrote %d commands from redis %s to %s" % (len(table), version, opts.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
