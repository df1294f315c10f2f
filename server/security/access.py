"""Access control for one server: the authenticator, authorizer and rate limiter built from the auth config,
shared by every port, and a fresh :class:`SecurityInterceptor` per port (an interceptor caches handlers by
method name, and each port has its own handlers: reflection differs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.security.auth_config import AuthConfig
from server.security.authenticator import Authenticator
from server.security.authorization import Authorizer
from server.security.interceptor import SecurityInterceptor
from server.security.rate_limits import RateLimiter

if TYPE_CHECKING:
    from server.security.audit import AuditLog
    from server.security.tls import ServerTls


class AuthStartupError(Exception):
    """The auth config cannot work with the server's other options."""


class AccessControl:
    def __init__(self, config: AuthConfig, audit: AuditLog | None = None) -> None:
        self.config = config
        self.authenticator = Authenticator(config)
        self.authorizer = Authorizer(config.roles)
        self.limiter = RateLimiter.parse(config.rate_limits)
        self.audit = audit

    def interceptor(self) -> SecurityInterceptor:
        return SecurityInterceptor(
            self.authenticator, self.authorizer, self.config.open_methods, self.limiter, self.audit
        )

    def describe(self) -> str:
        """The start-up log line: which ways of authenticating are on."""
        ways = []
        if self.config.tokens:
            ways.append(f"{len(self.config.tokens)} token(s)")
        if self.config.jwt is not None:
            ways.append(f"JWT (issuer {self.config.jwt.issuer})")
        if self.config.mtls is not None:
            ways.append(f"mTLS identity ({self.config.mtls.principal_from})")
        if self.config.anonymous is not None:
            ways.append("anonymous callers allowed")
        limits = "rate limits on" if self.limiter is not None else "no rate limits"
        return f"access control from {self.config.source}: {', '.join(ways) or 'no credentials accepted'}; {limits}"

    def check_tls(self, tls: ServerTls | None) -> None:
        """``mtls:`` needs verified client certificates: without ``--tls-client-ca`` it could never match anyone."""
        if self.config.mtls is not None and (tls is None or tls.client_auth != "require"):
            raise AuthStartupError(
                f"{self.config.source}: the mtls: section needs client certificates: start with --tls-cert, "
                "--tls-key and --tls-client-ca"
            )

    async def start(self) -> None:
        await self.authenticator.start()

    async def stop(self) -> None:
        await self.authenticator.stop()
