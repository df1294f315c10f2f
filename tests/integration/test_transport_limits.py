"""Transport limits against a real server: the PredictStream cap per connection, concurrent streams per
connection, connection age (with its grace) and idle, and keepalive enforcement seen from a raw HTTP/2
client (the ``h2`` package), which can do what gRPC's own clients never do: flood pings, ignore pings.

Streams are held open by a slow reader: the model yields 256 KiB messages forever, the client reads
one and stops, so HTTP/2 flow control parks the server's generator (no thread, no lock held).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc
from server.api.connection_limits import ConnectionStreams
from server.api.transport import TransportLimits
from tests.support import SCALE_CONFIG, ServerThread, eventually, scale_model, write_model

HOLD_MODEL = """
import numpy as np

class Model:
    def infer_stream(self, inputs, parameters):
        while True:
            yield {"y": np.zeros((1, 65536), dtype=np.float32)}
"""

HOLD_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, -1] }
"""

#: a separate TCP connection: channels with equal arguments otherwise share one process-wide
NEW_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
#: socket reads of the raw client give up after this long (the limits under test fire in well under 1 s)
RAW_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transport-repo")
    write_model(root, "hold", HOLD_CONFIG, {1: HOLD_MODEL})
    write_model(root, "scale", SCALE_CONFIG, {1: scale_model(2)})
    return root


def _serve(repository: Path, **limits: float | int | bool) -> ServerThread:
    return ServerThread(repository, transport=TransportLimits(**limits))  # type: ignore[arg-type]


def _x(rows: int = 1) -> inference_pb2.InferTensor:
    return from_numpy("x", np.ones((rows, 4), np.float32))


def _hold(stub: inference_pb2_grpc.InferenceServiceStub, timeout: float = 60) -> grpc.Future:
    """A PredictStream that the server has begun (its first message read) and that then stays open."""
    call = stub.PredictStream(inference_pb2.PredictStreamRequest(model_name="hold", inputs=[_x()]), timeout=timeout)
    next(call)
    return call


def _open_streams(server: ServerThread) -> ConnectionStreams:
    assert server.server is not None
    return server.server.servicer.connection_streams


# -- the PredictStream cap per connection ------------------------------------------------------------------


def test_a_connection_at_its_predict_stream_cap_gets_resource_exhausted_naming_the_flag(repository: Path) -> None:
    with _serve(repository, max_predict_streams_per_connection=3) as server:
        open_streams = _open_streams(server)
        with (
            grpc.insecure_channel(server.address) as first,
            grpc.insecure_channel(server.address, options=NEW_CONNECTION) as second,
        ):
            stub = inference_pb2_grpc.InferenceServiceStub(first)
            held = [_hold(stub) for _ in range(3)]
            with pytest.raises(grpc.RpcError) as refused:
                _hold(stub)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "3 PredictStreams open" in refused.value.details()
            assert "--max-predict-streams-per-connection" in refused.value.details()
            statistics = stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name="hold"), timeout=30)
            assert statistics.statistics[0].failure_count["RESOURCE_EXHAUSTED"] == 1

            other = _hold(inference_pb2_grpc.InferenceServiceStub(second))  # another connection is unaffected
            assert open_streams.total == 4 and open_streams.connections == 2
            for call in [*held, other]:
                call.cancel()
            eventually(lambda: open_streams.total == 0, what="every stream released its place")
            assert open_streams.connections == 0
            again = _hold(stub)  # the connection's places are free again
            again.cancel()


