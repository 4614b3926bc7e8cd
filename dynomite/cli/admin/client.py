# -*- test-case-name: tests.integration.test_admin_cli -*-
"""
Talking to nodes' admin APIs: the only I/O of ``dynomite-admin``.

:class:`AdminClient` GETs JSON over HTTP (urllib, standard library, no
proxies); every failure is an :class:`AdminError` with one line for a
person. :func:`parallel` asks many nodes at once (a thread pool), so one
node that does not answer costs ``--timeout`` once, not once per node.
Admin addresses are ``host:port`` or ``[v6]:port`` (:func:`parse_address`,
:func:`join_address`).
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar

__all__ = [
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_TIMEOUT",
    "ENV_TOKEN",
    "AdminClient",
    "AdminError",
    "join_address",
    "parallel",
    "parse_address",
]

DEFAULT_ADMIN_PORT = 22222
DEFAULT_TIMEOUT = 5.0
ENV_TOKEN = "DYNOMITE_ADMIN_TOKEN"
#: Most nodes asked at once.
MAX_PARALLEL = 32

T = TypeVar("T")
R = TypeVar("R")


class AdminError(Exception):
    """A node could not be asked, or refused; ``str()`` is one line for a person."""

    def __init__(self, message: str, status: Optional[int] = None, reason: Optional[str] = None) -> None:
        super().__init__(message)
        #: The HTTP status of a refusal, else None.
        self.status = status
        #: The message without the address asked (for tables that already name the node).
        self.reason = message if reason is None else reason


# -- addresses -------------------------------------------------------------------


def parse_address(text: str, default_port: int = DEFAULT_ADMIN_PORT) -> Tuple[str, int]:
    """
    ``host:port``, ``[v6]:port``, or a bare host (``default_port``) as ``(host, port)``.

    Raises ``ValueError`` with a reason a person can act on.
    """
    text = text.strip()
    port_text: Optional[str] = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"expected HOST:PORT or [IPv6]:PORT, got {text!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:  # a bare host name or IPv4 address, or a bare IPv6 address
        host = text
    if not host:
        raise ValueError(f"expected HOST:PORT, got {text!r} (no host)")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port 1..65535, got {text!r}")
    return host, int(port_text)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- HTTP ------------------------------------------------------------------------------


class AdminClient:
    """
    GETs JSON from admin APIs with urllib. Ignores proxy settings (admin
    ports are internal). The token goes only with mutating paths, in the
    ``X-Admin-Token`` header. Every failure is an :class:`AdminError` whose
    message starts with the address asked.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, token: Optional[str] = None) -> None:
        self.timeout = timeout
        self.token = token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, address: str, path: str, mutating: bool = False) -> Any:
        try:
            host, port = parse_address(address)
        except ValueError as e:
            raise AdminError(f"{address}: {e}", reason=str(e)) from None
        url = "http://%s%s" % (join_address(host, port), path)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if mutating and self.token is not None:
            request.add_header("X-Admin-Token", self.token)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            reason = self._refusal(e)
            raise AdminError(f"{address}{path}: {reason}", e.code, reason) from None
        except urllib.error.URLError as e:
            reason = self._reason(e.reason)
            raise AdminError(f"{address}: {reason}", reason=reason) from None
        except (OSError, http.client.HTTPException) as e:
            reason = self._reason(e)
            raise AdminError(f"{address}: {reason}", reason=reason) from None
        try:
            return json.loads(body)
        except ValueError:
            reason = "the answer is not JSON (is this a dynomite-py admin port?)"
            raise AdminError(f"{address}{path}: {reason}", reason=reason) from None

    def _reason(self, reason: Any) -> str:
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return f"no answer within {self.timeout:g} s"
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused (is the node running? is this its stats_listen address?)"
        if isinstance(reason, socket.gaierror):
            return f"cannot resolve the host name ({reason.strerror or reason})"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror[:1].lower() + reason.strerror[1:]
        if isinstance(reason, http.client.HTTPException):
            return f"not an HTTP answer ({type(reason).__name__})"
        return str(reason) or type(reason).__name__

    def _refusal(self, e: urllib.error.HTTPError) -> str:
        try:
            message = json.loads(e.read()).get("error") or ""
        except (ValueError, AttributeError, OSError):
            message = ""
        if e.code == 403:
            if self.token is None:
                return f"refused (403): this needs the cluster's admin token; pass --token or set ${ENV_TOKEN}"
            return "refused (403): the admin token was not accepted"
        return f"HTTP {e.code}: {message or e.reason}"


def parallel(fn: Callable[[T], R], items: Sequence[T]) -> List[Tuple[Optional[R], Optional[AdminError]]]:
    """``fn`` on every item at once: ``(value, None)`` or ``(None, AdminError)`` per item, in order."""
    if not items:
        return []

    def call(item: T) -> Tuple[Optional[R], Optional[AdminError]]:
        try:
            return fn(item), None
        except AdminError as e:
            return None, e

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(items))) as pool:
        return list(pool.map(call, items))
