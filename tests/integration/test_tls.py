"""TLS and mTLS on a real server with certificates made at test time (tests/tls_support.py).

Calls succeed with the CA and fail without it; ``require`` refuses clients without a certificate (or with
one from another CA); every port (main, admin) serves TLS; rotating the files switches the certificate new
connections get, without a restart, while a call in flight on an existing connection completes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from inferd import AsyncClient, Client, TlsFiles
from inferd.errors import InferdError
from server.app import InferdServer, ServerOptions, StartupError
from server.security.tls import ServerTls
from server.telemetry.options import TelemetryOptions
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model
from tests.tls_support import TlsFiles as Certs
from tests.tls_support import cert_fingerprint, recording_tls_server, served_certificate

#: the "gate" model blocks each call until the test sets GATE (the model runs in this process)
STARTED = threading.Event()
GATE = threading.Event()

GATE_MODEL = """
import numpy as np
from tests.integration import test_tls

class Model:
    def infer(self, inputs):
        x = np.asarray(inputs["x"], dtype=np.float32)
        if x.size and x.flat[0] == 7.0:  # not the warm-up's call
            test_tls.STARTED.set()
            test_tls.GATE.wait(60)
        return {"y": x}
"""

X = np.ones((1, 4), np.float32)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls-repo")
    write_model(root, "scale", SCALE_CONFIG, {1: scale_model(2)})
    write_model(root, "gate", SCALE_CONFIG + 'execution: "thread"\n', {1: GATE_MODEL})  # off the event loop
    return root


def _server(repository: Path, tls: ServerTls, **options: object) -> ServerThread:
    return ServerThread(repository, tls=tls, **options)


@pytest.fixture()
def tls_server(repository: Path, tls_files: Certs) -> Iterator[ServerThread]:
    with _server(repository, ServerTls(tls_files.server_cert, tls_files.server_key), admin_port=0) as server:
        yield server


@pytest.fixture()
def mtls_server(repository: Path, tls_files: Certs) -> Iterator[ServerThread]:
    tls = ServerTls(tls_files.server_cert, tls_files.server_key, client_ca=tls_files.ca, client_auth="require")
    with _server(repository, tls) as server:
        yield server


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(InferdError) as info:
        call()  # type: ignore[operator]
    return info.value.code


def test_tls_call_succeeds_with_the_ca_and_fails_without(tls_server: ServerThread, tls_files: Certs) -> None:
    with Client(tls_server.address, tls=TlsFiles(ca=tls_files.ca), timeout=10) as client:
        assert np.array_equal(client.predict("scale", {"x": X})["y"], X * 2)
    # the system's CAs do not know the test CA; another CA neither; plaintext is not TLS
    for tls in (True, TlsFiles(ca=tls_files.other_ca)):
        with Client(tls_server.address, tls=tls, timeout=10) as client:
            assert _code(lambda c=client: c.predict("scale", {"x": X})) == grpc.StatusCode.UNAVAILABLE
    with Client(tls_server.address, timeout=10) as client:
        assert _code(lambda c=client: c.predict("scale", {"x": X})) == grpc.StatusCode.UNAVAILABLE


def test_every_port_serves_tls(tls_server: ServerThread, tls_files: Certs) -> None:
    """The separate admin port (127.0.0.1) gets the same certificate; a plaintext client is refused there too."""
    assert tls_server.server is not None
    admin = f"127.0.0.1:{tls_server.server.admin_port}"
    expected = cert_fingerprint(tls_files.server_cert.read_bytes())
    for port in (tls_server.server.port, tls_server.server.admin_port):
        assert cert_fingerprint(served_certificate("127.0.0.1", port, tls_files.ca)) == expected
    secure = grpc.secure_channel(admin, grpc.ssl_channel_credentials(tls_files.ca.read_bytes()))
    assert _admin_index(secure) is not None
    secure.close()
    plaintext = grpc.insecure_channel(admin)
    with pytest.raises(grpc.RpcError) as info:
        _admin_index(plaintext)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    plaintext.close()


def _admin_index(channel: grpc.Channel) -> object:
    from inferd.v1 import admin_pb2, admin_pb2_grpc

    return admin_pb2_grpc.ModelServiceStub(channel).RepositoryIndex(admin_pb2.RepositoryIndexRequest(), timeout=10)


def test_mtls_require_refuses_clients_without_a_trusted_certificate(
    mtls_server: ServerThread, tls_files: Certs
) -> None:
    trusted = [
        TlsFiles(ca=tls_files.ca, cert=tls_files.client_cert, key=tls_files.client_key),
        TlsFiles(ca=tls_files.ca, cert=tls_files.client_cn_cert, key=tls_files.client_cn_key),
    ]
    for tls in trusted:
        with Client(mtls_server.address, tls=tls, timeout=10) as client:
            assert np.array_equal(client.predict("scale", {"x": X})["y"], X * 2)
    refused = [
        TlsFiles(ca=tls_files.ca),  # no client certificate
        TlsFiles(ca=tls_files.ca, cert=tls_files.other_client_cert, key=tls_files.other_client_key),  # other CA
    ]
    for tls in refused:
        with Client(mtls_server.address, tls=tls, timeout=10) as client:
            assert _code(lambda c=client: c.predict("scale", {"x": X})) == grpc.StatusCode.UNAVAILABLE
            # health probes too: a prober needs a certificate on an mTLS port (docs/security.md)
            assert _code(lambda c=client: c.health()) == grpc.StatusCode.UNAVAILABLE


async def test_async_client_with_mtls(mtls_server: ServerThread, tls_files: Certs) -> None:
    tls = TlsFiles(ca=tls_files.ca, cert=tls_files.client_cert, key=tls_files.client_key)
    async with AsyncClient(mtls_server.address, tls=tls, timeout=10) as client:
        assert np.array_equal((await client.predict("scale", {"x": X}))["y"], X * 2)


def test_server_name_override(tls_server: ServerThread, tls_files: Certs) -> None:
    """Dialling an address the certificate does not name works when the expected name is given."""
    assert tls_server.server is not None
    address = f"localhost:{tls_server.server.port}"  # DNS SAN: verified as is
    with Client(address, tls=TlsFiles(ca=tls_files.ca), timeout=10) as client:
        client.predict("scale", {"x": X})
    with Client(tls_server.address, tls=TlsFiles(ca=tls_files.ca, server_name="inferd.example"), timeout=10) as c:
        assert _code(lambda: c.predict("scale", {"x": X})) == grpc.StatusCode.UNAVAILABLE  # not in the SANs
    with Client(tls_server.address, tls=TlsFiles(ca=tls_files.ca, server_name="localhost"), timeout=10) as c:
        c.predict("scale", {"x": X})


def test_rotation_switches_the_certificate_for_new_connections_without_failing_calls_in_flight(
    repository: Path, tls_files: Certs
) -> None:
    tls = ServerTls(tls_files.server_cert, tls_files.server_key, client_ca=tls_files.ca, client_auth="require")
    first = cert_fingerprint(tls_files.server_cert.read_bytes())
    second = cert_fingerprint(tls_files.server2_cert.read_bytes())
    client_tls = TlsFiles(ca=tls_files.ca, cert=tls_files.client_cert, key=tls_files.client_key)
    STARTED.clear()
    GATE.clear()
    with _server(repository, tls, admin_port=0) as server, Client(server.address, tls=client_tls, timeout=30) as old:
        assert server.server is not None
        port, admin_port = server.server.port, server.server.admin_port
        assert cert_fingerprint(served_certificate("127.0.0.1", port, tls_files.ca)) == first
        old.predict("scale", {"x": X})  # the existing connection, made with the first certificate
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(old.predict, "gate", {"x": X * 7})
            assert STARTED.wait(30), "the gated call never reached the model"
            tls_files.rotate_server()
            # a new handshake gets the new certificate (the reloader checks the files at each handshake), on
            # every port: the admin port's first handshake after the main port's reload gets it too
            assert cert_fingerprint(served_certificate("127.0.0.1", port, tls_files.ca)) == second
            assert cert_fingerprint(served_certificate("127.0.0.1", admin_port, tls_files.ca)) == second
            with Client(server.address, tls=client_tls, timeout=10) as new:
                assert np.array_equal(new.predict("scale", {"x": X})["y"], X * 2)
            GATE.set()
            assert np.array_equal(in_flight.result(30)["y"], X * 7)  # the call in flight finished
        old.predict("scale", {"x": X})  # and its connection still serves
        security = server.server._security
        assert security is not None and security.reloader is not None
        assert security.reloader.reloads == 1
        assert security.reloader.fingerprint == second


def test_a_broken_rotation_keeps_the_previous_certificate(
    tls_server: ServerThread, tls_files: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    """cert-manager writes the certificate and key one after the other: a half-done rotation (new cert, old
    key) must not take the port down; the previous pair is served until the files agree again."""
    assert tls_server.server is not None
    port = tls_server.server.port
    first = cert_fingerprint(tls_files.server_cert.read_bytes())
    tls_files.server_cert.write_bytes(tls_files.server2_cert.read_bytes())  # the key is still the old one
    with caplog.at_level(logging.WARNING, logger="inferd"):
        assert cert_fingerprint(served_certificate("127.0.0.1", port, tls_files.ca)) == first
    assert "does not match" in caplog.text and "--tls-key" in caplog.text
    with Client(tls_server.address, tls=TlsFiles(ca=tls_files.ca), timeout=10) as client:
        client.predict("scale", {"x": X})
    tls_files.server_key.write_bytes(tls_files.server2_key.read_bytes())  # the rotation completes
    second = cert_fingerprint(tls_files.server2_cert.read_bytes())
    assert cert_fingerprint(served_certificate("127.0.0.1", port, tls_files.ca)) == second


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ("missing-key", "--tls-key"),
        ("garbage-key", "--tls-key"),
        ("other-key", "--tls-key"),
        ("garbage-cert", "--tls-cert"),
        ("empty-cert", "--tls-cert"),
        ("missing-ca", "--tls-client-ca"),
        ("require-without-ca", "--tls-client-auth"),
        ("ca-without-require", "--tls-client-ca"),
    ],
)
async def test_unusable_tls_options_stop_the_start_naming_the_flag(
    repository: Path, tls_files: Certs, change: str, flag: str
) -> None:
    cert, key, ca, auth = tls_files.server_cert, tls_files.server_key, tls_files.ca, "require"
    if change == "missing-key":
        key = tls_files.root / "nope.key"
    elif change == "garbage-key":
        key = tls_files.root / "garbage.key"
        key.write_text("not a key\n")
    elif change == "other-key":
        key = tls_files.server2_key
    elif change == "garbage-cert":
        cert = tls_files.root / "garbage.pem"
        cert.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    elif change == "empty-cert":
        cert = tls_files.root / "empty.pem"
        cert.write_text("")
    elif change == "missing-ca":
        ca = tls_files.root / "nope-ca.pem"
    elif change == "require-without-ca":
        ca = None  # type: ignore[assignment]
    elif change == "ca-without-require":
        auth = "none"
    tls = ServerTls(cert, key, client_ca=ca, client_auth=auth)  # type: ignore[arg-type]
    server = InferdServer(ServerOptions(repository=repository, port=0, tls=tls))
    with pytest.raises(StartupError) as info:
        await server.start()
    assert flag in str(info.value)
    await server.stop(drain=False)


async def test_the_sdk_sends_its_token_on_every_call(tls_files: Certs) -> None:
    """``token=`` rides as ``authorization: Bearer`` on unary calls of both clients, next to other metadata."""
    with recording_tls_server(tls_files) as (address, recorder):
        tls = TlsFiles(ca=tls_files.ca)
        with Client(address, tls=tls, token="t0k", metadata={"x-team": "search"}, timeout=10) as client:
            client.list_models()
            client.server_metadata()
        async with AsyncClient(address, tls=tls, token="async-t0k", timeout=10) as aclient:
            await aclient.list_models()
    assert [seen.get("authorization") for seen in recorder.seen] == ["Bearer t0k", "Bearer t0k", "Bearer async-t0k"]
    assert recorder.seen[0].get("x-team") == "search"


def test_sdk_refuses_ambiguous_credentials(tls_files: Certs) -> None:
    with pytest.raises(ValueError, match="authorization"):
        Client("127.0.0.1:1", token="a", metadata={"authorization": "Bearer b"})
    with pytest.raises(ValueError, match="one non-empty word"):
        Client("127.0.0.1:1", token="two words")
    with pytest.raises(ValueError, match="cert and key"):
        TlsFiles(ca=tls_files.ca, cert=tls_files.client_cert)
    with pytest.raises(ValueError, match="cannot read the CA bundle"):
        Client("127.0.0.1:1", tls=TlsFiles(ca=tls_files.root / "missing.pem"))
    with pytest.raises(ValueError, match="not both"):
        Client("127.0.0.1:1", tls=True, credentials=grpc.ssl_channel_credentials())


def _scrape(port: int, ca: Path, cert: Path | None = None, key: Path | None = None) -> tuple[bytes, bytes]:
    """GET /metrics over HTTPS; returns the served certificate (DER) and the body."""
    import http.client
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", "/metrics")
        assert connection.sock is not None
        der = connection.sock.getpeercert(binary_form=True)
        assert der is not None
        return der, connection.getresponse().read()
    finally:
        connection.close()


def test_the_metrics_endpoint_serves_https_with_the_same_certificate_and_reloads_it(
    repository: Path, tls_files: Certs
) -> None:
    import http.client
    import ssl

    tls = ServerTls(tls_files.server_cert, tls_files.server_key, client_ca=tls_files.ca, client_auth="require")
    with _server(repository, tls, telemetry=TelemetryOptions(metrics_port=0)) as server:
        assert server.server is not None
        port = server.server.metrics_port
        client = (tls_files.client_cert, tls_files.client_key)
        der, body = _scrape(port, tls_files.ca, *client)
        assert cert_fingerprint(der) == cert_fingerprint(tls_files.server_cert.read_bytes())
        assert b"inferd" in body
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _scrape(port, tls_files.ca)  # mTLS required: a scraper needs a client certificate too
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            plain.request("GET", "/metrics")
            plain.getresponse().read()
        plain.close()
        tls_files.rotate_server()
        der, _ = _scrape(port, tls_files.ca, *client)
        assert cert_fingerprint(der) == cert_fingerprint(tls_files.server2_cert.read_bytes())