def test_streams_release_their_place_however_they_end(repository: Path) -> None:
    with _serve(repository, max_predict_streams_per_connection=2) as server:
        open_streams = _open_streams(server)
        with grpc.insecure_channel(server.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            finished = stub.PredictStream(inference_pb2.PredictStreamRequest(model_name="scale", inputs=[_x(3)]))
            assert [m.final for m in finished] == [True]
            bad = inference_pb2.PredictStreamRequest(
                model_name="scale", inputs=[from_numpy("x", np.ones((1, 5), np.float32))]
            )
            with pytest.raises(grpc.RpcError) as invalid:
                list(stub.PredictStream(bad, timeout=30))
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            expired = _hold(stub, timeout=0.5)
            assert expired.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # waits for the stream to end
            _hold(stub).cancel()
            eventually(lambda: open_streams.total == 0, what="every stream released its place")
            held = [_hold(stub) for _ in range(2)]  # both places are free
            for call in held:
                call.cancel()
            eventually(lambda: open_streams.total == 0, what="the cancelled streams released their places")


# -- connections -------------------------------------------------------------------------------------------


def _check(channel: grpc.Channel, **kwargs: object) -> None:
    request = health_pb2.HealthCheckRequest(service="")
    health_pb2_grpc.HealthStub(channel).Check(request, timeout=30, **kwargs)


def test_connections_beyond_max_connections_are_closed_and_later_ones_accepted(repository: Path) -> None:
    with _serve(repository, max_connections=2) as server:
        first, second, third = (grpc.insecure_channel(server.address, options=NEW_CONNECTION) for _ in range(3))
        with first, second, third:
            _check(first)
            _check(second)
            with pytest.raises(grpc.RpcError) as refused:
                _check(third)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            _check(second)  # the connections within the limit are still served
            first.close()
            _check(third, wait_for_ready=True)  # reconnects once a place is free


# -- streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS) ----------------------------------------------


def test_max_concurrent_streams_makes_further_calls_on_that_connection_wait(repository: Path) -> None:
    with _serve(repository, max_concurrent_streams=2) as server:
        open_streams = _open_streams(server)
        with (
            grpc.insecure_channel(server.address) as first,
            grpc.insecure_channel(server.address, options=NEW_CONNECTION) as second,
        ):
            stub = inference_pb2_grpc.InferenceServiceStub(first)
            held = [_hold(stub) for _ in range(2)]
            waiting = stub.PredictStream(
                inference_pb2.PredictStreamRequest(model_name="hold", inputs=[_x()]), timeout=60
            )
            predict = inference_pb2.PredictRequest(model_name="scale", inputs=[_x()])
            with pytest.raises(grpc.RpcError) as queued:
                stub.Predict(predict, timeout=0.5)  # waits in the client for a free stream until its deadline
            assert queued.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert open_streams.total == 2  # the third stream never reached the server
            inference_pb2_grpc.InferenceServiceStub(second).Predict(predict, timeout=30)  # other connections are served

            held[0].cancel()
            next(waiting)  # the freed stream lets the waiting one start
            for call in (held[1], waiting):
                call.cancel()


# -- connection age and its grace -------------------------------------------------------------------------


class _RecordingStreams(ConnectionStreams):
    """Notes the peer of every PredictStream, so a test sees which connection each call used."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.peers: list[str] = []

    def hold(self, peer: str):  # type: ignore[no-untyped-def]
        self.peers.append(peer)
        return super().hold(peer)


def _record_peers(server: ServerThread) -> _RecordingStreams:
    assert server.server is not None
    recording = _RecordingStreams(0)
    server.server.servicer.connection_streams = recording
    return recording


def test_max_connection_age_moves_a_channel_to_new_connections_without_failing_calls(repository: Path) -> None:
    with _serve(repository, max_connection_age_s=0.2, max_connection_age_grace_s=60) as server:
        recording = _record_peers(server)
        with grpc.insecure_channel(server.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            long_lived = _hold(stub)  # opened on the first connection, outlives its age within the grace
            predict = inference_pb2.PredictRequest(model_name="scale", inputs=[_x()])
            stream = inference_pb2.PredictStreamRequest(model_name="scale", inputs=[_x()])

            def calls_moved_twice() -> bool:
                stub.Predict(predict, timeout=30)  # any failure fails the test
                assert [m.final for m in stub.PredictStream(stream, timeout=30)] == [True]
                return len(set(recording.peers)) >= 3

            eventually(calls_moved_twice, what="the channel reconnected twice")
            for _ in range(3):
                next(long_lived)  # still served on its aged connection
            long_lived.cancel()


def test_a_stream_still_open_when_the_age_grace_ends_is_ended_unavailable(repository: Path) -> None:
    limits = {"max_connection_age_s": 0.2, "max_connection_age_grace_s": 0.3}
    with _serve(repository, **limits) as server, grpc.insecure_channel(server.address) as channel:
        long_lived = _hold(inference_pb2_grpc.InferenceServiceStub(channel))
        with pytest.raises(grpc.RpcError) as ended:
            for _ in long_lived:
                pass
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "max connection age" in ended.value.details()


# -- idle connections and keepalive, from a raw HTTP/2 client ---------------------------------------------


class RawH2:
    """A bare HTTP/2 client connection: sends what the test says, and lets the test choose not to answer."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=RAW_TIMEOUT_S)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def read_until(self, done: Callable[[h2.events.Event], bool], *, answer_pings: bool = True) -> list[object]:
        """Events until one satisfies ``done`` or the server closes the connection ("EOF" last)."""
        seen: list[object] = []
        while True:
            data = self.sock.recv(65536)
            if not data:
                return [*seen, "EOF"]
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError:
                return [*seen, "EOF"]
            seen.extend(events)
            pinged = any(isinstance(event, h2.events.PingReceived) for event in events)
            if answer_pings or not pinged:  # h2 queues the ping's ACK; not sending it leaves the ping unanswered
                self.flush()
            else:
                self.h2.clear_outbound_data_buffer()
            if any(done(event) for event in events):
                return seen

    def health_check(self) -> dict[bytes, bytes]:
        """A grpc.health.v1.Health/Check of "" by hand; the trailers of its answer."""
        stream = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Check"),
            (":authority", "test"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        self.h2.send_headers(stream, headers)
        self.h2.send_data(stream, struct.pack(">BI", 0, 0), end_stream=True)  # an empty HealthCheckRequest
        self.flush()
        events = self.read_until(lambda e: isinstance(e, (h2.events.StreamEnded, h2.events.ConnectionTerminated)))
        assert not _goaways(events), events
        trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived) and e.stream_id == stream]
        assert trailers, events
        return dict(trailers[0].headers)

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        # before the server stops: its graceful GOAWAY would wait out the grace for this silent peer
        self.sock.close()


