"""docs/recipe-pytorch.md, run as written: export script → repository → real server → CLI.

The recipe's fenced blocks run in document order in a temporary folder: a ```python or ```protobuf
block whose first line is ``# <path>`` is written to that path; each line of a ```sh block runs in a
shell there, except ``inferd serve``, where the server starts (a subprocess, as an operator would)
on the folder's repository. Every command must exit 0, so the page cannot drift from the code.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.server_process import REPO_ROOT, ServerProcess, tool_env

pytestmark = pytest.mark.e2e

RECIPE = REPO_ROOT / "docs" / "recipe-pytorch.md"
README_ADDRESS = "127.0.0.1:8001"
COMMAND_TIMEOUT_S = 120
_FENCE = re.compile(r"^```(\w*)\s*$")
_FILE_LANGUAGES = ("python", "protobuf")


@dataclass(frozen=True)
class Block:
    language: str
    line: int
    text: str


def recipe_blocks(path: Path = RECIPE) -> Iterator[Block]:
    """The fenced blocks of a Markdown file, in order, with their first line's number."""
    language: str | None = None
    start = 0
    lines: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = _FENCE.match(line.strip())
        if fence and language is None:
            language, start, lines = fence.group(1), number + 1, []
        elif fence:
            yield Block(language or "", start, "\n".join(lines) + "\n")
            language = None
        elif language is not None:
            lines.append(line)


def _file_target(block: Block) -> str | None:
    first = block.text.splitlines()[0] if block.text.strip() else ""
    return first[2:].strip() if first.startswith("# ") and block.language in _FILE_LANGUAGES else None


def test_the_recipe_has_the_steps_it_promises() -> None:
    blocks = list(recipe_blocks())
    files = {_file_target(b) for b in blocks} - {None}
    assert {"export_model.py", "models/classifier/config.pbtxt"} <= files
    commands = "\n".join(b.text for b in blocks if b.language == "sh")
    for needed in ("python export_model.py 1", "inferd serve", "inferd predict", "inferd traffic", "inferd load"):
        assert needed in commands
    python = "\n".join(b.text for b in blocks if b.language == "python")
    assert "dynamic_shapes" in python and "torch.jit" in python


def _repository(serve_line: str) -> str:
    """The folder an ``inferd serve --repository DIR`` line serves."""
    tokens = serve_line.split()
    assert "--repository" in tokens, f"the recipe's serve line names no repository: {serve_line}"
    return tokens[tokens.index("--repository") + 1]


def _run(line: str, cwd: Path, server: ServerProcess | None) -> subprocess.CompletedProcess[str]:
    env = tool_env()
    if server is not None:
        line = line.replace(README_ADDRESS, server.address)
        env["INFERD_ADDRESS"] = server.address
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )


def test_the_pytorch_recipe_runs_end_to_end(tmp_path: Path) -> None:
    server: ServerProcess | None = None
    outputs: dict[str, str] = {}
    try:
        for block in recipe_blocks():
            target = _file_target(block)
            if target is not None:
                (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / target).write_text(block.text, encoding="utf-8")
                continue
            if block.language != "sh":
                continue
            for offset, raw in enumerate(block.text.splitlines()):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("inferd serve"):
                    assert server is None, "the recipe starts the server twice"
                    server = ServerProcess(tmp_path / _repository(line), tmp_path / ".server").wait_ready()
                    continue
                done = _run(line, tmp_path, server)
                where = f"{RECIPE.name}:{block.line + offset}: {line}"
                assert done.returncode == 0, f"{where} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
                outputs[line] = done.stdout
    finally:
        if server is not None:
            server.terminate()
    assert server is not None, "the recipe never starts the server"
    listing = next(out for line, out in outputs.items() if line == "inferd models")
    assert "torch" in listing and "READY" in listing, listing
    assert "matches onnxruntime" in listing, listing
