"""
``dynomite-demo``: a redis-server and a node in front of it, on this machine.

It starts both in a temporary directory, prints how to connect with
redis-cli, and stops both (and removes the directory) on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_ping(host: str, port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    """Block until ``host:port`` answers PING, or explain why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("%s exited with status %s" % (what, proc.returncode))
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("%s did not answer PING on %s:%d within %ds" % (what, host, port, timeout))


def main() -> None:
    host = "127.0.0.1"
    port = int(os.environ.get("DYNOMITE_DEMO_PORT", "8102"))
    workdir = tempfile.mkdtemp(prefix="dynomite-demo-")
    procs = []
    try:
        redis_port = free_port(host)
        redis = subprocess.Popen(
            ["redis-server", "--bind", host, "--port", str(redis_port), "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=open(os.path.join(workdir, "redis.log"), "wb"), stderr=subprocess.STDOUT,
        )
        procs.append(redis)
        wait_for_ping(host, redis_port, redis, "redis-server")
        config = {
            "dyn_o_mite": {
                "listen": "%s:%d" % (host, port),
                "dyn_listen": "%s:%d" % (host, free_port(host)),
                "stats_listen": "%s:%d" % (host, free_port(host)),
                "servers": ["%s:%d:1" % (host, redis_port)],
                "tokens": "0",
                "datacenter": "dc1",
                "rack": "rack1",
            }
        }
        path = os.path.join(workdir, "node.yml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        node = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "--logfile", os.path.join(workdir, "node.log"),
             "dynomite", "-c", path],
            cwd=workdir,
        )
        procs.append(node)
        wait_for_ping(host, port, node, "dynomite node (log: %s)" % os.path.join(workdir, "node.log"))
        print("dynomite node on %s:%d in front of redis-server on %s:%d" % (host, port, host, redis_port))
        print("  config: %s\n  log:    %s" % (path, os.path.join(workdir, "node.log")))
        print("try:  redis-cli -h %s -p %d   (Ctrl-C here stops everything)" % (host, port))
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a process exited; stopping the demo")
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
