"""The flame graph scenario's pure parts: the py-spy command, collapsed stacks to an SVG that leaves out
parked threads, and a clear skip without py-spy."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import bench.flamegraph as flamegraph
from bench.flamegraph_svg import parse, render
from bench.run import selected_scenarios


def test_the_sampler_never_pauses_the_server_unless_native_frames_are_asked_for(tmp_path: Path) -> None:
    command = flamegraph.py_spy_command("py-spy", 4242, 9.6, 250, tmp_path / "stacks.txt")
    assert command[:2] == ["py-spy", "record"]
    assert command[command.index("--pid") + 1] == "4242"
    assert command[command.index("--duration") + 1] == "10"  # py-spy takes whole seconds
    assert command[command.index("--rate") + 1] == "250"
    assert command[command.index("--format") + 1] == "raw"
    assert "--threads" in command and "--nonblocking" in command and "--native" not in command
    native = flamegraph.py_spy_command("py-spy", 4242, 10, 250, tmp_path / "stacks.txt", native=True)
    assert "--native" in native and "--nonblocking" not in native  # unwinding C frames needs a pause


STACKS = [
    "thread (1): MainThread;run_forever (base_events.py:607);_predict (inference.py:199) 30",
    "thread (1): MainThread;run_forever (base_events.py:607);select (selectors.py:468);epoll_wait (libc.so.6) 10",
    "thread (2): Thread-1 (_poll_wrapper);Thread.run (threading.py:982);epoll_wait (libc.so.6) 50",
    "thread (3): mlp_on-v1_0;_worker (concurrent/futures/thread.py:81);"
    "_queue_SimpleQueue_get (_queuemodule.c.h:177) 40",
    "thread (2): Thread-1 (_poll_wrapper);Thread.run (threading.py:982);grpc_call_start_batch (cygrpc.so) 10",
    "not a stack line",
]


def test_parked_threads_are_left_out_but_the_event_loops_own_waits_stay() -> None:
    root, dropped = parse(STACKS)
    assert dropped == 90  # the poller in epoll_wait and the idle executor worker
    assert root.count == 50
    main = root.children["thread (1): MainThread"]
    assert main.count == 40  # its epoll_wait is part of serving: kept
    assert root.children["thread (2): Thread-1 (_poll_wrapper)"].count == 10  # the poller at work: kept


def test_without_native_frames_a_thread_inside_c_code_alone_counts_as_parked() -> None:
    # gRPC's poller shows only Thread.run without --native: with it, 97 % of such samples were epoll_wait
    root, dropped = parse(
        ["thread (2): Thread-1 (_poll_wrapper);Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982) 7"]
    )
    assert dropped == 7 and root.count == 0


def test_each_frame_is_drawn_as_wide_as_its_share_with_its_name_and_share_on_hover() -> None:
    root, _ = parse(STACKS)
    svg = render(root, "a title")
    assert svg.startswith("<svg") and "a title" in svg
    assert "_predict (inference.py:199) (30 samples, 60.00%)" in svg
    widths = {
        title: float(width) for title, width in re.findall(r"<title>([^<]+)</title><rect [^>]*width=\"([\d.]+)\"", svg)
    }
    assert widths["all (50 samples, 100.00%)"] == 1200.0
    assert widths["thread (1): MainThread (40 samples, 80.00%)"] == 960.0


def test_without_py_spy_the_scenario_says_so_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(flamegraph.shutil, "which", lambda *args, **kwargs: None)
    started: list[object] = []
    monkeypatch.setattr(flamegraph.subprocess, "Popen", lambda *args, **kwargs: started.append(args))
    args = argparse.Namespace(port=1, flamegraph_seconds=1.0, flamegraph_rate=10, flamegraph_native=False)
    flamegraph.run(args, tmp_path)
    assert "py-spy is not installed" in capsys.readouterr().out
    assert started == []


def test_a_plain_bench_run_includes_the_flame_graph() -> None:
    assert "flamegraph" in selected_scenarios("all", peers=False)
