"""``inferd serve --workers 2``: real supervisor and worker processes sharing one port.

Model control sent to the shared port reaches every worker; a killed worker is restarted with the
replayed control log and serves its share of fresh connections again; health and statistics aggregate;
SIGTERM drains every worker with zero failed requests under load; a bad repository exits 2; ``auto``
starts one worker per usable CPU. Each worker is inspected through its private control socket (the paths
are in ``--workers-state-file``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import inferd
from inferd.oip.v2 import grpc_service_pb2 as pb
from inferd.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from inferd.tensors import from_numpy
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from tests.e2e.server_process import REPO_ROOT, ServerProcess, find_tool, tool_env
from tests.support import SCALE_CONFIG, eventually, scale_model, write_model
from tests.tls_support import make_tls_files

pytestmark = pytest.mark.e2e
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: a channel of its own: a new TCP connection, which SO_REUSEPORT hands to one of the workers
FRESH = [("grpc.use_local_subchannel_pool", 1)]
REQUEST = inference_pb2.PredictRequest(model_name="m", inputs=[from_numpy("x", np.ones((1, 4), np.float32))])


def repository(root: Path) -> Path:
    write_model(root, "m", SCALE_CONFIG, {1: scale_model(2)})
    write_model(root, "n", SCALE_CONFIG, {1: scale_model(3)})
    return root


class Workers:
    """A ServerProcess started with ``--workers 2`` and a state file naming each worker's private socket."""

    def __init__(
        self,
        tmp_path: Path,
        extra: list[str] | None = None,
        count: str = "2",
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.state_file = tmp_path / "workers.json"
        args = ["--workers", count, "--workers-state-file", str(self.state_file), *(extra or [])]
        server = ServerProcess(repository(tmp_path / "repo"), tmp_path / "server", args, credentials=credentials)
        self.server = server.wait_ready()
        self.repo = tmp_path / "repo"

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_file.read_text()))

    def workers(self) -> list[dict[str, Any]]:
        return list(self.state()["workers"])

    def private(self, index: int) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.workers()[index]['control']}")

    def supervisor(self) -> grpc.Channel:
        """The supervisor's own socket (what the workers forward statistics and control to)."""
        return grpc.insecure_channel(f"unix:{Path(self.workers()[0]['control']).parent / 'supervisor.sock'}")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path)
    yield running
    code = running.server.terminate()
    assert code == 0, f"the supervisor exited with {code}\n{running.server.log()[-4000:]}"


def models_on(channel: grpc.Channel) -> dict[str, inference_pb2.ModelStatus]:
    with channel:
        reply = inference_pb2_grpc.InferenceServiceStub(channel).ListModels(
            inference_pb2.ListModelsRequest(), timeout=10
        )
    return {m.name: m for m in reply.models}


def ready_versions(status: inference_pb2.ModelStatus | None) -> list[int]:
    if status is None:
        return []
    return [v.version for v in status.versions if v.state == inference_pb2.VERSION_STATE_READY]


def successes(channel: grpc.Channel, model: str = "m") -> int:
    with channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name=model), timeout=10)
    return sum(s.success_count for s in reply.statistics)


def oip_successes(channel: grpc.Channel, model: str = "m") -> tuple[int, str]:
    """OIP ModelStatistics: the summed success count, and the reply's ``x-inferd-workers``."""
    with channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply, call = stub.ModelStatistics.with_call(pb.ModelStatisticsRequest(name=model), timeout=10)
    return sum(s.inference_stats.success.count for s in reply.model_stats), workers_header(call)


def v1_statistics(channel: grpc.Channel, model: str = "m") -> tuple[int, str]:
    """inferd.v1 ModelStatistics: the summed success count, and the reply's ``x-inferd-workers``."""
    with channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply, call = stub.ModelStatistics.with_call(inference_pb2.ModelStatisticsRequest(name=model), timeout=10)
    return sum(s.success_count for s in reply.statistics), workers_header(call)


def workers_header(call: Any) -> str:
    return str(dict(call.trailing_metadata() or ()).get("x-inferd-workers", ""))


def predict_fresh(address: str) -> None:
    with grpc.insecure_channel(address, options=FRESH) as channel:
        inference_pb2_grpc.InferenceServiceStub(channel).Predict(REQUEST, timeout=10)


def health_fresh(address: str, service: str) -> int:
    with grpc.insecure_channel(address, options=FRESH) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status)


def admin(address: str) -> admin_pb2_grpc.ModelServiceStub:
    return admin_pb2_grpc.ModelServiceStub(grpc.insecure_channel(address))


