# -*- test-case-name: tests.unit.test_tls -*-
"""
TLS for every link a node has, built from its configuration.

This module owns turning ``tls_*`` file names into Twisted TLS objects, and
the one rule that says which peer links are encrypted.  Everything is a
plain function of file contents and settings; nothing here listens or dials:

- `load_identity` and `load_authority` read the node's certificate (with its
  chain), its private key and the CA bundle, and raise
  `~dynomite.config.model.ConfigError` naming the file's key and what is
  wrong (unreadable, not PEM, expired, key not matching the certificate);
- `server_options` is what a TLS listener speaks (client port, peer port),
  asking for client certificates per ``tls_auth_clients``;
- `client_creator` is what a connection this node makes speaks: it verifies
  the server's certificate against the CA *and* that it names the host
  dialled (service_identity, IP addresses included), and presents this
  node's certificate;
- `link_encrypted` is Dynomite's ``secure_server_option``: ``datacenter``
  encrypts links between datacenters, ``rack`` links between racks (and
  datacenters), ``all`` every link;
- `certificate_mismatch` says whether a certificate names a host: the peer
  listener checks that the certificate a connecting node presented names the
  host of the node it says it is in HELLO.

`NodeTLS` holds the current objects for one node.  A SIGHUP reload
(`dynomite.node.control.NodeControl.reload`) calls `NodeTLS.reload`, and
new connections use the new certificates: listeners ask `NodeTLS` for a
connection at each accept (`CurrentServer`) and outbound links at each dial
(`ReloadingTLSEndpoint`); established connections keep theirs.

Versions: ``tls_protocols`` lists TLSv1.2 and/or TLSv1.3 (older ones are not
offered).  ``tls_ciphers`` is an OpenSSL cipher list for TLSv1.2, as in
Redis; TLSv1.3 suites are OpenSSL's defaults.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address
from twisted.internet import ssl
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from dynomite.config.model import ConfigError, NodeConfig

__all__ = [
    "CurrentServer", "Identity", "NodeTLS", "ReloadingTLSEndpoint", "certificate_mismatch",
    "client_creator", "is_tls", "link_encrypted", "load_authority", "load_identity", "server_options",
    "tls_failure",
]

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def link_encrypted(option: str, dc: str, rack: str, peer_dc: str, peer_rack: str) -> bool:
    """Whether ``secure_server_option`` encrypts the link between (dc, rack) and (peer_dc, peer_rack)."""
    if option == "all":
        return True
    if option == "datacenter":
        return dc != peer_dc
    if option == "rack":
        return dc != peer_dc or rack != peer_rack
    return False


# -- reading files ------------------------------------------------------------------


def _read(path: str, source: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(source, key, f"cannot read {path}: {e.strerror or e}") from None


def _certificates(data: bytes, path: str, source: str, key: str) -> List[crypto.X509]:
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ConfigError(source, key, f"{path} holds no PEM certificate")
    certs = []
    for block in blocks:
        try:
            certs.append(crypto.load_certificate(crypto.FILETYPE_PEM, block))
        except crypto.Error:
            raise ConfigError(source, key, f"{path} holds a PEM certificate that cannot be parsed") from None
    return certs


class Identity:
    """
    A certificate (with the chain after it in its file) and its private key,
    as `cryptography` objects (what pyOpenSSL takes without deprecation).
    """

    def __init__(self, certificate: crypto.X509, chain: List[crypto.X509], key: crypto.PKey) -> None:
        self.certificate = certificate.to_cryptography()
        self.chain = [c.to_cryptography() for c in chain]
        self.key = key.to_cryptography_key()

    def options(self) -> Dict[str, Any]:
        """`CertificateOptions` arguments presenting this identity."""
        return {"privateKey": self.key, "certificate": self.certificate, "extraCertChain": self.chain}


def load_identity(source: str, cert_file: str, key_file: str,
                  cert_key: str = "tls_cert_file", key_key: str = "tls_key_file") -> Identity:
    """This node's certificate and key; `ConfigError` naming the key and the reason."""
    first, *chain = _certificates(_read(cert_file, source, cert_key), cert_file, source, cert_key)
    if first.has_expired():
        after = first.get_notAfter() or b"?"
        raise ConfigError(source, cert_key, f"the certificate in {cert_file} expired ({after.decode()})")
    data = _read(key_file, source, key_key)
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, data)
    except crypto.Error:
        reason = "is encrypted (give an unencrypted key)" if b"ENCRYPTED" in data else "holds no PEM private key"
        raise ConfigError(source, key_key, f"{key_file} {reason}") from None
    identity = Identity(first, chain, key)
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.use_certificate(identity.certificate)
        context.use_privatekey(identity.key)
        context.check_privatekey()
    except SSL.Error:
        raise ConfigError(source, key_key,
                          f"the key in {key_file} does not match the certificate in {cert_file}") from None
    return identity


