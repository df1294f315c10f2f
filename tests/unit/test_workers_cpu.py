"""``--workers auto`` (one per usable CPU, or per visible GPU with --device cuda) and ``--pin-workers``."""

from __future__ import annotations

import os

from server.workers.cpu import auto_workers, pin_cpu, usable_cpus, visible_gpus


def test_auto_is_one_per_usable_cpu_on_cpu() -> None:
    assert auto_workers("cpu", cpus=6, gpus=2) == 6
    assert auto_workers("cpu", cpus=0, gpus=0) == 1


def test_auto_is_one_per_visible_gpu_on_cuda_and_per_cpu_without_a_gpu() -> None:
    assert auto_workers("cuda", cpus=16, gpus=4) == 4
    assert auto_workers("cuda:0", cpus=16, gpus=1) == 1
    assert auto_workers("cuda", cpus=16, gpus=0) == 16


def test_visible_gpus_follow_cuda_visible_devices() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1, 3"}) == 3
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == 0


def test_usable_cpus_are_the_affinity_mask() -> None:
    assert usable_cpus() == sorted(os.sched_getaffinity(0))


def test_pinning_is_round_robin_over_the_usable_cpus() -> None:
    assert [pin_cpu(i, [2, 5, 7]) for i in range(5)] == [2, 5, 7, 2, 5]
