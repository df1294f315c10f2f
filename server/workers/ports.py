"""The supervisor's hold on the shared port, and files written whole."""

from __future__ import annotations

import os
import socket
from pathlib import Path


class WorkerStartError(Exception):
    """The workers cannot start (the port is taken, a worker failed before serving): exit 2."""


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind host:port with SO_REUSEPORT and do not listen: no connection lands here, the port stays ours
    (port 0 picks one), and the workers bind it too."""
    name = host.strip("[]")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise WorkerStartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise WorkerStartError(
            f"cannot listen on {host}:{port}: {exc.strerror} (is another server using the port?)"
        ) from None
    return sock


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    os.replace(partial, path)
