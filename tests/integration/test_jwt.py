"""JWT bearer tokens against a real server: keys made at test time, the JWKS served by a real HTTP server on
127.0.0.1 (and from a file); each outcome and its status code; key rotation through the refetch on an unknown
key id, rate-limited; the periodic refresh off the request path."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from inferd.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2
from server.security.auth_config import parse_auth_config
from tests.support import SCALE_CONFIG, ServerThread, eventually, scale_model, write_model

ISSUER = "https://issuer.test"
AUDIENCE = "inferd"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        data = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, "use": "sig"}


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWKS document that the test can change, counting GETs."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.gets = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.gets += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {
        "rsa": _rsa(),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
        "other": _rsa(),
        "rotated": _rsa(),
    }


@pytest.fixture(scope="module")
def jwks(keys: dict[str, Any]) -> Iterator[JwksServer]:
    served = JwksServer()
    served.keys = [_jwk(keys["rsa"], "rsa-1"), _jwk(keys["ec"], "ec-1")]
    yield served
    served.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any], jwks: JwksServer) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("jwt")
    (root / "file-keys.json").write_text(json.dumps({"keys": [_jwk(keys["ed"], "ed-1")]}))
    config = parse_auth_config(
        f"""
jwt:
  issuer: {ISSUER}
  audience: {AUDIENCE}
  jwks_url: {jwks.url}
  jwks_file: file-keys.json
  jwks_refresh_seconds: 3600
  unknown_kid_refetch_seconds: 3600
  leeway_seconds: 30
roles:
  predictor: {{predict: ["*"]}}
