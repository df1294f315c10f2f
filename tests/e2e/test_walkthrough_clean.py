"""Following the README leaves the checkout as it was: everything it writes there is ignored by git.

The test copies the checkout's files (tracked, and untracked but not ignored: the working tree as it
is, with its .gitignore) into a fresh git repository, runs there what the README tells people to run
in the checkout — `make examples`' recipe, the `python -c` set-up lines and every documented `inferd`,
`grpcurl` and `curl` line — and compares `git status` before and after.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server_process import REPO_ROOT, ServerProcess
from tests.e2e.test_readme_commands import CLI_LINES, CURL_LINES, GRPCURL_LINES, commands, run_shell

pytestmark = pytest.mark.e2e

#: pages whose commands run in a folder of the reader's own, not in the checkout (they say so)
OWN_FOLDER_PAGES = ("docs/recipe-pytorch.md",)


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60)
    return result.stdout


def copy_of_checkout(destination: Path) -> Path:
    """The working tree's non-ignored files in a new repository, all staged (so only new changes show)."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO_ROOT).split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git("init", "-q", cwd=destination)
    git("add", "-A", cwd=destination)
    return destination


def in_checkout(param: object) -> bool:
    return not str(getattr(param, "id", "")).startswith(OWN_FOLDER_PAGES)


def walkthrough_lines() -> list[str]:
    python = shlex.quote(sys.executable) + " "
    setup = [p.values[0].replace("python ", python, 1) for p in commands("python -c") if in_checkout(p)]
    documented = [p.values[0] for p in (*CLI_LINES, *GRPCURL_LINES, *CURL_LINES) if in_checkout(p)]
    return [f"{python}-m examples.build --output models", *setup, *documented]


def test_the_readme_walkthrough_leaves_git_status_clean(
    inferd_server: ServerProcess, inferd_command: str, grpcurl: str, tmp_path: Path
) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    checkout = copy_of_checkout(tmp_path / "checkout")
    before = git("status", "--porcelain", "--untracked-files=all", cwd=checkout)
    failed = []
    for line in walkthrough_lines():
        result = run_shell(line, inferd_server, cwd=checkout)
        if result.returncode != 0:
            failed.append(f"{line}\nexit {result.returncode}: {result.stderr[-500:]}")
    assert not failed, "documented commands failed:\n" + "\n".join(failed)
    assert (checkout / "models" / "mlp_ranker" / "config.pbtxt").is_file(), "make examples' recipe ran"
    after = git("status", "--porcelain", "--untracked-files=all", cwd=checkout)
    assert after == before, f"the walkthrough left files git does not ignore:\n{after}"


def test_the_walkthrough_covers_the_files_the_readme_writes() -> None:
    lines = "\n".join(walkthrough_lines())
    assert "np.save('features.npy'" in lines and "--save outputs" in lines
    assert len(lines.splitlines()) >= 20
