"""Collapsed stacks (py-spy's ``--format raw``: ``frame;frame;… count`` per line) to a flame graph SVG,
leaving out samples of threads that were only waiting.

py-spy's own SVG counts every thread's every sample, and on this machine it could not tell a thread
blocked in ``epoll_wait`` from one at work: two thirds of a loaded server's samples were gRPC's poller,
an idle executor worker and the metrics endpoint's HTTP thread, each parked in a wait. Here a sample
whose innermost frame is such a wait (:data:`WAITS`) is dropped unless it is on the event loop's thread
(whose waits in ``epoll_wait`` are part of serving), so widths are shares of the time threads worked.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field

#: innermost frames of a thread that is parked, not working (libc and CPython names as py-spy prints them)
WAITS = (
    "epoll_wait", "poll (libc", "select_poll_poll", "_queue_SimpleQueue_get", "sem_clockwait", "sem_wait",
    "pthread_cond_wait", "pthread_cond_timedwait", "futex", "accept (libc", "nanosleep",
    "_worker (concurrent/futures/thread.py", "serve_forever",
    # without --native, gRPC's poller shows no frame below Thread.run (with it, 97 % of those samples
    # were epoll_wait): a thread inside C code alone counts as parked
    "Thread.run (threading.py",
)  # fmt: skip
MAIN_THREAD = "MainThread"
WIDTH, ROW = 1200, 16


@dataclass
class Node:
    name: str
    count: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def parse(lines: Iterable[str]) -> tuple[Node, int]:
    """A tree of frames from collapsed stacks, and how many samples were dropped as waiting."""
    root, dropped = Node("all"), 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames, count = stack.split(";"), int(count_text)
        if MAIN_THREAD not in frames[0] and any(wait in frames[-1] for wait in WAITS):
            dropped += count
            continue
        node = root
        node.count += count
        for frame in frames:
            node = node.children.setdefault(frame, Node(frame))
            node.count += count
    return root, dropped


def _color(name: str) -> str:
    if "(libc" in name or "[kernel" in name or "vmlinux" in name:
        return "rgb(230,120,80)"  # system
    if "cygrpc" in name or "grpc" in name:
        return "rgb(120,170,230)"  # gRPC core
    if "onnxruntime" in name:
        return "rgb(140,200,120)"  # the model
    if ".py:" in name:
        return "rgb(250,200,90)"  # Python code
    return "rgb(220,170,140)"  # CPython and other native code


def _depth(node: Node) -> int:
    return 1 + max((_depth(child) for child in node.children.values()), default=0)


def render(root: Node, title: str) -> str:
    """The SVG: one row per stack depth, the root at the bottom; hover a frame for its name and share."""
    height = _depth(root) * ROW + 40
    rects: list[str] = []

    def walk(node: Node, x: float, level: int) -> None:
        width = node.count / root.count * WIDTH
        if width < 0.3:
            return
        y = height - (level + 1) * ROW
        label = html.escape(node.name)
        text = html.escape(node.name[: int(width / 7)]) if width > 35 else ""
        rects.append(
            f"<g><title>{label} ({node.count} samples, {100 * node.count / root.count:.2f}%)</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW - 1}" fill="{_color(node.name)}"/>'
            f'<text x="{x + 3:.1f}" y="{y + ROW - 4}">{text}</text></g>'
        )
        for child in sorted(node.children.values(), key=lambda n: n.name):
            walk(child, x, level + 1)
            x += child.count / root.count * WIDTH

    walk(root, 0.0, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" '
        f'font-size="11"><text x="4" y="18" font-size="14">{html.escape(title)}</text>\n'
        + "\n".join(rects)
        + "\n</svg>\n"
    )