def test_model_control_on_the_shared_port_reaches_every_worker(workers: Workers) -> None:
    control = admin(workers.server.address)
    write_model(workers.repo, "late", SCALE_CONFIG, {1: scale_model(4)})  # on disk after the start
    control.LoadModel(admin_pb2.LoadModelRequest(name="late"), timeout=60)
    control.SetTraffic(admin_pb2.SetTrafficRequest(name="m", version_labels={"stable": 1}), timeout=30)
    control.UnloadModel(admin_pb2.UnloadModelRequest(name="n"), timeout=30)
    for index in (0, 1):
        models = models_on(workers.private(index))
        assert ready_versions(models.get("late")) == [1], index
        assert [v.labels for v in models["m"].versions] == [["stable"]], index
        assert ready_versions(models.get("n")) == [], index
    # the Open Inference Protocol's repository methods too
    with grpc.insecure_channel(workers.server.address) as channel:
        oip = pb_grpc.GRPCInferenceServiceStub(channel)
        oip.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="late"), timeout=30)
    for index in (0, 1):
        assert ready_versions(models_on(workers.private(index)).get("late")) == [], index
    # a failure names each worker that failed
    with pytest.raises(grpc.RpcError) as failed:
        control.LoadModel(admin_pb2.LoadModelRequest(name="nowhere"), timeout=30)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert "worker 0: NOT_FOUND" in (failed.value.details() or "")
    assert "worker 1: NOT_FOUND" in (failed.value.details() or "")


def test_killed_worker_restarts_with_replayed_control_and_serves_again(workers: Workers) -> None:
    control = admin(workers.server.address)
    control.SetTraffic(admin_pb2.SetTrafficRequest(name="m", version_labels={"stable": 1}), timeout=30)
    control.UnloadModel(admin_pb2.UnloadModelRequest(name="n"), timeout=30)
    old = workers.workers()[0]["pid"]
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        worker = workers.workers()[0]
        return worker["pid"] != old and worker["state"] == "serving" and worker["restarts"] == 1

    eventually(restarted, timeout=60, what="worker 0 restarted and serving")
    models = models_on(workers.private(0))
    assert [v.labels for v in models["m"].versions] == [["stable"]]  # replayed SetTraffic
    assert ready_versions(models.get("n")) == []  # replayed unload (the repository still has n)
    assert "worker 0: replaying 2 control call(s)" in workers.server.log()
    # fresh connections reach both workers again: each one's own statistics grow
    before = [successes(workers.private(i)) for i in (0, 1)]

    def both_served() -> bool:
        predict_fresh(workers.server.address)
        return all(successes(workers.private(i)) > before[i] for i in (0, 1))

    eventually(both_served, timeout=60, what="fresh connections served by both workers")


def test_health_and_statistics_aggregate_over_workers(workers: Workers) -> None:
    address = workers.server.address
    for _ in range(10):
        predict_fresh(address)
    per_worker = [successes(workers.private(i)) for i in (0, 1)]
    assert sum(per_worker) == 10
    assert successes(grpc.insecure_channel(address)) == 10  # the shared port's view is the sum
    # the same sum in both protocols, from any connection, saying how many workers it covers
    for _ in range(3):
        assert v1_statistics(grpc.insecure_channel(address, options=FRESH)) == (10, "2/2")
        assert oip_successes(grpc.insecure_channel(address, options=FRESH)) == (10, "2/2")
    # one /metrics for the supervisor: the workers' counters summed, every line newline-terminated
    with urllib.request.urlopen(workers.server.metrics_url, timeout=10) as reply:
        metrics = reply.read().decode()
    assert 'inferd_requests_total{code="OK",model="m",version="1"} 10.0' in metrics
    assert metrics.endswith("\n") and "\n\n" not in metrics
    # model m unloaded on worker 1 alone: NOT_SERVING on every connection, whichever worker answers
    with workers.private(1) as channel:
        admin_pb2_grpc.ModelServiceStub(channel).UnloadModel(admin_pb2.UnloadModelRequest(name="m"), timeout=30)

    def everywhere(status: int) -> bool:
        return all(health_fresh(address, "model/m") == status for _ in range(8))

    eventually(lambda: everywhere(NOT_SERVING), what="model/m NOT_SERVING on every connection")
    with workers.private(1) as channel:  # the worker's own view, on its private socket
        own = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="model/m"), timeout=10)
    assert own.status == NOT_SERVING
    with workers.private(0) as channel:
        own = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="model/m"), timeout=10)
    assert own.status == SERVING  # yet the shared port says NOT_SERVING, whichever worker answers
    assert health_fresh(address, "model/n") == SERVING
    assert health_fresh(address, "") == SERVING
    with workers.private(1) as channel:
        admin_pb2_grpc.ModelServiceStub(channel).LoadModel(admin_pb2.LoadModelRequest(name="m"), timeout=60)
    eventually(lambda: everywhere(SERVING), what="model/m SERVING again on every connection")


