"""Shadow and canary changed at run time: SetShadow (SDK and raw API) turns mirroring on, re-aims it and
turns it off without reloading a version or resetting its counters; a config.pbtxt edit that only changes
routing policy (labels, traffic, shadow) is applied by polling or LoadModel over the same slots, while a
changed artefact or any other config field still reloads."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from inferd import AsyncClient, AsyncModelControl, Client, ModelControl
from inferd.errors import FailedPrecondition, InvalidArgument, NotFound
from inferd.v1 import admin_pb2, admin_pb2_grpc
from server.models.slot import Slot
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

X = {"x": np.ones((1, 4), dtype=np.float32)}

#: v1 answers unpinned requests (stable), v2 is the candidate; no shadow yet
LABELLED = (
    SCALE_CONFIG
    + """
version_policy { all {} }
version_labels { key: "stable" value: 1 }
version_labels { key: "candidate" value: 2 }
"""
)
BROKEN_MODEL = "raise RuntimeError('this version cannot load')\n"


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    write_model(tmp_path, "m", LABELLED, {1: scale_model(1), 2: scale_model(1.5)})
    return tmp_path


@pytest.fixture()
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(repo) as running:
        yield running


def slots(server: ServerThread) -> dict[int, Slot]:
    assert server.server is not None
    return dict(server.server.manager.registry.entry("m").slots)


def settle(server: ServerThread) -> None:
    """Let the mirrors still running finish, so comparison counts are final."""
    assert server.server is not None
    server.call(server.server.shadow.close())


def compared(client: Client, version: int = 2) -> int:
    (stats,) = client.statistics("m", version)
    return sum(c.compared + c.dropped for c in stats.shadow)


def successes(client: Client, version: int = 1) -> int:
    (stats,) = client.statistics("m", version)
    return stats.success_count


def send(client: Client, count: int) -> None:
    for _ in range(count):
        assert client.predict_response("m", X).version == 1


def test_shadow_is_turned_on_and_off_at_run_time_and_no_counter_resets(server: ServerThread):
    before = slots(server)
    with Client(server.address, timeout=10) as client:
        control = ModelControl(client)
        send(client, 10)
        settle(server)
        assert compared(client) == 0

        status = control.set_shadow("m", label="candidate", fraction=1.0)
        assert (status.shadow.label, status.shadow.fraction) == ("candidate", 1.0)
        send(client, 10)
        settle(server)
        assert compared(client) == 10
        (comparison,) = client.statistics("m", 2)[0].shadow
        assert comparison.primary_version == 1 and comparison.mean_abs_diff == pytest.approx(0.5)

        status = control.clear_shadow("m")
        assert not status.HasField("shadow")
        send(client, 10)
        settle(server)
        assert compared(client) == 10  # mirroring stopped; what was compared stays
        assert successes(client) == 30  # the primary's counters were never reset
        status = control.set_shadow("m", version=2, fraction=1.0)
        assert status.shadow.version == 2
        send(client, 5)
        settle(server)
        assert compared(client) == 15
    after = slots(server)
    assert all(after[v] is before[v] for v in (1, 2)), "a shadow change must not reload a version"


def test_set_shadow_rejects_what_cannot_be_followed_with_clear_statuses(repo: Path):
    (repo / "m" / "3").mkdir()
    (repo / "m" / "3" / "model.py").write_text(BROKEN_MODEL)
    with ServerThread(repo) as server, Client(server.address, timeout=10) as client:
        control = ModelControl(client)
        for fraction in (0.0, 1.5, float("nan")):
            with pytest.raises(InvalidArgument, match=r"fraction of model 'm' must be in \(0, 1\]"):
                control.set_shadow("m", label="candidate", fraction=fraction)
        with pytest.raises(InvalidArgument, match="exactly one of a label and a version"):
            control.set_shadow("m", label="candidate", version=2, fraction=0.5)
        with pytest.raises(FailedPrecondition, match=r"no version label 'nope'.*labels: candidate, stable"):
            control.set_shadow("m", label="nope", fraction=0.5)
        with pytest.raises(
            FailedPrecondition, match=r"shadow version 7 of model 'm' is not loaded \(versions: 1, 2, 3\)"
        ):
            control.set_shadow("m", version=7, fraction=0.5)
        with pytest.raises(FailedPrecondition, match="shadow version 3 of model 'm' is FAILED, not READY"):
            control.set_shadow("m", version=3, fraction=0.5)
        with pytest.raises(InvalidArgument, match=r"version 1 \(label 'stable'\) of model 'm' already answers every"):
            control.set_shadow("m", label="stable", fraction=0.5)
        with pytest.raises(NotFound, match="model 'ghost' not found"):
            control.set_shadow("ghost", version=1, fraction=0.5)
        stub = admin_pb2_grpc.ModelServiceStub(client.channel)
        for request in (
            admin_pb2.SetShadowRequest(name="m"),
            admin_pb2.SetShadowRequest(name="m", off=True, shadow={"version": 2, "fraction": 1.0}),
        ):
            with pytest.raises(grpc.RpcError) as info:
                stub.SetShadow(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "exactly one of shadow" in (info.value.details() or "")
        assert not client.list_models()[0].HasField("shadow")  # nothing was applied


def test_a_canary_version_may_shadow_while_it_takes_a_share_of_traffic(server: ServerThread):
    with Client(server.address, timeout=10) as client:
        control = ModelControl(client)
        control.set_traffic("m", labels={"stable": 1, "candidate": 2}, weights={"stable": 1, "candidate": 1})
        status = control.set_shadow("m", label="candidate", fraction=1.0)
        assert status.shadow.label == "candidate"
        control.set_traffic("m", labels={"stable": 1, "candidate": 2}, weights={"candidate": 1})
        with pytest.raises(InvalidArgument, match="cannot shadow itself"):
            control.set_shadow("m", version=2, fraction=1.0)


def test_a_runtime_shadow_survives_unloading_another_version_and_reloading_the_same_config(repo: Path):
    write_model(repo, "m", LABELLED, {3: scale_model(3)})
    with ServerThread(repo) as server, Client(server.address, timeout=10) as client:
        control = ModelControl(client)
        control.set_shadow("m", label="candidate", fraction=0.25)
        assert control.unload("m", 3).shadow.fraction == 0.25
        assert control.load("m").shadow.label == "candidate"


async def test_async_model_control_sets_and_clears_a_shadow(server: ServerThread):
    async with AsyncClient(server.address, timeout=10) as client:
        control = AsyncModelControl(client)
        status = await control.set_shadow("m", version=2, fraction=0.5)
        assert (status.shadow.version, status.shadow.fraction) == (2, 0.5)
        assert not (await control.clear_shadow("m")).HasField("shadow")


def touch(path: Path) -> None:
    """A new mtime even on coarse clocks, so the fingerprint changes."""
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))


ROUTING_EDIT = (
    SCALE_CONFIG
    + """
