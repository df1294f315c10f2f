"""The model manager without a gRPC server: loads owned by the manager (a caller that goes away does not
strand a model in LOADING), no per-name state for names a client makes up, a bounded retired history,
and a config-only change of the streaming bounds replacing the version."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.errors import NotFound
from server.core.types import SlotState
from server.models.manager import RETIRED_HISTORY, ModelManager
from server.models.registry import Registry
from server.models.repository import Repository
from server.models.slot import Slot
from tests.support import SCALE_CONFIG, eventually_async, scale_model, write_model

#: opened by a test to let GATED_MODEL's load() finish; the model imports it from this module
LOAD_GATE = threading.Event()

GATED_MODEL = """
import numpy as np

class Model:
    def load(self):
        from tests.unit.test_manager import LOAD_GATE
        LOAD_GATE.wait(30)

    def infer(self, inputs):
        return {"y": np.asarray(inputs["x"], dtype=np.float32)}
"""


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    LOAD_GATE.clear()
    yield LOAD_GATE
    LOAD_GATE.set()  # never leave a loader thread blocked


def manager_for(root: Path, **options: float) -> ModelManager:
    return ModelManager(Repository(root), Registry(), **options)


def touch(path: Path) -> None:
    """A new mtime even on coarse clocks, so the version's fingerprint changes."""
    now = time.time_ns()
    os.utime(path, ns=(now, now + 1_000_000))


async def test_unknown_names_answer_not_found_and_leave_no_per_model_state(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: scale_model(2)})
    manager = manager_for(tmp_path)
    await manager.load("m")
    seen = dict(manager._seen)
    for i in range(10_000):
        name = f"{i:05d}" + "x" * 2043  # 2 KB names, as in the report
        with pytest.raises(NotFound):
            await manager.unload(name)
        with pytest.raises(NotFound):
            await manager.set_traffic(name, {"stable": 1}, (("stable", 1),))
    assert len(manager._locks) == 0
    assert manager._seen == seen
    assert manager._queued == {} and manager._loads == {}
    await manager.close()


async def test_the_lock_of_an_unloaded_model_is_dropped(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: scale_model(2)})
    manager = manager_for(tmp_path)
    await manager.load("m")
    await manager.set_traffic("m", {"stable": 1}, (("stable", 1),))
    await manager.unload("m")
    assert len(manager._locks) == 0
    await manager.close()


async def test_retired_slots_stay_bounded_after_many_swaps(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: scale_model(2)})
    manager = manager_for(tmp_path)
    first = (await manager.load("m")).slots[1]
    for _ in range(RETIRED_HISTORY + 8):
        touch(tmp_path / "m" / "1" / "model.py")
        await manager.load("m")
    await manager.wait_drained()
    retired = manager.retired
    assert len(retired) == RETIRED_HISTORY
    assert first not in retired  # the oldest fell out of the history
    assert all(slot.state is SlotState.UNLOADED for slot in retired)
    await manager.close()


async def test_a_config_only_change_of_streaming_bounds_replaces_the_version(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG + "streaming { max_active_streams: 4 }\n", {1: scale_model(2)})
    manager = manager_for(tmp_path)
    before = (await manager.load("m")).slots[1]
    assert before.spec.streaming.max_active == 4
    write_model(tmp_path, "m", SCALE_CONFIG + "streaming { max_active_streams: 1 }\n")
    after = (await manager.load("m")).slots[1]
    assert after is not before
    assert after.ready and after.spec.streaming.max_active == 1 and after.spec.streaming.max_waiting == 1
    await manager.wait_drained()
    assert before in manager.retired and before.state is SlotState.UNLOADED
    await manager.close()


async def loading(manager: ModelManager, name: str) -> None:
    def is_loading() -> bool:
        entry = manager.registry.get(name)
        return entry is not None and any(s.state is SlotState.LOADING for s in entry.slots.values())

    await eventually_async(is_loading, what=f"{name} LOADING")


async def test_a_cancelled_caller_does_not_cancel_the_load(tmp_path: Path, gate: threading.Event):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: GATED_MODEL})
    manager = manager_for(tmp_path)
    caller = asyncio.ensure_future(manager.load("m"))
    await loading(manager, "m")
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)
    gate.set()
    await eventually_async(lambda: manager.registry.entry("m").serving, what="m READY after its caller left")
    assert await manager.poll_once() == []  # the load completed, so polling has nothing to redo
    await manager.close()


async def test_a_second_load_while_one_runs_waits_for_it_and_identical_ones_join(tmp_path: Path, gate: threading.Event):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: GATED_MODEL})
    manager = manager_for(tmp_path)
    first = manager.start_load("m")
    await loading(manager, "m")
    second = manager.start_load("m")
    assert manager.start_load("m") is second  # queued behind the running load: identical requests join
    assert second is not first
    gate.set()
    entry, again = await asyncio.gather(first, second)
    assert entry.slots[1].ready
    assert again.slots[1] is entry.slots[1]  # nothing changed on disk: the loaded version is kept
    await manager.close()


async def test_a_cancelled_load_leaves_nothing_loading_and_can_be_retried(tmp_path: Path, gate: threading.Event):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: GATED_MODEL})
    manager = manager_for(tmp_path)
    task = manager.start_load("m")
    await loading(manager, "m")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert manager.registry.get("m") is None  # not listed as LOADING forever
    assert "m" not in manager._seen  # so polling loads it again
    gate.set()
    assert await manager.poll_once() == ["m"]
    assert manager.registry.entry("m").serving
    await manager.close()


async def test_close_waits_for_a_running_load(tmp_path: Path, gate: threading.Event):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: GATED_MODEL})
    manager = manager_for(tmp_path)
    task = manager.start_load("m")
    await loading(manager, "m")
    closing = asyncio.ensure_future(manager.close())
    await asyncio.sleep(0)
    assert not closing.done()
    gate.set()
    await closing
    slot = (await task).slots[1]
    assert slot.state is SlotState.UNLOADED  # loaded, then drained and closed by close()
    assert manager.registry.get("m") is None


async def test_a_load_that_raises_ends_failed_not_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    async def broken_load(self: Slot) -> None:
        raise RuntimeError("loader bug")

    monkeypatch.setattr(Slot, "load", broken_load)
    write_model(tmp_path, "m", SCALE_CONFIG, {1: scale_model(2)})
    manager = manager_for(tmp_path)
    slot = (await manager.load("m")).slots[1]
    assert slot.state is SlotState.FAILED and "loader bug" in slot.reason
    await manager.close()
