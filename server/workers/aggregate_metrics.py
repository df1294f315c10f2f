"""One Prometheus ``/metrics`` for ``inferd serve --workers N``: the workers' expositions merged.

Each worker serves its own endpoint on a private port; the supervisor scrapes them all
(:class:`WorkerMetrics`) and serves one exposition on the user's ``--metrics-port``
(:class:`MetricsEndpoint`), so a Prometheus job scrapes one target as it does without workers.

How series combine (:func:`merge_prometheus`): counters, histograms (``_bucket``/``_sum``/``_count``) and a
summary's ``_sum``/``_count`` with the same name and labels are summed across workers — they count events,
and events in different processes add. Gauges (queue depth, in-flight calls, ``process_*`` memory…),
untyped series and a summary's quantiles cannot be added meaningfully, so each worker's series is kept with
a ``worker="<id>"`` label. ``_created`` series (OpenMetrics' creation times) are dropped: a sum has no single
creation time. Timestamps and exemplars are dropped too.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
import threading
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from server.telemetry.endpoint_tls import ReloadingContext, make_context
from server.telemetry.options import EndpointTls

log = logging.getLogger("inferd.workers")

#: a worker's endpoint that has not answered in this long is left out of the scrape (and counted)
SCRAPE_TIMEOUT_S = 2.0
#: the label each worker's gauge series gets
WORKER_LABEL = "worker"
#: the states the supervisor reports in ``inferd_workers{state=…}``, always all three
WORKER_STATES = ("serving", "starting", "restarting")
#: types whose series add across workers (a summary's quantiles excepted)
_ADDITIVE = frozenset({"counter", "histogram", "summary"})

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Family:
    name: str  # the name on the TYPE line
    type: str
    help: str
    #: (sample name, labels) → value, in first-seen order
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


def merge_prometheus(texts: Sequence[tuple[str, str]]) -> str:
    """``(worker id, exposition text)`` pairs → one exposition (text format 0.0.4); see the module docstring.

    Raises ValueError (prometheus_client's parser) when a text is not valid exposition.
    """
    families: dict[str, _Family] = {}
    for worker, text in texts:
        parsed = list(text_string_to_metric_families(text))
        additive = {f.name for f in parsed if f.type in _ADDITIVE}
        for parsed_family in parsed:
            if parsed_family.name.endswith("_created") and parsed_family.name[: -len("_created")] in additive:
                continue  # prometheus_client's text format shows a counter's _created as its own gauge
            merged = families.get(parsed_family.name)
            if merged is None:
                merged = families[parsed_family.name] = _Family(
                    _type_line_name(parsed_family), parsed_family.type, parsed_family.documentation
                )
            _add_samples(merged, parsed_family, worker)
    return "".join(_render(family) for family in families.values())


def _type_line_name(family: Any) -> str:
    """The text parser names a counter family without ``_total``; its TYPE line carries the samples' name."""
    total = family.name + "_total"
    if family.type == "counter" and any(s.name == total for s in family.samples):
        return total
    return str(family.name)


def _add_samples(merged: _Family, family: Any, worker: str) -> None:
    for sample in family.samples:
        if sample.name == family.name + "_created":
            continue
        labels = dict(sample.labels)
        additive = merged.type in _ADDITIVE and not (merged.type == "summary" and "quantile" in labels)
        if not additive:
            if WORKER_LABEL in labels:  # the worker's own label keeps its value, renamed as Prometheus does
                labels["exported_" + WORKER_LABEL] = labels.pop(WORKER_LABEL)
            labels[WORKER_LABEL] = worker
        key = (sample.name, tuple(sorted(labels.items())))
        merged.samples[key] = (merged.samples.get(key, 0.0) + sample.value) if additive else sample.value


def _render(family: _Family) -> str:
    kind = "untyped" if family.type not in ("counter", "gauge", "histogram", "summary") else family.type
    lines = [f"# HELP {family.name} {_escape_help(family.help)}\n", f"# TYPE {family.name} {kind}\n"]
    for (name, labels), value in family.samples.items():
        lines.append(f"{name}{_render_labels(labels)} {floatToGoString(value)}\n")
    return "".join(lines)


def _render_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels) + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class WorkerMetrics:
    """The supervisor's merged exposition: every worker scraped at once, plus the supervisor's own families.

    ``targets()`` gives ``(worker id, URL of its /metrics)`` for the workers to scrape now; ``states()`` the
    number of workers per state (missing states read 0). A worker that does not answer within
    ``timeout`` (or answers with something that is not exposition) is left out of that scrape and counted
    in ``inferd_workers_scrape_failures_total{worker=…}``. ``ssl_context`` is used for https:// targets.
    """

    def __init__(
        self,
        targets: Callable[[], Sequence[tuple[str, str]]],
        states: Callable[[], Mapping[str, int]],
        *,
        timeout: float = SCRAPE_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._targets = targets
        self._states = states
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        #: worker id → scrapes that failed
        self.failures: dict[str, int] = {}

    def collect(self) -> str:
        """Scrape the workers concurrently (a slow one costs ``timeout``, not N × ``timeout``) and merge."""
        targets = list(self._targets())
        texts: list[tuple[str, str]] = []
        if targets:
            with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="inferd-scrape") as pool:
                answers = list(pool.map(lambda target: self._scrape(*target), targets))
            texts = [(worker, text) for (worker, _url), text in zip(targets, answers, strict=True) if text is not None]
        try:
            merged = merge_prometheus(texts)
        except ValueError:  # a text the parser refused: merge the others, count the culprit(s)
            merged = merge_prometheus([t for t in texts if self._parses(*t)])
        return merged + self._own_families()

    def _scrape(self, worker: str, url: str) -> str | None:
        try:
            context = self._ssl_context if url.startswith("https:") else None
            with urllib.request.urlopen(url, timeout=self._timeout, context=context) as reply:
                return str(reply.read().decode("utf-8"))
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused, bad status, bad bytes
            log.warning("metrics: worker %s did not answer at %s (%s); left out of this scrape", worker, url, exc)
            self._count_failure(worker)
            return None

    def _parses(self, worker: str, text: str) -> bool:
        try:
            list(text_string_to_metric_families(text))
        except ValueError as exc:
            log.warning("metrics: worker %s's exposition cannot be parsed (%s); left out of this scrape", worker, exc)
            self._count_failure(worker)
            return False
        return True

    def _count_failure(self, worker: str) -> None:
        with self._lock:
            self.failures[worker] = self.failures.get(worker, 0) + 1

    def _own_families(self) -> str:
        states = self._states()
        workers = _Family("inferd_workers", "gauge", "worker processes by state (inferd serve --workers)")
        for state in sorted(set(WORKER_STATES) | set(states)):
            workers.samples[("inferd_workers", (("state", state),))] = float(states.get(state, 0))
        failures = _Family(
            "inferd_workers_scrape_failures_total",
            "counter",
            "scrapes of a worker's metrics endpoint that failed or timed out (the worker was left out)",
        )
        with self._lock:
            for worker, count in sorted(self.failures.items()):
                failures.samples[("inferd_workers_scrape_failures_total", ((WORKER_LABEL, worker),))] = float(count)
        return _render(workers) + _render(failures)


