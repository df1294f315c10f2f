"""Tracing's settings, read from the standard ``OTEL_*`` environment variables.

Unlike the OpenTelemetry SDK's default, tracing is off unless asked for: ``OTEL_TRACES_EXPORTER=otlp``
(or ``console``), or an OTLP endpoint (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``/``OTEL_EXPORTER_OTLP_ENDPOINT``).
``OTEL_TRACES_EXPORTER=none`` and ``OTEL_SDK_DISABLED=true`` turn it off whatever else is set. Bad values
are refused at start-up (:class:`TracingConfigError`) rather than ignored with a warning, as the SDK does:
a typo in a sampler should not silently trace everything, or nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from server.telemetry.trace_context import SAMPLERS

#: OTLP/gRPC's default endpoint (the only OTLP protocol inferd speaks)
DEFAULT_ENDPOINT = "http://localhost:4317"
EXPORTERS = ("otlp", "console")
COMPRESSIONS = ("gzip", "none")


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable (or a TracingOptions field) that inferd cannot honour."""


@dataclass(frozen=True, slots=True)
class TracingOptions:
    """Where spans go and which calls get them. The defaults are OpenTelemetry's."""

    #: OTLP/gRPC collector: ``http://host:4317`` (plaintext), ``https://...`` (TLS) or ``host:port``
    endpoint: str = DEFAULT_ENDPOINT
    #: plaintext to a scheme-less endpoint; None = by the scheme (``http://`` plaintext, otherwise TLS)
    insecure: bool | None = None
    #: extra gRPC metadata on each export (e.g. an API key)
    headers: tuple[tuple[str, str], ...] = ()
    #: ``gzip`` or None
    compression: str | None = None
    #: one export's deadline
    timeout_s: float = 10.0
    #: ``otlp`` and/or ``console`` (JSON spans on stdout, for trying it out)
    exporters: tuple[str, ...] = ("otlp",)
    #: an ``OTEL_TRACES_SAMPLER`` name; ``parentbased_*`` follow a caller's sampled flag
    sampler: str = "parentbased_always_on"
    #: the ratio of ``*traceidratio`` (0..1; None = 1)
    sampler_arg: float | None = None
    #: the batch span processor: export every ``schedule_delay_ms`` or ``max_export_batch_size`` spans,
    #: dropping spans beyond ``max_queue_size`` waiting (``OTEL_BSP_*``)
    schedule_delay_ms: float = 5000.0
    max_queue_size: int = 2048
    max_export_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise TracingConfigError(
                f"OTEL_TRACES_SAMPLER={self.sampler!r} is not a sampler inferd knows; use one of {', '.join(SAMPLERS)}"
            )
        if self.sampler_arg is not None and not 0.0 <= self.sampler_arg <= 1.0:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, not {self.sampler_arg}")
        unknown = [name for name in self.exporters if name not in EXPORTERS]
        if unknown or not self.exporters:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={','.join(self.exporters)!r}: inferd exports spans with {', '.join(EXPORTERS)} "
                "(or none)"
            )
        if self.compression not in (None, "gzip"):
            raise TracingConfigError(f"OTLP compression must be gzip or none, not {self.compression!r}")
        if self.timeout_s <= 0 or self.schedule_delay_ms <= 0:
            raise TracingConfigError("OTLP export timeout and OTEL_BSP_SCHEDULE_DELAY must be more than 0")
        if not 0 < self.max_export_batch_size <= self.max_queue_size:
            raise TracingConfigError("OTEL_BSP_MAX_EXPORT_BATCH_SIZE must be from 1 to OTEL_BSP_MAX_QUEUE_SIZE")

    @property
    def plaintext(self) -> bool:
        """Whether the exporter's channel skips TLS."""
        if self.insecure is not None:
            return self.insecure and not self.endpoint.startswith("https://")
        return urlparse(self.endpoint).scheme == "http"

    def describe(self) -> str:
        """For the start-up log line: where spans go and which calls are sampled."""
        sinks = []
        if "otlp" in self.exporters:
            sinks.append(f"OTLP/gRPC to {self.endpoint} ({'plaintext' if self.plaintext else 'TLS'})")
        if "console" in self.exporters:
            sinks.append("stdout")
        sampler = self.sampler if self.sampler_arg is None else f"{self.sampler} {self.sampler_arg:g}"
        return f"spans to {' and '.join(sinks)}, sampler {sampler}"

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> TracingOptions | None:
        """The options the ``OTEL_*`` variables ask for; None when tracing is off."""
        return _Reader(env).options()