def test_inferd_stats_shows_the_sum_and_how_many_workers_answered(workers: Workers) -> None:
    for _ in range(4):
        predict_fresh(workers.server.address)
    table = subprocess.run(
        [find_tool("inferd"), "stats", "m", "--address", workers.server.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=tool_env(),
    )
    assert table.returncode == 0, table.stderr
    row = next(line.split() for line in table.stdout.splitlines() if line.startswith("m "))
    assert row[3] == "4"  # OK: summed over the workers
    assert "workers: 2 of 2 answered" in table.stdout


def test_both_sdk_clients_report_how_many_workers_answered(workers: Workers) -> None:
    for _ in range(3):
        predict_fresh(workers.server.address)
    with inferd.Client(workers.server.address, timeout=30) as client:
        stats, covered = client.statistics_and_workers("m")
    assert covered == "2/2" and sum(v.success_count for v in stats) == 3

    async def from_async() -> tuple[list[inference_pb2.VersionStatistics], str]:
        async with inferd.AsyncClient(workers.server.address, timeout=30) as client:
            return await client.statistics_and_workers("m")

    stats, covered = asyncio.run(from_async())
    assert covered == "2/2" and sum(v.success_count for v in stats) == 3


def test_statistics_sum_the_workers_that_answer(workers: Workers) -> None:
    """A worker that does not answer (stopped here; restarting or hung in life) is left out of the sum,
    the reply says ``1/2``; only when none answers is the call UNAVAILABLE."""
    for _ in range(6):
        predict_fresh(workers.server.address)
    own = [successes(workers.private(i)) for i in (0, 1)]
    pids = [w["pid"] for w in workers.workers()]
    os.kill(pids[1], signal.SIGSTOP)
    try:
        assert v1_statistics(workers.supervisor()) == (own[0], "1/2")
        assert oip_successes(workers.supervisor()) == (own[0], "1/2")
        os.kill(pids[0], signal.SIGSTOP)
        with pytest.raises(grpc.RpcError) as none:
            v1_statistics(workers.supervisor())
        assert none.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no worker answered" in (none.value.details() or "")
        assert workers_header(none.value) == "0/2"
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert v1_statistics(workers.supervisor()) == (6, "2/2")


class Client(threading.Thread):
    """One client with its own connection: Predicts until its worker's health says NOT_SERVING (as a load
    balancer would stop sending), recording every non-OK status."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(address, options=FRESH)
        self.ok = 0
        self.failed: list[str] = []
        self.draining = threading.Event()

    def _watch(self) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            for reply in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                if reply.status != SERVING:
                    break
        except grpc.RpcError:
            pass
        self.draining.set()

    def run(self) -> None:
        threading.Thread(target=self._watch, daemon=True).start()
        predict = inference_pb2_grpc.InferenceServiceStub(self.channel).Predict
        while not self.draining.is_set():
            try:
                predict(REQUEST, timeout=10)
                self.ok += 1
            except grpc.RpcError as err:
                self.failed.append(f"{err.code().name}: {err.details()}")
        self.channel.close()


def test_sigterm_drains_every_worker_with_zero_failed_requests(tmp_path: Path) -> None:
    running = Workers(tmp_path, ["--drain-seconds", "1"])
    pids = [w["pid"] for w in running.workers()]
    clients = [Client(running.server.address) for _ in range(6)]
    for client in clients:
        client.start()
    try:
        eventually(lambda: all(c.ok >= 5 for c in clients), what="every client is served")
        running.server.process.send_signal(signal.SIGTERM)
        assert running.server.process.wait(60) == 0, running.server.log()[-4000:]
        for client in clients:
            client.join(30)
    finally:
        running.server.kill()
    assert [c.failed for c in clients] == [[]] * len(clients)
    assert all(not c.is_alive() for c in clients)
    assert all(gone(pid) for pid in pids)  # no worker left behind
    log = running.server.log()
    assert log.count("shutdown: drain window of 1s started") == 2
    assert "shutdown: every worker exited (codes 0, 0)" in log


def serve_command(repo: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(port)]


def test_bad_repository_exits_2_with_the_workers_error(tmp_path: Path) -> None:
    run = subprocess.run(
        [*serve_command(tmp_path / "absent", 0), "--workers", "2", "--no-metrics"],
        cwd=REPO_ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("inferd: worker ") and "before serving" in last and str(tmp_path / "absent") in last


def test_auto_starts_one_worker_per_usable_cpu(tmp_path: Path) -> None:
    running = Workers(tmp_path, count="auto")
    try:
        assert len(running.workers()) == len(os.sched_getaffinity(0))
        assert all(w["state"] == "serving" for w in running.workers())
    finally:
        assert running.server.terminate() == 0


def test_admin_port_fans_out_and_the_shared_port_serves_no_control(tmp_path: Path) -> None:
    running = Workers(tmp_path, ["--admin-port", "0"])
    try:
        control = admin(f"127.0.0.1:{running.state()['admin_port']}")
        control.UnloadModel(admin_pb2.UnloadModelRequest(name="n"), timeout=30)
        for index in (0, 1):
            assert ready_versions(models_on(running.private(index)).get("n")) == [], index
        with pytest.raises(grpc.RpcError) as refused:
            admin(running.server.address).UnloadModel(admin_pb2.UnloadModelRequest(name="m"), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert running.server.terminate() == 0


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:  # bound without SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [*serve_command(repository(tmp_path / "repo"), port), "--workers", "2", "--no-metrics"],
            cwd=REPO_ROOT,
            env=tool_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"inferd: cannot listen on 127.0.0.1:{port}")


def gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return ") Z " in stat.read_text()
    except FileNotFoundError:
        return True


def test_second_signal_kills_every_worker_and_exits_1(tmp_path: Path) -> None:
    running = Workers(tmp_path, ["--drain-seconds", "60"])
    pids = [w["pid"] for w in running.workers()]
    running.server.process.send_signal(signal.SIGTERM)
    eventually(lambda: running.server.log().count("drain window of 60s started") == 2, what="both workers drain")
    running.server.process.send_signal(signal.SIGINT)
    assert running.server.process.wait(60) == 1
    assert "second signal: SIGKILL to every worker" in running.server.log()
    eventually(lambda: all(gone(pid) for pid in pids), what="no worker left")


def test_workers_of_a_killed_supervisor_stop_themselves(tmp_path: Path) -> None:
    running = Workers(tmp_path)
    pids = [w["pid"] for w in running.workers()]
    private_dir = Path(running.workers()[0]["control"]).parent
    assert private_dir.name.startswith("inferd-workers-") and private_dir.is_dir()
    running.server.kill()  # SIGKILL: the supervisor cannot stop them nor remove its socket folder ...
    eventually(lambda: all(gone(pid) for pid in pids), what="the orphaned workers exited")
    eventually(lambda: not private_dir.exists(), what="the folder removed by the last worker out")  # ... they do


def test_the_merged_metrics_endpoint_serves_https_with_the_servers_tls(tmp_path: Path) -> None:
    """With --tls-cert/--tls-key/--tls-client-ca the supervisor's /metrics is HTTPS and asks for a client
    certificate, as a single server's; the workers' own endpoints stay plain HTTP on 127.0.0.1."""
    files = make_tls_files(tmp_path / "tls")
    flags = ["--tls-cert", str(files.server_cert), "--tls-key", str(files.server_key)]
    flags += ["--tls-client-ca", str(files.ca)]
    credentials = grpc.ssl_channel_credentials(
        files.ca.read_bytes(), files.client_key.read_bytes(), files.client_cert.read_bytes()
    )
    running = Workers(tmp_path, flags, credentials=credentials)
    try:
        for _ in range(4):
            with grpc.secure_channel(running.server.address, credentials, options=FRESH) as channel:
                inference_pb2_grpc.InferenceServiceStub(channel).Predict(REQUEST, timeout=10)
        port = running.server.metrics_port
        assert port, "the supervisor serves no metrics endpoint"
        trusted = ssl.create_default_context(cafile=str(files.ca))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"https://localhost:{port}/metrics", timeout=10, context=trusted).close()
        trusted.load_cert_chain(str(files.client_cert), str(files.client_key))
        with urllib.request.urlopen(f"https://localhost:{port}/metrics", timeout=10, context=trusted) as reply:
            metrics = reply.read().decode()
        assert 'inferd_requests_total{code="OK",model="m",version="1"} 4.0' in metrics
        assert 'inferd_workers{state="serving"} 2.0' in metrics
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).close()
        for worker in running.workers():  # plain HTTP, loopback: only the supervisor scrapes these
            own = int(Path(worker["metrics_port_file"]).read_text())
            with urllib.request.urlopen(f"http://127.0.0.1:{own}/metrics", timeout=10) as reply:
                assert "inferd_requests_total" in reply.read().decode()
    finally:
        assert running.server.terminate() == 0