version_policy { all {} }
version_labels { key: "stable" value: 1 }
version_labels { key: "challenger" value: 2 }
traffic { label: "stable" weight: 100 }
shadow { label: "challenger" fraction: 1.0 }
"""
)


@pytest.mark.parametrize("via", ["poll", "LoadModel"])
def test_a_config_edit_of_only_labels_traffic_and_shadow_keeps_the_versions_and_their_counters(
    server: ServerThread, repo: Path, via: str
):
    before = slots(server)
    with Client(server.address, timeout=10) as client:
        send(client, 10)
        write_model(repo, "m", ROUTING_EDIT)
        touch(repo / "m" / "config.pbtxt")
        if via == "poll":
            assert server.server is not None
            assert server.call(server.server.manager.poll_once()) == ["m"]
        else:
            ModelControl(client).load("m")
        after = slots(server)
        assert all(after[v] is before[v] for v in (1, 2)), "a routing-only edit must not reload a version"
        (status,) = client.list_models()
        assert status.shadow.label == "challenger" and [(w.label, w.weight) for w in status.traffic] == [
            ("stable", 100)
        ]
        assert {v.version: list(v.labels) for v in status.versions} == {1: ["stable"], 2: ["challenger"]}
        send(client, 10)
        settle(server)
        assert successes(client) == 20  # counted since start-up, not since the edit
        assert compared(client) == 10  # the edited shadow policy is in force
        metadata = client.metadata("m")
        assert metadata.config.shadow.label == "challenger"  # metadata shows the edited config


def test_a_changed_artefact_or_another_config_field_still_reloads(server: ServerThread, repo: Path):
    before = slots(server)
    assert server.server is not None
    manager = server.server.manager
    model_py = repo / "m" / "2" / "model.py"
    model_py.write_text(scale_model(4))
    touch(model_py)
    assert server.call(manager.poll_once()) == ["m"]
    after = slots(server)
    assert after[1] is before[1] and after[2] is not before[2]
    with Client(server.address, timeout=10) as client:
        assert float(client.predict("m", X, version=2)["y"][0, 0]) == 4.0
    write_model(repo, "m", LABELLED + 'parameters { key: "k" value: "v" }\n')
    touch(repo / "m" / "config.pbtxt")
    assert server.call(manager.poll_once()) == ["m"]
    reloaded = slots(server)
    assert reloaded[1] is not after[1] and reloaded[2] is not after[2]