def _goaways(events: list[object]) -> list[tuple[int, bytes | None]]:
    return [(e.error_code, e.additional_data) for e in events if isinstance(e, h2.events.ConnectionTerminated)]


def _flood_pings(client: RawH2, count: int = 10) -> list[object]:
    """``count`` pings at once on a connection without calls; the events up to the last ACK or the GOAWAY."""
    for index in range(count):
        client.h2.ping(index.to_bytes(8, "big"))
    client.flush()
    last = (count - 1).to_bytes(8, "big")
    return client.read_until(
        lambda e: (
            isinstance(e, h2.events.ConnectionTerminated)
            or (isinstance(e, h2.events.PingAckReceived) and e.ping_data == last)
        )
    )


def _read_goaway(client: RawH2) -> list[tuple[int, bytes | None]]:
    return _goaways(client.read_until(lambda e: isinstance(e, h2.events.ConnectionTerminated)))


@pytest.mark.parametrize(
    "limits",
    [
        {},  # the defaults: 5 s between pings, 2 strikes
        {"min_ping_interval_s": 0, "permit_keepalive_without_calls": False},  # idle connections may not ping
    ],
    ids=["too-often", "without-calls"],
)
def test_a_ping_flood_is_answered_goaway_too_many_pings(repository: Path, limits: dict[str, float]) -> None:
    with _serve(repository, **limits) as server, RawH2(server.address) as client:
        events = _flood_pings(client)
        goaways = _goaways(events) or _read_goaway(client)
        assert goaways == [(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, b"too_many_pings")]


@pytest.mark.parametrize(
    "limits",
    [{"min_ping_interval_s": 0}, {"max_ping_strikes": 0}],
    ids=["no-minimum-interval", "unlimited-strikes"],
)
def test_pings_the_limits_allow_leave_the_connection_serving(repository: Path, limits: dict[str, float]) -> None:
    with _serve(repository, **limits) as server, RawH2(server.address) as client:
        events = _flood_pings(client)
        assert not _goaways(events)
        # a GOAWAY for those pings would have come before the answer to a call made after their ACKs
        assert client.health_check()[b"grpc-status"] == b"0"


def test_an_idle_connection_is_closed_after_max_connection_idle(repository: Path) -> None:
    with _serve(repository, max_connection_idle_s=0.2) as server, RawH2(server.address) as client:
        assert client.health_check()[b"grpc-status"] == b"0"
        assert [reason for _code, reason in _read_goaway(client)] == [b"connection idle"]


def test_a_client_that_stops_answering_pings_is_disconnected_after_the_keepalive_timeout(repository: Path) -> None:
    # gRPC's own ping timeout is a minute: this fails (socket timeout) unless the flag also sets that one
    with _serve(repository, keepalive_time_s=0.2, keepalive_timeout_s=0.3) as server, RawH2(server.address) as client:
        events = client.read_until(lambda e: isinstance(e, h2.events.ConnectionTerminated), answer_pings=False)
        assert any(isinstance(e, h2.events.PingReceived) for e in events)
        assert _goaways(events) == [(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, b"ping_timeout")]
