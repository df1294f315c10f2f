"""One worker process: its command line, its start, its stderr passed through with a prefix, and the
restart backoff."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

#: the first restart waits this long, then doubling ...
BACKOFF_FIRST_S = 0.5
#: ... up to this ...
BACKOFF_MAX_S = 10.0
#: ... and a worker that stayed up this long starts again from the first delay
BACKOFF_RESET_S = 30.0
#: stderr lines kept per worker, to quote when it fails before serving
TAIL_LINES = 20

#: ``inferd serve`` flags the supervisor handles itself: never passed to a worker
SUPERVISOR_DESTS = frozenset(
    {
        "workers",
        "pin_workers",
        "workers_state_file",
        "port",
        "port_file",
        "reuse_port",
        "metrics_port",
        "metrics_port_file",
        "metrics_host",
        "admin_port",
    }
)


class Backoff:
    """0.5 s doubling to 10 s between restarts; back to 0.5 s after a run of 30 s or more."""

    def __init__(self) -> None:
        self._next = BACKOFF_FIRST_S

    def delay(self, uptime_s: float) -> float:
        """The wait before the next start, given how long the worker that just exited was up."""
        if uptime_s >= BACKOFF_RESET_S:
            self._next = BACKOFF_FIRST_S
        delay = self._next
        self._next = min(self._next * 2, BACKOFF_MAX_S)
        return delay


def _option_nargs(action: argparse.Action) -> int:
    """Tokens an option consumes after its name (serve's options take 0 or 1)."""
    return 0 if action.nargs == 0 else 1


def strip_options(parser: argparse.ArgumentParser, tokens: Sequence[str], drop: frozenset[str]) -> list[str]:
    """``tokens`` (an ``inferd serve`` command line after ``serve``) without the options whose dest is in
    ``drop``. Options are resolved the way argparse does (``--opt=value``, ``-pVALUE``, unique prefixes), so
    ``--work 2`` is dropped like ``--workers 2``."""
    by_name: dict[str, argparse.Action] = dict(parser._option_string_actions)
    longs = [name for name in by_name if name.startswith("--")]
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "--" or not token.startswith("-") or token == "-":
            kept.append(token)
            continue
        name, attached = token, None
        if token.startswith("--") and "=" in token:
            name, attached = token.split("=", 1)
        action = by_name.get(name)
        if action is None and token.startswith("--"):
            matches = [n for n in longs if n.startswith(name)]
            action = by_name[matches[0]] if len(matches) == 1 else None
        if action is None and not token.startswith("--") and len(token) > 2:
            action = by_name.get(token[:2])  # -p8001
            attached = token[2:] if action is not None else None
        values: list[str] = []
        if action is not None and attached is None:
            count = _option_nargs(action)
            values = list(tokens[i : i + count])
            i += count
        if action is not None and action.dest in drop:
            continue
        kept.append(token)
        kept.extend(values)
    return kept


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What makes worker ``index``'s command line."""

    index: int
    serve_args: tuple[str, ...]
    port: int
    control_socket: str
    supervisor_socket: str
    metrics_port_file: str | None
    #: --admin-port was given: the workers' main port must not serve model control
    control_elsewhere: bool


def worker_argv(spec: WorkerSpec, python: str = sys.executable) -> list[str]:
    """``python -m server serve <the user's flags> --port P --reuse-port`` and the hidden worker flags."""
    argv = [python, "-m", "server", "serve", *spec.serve_args, "--port", str(spec.port), "--reuse-port"]
    if spec.metrics_port_file is not None:  # on 127.0.0.1 (the default host): only the supervisor scrapes it
        argv += ["--metrics-port", "0", "--metrics-port-file", spec.metrics_port_file]
    else:  # the supervisor serves no metrics: nor do the workers (not on the default port either)
        argv.append("--no-metrics")
    argv += [
        "--worker-index",
        str(spec.index),
        "--worker-control",
        f"unix:{spec.control_socket}",
        "--supervisor",
        f"unix:{spec.supervisor_socket}",
    ]
    if spec.control_elsewhere:
        argv.append("--worker-control-elsewhere")
    return argv


class WorkerProcess:
    """A started worker; its stderr lines go to ours as ``worker i: …`` and the last ones are kept."""

    def __init__(self, index: int, process: asyncio.subprocess.Process) -> None:
        self.index = index
        self.process = process
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._pump = asyncio.get_running_loop().create_task(self._pass_through())

    @classmethod
    async def start(cls, index: int, argv: Sequence[str], cpu: int | None) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # its own process group: a terminal's Ctrl-C reaches the supervisor only, which then stops the
            # workers in order (one SIGTERM each, not a second signal that would skip their drain)
            process_group=0,
        )
        if cpu is not None:  # right after the fork, long before the worker starts its engines' threads
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(process.pid, {cpu})
        return cls(index, process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _pass_through(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        prefix = f"worker {self.index}: "
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.tail.append(text)
            sys.stderr.write(prefix + text + "\n")
            sys.stderr.flush()

    async def wait(self) -> int:
        """The exit code (negative: killed by that signal), once its stderr is fully passed through."""
        code = await self.process.wait()
        await asyncio.gather(self._pump, return_exceptions=True)
        return code

    def signal(self, sig: int) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def error(self) -> str:
        """What the worker said last: its ``inferd: …`` line if it printed one, else its last line."""
        for line in reversed(self.tail):
            if line.startswith("inferd: "):
                return line.removeprefix("inferd: ")
        return self.tail[-1] if self.tail else "no output"
