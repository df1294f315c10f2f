"""Static tokens: random, stored as salted hashes, verified in constant time, cached only once valid."""

from __future__ import annotations

import re
import subprocess
import sys
import timeit

from server.security.auth_config import parse_auth_config
from server.security.tokens import TokenVerifier, hash_token, new_token


def test_new_tokens_are_long_random_and_urlsafe():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", t) for t in tokens)


def test_the_hash_is_salted():
    assert hash_token("same") != hash_token("same")
    assert re.fullmatch(r"sha256:[0-9a-f]{32}:[0-9a-f]{64}", hash_token("x"))


def _verifier(*tokens: tuple[str, str]) -> TokenVerifier:
    lines = "".join(f'  - {{principal: {name}, hash: "{hash_token(token)}", roles: [r]}}\n' for name, token in tokens)
    return TokenVerifier(parse_auth_config("roles: {r: {}}\ntokens:\n" + lines).tokens)


def test_verify_finds_the_principal_and_caches_only_valid_tokens():
    verifier = _verifier(("alice", "token-a"), ("bob", "token-b"))
    bob = verifier.verify("token-b")
    assert bob is not None and (bob.name, bob.source, bob.roles) == ("bob", "token", frozenset({"r"}))
    assert verifier.verify("token-b") is bob
    assert verifier.verify("token-c") is None
    assert verifier.verify("") is None
    assert list(verifier.cache) == ["token-b"]


def test_the_cache_is_bounded():
    verifier = _verifier(*[(f"p{i}", f"t{i}") for i in range(5)])
    verifier._limit = 3
    for i in range(5):
        assert verifier.verify(f"t{i}") is not None
    assert list(verifier.cache) == ["t2", "t3", "t4"]


def test_a_known_token_costs_a_dict_lookup():
    verifier = _verifier(*[(f"p{i}", f"t{i}") for i in range(50)])
    verifier.verify("t49")
    per_call = min(timeit.repeat(lambda: verifier.verify("t49"), number=10_000, repeat=3)) / 10_000
    assert per_call < 20e-6, per_call  # ~0.1 µs; generous for slow shared machines


def test_inferd_token_new_prints_the_token_then_a_config_entry_that_verifies():
    out = subprocess.run(
        [sys.executable, "-m", "server", "token", "new", "--principal", "billing", "--roles", "predictor,reader"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    token, *entry = out.splitlines()
    config = parse_auth_config(
        "roles: {predictor: {}, reader: {}}\ntokens:\n" + "".join(f"  {line}\n" for line in entry)
    )
    principal = TokenVerifier(config.tokens).verify(token)
    assert principal is not None and principal.name == "billing"
    assert principal.roles == frozenset({"predictor", "reader"})
    assert token not in "\n".join(entry)