class _Reader:
    """One environment's variables, each traces-specific one before its ``OTEL_EXPORTER_OTLP_*`` fallback."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def otlp(self, what: str) -> tuple[str, str] | None:
        """``OTEL_EXPORTER_OTLP_TRACES_<what>`` or else ``OTEL_EXPORTER_OTLP_<what>``: (name, value)."""
        for name in (f"OTEL_EXPORTER_OTLP_TRACES_{what}", f"OTEL_EXPORTER_OTLP_{what}"):
            value = self.get(name)
            if value is not None:
                return name, value
        return None

    def options(self) -> TracingOptions | None:
        if (self.get("OTEL_SDK_DISABLED") or "").lower() == "true":
            return None
        exporters = self.exporters()
        endpoint = self.otlp("ENDPOINT")
        if exporters == ():
            return None
        if exporters is None:
            if endpoint is None:
                return None
            exporters = ("otlp",)
        if "otlp" in exporters:
            self.check_protocol()
        sampler = (self.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower()
        return TracingOptions(
            endpoint=endpoint[1] if endpoint else DEFAULT_ENDPOINT,
            insecure=self.boolean(self.otlp("INSECURE")),
            headers=self.headers(),
            compression=self.compression(),
            timeout_s=self.millis(self.otlp("TIMEOUT"), 10_000) / 1000,
            exporters=exporters,
            sampler=sampler,
            sampler_arg=self.sampler_arg(sampler),
            schedule_delay_ms=self.millis(self.named("OTEL_BSP_SCHEDULE_DELAY"), 5000),
            max_queue_size=self.count(self.named("OTEL_BSP_MAX_QUEUE_SIZE"), 2048),
            max_export_batch_size=self.count(self.named("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"), 512),
        )

    def named(self, name: str) -> tuple[str, str] | None:
        value = self.get(name)
        return None if value is None else (name, value)

    def exporters(self) -> tuple[str, ...] | None:
        """The exporters asked for; () for ``none``; None when the variable is unset."""
        raw = self.get("OTEL_TRACES_EXPORTER")
        if raw is None:
            return None
        names = tuple(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
        if "none" in names:
            return ()
        unknown = [name for name in names if name not in EXPORTERS]
        if unknown:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={raw!r}: inferd exports spans with {', '.join(EXPORTERS)} (or none), "
                f"not {', '.join(unknown)}"
            )
        return names

    def check_protocol(self) -> None:
        found = self.otlp("PROTOCOL")
        if found is not None and found[1].lower() != "grpc":
            raise TracingConfigError(
                f"{found[0]}={found[1]!r}: inferd exports spans over OTLP/gRPC only (grpc, usually port 4317)"
            )

    def sampler_arg(self, sampler: str) -> float | None:
        raw = self.get("OTEL_TRACES_SAMPLER_ARG")
        if raw is None or not sampler.endswith("traceidratio"):
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1 (0.01 = 1 %), not {raw!r}")
        return value

    def boolean(self, found: tuple[str, str] | None) -> bool | None:
        if found is None:
            return None
        value = found[1].lower()
        if value not in ("true", "false"):
            raise TracingConfigError(f"{found[0]} must be true or false, not {found[1]!r}")
        return value == "true"

    def headers(self) -> tuple[tuple[str, str], ...]:
        """``key=value,key2=value2`` with URL-encoded values (the OTLP exporter's format)."""
        found = self.otlp("HEADERS")
        if found is None:
            return ()
        pairs = []
        for item in found[1].split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            key = unquote(key).strip().lower()
            if not sep or not key:
                raise TracingConfigError(f"{found[0]}: {item.strip()!r} is not key=value")
            pairs.append((key, unquote(value).strip()))
        return tuple(pairs)

    def compression(self) -> str | None:
        found = self.otlp("COMPRESSION")
        if found is None:
            return None
        value = found[1].lower()
        if value not in COMPRESSIONS:
            raise TracingConfigError(f"{found[0]} must be gzip or none, not {found[1]!r}")
        return None if value == "none" else value

    def millis(self, found: tuple[str, str] | None, default: float) -> float:
        """Milliseconds, as the specification defines these variables."""
        if found is None:
            return default
        try:
            value = float(found[1])
        except ValueError:
            value = math.nan
        if not value > 0 or math.isinf(value):
            raise TracingConfigError(f"{found[0]} must be milliseconds, more than 0, not {found[1]!r}")
        return value

    def count(self, found: tuple[str, str] | None, default: int) -> int:
        if found is None:
            return default
        if not found[1].isdigit() or int(found[1]) == 0:
            raise TracingConfigError(f"{found[0]} must be a whole number more than 0, not {found[1]!r}")
        return int(found[1])
