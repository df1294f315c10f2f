"""``inferd serve``'s security flags (docs/security.md): TLS / mTLS, and (their own sections below) the auth
config and the audit log.

Each part adds its flags to one argument group and turns them back into options; ``serve.py`` calls
:func:`add_security_flags` and the ``*_options`` functions. Nothing here imports the server's packages at
module level: the server (and ``cryptography``) load only for ``inferd serve``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.security.audit import AuditLogOptions
    from server.security.auth_config import AuthConfig
    from server.security.tls import ServerTls


class SecurityFlagError(ValueError):
    """Flags that cannot work together; ``inferd serve`` prints the message (it names the flag) and exits 2."""


#: --tls-client-auth's modes (server/security/tls.py: grpcio offers no "ask but do not require" mode)
CLIENT_AUTH_CHOICES = ("none", "require")


def add_security_flags(serve: argparse.ArgumentParser) -> None:
    """Every security flag of ``inferd serve``, in one help group."""
    group = serve.add_argument_group("security (docs/security.md)")
    _add_tls_flags(group)
    _add_auth_flags(group)
    _add_audit_flags(group)


# ---- TLS (S1) ------------------------------------------------------------------------------------------


def _add_tls_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="serve TLS on every port with this certificate chain (PEM; reloaded when the file changes)",
    )
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key (PEM, unencrypted)")
    group.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="mTLS: CA bundle that client certificates must chain to (implies --tls-client-auth require)",
    )
    group.add_argument(
        "--tls-client-auth",
        choices=CLIENT_AUTH_CHOICES,
        default=None,
        help="ask clients for a certificate: none, or require one signed by --tls-client-ca "
        "(default: require with --tls-client-ca, none without)",
    )


def tls_options(args: argparse.Namespace) -> ServerTls | None:
    """``--tls-*`` as :class:`ServerTls`; None = plaintext. Raises :class:`SecurityFlagError` naming the flag
    for combinations that make no sense; the files themselves are checked at start (StartupError)."""
    cert: Path | None = getattr(args, "tls_cert", None)
    key: Path | None = getattr(args, "tls_key", None)
    client_ca: Path | None = getattr(args, "tls_client_ca", None)
    client_auth: str | None = getattr(args, "tls_client_auth", None)
    if cert is None and key is None:
        if client_ca is not None or client_auth not in (None, "none"):
            raise SecurityFlagError("--tls-client-ca / --tls-client-auth need --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        given, missing = ("--tls-key", "--tls-cert") if cert is None else ("--tls-cert", "--tls-key")
        raise SecurityFlagError(f"{given} needs {missing} too")
    from server.security.tls import ServerTls

    mode = client_auth or ("require" if client_ca is not None else "none")
    return ServerTls(cert=cert, key=key, client_ca=client_ca, client_auth=mode)  # type: ignore[arg-type]


# ---- auth config (S2) ----------------------------------------------------------------------------------


def _auth_config(text: str) -> AuthConfig:
    """Read and validate the whole file now: a bad policy stops ``inferd serve`` (exit 2) naming PATH:LINE."""
    from server.security.auth_config import AuthConfigError, load_auth_config

    try:
        return load_auth_config(text)
    except AuthConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_auth_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--auth-config",
        type=_auth_config,
        default=None,
        metavar="YAML",
        help="authenticate callers (bearer tokens, JWTs, mTLS identity) and authorize them per method and model, "
        "with rate limits, as this file says (default: every call is allowed, as without TLS)",
    )


def auth_options(args: argparse.Namespace) -> AuthConfig | None:
    """``--auth-config``, already parsed and validated; None = no authentication (everything open)."""
    return getattr(args, "auth_config", None)


# ---- audit log (S3) ------------------------------------------------------------------------------------


def _audit_destination(text: str) -> AuditLogOptions:
    """Check now that the log can be written: a typo in the path stops ``inferd serve`` (exit 2)."""
    from server.security.audit import AuditLogError, AuditLogOptions, check_destination

    try:
        options = AuditLogOptions(text)
        check_destination(options)
    except AuditLogError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return options


def _add_audit_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--audit-log",
        type=_audit_destination,
        default=None,
        metavar="PATH",
        help="write one JSON line per model-control action (load, unload, traffic, shadow) and per denied call "
        "to PATH (appended to), or - for stdout; never tokens or payloads (default: no audit log)",
    )


def audit_options(args: argparse.Namespace) -> AuditLogOptions | None:
    """``--audit-log`` as :class:`AuditLogOptions` (the destination already checked); None = no audit log.

    It needs ``--auth-config``: without one no interceptor runs, no caller has a name and nothing is denied, so
    a log that stayed empty would only mislead."""
    options: AuditLogOptions | None = getattr(args, "audit_log", None)
    if options is not None and getattr(args, "auth_config", None) is None:
        raise SecurityFlagError("--audit-log needs --auth-config (without it no caller is identified or denied)")
    return options
