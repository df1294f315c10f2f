"""Routing policy changed at run time: checking a shadow policy against what is loaded, and telling a
config.pbtxt edit that only re-routes (labels, traffic, shadow) from one that needs its versions reloaded.

Routing policy lives in the ``ModelEntry``, not in a slot, so changing it publishes a new entry over the
same slots: nothing reloads and no version's statistics start again.
"""

from __future__ import annotations

from dataclasses import replace

from server.core.echo import echo, listing
from server.core.errors import FailedPrecondition, InvalidArgument
from server.models.config import ModelSpec, ShadowSpec
from server.models.registry import ModelEntry


def without_routing(spec: ModelSpec) -> ModelSpec:
    """``spec`` with its routing policy blanked: what a loaded version depends on."""
    return replace(spec, version_labels={}, traffic=(), shadow=None)


def only_routing_differs(old: ModelSpec | None, new: ModelSpec) -> bool:
    """Whether the versions loaded for ``old`` can serve ``new`` as they are (True also when equal)."""
    return old is not None and without_routing(old) == without_routing(new)


def check_shadow(entry: ModelEntry, shadow: ShadowSpec) -> None:
    """Raise the status a client gets for a shadow policy ``entry`` cannot follow now.

    INVALID_ARGUMENT for a policy that is wrong whatever is loaded (fraction, label/version, aiming at
    the only version unpinned requests reach); FAILED_PRECONDITION when the target is not READY.
    """
    name = echo(entry.name)
    if not 0 < shadow.fraction <= 1:
        raise InvalidArgument(f"shadow fraction of model {name} must be in (0, 1], got {shadow.fraction:g}")
    if bool(shadow.label) == bool(shadow.version):
        raise InvalidArgument(f"shadow of model {name} needs exactly one of a label and a version")
    if shadow.version < 0:
        raise InvalidArgument(f"shadow version of model {name} must be positive, got {shadow.version}")
    if shadow.label and shadow.label not in entry.labels:
        raise FailedPrecondition(
            f"model {name} has no version label {echo(shadow.label)} to shadow "
            f"(labels: {listing(sorted(entry.labels))}; set labels with SetTraffic)"
        )
    version = entry.shadow_version(shadow)
    via = f" (label {echo(shadow.label)})" if shadow.label else ""
    slot = entry.slots.get(version)
    if slot is None:
        have = listing(sorted(entry.slots), 8)
        raise FailedPrecondition(f"shadow version {version}{via} of model {name} is not loaded (versions: {have})")
    if not slot.ready:
        raise FailedPrecondition(f"shadow version {version}{via} of model {name} is {slot.state.value}, not READY")
    if entry.unpinned_versions() == {version}:
        raise InvalidArgument(
            f"version {version}{via} of model {name} already answers every request that names no version or "
            "label, so it cannot shadow itself: shadow another version, or move traffic first"
        )