def load_authority(source: str, ca_file: str, ca_key: str = "tls_ca_cert_file") -> List[crypto.X509]:
    """The CA certificates peers' and clients' certificates are verified against."""
    return _certificates(_read(ca_file, source, ca_key), ca_file, source, ca_key)


def _version_options(protocols: Tuple[str, ...]) -> Dict[str, Any]:
    versions = [_VERSIONS[p] for p in protocols]
    options: Dict[str, Any] = {}
    if min(versions) > ssl.TLSVersion.TLSv1_2:
        options["raiseMinimumTo"] = min(versions)
    if max(versions) < ssl.TLSVersion.TLSv1_3:
        options["lowerMaximumSecurityTo"] = max(versions)
    return options


def _cipher_options(source: str, ciphers: Optional[str]) -> Dict[str, Any]:
    if ciphers is None:
        return {}
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise ConfigError(source, "tls_ciphers", f"no cipher OpenSSL knows matches {ciphers!r}") from None
    return {"acceptableCiphers": ssl.AcceptableCiphers.fromOpenSSLCipherString(ciphers)}


# -- building options -----------------------------------------------------------------


def server_options(identity: Identity, authority: Optional[List[crypto.X509]], auth_clients: str,
                   protocols: Tuple[str, ...] = ("TLSv1.2", "TLSv1.3"),
                   ciphers: Optional[Dict[str, Any]] = None) -> ssl.CertificateOptions:
    """
    A TLS server: presents ``identity``; with ``auth_clients`` ``yes`` a client
    must present a certificate signed by ``authority``, with ``optional`` one
    it presents must be, with ``no`` none is asked for.
    """
    verify = auth_clients != "no"
    if verify and not authority:
        raise ValueError("verifying client certificates needs a CA")
    return ssl.CertificateOptions(
        **identity.options(), verify=verify, caCerts=authority if verify else None, requireCertificate=auth_clients == "yes",
        **_version_options(protocols), **(ciphers or {}),
    )


def client_creator(host: str, authority: List[crypto.X509], identity: Optional[Identity],
                   protocols: Tuple[str, ...] = ("TLSv1.2", "TLSv1.3"),
                   ciphers: Optional[Dict[str, Any]] = None):
    """
    A TLS client toward ``host``: the server's certificate must be signed by
    ``authority`` and name ``host``; presents ``identity`` when given.
    """
    extra = {**_version_options(protocols), **(ciphers or {})}
    if identity is not None:
        extra.update(identity.options())
    return ssl.optionsForClientTLS(
        host, trustRoot=ssl.trustRootFromCertificates([ssl.Certificate(c) for c in authority]),
        extraCertificateOptions=extra,
    )


def certificate_mismatch(certificate: Any, host: str) -> Optional[str]:
    """
    None when ``certificate`` (pyOpenSSL's or cryptography's) names ``host``
    (a DNS name or an IP address), else why not.
    """
    if certificate is None:
        return "it presented no certificate"
    cert = certificate.to_cryptography() if isinstance(certificate, crypto.X509) else certificate
    try:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            verify_certificate_hostname(cert, host)
        else:
            verify_certificate_ip_address(cert, host)
    except (VerificationError, CertificateError):
        return f"its certificate does not name {host}"
    return None


# -- one node's TLS, reloadable ---------------------------------------------------------


