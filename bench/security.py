"""What security costs: req/s with token auth, rate limits and TLS on, against all off.

``python -m bench.run --scenario security [--security-rounds 12 --security-seconds 3]`` (part of ``make bench``).
One server per configuration, all pinned to the server core, measured in interleaved rounds with h2load on
the other core (the MLP with dynamic batching, 1 row per request, concurrency 32 by default); medians and
each round's ratio to "off" go to bench/results/security.md. The configurations:

- off: no ``--auth-config``, plaintext (no interceptor is installed at all);
- token: ``--auth-config`` with one bearer token (role: predict and read on ``*``); h2load sends the header;
- token+limits: the same plus ``rate_limits.default`` far above the load (the bucket is checked on every
  call and never refuses), i.e. what the limiter costs;
- tls: ``--tls-cert/--tls-key`` (ECDSA P-256, made with openssl for the run), no auth; h2load negotiates
  TLS 1.3 with ALPN h2 over its one connection, so this is the per-byte cost of TLS, not handshakes;
- tls+token: both.

h2load does not read gRPC trailers, so a refused call (a wrong token) would look like a fast OK: every point
is checked against the server's own success counter (ModelStatistics, asked with the same credentials) and
the report says how many calls did not succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import timeit
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.call_cost import _Context
from bench.h2load import run_h2load
from bench.run import CLIENT_CPU, MODELS, PREDICT_PATH, RESULTS, build_bench_repository, example_input, running
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc

CONFIGS = ("off", "token", "token+limits", "tls", "tls+token")
TARGETS = {"token": 0.95, "token+limits": 0.95}
MODEL = "mlp_on"
PRINCIPAL = "bench"


@dataclass(frozen=True)
class _Setup:
    """A configuration's server flags and what a client needs to call it."""

    flags: tuple[str, ...]
    tls: bool
    token: str | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this scenario (bench/run.py adds them); with the defaults it takes ~4 minutes."""
    parser.add_argument("--security-rounds", type=int, default=12, help="interleaved rounds (security scenario)")
    parser.add_argument("--security-seconds", type=float, default=3.0, help="seconds per point (security scenario)")


def _make_certificate(work: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for localhost / 127.0.0.1 (h2load does not verify; the
    readiness and statistics calls trust it directly)."""
    cert, key = work / "bench-tls.pem", work / "bench-tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _auth_config(work: Path, token_hash: str, limits: bool) -> Path:
    lines = [
        "tokens:",
        f"  - {{principal: {PRINCIPAL}, hash: '{token_hash}', roles: [bench]}}",
        "roles:",
        "  bench: {predict: ['*'], read: ['*']}",
    ]
    if limits:
        lines += ["rate_limits:", "  default: {requests_per_second: 1000000, burst: 1000000}"]
    path = work / f"auth{'-limits' if limits else ''}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _setups(work: Path) -> dict[str, _Setup]:
    from server.security.tokens import hash_token, new_token

    token = new_token()
    token_hash = hash_token(token)
    cert, key = _make_certificate(work)
    auth = ("--auth-config", str(_auth_config(work, token_hash, limits=False)))
    limited = ("--auth-config", str(_auth_config(work, token_hash, limits=True)))
    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    return {
        "off": _Setup((), False, None),
        "token": _Setup(auth, False, token),
        "token+limits": _Setup(limited, False, token),
        "tls": _Setup(tls, True, None),
        "tls+token": _Setup((*tls, *auth), True, token),
    }


def _channel(address: str, setup: _Setup, cert: bytes | None) -> grpc.Channel:
    if not setup.tls:
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(root_certificates=cert)
    return grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", "localhost")])


def _metadata(setup: _Setup) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {setup.token}"),) if setup.token else ()


def _ready(setup: _Setup, cert: bytes | None, timeout: float = 120) -> Any:
    """Waits until the model answers ModelStatistics with these credentials (health alone would not prove
    the token and TLS work)."""

    def wait(address: str) -> None:
        end = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < end:
            try:
                _successes(address, setup, cert)
                return
            except grpc.RpcError as exc:
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"server at {address} ({setup}) never answered: {last}")

    return wait


def _successes(address: str, setup: _Setup, cert: bytes | None) -> int:
    with _channel(address, setup, cert) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = stub.ModelStatistics(
            inference_pb2.ModelStatisticsRequest(name=MODEL), timeout=10, metadata=_metadata(setup)
        )
    if not reply.statistics:
        raise RuntimeError(f"no statistics for {MODEL}")
    return int(sum(s.success_count for s in reply.statistics))


def _message(model: str = MODEL) -> bytes:
    example, input_name, _ = MODELS[model]
    request = inference_pb2.PredictRequest(model_name=model, inputs=[from_numpy(input_name, example_input(example))])
    return request.SerializeToString()


