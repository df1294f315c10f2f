"""TLS for the Prometheus ``/metrics`` endpoint, with the certificate reloaded when its files change.

prometheus_client serves HTTPS from an ``ssl.SSLContext`` made once; :class:`ReloadingContext` hooks that
context's ``sni_callback`` (called at every handshake, before the certificate is chosen) and, when the files'
mtime or size changed, hands the handshake a fresh context with the new certificate. As on the gRPC ports
(``server/security/tls.py``), a pair that cannot be loaded (a rotation caught half-written) keeps the previous
certificate, and connections already open are untouched.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading

from server.telemetry.options import EndpointTls

log = logging.getLogger("inferd.telemetry")


def make_context(tls: EndpointTls) -> ssl.SSLContext:
    """A server context for ``tls``; with ``client_ca``, clients must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile=str(tls.cert), keyfile=str(tls.key))
    if tls.client_ca is not None:
        context.load_verify_locations(cafile=str(tls.client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ReloadingContext:
    """Install on the listening socket's context; swaps in a new context when the files change."""

    def __init__(self, tls: EndpointTls) -> None:
        self.tls = tls
        self._paths = tuple(p for p in (tls.cert, tls.key, tls.client_ca) if p is not None)
        self._lock = threading.Lock()
        self._stamps = self._read_stamps()
        self._current: ssl.SSLContext | None = None  # None: the listening context's own certificate
        #: how many times changed files were loaded
        self.reloads = 0

    def _read_stamps(self) -> tuple[tuple[int, int], ...]:
        stats = [os.stat(p) for p in self._paths]
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    def install(self, context: ssl.SSLContext) -> None:
        context.sni_callback = self._hello

    def _hello(self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, context: ssl.SSLContext) -> None:
        try:
            stamps = self._read_stamps()
        except OSError:
            stamps = self._stamps  # a file is being replaced: keep the current certificate
        with self._lock:
            if stamps != self._stamps:
                self._stamps = stamps
                try:
                    self._current = make_context(self.tls)
                    self.reloads += 1
                    log.info("metrics endpoint: TLS certificate reloaded from %s", self.tls.cert)
                except (OSError, ssl.SSLError) as exc:
                    log.warning(
                        "metrics endpoint: TLS files changed but cannot be used (%s); keeping the previous", exc
                    )
            current = self._current
        if current is not None:
            sock.context = current
