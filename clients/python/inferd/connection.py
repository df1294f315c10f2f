"""One gRPC channel with the SDK's settings: the base of Client and AsyncClient.

Default timeout, metadata sent with every call, message limits and credentials; the inference stub and
the hand-written grpc.health.v1 Check (so the SDK does not need grpcio-health-checking).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import grpc

from inferd import health as _health
from inferd.tls import TlsLike, bearer_metadata, channel_credentials, tls_options
from inferd.v1 import inference_pb2_grpc

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_TARGET", "Connection", "MetadataLike", "replicas"]

DEFAULT_TARGET = "127.0.0.1:8001"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

MetadataLike = Mapping[str, str] | Sequence[tuple[str, str]]


def replicas(
    addresses: Sequence[str], *, attempts: int = 3, health_service: str | None = ""
) -> tuple[str, list[tuple[str, Any]]]:
    """Target and channel options that balance calls over several replicas with no load balancer.

    ``target, options = replicas(["10.0.0.1:8001", "10.0.0.2:8001"])``, then
    ``Client(target, options=options)`` (or AsyncClient): gRPC's ``round_robin`` over the static
    list (an ``ipv4:``/``ipv6:`` target), client-side health checking of ``health_service`` (a replica
    that reports NOT_SERVING, i.e. drains, gets no new calls; None turns it off), and up to ``attempts``
    tries of a call answered UNAVAILABLE (each on the next replica). docs/operations.md, "Several
    replicas without a load balancer".
    """
    if not addresses:
        raise ValueError("replicas() needs at least one address")
    scheme = "ipv6" if any(a.startswith("[") for a in addresses) else "ipv4"
    config: dict[str, Any] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": "inferd.v1.InferenceService"}, {"service": "inference.GRPCInferenceService"}],
                "retryPolicy": {
                    "maxAttempts": max(2, attempts),
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    if health_service is not None:
        config["healthCheckConfig"] = {"serviceName": health_service}
    options: list[tuple[str, Any]] = [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1)]
    return f"{scheme}:{','.join(addresses)}", options


class Connection:
    """Settings, channel and stubs of a Client or AsyncClient; ``channels`` is ``grpc`` or ``grpc.aio``."""

    def __init__(
        self,
        channels: ModuleType,
        target: str,
        timeout: float | None,
        max_message_bytes: int,
        channel: Any,
        metadata: MetadataLike | None,
        credentials: grpc.ChannelCredentials | None,
        options: Sequence[tuple[str, Any]] | None,
        tls: TlsLike = None,
        token: str | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._owns_channel = channel is None
        pairs = () if metadata is None else metadata.items() if isinstance(metadata, Mapping) else metadata
        # the token rides on every call as metadata (inferd/tls.py), so it also works on a given channel
        self._metadata: tuple[tuple[str, str], ...] | None = bearer_metadata(token, tuple(pairs)) or None
        if tls not in (None, False):
            if credentials is not None or channel is not None:
                raise ValueError("pass tls= or credentials=/channel=, not both")
            credentials = channel_credentials(tls)
        if channel is None:
            merged = {
                "grpc.max_send_message_length": max_message_bytes,
                "grpc.max_receive_message_length": max_message_bytes,
            }
            merged.update(tls_options(tls))
            merged.update(options or ())
            opts = list(merged.items())
            if credentials is None:
                channel = channels.insecure_channel(target, options=opts)
            else:
                channel = channels.secure_channel(target, credentials, options=opts)
        self.channel = channel
        self._stub = inference_pb2_grpc.InferenceServiceStub(channel)
        self._predict_stream = self._stub.PredictStream
        # Hand-written so the SDK does not need grpcio-health-checking: the "request" is the service name.
        self._health_check = channel.unary_unary(
            _health.CHECK_METHOD,
            request_serializer=_health.encode_request,
            response_deserializer=_health.decode_response,
        )

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout
