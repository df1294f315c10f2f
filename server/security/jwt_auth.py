"""JWT bearer tokens (RS256/ES256/EdDSA, …) checked with PyJWT against a JWKS file and/or an issuer's JWKS URL.

Keys are fetched off the request path: at start, then every ``jwks_refresh_seconds`` by a background task, each
fetch (and each re-read of the file, which a Kubernetes Secret mount may replace) on a worker thread so the
event loop never blocks on the network. A token naming a key id the set lacks triggers one refetch, shared by
every call that asks, at most once per ``unknown_kid_refetch_seconds`` (so a flood of made-up key ids cannot
turn into a flood of fetches); other calls fail at once with "unknown key id".

A verified token is cached with its expiry (bounded), so a client reusing its JWT costs one dict lookup and a
clock read rather than a signature check per call. The cache is emptied whenever the key set changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import urllib.request
from typing import Any

import jwt

from server.core.principal import Principal
from server.security.auth_config import JwtConfig
from server.security.jwks import JwksError, parse_jwks

log = logging.getLogger("inferd.security")

#: seconds one JWKS fetch may take
FETCH_TIMEOUT_S = 10.0
#: a JWKS document larger than this is refused (a JWKS is a few KiB)
MAX_JWKS_BYTES = 1 << 20
#: verified tokens remembered
CACHE_ENTRIES = 4096
#: how long a call waits for the refetch an unknown key id started
REFETCH_WAIT_S = 5.0


class JwtError(Exception):
    """The token is not acceptable; the message says why and never contains the token."""


class UnknownKeyId(JwtError):
    """The token names a key id the current key set lacks (a refetch may find it)."""


class JwtVerifier:
    def __init__(self, config: JwtConfig) -> None:
        self.config = config
        self._file_keys: dict[str, jwt.PyJWK] = {}
        self._url_keys: dict[str, jwt.PyJWK] = {}
        self._keys: dict[str, jwt.PyJWK] = {}
        self._cache: dict[str, tuple[Principal, float]] = {}
        if config.jwks_file is not None:
            self._file_keys = parse_jwks(config.jwks_file.read_bytes())
            self._merge()
        self._audience = list(config.audience)
        self._options: Any = {"require": ["exp", "iss", "aud"]}
        self._last_refetch = -math.inf
        self._refetch: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        #: key-set fetches done (for tests and the log)
        self.fetches = 0

    # --- the key set ------------------------------------------------------------------------------------

    def _merge(self) -> None:
        self._keys = {**self._url_keys, **self._file_keys}
        self._cache.clear()

    async def start(self) -> None:
        """First fetch of the URL (a failure is logged; calls fail until a later fetch works), then the timer."""
        if self.config.jwks_url is not None:
            await self.refresh()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def stop(self) -> None:
        for task in (self._refresher, self._refetch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._refresher = self._refetch = None

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.jwks_refresh_seconds)
            try:
                await self.refresh()
            except Exception:  # a bug, not the network: keep the keys and keep refreshing
                log.exception("JWKS refresh failed; keeping the keys there were")

    async def refresh(self) -> None:
        """Re-read the file and refetch the URL on a worker thread; a failure keeps the keys there were."""
        config = self.config
        if config.jwks_file is not None:
            try:
                self._file_keys = parse_jwks(await asyncio.to_thread(config.jwks_file.read_bytes))
            except (OSError, JwksError) as exc:
                log.warning("JWKS file %s: %s; keeping the keys read before", config.jwks_file, exc)
        if config.jwks_url is not None:
            try:
                self._url_keys = parse_jwks(await asyncio.to_thread(_fetch, config.jwks_url))
                self.fetches += 1
            except (OSError, JwksError, ValueError) as exc:
                log.warning("JWKS %s: %s; keeping the keys fetched before", config.jwks_url, exc)
        before = self._keys
        self._merge()
        if before.keys() != self._keys.keys():
            log.info("JWKS: %d signing key(s): %s", len(self._keys), ", ".join(sorted(self._keys)) or "-")

    # --- verification -----------------------------------------------------------------------------------

    def verify(self, token: str) -> Principal:
        """The token's principal; :class:`JwtError` (or :class:`UnknownKeyId`) when it is not acceptable."""
        cached = self._cache.get(token)
        if cached is not None:
            principal, until = cached
            if time.time() <= until:
                return principal
            del self._cache[token]
        config = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise JwtError("the bearer token is not a well-formed JWT (header.payload.signature)") from None
        algorithm = header.get("alg")
        if algorithm not in config.algorithms:
            raise JwtError(
                f"the JWT's algorithm {str(algorithm)[:16]!r} is not accepted ({', '.join(config.algorithms)})"
            )
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            if kid is None:
                raise JwtError("the JWT has no key id (kid) and the server has several keys")
            raise UnknownKeyId("the JWT's key id (kid) is not one of the server's signing keys")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise JwtError("the JWT has expired (exp)") from None
        except jwt.ImmatureSignatureError:
            raise JwtError("the JWT is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise JwtError("the JWT's audience (aud) is not this server's") from None
        except jwt.InvalidIssuerError:
            raise JwtError("the JWT's issuer (iss) is not the one this server trusts") from None
        except jwt.MissingRequiredClaimError as exc:
            raise JwtError(f"the JWT lacks the {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise JwtError("the JWT's signature does not verify with the server's key") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise JwtError("the JWT could not be verified (malformed, or signed with the wrong kind of key)") from None
        principal = self._principal(claims)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = (principal, float(claims["exp"]) + config.leeway_seconds)
        return principal

    def _principal(self, claims: dict[str, Any]) -> Principal:
        name = claims.get(self.config.principal_claim)
        if not isinstance(name, str) or not name:
            raise JwtError(f"the JWT has no {self.config.principal_claim} claim naming the caller")
        roles = claims.get(self.config.roles_claim, ())
        if isinstance(roles, str):
            roles = roles.split()  # "a b" (OAuth scope style)
        if not isinstance(roles, (list, tuple)):
            raise JwtError(f"the JWT's {self.config.roles_claim} claim must be a list of role names")
        return Principal(name, frozenset(r for r in roles if isinstance(r, str)), "jwt")

    async def verify_after_refetch(self, token: str) -> Principal:
        """For :class:`UnknownKeyId`: refetch the key set (at most once per interval, one fetch shared by every
        caller), then verify again; without a URL, or within the interval, the call fails at once."""
        config = self.config
        if config.jwks_url is None and config.jwks_file is None:
            return self.verify(token)
        refetch = self._refetch
        if refetch is None or refetch.done():
            now = time.monotonic()
            if now - self._last_refetch < config.unknown_kid_refetch_seconds:
                return self.verify(token)
            self._last_refetch = now
            refetch = self._refetch = asyncio.get_running_loop().create_task(self.refresh())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(refetch), REFETCH_WAIT_S)
        return self.verify(token)


def _fetch(url: str) -> bytes:
    """GET the JWKS (on a worker thread)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "inferd"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise JwksError(f"larger than {MAX_JWKS_BYTES} bytes")
    return body
