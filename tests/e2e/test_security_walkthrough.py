"""docs/security.md's quick start, run verbatim: dev CA and server certificate with openssl, ``inferd token new``,
the auth config, ``inferd serve`` with TLS and the config, then grpcurl Predict over TLS with the token (and
without it: Unauthenticated).

The block is taken from the document and run as one bash script (``-e``) in a fresh folder whose ``models``
is the example repository. The only edits: the port (8001 → a free one) and ``--metrics-port 0`` on the serve
line, so that runs on a shared machine do not collide.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server_process import REPO_ROOT, find_tool, tool_env

pytestmark = pytest.mark.e2e

DOCUMENT = REPO_ROOT / "docs" / "security.md"
TIMEOUT_S = 300


def quick_start() -> str:
    """The first ```sh block after the "Quick start" heading."""
    text = DOCUMENT.read_text(encoding="utf-8")
    section = text[text.index("## Quick start") :]
    blocks = fenced_blocks_in(section)
    assert blocks, "docs/security.md has no ```sh block in its quick start"
    return blocks[0]


def fenced_blocks_in(markdown: str) -> list[str]:
    """The ```sh blocks of some Markdown text."""
    lines = markdown.splitlines()
    blocks: list[list[str]] = []
    inside = False
    for line in lines:
        if line.strip().startswith("```"):
            if inside:
                inside = False
                continue
            inside = line.strip() == "```sh"
            if inside:
                blocks.append([])
            continue
        if inside:
            blocks[-1].append(line)
    return ["\n".join(block) for block in blocks]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_quick_start_runs_verbatim(tmp_path: Path, example_repository: Path):
    find_tool("grpcurl")
    find_tool("openssl")
    script = quick_start()
    assert "inferd serve --repository models --port 8001" in script and "127.0.0.1:8001" in script
    port = _free_port()
    edited = script.replace("8001", str(port)).replace("inferd serve ", "inferd serve --metrics-port 0 ")
    (tmp_path / "models").symlink_to(example_repository, target_is_directory=True)
    (tmp_path / "quick-start.sh").write_text(edited)
    process = subprocess.Popen(
        ["bash", "-e", "quick-start.sh"],
        cwd=tmp_path,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the quick start did not finish in {TIMEOUT_S} s:\n{output[-4000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-4000:]
    assert "TLS on" in output and "access control from auth.yaml: 1 token(s)" in output, output[-4000:]
    assert '"model_name": "tabular_torch"' in output and '"name": "probabilities"' in output, output[-4000:]
    assert "Code: Unauthenticated" in output
    assert "no credentials: send 'authorization: Bearer <token>' metadata" in output
    token = (tmp_path / "token.txt").read_text().splitlines()[0]
    assert token not in output  # neither the server nor the tools print it
    assert token not in (tmp_path / "auth.yaml").read_text()
