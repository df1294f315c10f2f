"""mTLS identity: the principal is the client certificate's URI SAN (a SPIFFE id, as a mesh issues), DNS SAN or
subject CN, as ``mtls.principal_from`` says.

gRPC has already verified the certificate against ``--tls-client-ca`` during the handshake; this only reads
the verified peer's properties from ``context.auth_context()`` (``peer_uri``, ``peer_dns``,
``x509_common_name``), so no certificate is parsed per call.
"""

from __future__ import annotations

import grpc

from server.core.principal import Principal
from server.security.auth_config import MtlsConfig

#: ``principal_from`` → the auth-context property holding it
PROPERTIES = {"san_uri": "peer_uri", "san_dns": "peer_dns", "subject_cn": "x509_common_name"}
_WHAT = {"san_uri": "URI SAN (e.g. a SPIFFE id)", "san_dns": "DNS SAN", "subject_cn": "subject CN"}
#: principals made so far (bounded: certificates in use, not requests)
CACHE_ENTRIES = 4096


class MtlsIdentityError(Exception):
    """A client certificate was presented but lacks the field the principal is taken from."""


class MtlsIdentity:
    def __init__(self, config: MtlsConfig) -> None:
        self.config = config
        self._property = PROPERTIES[config.principal_from]
        self._principals: dict[bytes, Principal] = {}

    def principal(self, context: grpc.aio.ServicerContext) -> Principal | None:
        """The certificate's principal; None when the caller presented no certificate."""
        properties = context.auth_context()
        values = properties.get(self._property)
        if not values:
            if properties.get("x509_subject"):
                what = _WHAT[self.config.principal_from]
                raise MtlsIdentityError(f"the client certificate has no {what}, which names the caller here")
            return None
        value = values[0]
        if len(values) > 1:  # several URI SANs: the SPIFFE id is the identity
            value = next((v for v in values if v.startswith(b"spiffe://")), value)
        found = self._principals.get(value)
        if found is None:
            name = value.decode("utf-8", "replace")
            roles = self.config.roles.get(name, self.config.default_roles)
            found = Principal(name, roles, "mtls")
            if len(self._principals) >= CACHE_ENTRIES:
                self._principals.clear()
            self._principals[value] = found
        return found
