"""How the client commands reach a server: address, timeout, TLS / mTLS and a bearer token (SDK only).

``--tls-ca``, ``--tls-cert``/``--tls-key`` (mTLS), ``--tls-server-name``, ``--tls`` (the system's CAs) and
``--token``; each also reads an environment variable (``INFERD_TLS_CA``, ``INFERD_TLS_CERT``,
``INFERD_TLS_KEY``, ``INFERD_TOKEN``) so scripts need not repeat them — and so a token need not appear in
``ps`` output. The SDK itself reads no environment variable; this module is where the CLI does.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferd import Client, TlsFiles


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """TLS and token flags of every client command."""
    group = parser.add_argument_group("connection security (docs/security.md, Clients)")
    group.add_argument(
        "--tls", action="store_true", help="connect over TLS, trusting the system's CAs (implied by --tls-ca)"
    )
    group.add_argument(
        "--tls-ca",
        type=Path,
        default=_env_path("INFERD_TLS_CA"),
        metavar="PEM",
        help="connect over TLS; the server's certificate must chain to this CA bundle (default: $INFERD_TLS_CA)",
    )
    group.add_argument(
        "--tls-cert",
        type=Path,
        default=_env_path("INFERD_TLS_CERT"),
        metavar="PEM",
        help="client certificate for a server that requires mTLS (default: $INFERD_TLS_CERT)",
    )
    group.add_argument(
        "--tls-key",
        type=Path,
        default=_env_path("INFERD_TLS_KEY"),
        metavar="PEM",
        help="the client certificate's key (default: $INFERD_TLS_KEY)",
    )
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server's certificate must carry, when it differs from the address's host",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("INFERD_TOKEN") or None,
        help="bearer token sent as 'authorization: Bearer' (default: $INFERD_TOKEN; prefer the variable: "
        "arguments show in ps)",
    )


def tls_files(args: argparse.Namespace) -> TlsFiles | bool:
    """The flags as the SDK's ``tls=`` value: False (plaintext), True (system CAs) or :class:`TlsFiles`."""
    from inferd import TlsFiles

    ca, cert, key = getattr(args, "tls_ca", None), getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    server_name = getattr(args, "tls_server_name", None)
    if (cert is None) != (key is None):
        raise SystemExit("inferd: --tls-cert and --tls-key go together (a client certificate needs its key)")
    if ca is None and cert is None and server_name is None:
        return bool(getattr(args, "tls", False))
    for path, flag in ((ca, "--tls-ca"), (cert, "--tls-cert"), (key, "--tls-key")):
        if path is not None and not path.is_file():
            raise SystemExit(f"inferd: {flag} {path}: no such file")
    return TlsFiles(ca=ca, cert=cert, key=key, server_name=server_name)


def connect(args: argparse.Namespace) -> Client:
    """A :class:`inferd.Client` for ``--address`` with the command's timeout, TLS and token."""
    from inferd import Client

    try:
        return Client(args.address, timeout=args.timeout, tls=tls_files(args), token=getattr(args, "token", None))
    except ValueError as exc:  # an unreadable file, a malformed token
        raise SystemExit(f"inferd: {exc}") from None
