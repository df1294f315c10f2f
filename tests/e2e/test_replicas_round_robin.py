"""Client-side load balancing over two local replicas, one drained mid-run: zero failed requests.

Two ``inferd serve --drain-seconds 2`` processes; the SDK balances over them with no load balancer in
between: ``inferd.connection.replicas`` (gRPC ``round_robin`` over a static ``ipv4:`` list, client-side
health checking, retry of UNAVAILABLE on the next replica; docs/operations.md, "Several replicas without a
load balancer"). Four threads of steady Predicts; replica A gets SIGTERM mid-run and drains while the load
goes on. Every call succeeds, both replicas served (their ModelStatistics), and B kept serving after A left.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inferd import Client
from inferd.connection import replicas
from inferd.errors import InferdError
from tests.e2e.server_process import ServerProcess
from tests.support import eventually

pytestmark = pytest.mark.e2e

FEATURES = {"features": np.ones((1, 256), np.float32)}


@pytest.fixture(scope="module")
def ranker_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from examples.build import build_repository

    root = tmp_path_factory.mktemp("replica-models")
    build_repository(root, ["mlp_ranker"])
    return root


def served(address: str) -> int:
    """Successful Predicts of mlp_ranker on one replica, from its own statistics."""
    with Client(address, timeout=5) as client:
        return sum(version.success_count for version in client.statistics("mlp_ranker"))


def test_round_robin_over_two_replicas_survives_draining_one(ranker_repository: Path, tmp_path: Path) -> None:
    args = ["--drain-seconds", "2", "--grace-seconds", "5"]
    a = ServerProcess(ranker_repository, tmp_path / "a", args).wait_ready()
    b = ServerProcess(ranker_repository, tmp_path / "b", args).wait_ready()
    target, options = replicas([a.address, b.address])
    client = Client(target, options=options, timeout=10)
    results: list[tuple[float, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                client.predict("mlp_ranker", FEATURES)
                results.append((time.monotonic(), "OK"))
            except InferdError as err:
                results.append((time.monotonic(), str(err)))
            time.sleep(0.005)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        eventually(lambda: len(results) >= 200, what="load flowing")
        eventually(lambda: served(a.address) > 0 and served(b.address) > 0, what="both replicas serving")
        a_before = served(a.address)
        b_before = served(b.address)
        signalled = time.monotonic()
        a.process.send_signal(signal.SIGTERM)
        assert a.process.wait(60) == 0, a.log()[-3000:]
        exited = time.monotonic()
        eventually(lambda: sum(1 for t, _ in results if t > exited + 1.0) >= 200, what="load after A left")
        stop.set()
        for thread in threads:
            thread.join(30)
        b_after = served(b.address)
    finally:
        stop.set()
        client.close()
        a.terminate()
        b.terminate()
    failed = [(round(t - signalled, 3), outcome) for t, outcome in results if outcome != "OK"]
    assert not failed, f"{len(failed)} of {len(results)} calls failed: {failed[:10]}\n{a.log()[-2000:]}"
    assert a_before > 0 and b_before > 0, "round_robin sent calls to one replica only"
    assert b_after > b_before
    calls_after = sum(1 for t, _ in results if t > exited)
    print(f"{len(results)} calls, 0 failed; before the SIGTERM A served {a_before}, B {b_before}; B {b_after} in all")
    print(f"{calls_after} calls after A exited")
    assert "shutdown: exit" in a.log()


def test_replicas_target_and_service_config() -> None:
    import json

    target, options = replicas(["127.0.0.1:1", "127.0.0.1:2"])
    assert target == "ipv4:127.0.0.1:1,127.0.0.1:2"
    config = json.loads(dict(options)["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    (method,) = config["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert replicas(["[::1]:1"])[0] == "ipv6:[::1]:1"
    assert "healthCheckConfig" not in json.loads(dict(replicas(["a:1"], health_service=None)[1])["grpc.service_config"])
    with pytest.raises(ValueError):
        replicas([])
