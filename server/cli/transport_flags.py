"""``inferd serve``'s transport-limit flags (docs/operations.md, "Transport limits") and their parsing."""

from __future__ import annotations

import argparse

from server.api import transport
from server.api.transport import TransportLimits


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def add_transport_flags(serve: argparse.ArgumentParser) -> None:
    """HTTP/2 limits every client is held to (docs/operations.md, "Transport limits")."""
    group = serve.add_argument_group("transport limits (connections, streams, keepalive)")
    group.add_argument(
        "--max-connections",
        type=_count,
        default=transport.DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="TCP connections open at once; more are closed as they arrive (default %(default)s; 0 = no limit)",
    )
    group.add_argument(
        "--max-concurrent-streams",
        type=_count,
        default=transport.DEFAULT_MAX_CONCURRENT_STREAMS,
        metavar="N",
        help="streams one connection may have open at once; more wait in the client "
        "(default %(default)s; 0 = no limit)",
    )
    group.add_argument(
        "--max-predict-streams-per-connection",
        type=_count,
        default=transport.DEFAULT_MAX_PREDICT_STREAMS_PER_CONNECTION,
        metavar="N",
        help="open PredictStreams one connection may hold; more get RESOURCE_EXHAUSTED "
        "(default %(default)s; 0 = no cap)",
    )
    group.add_argument(
        "--keepalive-time-seconds",
        type=_positive_seconds,
        default=transport.DEFAULT_KEEPALIVE_TIME_S,
        metavar="S",
        help="ping a connection after this long without reads, to find vanished clients (default %(default)s)",
    )
    group.add_argument(
        "--keepalive-timeout-seconds",
        type=_positive_seconds,
        default=transport.DEFAULT_KEEPALIVE_TIMEOUT_S,
        metavar="S",
        help="close a connection whose ping is unanswered this long (default %(default)s)",
    )
    group.add_argument(
        "--keepalive-min-ping-interval-seconds",
        type=_seconds,
        default=transport.DEFAULT_MIN_PING_INTERVAL_S,
        metavar="S",
        help="clients may ping no more often than this while no data flows (default %(default)s)",
    )
    group.add_argument(
        "--keepalive-permit-without-calls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="allow keepalive pings on connections with no call open (default on)",
    )
    group.add_argument(
        "--max-ping-strikes",
        type=_count,
        default=transport.DEFAULT_MAX_PING_STRIKES,
        metavar="N",
        help="pings too soon before GOAWAY too_many_pings (default %(default)s; 0 = unlimited)",
    )
    group.add_argument(
        "--max-connection-idle-seconds",
        type=_seconds,
        default=transport.DEFAULT_MAX_CONNECTION_IDLE_S,
        metavar="S",
        help="close connections without calls after this long (default %(default)s; 0 = never)",
    )
    group.add_argument(
        "--max-connection-age-seconds",
        type=_seconds,
        default=transport.DEFAULT_MAX_CONNECTION_AGE_S,
        metavar="S",
        help="send GOAWAY to connections this old, so clients re-balance (default %(default)s; 0 = never)",
    )
    group.add_argument(
        "--max-connection-age-grace-seconds",
        type=_seconds,
        default=transport.DEFAULT_MAX_CONNECTION_AGE_GRACE_S,
        metavar="S",
        help="calls still open on an aged connection get this long to finish (default %(default)s)",
    )


def transport_limits(args: argparse.Namespace) -> TransportLimits:
    """The parsed transport flags as the server's :class:`TransportLimits`."""
    return transport.TransportLimits(
        max_connections=args.max_connections,
        max_concurrent_streams=args.max_concurrent_streams,
        max_predict_streams_per_connection=args.max_predict_streams_per_connection,
        keepalive_time_s=args.keepalive_time_seconds,
        keepalive_timeout_s=args.keepalive_timeout_seconds,
        min_ping_interval_s=args.keepalive_min_ping_interval_seconds,
        permit_keepalive_without_calls=args.keepalive_permit_without_calls,
        max_ping_strikes=args.max_ping_strikes,
        max_connection_idle_s=args.max_connection_idle_seconds,
        max_connection_age_s=args.max_connection_age_seconds,
        max_connection_age_grace_s=args.max_connection_age_grace_seconds,
    )
