"""GPU memory: devices in ServerMetadata, and the memory budget refusing a load instead of crashing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.models import gpu
from server.models.config import load_config
from server.models.slot import Slot
from tests.gpu.conftest import require_cuda
from tests.support import write_model
from tests.unit.test_engine_fallback import CONFIG, double_py, write_double_pt

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..* is deprecated:DeprecationWarning")]


def test_devices_report_their_memory() -> None:
    require_cuda()
    devices = gpu.query_devices(allow_init=True)
    assert devices, "a CUDA host reports at least one device"
    first = devices[0]
    assert first.total_bytes > 0 and 0 <= first.free_bytes <= first.total_bytes and first.name


def test_server_metadata_lists_the_devices(tmp_path: Path) -> None:
    require_cuda()
    import grpc

    from inferd.v1 import inference_pb2, inference_pb2_grpc
    from tests.support import ServerThread

    (tmp_path / "models").mkdir()
    with ServerThread(tmp_path / "models", device="cuda:0", gpu_memory_fraction=0.75) as server:
        import torch

        torch.zeros(1, device="cuda:0")  # NVML-less hosts report through an initialised torch
        with grpc.insecure_channel(server.address) as channel:
            meta = inference_pb2_grpc.InferenceServiceStub(channel).ServerMetadata(
                inference_pb2.ServerMetadataRequest()
            )
    assert meta.devices, "no devices in ServerMetadata"
    device = meta.devices[0]
    assert device.total_bytes > 0 and device.used_bytes + device.free_bytes == device.total_bytes
    assert device.memory_fraction == pytest.approx(0.75)


def test_a_model_over_the_budget_is_refused_and_the_next_engine_serves(tmp_path: Path) -> None:
    require_cuda()
    model = write_model(
        tmp_path,
        "huge",
        CONFIG + 'engine_preference: ["torch", "python"]\nparameters { key: "gpu_memory_mb" value: "100000000" }\n',
    )
    (model / "1").mkdir()
    write_double_pt(model / "1" / "model.pt")
    (model / "1" / "model.py").write_text(double_py(0.0))
    slot = Slot(load_config(model / "config.pbtxt", model_name="huge"), 1, model / "1", device="cuda:0")

    async def load() -> None:
        await slot.load()
        await slot.drain_and_close()

    asyncio.run(load())
    assert slot.backend == "python"
    assert slot.engine_notes[0].startswith("torch: needs about 100000000 MiB of GPU memory (gpu_memory_mb)")
