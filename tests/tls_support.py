"""Certificates made at test time: a CA, server certificates and client certificates, as PEM files.

Shared by every TLS / mTLS test. Keys are EC P-256 (fast to make: the whole set takes a few milliseconds).
Use the ``tls_files`` fixture (registered in tests/conftest.py) or call :func:`make_tls_files` directly.

- ``server_cert``/``server_key``: CN inferd-server, SANs DNS:localhost + IP:127.0.0.1 (+ ::1).
- ``server2_cert``/``server2_key``: a second server certificate from the same CA (CN inferd-server-2,
  same SANs, a different serial and key): overwrite the first with it to test rotation.
- ``client_cert``/``client_key``: SAN URI ``spiffe://cluster.local/ns/apps/sa/frontend`` (as a mesh issues),
  CN "frontend".
- ``client_cn_cert``/``client_cn_key``: only a subject CN ("batch-job"), no SAN.
- ``other_ca``/``other_client_cert``/``other_client_key``: an unrelated CA and a client certificate it
  signed (a client the server must refuse).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SPIFFE_ID = "spiffe://cluster.local/ns/apps/sa/frontend"
CLIENT_CN = "batch-job"
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class TlsFiles:
    """Paths of PEM files in one directory (``root``)."""

    root: Path
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    server2_cert: Path
    server2_key: Path
    client_cert: Path
    client_key: Path
    client_cn_cert: Path
    client_cn_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def rotate_server(self) -> None:
        """Overwrite the served cert/key files with the second server certificate (as cert-manager would):
        key first, then cert, each replaced atomically."""
        for src, dst in ((self.server2_key, self.server_key), (self.server2_cert, self.server_cert)):
            tmp = dst.with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cn: str,
    sans: list[x509.GeneralName],
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _server_sans() -> list[x509.GeneralName]:
    return [
        x509.DNSName(SERVER_NAME),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]


def make_tls_files(root: Path) -> TlsFiles:
    """Make every certificate and key into ``root`` (created if missing) and return their paths."""
    root.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _make_ca("inferd test CA")
    other_ca, other_ca_key = _make_ca("some other CA")
    files = TlsFiles(
        root=root,
        ca=root / "ca.pem",
        ca_key=root / "ca.key",
        server_cert=root / "server.pem",
        server_key=root / "server.key",
        server2_cert=root / "server2.pem",
        server2_key=root / "server2.key",
        client_cert=root / "client.pem",
        client_key=root / "client.key",
        client_cn_cert=root / "client-cn.pem",
        client_cn_key=root / "client-cn.key",
        other_ca=root / "other-ca.pem",
        other_client_cert=root / "other-client.pem",
        other_client_key=root / "other-client.key",
    )
    _write_cert(files.ca, ca)
    _write_key(files.ca_key, ca_key)
    _write_cert(files.other_ca, other_ca)
    issued = [
        (files.server_cert, files.server_key, _issue(ca, ca_key, "inferd-server", _server_sans(), server=True)),
        (files.server2_cert, files.server2_key, _issue(ca, ca_key, "inferd-server-2", _server_sans(), server=True)),
        (
            files.client_cert,
            files.client_key,
            _issue(ca, ca_key, "frontend", [x509.UniformResourceIdentifier(SPIFFE_ID)], server=False),
        ),
        (files.client_cn_cert, files.client_cn_key, _issue(ca, ca_key, CLIENT_CN, [], server=False)),
        (
            files.other_client_cert,
            files.other_client_key,
            _issue(other_ca, other_ca_key, "intruder", [], server=False),
        ),
    ]
    for cert_path, key_path, (cert, key) in issued:
        _write_cert(cert_path, cert)
        _write_key(key_path, key)
    return files


def cert_fingerprint(pem_or_der: bytes) -> bytes:
    """SHA-256 of a certificate (PEM or DER), to tell which certificate a server presented."""
    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(pem_or_der)
    else:
        cert = x509.load_der_x509_certificate(pem_or_der)
    return cert.fingerprint(hashes.SHA256())


def served_certificate(host: str, port: int, ca: Path, *, server_name: str = SERVER_NAME) -> bytes:
    """DER of the certificate a server presents to a NEW TLS connection (ALPN h2, verified against ``ca``)."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


class MetadataRecorder(grpc.GenericRpcHandler):
    """Answers any unary call with an empty message and keeps each call's metadata (what a client sent)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.seen.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)


@contextlib.contextmanager
def recording_tls_server(files: TlsFiles) -> Iterator[tuple[str, MetadataRecorder]]:
    """A TLS gRPC server (``files``' server certificate) on its own loop in a thread, recording metadata;
    yields its address and the recorder."""
    recorder = MetadataRecorder()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []
    stop = asyncio.Event()

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((recorder,))
        creds = grpc.ssl_server_credentials([(files.server_key.read_bytes(), files.server_cert.read_bytes())])
        port.append(server.add_secure_port("127.0.0.1:0", creds))
        await server.start()
        ready.set()
        await stop.wait()
        await server.stop(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the recording server did not start"
    try:
        yield f"127.0.0.1:{port[0]}", recorder
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A fresh CA, server, rotation and client certificates in ``tmp_path / "tls"``."""
    return make_tls_files(tmp_path / "tls")
