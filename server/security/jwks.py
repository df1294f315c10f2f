"""A JWKS document (RFC 7517) → signing keys by key id, through PyJWT (no crypto of our own)."""

from __future__ import annotations

import json
from typing import Any

import jwt

#: asymmetric algorithms a JWT may be signed with; HS* (a shared secret) and "none" are never accepted
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class JwksError(ValueError):
    """The document is not a usable JWKS."""


def parse_jwks(text: str | bytes) -> dict[str, jwt.PyJWK]:
    """Keys by ``kid`` (a key without one is filed under ""); keys not for signing are skipped.

    A key whose type PyJWT cannot use (e.g. a symmetric ``oct`` key) is skipped too, so one odd key does not
    take the whole set down; an empty result is an error."""
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('not a JWKS: expected an object with a "keys" list')
    keys: dict[str, jwt.PyJWK] = {}
    problems: list[str] = []
    for index, data in enumerate(document["keys"]):
        if not isinstance(data, dict):
            problems.append(f"key {index} is not an object")
            continue
        if data.get("use", "sig") != "sig" or data.get("kty") == "oct":
            continue
        try:
            key = jwt.PyJWK(_with_algorithm(data))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            problems.append(f"key {data.get('kid', index)!r}: {exc}")
            continue
        keys[str(data.get("kid", ""))] = key
    if not keys:
        detail = "; ".join(problems) if problems else "no signing keys"
        raise JwksError(f"no usable key ({detail})")
    return keys


def _with_algorithm(data: dict[str, Any]) -> dict[str, Any]:
    """PyJWK needs ``alg`` for OKP and EC keys it cannot guess; fill the one the key type implies."""
    if "alg" in data:
        return data
    if data.get("kty") == "OKP":
        return {**data, "alg": "EdDSA"}
    if data.get("kty") == "EC":
        curve = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(str(data.get("crv")))
        if curve:
            return {**data, "alg": curve}
    return data
