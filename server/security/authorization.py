"""Roles → what a principal may do: ``predict`` and ``read`` on model-name globs, ``control`` of models.

A principal's roles are merged into one :class:`Grants` once per distinct role set (principals are cached by
the authenticators, so the set is the same object call after call and its hash is cached), and each model
name is matched against the globs once per grant set: an allowed call costs two dict lookups.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from server.core.echo import bounded
from server.core.principal import Principal
from server.security.auth_config import RoleGrant
from server.security.methods import CONTROL, PREDICT, READ, Rule

#: model names remembered per grant set and action (cleared when full: a caller sending random names)
MODEL_CACHE_ENTRIES = 4096
#: characters of a model name a denial repeats
NAME_CHARS = 128


class Grants:
    """The union of some roles' grants, with the glob matches it has made."""

    __slots__ = ("_matches", "control", "predict", "read", "read_all")

    def __init__(self, grants: list[RoleGrant]) -> None:
        self.predict = tuple(dict.fromkeys(g for grant in grants for g in grant.predict))
        self.read = tuple(dict.fromkeys(g for grant in grants for g in grant.read))
        self.read_all = "*" in self.read
        self.control = any(grant.control for grant in grants)
        self._matches: dict[tuple[str, str], bool] = {}

    def allows(self, action: str, model: str) -> bool:
        key = (action, model)
        found = self._matches.get(key)
        if found is None:
            globs = self.predict if action == PREDICT else self.read
            found = any(fnmatchcase(model, glob) for glob in globs)
            if len(self._matches) >= MODEL_CACHE_ENTRIES:
                self._matches.clear()
            self._matches[key] = found
        return found


class Authorizer:
    def __init__(self, roles: dict[str, RoleGrant]) -> None:
        self.roles = roles
        self._grants: dict[frozenset[str], Grants] = {}

    def grants(self, roles: frozenset[str]) -> Grants:
        found = self._grants.get(roles)
        if found is None:
            found = Grants([self.roles[r] for r in sorted(roles) if r in self.roles])
            if len(self._grants) >= MODEL_CACHE_ENTRIES:  # JWTs with ever new role sets
                self._grants.clear()
            self._grants[roles] = found
        return found

    def check(self, principal: Principal, method: str, rule: Rule, model: str | None) -> str | None:
        """None when allowed; else the PERMISSION_DENIED message (it names the principal, method and model)."""
        grants = self.grants(principal.roles)
        action = rule.action
        if action == CONTROL:
            if grants.control:
                return None
            return f"principal {principal.name!r} may not call {method}: it needs a role with control: true"
        if model is None:  # about the server, not one model (ListModels, ServerMetadata, health when closed)
            if grants.read or grants.predict:
                return None
            return f"principal {principal.name!r} may not call {method}: it needs a role that reads or predicts"
        if model == "" and rule.empty_means_all:
            if grants.read_all:
                return None
            return (
                f"principal {principal.name!r} may not call {method} for every model: name one model, "
                'or use a role with read: ["*"]'
            )
        if grants.allows(action, model):
            return None
        verb = "predict with" if action == PREDICT else "read"
        assert action in (PREDICT, READ)
        name = bounded(model, NAME_CHARS)
        return f"principal {principal.name!r} may not call {method} on model {name!r} (no role lets it {verb} it)"