def _limiter_cost(work: Path) -> dict[str, float]:
    """ns per call of the rate limiter's admit (bucket found, token taken) and of an audit denial that is
    sampled out, in this process: the Python the hot path adds per call."""
    from server.core.principal import Principal
    from server.security.audit import AuditLog, AuditLogOptions
    from server.security.rate_limits import RateLimiter, RateLimitSpec

    limiter = RateLimiter(RateLimitSpec(1e12, 10**12))
    admit = limiter.admit
    calls = 200_000
    admit_ns = min(timeit.repeat(lambda: admit("bench"), number=calls, repeat=5)) / calls * 1e9
    audit = AuditLog(AuditLogOptions("/dev/null"))
    principal = Principal("bench", frozenset(), "token")

    def denied() -> None:
        audit.denied(principal, "/m", "RESOURCE_EXHAUSTED", request_id="r", peer=None, rate_limited=True)

    denied()
    sampled_ns = min(timeit.repeat(denied, number=calls, repeat=5)) / calls * 1e9
    audit.close()
    return {"admit_ns": admit_ns, "audit_sampled_out_ns": sampled_ns, **asyncio.run(_interceptor_cost(work))}


async def _interceptor_cost(work: Path, calls: int = 20_000, rounds: int = 7) -> dict[str, float]:
    """µs the security interceptor's wrapper adds to a call, around a handler that does nothing (so nothing
    else varies): authenticate the token, authorize the model (read from the raw request), rate limit."""
    from server.security.access import AccessControl
    from server.security.auth_config import load_auth_config
    from server.security.tokens import hash_token, new_token

    token = new_token()
    message = _message("mlp_off")

    async def nothing(request: bytes, context: Any) -> bytes:
        return b""

    handlers = {"bare": nothing}
    for name, limits in (("token", False), ("token+limits", True)):
        access = AccessControl(load_auth_config(_auth_config(work, hash_token(token), limits=limits)))
        handler = access.interceptor().wrap(PREDICT_PATH, grpc.unary_unary_rpc_method_handler(nothing))
        handlers[name] = handler.unary_unary
    context = _TokenContext((("authorization", f"Bearer {token}"),))
    best = {name: float("inf") for name in handlers}
    for _ in range(rounds):
        for name, call in handlers.items():
            started = time.perf_counter()
            for _ in range(calls):
                await call(message, context)
            best[name] = min(best[name], (time.perf_counter() - started) / calls * 1e6)
    return {f"interceptor_{name}_us": best[name] - best["bare"] for name in ("token", "token+limits")}


