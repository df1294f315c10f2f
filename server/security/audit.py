"""The audit log (``--audit-log PATH|-``): one JSON line per control action and per denied call.

Why apart from the access log: the access log samples data-plane calls for debugging; the audit log is
the record a security review asks for — who changed what the server serves (load, unload, traffic, shadow,
through ModelService or the OIP repository extension) and who was turned away — so it is never sampled,
except rate-limit refusals (a client in a retry loop would otherwise write thousands of lines a second):
those are logged at most once a second per principal, with the count of the ones left out (``repeats``).

A line (keys always present, null when they do not apply)::

    {"time": "2026-05-01T12:34:56.789012Z", "principal": "deployer", "source": "token",
     "action": "/inferd.v1.ModelService/LoadModel", "target": {"model": "ranker", "versions": [3]},
     "outcome": "OK", "request_id": "3f2a…", "peer": "ipv4:10.0.0.7:51234", "message": null, "repeats": 0}

Never a token, a metadata value other than ``x-request-id``, or a payload: ``target`` is built from a fixed
list of request fields (names, versions, labels, weights, shadow fraction), so an OIP load's ``parameters``
(which may carry a whole model file) never reach it. Lines are written by the access log's writer thread
(:class:`~server.telemetry.line_writer.LineWriter`), so a slow disk never stalls the event loop.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.core.echo import bounded
from server.core.principal import Principal
from server.telemetry.access_log import rfc3339
from server.telemetry.line_writer import STDOUT, LineWriter, open_lines

#: the keys of every line, in order
FIELDS = ("time", "principal", "source", "action", "target", "outcome", "request_id", "peer", "message", "repeats")
#: characters kept of a client-chosen string (x-request-id, a model name, a label)
ID_CHARS = 128
#: characters kept of a denial's message
MESSAGE_CHARS = 256
#: rate-limit denials logged per principal, at most one per this many seconds
RATE_LIMITED_INTERVAL_S = 1.0
#: principals whose last rate-limit line is remembered before the table is pruned
_SAMPLED_PRINCIPALS = 10_000
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class AuditLogError(ValueError):
    """The audit log cannot be written where it was told to be."""


@dataclass(frozen=True, slots=True)
class AuditLogOptions:
    """Where the lines go (a file appended to, or ``-`` for stdout)."""

    destination: str | Path
    #: lines waiting for the writer thread before new ones are dropped (and counted)
    queue_lines: int = 10_000

    def __post_init__(self) -> None:
        if not str(self.destination):
            raise AuditLogError("the audit log's destination is empty: give a file path, or - for stdout")
        if self.queue_lines < 1:
            raise AuditLogError(f"the audit log's queue must hold at least 1 line, not {self.queue_lines}")

    @property
    def to_stdout(self) -> bool:
        return str(self.destination) == STDOUT


def check_destination(options: AuditLogOptions) -> None:
    """Fail now, with a clear message, if the log could not be written (for the flag parser)."""
    try:
        stream = open_lines(options.destination, "the audit log")
    except OSError as exc:
        raise AuditLogError(str(exc)) from None
    if not options.to_stdout:
        stream.close()


def request_id_from(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The client's ``x-request-id`` (cut to :data:`ID_CHARS`), else a new random id."""
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str) and value:
            return bounded(value, ID_CHARS)
    return uuid.uuid4().hex


def control_target(request: Any) -> dict[str, Any] | None:
    """What a control request acts on, from a fixed list of fields (never its parameters or payloads).

    Works for inferd.v1.ModelService requests (``name``, ``versions``/``version``, ``version_labels``,
    ``traffic``, ``shadow``, ``off``) and OIP repository requests (``model_name``, ``repository_name``)."""
    if request is None:
        return None
    target: dict[str, Any] = {}
    model = getattr(request, "name", "") or getattr(request, "model_name", "")
    if isinstance(model, str) and model:
        target["model"] = bounded(model, ID_CHARS)
    repository = getattr(request, "repository_name", "")
    if isinstance(repository, str) and repository:
        target["repository"] = bounded(repository, ID_CHARS)
    versions = getattr(request, "versions", None)
    if versions:
        target["versions"] = [int(v) for v in list(versions)[:32]]
    version = getattr(request, "version", 0)
    if isinstance(version, int) and not isinstance(version, bool) and version:
        target["version"] = version
    labels = getattr(request, "version_labels", None)
    if labels is not None and _is_message(request, "version_labels"):
        target["labels"] = {bounded(str(k), ID_CHARS): int(v) for k, v in list(labels.items())[:32]}
    traffic = getattr(request, "traffic", None)
    if traffic is not None and _is_message(request, "traffic"):
        target["traffic"] = {bounded(str(w.label), ID_CHARS): int(w.weight) for w in list(traffic)[:32]}
    if _has(request, "shadow"):
        shadow = request.shadow
        target["shadow"] = {
            "label": bounded(str(shadow.label), ID_CHARS) or None,
            "version": int(shadow.version) or None,
            "fraction": _finite(float(shadow.fraction)),
        }
    if getattr(request, "off", False) is True:
        target["shadow"] = "off"
    return target or None


