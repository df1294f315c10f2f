"""Static bearer tokens: made here, stored only as salted SHA-256 hashes, verified with a bounded cache.

A token is 32 random bytes (urlsafe base64), so it cannot be guessed or brute-forced from its hash and needs
no slow KDF (those exist for low-entropy passwords); the salt keeps equal tokens from having equal hashes.
A token seen before costs one dict lookup; a new one costs one SHA-256 per configured entry, compared in
constant time, and only tokens that verify enter the cache (so the cache holds at most the valid tokens
in use, and garbage sent by a caller cannot fill it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from server.core.principal import Principal
from server.security.auth_config import TokenEntry

TOKEN_BYTES = 32
SALT_BYTES = 16
#: verified tokens remembered (more than any sane number of configured tokens in use at once)
CACHE_ENTRIES = 4096


def new_token() -> str:
    """A fresh random token (43 urlsafe characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str, salt: bytes | None = None) -> str:
    """``sha256:<salt hex>:<digest hex>``, the form the auth config's ``tokens:`` entries hold."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    return f"sha256:{salt.hex()}:{_digest(salt, token).hex()}"


def _digest(salt: bytes, token: str) -> bytes:
    return hashlib.sha256(salt + token.encode("utf-8", "surrogateescape")).digest()


class TokenVerifier:
    """token → :class:`Principal`, or None when no entry matches."""

    def __init__(self, entries: tuple[TokenEntry, ...], cache_entries: int = CACHE_ENTRIES) -> None:
        self._entries = entries
        self._principals = tuple(Principal(e.principal, e.roles, "token") for e in entries)
        self._limit = cache_entries
        #: verified tokens; read directly by the interceptor (one dict lookup per call)
        self.cache: dict[str, Principal] = {}

    def verify(self, token: str) -> Principal | None:
        found = self.cache.get(token)
        if found is not None:
            return found
        for entry, principal in zip(self._entries, self._principals, strict=True):
            if hmac.compare_digest(_digest(entry.salt, token), entry.digest):
                if len(self.cache) >= self._limit:
                    self.cache.pop(next(iter(self.cache)))  # the oldest
                self.cache[token] = principal
                return principal
        return None