Collect = Callable[[], "str | Awaitable[str]"]


class MetricsEndpoint:
    """A small threaded HTTP(S) server answering GET /metrics with ``collect()``'s text.

    ``collect`` may be a plain function (called on the request's thread) or return an awaitable, which
    runs on ``loop`` (the supervisor's event loop) when one is given, else in a fresh loop on the request's
    thread. With ``tls`` the endpoint serves HTTPS with the certificate reloaded when its files change
    (server/telemetry/endpoint_tls.py, as the single-process endpoint does).
    """

    def __init__(
        self,
        collect: Collect,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: EndpointTls | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._collect = collect
        self._address = (host, port)
        self._tls = tls
        self._loop = loop
        self._timeout = timeout
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: the bound port (0 until started)
        self.port = 0

    def start(self) -> int:
        """Bind and serve on a daemon thread; returns the port. Raises OSError when the port cannot be bound."""
        endpoint = self

        class Handler(_Handler):
            def metrics(self) -> str:
                return endpoint.metrics_text()

        http = ThreadingHTTPServer(self._address, Handler)
        http.daemon_threads = True
        if self._tls is not None:
            context = make_context(self._tls)
            ReloadingContext(self._tls).install(context)
            http.socket = context.wrap_socket(http.socket, server_side=True, do_handshake_on_connect=False)
        self._http = http
        self.port = int(http.server_address[1])
        self._thread = threading.Thread(
            target=http.serve_forever, args=(0.1,), name="inferd-workers-metrics", daemon=True
        )
        self._thread.start()
        return self.port

    def metrics_text(self) -> str:
        result = self._collect()
        if not inspect.isawaitable(result):
            return result
        if self._loop is not None:
            return asyncio.run_coroutine_threadsafe(_awaited(result), self._loop).result(self._timeout)
        return asyncio.run(_awaited(result))

    def stop(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            http.shutdown()
            http.server_close()
        if self._thread is not None:
            self._thread.join(10)


async def _awaited(result: Awaitable[str]) -> str:
    return await result


class _Handler(BaseHTTPRequestHandler):
    timeout = 30  # a connection that sends nothing is closed

    def metrics(self) -> str:
        raise NotImplementedError

    def handle(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):  # the handshake runs here, not on the accepting thread
            try:
                self.request.do_handshake()
            except (OSError, ssl.SSLError) as exc:  # no certificate, a plain-HTTP client, a timeout
                log.debug("metrics endpoint: TLS handshake with %s failed: %s", self.client_address, exc)
                return
        super().handle()

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "only /metrics is served here")
            return
        try:
            body = self.metrics().encode("utf-8")
        except Exception as exc:  # the scrape fails, the endpoint stays up
            log.warning("metrics: collecting the workers' metrics failed: %s", exc)
            self.send_error(500, f"collecting the workers' metrics failed: {type(exc).__name__}")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics endpoint: " + format, *args)
