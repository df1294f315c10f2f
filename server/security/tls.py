"""TLS and mTLS on the server's ports, with certificates reloaded when their files change.

``grpc.dynamic_ssl_server_credentials`` asks each port's fetcher for the certificate configuration at every
new TLS handshake (on a gRPC C-core thread, not the event loop); it answers ``None`` (keep the current one)
unless :class:`CertificateReloader` saw the files' mtime or size change, so a handshake costs one ``stat``
per file. A
rotation (cert-manager writing a new Secret, a mesh agent rotating its certificate) is seen by the next
handshake; established connections keep the certificate they were opened with and nothing is dropped. A
rotation caught half-written (the new certificate with the old key) keeps the previous configuration and
is retried at the next handshake.

Client authentication: grpcio's Python API offers two modes only — do not ask for a client certificate,
or ask and require one signed by the client CA (``require_client_auth``). C-core's "ask, verify if sent"
is not reachable from Python, so there is no ``optional`` mode (docs/security.md says what to do instead).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

log = logging.getLogger("inferd")

ClientAuth = Literal["none", "require"]
CLIENT_AUTH_MODES: tuple[ClientAuth, ...] = ("none", "require")


class TlsConfigError(ValueError):
    """A TLS file is missing, unreadable, not PEM, or the key does not match the certificate.
    The message names the flag (``--tls-cert``...)."""


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS on every port the server listens on (``--tls-cert``, ``--tls-key``, ``--tls-client-ca``,
    ``--tls-client-auth``)."""

    cert: Path
    key: Path
    #: CA bundle client certificates must chain to (mTLS); needs ``client_auth="require"``
    client_ca: Path | None = None
    client_auth: ClientAuth = "none"

    def describe(self) -> str:
        """The log line's mode: "TLS on" or "mTLS required (client CA ...)"."""
        if self.client_auth == "require":
            return f"mTLS required (certificate {self.cert}, client CA {self.client_ca})"
        return f"TLS on (certificate {self.cert}; clients are not asked for certificates)"


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One consistent read of the files: what the credentials serve, and the stamps it was read at."""

    stamps: tuple[tuple[int, int], ...]
    config: grpc.ServerCertificateConfiguration
    fingerprint: bytes


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


def _read(path: Path, flag: str, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{flag} {path}: cannot read the {what}: {exc.strerror or exc}") from None
    if not data.strip():
        raise TlsConfigError(f"{flag} {path}: the {what} file is empty")
    return data


def _check_pair(cert_pem: bytes, key_pem: bytes, tls: ServerTls) -> bytes:
    """Parse the certificate chain and key; raise naming the flag unless the key matches the leaf.
    Returns the leaf's SHA-256 fingerprint."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsConfigError(f"--tls-cert {tls.cert}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        reason = "encrypted keys are not supported" if isinstance(exc, TypeError) else "not a PEM private key"
        raise TlsConfigError(f"--tls-key {tls.key}: {reason}") from None
    leaf_public = (
        chain[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_public != key_public:
        raise TlsConfigError(f"--tls-key {tls.key} does not match the certificate in --tls-cert {tls.cert}")
    return chain[0].fingerprint(hashes.SHA256())


def _check_ca(ca_pem: bytes, tls: ServerTls) -> None:
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise TlsConfigError(f"--tls-client-ca {tls.client_ca}: not a PEM certificate bundle") from None


class CertificateReloader:
    """The current certificate configuration, re-read when a file's mtime or size changes.

    Shared by every port; each port's credentials get their own :class:`_PortFetcher` (gRPC keeps a
    configuration per credentials object, so each port must be handed a new one once). Called on gRPC's
    threads (one call per handshake), hence the lock; never raises into gRPC (an exception there would fail
    the handshake): a bad rotation logs a warning and keeps serving the previous certificate.
    """

    def __init__(self, tls: ServerTls) -> None:
        self.tls = tls
        self._paths = tuple(p for p in (tls.cert, tls.key, tls.client_ca) if p is not None)
        self._lock = threading.Lock()
        self._current = self._load()  # raises TlsConfigError: the start-up check
        self._bad_stamps: tuple[tuple[int, int], ...] | None = None
        #: how many times a changed set of files was loaded (each port compares it with what it was given)
        self.reloads = 0

    def fetcher(self) -> _PortFetcher:
        """A certificate fetcher for one more port's credentials."""
        return _PortFetcher(self)

    def current(self) -> tuple[int, grpc.ServerCertificateConfiguration]:
        """(generation, configuration), after loading the files if they changed since the last look."""
        self._refresh()
        with self._lock:
            return self.reloads, self._current.config

    @property
    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._current.config

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the certificate new handshakes get."""
        return self._current.fingerprint

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        return tuple(_stamp(p) for p in self._paths)

    def _load(self) -> _Loaded:
        tls = self.tls
        for path, flag in ((tls.cert, "--tls-cert"), (tls.key, "--tls-key"), (tls.client_ca, "--tls-client-ca")):
            if path is not None and not path.is_file():
                raise TlsConfigError(f"{flag} {path}: no such file")
        stamps = self._stamps()
        cert = _read(tls.cert, "--tls-cert", "certificate")
        key = _read(tls.key, "--tls-key", "private key")
        fingerprint = _check_pair(cert, key, tls)
        ca = None
        if tls.client_ca is not None:
            ca = _read(tls.client_ca, "--tls-client-ca", "client CA")
            _check_ca(ca, tls)
        config = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
        return _Loaded(stamps, config, fingerprint)

    def _refresh(self) -> None:
        try:
            stamps = self._stamps()
        except OSError:
            return  # a file is being replaced right now: keep serving the current one
        with self._lock:
            if stamps == self._current.stamps or stamps == self._bad_stamps:
                return
            try:
                loaded = self._load()
            except Exception as exc:  # anything: a handshake must never fail because of a bad rotation
                if stamps != self._bad_stamps:
                    log.warning(
                        "TLS files changed but cannot be used (%s); still serving the previous certificate", exc
                    )
                self._bad_stamps = stamps
                return
            if loaded.stamps != stamps:
                return  # changed again while reading: the next handshake reads them again
            self._current = loaded
            self._bad_stamps = None
            self.reloads += 1
        log.info("TLS certificate reloaded from %s (sha256 %s)", self.tls.cert, loaded.fingerprint.hex()[:16])


class _PortFetcher:
    """gRPC's certificate fetcher for one port: a new configuration once per reload, else None (keep)."""

    def __init__(self, reloader: CertificateReloader) -> None:
        self._reloader = reloader
        self._given = reloader.reloads

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        generation, config = self._reloader.current()
        if generation == self._given:
            return None
        self._given = generation
        return config


class ServerSecurity:
    """What app.py binds its ports with: one reloader shared by every port."""

    def __init__(self, tls: ServerTls | None) -> None:
        """Raises :class:`TlsConfigError` (naming the flag) when the options or the files are unusable."""
        if tls is not None:
            validate(tls)
        self.tls = tls
        self.reloader = CertificateReloader(tls) if tls is not None else None

    def credentials(self) -> grpc.ServerCredentials | None:
        """New credentials for one port (they share the reloader); None = plaintext."""
        if self.reloader is None or self.tls is None:
            return None
        return grpc.dynamic_ssl_server_credentials(
            self.reloader.initial,
            self.reloader.fetcher(),
            require_client_authentication=self.tls.client_auth == "require",
        )

    def describe(self) -> str:
        return self.tls.describe() if self.tls is not None else "TLS off (plaintext)"


def validate(tls: ServerTls) -> None:
    """Raise :class:`TlsConfigError` (naming the flag) for options that cannot work together."""
    if tls.client_auth not in CLIENT_AUTH_MODES:
        raise TlsConfigError(
            f"--tls-client-auth must be one of {', '.join(CLIENT_AUTH_MODES)}, not {tls.client_auth!r}"
        )
    if tls.client_auth == "require" and tls.client_ca is None:
        raise TlsConfigError("--tls-client-auth require needs --tls-client-ca (the CA client certificates chain to)")
    if tls.client_auth == "none" and tls.client_ca is not None:
        raise TlsConfigError("--tls-client-ca is set but --tls-client-auth is none: clients would not be asked")


__all__ = [
    "CLIENT_AUTH_MODES",
    "CertificateReloader",
    "ClientAuth",
    "ServerSecurity",
    "ServerTls",
    "TlsConfigError",
    "validate",
]
