# -*- test-case-name: tests.integration.test_cluster_launcher -*-
"""
What this host can tell the launcher about its ports and processes.

Free and busy TCP ports (:func:`free_ports`, :func:`port_busy`), a process's
state and start time from /proc (:func:`proc_stat`, :func:`pid_alive`: the
start time tells a live process from a reused PID) and an inline PING that
needs no client library (:func:`ping_raw`, :func:`ping`), in clear or over
TLS for a node that takes TLS clients only. Small,
blocking, standard library only; :mod:`dynomite.launcher.processes` builds
on them, and ``dynomite-cluster`` and the integration tests use them
directly.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["free_ports", "pid_alive", "ping", "ping_raw", "port_busy", "proc_stat", "tls_probe", "tls_probe_context"]


# -- ports ---------------------------------------------------------------------------


def free_ports(host: str, count: int) -> List[int]:
    """
    ``count`` distinct ports free on ``host`` a moment ago (sockets held
    until all are chosen).

    The host comes first, as in every address here (``(host, port)``).
    Mind the order: the integration tests' harness has a
    ``free_ports(count, host)`` of its own that calls this one.
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


def port_busy(host: str, port: int) -> Optional[str]:
    """Why ``host:port`` cannot be listened on, or None if it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # The servers use SO_REUSEADDR too: only a live listener is a conflict.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


# -- /proc, PING and logs ----------------------------------------------------------


def proc_stat(pid: int) -> Optional[Tuple[str, Optional[int]]]:
    """(state letter, start time in clock ticks) of ``pid``, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: ask the kernel, without a start time
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ("?", None)
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def pid_alive(pid: int, start_time: Optional[int] = None) -> bool:
    """
    True if ``pid`` is a live process (zombies are dead) and, when
    ``start_time`` is given, still the same process rather than a reused PID.
    """
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_time is None or stat[1] is None or stat[1] == start_time


def tls_probe(settings: Mapping[str, Any], directory: str) -> Dict[str, Optional[str]]:
    """
    How to PING the TLS client port of a node with these Dynomite
    ``settings`` running in ``directory``: its CA, and its own certificate
    presented as a client's (for ``tls_auth_clients: yes``).
    """
    def path(key: str) -> Optional[str]:
        value = settings.get(key)
        return os.path.join(directory, value) if value else None
    return {"ca": path("tls_ca_cert_file"), "cert": path("tls_cert_file"), "key": path("tls_key_file")}


def tls_probe_context(tls: Mapping[str, Optional[str]]) -> ssl.SSLContext:
    """
    A client context for a probe of a TLS client port: ``tls["ca"]`` is
    the CA the server's certificate is checked against (none: not checked),
    ``tls["cert"]`` and ``tls["key"]`` a client certificate to present. The
    name is not checked: a probe dials an address.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if tls.get("ca"):
        context.load_verify_locations(tls["ca"])
    else:
        context.verify_mode = ssl.CERT_NONE
    if tls.get("cert"):
        context.load_cert_chain(tls["cert"], tls.get("key"))
    return context


def ping_raw(host: str, port: int, timeout: float = 1.0,
             tls: Optional[Mapping[str, Optional[str]]] = None) -> bytes:
    """
    Send an inline PING (over TLS when ``tls`` is given, see
    :func:`tls_probe_context`); return the first reply line (b"" on EOF).
    Connection and TLS errors raise OSError.
    """
    with socket.create_connection((host, port), timeout=timeout) as raw:
        s = tls_probe_context(tls).wrap_socket(raw) if tls is not None else raw
        with s:
            s.sendall(b"PING\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data


def ping(host: str, port: int, timeout: float = 1.0, tls: Optional[Mapping[str, Optional[str]]] = None) -> bytes:
    """Send an inline PING (over TLS when ``tls`` is given); return the first reply line, or b"" if none came."""
    try:
        return ping_raw(host, port, timeout, tls)
    except OSError:   # ssl.SSLError is one
        return b""
