"""The auth config: a full example parses; every mistake is refused at start with PATH:LINE and what to do."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from server.security.auth_config import DEFAULT_OPEN_METHODS, AuthConfigError, load_auth_config, parse_auth_config
from server.security.tokens import hash_token

HASH = hash_token("t0k3n", bytes(16))


def _jwks(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    return path


FULL = """\
anonymous:
  roles: [prober]
tokens:
  - principal: billing
    hash: "{hash}"
    roles: [predictor, reader]
jwt:
  issuer: https://issuer.example
  audience: [inferd, inferd-staging]
  jwks_file: keys.json
  jwks_url: https://issuer.example/.well-known/jwks.json
  jwks_refresh_seconds: 60
  algorithms: [RS256, ES256]
  leeway_seconds: 5
  principal_claim: sub
  roles_claim: groups
mtls:
  principal_from: san_uri
  roles:
    spiffe://cluster.local/ns/apps/sa/frontend: [predictor]
  default_roles: [reader]
roles:
  prober: {{read: []}}
  predictor: {{predict: ["fraud-*", ranker]}}
  reader: {{read: ["*"]}}
  operator: {{control: true, read: ["*"]}}
open_methods: ["/grpc.health.v1.Health/*"]
rate_limits:
  default: {{requests_per_second: 100, burst: 50, max_streams: 8}}
  principals:
    billing: {{requests_per_second: 10, burst: 5}}
  anonymous: {{requests_per_second: 1}}
"""


def test_a_full_config_parses(tmp_path: Path):
    _jwks(tmp_path / "keys.json")
    path = tmp_path / "auth.yaml"
    path.write_text(FULL.format(hash=HASH))
    config = load_auth_config(path)
    assert config.anonymous == frozenset({"prober"})
    (token,) = config.tokens
    assert (token.principal, token.roles, token.salt) == ("billing", frozenset({"predictor", "reader"}), bytes(16))
    assert config.jwt is not None
    assert config.jwt.audience == ("inferd", "inferd-staging")
    assert config.jwt.jwks_file == tmp_path / "keys.json"  # relative to the config's folder
    assert (config.jwt.jwks_refresh_seconds, config.jwt.leeway_seconds, config.jwt.roles_claim) == (60, 5, "groups")
    assert config.jwt.algorithms == ("RS256", "ES256")
    assert config.mtls is not None
    assert config.mtls.roles == {"spiffe://cluster.local/ns/apps/sa/frontend": frozenset({"predictor"})}
    assert config.roles["predictor"].predict == ("fraud-*", "ranker")
    assert config.roles["operator"].control is True
    assert config.open_methods == ("/grpc.health.v1.Health/*",)
    assert config.rate_limits is not None
    assert config.rate_limits["principals"]["billing"] == {"requests_per_second": 10, "burst": 5}


def test_defaults():
    config = parse_auth_config("roles: {r: {predict: ['*']}}\n")
    assert config.anonymous is None and config.tokens == () and config.jwt is None and config.rate_limits is None
    assert config.open_methods == DEFAULT_OPEN_METHODS


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", None, "is empty"),
        ("roles: [\n", 2, "not valid YAML"),
        ("- a\n", 1, "must be a mapping"),
        ("roles: {}\ntokenz: []\n", 2, "unknown key 'tokenz'; expected one of anonymous, tokens"),
        ("roles: {}\nroles: {}\n", 2, "roles is given twice"),
        ("roles:\n  r: {predict: x}\n", 2, "r.predict must be a list"),
        ("roles:\n  r: {control: yes please}\n", 2, "r.control must be true or false"),
        ("roles:\n  r:\n    write: [a]\n", 3, "role r: unknown key 'write'"),
        ("anonymous:\n  roles: [ghost]\n", 2, "unknown role 'ghost'"),
        ("tokens:\n  - principal: a\n", 2, "needs hash:"),
        ("tokens:\n  - principal: a\n    hash: plain-token\n", 3, "hash must be sha256:<salt hex>:<64 hex digits>"),
        (f'tokens:\n  - {{principal: a, hash: "{HASH}"}}\n  - {{principal: b, hash: "{HASH}"}}\n', 3, "twice"),
        (
            f'roles: {{}}\ntokens:\n  - principal: a\n    hash: "{HASH}"\n    roles: [admin]\n',
            5,
            "unknown role 'admin'",
        ),
        ("jwt:\n  issuer: i\n", 2, "jwt needs audience:"),
        ("jwt:\n  issuer: i\n  audience: a\n", 2, "jwt needs jwks_file:, jwks_url: or both"),
        ("jwt:\n  issuer: i\n  audience: a\n  jwks_url: ftp://x/y\n", 4, "must be an https://"),
        ("jwt:\n  issuer: i\n  audience: a\n  jwks_file: /nonexistent/keys.json\n", 4, "cannot read"),
        ("jwt:\n  issuer: i\n  audience: a\n  jwks_url: https://x/k\n  algorithms: [HS256]\n", 5, "'HS256' is not"),
        ("jwt:\n  issuer: i\n  audience: a\n  jwks_url: https://x/k\n  leeway_seconds: -1\n", 5, "at least 0"),
        ("jwt:\n  issuer: i\n  audience: a\n  jwks_url: https://x/k\n  jwks_refresh_seconds: 0\n", 5, "more than 0"),
        ("mtls:\n  principal_from: subject\n", 2, "must be one of san_uri, san_dns, subject_cn"),
        ("open_methods: [grpc.health.v1.Health/Check]\n", 1, "must start with /"),
        ("rate_limits:\n  default: {requests_per_second: 0}\n", 2, "requests_per_second must be a number above 0"),
        ("rate_limits:\n  default:\n    requests_per_second: 5\n    bursts: 3\n", 4, "unknown key 'bursts'"),
        ("rate_limits:\n  per_principal: {}\n", 2, "unknown key 'per_principal'"),
    ],
)
def test_mistakes_name_the_file_and_line(tmp_path: Path, text: str, line: int | None, words: str):
    path = tmp_path / "auth.yaml"
    path.write_text(dedent(text))
    with pytest.raises(AuthConfigError) as info:
        load_auth_config(path)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(info.value).startswith(where), str(info.value)
    assert words in str(info.value)


def test_a_bad_jwks_file_is_refused_at_start(tmp_path: Path):
    (tmp_path / "keys.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    path = tmp_path / "auth.yaml"
    path.write_text("jwt:\n  issuer: i\n  audience: a\n  jwks_file: keys.json\n")
    with pytest.raises(AuthConfigError, match=rf"{path}:4: .*keys.json: no usable key"):
        load_auth_config(path)


def test_a_missing_file_is_named(tmp_path: Path):
    with pytest.raises(AuthConfigError, match="cannot read the auth config"):
        load_auth_config(tmp_path / "nope.yaml")


def test_inferd_serve_exits_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from server.cli.main import main

    path = tmp_path / "auth.yaml"
    path.write_text("roles: {}\nanonymous: {roles: [ghost]}\n")
    with pytest.raises(SystemExit) as info:
        main(["serve", "--repository", str(tmp_path), "--auth-config", str(path)])
    assert info.value.code == 2
    assert f"{path}:2: unknown role 'ghost'" in capsys.readouterr().err
