"""The virtual environment holding Triton's client, ``tritonclient[grpc]`` from PyPI, for the OIP acceptance tests.

Why a second venv: tritonclient pins ``protobuf<7`` while inferd needs ``protobuf>=7``, and its generated code
registers the protobuf package ``inference`` that inferd's own OIP stubs register too, so the two can never share
a process. The tests run tritonclient's scripts (tests/oip/) with this venv's interpreter instead.

The venv is made once in ``.cache/venvs/tritonclient`` and reused while its stamp file names the same
requirements; concurrent test runs serialise on a lock file. ``make oip-client-venv`` and
``python -m tests.e2e.tritonclient_venv`` make it ahead of time.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = REPO_ROOT / ".cache" / "venvs" / "tritonclient"
#: what the venv holds; changing it remakes the venv (the stamp records it)
REQUIREMENTS = ("tritonclient[grpc]==2.73.0", "numpy")
STAMP = VENV_DIR / ".installed"
INSTALL_TIMEOUT_S = 600


class VenvError(RuntimeError):
    """The venv could not be made: the message carries pip's output."""


def venv_python(venv: Path = VENV_DIR) -> Path:
    return venv / "bin" / "python"


def _stamp_text() -> str:
    return "\n".join(REQUIREMENTS) + "\n"


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise VenvError(f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def ensure_venv(venv: Path = VENV_DIR, base_python: str | None = None) -> Path:
    """The venv's interpreter, making the venv first unless its stamp says it holds ``REQUIREMENTS``.

    ``base_python`` makes the venv (default: ``python3`` found next to the running interpreter's real
    executable, i.e. the one the project venv was made from).
    """
    stamp = venv / STAMP.name
    python = venv_python(venv)
    if python.exists() and stamp.exists() and stamp.read_text() == _stamp_text():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be making it now
        if python.exists() and stamp.exists() and stamp.read_text() == _stamp_text():
            return python
        stamp.unlink(missing_ok=True)
        base = base_python or getattr(sys, "_base_executable", None) or sys.executable
        _run([base, "-m", "venv", "--clear", str(venv)])
        _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS])
        _run([str(python), "-c", "import tritonclient.grpc, tritonclient.grpc.aio, numpy"])
        stamp.write_text(_stamp_text())
    return python


@pytest.fixture(scope="session")
def tritonclient_python() -> Path:
    """The interpreter of the tritonclient venv (made on first use: needs PyPI, or pip's configured index)."""
    try:
        return ensure_venv()
    except VenvError as err:
        pytest.fail(f"could not make the tritonclient venv ({VENV_DIR}): {err}")


def main() -> int:
    try:
        python = ensure_venv()
    except VenvError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"tritonclient venv ready: {python}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
