"""``inferd serve --access-log -`` and ``inferd stats --watch``, run as an operator runs them."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from inferd import Client
from server.cli.stats_watch import CLEAR_SCREEN
from server.telemetry.access_log import FIELDS
from tests.e2e.server_process import REPO_ROOT, ServerProcess, find_tool, tool_env
from tests.support import SCALE_CONFIG, eventually, scale_model, write_model

pytestmark = pytest.mark.e2e

X = np.ones((1, 4), np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("watch-repo")
    write_model(root, "scale", SCALE_CONFIG + "dynamic_batching { }\n", {1: scale_model(2)})
    process = ServerProcess(root, tmp_path_factory.mktemp("watch-server"), ["--access-log", "-"]).wait_ready()
    yield process
    code = process.terminate()
    assert code == 0, process.log()[-4000:]


def access_lines(server: ServerProcess) -> list[dict[str, object]]:
    """The JSON lines among the server's output (stdout and stderr share its log file)."""
    return [json.loads(line) for line in server.log().splitlines() if line.startswith('{"time"')]


def test_serve_with_access_log_dash_writes_json_lines_to_stdout(server: ServerProcess) -> None:
    with Client(server.address) as client:
        client.predict("scale", {"x": X}, request_id="e2e-access-1")
    line = eventually(
        lambda: [line for line in access_lines(server) if line["request_id"] == "e2e-access-1"],
        what="the access log line on stdout",
    )[0]
    assert tuple(line) == FIELDS
    assert (line["method"], line["model"], line["version"], line["code"]) == ("Predict", "scale", 1, "OK")


@pytest.fixture()
def load(server: ServerProcess) -> Iterator[None]:
    """Predict calls, one after another, until the test is over."""
    stop = threading.Event()
    sent = threading.Event()

    def run() -> None:
        with Client(server.address) as client:
            while not stop.is_set():
                client.predict("scale", {"x": X})
                sent.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert sent.wait(30), "no request answered"
    yield
    stop.set()
    thread.join(30)


def watch_command(server: ServerProcess, *args: str) -> list[str]:
    return [find_tool("inferd"), "stats", "--watch", "0.2", *args, "--address", server.address]


def test_stats_watch_redraws_a_table_with_each_versions_request_rate(server: ServerProcess, load: None) -> None:
    result = subprocess.run(
        watch_command(server, "--count", "2"), cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    frames = [frame for frame in result.stdout.split("inferd stats ") if frame.strip()]
    assert len(frames) == 2, result.stdout
    assert CLEAR_SCREEN not in result.stdout  # piped: plain tables, one after another
    for frame in frames:
        header = frame.splitlines()[1].split()
        assert header[:4] == ["MODEL", "VERSION", "ENGINE", "REQ/S"]
        row = next(line.split() for line in frame.splitlines() if line.startswith("scale "))
        assert row[:3] == ["scale", "1", "python"]
        assert float(row[3]) > 0, frame


def test_stats_watch_on_a_terminal_clears_the_screen_between_frames(server: ServerProcess, load: None) -> None:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        watch_command(server, "--count", "1"), cwd=REPO_ROOT, env=tool_env(), stdout=follower, stderr=subprocess.PIPE
    )
    os.close(follower)
    output = bytearray()
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        output.extend(chunk)
    os.close(leader)
    assert process.wait(60) == 0, process.stderr.read() if process.stderr else ""
    text = output.decode()
    assert text.startswith(CLEAR_SCREEN) and "scale" in text


def test_stats_watch_names_a_missing_model_and_exits_nonzero(server: ServerProcess) -> None:
    result = subprocess.run(
        [*watch_command(server, "--count", "1"), "no_such_model"],
        cwd=REPO_ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no_such_model" in result.stderr