class NodeTLS:
    """
    The TLS objects of one node, from its configuration; `reload` re-reads
    the files.  Without TLS settings it holds nothing and every accessor says
    so (``None`` / ``False``).
    """

    def __init__(self, config: NodeConfig) -> None:
        self.option = config.secure_server_option
        self.datacenter = config.datacenter
        self.rack = config.rack
        self.datastore_tls = config.datastore_tls
        self.identity: Optional[Identity] = None
        self.authority: Optional[List[crypto.X509]] = None
        self._client_server: Optional[ssl.CertificateOptions] = None
        self._peer_server: Optional[ssl.CertificateOptions] = None
        self._protocols = config.tls_protocols
        self._ciphers: Dict[str, Any] = {}
        self.reload(config)

    @classmethod
    def from_config(cls, config: NodeConfig) -> "NodeTLS":
        """Read and check every file the configuration names; `ConfigError` on the first problem."""
        return cls(config)

    def reload(self, config: NodeConfig) -> None:
        """Re-read the files (SIGHUP): new connections use them; nothing changes if one is bad."""
        source = config.source
        identity = authority = None
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            identity = load_identity(source, config.tls_cert_file, config.tls_key_file)
        if config.tls_ca_cert_file is not None:
            authority = load_authority(source, config.tls_ca_cert_file)
        ciphers = _cipher_options(source, config.tls_ciphers)
        client_server = peer_server = None
        if identity is not None:
            client_server = server_options(identity, authority, config.tls_auth_clients,
                                           config.tls_protocols, ciphers)
            if authority is not None:
                peer_server = server_options(identity, authority, "yes", config.tls_protocols, ciphers)
        self.identity, self.authority, self._ciphers = identity, authority, ciphers
        self._protocols = config.tls_protocols
        self._client_server, self._peer_server = client_server, peer_server

    @property
    def enabled(self) -> bool:
        """A certificate is configured (the client TLS port, encrypted peer links are possible)."""
        return self.identity is not None

    # -- peers --------------------------------------------------------------------

    def peer_encrypted(self, peer_dc: str, peer_rack: str) -> bool:
        """Whether the link to a peer in (peer_dc, peer_rack) runs TLS (``secure_server_option``)."""
        return link_encrypted(self.option, self.datacenter, self.rack, peer_dc, peer_rack)

    def peer_client(self, host: str):
        """The client side of mutual TLS toward the peer at ``host``."""
        assert self.authority is not None and self.identity is not None
        return client_creator(host, self.authority, self.identity, self._protocols, self._ciphers)

    def peer_server(self) -> Optional[ssl.CertificateOptions]:
        """The server side of mutual TLS on ``dyn_listen`` (None: no CA, so no peer TLS)."""
        return self._peer_server

    # -- clients and the datastore ---------------------------------------------------

    def client_server(self) -> Optional[ssl.CertificateOptions]:
        """What ``tls_listen`` speaks to clients."""
        return self._client_server

    def datastore_client(self, host: str):
        """TLS toward the local Redis (``datastore_tls``): its CA, this node's certificate if any."""
        assert self.authority is not None
        return client_creator(host, self.authority, self.identity, self._protocols, self._ciphers)


@implementer(IOpenSSLServerConnectionCreator)
class CurrentServer:
    """A TLS listener's connection creator that asks for the current options at each accept."""

    def __init__(self, options: Callable[[], Optional[ssl.CertificateOptions]]) -> None:
        self._options = options

    def serverConnectionForTLS(self, tls_protocol):
        options = self._options()
        if options is None:
            raise SSL.Error("no TLS certificate configured")
        return options.serverConnectionForTLS(tls_protocol)


class ReloadingTLSEndpoint:
    """``wrapped`` with TLS on top, the creator fetched from ``creator()`` at each connect."""

    def __init__(self, creator: Callable[[], Any], wrapped) -> None:
        self._creator = creator
        self._wrapped = wrapped

    def connect(self, factory):
        return wrapClientTLS(self._creator(), self._wrapped).connect(factory)


def is_tls(transport) -> bool:
    """Whether ``transport`` is a TLS connection (Twisted's memory-BIO TLS, as every TLS link here is)."""
    return isinstance(transport, TLSMemoryBIOProtocol)


def tls_failure(reason) -> Optional[str]:
    """The TLS error that ended a connection (a `Failure`), or None when it ended otherwise."""
    if reason is None:
        return None
    if reason.check(VerificationError, CertificateError):
        return "its certificate does not name the host dialled"
    if not reason.check(SSL.Error):
        return None
    errors = reason.value.args[0] if reason.value.args else None
    if isinstance(errors, list) and errors and isinstance(errors[-1], tuple):
        return str(errors[-1][-1])   # OpenSSL's last word: "certificate verify failed", ...
    return reason.getErrorMessage()
