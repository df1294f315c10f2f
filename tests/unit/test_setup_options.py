"""`make venv TORCH=none | TORCH_INDEX=URL` and what happens without torch (README "What gets downloaded")."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engines.base import BackendUnavailable, LoadSpec, backend_available, load_engine
from examples import build

REPO_ROOT = Path(__file__).resolve().parents[2]


def venv_recipe(tmp_path: Path, *variables: str) -> list[str]:
    """The pip lines `make venv` would run (dry run, forced, into a throwaway venv path)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-n", "-B", "venv", f"VENV={tmp_path / 'venv'}", *variables],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [line for line in result.stdout.splitlines() if " install " in line and "--upgrade pip" not in line]


def test_make_venv_installs_torch_from_the_configured_index_by_default(tmp_path: Path) -> None:
    (line,) = venv_recipe(tmp_path)
    assert ",torch" in line and "--index-url" not in line


def test_make_venv_with_torch_index_installs_torch_alone_from_that_index(tmp_path: Path) -> None:
    torch_line, main_line = venv_recipe(tmp_path, "TORCH_INDEX=file:///srv/cpu-wheels")
    assert "--index-url 'file:///srv/cpu-wheels'" in torch_line and "--no-deps" in torch_line
    assert torch_line.rstrip().endswith(" torch") and "-c constraints.txt" in torch_line
    assert "--index-url" not in main_line  # everything else from pip's configured index


def test_make_venv_with_torch_none_installs_no_torch(tmp_path: Path) -> None:
    (line,) = venv_recipe(tmp_path, "TORCH=none", "TORCH_INDEX=file:///ignored")
    assert line.endswith("-e '.[onnxruntime,examples,dev]'") and "index-url" not in line


@pytest.fixture
def without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """find_spec answers as on a venv made with TORCH=none."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "torch" or name.startswith("torch.") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_without_torch_the_examples_skip_tabular_torch_and_say_so(
    without_torch: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [n for n, e in build.EXAMPLES.items() if build.missing_requirement(e) is None]
    assert "tabular_torch" not in names and "mlp_ranker" in names
    assert build.main(["--output", str(tmp_path / "default")]) == 0
    err = capsys.readouterr().err
    assert "skipped tabular_torch: torch is not installed" in err
    assert not (tmp_path / "default" / "tabular_torch").exists()
    assert (tmp_path / "default" / "mlp_ranker" / "config.pbtxt").is_file()


def test_without_torch_the_torch_engine_reports_itself_unavailable(without_torch: None, tmp_path: Path) -> None:
    assert not backend_available("torch")
    spec = LoadSpec.__new__(LoadSpec)  # never read: the engine refuses before it looks at the spec
    with pytest.raises(BackendUnavailable, match=r"engine 'torch' needs the 'torch' package: pip install"):
        load_engine("torch", spec)
