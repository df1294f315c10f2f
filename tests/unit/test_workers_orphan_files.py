"""An orphaned worker's clean-up (worker_mode.remove_private_files): its own files, the dead supervisor's
socket, then the folder once empty; never a folder a supervisor did not make, never another worker's files."""

from __future__ import annotations

from pathlib import Path

from server.workers.worker_mode import PRIVATE_DIR_PREFIX, SUPERVISOR_SOCKET, WorkerRole, remove_private_files


def private_folder(root: Path, prefix: str = PRIVATE_DIR_PREFIX) -> Path:
    folder = root / f"{prefix}abc"
    folder.mkdir()
    for name in (SUPERVISOR_SOCKET, "worker-0.sock", "metrics-0.port", "worker-1.sock", "metrics-1.port"):
        (folder / name).write_text("")
    return folder


def role(folder: Path, index: int) -> WorkerRole:
    return WorkerRole(index, f"unix:{folder / f'worker-{index}.sock'}", f"unix:{folder / SUPERVISOR_SOCKET}")


def test_the_last_worker_out_removes_the_folder(tmp_path: Path) -> None:
    folder = private_folder(tmp_path)
    remove_private_files(role(folder, 0))
    assert sorted(p.name for p in folder.iterdir()) == ["metrics-1.port", "worker-1.sock"]  # worker 1's stay
    remove_private_files(role(folder, 1))
    assert not folder.exists()
    remove_private_files(role(folder, 1))  # a second call (the folder gone) is harmless


def test_a_folder_a_supervisor_did_not_make_is_left_alone(tmp_path: Path) -> None:
    folder = private_folder(tmp_path, prefix="elsewhere-")
    remove_private_files(role(folder, 0))
    assert len(list(folder.iterdir())) == 5