def _is_message(request: Any, field: str) -> bool:
    descriptor = getattr(request, "DESCRIPTOR", None)
    return descriptor is not None and field in descriptor.fields_by_name


def _has(request: Any, field: str) -> bool:
    if not _is_message(request, field):
        return False
    try:
        return bool(request.HasField(field))
    except ValueError:
        return False


class AuditLog:
    """Writes audit lines off the event loop; :meth:`close` flushes and stops the writer."""

    def __init__(self, options: AuditLogOptions, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        try:
            stream = open_lines(options.destination, "the audit log")
        except OSError as exc:
            raise AuditLogError(str(exc)) from None
        self._writer = LineWriter(
            stream,
            format_line,
            queue_lines=options.queue_lines,
            what="audit log",
            thread_name="inferd-audit-log",
            owns_stream=not options.to_stdout,
        )
        self._clock = clock
        #: principal → [monotonic time of its last rate-limit line, refusals left out since]
        self._rate_limited: dict[str, list[float]] = {}

    @property
    def written(self) -> int:
        return self._writer.written

    @property
    def dropped(self) -> int:
        """Lines lost: the writer was too far behind, or writing failed."""
        return self._writer.dropped

    def control(
        self,
        principal: Principal | None,
        action: str,
        request: Any,
        outcome: str,
        *,
        request_id: str,
        peer: str | None,
        message: str | None = None,
    ) -> None:
        """A control action (load, unload, traffic, shadow) and how it ended (``outcome``: a status name)."""
        self._put(principal, action, control_target(request), outcome, request_id, peer, message, 0)

    def denied(
        self,
        principal: Principal | None,
        action: str,
        outcome: str,
        *,
        request_id: str,
        peer: str | None,
        model: str | None = None,
        message: str | None = None,
        rate_limited: bool = False,
    ) -> None:
        """A call refused before its handler ran (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED).

        ``rate_limited`` refusals are sampled to one line per principal per :data:`RATE_LIMITED_INTERVAL_S`."""
        repeats = 0
        if rate_limited:
            key = principal.name if principal is not None else ""
            now = self._clock()
            seen = self._rate_limited.get(key)
            if seen is not None and now - seen[0] < RATE_LIMITED_INTERVAL_S:
                seen[1] += 1
                return
            if seen is not None:
                repeats = int(seen[1])
            elif len(self._rate_limited) >= _SAMPLED_PRINCIPALS:
                self._prune(now)
            self._rate_limited[key] = [now, 0]
        target = {"model": bounded(model, ID_CHARS)} if model else None
        self._put(principal, action, target, outcome, request_id, peer, message, repeats)

    def _prune(self, now: float) -> None:
        """Forget principals not refused in the last interval (their next refusal is logged anyway)."""
        stale = [k for k, (last, _) in self._rate_limited.items() if now - last >= RATE_LIMITED_INTERVAL_S]
        for key in stale:
            del self._rate_limited[key]
        if len(self._rate_limited) >= _SAMPLED_PRINCIPALS:  # all refused this very second: start over
            self._rate_limited.clear()

    def _put(
        self,
        principal: Principal | None,
        action: str,
        target: dict[str, Any] | None,
        outcome: str,
        request_id: str,
        peer: str | None,
        message: str | None,
        repeats: int,
    ) -> None:
        self._writer.put(
            (
                time.time_ns(),
                None if principal is None else principal.name,
                None if principal is None else principal.source,
                action,
                target,
                outcome,
                request_id,
                peer,
                message,
                repeats,
            )
        )

    def close(self) -> None:
        self._writer.close()


def format_line(item: tuple[Any, ...]) -> str:
    """One queued entry as a JSON line (on the writer thread)."""
    unix_ns, principal, source, action, target, outcome, request_id, peer, message, repeats = item
    line = {
        "time": rfc3339(unix_ns),
        "principal": bounded(principal, ID_CHARS) if principal else None,
        "source": source,
        "action": action,
        "target": target,
        "outcome": outcome,
        "request_id": bounded(request_id, ID_CHARS) if request_id else None,
        "peer": peer or None,
        "message": bounded(message, MESSAGE_CHARS) if message else None,
        "repeats": repeats,
    }
    return _ENCODER.encode(line) + "\n"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
