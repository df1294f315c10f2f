"""HTTP/2 transport limits: what one connection may hold open, how often a client may ping, how long an
idle or old connection lives. Plain data plus the gRPC channel arguments they become.

Every client that can reach the port can open connections and streams and send pings, so each of
these has a finite default sized for a model server behind a service mesh (docs/operations.md,
"Transport limits"). This module imports nothing heavy: ``inferd serve --help`` reads its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

#: TCP connections open at once; more are closed as they arrive (file descriptors and memory stay bounded)
DEFAULT_MAX_CONNECTIONS = 4096
#: streams one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS)
DEFAULT_MAX_CONCURRENT_STREAMS = 1000
#: open PredictStreams one connection may hold: half the above, so unary calls on it still get through
DEFAULT_MAX_PREDICT_STREAMS_PER_CONNECTION = 500
#: the server pings a connection after this long without reads, to find peers that vanished ...
DEFAULT_KEEPALIVE_TIME_S = 60.0
#: ... and closes it when the ping is not answered within this long
DEFAULT_KEEPALIVE_TIMEOUT_S = 20.0
#: a client may ping no more often than this while no data flows (more often is a strike)
DEFAULT_MIN_PING_INTERVAL_S = 5.0
#: strikes (pings too soon) before the server answers GOAWAY "too_many_pings"
DEFAULT_MAX_PING_STRIKES = 2
#: a connection without calls for this long is closed with GOAWAY (the client reconnects on its next call)
DEFAULT_MAX_CONNECTION_IDLE_S = 300.0
#: a connection is sent GOAWAY at this age (±10 % jitter), so long-lived clients re-balance ...
DEFAULT_MAX_CONNECTION_AGE_S = 1800.0
#: ... and the calls still open on it get this long to finish before it is closed
DEFAULT_MAX_CONNECTION_AGE_GRACE_S = 300.0


def _ms(seconds: float) -> int:
    """Seconds as gRPC's whole milliseconds; a positive value never rounds to 0 (which means something else)."""
    return max(1, round(seconds * 1000))


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """The transport limits of one server; 0 turns off the ones documented as "0 = off"."""

    #: 0 = no limit
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: 0 = gRPC's default (no limit)
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    #: 0 = no cap (enforced by :mod:`server.api.connection_limits`, not by gRPC)
    max_predict_streams_per_connection: int = DEFAULT_MAX_PREDICT_STREAMS_PER_CONNECTION
    keepalive_time_s: float = DEFAULT_KEEPALIVE_TIME_S
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S
    min_ping_interval_s: float = DEFAULT_MIN_PING_INTERVAL_S
    #: whether a client may ping (and the server send keepalive pings) on a connection with no call open
    permit_keepalive_without_calls: bool = True
    #: 0 = unlimited strikes
    max_ping_strikes: int = DEFAULT_MAX_PING_STRIKES
    #: 0 = idle connections stay open
    max_connection_idle_s: float = DEFAULT_MAX_CONNECTION_IDLE_S
    #: 0 = connections never age out
    max_connection_age_s: float = DEFAULT_MAX_CONNECTION_AGE_S
    max_connection_age_grace_s: float = DEFAULT_MAX_CONNECTION_AGE_GRACE_S

    def grpc_options(self) -> list[tuple[str, int]]:
        """The gRPC core server arguments for these limits (``grpc.aio.server(options=...)``)."""
        options = [
            ("grpc.keepalive_time_ms", _ms(self.keepalive_time_s)),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout_s)),
            # gRPC 1.85 times out its pings (keepalive ones included) on this one, 1 min by default
            ("grpc.http2.ping_timeout_ms", _ms(self.keepalive_timeout_s)),
            ("grpc.keepalive_permit_without_calls", 1 if self.permit_keepalive_without_calls else 0),
            # the receive-side interval (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS); note the name
            ("grpc.http2.min_ping_interval_without_data_ms", round(self.min_ping_interval_s * 1000)),
            ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
        ]
        if self.max_connections:
            options.append(("grpc.max_allowed_incoming_connections", self.max_connections))
        if self.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", self.max_concurrent_streams))
        if self.max_connection_idle_s:
            options.append(("grpc.max_connection_idle_ms", _ms(self.max_connection_idle_s)))
        if self.max_connection_age_s:
            options.append(("grpc.max_connection_age_ms", _ms(self.max_connection_age_s)))
            options.append(("grpc.max_connection_age_grace_ms", _ms(self.max_connection_age_grace_s)))
        return options
