"""The Go, Java and C++ stubs are reproducible: generated twice from protos/ they are the same bytes, and the
same as the tree `make clients` built from (so a build can never run on stubs older than the protos).

Nothing of it is committed (each build generates it into .cache/clients/<lang>/), so this is the
languages' counterpart of `make proto-check`. Needs `make clients` first (CI runs it before the tests).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server_process import REPO_ROOT

pytestmark = pytest.mark.e2e
BUILD = REPO_ROOT / ".cache" / "clients"
INFERD_PROTOS = sorted(
    str(p.relative_to(REPO_ROOT / "protos")) for p in (REPO_ROOT / "protos/inferd/v1").glob("*.proto")
)
HEALTH = "grpc/health/v1/health.proto"


def _plugins(language: str) -> list[str] | None:
    """protoc's output flags for a language, or None when its plugin is not there."""
    if language == "go":
        go, grpc = BUILD / "go/bin/protoc-gen-go", BUILD / "go/bin/protoc-gen-go-grpc"
        if not (go.exists() and grpc.exists()):
            return None
        return [
            f"--plugin=protoc-gen-go={go}",
            "--go_out={out}",
            f"--plugin=protoc-gen-go-grpc={grpc}",
            "--go-grpc_out={out}",
        ]
    if language == "java":
        plugin = shutil.which("grpc_java_plugin") or "/usr/bin/grpc_java_plugin"
        if not Path(plugin).exists():
            return None
        return [f"--plugin=protoc-gen-grpc-java={plugin}", "--java_out={out}", "--grpc-java_out={out}"]
    plugin = shutil.which("grpc_cpp_plugin")
    if plugin is None:
        return None
    return ["--cpp_out={out}", "--grpc_out={out}", f"--plugin=protoc-gen-grpc={plugin}"]


def _generate(language: str, out: Path) -> None:
    flags = _plugins(language)
    assert flags is not None
    out.mkdir(parents=True)
    command = ["protoc", "-I", "protos", *(f.format(out=out) for f in flags), *INFERD_PROTOS, HEALTH]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=120)


def _differences(left: Path, right: Path) -> list[str]:
    """Files that differ or exist on one side only, below two folders."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(f"{prefix}{name} (one side only)" for name in cmp.left_only + cmp.right_only)
        found.extend(f"{prefix}{name}" for name in cmp.diff_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(left, right), "")
    return found


@pytest.mark.parametrize("language", ["go", "java", "cpp"])
def test_stubs_are_the_same_bytes_generated_twice(language: str, tmp_path: Path) -> None:
    if shutil.which("protoc") is None or _plugins(language) is None:
        if os.environ.get("INFERD_REQUIRE_CLIENTS") == "1":
            pytest.fail(f"{language} client: protoc or its plugin is missing (run `make clients`)")
        pytest.skip(f"{language}: protoc or its plugin is missing (run `make clients`)")
    _generate(language, tmp_path / "a")
    _generate(language, tmp_path / "b")
    assert _differences(tmp_path / "a", tmp_path / "b") == []


@pytest.mark.parametrize(("language", "built"), [("java", "java/gen"), ("cpp", "cpp/gen")])
def test_the_built_stubs_are_those_of_the_current_protos(language: str, built: str, tmp_path: Path) -> None:
    tree = BUILD / built
    if not tree.is_dir() or shutil.which("protoc") is None or _plugins(language) is None:
        if os.environ.get("INFERD_REQUIRE_CLIENTS") == "1":
            pytest.fail(f"{language} client: not built (run `make clients`)")
        pytest.skip(f"{language}: not built (run `make clients`)")
    fresh = tmp_path / "fresh"
    _generate(language, fresh)
    stale = []
    for path in sorted(p for p in fresh.rglob("*") if p.is_file()):
        relative = path.relative_to(fresh)
        if not (tree / relative).is_file() or (tree / relative).read_bytes() != path.read_bytes():
            stale.append(str(relative))
    assert stale == [], f"{language}: stubs in {tree} differ from what protos/ generates now: {stale}"
