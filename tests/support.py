"""A real inferd server on 127.0.0.1:0 in a background thread, for tests.

The server runs on its own event loop so sync clients, async clients (on the test's loop) and
grpcurl can all talk to it; ``call`` runs a coroutine on the server's loop to reach its internals.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from textwrap import dedent
from typing import Any, TypeVar

from server.app import InferdServer, ServerOptions

T = TypeVar("T")

#: how long ``eventually`` waits by default: generous, since CI machines are shared and slow
EVENTUALLY_S = 30.0
_POLL_S = 0.005


def eventually(condition: Callable[[], T], *, timeout: float = EVENTUALLY_S, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail after ``timeout``.

    For state the test cannot await directly (another thread, another process). The one polling loop
    of the test suite: every test that waits for a condition uses this or :func:`eventually_async`.
    """
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"not true within {timeout:g} s: {what or condition}")
        time.sleep(_POLL_S)


async def eventually_async(
    condition: Callable[[], T | Awaitable[T]], *, timeout: float = EVENTUALLY_S, what: str = ""
) -> T:
    """:func:`eventually` for a coroutine: yields to the event loop between polls. ``condition`` may be
    async (e.g. an RPC that reads the server's counters)."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"not true within {timeout:g} s: {what or condition}")
        await asyncio.sleep(_POLL_S)


class ServerThread:
    def __init__(self, repository: Path, **options: Any) -> None:
        self.options = ServerOptions(repository=repository, host="127.0.0.1", port=0, **options)
        self.loop = asyncio.new_event_loop()
        self.server: InferdServer | None = None
        self._thread = threading.Thread(target=self._run, name="inferd-test-server", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = InferdServer(self.options)
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._started.wait(120):
            raise TimeoutError("the test server did not start in 120 s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.server is not None and self._error is None:
            self.call(self.server.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_model(
    root: Path, name: str, config: str, versions: dict[int, str] | None = None, artifact: str = "model.py"
) -> Path:
    """Write ``root/name/config.pbtxt`` and one ``model.py`` (or other artefact text) per version."""
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(dedent(config))
    for version, source in (versions or {}).items():
        (model_dir / str(version)).mkdir(exist_ok=True)
        (model_dir / str(version) / artifact).write_text(dedent(source))
    return model_dir


SCALE_MODEL = """
import numpy as np

class Model:
    def infer(self, inputs):
        return {"y": np.asarray(inputs["x"], dtype=np.float32) * FACTOR}
"""

SCALE_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
"""


def scale_model(factor: float) -> str:
    """A Python model that multiplies x by ``factor`` (tells versions apart in routing tests)."""
    return SCALE_MODEL.replace("FACTOR", repr(float(factor)))


#: A python model answering, for every row, the id of the engine call that ran it and that call's row count,
#: so a response shows which batch it was in (batching tests, the OIP mixed-batch test).
PROBE_MODEL = """
import itertools
import threading
import numpy as np

class Model:
    def __init__(self):
        self._calls = itertools.count(1)
        self._lock = threading.Lock()

    def infer(self, inputs):
        x = np.asarray(inputs["x"], dtype=np.float32)
        with self._lock:
            call = next(self._calls)
        rows = x.shape[0]
        return {
            "y": x * 2,
            "call": np.full((rows, 1), call, dtype=np.int64),
            "batch_rows": np.full((rows, 1), rows, dtype=np.int64),
        }
"""