""",
        root / "auth.yaml",
    )
    write_model(root / "models", "scale", SCALE_CONFIG, {1: scale_model(2)})
    with ServerThread(root / "models", auth=config) as running:
        yield running


def _token(key: Any, kid: str | None, algorithm: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-a", "roles": ["predictor"], "iat": now, "exp": now + 300}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def _predict(address: str, token: str) -> inference_pb2.PredictResponse:
    request = inference_pb2.PredictRequest(
        model_name="scale",
        inputs=[
            tensor_pb2.Tensor(
                name="x",
                data_type=tensor_pb2.DATA_TYPE_FP32,
                shape=[1, 4],
                raw_contents=np.ones((1, 4), "f4").tobytes(),
            )
        ],
    )
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return stub.Predict(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)


def _refused(address: str, token: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _predict(address, token)
    assert token not in info.value.details()
    return info.value


@pytest.mark.parametrize(
    ("key", "kid", "algorithm"), [("rsa", "rsa-1", "RS256"), ("ec", "ec-1", "ES256"), ("ed", "ed-1", "EdDSA")]
)
def test_valid_tokens_from_the_url_and_the_file(
    server: ServerThread, keys: dict[str, Any], key: str, kid: str, algorithm: str
):
    assert _predict(server.address, _token(keys[key], kid, algorithm)).model_name == "scale"


def test_a_token_a_little_past_its_expiry_is_within_the_leeway(server: ServerThread, keys: dict[str, Any]):
    token = _token(keys["rsa"], "rsa-1", exp=int(time.time()) - 10)
    assert _predict(server.address, token).model_name == "scale"


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("expired", "the JWT has expired (exp)"),
        ("not_yet", "the JWT is not valid yet"),
        ("audience", "the JWT's audience (aud) is not this server's"),
        ("issuer", "the JWT's issuer (iss) is not the one this server trusts"),
        ("no_exp", "the JWT lacks the exp claim"),
        ("wrong_key", "the JWT's signature does not verify"),
        ("unknown_kid", "the JWT's key id (kid) is not one of the server's signing keys"),
        ("no_kid", "the JWT has no key id (kid)"),
        ("hs256", "the JWT's algorithm 'HS256' is not accepted"),
        ("none", "the JWT's algorithm 'none' is not accepted"),
        ("malformed", "the bearer token is not a well-formed JWT"),
        ("no_roles", "may not call /inferd.v1.InferenceService/Predict on model 'scale'"),
    ],
)
def test_each_bad_token_is_refused_with_its_reason(server: ServerThread, keys: dict[str, Any], case: str, words: str):
    rsa_key = keys["rsa"]
    now = int(time.time())
    token = {
        "expired": lambda: _token(rsa_key, "rsa-1", exp=now - 120),
        "not_yet": lambda: _token(rsa_key, "rsa-1", nbf=now + 120),
        "audience": lambda: _token(rsa_key, "rsa-1", aud="someone-else"),
        "issuer": lambda: _token(rsa_key, "rsa-1", iss="https://evil.test"),
        "no_exp": lambda: _token(rsa_key, "rsa-1", exp=None),
        "wrong_key": lambda: _token(keys["other"], "rsa-1"),
        "unknown_kid": lambda: _token(keys["other"], "nobody"),
        "no_kid": lambda: _token(rsa_key, None),
        "hs256": lambda: _token("a-shared-secret-long-enough-for-hmac-sha256", "rsa-1", "HS256"),
        "none": lambda: _token(None, "rsa-1", "none"),
        "malformed": lambda: "eyJub3QiOiJqc29u.bm9wZQ.c2ln",
        "no_roles": lambda: _token(rsa_key, "rsa-1", roles=[]),
    }[case]()
    error = _refused(server.address, token)
    expected = grpc.StatusCode.PERMISSION_DENIED if case == "no_roles" else grpc.StatusCode.UNAUTHENTICATED
    assert error.code() == expected, error.details()
    assert words in error.details()


def test_a_rotated_key_is_fetched_once_on_its_first_use(tmp_path: Path, keys: dict[str, Any], jwks: JwksServer):
    config = parse_auth_config(
        f"jwt: {{issuer: '{ISSUER}', audience: {AUDIENCE}, jwks_url: '{jwks.url}', jwks_refresh_seconds: 3600,"
        " unknown_kid_refetch_seconds: 3600}\nroles: {predictor: {predict: ['*']}}\n"
    )
    write_model(tmp_path, "scale", SCALE_CONFIG, {1: scale_model(2)})
    with ServerThread(tmp_path, auth=config) as running:
        assert running.server is not None and running.server.access is not None
        verifier = running.server.access.authenticator.jwt
        assert verifier is not None and verifier.fetches == 1  # at start
        jwks.keys = [*jwks.keys, _jwk(keys["rotated"], "rotated-1")]
        try:
            assert _predict(running.address, _token(keys["rotated"], "rotated-1")).model_name == "scale"
            assert verifier.fetches == 2
            # another unknown key id within the interval fails at once, without a fetch
            error = _refused(running.address, _token(keys["other"], "made-up"))
            assert "key id (kid)" in error.details()
            assert verifier.fetches == 2
        finally:
            jwks.keys = jwks.keys[:2]


def test_the_key_set_is_refreshed_in_the_background(tmp_path: Path, keys: dict[str, Any], jwks: JwksServer):
    config = parse_auth_config(
        f"jwt: {{issuer: '{ISSUER}', audience: {AUDIENCE}, jwks_url: '{jwks.url}', jwks_refresh_seconds: 0.05,"
        " unknown_kid_refetch_seconds: 3600}\nroles: {predictor: {predict: ['*']}}\n"
    )
    write_model(tmp_path, "scale", SCALE_CONFIG, {1: scale_model(2)})
    with ServerThread(tmp_path, auth=config) as running:
        assert running.server is not None and running.server.access is not None
        verifier = running.server.access.authenticator.jwt
        assert verifier is not None
        eventually(lambda: verifier.fetches >= 3, what="two background refreshes")
        # a key removed from the set stops working at the next refresh (cached verifications are dropped)
        token = _token(keys["ec"], "ec-1", "ES256")
        assert _predict(running.address, token).model_name == "scale"
        saved = jwks.keys
        jwks.keys = [k for k in saved if k["kid"] != "ec-1"]
        try:
            eventually(lambda: "ec-1" not in verifier._keys, what="the removed key to be gone")
            assert _refused(running.address, token).code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            jwks.keys = saved


def test_an_unreachable_jwks_url_is_logged_and_calls_fail_cleanly(tmp_path: Path, keys: dict[str, Any]):
    config = parse_auth_config(
        f"jwt: {{issuer: '{ISSUER}', audience: {AUDIENCE}, jwks_url: 'http://127.0.0.1:9/none',"
        " unknown_kid_refetch_seconds: 3600}\nroles: {predictor: {predict: ['*']}}\n"
    )
    write_model(tmp_path, "scale", SCALE_CONFIG, {1: scale_model(2)})
    with ServerThread(tmp_path, auth=config) as running:
        error = _refused(running.address, _token(keys["rsa"], "rsa-1"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
