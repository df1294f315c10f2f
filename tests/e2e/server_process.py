"""The real server as a subprocess, and the environment end-to-end tests run tools in.

The server is started exactly as an operator would (``python -m server serve``), on port 0 with
``--port-file``; readiness is the port file appearing and grpc.health.v1 reporting "" SERVING.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The interpreter running the tests; under `make test` it is .venv/bin/python.
BIN_DIR = Path(sys.executable).parent
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin folder (grpcurl, inferd) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN_DIR), str(REPO_ROOT / ".venv" / "bin"), env.get("PATH", "")])
    env.update(extra)
    return env


def find_tool(name: str) -> str:
    found = shutil.which(name, path=tool_env()["PATH"])
    if found is None:
        pytest.fail(f"'{name}' is not installed: run 'make venv' (it comes with the dev extra)")
    return found


def health_status(
    address: str, service: str = "", timeout: float = 5.0, credentials: grpc.ChannelCredentials | None = None
) -> int:
    """One grpc.health.v1 Check (over TLS with ``credentials``); returns the ServingStatus number."""
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=True)
        return int(reply.status)


class ServerProcess:
    """``python -m server serve`` in a subprocess; its output goes to a log file read on failure."""

    def __init__(
        self,
        repository: Path,
        workdir: Path,
        extra_args: Sequence[str] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``credentials``: what the readiness check connects with when the server serves TLS (--tls-*)."""
        self.credentials = credentials
        workdir.mkdir(parents=True, exist_ok=True)
        self.port_file = workdir / "port"
        self.log_path = workdir / "server.log"
        self.port_file.unlink(missing_ok=True)
        self.metrics_port_file = workdir / "metrics-port"
        self.metrics_port_file.unlink(missing_ok=True)
        # a free metrics port unless the test chose (the command's default, 8002, may be taken)
        metrics = (
            [] if any(a.startswith(("--metrics-port", "--no-metrics")) for a in extra_args) else ["--metrics-port", "0"]
        )
        self.args = [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--repository",
            str(repository),
            "--port",
            "0",
            "--port-file",
            str(self.port_file),
            "--metrics-port-file",
            str(self.metrics_port_file),
            *metrics,
            *extra_args,
        ]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.args, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=tool_env()
        )
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_port(self) -> int:
        """The Prometheus endpoint's port (written before the port file, so known once ready)."""
        text = self.metrics_port_file.read_text().strip() if self.metrics_port_file.exists() else ""
        return int(text) if text.isdigit() else 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def _fail(self, why: str) -> NoReturn:
        self.kill()
        pytest.fail(f"{why}\n--- server log ---\n{self.log()[-4000:]}")

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> ServerProcess:
        """Poll for the port file (written once serving), then confirm health "" is SERVING."""
        deadline = time.monotonic() + timeout

        def bound_port() -> int:
            if self.process.poll() is not None:
                self._fail(f"the server exited with code {self.process.returncode} before serving")
            text = self.port_file.read_text().strip() if self.port_file.exists() else ""
            return int(text) if text.isdigit() else 0

        try:
            self.port = eventually(bound_port, timeout=timeout, what="the port file")
        except AssertionError:
            self._fail(f"no port file after {timeout:.0f} s")
        remaining = max(1.0, deadline - time.monotonic())
        try:
            status = health_status(self.address, "", timeout=remaining, credentials=self.credentials)
        except grpc.RpcError as err:
            self._fail(f"health Check failed: {err}")
        if status != health_pb2.HealthCheckResponse.SERVING:
            self._fail(f"health of '' is {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
        return self

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (the graceful drain) and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
