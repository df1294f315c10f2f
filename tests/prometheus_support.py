"""A real Prometheus server (the Debian ``prometheus`` binary) for tests, driven over its HTTP API.

:class:`PrometheusServer` writes a ``prometheus.yml`` (static targets, optional rule files), runs
``prometheus`` on a free loopback port with its own TSDB folder, waits for ``/-/ready`` and answers
queries. Where the binary is missing the tests that need it skip — unless ``INFERD_REQUIRE_PROMETHEUS=1``
(set in CI), where a missing binary is a failure: the acceptance tests must not pass by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support import eventually

#: set to 1 in CI: a missing prometheus/promtool binary fails the tests instead of skipping them
REQUIRE_ENV = "INFERD_REQUIRE_PROMETHEUS"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
_HTTP_TIMEOUT_S = 10.0


class PrometheusError(Exception):
    """The HTTP API answered with an error (``status: error``)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


def find_binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``: skips the test where it is missing, fails in CI."""
    found = shutil.which(name)
    if found is not None:
        return found
    why = f"'{name}' is not installed (Debian: apt-get install prometheus)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{why}, and {REQUIRE_ENV}=1 says the Prometheus tests must run")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    targets: Sequence[str],
    *,
    job: str = "inferd",
    scrape_interval: str = "1s",
    rule_files: Sequence[Path] = (),
) -> Path:
    """A ``prometheus.yml`` scraping ``targets`` (host:port) at ``/metrics``. JSON is YAML, so no YAML library."""
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "rule_files": [str(Path(rule).resolve()) for rule in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


class PrometheusServer:
    """``prometheus`` in a subprocess, scraping ``targets`` every ``scrape_interval``.

    Use as a context manager (or :meth:`start`/:meth:`stop`). Its log is ``workdir/prometheus.log``,
    quoted in failures.
    """

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str] = (),
        *,
        job: str = "inferd",
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
        binary: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.scrape_targets = list(targets)
        self.job = job
        self.binary = binary
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = write_config(
            workdir / "prometheus.yml", targets, job=job, scrape_interval=scrape_interval, rule_files=rule_files
        )
        self.log_path = workdir / "prometheus.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> PrometheusServer:
        binary = self.binary or find_binary("prometheus")
        for _attempt in range(3):  # a free port may be taken between picking it and prometheus binding it
            self.port = _free_port()
            self._spawn(binary)
            if self._wait_ready(timeout):
                return self
        self._fail("prometheus did not start (three tries)")

    def _spawn(self, binary: str) -> None:
        tsdb = self.workdir / "data"
        shutil.rmtree(tsdb, ignore_errors=True)
        args = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=info",
        ]
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)

    def _wait_ready(self, timeout: float) -> bool:
        """True once ``/-/ready`` answers 200; False when the process exited (e.g. the port was taken)."""
        assert self.process is not None
        process = self.process

        def ready() -> str:
            if process.poll() is not None:
                return "exited"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    return "ready" if reply.status == 200 else ""
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return ""

        try:
            state = eventually(ready, timeout=timeout, what=f"prometheus ready on {self.url}")
        except AssertionError:
            self._fail(f"prometheus not ready on {self.url} after {timeout:g} s")
        if state == "exited":
            if "address already in use" in self.log().lower():
                return False
            self._fail(f"prometheus exited with code {process.returncode} at start")
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _fail(self, why: str) -> NoReturn:
        self.stop()
        pytest.fail(f"{why}\n--- prometheus log ---\n{self.log()[-4000:]}")

    # -- HTTP API

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raises :class:`PrometheusError` on ``status: error``."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as reply:
                payload = json.load(reply)
        except urllib.error.HTTPError as err:  # 400/422/503 carry a JSON error body
            try:
                payload = json.load(err)
            except ValueError:
                raise PrometheusError("http", f"{err.code} {err.reason}") from None
        if payload.get("status") != "success":
            raise PrometheusError(str(payload.get("errorType", "")), str(payload.get("error", "")))
        return payload["data"]

    def query(self, expr: str, at: float | None = None) -> list[Any]:
        """An instant query: the ``result`` (vector: a list of ``{"metric": ..., "value": [t, "v"]}``)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = repr(at)
        return list(self.api("query", **params)["result"])

    def query_value(self, expr: str) -> float | None:
        """An instant query expected to give at most one sample: its value, or None for an empty result."""
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return float(result[1])
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr!r} gave {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query: a list of ``{"metric": ..., "values": [[t, "v"], ...]}``."""
        data = self.api("query_range", query=expr, start=repr(start), end=repr(end), step=repr(step))
        return list(data["result"])

    def series(self, match: str) -> list[dict[str, str]]:
        """The label sets of the series matching a selector (e.g. ``{__name__=~"inferd_.*"}``)."""
        return list(self.api("series", **{"match[]": match}))

    def targets(self) -> list[dict[str, Any]]:
        """The active targets: ``scrapeUrl``, ``health`` (up/down/unknown), ``lastScrape``, ``lastError``..."""
        return list(self.api("targets", state="active")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups (``/api/v1/rules``): each with ``name``, ``file`` and ``rules``."""
        return list(self.api("rules")["groups"])

    def parse_error(self, expr: str) -> str | None:
        """Prometheus' parse error for ``expr`` (a ``bad_data`` answer), or None when it parses and runs."""
        try:
            self.api("query", query=expr)
        except PrometheusError as err:
            if err.error_type == "bad_data":
                return err.message
            raise
        return None

    def wait_for_scrapes(self, n: int = 1, timeout: float = 60.0) -> None:
        """Wait until every target has been scraped ``n`` times, each scrape begun after this call.

        Watches ``timestamp(up)`` per instance rather than the targets page: ``up`` is appended in the
        same commit as the scraped samples, so once its timestamp moves past the call the scrape's data
        is queryable (a target page's ``lastScrape`` may move first).
        """
        since = time.time()
        seen: dict[str, set[float]] = {target: set() for target in self.scrape_targets}

        def scraped() -> bool:
            for sample in self.query(f'timestamp(up{{job="{self.job}"}})'):
                stamp = float(sample["value"][1])
                instance = sample["metric"].get("instance", "")
                if stamp >= since and instance in seen:
                    seen[instance].add(stamp)
            return all(len(stamps) >= n for stamps in seen.values())

        try:
            eventually(scraped, timeout=timeout, what=f"{n} scrape(s) of {self.scrape_targets}")
        except AssertionError:
            states = [(t.get("scrapeUrl"), t.get("health"), t.get("lastError")) for t in self.targets()]
            raise AssertionError(f"not {n} scrape(s) of every target within {timeout:g} s: {states}") from None
        down = [t for t in self.targets() if t.get("health") != "up"]
        if down:
            raise AssertionError(f"targets down: {[(t.get('scrapeUrl'), t.get('lastError')) for t in down]}")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The ``prometheus`` binary (skip where missing; fail where ``INFERD_REQUIRE_PROMETHEUS=1``)."""
    return find_binary("prometheus")


@pytest.fixture(scope="session")
def promtool_binary() -> str:
    """The ``promtool`` binary (skip where missing; fail where ``INFERD_REQUIRE_PROMETHEUS=1``)."""
    return find_binary("promtool")


class PrometheusFactory:
    """Starts Prometheus servers for one test and stops them all at its end."""

    def __init__(self, root: Path, binary: str) -> None:
        self._root = root
        self._binary = binary
        self._started: list[PrometheusServer] = []

    def __call__(
        self,
        targets: Sequence[str] = (),
        *,
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
        job: str = "inferd",
    ) -> PrometheusServer:
        workdir = self._root / f"prometheus-{len(self._started)}"
        server = PrometheusServer(
            workdir, targets, job=job, scrape_interval=scrape_interval, rule_files=rule_files, binary=self._binary
        )
        self._started.append(server)
        return server.start()

    def stop_all(self) -> None:
        for server in self._started:
            server.stop()


@pytest.fixture()
def start_prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[PrometheusFactory]:
    """``start_prometheus(["127.0.0.1:8002"], rule_files=[...])`` -> a ready :class:`PrometheusServer`,
    stopped when the test ends."""
    factory = PrometheusFactory(tmp_path, prometheus_binary)
    yield factory
    factory.stop_all()
