# -*- test-case-name: tests.unit.test_tls -*-
"""
The value parsers and rules of the security keys: the passwords and tokens
(``requirepass``, ``peer_secret``, ``admin_token``), the ACL users
(``acl_file``, ``users``), TLS (``tls_*``) and the datastore's credentials
(``datastore_username``, ``datastore_password``, ``datastore_tls``).

The TLS and datastore rows are :data:`TLS_KEYS`, which
:data:`dynomite.config.keys.KEYS` takes in; :func:`check_tls_together` is
their rule across keys. The files are only named here: the ACL file is read
by :mod:`dynomite.commands.acl`, the certificates by
:mod:`dynomite.runtime.tls`.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from dynomite.config.parsers import Key, _bool, _kept, _optional_listener, _secret, _text
from dynomite.config.yamlio import ConfigError, Invalid, show

__all__ = ["TLS_AUTH_CLIENTS", "TLS_KEYS", "TLS_VERSIONS", "check_tls_together"]


_requirepass = _secret("disable AUTH")
_peer_secret = _secret("disable peer authentication")
_admin_token = _secret("leave the admin API open")


# -- ACL users (checked and compiled by dynomite.commands.acl) --------------


def _acl_file(value: Any) -> str:
    """The path of a Redis ACL file (``user ...`` lines), relative to the working directory."""
    return _text(value)


def _users(value: Any) -> Tuple[str, ...]:
    """ACL users as a YAML list of ACL-file lines: ``- user alice on >pw ~app:* +@read``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid(f"expected a list of ACL lines like 'user alice on >pass ~app:* +@read', got {show(value)}")
    for i, entry in enumerate(value, 1):
        if not isinstance(entry, str) or not entry.strip().startswith("user "):
            raise Invalid(f"entry {i}: expected an ACL line starting 'user <name>', got {show(entry)}")
    return tuple(value)


# -- TLS and the datastore's credentials --------------------------------------
# Redis's own names where Redis has them (tls-cert-file -> tls_cert_file...).
# The files are only named here; dynomite.runtime.tls reads and checks them.

#: The TLS versions ``tls_protocols`` may list, as Redis spells them.
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
#: ``tls_auth_clients``: client certificates refused, asked for, required.
TLS_AUTH_CLIENTS = ("no", "optional", "yes")


def _tls_protocols(value: Any) -> Tuple[str, ...]:
    """``"TLSv1.2 TLSv1.3"``: the versions the node speaks, space-separated."""
    if not isinstance(value, str) or not value.split():
        raise Invalid(f"expected TLS versions such as 'TLSv1.2 TLSv1.3', got {show(value)}")
    known = {v.lower(): v for v in TLS_VERSIONS}
    versions = []
    for word in value.split():
        if word.lower() not in known:
            raise Invalid(f"unknown TLS version {word!r}; expected {' or '.join(TLS_VERSIONS)}")
        versions.append(known[word.lower()])
    return tuple(v for v in TLS_VERSIONS if v in versions)


def _tls_auth_clients(value: Any) -> str:
    if isinstance(value, bool):  # YAML reads an unquoted yes/no as a boolean
        return "yes" if value else "no"
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in TLS_AUTH_CLIENTS:
        raise Invalid(f"expected one of {', '.join(TLS_AUTH_CLIENTS)}, got {show(value)}")
    return word


_datastore_password = _secret("connect to the datastore without AUTH")


TLS_KEYS: Dict[str, Key] = {
    "tls_listen": Key(_optional_listener, None, "tls_listen"),
    "tls_cert_file": Key(_text, None, "tls_cert_file"),
    "tls_key_file": Key(_text, None, "tls_key_file"),
    "tls_ca_cert_file": Key(_text, None, "tls_ca_cert_file"),
    "tls_auth_clients": Key(_tls_auth_clients, None, "tls_auth_clients"),
    "tls_protocols": _kept(_tls_protocols, "tls_protocols"),
    "tls_ciphers": Key(_text, None, "tls_ciphers"),
    "datastore_username": Key(_text, None, "datastore_username"),
    "datastore_password": Key(_datastore_password, None, "datastore_password"),
    "datastore_tls": _kept(_bool, "datastore_tls"),
}


def check_tls_together(values: Dict[str, Any], source: str) -> None:
    """
    What TLS needs besides itself: a certificate with its key, a CA to
    verify peers (mutual TLS), clients or the datastore against.  Fills in
    ``tls_auth_clients`` when it is not given: ``yes`` with a CA, as Redis.
    """
    cert, key, ca = values["tls_cert_file"], values["tls_key_file"], values["tls_ca_cert_file"]
    if (cert is None) != (key is None):
        missing = "tls_key_file" if key is None else "tls_cert_file"
        other = "tls_cert_file" if key is None else "tls_key_file"
        raise ConfigError(source, missing, f"required with {other}")
    needs = [("tls_listen", values["tls_listen"] is not None, "tls_cert_file"),
             ("secure_server_option", values["secure_server_option"] != "none", "tls_cert_file"),
             ("secure_server_option", values["secure_server_option"] != "none", "tls_ca_cert_file"),
             ("datastore_tls", values["datastore_tls"], "tls_ca_cert_file")]
    for key_name, wanted, need in needs:
        if wanted and values[need] is None:
            raise ConfigError(source, need, f"required by {key_name}")
    auth = values["tls_auth_clients"]
    if auth is None:
        values["tls_auth_clients"] = "yes" if ca is not None else "no"
    elif auth != "no" and ca is None:
        raise ConfigError(source, "tls_auth_clients",
                          f"{auth} needs tls_ca_cert_file to verify client certificates")
    if values["datastore_username"] is not None and values["datastore_password"] is None:
        raise ConfigError(source, "datastore_username", "needs datastore_password")