class _TokenContext(_Context):
    """The stand-in for grpc's context, with the caller's metadata."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


async def _per_call(repo: Path, work: Path, message: bytes, rounds: int = 7, calls: int = 5000) -> dict[str, float]:
    """Median µs per Predict in one process, no network: the handler as the gRPC server would call it
    (wrapped by the security interceptor when there is an auth config), awaited in a loop."""
    from server.app import InferdServer, ServerOptions
    from server.security.auth_config import load_auth_config
    from server.security.tokens import hash_token, new_token

    token = new_token()
    configs = {"off": None, "token": False, "token+limits": True}
    servers: dict[str, InferdServer] = {}
    for name, limits in configs.items():
        auth = None if limits is None else load_auth_config(_auth_config(work, hash_token(token), limits=limits))
        servers[name] = InferdServer(ServerOptions(repository=repo, port=0, auth=auth))
    contexts = {
        name: _TokenContext(() if limits is None else (("authorization", f"Bearer {token}"),))
        for name, limits in configs.items()
    }
    handlers = {}
    for name, server in servers.items():
        await server.start()
        handler = grpc.unary_unary_rpc_method_handler(server.servicer.predict)
        if server.access is not None:
            handler = server.access.interceptor().wrap(PREDICT_PATH, handler)
        handlers[name] = handler.unary_unary

    async def per_call_us(name: str, n: int) -> float:
        call, context = handlers[name], contexts[name]
        started = time.perf_counter()
        for _ in range(n):
            await call(message, context)
        return (time.perf_counter() - started) / n * 1e6

    try:
        for name in configs:
            await per_call_us(name, calls // 4)  # warm up
        samples: dict[str, list[float]] = {name: [] for name in configs}
        names = tuple(configs)
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(await per_call_us(name, calls))
        return {name: statistics.median(points) for name, points in samples.items()}
    finally:
        for server in servers.values():
            await server.stop(drain=False)


def run(args: argparse.Namespace, work: Path) -> Path:
    message = _message()
    concurrency = int(str(args.concurrency).split(",")[-1])
    setups = _setups(work)
    cert = (work / "bench-tls.pem").read_bytes()
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGS}
    repo = work / "security-repo"
    build_bench_repository(repo)
    with ExitStack() as stack:
        ports = {config: args.port + 40 + i for i, config in enumerate(CONFIGS)}
        for config, port in ports.items():
            setup = setups[config]
            command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(port)]
            command += ["--log-level", "WARNING", "--no-metrics", *setup.flags]
            stack.enter_context(running(command, f"127.0.0.1:{port}", ready=_ready(setup, cert)))
        for round_ in range(args.security_rounds):
            shift = round_ % len(CONFIGS)  # a different order each round: drift does not favour one
            for config in CONFIGS[shift:] + CONFIGS[:shift]:
                setup = setups[config]
                address = f"127.0.0.1:{ports[config]}"
                scheme = "https" if setup.tls else "http"
                before = _successes(address, setup, cert)
                r = run_h2load(
                    f"{scheme}://{address}{PREDICT_PATH}",
                    message,
                    concurrency=concurrency,
                    seconds=args.security_seconds,
                    warmup=args.warmup,
                    cpu=CLIENT_CPU,
                    headers=tuple(f"{k}: {v}" for k, v in _metadata(setup)),
                )
                ok = _successes(address, setup, cert) - before
                # h2load's count covers the measured seconds; the server's also the warm-up: OK ≥ logged
                samples[config].append({**asdict(r), "server_ok": ok})
            line = "  ".join(f"{c} {samples[c][-1]['req_per_s']:.0f}" for c in CONFIGS)
            print(f"security round {round_ + 1}/{args.security_rounds}: req/s  {line}", flush=True)
    # without batching every call takes the same path (no queue wait), so the time is the server's Python
    per_call = asyncio.run(_per_call(repo, work, _message("mlp_off")))
    return _write(samples, concurrency, args, _limiter_cost(work), per_call)


def _median(points: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(p[key] for p in points))


def _write(
    samples: dict[str, list[dict[str, Any]]],
    concurrency: int,
    args: argparse.Namespace,
    cost: dict[str, float],
    per_call: dict[str, float],
) -> Path:
    RESULTS.mkdir(exist_ok=True)
    report = {"samples": samples, "in_process": cost, "per_call_us": per_call}
    (RESULTS / "security.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# What security costs: token auth, rate limits and TLS vs all off",
        "",
        f"`python -m bench.run --scenario security`: MLP (dynamic batching, 1 row per request), h2load at concurrency "
        f"{concurrency} over one HTTP/2 connection, {args.security_rounds} interleaved rounds of "
        f"{args.security_seconds:g} s per configuration, medians; each server pinned to the server core, h2load to "
        "the other. One run on a shared machine: compare the ratios, not the absolutes.",
        "",
        "`× off` is the median over rounds of each round's req/s divided by the same round's \"off\" req/s "
        "(paired, so a slow minute on the machine cancels out); `req/s` is the plain median. `not OK` counts "
        "calls h2load sent that the server did not count as successes (a refused token would show here).",
        "",
        "| configuration | req/s | × off (paired) | target | p50 ms | p99 ms | not OK |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config in CONFIGS:
        points = samples[config]
        rate = _median(points, "req_per_s")
        paired = statistics.median(p["req_per_s"] / o["req_per_s"] for p, o in zip(points, samples["off"], strict=True))
        target = f"≥ {TARGETS[config]:.2f}" if config in TARGETS else "(quoted)"
        not_ok = sum(max(0, p["requests"] - p["server_ok"]) + p["http_failures"] for p in points)
        lines.append(
            f"| {config} | {rate:.0f} | {paired:.3f} | {target} | {_median(points, 'p50_ms'):.2f} "
            f"| {_median(points, 'p99_ms'):.2f} | {not_ok} |"
        )
    lines += [
        "",
        "Inside the server (the MLP without batching; the Predict handler, wrapped by the security interceptor as "
        "the gRPC server calls it, awaited in a loop in one process with a stand-in for grpc's context; no network; "
        "7 alternating rounds of 5,000 calls, medians), the Python token auth adds per call:",
        "",
        "| configuration | µs per Predict | added µs | × off (calls per CPU second) |",
        "| --- | --- | --- | --- |",
    ]
    base = per_call["off"]
    lines += [f"| {c} | {us:.1f} | {us - base:+.1f} | {base / us:.3f} |" for c, us in per_call.items()]
    lines += [
        "",
        "In this process (timeit, best of 5): the rate limiter's `admit` (bucket found, token taken) costs "
        f"{cost['admit_ns']:.0f} ns per call; an audit-log rate-limit denial that is sampled out costs "
        f"{cost['audit_sampled_out_ns']:.0f} ns. The security interceptor's whole wrapper around a handler that "
        f"does nothing (authenticate the token, authorize the model read from the raw request, rate limit) adds "
        f"{cost['interceptor_token_us']:.2f} µs per call with token auth and "
        f"{cost['interceptor_token+limits_us']:.2f} µs with rate limits too (best of 7 × 20,000 calls).",
        "",
        "Per-round req/s:",
        "",
    ]
    lines += [f"- {c}: {[round(p['req_per_s']) for p in samples[c]]}" for c in CONFIGS]
    path = RESULTS / "security.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path
