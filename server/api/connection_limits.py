"""A cap on the PredictStreams one connection holds open, so one client cannot take every stream place.

Connections are told apart by ``context.peer()`` (``ipv4:10.0.0.7:51234``: one per TCP connection).
Behind a mesh sidecar every client shares the sidecar's few connections, so the cap then bounds the
sidecar's streams per connection; the sidecar opens another connection at ``--max-concurrent-streams``,
not at this cap (docs/operations.md, "Transport limits"). O(1) per stream: a dict of counts on the
event loop's thread, an entry only while its connection has a stream open.
"""

from __future__ import annotations

from types import TracebackType

from server.core.errors import ResourceExhausted

FLAG = "--max-predict-streams-per-connection"


class ConnectionStreams:
    """Counts open PredictStreams per peer; ``hold(peer)`` admits one or raises RESOURCE_EXHAUSTED."""

    __slots__ = ("_open", "limit")

    def __init__(self, limit: int) -> None:
        #: 0 = no cap (streams are still counted)
        self.limit = limit
        self._open: dict[str, int] = {}

    def hold(self, peer: str) -> _Held:
        """``with streams.hold(context.peer()):`` around a stream's whole life; released however it ends."""
        count = self._open.get(peer, 0)
        if self.limit and count >= self.limit:
            raise ResourceExhausted(
                f"this connection already has {count} PredictStreams open, the limit set by {FLAG}; "
                "end some streams or open another connection"
            )
        self._open[peer] = count + 1
        return _Held(self, peer)

    def _release(self, peer: str) -> None:
        left = self._open[peer] - 1
        if left:
            self._open[peer] = left
        else:
            del self._open[peer]

    def open_on(self, peer: str) -> int:
        """Streams open on one connection."""
        return self._open.get(peer, 0)

    @property
    def total(self) -> int:
        """Streams open on every connection (for tests and statistics)."""
        return sum(self._open.values())

    @property
    def connections(self) -> int:
        """Connections with at least one stream open."""
        return len(self._open)


class _Held:
    """One admitted stream: released exactly once, on leaving the ``with`` block."""

    __slots__ = ("_peer", "_streams")

    def __init__(self, streams: ConnectionStreams, peer: str) -> None:
        self._streams = streams
        self._peer = peer

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._streams._release(self._peer)
