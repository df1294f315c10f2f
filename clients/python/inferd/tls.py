"""TLS, mTLS and bearer tokens for the SDK's channels (docs/security.md, "Clients").

``Client("host:8001", tls=TlsFiles(ca="ca.pem"), token="...")``: ``tls=True`` trusts the system's CAs;
:class:`TlsFiles` names a CA bundle, and a client certificate and key for mTLS. A token is sent as
``authorization: Bearer <token>`` metadata on every call. The SDK reads no environment variable (the
``inferd`` CLI reads ``INFERD_TOKEN``): what a program sends is what it passes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["TlsFiles", "TlsLike", "bearer_metadata", "channel_credentials", "tls_options"]

PathOrPem = str | os.PathLike[str] | bytes


@dataclass(frozen=True)
class TlsFiles:
    """Where a client's TLS material is: paths (or PEM bytes).

    ``ca``: the CA bundle the server's certificate must chain to (None: the system's CAs);
    ``cert``/``key``: the client's certificate chain and key, for a server that requires mTLS (both or
    neither); ``server_name``: the name to check the server's certificate against when it differs from
    the address (e.g. dialling an IP, or a tunnel).
    """

    ca: PathOrPem | None = None
    cert: PathOrPem | None = None
    key: PathOrPem | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TlsFiles: a client certificate needs its key (cert and key go together)")


TlsLike = bool | TlsFiles | None


def _pem(value: PathOrPem | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {os.fspath(value)}: {exc.strerror or exc}") from None


def channel_credentials(tls: TlsLike) -> grpc.ChannelCredentials | None:
    """``tls`` as channel credentials; None (plaintext) for False/None."""
    if tls is None or tls is False:
        return None
    files = TlsFiles() if tls is True else tls
    if not isinstance(files, TlsFiles):
        raise TypeError(f"tls must be True, False or a TlsFiles, not {type(tls).__name__}")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(files.ca, "CA bundle"),
        private_key=_pem(files.key, "client key"),
        certificate_chain=_pem(files.cert, "client certificate"),
    )


def tls_options(tls: TlsLike) -> list[tuple[str, Any]]:
    """Channel options ``tls`` needs (the server-name override)."""
    if isinstance(tls, TlsFiles) and tls.server_name:
        return [("grpc.ssl_target_name_override", tls.server_name)]
    return []


def bearer_metadata(token: str | None, metadata: Sequence[tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    """``metadata`` plus ``authorization: Bearer <token>``; refuses a second authorization entry."""
    pairs = tuple(metadata or ())
    if token is None:
        return pairs
    token = token.strip()
    if not token or any(c in token for c in "\r\n "):
        raise ValueError("token must be one non-empty word (no spaces or line breaks)")
    if any(key.lower() == "authorization" for key, _ in pairs):
        raise ValueError("pass either token= or an 'authorization' metadata entry, not both")
    return (*pairs, ("authorization", f"Bearer {token}"))
