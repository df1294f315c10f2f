"""Health watchers cannot wedge the server: a raw HTTP/2 client that opens Watch and grants no
flow-control window neither blocks model control nor holds SIGTERM (while a call still running keeps
its grace period), and an ordinary open Watch ends at once when the server stops instead of costing
the grace period."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferd import Client
from inferd.control import ModelControl
from tests.e2e.server_process import ServerProcess
from tests.support import SCALE_CONFIG, eventually, scale_model, write_model

pytestmark = pytest.mark.e2e
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

DRAIN_S = 0.5
#: the acceptance bound: SIGTERM → exit within the drain window and a second
EXIT_BOUND_S = DRAIN_S + 1.0

#: a model whose call on x = 7 runs until the test creates RELEASE (it says so by creating RUNNING)
HELD_MODEL = """
import pathlib
import time

import numpy as np

class Model:
    def infer(self, inputs):
        if float(np.asarray(inputs["x"]).flat[0]) == 7.0:
            pathlib.Path(RUNNING).touch()
            end = time.monotonic() + 60
            while not pathlib.Path(RELEASE).exists() and time.monotonic() < end:
                time.sleep(0.01)
        return {"y": np.asarray(inputs["x"])}
"""


class WindowlessWatcher:
    """A raw HTTP/2 client (h2) that opens grpc.health.v1 Watch streams with a flow-control window of
    zero (SETTINGS_INITIAL_WINDOW_SIZE = 0, no WINDOW_UPDATE ever): the server can send headers but
    not one byte of a message. It still answers the server's SETTINGS and PINGs, as a live peer does."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._sock.settimeout(None)
        self._authority = f"127.0.0.1:{port}"
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self._conn = h2.connection.H2Connection(config)
        self._conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
        )
        self._lock = threading.Lock()
        self.events: list[h2.events.Event] = []
        self.closed = threading.Event()
        with self._lock:
            self._conn.initiate_connection()
            self._sock.sendall(self._conn.data_to_send())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def watch(self, service: str) -> int:
        """Open Watch on ``service`` (gRPC framing: a 5-byte prefix, then the request); its stream id."""
        request = health_pb2.HealthCheckRequest(service=service).SerializeToString()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Watch"),
            (":authority", self._authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        with self._lock:
            stream_id = self._conn.get_next_available_stream_id()
            self._conn.send_headers(stream_id, headers)
            self._conn.send_data(stream_id, b"\x00" + len(request).to_bytes(4, "big") + request, end_stream=True)
            self._sock.sendall(self._conn.data_to_send())
        return stream_id

    def _read(self) -> None:
        try:
            while data := self._sock.recv(65536):
                with self._lock:
                    events = self._conn.receive_data(data)
                    self._sock.sendall(self._conn.data_to_send())
                self.events.extend(events)
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed.set()

    def answered(self, stream_id: int) -> bool:
        """The server sent this stream's response headers (the call reached the handler)."""
        return any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id for e in self.events)

    def data_received(self) -> int:
        return sum(len(e.data) for e in self.events if isinstance(e, h2.events.DataReceived))

    def close(self) -> None:
        self._sock.close()
        self._reader.join(10)


@pytest.fixture()
def repository(tmp_path: Path) -> Path:
    write_model(tmp_path / "repo", "m", SCALE_CONFIG, {1: scale_model(2)})
    return tmp_path / "repo"


def _sigterm_and_time_exit(server: ServerProcess, timeout: float = 60) -> float:
    sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout) == 0
    return time.monotonic() - sent


def test_a_watcher_with_no_window_blocks_neither_model_control_nor_sigterm(repository: Path, tmp_path: Path):
    server = ServerProcess(repository, tmp_path / "server", ["--drain-seconds", str(DRAIN_S)]).wait_ready()
    watcher = WindowlessWatcher(server.port)
    try:
        streams = [watcher.watch("model/m"), watcher.watch("")]
        eventually(lambda: all(watcher.answered(s) for s in streams), what="both Watch calls reached the server")
        with Client(server.address, timeout=10) as client:
            control = ModelControl(client)
            control.unload("m", timeout=10)  # publishes NOT_SERVING to model/m's stalled watcher
            status = control.load("m", timeout=10)  # and SERVING again
            assert status.name == "m"
            assert client.health("model/m") == "SERVING"
        assert watcher.data_received() == 0, "the window held: the server could send no message"
        took = _sigterm_and_time_exit(server)
    finally:
        watcher.close()
        server.terminate()
    log = server.log()
    assert took < EXIT_BOUND_S, f"SIGTERM took {took:.2f} s with a windowless watcher open\n{log[-3000:]}"
    assert "shutdown: cancelled 2 health watch(es) whose clients read nothing" in log
    assert "expired" not in log


def _port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_call_still_running_keeps_its_grace_period_while_windowless_watchers_are_cut(tmp_path: Path):
    running, release = tmp_path / "running", tmp_path / "release"
    source = HELD_MODEL.replace("RUNNING", repr(str(running))).replace("RELEASE", repr(str(release)))
    write_model(tmp_path / "repo", "m", SCALE_CONFIG + 'execution: "thread"\n', {1: source})
    args = ["--drain-seconds", str(DRAIN_S), "--grace-seconds", "30"]
    server = ServerProcess(tmp_path / "repo", tmp_path / "server", args).wait_ready()
    watcher = WindowlessWatcher(server.port)
    answers: list[str] = []

    def call() -> None:
        with Client(server.address, timeout=60) as client:
            answers.append(str(client.predict("m", {"x": np.full((1, 4), 7.0, np.float32)})["y"][0, 0]))

    caller = threading.Thread(target=call, daemon=True)
    try:
        stream = watcher.watch("model/m")
        eventually(lambda: watcher.answered(stream), what="the Watch reached the server")
        caller.start()
        eventually(running.exists, what="the call is running in the model")
        server.process.send_signal(signal.SIGTERM)
        # the port closes once the drain and the refusals are over: the stop has begun, and the watcher
        # (given NOT_SERVING at SIGTERM) has given up; the running call must still be waited for
        eventually(lambda: _port_closed(server.port), what="the port closed")
        assert server.process.poll() is None and not answers
        release.touch()
        caller.join(30)
        assert answers == ["7.0"]
        assert server.process.wait(30) == 0
    finally:
        release.touch()
        watcher.close()
        server.terminate()
    log = server.log()
    assert "shutdown: cancelled 1 health watch(es) whose clients read nothing" in log
    assert "expired" not in log


def test_an_open_watch_ends_with_not_serving_and_does_not_hold_the_grace_period(repository: Path, tmp_path: Path):
    args = ["--grace-seconds", "30"]
    server = ServerProcess(repository, tmp_path / "server", args).wait_ready()
    seen: list[int] = []
    ended: list[grpc.StatusCode] = []
    channel = grpc.insecure_channel(server.address)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))

    def read() -> None:
        try:
            for reply in watch:
                seen.append(int(reply.status))
            ended.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            ended.append(err.code())

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        eventually(lambda: seen == [SERVING], what="the Watch streamed SERVING")
        took = _sigterm_and_time_exit(server)
        reader.join(10)
    finally:
        channel.close()
        server.terminate()
    log = server.log()[-3000:]
    assert took < 5, f"SIGTERM took {took:.2f} s with a Watch open (grace 30 s)\n{log}"
    assert seen == [SERVING, NOT_SERVING], log
    assert ended == [grpc.StatusCode.OK], log  # the server ended the stream, not the connection's close
