"""Who is calling: a bearer token (static or JWT) from the ``authorization`` metadata, else the client
certificate (mTLS identity), else the anonymous principal when the config allows anonymous callers.

Credentials that are present but wrong fail the call (UNAUTHENTICATED) even when an anonymous fallback
exists: a client that sent a token meant to be someone and must hear that it is not. No message ever contains
the token.
"""

from __future__ import annotations

import grpc

from server.core.principal import Principal
from server.security.auth_config import AuthConfig
from server.security.jwt_auth import JwtError, JwtVerifier, UnknownKeyId
from server.security.mtls_identity import MtlsIdentity, MtlsIdentityError
from server.security.tokens import TokenVerifier

ANONYMOUS = "anonymous"


class Unauthenticated(Exception):
    """The call's credentials are missing or wrong; the message says which (never the token)."""


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self.tokens = TokenVerifier(config.tokens)
        #: verified static tokens: the interceptor's fast path reads it directly
        self.token_cache = self.tokens.cache
        self.jwt = JwtVerifier(config.jwt) if config.jwt is not None else None
        self.mtls = MtlsIdentity(config.mtls) if config.mtls is not None else None
        self.anonymous = Principal(ANONYMOUS, config.anonymous, "anonymous") if config.anonymous is not None else None
        ways = ["'authorization: Bearer <token>' metadata"]
        if self.mtls is not None:
            ways.append("a client certificate")
        self._missing = f"no credentials: send {' or '.join(ways)}"

    async def start(self) -> None:
        if self.jwt is not None:
            await self.jwt.start()

    async def stop(self) -> None:
        if self.jwt is not None:
            await self.jwt.stop()

    def authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        """The caller; :class:`Unauthenticated`, or :class:`~server.security.jwt_auth.UnknownKeyId` (the
        caller may then await :meth:`authenticate_after_refetch`)."""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                return self.bearer(value)
        if self.mtls is not None:
            try:
                found = self.mtls.principal(context)
            except MtlsIdentityError as exc:
                raise Unauthenticated(str(exc)) from None
            if found is not None:
                return found
        if self.anonymous is not None:
            return self.anonymous
        raise Unauthenticated(self._missing)

    def bearer(self, value: object) -> Principal:
        if not isinstance(value, str):
            raise Unauthenticated("the authorization metadata must be text: 'Bearer <token>'")
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        found = self.token_cache.get(token)
        if found is not None:
            return found
        if self.jwt is not None and token.count(".") == 2:
            try:
                return self.jwt.verify(token)
            except UnknownKeyId:
                raise
            except JwtError as exc:
                raise Unauthenticated(str(exc)) from None
        found = self.tokens.verify(token)
        if found is None:
            raise Unauthenticated("the bearer token is not valid here (unknown, revoked, or for another server)")
        return found

    async def authenticate_after_refetch(self, context: grpc.aio.ServicerContext) -> Principal:
        """A JWT whose key id was unknown: refetch the keys (rate-limited) and verify once more."""
        assert self.jwt is not None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                token = value.strip().partition(" ")[2].strip()
                try:
                    return await self.jwt.verify_after_refetch(token)
                except JwtError as exc:
                    raise Unauthenticated(str(exc)) from None
        raise Unauthenticated(self._missing)
