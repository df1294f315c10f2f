"""The auth config (``inferd serve --auth-config PATH``): one YAML file, validated whole at start.

Parsed with ``yaml.compose`` rather than ``safe_load`` so that every node keeps its line: each error names
``PATH:LINE`` and says what was expected, and a server never starts with half a policy. The schema is
documented in docs/security.md ("The auth config").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from yaml.constructor import SafeConstructor

from server.security.jwks import ALGORITHMS, JwksError, parse_jwks
from server.security.rate_limits import RateLimitConfigError, RateLimiter

#: methods callable without credentials unless the config says otherwise (probes and discovery must work)
DEFAULT_OPEN_METHODS = (
    "/grpc.health.v1.Health/*",
    "/grpc.reflection.*",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)
PRINCIPAL_FROM = ("san_uri", "san_dns", "subject_cn")
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
DEFAULT_JWKS_REFRESH_S = 300.0
DEFAULT_UNKNOWN_KID_REFETCH_S = 30.0
DEFAULT_LEEWAY_S = 30.0
_HASH = re.compile(r"sha256:([0-9a-f]{16,128}):([0-9a-f]{64})")


class AuthConfigError(ValueError):
    """The auth config is unusable; the message starts with ``PATH:LINE:``."""


@dataclass(frozen=True, slots=True)
class RoleGrant:
    """What one role allows: predict and read on model-name globs, and model control."""

    predict: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    control: bool = False


@dataclass(frozen=True, slots=True)
class TokenEntry:
    principal: str
    salt: bytes
    digest: bytes
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class JwtConfig:
    issuer: str
    audience: tuple[str, ...]
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwks_refresh_seconds: float = DEFAULT_JWKS_REFRESH_S
    #: a token naming a key id the set lacks refetches the URL at most once per this many seconds
    unknown_kid_refetch_seconds: float = DEFAULT_UNKNOWN_KID_REFETCH_S
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_seconds: float = DEFAULT_LEEWAY_S
    principal_claim: str = "sub"
    roles_claim: str = "roles"


@dataclass(frozen=True, slots=True)
class MtlsConfig:
    principal_from: str = "san_uri"
    roles: dict[str, frozenset[str]] = field(default_factory=dict)
    default_roles: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AuthConfig:
    source: str = "<config>"
    #: roles of callers without credentials; None = such callers get UNAUTHENTICATED
    anonymous: frozenset[str] | None = None
    tokens: tuple[TokenEntry, ...] = ()
    jwt: JwtConfig | None = None
    mtls: MtlsConfig | None = None
    roles: dict[str, RoleGrant] = field(default_factory=dict)
    open_methods: tuple[str, ...] = DEFAULT_OPEN_METHODS
    #: the ``rate_limits`` mapping as plain data, already checked by :meth:`RateLimiter.parse` (which the server
    #: calls again to make its own limiter: the config stays plain data, the buckets belong to one server)
    rate_limits: dict[str, Any] | None = None


_TOP = ("anonymous", "tokens", "jwt", "mtls", "roles", "open_methods", "rate_limits")


def load_auth_config(path: str | Path) -> AuthConfig:
    """Read and validate ``path``; :class:`AuthConfigError` says where and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthConfigError(f"{path}: cannot read the auth config: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise AuthConfigError(f"{path}: the auth config is not UTF-8 text") from None
    return parse_auth_config(text, path)


def parse_auth_config(text: str, path: str | Path = "<config>") -> AuthConfig:
    """The config in ``text``; relative file names in it are taken from ``path``'s folder."""
    return _Reader(Path(path)).config(text)


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._constructor = SafeConstructor()

    def fail(self, node: yaml.Node | None, message: str) -> AuthConfigError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return AuthConfigError(f"{self.path}{line}: {message}")

    # --- the shapes -------------------------------------------------------------------------------------

    def mapping(self, node: yaml.Node, what: str, keys: tuple[str, ...] | None = None) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping (key: value lines)")
        out: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                raise self.fail(key_node, f"{what}: the key {key!r} is not a name")
            if key in out:
                raise self.fail(key_node, f"{what}: {key} is given twice")
            if keys is not None and key not in keys:
                raise self.fail(key_node, f"{what}: unknown key {key!r}; expected one of {', '.join(keys)}")
            out[key] = value
        return out

    def scalar(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, "expected a single value, not a list or mapping")
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(node, f"unreadable value: {exc}") from None

    def string(self, node: yaml.Node, what: str) -> str:
        value = self.scalar(node)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(node, f"{what} must be a non-empty string, not {value!r}")
        return value

    def number(self, node: yaml.Node, what: str, *, minimum: float = 0.0, strict: bool = False) -> float:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise self.fail(node, f"{what} must be a number, not {value!r}")
        if value < minimum or (strict and value == minimum):
            raise self.fail(node, f"{what} must be {'more than' if strict else 'at least'} {minimum:g}, not {value}")
        return float(value)

    def integer(self, node: yaml.Node, what: str, *, minimum: int) -> int:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(node, f"{what} must be a whole number of at least {minimum}, not {value!r}")
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        value = self.scalar(node)
        if not isinstance(value, bool):
            raise self.fail(node, f"{what} must be true or false, not {value!r}")
        return value

    def strings(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        if isinstance(node, yaml.ScalarNode) and self.scalar(node) is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list, e.g. [a, b]")
        return [(self.string(item, f"each entry of {what}"), item) for item in node.value]

    # --- the sections -----------------------------------------------------------------------------------

    def config(self, text: str) -> AuthConfig:
        try:
            root = yaml.compose(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f":{mark.line + 1}" if mark is not None else ""
            raise AuthConfigError(f"{self.path}{where}: not valid YAML: {exc.problem or exc}") from None
        except yaml.YAMLError as exc:
            raise AuthConfigError(f"{self.path}: not valid YAML: {exc}") from None
        if root is None:
            raise AuthConfigError(f"{self.path}: the auth config is empty; see docs/security.md for the schema")
        top = self.mapping(root, "the auth config", _TOP)
        roles = self.roles(top["roles"]) if "roles" in top else {}
        role_refs: list[tuple[str, yaml.Node]] = []
        anonymous = None
        if "anonymous" in top:
            section = self.mapping(top["anonymous"], "anonymous", ("roles",))
            refs = self.strings(section["roles"], "anonymous.roles") if "roles" in section else []
            role_refs += refs
            anonymous = frozenset(name for name, _ in refs)
        tokens = self.tokens(top["tokens"], role_refs) if "tokens" in top else ()
        jwt_config = self.jwt(top["jwt"]) if "jwt" in top else None
        mtls = self.mtls(top["mtls"], role_refs) if "mtls" in top else None
        for name, node in role_refs:
            if name not in roles:
                known = ", ".join(sorted(roles)) or "none; define them under roles:"
                raise self.fail(node, f"unknown role {name!r} (roles defined: {known})")
        open_methods: tuple[str, ...] = DEFAULT_OPEN_METHODS
        if "open_methods" in top:
            entries = self.strings(top["open_methods"], "open_methods")
            for pattern, node in entries:
                if not pattern.startswith("/"):
                    raise self.fail(
                        node, f"open_methods: {pattern!r} must start with / (e.g. /grpc.health.v1.Health/*)"
                    )
            open_methods = tuple(pattern for pattern, _ in entries)
        rate_limits = self.rate_limits(top["rate_limits"]) if "rate_limits" in top else None
        return AuthConfig(
            source=str(self.path),
            anonymous=anonymous,
            tokens=tokens,
            jwt=jwt_config,
            mtls=mtls,
            roles=roles,
            open_methods=open_methods,
            rate_limits=rate_limits,
        )

    def roles(self, node: yaml.Node) -> dict[str, RoleGrant]:
        grants: dict[str, RoleGrant] = {}
        for name, body in self.mapping(node, "roles").items():
            section = self.mapping(body, f"role {name}", ("predict", "read", "control"))
            predict = (
                tuple(g for g, _ in self.strings(section["predict"], f"{name}.predict")) if "predict" in section else ()
            )
            read = tuple(g for g, _ in self.strings(section["read"], f"{name}.read")) if "read" in section else ()
            control = self.boolean(section["control"], f"{name}.control") if "control" in section else False
            grants[name] = RoleGrant(predict=predict, read=read, control=control)
        return grants

    def tokens(self, node: yaml.Node, role_refs: list[tuple[str, yaml.Node]]) -> tuple[TokenEntry, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, "tokens must be a list of {principal, hash, roles} entries")
        entries: list[TokenEntry] = []
        seen: set[bytes] = set()
        for item in node.value:
            section = self.mapping(item, "a tokens entry", ("principal", "hash", "roles"))
            for key in ("principal", "hash"):
                if key not in section:
                    raise self.fail(item, f"a tokens entry needs {key}: (make one with `inferd token new`)")
            principal = self.string(section["principal"], "principal")
            text = self.string(section["hash"], "hash")
            match = _HASH.fullmatch(text)
            if match is None:
                raise self.fail(
                    section["hash"],
                    "hash must be sha256:<salt hex>:<64 hex digits>, as `inferd token new` prints it "
                    "(the token itself never goes in this file)",
                )
            digest = bytes.fromhex(match.group(2))
            if digest in seen:
                raise self.fail(section["hash"], "the same token hash appears twice")
            seen.add(digest)
            refs = self.strings(section["roles"], "roles") if "roles" in section else []
            role_refs += refs
            entries.append(TokenEntry(principal, bytes.fromhex(match.group(1)), digest, frozenset(r for r, _ in refs)))
        return tuple(entries)

    def jwt(self, node: yaml.Node) -> JwtConfig:
        keys = (
            "issuer",
            "audience",
            "jwks_file",
            "jwks_url",
            "jwks_refresh_seconds",
            "unknown_kid_refetch_seconds",
            "algorithms",
            "leeway_seconds",
            "principal_claim",
            "roles_claim",
        )
        section = self.mapping(node, "jwt", keys)
        for key in ("issuer", "audience"):
            if key not in section:
                raise self.fail(node, f"jwt needs {key}: (tokens from any other {key} are refused)")
        audience_node = section["audience"]
        if isinstance(audience_node, yaml.SequenceNode):
            audience = tuple(a for a, _ in self.strings(audience_node, "jwt.audience"))
            if not audience:
                raise self.fail(audience_node, "jwt.audience must name at least one audience")
        else:
            audience = (self.string(audience_node, "jwt.audience"),)
        jwks_file = None
        if "jwks_file" in section:
            jwks_file = Path(self.string(section["jwks_file"], "jwt.jwks_file"))
            if not jwks_file.is_absolute():
                jwks_file = self.path.parent / jwks_file
            try:
                parse_jwks(jwks_file.read_bytes())
            except OSError as exc:
                raise self.fail(section["jwks_file"], f"cannot read {jwks_file}: {exc.strerror or exc}") from None
            except JwksError as exc:
                raise self.fail(section["jwks_file"], f"{jwks_file}: {exc}") from None
        jwks_url = None
        if "jwks_url" in section:
            jwks_url = self.string(section["jwks_url"], "jwt.jwks_url")
            parsed = urlparse(jwks_url)
            if parsed.scheme not in ("https", "http") or not parsed.netloc:
                raise self.fail(
                    section["jwks_url"], f"jwt.jwks_url must be an https:// (or http://) URL, not {jwks_url!r}"
                )
        if jwks_file is None and jwks_url is None:
            raise self.fail(node, "jwt needs jwks_file:, jwks_url: or both (where the signing keys come from)")
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
        if "algorithms" in section:
            entries = self.strings(section["algorithms"], "jwt.algorithms")
            for name, item in entries:
                if name not in ALGORITHMS:
                    raise self.fail(
                        item, f"jwt.algorithms: {name!r} is not allowed; use some of {', '.join(ALGORITHMS)}"
                    )
            if not entries:
                raise self.fail(section["algorithms"], "jwt.algorithms must name at least one algorithm")
            algorithms = tuple(name for name, _ in entries)

        def seconds(key: str, default: float, *, strict: bool = True) -> float:
            return self.number(section[key], f"jwt.{key}", strict=strict) if key in section else default

        return JwtConfig(
            issuer=self.string(section["issuer"], "jwt.issuer"),
            audience=audience,
            jwks_file=jwks_file,
            jwks_url=jwks_url,
            jwks_refresh_seconds=seconds("jwks_refresh_seconds", DEFAULT_JWKS_REFRESH_S),
            unknown_kid_refetch_seconds=seconds("unknown_kid_refetch_seconds", DEFAULT_UNKNOWN_KID_REFETCH_S),
            algorithms=algorithms,
            leeway_seconds=seconds("leeway_seconds", DEFAULT_LEEWAY_S, strict=False),
            principal_claim=self.string(section["principal_claim"], "jwt.principal_claim")
            if "principal_claim" in section
            else "sub",
            roles_claim=self.string(section["roles_claim"], "jwt.roles_claim") if "roles_claim" in section else "roles",
        )

    def mtls(self, node: yaml.Node, role_refs: list[tuple[str, yaml.Node]]) -> MtlsConfig:
        section = self.mapping(node, "mtls", ("principal_from", "roles", "default_roles"))
        principal_from = "san_uri"
        if "principal_from" in section:
            principal_from = self.string(section["principal_from"], "mtls.principal_from")
            if principal_from not in PRINCIPAL_FROM:
                raise self.fail(
                    section["principal_from"],
                    f"mtls.principal_from must be one of {', '.join(PRINCIPAL_FROM)}, not {principal_from!r}",
                )
        roles: dict[str, frozenset[str]] = {}
        if "roles" in section:
            for name, body in self.mapping(section["roles"], "mtls.roles").items():
                refs = self.strings(body, f"mtls.roles[{name}]")
                role_refs += refs
                roles[name] = frozenset(r for r, _ in refs)
        default: list[tuple[str, yaml.Node]] = []
        if "default_roles" in section:
            default = self.strings(section["default_roles"], "mtls.default_roles")
            role_refs += default
        return MtlsConfig(principal_from, roles, frozenset(r for r, _ in default))

    def rate_limits(self, node: yaml.Node) -> dict[str, Any] | None:
        raw = self._constructor.construct_document(node) if isinstance(node, yaml.MappingNode) else self.scalar(node)
        try:
            RateLimiter.parse(raw)
        except RateLimitConfigError as exc:
            raise self.fail(_find(node, exc.path[1:]), exc.message) from None
        return raw if isinstance(raw, dict) else None


def _find(node: yaml.Node, path: tuple[str, ...]) -> yaml.Node:
    """The deepest node along ``path`` (mapping keys) from ``node``: where an error in that part is."""
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                node = value
                break
        else:
            break
    return node
